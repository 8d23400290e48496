//! Tests of the on-disk CA, and helpers other modules' tests use to build certificates.

use super::*;
use ferry_net::identity::principal_from_cert;
use std::os::unix::fs::MetadataExt;

/// A CA in a temporary directory, for tests across the crate.
pub(crate) struct TempCa {
    pub dir: tempfile::TempDir,
}

impl TempCa {
    pub(crate) fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), name, Duration::days(30)).expect("init CA");
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `name` valid from `now + from` to `now + until`; returns (cert, key, serial).
    pub(crate) fn issue_with_validity(
        &self,
        dept: &str,
        role: Role,
        name: &str,
        from: Duration,
        until: Duration,
    ) -> (PathBuf, PathBuf, String) {
        let now = OffsetDateTime::now_utc();
        let req = IssueRequest {
            dept: DeptId::new(dept).expect("dept"),
            role,
            name: name.to_owned(),
            dns_names: vec![name.to_owned()],
            not_before: now + from,
            not_after: now + until,
        };
        let cert = self.path().join(format!("{name}.pem"));
        let key = self.path().join(format!("{name}.key"));
        let issued = issue(self.path(), &req, &cert, &key).expect("issue");
        (cert, key, issued.serial)
    }

    /// Issues a certificate valid for a day around now.
    pub(crate) fn issue(&self, dept: &str, role: Role, name: &str) -> (PathBuf, PathBuf, String) {
        self.issue_with_validity(dept, role, name, Duration::hours(-1), Duration::days(1))
    }
}

fn read_cert_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).expect("read cert");
    CertificateDer::from_pem_slice(&pem).expect("pem").to_vec()
}

pub(crate) fn crl_serials(dir: &Path) -> (u64, Vec<String>) {
    let pem = std::fs::read(dir.join(CRL_FILE)).expect("read crl");
    let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&pem).expect("crl pem");
    let (_, crl) = x509_parser::parse_x509_crl(&der).expect("parse crl");
    let number = crl.crl_number().and_then(|n| u64::try_from(n).ok()).expect("crl number");
    let serials = crl.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())).collect();
    (number, serials)
}

#[test]
fn init_writes_ca_key_crl_and_registry_with_safe_modes() {
    let ca = TempCa::new("Ferry Test Root");
    let mode = |f: &str| std::fs::metadata(ca.path().join(f)).expect("stat").mode() & 0o777;
    assert_eq!(mode(CA_KEY_FILE), 0o600);
    assert_eq!(mode(CA_CERT_FILE) & 0o600, 0o600);
    assert_eq!(crl_serials(ca.path()), (1, vec![]));
    assert!(list(ca.path()).expect("list").is_empty());
    let der = read_cert_der(&ca.path().join(CA_CERT_FILE));
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse ca");
    assert!(cert.is_ca());
    let usage = cert.key_usage().expect("ext").expect("key usage").value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
}

#[test]
fn double_init_is_refused() {
    let ca = TempCa::new("root");
    let before = std::fs::read(ca.path().join(CA_KEY_FILE)).expect("key");
    let again = init(ca.path(), "root", Duration::days(1));
    assert!(matches!(again, Err(PkiError::AlreadyInitialized { .. })), "{again:?}");
    assert_eq!(std::fs::read(ca.path().join(CA_KEY_FILE)).expect("key"), before);
}

#[test]
fn issued_certificate_carries_identity_eku_and_dns_name() {
    let ca = TempCa::new("root");
    let (cert, key, serial) = ca.issue("gd-transport", Role::Province, "gd-node");
    assert_eq!(std::fs::metadata(&key).expect("stat").mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&cert).expect("read");
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1, "leaf only");
    let der = read_cert_der(&cert);
    let id = principal_from_cert(&der).expect("identity");
    assert_eq!((id.dept.as_str(), id.role, id.name.as_str()), ("gd-transport", Role::Province, "gd-node"));
    assert_eq!(id.serial, serial);
    assert_eq!(serial.len(), 32, "16-byte serial");
    assert_eq!(serial_of_cert_file(&cert).expect("serial"), serial);

    let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let eku = parsed.extended_key_usage().expect("ext").expect("eku").value;
    assert!(eku.server_auth && eku.client_auth);
    let san = parsed.subject_alternative_name().expect("ext").expect("san").value;
    assert!(
        san.general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName("gd-node")))
    );

    let (op_cert, _, _) = ca.issue("gd-transport", Role::Operator, "alice");
    let op_der = read_cert_der(&op_cert);
    let (_, op) = x509_parser::parse_x509_certificate(&op_der).expect("parse");
    let eku = op.extended_key_usage().expect("ext").expect("eku").value;
    assert!(eku.client_auth && !eku.server_auth);

    let records = list(ca.path()).expect("list");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].serial, serial);
    assert_eq!(records[0].dns_names, vec!["gd-node".to_owned()]);
}

