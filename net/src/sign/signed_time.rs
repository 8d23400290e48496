//! Judging a signature by the time it was made, not by the time it is checked.
//!
//! A stored manifest (or any document carrying a signed timestamp) must stay verifiable after
//! its signer's certificate expires or is revoked because the node got a new key: otherwise a
//! node drops its own versions at the next start-up, and a consumer can no longer pull them.
//! [`check_signer`] accepts a signer when, with `signed_at` the time the signed body states:
//! - `signed_at` is not later than `now` plus [`SIGNING_CLOCK_SKEW`] (a signature from the
//!   future means a clock fault or a forgery: refused whatever else holds);
//! - and either the certificate is valid now (chain, validity, CRL: nothing that verified before
//!   this rule stops verifying), or it was valid at `signed_at` and, if the CRL lists it, the
//!   revocation came *after* `signed_at` with a reason that leaves earlier signatures standing
//!   ([`keeps_earlier_signatures`]: superseded, cessation of operation, affiliation changed).
//!   Key compromise — and, to be safe, no reason or any other reason — voids everything the key
//!   signed, whenever.
//!
//! The timestamp is trusted because the signature covers it. A key that leaks can therefore
//! backdate; that is why only a key-compromise-free revocation keeps earlier signatures: an
//! operator rotating a node certificate revokes the old one with reason `superseded`
//! (`ferry pki revoke --reason superseded`), one whose key leaked with `key-compromise`.
//! The CRL's revocation dates have whole seconds; a signature in the same second as the
//! revocation counts as after it.
//!
//! Neighbours: [`super::ManifestVerifier`] applies it to manifests (`created_unix_ms`);
//! [`super::verify_document_signed_at`] to documents whose caller knows their signed time;
//! the chain checks themselves are rustls-webpki's, against [`super::TrustAnchors`].

use super::{SignatureError, TrustAnchors};
use crate::tls::provider;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder,
    RevocationReason,
};

/// How far in the future a signed time may lie (the signer's clock ahead of ours).
pub const SIGNING_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Whether a revocation for `reason` leaves the signatures made before it valid. A missing
/// reason counts as unspecified, which does not.
pub fn keeps_earlier_signatures(reason: Option<RevocationReason>) -> bool {
    matches!(
        reason,
        Some(
            RevocationReason::Superseded
                | RevocationReason::CessationOfOperation
                | RevocationReason::AffiliationChanged
        )
    )
}

/// How a signer was accepted by [`check_signer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerStanding {
    /// Its certificate is valid now and not revoked.
    ValidNow,
    /// Its certificate is no longer valid now (expired, not yet valid by our clock, or revoked
    /// for a reason that keeps earlier signatures), but was when it signed.
    ValidWhenSigned,
}

/// A signed time in milliseconds since the Unix epoch as a [`SystemTime`] (times before the
/// epoch become the epoch, which no certificate of ours covers).
pub fn unix_ms_to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Checks that certificate `leaf` (with `intermediates`) may sign for `usage`, judged by
/// `signed_at` (see the module documentation); `now` is the current time.
pub fn check_signer(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    trust: &TrustAnchors,
    usage: KeyUsage,
    signed_at: SystemTime,
    now: SystemTime,
) -> Result<SignerStanding, SignatureError> {
    if signed_at > now + SIGNING_CLOCK_SKEW {
        return Err(SignatureError::SignedInFuture { signed_at: unix_ms(signed_at), now: unix_ms(now) });
    }
    let cert = EndEntityCert::try_from(leaf).map_err(SignatureError::SignerRefused)?;
    if chain(&cert, intermediates, trust, usage, now, Revocation::Checked).is_ok() {
        return Ok(SignerStanding::ValidNow);
    }
    let refused_then = |source| SignatureError::NotValidWhenSigned { signed_at: unix_ms(signed_at), source };
    match chain(&cert, intermediates, trust, usage, signed_at, Revocation::Checked) {
        Ok(()) => Ok(SignerStanding::ValidWhenSigned),
        Err(webpki::Error::CertRevoked) => {
            // The CRL that listed it was verified on the way; read when and why.
            let (reason, revoked_at) =
                revocation_entry(&cert, trust).ok_or(SignatureError::SignerRevoked {
                    reason: "unknown".into(),
                    revoked_at: None,
                    signed_at: unix_ms(signed_at),
                })?;
            if !keeps_earlier_signatures(reason) || revoked_at <= signed_at {
                return Err(SignatureError::SignerRevoked {
                    reason: reason_name(reason).into(),
                    revoked_at: Some(unix_ms(revoked_at)),
                    signed_at: unix_ms(signed_at),
                });
            }
            chain(&cert, intermediates, trust, usage, signed_at, Revocation::Skipped)
                .map_err(refused_then)?;
            Ok(SignerStanding::ValidWhenSigned)
        }
        Err(e) => Err(refused_then(e)),
    }
}

