//! What a CRL and a certificate say about a live connection: which serials are revoked and when a
//! certificate stops being valid.
//!
//! rustls checks the CRL and the validity period once, in the handshake. A connection can outlive
//! both: the daemon's listener (`ferry_daemon::net`) asks [`RevokedSerials`] after each CRL reload
//! which of its live peers to close, and closes a connection at its peer's [`not_after`]. Serials
//! are compared in the canonical form of [`crate::identity::serial_hex`], the one a
//! [`ferry_proto::Principal`] carries.

use crate::identity::serial_hex;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Application close code of a connection the node closed because the peer's certificate was
/// revoked while it was connected.
pub const CLOSE_REVOKED: u32 = 0x12;
/// Application close code of a connection the node closed at its peer certificate's `not_after`.
pub const CLOSE_EXPIRED: u32 = 0x13;

/// The serial numbers the CRLs in force list, in canonical form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedSerials(HashSet<String>);

impl RevokedSerials {
    /// Every serial listed by `crls`. A CRL that does not parse lists nothing here; the loaders
    /// ([`super::Credentials::load`]) refuse such a file before it gets this far.
    pub fn from_crls(crls: &[CertificateRevocationListDer<'_>]) -> Self {
        let mut serials = HashSet::new();
        for crl in crls {
            if let Ok((_, parsed)) = x509_parser::parse_x509_crl(crl) {
                serials.extend(parsed.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())));
            }
        }
        Self(serials)
    }

    /// Whether the certificate with this canonical serial is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.0.contains(serial)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// When `cert` stops being valid; `None` when it does not parse or the time is before 1970.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, KeyIdMethod, KeyPair, RevokedCertParams,
    };
    use rcgen::{IsCa, SerialNumber};

    #[test]
    fn serials_are_read_in_canonical_form() {
        let ca_key = KeyPair::generate().expect("keygen");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let revoked = |serial: &[u8]| RevokedCertParams {
            serial_number: SerialNumber::from_slice(serial),
            revocation_time: rcgen::date_time_ymd(2026, 1, 1),
            reason_code: None,
            invalidity_date: None,
        };
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2027, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![revoked(&[0x00, 0x7f, 0x01]), revoked(&[0xab])],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .expect("crl");
        let serials = RevokedSerials::from_crls(&[crl.der().clone()]);
        assert_eq!(serials.len(), 2);
        assert!(serials.contains("7f01"), "leading zero bytes are dropped");
        assert!(serials.contains("ab"));
        assert!(!serials.contains("01"));
    }

    #[test]
    fn not_after_is_the_certificate_end() {
        let key = KeyPair::generate().expect("keygen");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 6, 1);
        let cert = params.self_signed(&key).expect("cert");
        let end = not_after(cert.der()).expect("parses");
        assert_eq!(end, UNIX_EPOCH + Duration::from_secs(1_906_502_400));
        assert_eq!(not_after(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    /// Every holder of credentials sees a revocation once the CRL file changes, with no reload
    /// call: what the manifest checks and outgoing connections of a running node rely on.
    #[test]
    fn credentials_follow_the_crl_file() {
        use crate::testca::TempCa;
        use crate::tls::{Credentials, tests::paths};
        let ca = TempCa::new("root");
        let (cert, key, _) = ca.issue("a", ferry_proto::Role::Province, "node-a");
        let creds = Credentials::load(&paths(&ca, &cert, &key)).expect("creds");
        let (_, _, serial) = ca.issue("b", ferry_proto::Role::Province, "node-b");
        let serial = serial_hex(&hex::decode(serial).expect("hex"));
        assert!(!RevokedSerials::from_crls(&creds.crls()).contains(&serial));
        ca.revoke(&serial);
        assert!(RevokedSerials::from_crls(&creds.crls()).contains(&serial), "the new CRL is in force");
    }
}
