//! Reading a private key in the forms operators have it.
//!
//! The CA (`ferry_client::pki`) writes PKCS#8, but a key converted with `openssl ec` or made with
//! `openssl ecparam -genkey` is SEC1 (`EC PRIVATE KEY`), and `openssl genrsa -traditional` writes
//! PKCS#1. [`read_private_key`] reads every form rustls reads and hands [`super::Credentials`] and
//! the document signer ([`crate::sign`]) one form, PKCS#8, so nothing after loading cares.

use super::{TlsError, read_file};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

/// The private key in `path`, in any PEM form rustls reads — PKCS#8 (`PRIVATE KEY`), SEC1
/// (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) — as PKCS#8. Ferry keys are ECDSA P-256, so
/// an EC key is converted and an RSA key is refused by name rather than reported missing.
pub(crate) fn read_private_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        detail: format!("no private key found (PKCS#8, SEC1 or PKCS#1 PEM): {e}"),
    })?;
    let unsupported = |detail: String| TlsError::UnsupportedKey { path: path.to_owned(), detail };
    match key {
        PrivateKeyDer::Pkcs8(pkcs8) => Ok(pkcs8),
        PrivateKeyDer::Sec1(sec1) => {
            let pair =
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, sec1.secret_sec1_der())
                    .map_err(|e| unsupported(format!("SEC1 key refused: {e}")))?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|e| unsupported(format!("cannot re-encode it: {e}")))?;
            Ok(PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()))
        }
        PrivateKeyDer::Pkcs1(_) => {
            Err(unsupported("it is an RSA key (PKCS#1); ferry certificates carry ECDSA P-256 keys".into()))
        }
        _ => Err(unsupported("a key form this build does not know".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testca::TempCa;
    use crate::tls::tests::paths;
    use crate::tls::{Credentials, IgnoreRefusals, client_config, server_config};
    use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
    use ferry_proto::Role;
    use std::process::Command;
    use std::sync::Arc;

    /// Standard base64 with padding, for writing PEM in tests.
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for group in bytes.chunks(3) {
            let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                let c = if i <= group.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] } else { b'=' };
                out.push(char::from(c));
            }
        }
        out
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64(der);
        let lines: Vec<&str> =
            body.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).expect("ascii")).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    /// Credentials load from `key` in place of the CA-written key, and build both TLS configs.
    fn load_with_key(ca: &TempCa, cert: &Path, key: &Path) -> Result<Credentials, TlsError> {
        let creds = Credentials::load(&paths(ca, cert, key))?;
        server_config(&creds, Arc::new(IgnoreRefusals)).expect("server config");
        client_config(&creds).expect("client config");
        Ok(creds)
    }

    #[test]
    fn sec1_key_converted_from_the_ca_key_loads() {
        let ca = TempCa::new("root");
        let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_file(&key).expect("pkcs8");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.secret_pkcs8_der()).expect("key");
        let sec1: EcPrivateKeyRfc5915Der<'static> = pair.private_key().as_der().expect("sec1 der");
        let sec1_path = ca.path().join("node-sec1.key");
        std::fs::write(&sec1_path, pem("EC PRIVATE KEY", sec1.as_ref())).expect("write");
        let creds = load_with_key(&ca, &cert, &sec1_path).expect("a SEC1 key of the certificate loads");
        assert_eq!(creds.principal().name, "gd-node");
        // What is kept is PKCS#8 of the same key: it signs as the certificate.
        let again =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, creds.private_key().secret_pkcs8_der())
                .expect("pkcs8 again");
        assert_eq!(
            aws_lc_rs::signature::KeyPair::public_key(&again).as_ref(),
            aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref()
        );
    }

    fn openssl(args: &[&str]) -> Option<()> {
        let status = Command::new("openssl").args(args).output().ok()?;
        status.status.success().then_some(())
    }

    /// Keys written by the `openssl` binary, when it is installed: its SEC1 rewrite of the key
    /// loads; a fresh `ecparam -genkey` key is read and refused as another key, not as a file
    /// without a key; a PKCS#1 RSA key is refused as RSA.
    #[test]
    fn keys_written_by_openssl_are_read() {
        let ca = TempCa::new("root");
        let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
        let dir = ca.path();
        let arg = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        let sec1 = dir.join("openssl-ec.key");
        if openssl(&["ec", "-in", &arg(&key), "-out", &arg(&sec1)]).is_none() {
            eprintln!("openssl not usable here; skipping");
            return;
        }
        assert!(std::fs::read_to_string(&sec1).expect("read").contains("BEGIN EC PRIVATE KEY"));
        load_with_key(&ca, &cert, &sec1).expect("openssl's SEC1 form of our key loads");

        let fresh = dir.join("ecparam.key");
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &arg(&fresh)])
            .expect("ecparam");
        let err = load_with_key(&ca, &cert, &fresh).expect_err("another key");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

        let rsa = dir.join("rsa.key");
        openssl(&["genrsa", "-traditional", "-out", &arg(&rsa), "2048"]).expect("genrsa");
        assert!(std::fs::read_to_string(&rsa).expect("read").contains("BEGIN RSA PRIVATE KEY"));
        let err = load_with_key(&ca, &cert, &rsa).expect_err("RSA");
        assert!(matches!(err, TlsError::UnsupportedKey { .. }) && err.to_string().contains("RSA"), "{err}");
    }

    #[test]
    fn a_file_without_a_key_says_which_forms_were_looked_for() {
        let ca = TempCa::new("root");
        let (cert, _, _) = ca.issue("gd-transport", Role::Province, "gd-node");
        let err = read_private_key(&cert).expect_err("a certificate is no key");
        assert!(err.to_string().contains("PKCS#8, SEC1 or PKCS#1"), "{err}");
    }
}
