//! Who a certificate speaks for: the department, role and name the ministry CA wrote into it.
//!
//! The CA (the client's `ferry_client::pki::issue`) puts two URI subject alternative names into
//! every certificate, `urn:ferry:dept:<dept>` and `urn:ferry:role:<role>`, and the holder's name
//! into the subject common name. [`principal_from_cert`] reads them back as a
//! [`ferry_proto::Principal`], with the certificate's serial and SHA-256 fingerprint. It does not check the certificate's chain
//! or validity: callers only pass certificates that rustls (TLS) or [`crate::sign`] (manifests,
//! documents) already verified against the CA.

use ferry_proto::{DeptId, IdError, Principal, Role};
use x509_parser::extensions::GeneralName;

/// URI prefix of the department subject alternative name.
pub const DEPT_URI_PREFIX: &str = "urn:ferry:dept:";
/// URI prefix of the role subject alternative name.
pub const ROLE_URI_PREFIX: &str = "urn:ferry:role:";

/// Why a certificate does not name a ferry identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate is not valid DER X.509: {0}")]
    Malformed(String),
    #[error("certificate has no `{DEPT_URI_PREFIX}<dept>` subject alternative name")]
    MissingDept,
    #[error("certificate has no `{ROLE_URI_PREFIX}<role>` subject alternative name")]
    MissingRole,
    #[error("certificate names {count} departments; exactly one is required")]
    SeveralDepts { count: usize },
    #[error("certificate names {count} roles; exactly one is required")]
    SeveralRoles { count: usize },
    #[error("certificate has a bad department or role: {0}")]
    BadValue(#[from] IdError),
    #[error("certificate has no subject common name")]
    MissingName,
}

/// Reads the ferry identity out of a DER certificate: the [`Principal`] it stands for.
///
/// Exactly one department URI and one role URI are required; a certificate naming two
/// departments is refused rather than guessed at.
pub fn principal_from_cert(der: &[u8]) -> Result<Principal, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let sans = cert.subject_alternative_name().map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let mut depts = Vec::new();
    let mut roles = Vec::new();
    for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name {
            if let Some(dept) = uri.strip_prefix(DEPT_URI_PREFIX) {
                depts.push(dept);
            } else if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
                roles.push(role);
            }
        }
    }
    let dept = match depts.as_slice() {
        [] => return Err(IdentityError::MissingDept),
        [one] => DeptId::new(*one)?,
        many => return Err(IdentityError::SeveralDepts { count: many.len() }),
    };
    let role = match roles.as_slice() {
        [] => return Err(IdentityError::MissingRole),
        [one] => one.parse::<Role>()?,
        many => return Err(IdentityError::SeveralRoles { count: many.len() }),
    };
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(IdentityError::MissingName)?
        .to_owned();
    Ok(Principal { dept, role, name, serial: serial_hex(cert.raw_serial()), fingerprint: fingerprint(der) })
}

/// Lowercase hex SHA-256 of a certificate's DER ([`Principal::fingerprint`]).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// Canonical text form of a serial number: lowercase hex, leading zero bytes dropped.
pub fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let trimmed = &raw[first..];
    if trimmed.is_empty() { "00".to_owned() } else { hex::encode(trimmed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert_with_uris(uris: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names =
            uris.iter().map(|u| SanType::URI((*u).try_into().expect("test URI is IA5"))).collect();
        let key = KeyPair::generate().expect("keygen");
        params.self_signed(&key).expect("self-sign").der().to_vec()
    }

    #[test]
    fn identity_is_read_from_uris_and_common_name() {
        let der =
            cert_with_uris(&["urn:ferry:dept:gd-transport", "urn:ferry:role:province"], Some("gd-node"));
        let id = principal_from_cert(&der).expect("identity");
        assert_eq!(id.dept.as_str(), "gd-transport");
        assert_eq!(id.role, Role::Province);
        assert_eq!(id.name, "gd-node");
        assert!(!id.serial.is_empty());
        assert_eq!(id.fingerprint, fingerprint(&der));
        assert_eq!(id.fingerprint.len(), 64);
    }

    #[test]
    fn missing_or_repeated_parts_are_named() {
        let no_dept = cert_with_uris(&["urn:ferry:role:operator"], Some("x"));
        assert_eq!(principal_from_cert(&no_dept), Err(IdentityError::MissingDept));
        let no_role = cert_with_uris(&["urn:ferry:dept:a"], Some("x"));
        assert_eq!(principal_from_cert(&no_role), Err(IdentityError::MissingRole));
        let two =
            cert_with_uris(&["urn:ferry:dept:a", "urn:ferry:dept:b", "urn:ferry:role:operator"], Some("x"));
        assert_eq!(principal_from_cert(&two), Err(IdentityError::SeveralDepts { count: 2 }));
        let bad_role = cert_with_uris(&["urn:ferry:dept:a", "urn:ferry:role:king"], Some("x"));
        assert!(matches!(principal_from_cert(&bad_role), Err(IdentityError::BadValue(_))));
        let no_cn = cert_with_uris(&["urn:ferry:dept:a", "urn:ferry:role:operator"], None);
        assert_eq!(principal_from_cert(&no_cn), Err(IdentityError::MissingName));
        assert!(matches!(principal_from_cert(b"junk"), Err(IdentityError::Malformed(_))));
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256_of_the_der() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(fingerprint(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn control_role_is_read() {
        let der = cert_with_uris(&["urn:ferry:dept:ministry", "urn:ferry:role:control"], Some("control"));
        assert_eq!(principal_from_cert(&der).expect("identity").role, Role::Control);
    }

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x7f, 0x01]), "7f01");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
