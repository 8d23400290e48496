//! A ministry-like CA in a temporary directory, for this crate's tests: certificates with the
//! department and role URIs the real CA (`ferry_client::pki`) writes, and a CRL re-signed on
//! each revocation. The real CA lives in the client crate, above this one.

use ferry_proto::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA certificate and the CRL, as `ferry pki init` names them.
pub(crate) const CA_CERT_FILE: &str = "ca.pem";
pub(crate) const CRL_FILE: &str = "crl.pem";

/// OID arcs of `id-kp-documentSigning` (RFC 9336), as the real CA gives role `control`.
const DOCUMENT_SIGNING: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 36];

pub(crate) struct TempCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    next_serial: RefCell<u8>,
    /// Serial, reason and time of each revocation.
    revoked: RefCell<Vec<(Vec<u8>, rcgen::RevocationReason, OffsetDateTime)>>,
}

impl TempCa {
    pub(crate) fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
        let cert = params.self_signed(&key).expect("self-sign");
        std::fs::write(dir.path().join(CA_CERT_FILE), cert.pem()).expect("write ca");
        let ca = Self {
            dir,
            issuer: Issuer::new(params, key),
            next_serial: RefCell::new(1),
            revoked: RefCell::new(Vec::new()),
        };
        ca.write_crl();
        ca
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `name` valid from `now + from` to `now + until`; returns (cert, key, serial hex).
    pub(crate) fn issue_with_validity(
        &self,
        dept: &str,
        role: Role,
        name: &str,
        from: Duration,
        until: Duration,
    ) -> (PathBuf, PathBuf, String) {
        self.issue_full(dept, role, name, (from, until), role)
    }

    /// Issues a certificate naming `role` but with the key usages the real CA gives `usage_of`.
    pub(crate) fn issue_with_usage_of(
        &self,
        dept: &str,
        role: Role,
        name: &str,
        usage_of: Role,
    ) -> (PathBuf, PathBuf, String) {
        self.issue_full(dept, role, name, (Duration::hours(-1), Duration::days(1)), usage_of)
    }

    fn issue_full(
        &self,
        dept: &str,
        role: Role,
        name: &str,
        (from, until): (Duration, Duration),
        usage_of: Role,
    ) -> (PathBuf, PathBuf, String) {
        let serial = {
            let mut next = self.next_serial.borrow_mut();
            *next += 1;
            vec![0x10, *next]
        };
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![
            SanType::URI(format!("urn:ferry:dept:{dept}").try_into().expect("IA5")),
            SanType::URI(format!("urn:ferry:role:{role}").try_into().expect("IA5")),
            SanType::DnsName(name.to_owned().try_into().expect("IA5")),
        ];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + until;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match usage_of {
            Role::Ministry | Role::Province => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            Role::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Role::Control => vec![ExtendedKeyUsagePurpose::Other(DOCUMENT_SIGNING.to_vec())],
        };
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_path, key_path) =
            (self.path().join(format!("{name}.pem")), self.path().join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path, hex::encode(serial))
    }

    /// Issues a certificate valid for a day around now.
    pub(crate) fn issue(&self, dept: &str, role: Role, name: &str) -> (PathBuf, PathBuf, String) {
        self.issue_with_validity(dept, role, name, Duration::hours(-1), Duration::days(1))
    }

    /// Lists `serial` (hex, as returned by `issue`) in a newly signed CRL, for key compromise.
    pub(crate) fn revoke(&self, serial: &str) {
        self.revoke_with(serial, rcgen::RevocationReason::KeyCompromise, OffsetDateTime::now_utc());
    }

    /// Lists `serial` in a newly signed CRL as revoked at `at` for `reason`.
    pub(crate) fn revoke_with(&self, serial: &str, reason: rcgen::RevocationReason, at: OffsetDateTime) {
        self.revoked.borrow_mut().push((hex::decode(serial).expect("hex serial"), reason, at));
        self.write_crl();
    }

    fn write_crl(&self) {
        let now = OffsetDateTime::now_utc();
        let revoked = self.revoked.borrow();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from_slice(&[revoked.len() as u8 + 1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, reason, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: Some(*reason),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign crl");
        std::fs::write(self.path().join(CRL_FILE), crl.pem().expect("crl pem")).expect("write crl");
    }
}
