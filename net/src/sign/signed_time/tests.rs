//! The signed-time rule: what a certificate's expiry and each kind of revocation do to the
//! manifests and documents it signed before and after.

use super::*;
use crate::sign::tests::{body_signed_at, now_ms};
use crate::sign::{ManifestSigner, ManifestVerifier, verify_document_signed_at};
use crate::testca::TempCa;
use crate::tls::Credentials;
use crate::tls::tests::paths;
use ferry_proto::Role;
use rcgen::RevocationReason as Reason;
use time::{Duration as Span, OffsetDateTime};

const HOUR_MS: i64 = 3_600_000;

fn node(ca: &TempCa, name: &str, from: Span, until: Span) -> (Credentials, String) {
    let (cert, key, serial) = ca.issue_with_validity("gd-transport", Role::Province, name, from, until);
    (Credentials::load(&paths(ca, &cert, &key)).expect("creds"), serial)
}

/// A reader holding the CA's current CRL.
fn verifier(ca: &TempCa) -> ManifestVerifier {
    let (reader, _) = node(ca, &format!("reader-{}", now_ms()), Span::hours(-1), Span::days(1));
    ManifestVerifier::new(&reader).expect("verifier")
}

fn verify(ca: &TempCa, signer: &ManifestSigner, created_ms: i64) -> Result<SignerStanding, SignatureError> {
    let signed = signer.sign(body_signed_at("gd-transport", created_ms));
    verifier(ca).verify_judged(&signed, UnixTime::now()).map(|v| v.standing)
}

#[test]
fn superseded_keeps_what_was_signed_before_the_revocation() {
    let ca = TempCa::new("root");
    let (old, serial) = node(&ca, "gd-node", Span::hours(-1), Span::days(1));
    let signer = ManifestSigner::new(&old).expect("signer");
    let before = now_ms() - 10 * 60_000;
    assert_eq!(verify(&ca, &signer, before).expect("valid now"), SignerStanding::ValidNow);
    ca.revoke_with(&serial, Reason::Superseded, OffsetDateTime::now_utc() - Span::minutes(5));
    assert_eq!(verify(&ca, &signer, before).expect("signed before"), SignerStanding::ValidWhenSigned);
    // Signed with the old key after its revocation: refused.
    let err = verify(&ca, &signer, now_ms()).expect_err("signed after the revocation");
    assert!(
        matches!(err, SignatureError::SignerRevoked { ref reason, .. } if reason == "superseded"),
        "{err}"
    );
}

#[test]
fn cessation_and_affiliation_keep_earlier_signatures_too() {
    for reason in [Reason::CessationOfOperation, Reason::AffiliationChanged] {
        let ca = TempCa::new("root");
        let (old, serial) = node(&ca, "gd-node", Span::hours(-1), Span::days(1));
        let signer = ManifestSigner::new(&old).expect("signer");
        ca.revoke_with(&serial, reason, OffsetDateTime::now_utc());
        let standing = verify(&ca, &signer, now_ms() - HOUR_MS / 2).expect("signed before");
        assert_eq!(standing, SignerStanding::ValidWhenSigned, "{reason:?}");
    }
}

#[test]
fn key_compromise_or_no_benign_reason_voids_everything_signed() {
    for reason in [Reason::KeyCompromise, Reason::Unspecified, Reason::PrivilegeWithdrawn] {
        let ca = TempCa::new("root");
        let (old, serial) = node(&ca, "gd-node", Span::hours(-1), Span::days(1));
        let signer = ManifestSigner::new(&old).expect("signer");
        ca.revoke_with(&serial, reason, OffsetDateTime::now_utc() + Span::minutes(1));
        let err = verify(&ca, &signer, now_ms() - HOUR_MS / 2).expect_err("voided");
        assert!(matches!(err, SignatureError::SignerRevoked { .. }), "{reason:?}: {err}");
    }
}