#[test]
fn control_certificate_is_for_document_signing_only() {
    let ca = TempCa::new("root");
    let (cert, _, _) = ca.issue("ministry", Role::Control, "control");
    let der = read_cert_der(&cert);
    assert_eq!(principal_from_cert(&der).expect("identity").role, Role::Control);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let eku = parsed.extended_key_usage().expect("ext").expect("eku").value;
    assert!(!eku.server_auth && !eku.client_auth, "never a TLS peer");
    let other: Vec<String> = eku.other.iter().map(|oid| oid.to_id_string()).collect();
    assert_eq!(other, vec!["1.3.6.1.5.5.7.3.36".to_owned()]);
}

#[test]
fn issue_refuses_existing_outputs_and_bad_requests() {
    let ca = TempCa::new("root");
    let (cert, key, _) = ca.issue("a", Role::Operator, "bob");
    let now = OffsetDateTime::now_utc();
    let mut req = IssueRequest {
        dept: DeptId::new("a").expect("dept"),
        role: Role::Operator,
        name: "bob".into(),
        dns_names: vec![],
        not_before: now,
        not_after: now + Duration::days(1),
    };
    let other_key = ca.path().join("other.key");
    assert!(matches!(issue(ca.path(), &req, &cert, &other_key), Err(PkiError::OutputExists { .. })));
    assert!(!other_key.exists());
    let other_cert = ca.path().join("other.pem");
    assert!(matches!(issue(ca.path(), &req, &other_cert, &key), Err(PkiError::OutputExists { .. })));
    req.not_after = now - Duration::days(1);
    assert!(matches!(issue(ca.path(), &req, &other_cert, &other_key), Err(PkiError::InvalidRequest { .. })));
    req.not_after = now + Duration::days(1);
    req.dns_names = vec!["bad name".into()];
    assert!(matches!(issue(ca.path(), &req, &other_cert, &other_key), Err(PkiError::InvalidRequest { .. })));
    req.dns_names = vec![];
    let empty = tempfile::tempdir().expect("tempdir");
    let not_init = issue(empty.path(), &req, &other_cert, &other_key);
    assert!(matches!(not_init, Err(PkiError::NotInitialized { .. })), "{not_init:?}");
}

#[test]
fn revoke_resigns_crl_listing_every_revoked_serial() {
    let ca = TempCa::new("root");
    let (_, _, first) = ca.issue("a", Role::Province, "node-a");
    let (second_cert, _, second) = ca.issue("b", Role::Province, "node-b");
    let (_, _, kept) = ca.issue("c", Role::Province, "node-c");
    let now = OffsetDateTime::now_utc();

    revoke(ca.path(), &first.to_uppercase(), RevocationReason::KeyCompromise, now).expect("revoke");
    assert_eq!(crl_serials(ca.path()), (2, vec![first.clone()]));

    let by_file = serial_of_cert_file(&second_cert).expect("serial");
    revoke(ca.path(), &by_file, RevocationReason::Superseded, now).expect("revoke");
    let (number, serials) = crl_serials(ca.path());
    assert_eq!(number, 3);
    assert_eq!(serials, vec![first.clone(), second.clone()]);
    assert!(!serials.contains(&kept));

    let again = revoke(ca.path(), &first, RevocationReason::Unspecified, now);
    assert!(matches!(again, Err(PkiError::AlreadyRevoked { .. })), "{again:?}");
    // A serial without a record is revoked as signed outside the registry (see `revoke.rs`).
    let outside = revoke(ca.path(), "01ff", RevocationReason::Unspecified, now).expect("revoke");
    assert!(!outside.registered);
    assert!(matches!(
        revoke(ca.path(), "xyz", RevocationReason::Unspecified, now),
        Err(PkiError::InvalidRequest { .. })
    ));

    let records = list(ca.path()).expect("list");
    assert_eq!(records[0].reason, Some(RevocationReason::KeyCompromise));
    assert!(records[0].revoked_at.is_some());
    assert_eq!(records[2].revoked_at, None);
}

#[test]
fn revocation_reasons_round_trip_through_text() {
    for reason in RevocationReason::ALL {
        assert_eq!(reason.as_str().parse::<RevocationReason>(), Ok(reason));
    }
    assert!("ca-compromise".parse::<RevocationReason>().is_err());
}

#[test]
fn serials_are_normalized() {
    assert_eq!(normalize_serial("00:7F:01").expect("ok"), "7f01");
    assert_eq!(normalize_serial("abc").expect("ok"), "0abc");
    assert!(normalize_serial("").is_err());
}
