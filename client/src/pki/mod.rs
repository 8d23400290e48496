//! The ministry's certificate authority, kept in a directory on disk.
//!
//! Every ferry node and operator holds a certificate issued by this CA; the department and role
//! it stands for are URI subject alternative names read back by [`principal_from_cert`]. The
//! neighbours: `ferry_net::tls` loads the files this module writes, `ferry pki` (the CLI command)
//! drives it, and the testkit calls it to build test fleets in temporary directories.
//!
//! Layout of a PKI directory:
//!
//! | file          | content                                                             |
//! |---------------|---------------------------------------------------------------------|
//! | `ca.pem`      | root certificate (distributed to every node)                        |
//! | `ca.key`      | root private key, PKCS#8 PEM, mode 0600                             |
//! | `crl.pem`     | current certificate revocation list (distributed to every node)     |
//! | `issued.json` | every certificate issued, its revocation, and the last CRL number   |
//!
//! Every write is atomic (temporary file, fsync, rename). Changing operations take a lock file `.lock`.
//!
//! The CRL is re-signed on every revocation with a `nextUpdate` [`CRL_VALIDITY`] (365 days)
//! ahead. rustls ignores `nextUpdate` unless told otherwise, and ferry does not tell it, so a CRL
//! that is not renewed keeps working; the long horizon keeps other tools (openssl) content too.

mod revoke;
mod store;

pub use revoke::{Revocation, revoke, revoke_certificate, serial_signed_by_this_ca};
pub use store::{IssuedRecord, OutsideRevocation};

use ferry_net::identity::{DEPT_URI_PREFIX, ROLE_URI_PREFIX, serial_hex};
use ferry_proto::{DeptId, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use store::{DirLock, PUBLIC_MODE, Registry, Replace, SECRET_MODE, write_atomic};
use time::{Duration, OffsetDateTime};

/// File names inside a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CRL_FILE: &str = "crl.pem";
pub const REGISTRY_FILE: &str = "issued.json";

/// OID arcs of the extended key usage `id-kp-documentSigning` (RFC 9336, 1.3.6.1.5.5.7.3.36),
/// the only usage of a [`Role::Control`] certificate.
pub const DOCUMENT_SIGNING_EKU: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 36];

