//! Signed documents other than manifests are judged at the time they were signed (issue 18,
//! "Certificates and keys"): a catalog receipt and an audit checkpoint signed while the
//! control certificate was valid still verify after it expired; one whose signed time lies
//! outside the certificate's validity does not.

use std::sync::Arc;

use ferry_control::audit::{Actor, AuditLog, CheckpointPolicy, EntryKind, NewEntry, Outcome};
use ferry_control::keys::{CaVerifier, CertSigner};
use ferry_control::receipt::{
    ComplianceSummary, ReceiptKind, ReceiptRequest, build_receipt, sign_receipt, verify_receipt,
};
use ferry_net::sign::{DocumentSigner, TrustAnchors};
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DatasetId, DeptId, Role};
use ferry_testkit::TestPki;
use time::{Duration, OffsetDateTime};

/// A control certificate valid from 20 days ago until 10 days ago: expired now.
fn expired_control(pki: &TestPki) -> (TlsPaths, OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let (from, until) = (now - Duration::days(20), now - Duration::days(10));
    (pki.issue_valid("old-control", "mot", Role::Control, from, until), from, until)
}

fn verifier(pki: &TestPki) -> CaVerifier {
    CaVerifier::new(TrustAnchors::load(&pki.ca(), Some(&pki.crl())).unwrap(), vec![Role::Control], None)
}

fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn receipt_issued_at(signer: &CertSigner, at: OffsetDateTime) -> String {
    let request = ReceiptRequest {
        kind: ReceiptKind::PreCatalog,
        dataset: DatasetId::new("bus-routes").unwrap(),
        name: "Bus routes".into(),
        provider: DeptId::new("gd").unwrap(),
        catalog_version: 1,
        schema_fingerprint: "ab".repeat(32),
        compliance: ComplianceSummary { passed: true, rules_checked: 11, checked_at_ms: ms(at) },
        registered_at_ms: ms(at),
        connected_at_ms: None,
    };
    sign_receipt(&build_receipt(request, ms(at)).unwrap(), signer).unwrap()
}

#[test]
fn a_receipt_verifies_at_its_issue_time_after_the_control_certificate_expired() {
    let pki = TestPki::new();
    let (control, from, until) = expired_control(&pki);
    let signer = CertSigner(DocumentSigner::new(&Credentials::load(&control).unwrap()).unwrap());

    // Issued while the certificate was valid: verifies now, after its expiry.
    let in_time = receipt_issued_at(&signer, from + Duration::days(5));
    let verified = verify_receipt(in_time.as_bytes(), &verifier(&pki)).expect("verifies at its issue time");
    assert!(verified.signer.contains("mot"), "{}", verified.signer);

    // Claims a time after the certificate expired (or before it was valid): refused.
    for at in [until + Duration::days(1), from - Duration::days(1)] {
        let outside = receipt_issued_at(&signer, at);
        let err = verify_receipt(outside.as_bytes(), &verifier(&pki)).expect_err("outside the validity");
        assert!(
            err.to_string().to_lowercase().contains("expired") || err.to_string().contains("valid"),
            "{err}"
        );
    }
}

fn entry(at: OffsetDateTime) -> NewEntry {
    NewEntry {
        time_ms: ms(at),
        kind: EntryKind::ReadAllowed,
        actor: Actor {
            department: DeptId::new("gd").unwrap(),
            role: Role::Operator,
            name: "gd-analyst".into(),
            cert_serial: "01".into(),
        },
        dataset: Some(DatasetId::new("bus-routes").unwrap()),
        outcome: Outcome::Accepted,
        reason: String::new(),
        detail: serde_json::json!({ "method": "download" }),
    }
}

#[tokio::test]
async fn audit_checkpoints_verify_at_their_time_after_the_signer_expired() {
    let pki = TestPki::new();
    let (control, from, until) = expired_control(&pki);
    let signer = Arc::new(CertSigner(DocumentSigner::new(&Credentials::load(&control).unwrap()).unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    let log = AuditLog::open(&url, signer, CheckpointPolicy::default()).await.expect("audit log");

    // A checkpoint signed while the certificate was valid verifies after its expiry.
    let signed_at = from + Duration::days(5);
    log.append(entry(signed_at)).await.expect("append");
    log.checkpoint(ms(signed_at)).await.expect("checkpoint").expect("a new checkpoint");
    let report = log.verify(&verifier(&pki)).await.expect("verify");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.checkpoints_valid, 1, "{report:?}");

    // One that claims a time after the expiry does not.
    let late = until + Duration::days(1);
    // (The entry comes more than `every` after the last checkpoint: the log signs one at its time.)
    log.append(entry(late)).await.expect("append");
    log.checkpoint(ms(late)).await.expect("checkpoint");
    assert_eq!(log.checkpoints().await.expect("checkpoints").len(), 2);
    let report = log.verify(&verifier(&pki)).await.expect("verify");
    assert_eq!(report.checkpoints_valid, 1, "{report:?}");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(format!("{:?}", report.problems[0]).contains("CheckpointSignature"), "{report:?}");
}
