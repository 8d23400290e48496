//! Revoking a certificate: by the registry's record, or — for one this CA signed outside the
//! registry — by its serial alone, optionally checked against the certificate file.
//!
//! A CA must be able to revoke any serial it signed: a certificate issued by hand, or by a copy
//! of the CA directory whose `issued.json` was lost, is still trusted by every node until the CRL
//! lists it. Such revocations are kept in `issued.json` beside the records
//! ([`OutsideRevocation`]) so every later CRL lists them too. Neighbours: the parent module
//! signs the CRL (`write_crl`); `ferry pki revoke` (`client/src/cmd/pki.rs`) calls these.

use super::store::{self, DirLock, OutsideRevocation, Registry};
use super::{
    CA_CERT_FILE, PkiError, REGISTRY_FILE, RevocationReason, load_issuer, normalize_serial, whole_seconds,
    write_crl,
};
use ferry_net::identity::serial_hex;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The serial now listed in the CRL (canonical hex).
    pub serial: String,
    /// Whether the registry had a record of it; `false` for a certificate signed outside it.
    pub registered: bool,
}

/// Revokes the certificate with serial `serial_hex` (any case, colons allowed) and re-signs the
/// CRL with the next CRL number, listing every revoked certificate. A serial the registry has
/// no record of is revoked too, as signed outside it ([`Revocation::registered`] says which).
pub fn revoke(
    dir: &Path,
    serial_hex: &str,
    reason: RevocationReason,
    now: OffsetDateTime,
) -> Result<Revocation, PkiError> {
    let serial = normalize_serial(serial_hex)?;
    let _lock = DirLock::acquire_initialized(dir)?;
    let issuer = load_issuer(dir)?;
    let registry_path = dir.join(REGISTRY_FILE);
    let mut registry = Registry::load(&registry_path)?;
    let registered = mark_revoked(&mut registry, &serial, reason, whole_seconds(now))?;
    registry.crl_number += 1;
    // The CRL goes first: if saving the registry then fails, the certificate is still revoked
    // and a retry reports it as already revoked rather than leaving it trusted.
    write_crl(dir, &issuer, &registry, now)?;
    registry.save(&registry_path)?;
    Ok(Revocation { serial, registered })
}

/// Revokes the certificate in `cert_path` (PEM or DER) after checking that this CA signed it;
/// whether it is in the registry or not.
pub fn revoke_certificate(
    dir: &Path,
    cert_path: &Path,
    reason: RevocationReason,
    now: OffsetDateTime,
) -> Result<Revocation, PkiError> {
    let serial = serial_signed_by_this_ca(dir, cert_path)?;
    revoke(dir, &serial, reason, now)
}

/// The serial of the certificate in `cert_path`, once its signature is checked against this
/// CA's key and its issuer name against the CA's subject.
pub fn serial_signed_by_this_ca(dir: &Path, cert_path: &Path) -> Result<String, PkiError> {
    let ca_path = dir.join(CA_CERT_FILE);
    let ca_der = read_cert(&ca_path)?;
    let leaf_der = read_cert(cert_path)?;
    let ca = parse(&ca_der, &ca_path)?;
    let leaf = parse(&leaf_der, cert_path)?;
    if leaf.issuer() != ca.subject() || !signed_by(&leaf, &ca) {
        return Err(PkiError::NotSignedByThisCa { path: cert_path.to_owned() });
    }
    Ok(serial_hex(leaf.raw_serial()))
}

/// Marks `serial` revoked in the registry; returns whether it had a record.
fn mark_revoked(
    registry: &mut Registry,
    serial: &str,
    reason: RevocationReason,
    at: OffsetDateTime,
) -> Result<bool, PkiError> {
    let already = || PkiError::AlreadyRevoked { serial: serial.to_owned() };
    if let Some(record) = registry.certs.iter_mut().find(|r| r.serial == serial) {
        if record.revoked_at.is_some() {
            return Err(already());
        }
        record.revoked_at = Some(at);
        record.reason = Some(reason);
        return Ok(true);
    }
    if registry.outside.iter().any(|r| r.serial == serial) {
        return Err(already());
    }
    registry.outside.push(OutsideRevocation { serial: serial.to_owned(), revoked_at: at, reason });
    Ok(false)
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let bytes = store::read(path)?;
    Ok(CertificateDer::from_pem_slice(&bytes).unwrap_or_else(|_| CertificateDer::from(bytes)))
}

fn parse<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Corrupt { path: path.to_owned(), reason: e.to_string() })
}