/// How far ahead a CRL's `nextUpdate` is set (see the module documentation).
pub const CRL_VALIDITY: Duration = Duration::days(365);
/// How far back a new CA's `notBefore` is set, to tolerate clocks running slightly behind.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{dir} already holds a CA ({CA_CERT_FILE} or {CA_KEY_FILE} exists); refusing to replace it")]
    AlreadyInitialized { dir: PathBuf },
    #[error("{dir} holds no CA (missing {missing}); run `ferry pki init` first")]
    NotInitialized { dir: PathBuf, missing: &'static str },
    #[error("{path} already exists; refusing to overwrite it")]
    OutputExists { path: PathBuf },
    #[error("another `ferry pki` operation holds {lock}; if none is running, remove that file")]
    Busy { lock: PathBuf },
    #[error("{path} was not signed by this CA")]
    NotSignedByThisCa { path: PathBuf },
    #[error("certificate {serial} is already revoked")]
    AlreadyRevoked { serial: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Why a certificate was revoked (the RFC 5280 reasons that make sense for ferry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub const ALL: [Self; 6] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::PrivilegeWithdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
            Self::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Self::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// A revocation reason that is not one of [`RevocationReason::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {0:?} (expected unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation or privilege-withdrawn)"
)]
pub struct UnknownReason(pub String);

impl std::str::FromStr for RevocationReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, UnknownReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`init`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSummary {
    pub name: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    pub ca_cert: PathBuf,
    pub crl: PathBuf,
}

/// A certificate to issue. `not_before`/`not_after` are taken as given, so tests can make
/// expired and not-yet-valid certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub dept: DeptId,
    pub role: Role,
    /// Subject common name: the node name or the person.
    pub name: String,
    /// DNS names clients verify a node by (its node name, e.g. `ministry`).
    pub dns_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What [`issue`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub serial: String,
    pub dept: DeptId,
    pub role: Role,
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Creates a CA in `dir` (created with mode 0700 if missing): an ECDSA P-256 root valid for
/// `valid_for` from now, an empty CRL (number 1) and an empty registry.
pub fn init(dir: &Path, ca_name: &str, valid_for: Duration) -> Result<CaSummary, PkiError> {
    if ca_name.trim().is_empty() {
        return Err(PkiError::InvalidRequest { reason: "CA name is empty".into() });
    }
    if !valid_for.is_positive() {
        return Err(PkiError::InvalidRequest { reason: "CA validity must be positive".into() });
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(store::io_error(dir))?;
    let _lock = DirLock::acquire(dir)?;
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if cert_path.exists() || key_path.exists() {
        return Err(PkiError::AlreadyInitialized { dir: dir.to_owned() });
    }
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let serial = random_serial();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.distinguished_name.push(DnType::OrganizationName, "ferry");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + valid_for;
    let cert = params.self_signed(&key)?;

    write_atomic(&key_path, key.serialize_pem().as_bytes(), SECRET_MODE, Replace::Refused)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), PUBLIC_MODE, Replace::Refused)?;
    let issuer = Issuer::new(params, key);
    let registry = Registry { crl_number: 1, certs: Vec::new(), outside: Vec::new() };
    write_crl(dir, &issuer, &registry, now)?;
    registry.save(&dir.join(REGISTRY_FILE))?;
    Ok(CaSummary {
        name: ca_name.to_owned(),
        serial: hex::encode(serial),
        not_after: whole_seconds(now + valid_for),
        ca_cert: cert_path,
        crl: dir.join(CRL_FILE),
    })
}

/// Issues a certificate for `req`, writing the leaf certificate (PEM, without the CA) to
/// `cert_out` and its PKCS#8 key to `key_out` (mode 0600). Neither output may exist yet.
pub fn issue(
    dir: &Path,
    req: &IssueRequest,
    cert_out: &Path,
    key_out: &Path,
) -> Result<IssuedCert, PkiError> {
    check_request(req)?;
    let _lock = DirLock::acquire_initialized(dir)?;
    for out in [cert_out, key_out] {
        if out.exists() {
            return Err(PkiError::OutputExists { path: out.to_owned() });
        }
    }
    let issuer = load_issuer(dir)?;
    let registry_path = dir.join(REGISTRY_FILE);
    let mut registry = Registry::load(&registry_path)?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let serial = random_serial();
    let params = leaf_params(req, &serial)?;
    let cert = params.signed_by(&key, &issuer)?;

    write_atomic(key_out, key.serialize_pem().as_bytes(), SECRET_MODE, Replace::Refused)?;
    write_atomic(cert_out, cert.pem().as_bytes(), PUBLIC_MODE, Replace::Refused)?;
    let serial = hex::encode(serial);
    registry.certs.push(IssuedRecord {
        serial: serial.clone(),
        dept: req.dept.clone(),
        role: req.role,
        name: req.name.clone(),
        dns_names: req.dns_names.clone(),
        not_before: whole_seconds(req.not_before),
        not_after: whole_seconds(req.not_after),
        revoked_at: None,
        reason: None,
    });
    registry.save(&registry_path)?;
    Ok(IssuedCert {
        serial,
        dept: req.dept.clone(),
        role: req.role,
        name: req.name.clone(),
        cert_path: cert_out.to_owned(),
        key_path: key_out.to_owned(),
    })
}

/// Serial number (canonical hex) of the certificate in a PEM or DER file.
pub fn serial_of_cert_file(path: &Path) -> Result<String, PkiError> {
    let bytes = store::read(path)?;
    let der = match CertificateDer::from_pem_slice(&bytes) {
        Ok(der) => der,
        Err(_) => CertificateDer::from(bytes),
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::Corrupt { path: path.to_owned(), reason: e.to_string() })?;
    Ok(serial_hex(cert.raw_serial()))
}

/// Every certificate this CA issued, in issue order.
pub fn list(dir: &Path) -> Result<Vec<IssuedRecord>, PkiError> {
    let path = dir.join(REGISTRY_FILE);
    if !path.exists() {
        return Err(PkiError::NotInitialized { dir: dir.to_owned(), missing: REGISTRY_FILE });
    }
    Ok(Registry::load(&path)?.certs)
}

impl DirLock {
    fn acquire_initialized(dir: &Path) -> Result<Self, PkiError> {
        for file in [CA_CERT_FILE, CA_KEY_FILE, REGISTRY_FILE] {
            if !dir.join(file).exists() {
                return Err(PkiError::NotInitialized { dir: dir.to_owned(), missing: file });
            }
        }
        Self::acquire(dir)
    }
}

fn check_request(req: &IssueRequest) -> Result<(), PkiError> {
    let invalid = |reason: String| Err(PkiError::InvalidRequest { reason });
    if req.name.trim().is_empty() {
        return invalid("certificate name is empty".into());
    }
    if req.not_after <= req.not_before {
        return invalid(format!("not-after {} is not after not-before {}", req.not_after, req.not_before));
    }
    for dns in &req.dns_names {
        let ok = !dns.is_empty()
            && dns.len() <= 253
            && dns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return invalid(format!("{dns:?} is not a DNS name"));
        }
    }
    Ok(())
}