#[test]
fn expired_signer_stays_valid_for_what_it_signed_in_its_validity() {
    let ca = TempCa::new("root");
    // Valid from 50 minutes ago until 10 minutes ago.
    let (expired, _) = node(&ca, "gd-node", Span::minutes(-50), Span::minutes(-10));
    let signer = ManifestSigner::new(&expired).expect("signer");
    assert_eq!(
        verify(&ca, &signer, now_ms() - 30 * 60_000).expect("in validity"),
        SignerStanding::ValidWhenSigned
    );
    for outside in [now_ms(), now_ms() - 2 * HOUR_MS] {
        let err = verify(&ca, &signer, outside).expect_err("outside its validity");
        assert!(matches!(err, SignatureError::NotValidWhenSigned { .. }), "{err}");
    }
}

#[test]
fn a_signed_time_in_the_future_is_refused_beyond_the_skew() {
    let ca = TempCa::new("root");
    let (creds, _) = node(&ca, "gd-node", Span::hours(-1), Span::days(1));
    let signer = ManifestSigner::new(&creds).expect("signer");
    let skew = i64::try_from(SIGNING_CLOCK_SKEW.as_millis()).expect("skew");
    assert_eq!(verify(&ca, &signer, now_ms() + skew / 2).expect("within skew"), SignerStanding::ValidNow);
    let err = verify(&ca, &signer, now_ms() + skew + 60_000).expect_err("future");
    assert!(matches!(err, SignatureError::SignedInFuture { .. }), "{err}");
}

#[test]
fn the_earliest_and_least_forgiving_entry_counts() {
    let ca = TempCa::new("root");
    let (old, serial) = node(&ca, "gd-node", Span::hours(-1), Span::days(1));
    let signer = ManifestSigner::new(&old).expect("signer");
    // A later key-compromise entry for the same serial voids what the superseded one kept.
    ca.revoke_with(&serial, Reason::Superseded, OffsetDateTime::now_utc());
    ca.revoke_with(&serial, Reason::KeyCompromise, OffsetDateTime::now_utc());
    let err = verify(&ca, &signer, now_ms() - HOUR_MS / 2).expect_err("compromised");
    assert!(
        matches!(err, SignatureError::SignerRevoked { ref reason, .. } if reason == "key compromise"),
        "{err}"
    );
}

#[test]
fn documents_are_judged_by_the_time_the_caller_says_they_were_signed() {
    let ca = TempCa::new("root");
    let (creds, serial) = node(&ca, "gd-node", Span::hours(-1), Span::days(1));
    let signed = crate::sign::DocumentSigner::new(&creds).expect("signer").sign(b"{}");
    ca.revoke_with(&serial, Reason::Superseded, OffsetDateTime::now_utc());
    let trust =
        TrustAnchors::load(&ca.path().join("ca.pem"), Some(&ca.path().join("crl.pem"))).expect("trust");
    let now = SystemTime::now();
    let earlier = now - Duration::from_secs(1800);
    let (who, standing) = verify_document_signed_at(&signed, &trust, Role::Province, earlier, now)
        .expect("before the revocation");
    assert_eq!((who.name.as_str(), standing), ("gd-node", SignerStanding::ValidWhenSigned));
    let err = verify_document_signed_at(&signed, &trust, Role::Province, now, now).expect_err("after");
    assert!(matches!(err, SignatureError::SignerRevoked { .. }), "{err}");
}

#[test]
fn reasons_that_keep_earlier_signatures() {
    use webpki::RevocationReason as R;
    let kept: Vec<_> = R::iter().filter(|r| keeps_earlier_signatures(Some(*r))).collect();
    assert_eq!(kept, [R::AffiliationChanged, R::Superseded, R::CessationOfOperation]);
    assert!(!keeps_earlier_signatures(None));
}

#[test]
fn signed_times_are_shown_in_rfc_3339() {
    assert_eq!(UnixMillis(1_700_000_000_123).to_string(), "2023-11-14T22:13:20.123Z");
    assert_eq!(unix_ms_to_time(-5), UNIX_EPOCH);
}