/// Whether `ca`'s key signed `leaf`, by any signature algorithm the TLS provider verifies
/// (ECDSA P-256/P-384, RSA PKCS#1 and PSS, Ed25519): a signature that verifies under the CA's
/// public key was made with the CA's private key, whichever of them it is.
fn signed_by(leaf: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> bool {
    let public_key = ca.public_key().subject_public_key.data.as_ref();
    let message = leaf.tbs_certificate.as_ref();
    let signature = leaf.signature_value.data.as_ref();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .signature_verification_algorithms
        .all
        .iter()
        .any(|alg| alg.verify_signature(public_key, message, signature).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tests::{TempCa, crl_serials};
    use crate::pki::{CRL_FILE, list};
    use ferry_proto::Role;
    use rcgen::{CertificateParams, KeyPair};
    use std::process::Command;

    /// A certificate this CA's key signs by hand, so `issued.json` has no record of it.
    fn signed_outside_the_registry(ca: &TempCa, serial: &[u8]) -> std::path::PathBuf {
        let issuer = load_issuer(ca.path()).expect("issuer");
        let mut params = CertificateParams::new(vec!["by-hand".to_owned()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        let cert = params.signed_by(&KeyPair::generate().expect("key"), &issuer).expect("sign");
        let path = ca.path().join("by-hand.pem");
        std::fs::write(&path, cert.pem()).expect("write");
        path
    }

    #[test]
    fn a_certificate_signed_outside_the_registry_is_revoked() {
        let ca = TempCa::new("root");
        let (_, _, registered) = ca.issue("a", Role::Province, "node-a");
        let by_hand = signed_outside_the_registry(&ca, &[0x42, 0x01]);
        let now = OffsetDateTime::now_utc();

        let done =
            revoke_certificate(ca.path(), &by_hand, RevocationReason::KeyCompromise, now).expect("revoke");
        assert_eq!(done, Revocation { serial: "4201".into(), registered: false });
        assert_eq!(crl_serials(ca.path()).1, vec!["4201".to_owned()]);
        let again = revoke(ca.path(), "42:01", RevocationReason::Unspecified, now);
        assert!(matches!(again, Err(PkiError::AlreadyRevoked { .. })), "{again:?}");

        // Later CRLs keep listing it, beside registered revocations and bare serials.
        revoke(ca.path(), &registered, RevocationReason::Superseded, now).expect("revoke registered");
        let bare = revoke(ca.path(), "7f00aa", RevocationReason::Unspecified, now).expect("bare serial");
        assert!(!bare.registered);
        let (number, serials) = crl_serials(ca.path());
        assert_eq!(number, 4);
        assert_eq!(serials, vec![registered.clone(), "4201".to_owned(), "7f00aa".to_owned()]);
        assert_eq!(
            list(ca.path()).expect("list").len(),
            1,
            "the registry of issued certificates is unchanged"
        );
    }

    #[test]
    fn a_certificate_of_another_ca_is_refused() {
        let ours = TempCa::new("ours");
        let theirs = TempCa::new("theirs");
        let (cert, _, _) = theirs.issue("a", Role::Province, "node-a");
        let err =
            revoke_certificate(ours.path(), &cert, RevocationReason::Unspecified, OffsetDateTime::now_utc());
        assert!(matches!(err, Err(PkiError::NotSignedByThisCa { .. })), "{err:?}");
        assert_eq!(crl_serials(ours.path()), (1, vec![]), "no CRL was signed");
    }

    fn openssl(args: &[&str]) -> bool {
        Command::new("openssl").args(args).output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// A CA whose key `openssl` rewrote as SEC1 (`openssl ec`), or an RSA CA key in PKCS#1
    /// (`openssl genrsa -traditional`) with its root made by `openssl req`, issues and revokes.
    #[test]
    fn ca_keys_written_by_openssl_issue_and_revoke() {
        let ca = TempCa::new("root");
        let dir = ca.path();
        let key = dir.join(crate::pki::CA_KEY_FILE).display().to_string();
        if !openssl(&["ec", "-in", &key, "-out", &key]) {
            eprintln!("openssl not usable here; skipping");
            return;
        }
        assert!(std::fs::read_to_string(&key).expect("read").contains("BEGIN EC PRIVATE KEY"));
        let (cert, _, serial) = ca.issue("a", Role::Province, "node-a");
        let done = revoke_certificate(dir, &cert, RevocationReason::Superseded, OffsetDateTime::now_utc());
        assert_eq!(done.expect("revoke").serial, serial);

        let rsa = TempCa::new("to be replaced");
        let dir = rsa.path();
        let (key, root) = (dir.join(crate::pki::CA_KEY_FILE), dir.join(CA_CERT_FILE));
        let (key, root) = (key.display().to_string(), root.display().to_string());
        assert!(openssl(&["genrsa", "-traditional", "-out", &key, "2048"]));
        assert!(std::fs::read_to_string(&key).expect("read").contains("BEGIN RSA PRIVATE KEY"));
        assert!(openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=rsa root",
            "-days",
            "30",
            "-out",
            &root,
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
        std::fs::remove_file(dir.join(CRL_FILE)).expect("old CRL");
        let (cert, _, serial) = rsa.issue("b", Role::Province, "node-b");
        let done = revoke_certificate(dir, &cert, RevocationReason::Superseded, OffsetDateTime::now_utc());
        assert_eq!(done.expect("an RSA CA signed it").serial, serial);
        assert_eq!(crl_serials(dir).1, vec![serial]);
    }
}
