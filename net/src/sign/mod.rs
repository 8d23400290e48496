//! Signing and verifying what ferry vouches for: dataset-version manifests (this module) and
//! the control plane's documents — policy snapshots, receipts, audit checkpoints ([`document`]).
//!
//! Both are ECDSA P-256 / SHA-256 signatures (ASN.1 DER) over the exact body bytes, with the
//! signer's certificate attached, checked against the ministry CA and CRL: anyone holding those
//! can tell, long after the fact, which department and role signed.
//!
//! ## Manifests
//!
//! A publishing node signs the manifest's JSON body with its TLS key (ECDSA P-256, SHA-256,
//! ASN.1 DER signature) and attaches its certificate ([`ferry_proto::SignedManifest`]). Anyone
//! holding the ministry CA and CRL can check, long after the transfer, that the manifest was
//! published by the department it names: the certificate chains to the CA and is not revoked,
//! it is a node's (role ministry or province), the signature covers the body, and the
//! manifest's `publisher` is the certificate's department.
//!
//! Neighbours: [`crate::tls::Credentials`] supplies the key, CA and CRL; `ferry-proto` defines
//! the manifest, [`ferry_proto::SignedDocument`] and checks their structure;
//! [`crate::identity`] reads the signer's [`Principal`].

pub mod document;

pub use document::{DOCUMENT_SIGNING_OID, DocumentSigner, TrustAnchors, verify_document};

use crate::identity::{IdentityError, principal_from_cert};
use crate::tls::{Credentials, TlsError, provider};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use ferry_proto::Principal;
use ferry_proto::{DeptId, Manifest, ManifestError, Role, SignedManifest};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;

/// Why a signed manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the manifest's signer is not trusted: {0}")]
    UntrustedSigner(rustls::Error),
    #[error("the signer's certificate does not name a ferry identity: {0}")]
    SignerIdentity(#[from] IdentityError),
    #[error("only node certificates sign manifests; the signer is a {role}")]
    SignerNotANode { role: Role },
    #[error("the signature does not match the signed body")]
    BadSignature,
    #[error("the document's signer is not trusted: {0}")]
    SignerRefused(webpki::Error),
    #[error("the document must be signed by a {expected} certificate; the signer is a {found}")]
    WrongRole { expected: Role, found: Role },
    #[error("the manifest names publisher {manifest} but was signed by {signer}")]
    PublisherMismatch { manifest: DeptId, signer: DeptId },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot build a verifier from these credentials: {0}")]
    Credentials(#[from] TlsError),
}

/// Signs manifest bodies with a node's key.
pub struct ManifestSigner {
    key: EcdsaKeyPair,
    leaf: Vec<u8>,
    identity: Principal,
    rng: SystemRandom,
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestSigner").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl ManifestSigner {
    pub fn new(creds: &Credentials) -> Result<Self, TlsError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, creds.private_key().secret_pkcs8_der())
                .map_err(|e| TlsError::UnsupportedKey {
                    path: creds.paths().key.clone(),
                    detail: e.to_string(),
                })?;
        Ok(Self {
            key,
            leaf: creds.cert().to_vec(),
            identity: creds.principal().clone(),
            rng: SystemRandom::new(),
        })
    }

    /// Who signs.
    pub fn principal(&self) -> &Principal {
        &self.identity
    }

    /// Signs `body` (the manifest JSON); `signer_chain` is our leaf certificate.
    pub fn sign(&self, body: Vec<u8>) -> SignedManifest {
        // Invariant: the key was parsed as P-256 at construction; aws-lc ECDSA signing then fails
        // only if the system random generator does, which no caller could recover from.
        let signature = self.key.sign(&self.rng, &body).expect("ECDSA signing with a parsed key");
        SignedManifest { body, signature: signature.as_ref().to_vec(), signer_chain: vec![self.leaf.clone()] }
    }
}

/// Checks signed manifests against a CA and CRL; build once, verify many.
#[derive(Debug)]
pub struct ManifestVerifier {
    chain: Arc<dyn ClientCertVerifier>,
}

impl ManifestVerifier {
    pub fn new(creds: &Credentials) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in creds.ca_certs() {
            roots.add(ca.clone())?;
        }
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        if !creds.crls().is_empty() {
            builder = builder.with_crls(creds.crls().iter().cloned()).only_check_end_entity_revocation();
        }
        Ok(Self { chain: builder.build()? })
    }

    /// Verifies `signed` as of `now` (pass the current time, or the manifest's publication time
    /// to accept an archived manifest whose signer has since expired).
    pub fn verify(
        &self,
        signed: &SignedManifest,
        now: UnixTime,
    ) -> Result<(Manifest, Principal), SignatureError> {
        let (leaf, intermediates) = signed
            .signer_chain
            .split_first()
            .ok_or(SignatureError::UntrustedSigner(rustls::Error::NoCertificatesPresented))?;
        let leaf = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<_> =
            intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        self.chain.verify_client_cert(&leaf, &intermediates, now).map_err(SignatureError::UntrustedSigner)?;
        let identity = principal_from_cert(&leaf)?;
        if !matches!(identity.role, Role::Ministry | Role::Province) {
            return Err(SignatureError::SignerNotANode { role: identity.role });
        }
        check_signature(&leaf, &signed.body, &signed.signature)?;
        let manifest = Manifest::from_json(&signed.body)?;
        if manifest.publisher != identity.dept {
            return Err(SignatureError::PublisherMismatch {
                manifest: manifest.publisher,
                signer: identity.dept,
            });
        }
        Ok((manifest, identity))
    }
}

/// Checks that `signature` is the key of certificate `leaf` signing `body` (ECDSA P-256 SHA-256).
fn check_signature(leaf: &[u8], body: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, cert.public_key().subject_public_key.data.as_ref())
        .verify(body, signature)
        .map_err(|_| SignatureError::BadSignature)
}