fn leaf_params(req: &IssueRequest, serial: &[u8]) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, req.name.as_str());
    params.distinguished_name.push(DnType::OrganizationName, "ferry");
    let mut sans = vec![
        SanType::URI(format!("{DEPT_URI_PREFIX}{}", req.dept).try_into()?),
        SanType::URI(format!("{ROLE_URI_PREFIX}{}", req.role).try_into()?),
    ];
    for dns in &req.dns_names {
        sans.push(SanType::DnsName(dns.clone().try_into()?));
    }
    params.subject_alt_names = sans;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match req.role {
        Role::Ministry | Role::Province => {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        }
        Role::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
        // Document signing only (RFC 9336): TLS verifiers refuse it as a peer of either side.
        Role::Control => vec![ExtendedKeyUsagePurpose::Other(DOCUMENT_SIGNING_EKU.to_vec())],
    };
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key_path = dir.join(CA_KEY_FILE);
    let key = KeyPair::from_pem(&store::read_string(&key_path)?)
        .map_err(|e| PkiError::Corrupt { path: key_path, reason: e.to_string() })?;
    let cert_path = dir.join(CA_CERT_FILE);
    Issuer::from_ca_cert_pem(&store::read_string(&cert_path)?, key)
        .map_err(|e| PkiError::Corrupt { path: cert_path, reason: e.to_string() })
}

fn write_crl(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    registry: &Registry,
    now: OffsetDateTime,
) -> Result<(), PkiError> {
    let registered = registry.certs.iter().filter_map(|r| Some((&r.serial, r.revoked_at?, r.reason)));
    let outside = registry.outside.iter().map(|r| (&r.serial, r.revoked_at, Some(r.reason)));
    let mut revoked_certs = Vec::new();
    for (serial, revoked_at, reason) in registered.chain(outside) {
        let bytes = hex::decode(serial).map_err(|e| PkiError::Corrupt {
            path: dir.join(REGISTRY_FILE),
            reason: format!("serial {serial:?}: {e}"),
        })?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: revoked_at,
            reason_code: reason.map(RevocationReason::to_rcgen),
            invalidity_date: None,
        });
    }
    let number = registry.crl_number.to_be_bytes();
    let first = number.iter().position(|b| *b != 0).unwrap_or(number.len() - 1);
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        crl_number: SerialNumber::from_slice(&number[first..]),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer)?;
    write_atomic(&dir.join(CRL_FILE), crl.pem()?.as_bytes(), PUBLIC_MODE, Replace::Allowed)
}

/// `t` without its fraction of a second: what a certificate records.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// 16 random bytes, first byte in 0x01..=0x7f: positive, and DER-minimal as it stands, so the
/// hex of these bytes is exactly what parsers report.
fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 1;
    }
    serial
}

/// Whether two operator-typed serials name the same number (case, colons and leading zeros
/// aside); `false` when either is not hexadecimal.
pub fn same_serial(a: &str, b: &str) -> bool {
    matches!((normalize_serial(a), normalize_serial(b)), (Ok(a), Ok(b)) if a == b)
}

/// Canonical form of an operator-typed serial: lowercase hex, no colons, no leading zero bytes.
fn normalize_serial(text: &str) -> Result<String, PkiError> {
    let digits: String = text.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    let padded = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
    let bytes = hex::decode(&padded)
        .map_err(|_| PkiError::InvalidRequest { reason: format!("serial {text:?} is not hexadecimal") })?;
    if bytes.is_empty() {
        return Err(PkiError::InvalidRequest { reason: "serial is empty".into() });
    }
    Ok(serial_hex(&bytes))
}

#[cfg(test)]
pub(crate) mod tests;
