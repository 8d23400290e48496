//! Document signatures: a round trip, and each way a document is refused.

use super::*;
use crate::testca::{CA_CERT_FILE, CRL_FILE, TempCa};
use crate::tls::tests::paths;
use std::time::Duration;

const BODY: &[u8] = br#"{"format":"ferry-receipt/1","dataset":"vehicle-registry"}"#;

/// A CA and the document signer of a certificate it issued for `role`.
fn signer(ca: &TempCa, role: Role, name: &str) -> DocumentSigner {
    let (cert, key, _) = ca.issue("ministry", role, name);
    DocumentSigner::load(&cert, &key).expect("signer")
}

fn trust(ca: &TempCa) -> TrustAnchors {
    TrustAnchors::load(&ca.path().join(CA_CERT_FILE), Some(&ca.path().join(CRL_FILE))).expect("trust")
}

#[test]
fn signed_document_verifies_and_names_the_signer() {
    let ca = TempCa::new("root");
    let control = signer(&ca, Role::Control, "control");
    let signed = control.sign(BODY);
    assert_eq!(signed.body, BODY);
    let back = SignedDocument::decode(&signed.encode()).expect("decode");
    let principal = verify_document(&back, &trust(&ca), Role::Control, SystemTime::now()).expect("verify");
    assert_eq!(principal, *control.principal());
    assert_eq!((principal.role, principal.name.as_str()), (Role::Control, "control"));
    // Without the CRL (a user holding only ca.pem) it verifies too.
    let ca_only = TrustAnchors::load(&ca.path().join(CA_CERT_FILE), None).expect("trust");
    verify_document(&signed, &ca_only, Role::Control, SystemTime::now()).expect("verify without crl");
}

#[test]
fn node_credentials_sign_documents_of_their_role() {
    let ca = TempCa::new("root");
    let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
    let creds = Credentials::load(&paths(&ca, &cert, &key)).expect("creds");
    let signed = DocumentSigner::new(&creds).expect("signer").sign(BODY);
    let trust = TrustAnchors::from_credentials(&creds).expect("trust");
    let principal = verify_document(&signed, &trust, Role::Province, SystemTime::now()).expect("verify");
    assert_eq!(principal.dept.as_str(), "gd-transport");
}

#[test]
fn wrong_role_is_refused() {
    let ca = TempCa::new("root");
    let node = signer(&ca, Role::Ministry, "ministry");
    let err = verify_document(&node.sign(BODY), &trust(&ca), Role::Control, SystemTime::now())
        .expect_err("a node is not the control key");
    assert!(
        matches!(err, SignatureError::WrongRole { expected: Role::Control, found: Role::Ministry }),
        "{err}"
    );
    let control = signer(&ca, Role::Control, "control");
    let err = verify_document(&control.sign(BODY), &trust(&ca), Role::Ministry, SystemTime::now())
        .expect_err("the control key is not a node");
    assert!(matches!(err, SignatureError::WrongRole { .. }), "{err}");
}

#[test]
fn tampered_body_or_signature_is_refused() {
    let ca = TempCa::new("root");
    let control = signer(&ca, Role::Control, "control");
    let mut signed = control.sign(BODY);
    signed.body[3] ^= 1;
    let err = verify_document(&signed, &trust(&ca), Role::Control, SystemTime::now()).expect_err("tampered");
    assert!(matches!(err, SignatureError::BadSignature), "{err}");
    let mut signed = control.sign(BODY);
    signed.signature = control.sign(b"another body").signature;
    let err = verify_document(&signed, &trust(&ca), Role::Control, SystemTime::now()).expect_err("swapped");
    assert!(matches!(err, SignatureError::BadSignature), "{err}");
}

#[test]
fn signer_from_another_ca_is_refused() {
    let ca = TempCa::new("root");
    let rogue = TempCa::new("rogue");
    let impostor = signer(&rogue, Role::Control, "control");
    let err = verify_document(&impostor.sign(BODY), &trust(&ca), Role::Control, SystemTime::now())
        .expect_err("rogue");
    assert!(matches!(err, SignatureError::SignerRefused(webpki::Error::UnknownIssuer)), "{err}");
    let empty = SignedDocument { body: BODY.to_vec(), signature: vec![], signer_chain: vec![] };
    let err = verify_document(&empty, &trust(&ca), Role::Control, SystemTime::now()).expect_err("no chain");
    assert!(matches!(err, SignatureError::UntrustedSigner(_)), "{err}");
}

#[test]
fn revoked_or_expired_signer_is_refused() {
    let ca = TempCa::new("root");
    let (cert, key, serial) = ca.issue("ministry", Role::Control, "control");
    let signed = DocumentSigner::load(&cert, &key).expect("signer").sign(BODY);
    let later = SystemTime::now() + Duration::from_secs(3 * 86_400);
    let err = verify_document(&signed, &trust(&ca), Role::Control, later).expect_err("expired by then");
    assert!(matches!(err, SignatureError::SignerRefused(webpki::Error::CertExpired { .. })), "{err}");
    ca.revoke(&serial);
    let err = verify_document(&signed, &trust(&ca), Role::Control, SystemTime::now()).expect_err("revoked");
    assert!(matches!(err, SignatureError::SignerRefused(webpki::Error::CertRevoked)), "{err}");
}

#[test]
fn a_node_certificate_without_the_document_usage_cannot_pass_as_control() {
    // A certificate claiming role control but issued with the TLS usages only (as an older CA
    // would) is refused: the control role needs the document-signing usage.
    let ca = TempCa::new("root");
    let (cert, key, _) = ca.issue_with_usage_of("ministry", Role::Control, "fake-control", Role::Ministry);
    let signed = DocumentSigner::load(&cert, &key).expect("signer").sign(BODY);
    let err = verify_document(&signed, &trust(&ca), Role::Control, SystemTime::now()).expect_err("no eku");
    assert!(
        matches!(err, SignatureError::SignerRefused(webpki::Error::RequiredEkuNotFoundContext(_))),
        "{err}"
    );
}

#[test]
fn signer_load_errors_name_the_file() {
    let ca = TempCa::new("root");
    let (cert, _, _) = ca.issue("ministry", Role::Control, "control");
    let (_, other_key, _) = ca.issue("ministry", Role::Control, "control-2");
    let err = DocumentSigner::load(&cert, &other_key).expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let err = TrustAnchors::load(&ca.path().join("missing.pem"), None).expect_err("missing");
    assert!(matches!(err, TlsError::Read { .. }) && err.to_string().contains("missing.pem"), "{err}");
}