#[derive(Clone, Copy)]
enum Revocation {
    Checked,
    /// Only once the CRL entry has been judged by date and reason.
    Skipped,
}

/// rustls-webpki's chain, validity, usage and (end-entity) revocation checks at `at`.
fn chain(
    cert: &EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    trust: &TrustAnchors,
    usage: KeyUsage,
    at: SystemTime,
    revocation: Revocation,
) -> Result<(), webpki::Error> {
    let anchors =
        trust.ca_certs.iter().map(webpki::anchor_from_trusted_cert).collect::<Result<Vec<_>, _>>()?;
    let crls: Vec<&CertRevocationList<'_>> = match revocation {
        Revocation::Checked => trust.crls.iter().collect(),
        Revocation::Skipped => Vec::new(),
    };
    // Our CA signs leaves directly; the CRL covers exactly those. Unknown status fails closed.
    let options = RevocationOptionsBuilder::new(&crls)
        .ok()
        .map(|builder| builder.with_depth(RevocationCheckDepth::EndEntity).build());
    let time = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    let algorithms = provider().signature_verification_algorithms.all;
    cert.verify_for_usage(algorithms, &anchors, intermediates, time, usage, options, None)?;
    Ok(())
}

/// The reason and date of `cert`'s revocation, from the CRLs of its issuer. When several list
/// it, the least forgiving entry counts (an earliest date, a reason that voids earlier
/// signatures).
fn revocation_entry(
    cert: &EndEntityCert<'_>,
    trust: &TrustAnchors,
) -> Option<(Option<RevocationReason>, SystemTime)> {
    let mut found: Option<(Option<RevocationReason>, SystemTime)> = None;
    for crl in trust.crls.iter().filter(|crl| crl.issuer() == cert.issuer()) {
        let Ok(Some(entry)) = crl.find_serial(cert.serial()) else { continue };
        let at = UNIX_EPOCH + Duration::from_secs(entry.revocation_date.as_secs());
        let entry = (entry.reason_code, at);
        found = Some(match found {
            None => entry,
            Some(prev) => {
                let reason = if keeps_earlier_signatures(prev.0) { entry.0 } else { prev.0 };
                (reason, prev.1.min(entry.1))
            }
        });
    }
    found
}

fn reason_name(reason: Option<RevocationReason>) -> &'static str {
    match reason {
        None | Some(RevocationReason::Unspecified) => "unspecified",
        Some(RevocationReason::KeyCompromise) => "key compromise",
        Some(RevocationReason::CaCompromise) => "CA compromise",
        Some(RevocationReason::AffiliationChanged) => "affiliation changed",
        Some(RevocationReason::Superseded) => "superseded",
        Some(RevocationReason::CessationOfOperation) => "cessation of operation",
        Some(RevocationReason::CertificateHold) => "certificate hold",
        Some(RevocationReason::RemoveFromCrl) => "remove from CRL",
        Some(RevocationReason::PrivilegeWithdrawn) => "privilege withdrawn",
        Some(RevocationReason::AaCompromise) => "AA compromise",
    }
}

/// A time in milliseconds since the Unix epoch, shown in RFC 3339 (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixMillis(pub i64);

impl std::fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        match shown {
            Some(text) => f.write_str(&text),
            None => write!(f, "{} ms after the Unix epoch", self.0),
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> UnixMillis {
    UnixMillis(t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests;