/// Verifies a signed manifest against the CA and CRL of `creds` (see [`ManifestVerifier`]).
pub fn verify_signed_manifest(
    signed: &SignedManifest,
    creds: &Credentials,
    now: UnixTime,
) -> Result<(Manifest, Principal), SignatureError> {
    ManifestVerifier::new(creds)?.verify(signed, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testca::TempCa;
    use crate::tls::tests::paths;
    use ferry_proto::{DatasetId, ShareType, VersionKind, VersionNo};

    fn node(ca: &TempCa, dept: &str, role: Role, name: &str) -> Credentials {
        let (cert, key, _) = ca.issue(dept, role, name);
        Credentials::load(&paths(ca, &cert, &key)).expect("creds")
    }

    /// A structurally valid manifest body, serialized with serde (independent of `to_json`).
    fn body(publisher: &str) -> Vec<u8> {
        let manifest = Manifest {
            format: ferry_proto::manifest::MANIFEST_FORMAT,
            dataset: DatasetId::new("vehicle-registry").expect("id"),
            version: VersionNo::FIRST,
            kind: VersionKind::Snapshot,
            parent: None,
            publisher: DeptId::new(publisher).expect("dept"),
            created_unix_ms: 1_700_000_000_000,
            schema_fingerprint: "00".repeat(32),
            definition_version: 1,
            share_type: ShareType::Unconditional,
            catalog_version: None,
            key_columns: vec!["vin".into()],
            layout: ferry_proto::TableLayout::default(),
            row_count: 0,
            chunk_size: ferry_proto::manifest::MIN_CHUNK_SIZE,
            files: vec![],
            table: vec![],
            delta: None,
        };
        serde_json::to_vec(&manifest).expect("serialize")
    }

    #[test]
    fn signed_manifest_verifies_and_names_the_signer() {
        let ca = TempCa::new("root");
        let publisher = node(&ca, "gd-transport", Role::Province, "gd-node");
        let reader = node(&ca, "ministry", Role::Ministry, "ministry");
        let signed = ManifestSigner::new(&publisher).expect("signer").sign(body("gd-transport"));
        assert_eq!(signed.signer_chain, vec![publisher.cert().to_vec()]);
        let (manifest, signer) = verify_signed_manifest(&signed, &reader, UnixTime::now()).expect("verify");
        assert_eq!(manifest.publisher.as_str(), "gd-transport");
        assert_eq!(signer.name, "gd-node");
    }

    #[test]
    fn tampered_body_is_a_bad_signature() {
        let ca = TempCa::new("root");
        let publisher = node(&ca, "gd-transport", Role::Province, "gd-node");
        let mut signed = ManifestSigner::new(&publisher).expect("signer").sign(body("gd-transport"));
        let last = signed.body.len() - 2;
        signed.body[last] ^= 1;
        let err = verify_signed_manifest(&signed, &publisher, UnixTime::now()).expect_err("tampered");
        assert!(matches!(err, SignatureError::BadSignature), "{err}");
    }

    #[test]
    fn signer_from_another_ca_or_revoked_is_untrusted() {
        let ca = TempCa::new("root");
        let reader = node(&ca, "ministry", Role::Ministry, "ministry");
        let rogue = TempCa::new("rogue");
        let impostor = node(&rogue, "gd-transport", Role::Province, "gd-node");
        let signed = ManifestSigner::new(&impostor).expect("signer").sign(body("gd-transport"));
        let err = verify_signed_manifest(&signed, &reader, UnixTime::now()).expect_err("rogue");
        assert!(matches!(err, SignatureError::UntrustedSigner(_)), "{err}");

        let (cert, key, serial) = ca.issue("gd-transport", Role::Province, "revoked-node");
        let publisher = Credentials::load(&paths(&ca, &cert, &key)).expect("creds");
        let signed = ManifestSigner::new(&publisher).expect("signer").sign(body("gd-transport"));
        ca.revoke(&serial);
        let reader = node(&ca, "ministry", Role::Ministry, "ministry-2");
        let err = verify_signed_manifest(&signed, &reader, UnixTime::now()).expect_err("revoked");
        assert!(
            matches!(
                err,
                SignatureError::UntrustedSigner(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked
                ))
            ),
            "{err}"
        );

        let empty = SignedManifest { body: body("gd-transport"), signature: vec![], signer_chain: vec![] };
        let err = verify_signed_manifest(&empty, &reader, UnixTime::now()).expect_err("no chain");
        assert!(matches!(err, SignatureError::UntrustedSigner(_)), "{err}");
    }

    #[test]
    fn publisher_must_be_the_signers_department() {
        let ca = TempCa::new("root");
        let publisher = node(&ca, "gd-transport", Role::Province, "gd-node");
        let signed = ManifestSigner::new(&publisher).expect("signer").sign(body("js-transport"));
        let err = verify_signed_manifest(&signed, &publisher, UnixTime::now()).expect_err("mismatch");
        match err {
            SignatureError::PublisherMismatch { manifest, signer } => {
                assert_eq!((manifest.as_str(), signer.as_str()), ("js-transport", "gd-transport"));
            }
            other => panic!("expected PublisherMismatch, got {other}"),
        }
    }

    #[test]
    fn operators_do_not_sign_manifests() {
        let ca = TempCa::new("root");
        let operator = node(&ca, "gd-transport", Role::Operator, "alice");
        let signed = ManifestSigner::new(&operator).expect("signer").sign(body("gd-transport"));
        let err = verify_signed_manifest(&signed, &operator, UnixTime::now()).expect_err("operator");
        assert!(matches!(err, SignatureError::SignerNotANode { role: Role::Operator }), "{err}");
    }
}
