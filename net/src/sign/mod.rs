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
//! A manifest is judged by the time it was signed, its `created_unix_ms` (signed with the
//! body): it stays verifiable after its signer's certificate expires or is revoked for a reason
//! that keeps earlier signatures, such as a node's certificate superseded by a new one
//! ([`signed_time`] states the rule). A node's signer follows its certificate when it is
//! rotated ([`ManifestSigner::replace`]).
//!
//! Neighbours: [`crate::tls::Credentials`] supplies the key, CA and CRL; `ferry-proto` defines
//! the manifest, [`ferry_proto::SignedDocument`] and checks their structure;
//! [`crate::identity`] reads the signer's [`Principal`].

pub mod document;
pub mod signed_time;

pub use document::{
    DOCUMENT_SIGNING_OID, DocumentSigner, TrustAnchors, verify_document, verify_document_signed_at,
};
pub use signed_time::{SIGNING_CLOCK_SKEW, SignerStanding, UnixMillis, keeps_earlier_signatures};

use crate::identity::{IdentityError, principal_from_cert};
use crate::tls::{Credentials, TlsError};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use ferry_proto::Principal;
use ferry_proto::{DeptId, Manifest, ManifestError, Role, SignedManifest};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

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
    #[error("signed at {signed_at}, later than now ({now}) by more than the allowed clock skew")]
    SignedInFuture { signed_at: UnixMillis, now: UnixMillis },
    #[error("the signer's certificate was not valid when it signed (at {signed_at}): {source}")]
    NotValidWhenSigned { signed_at: UnixMillis, source: webpki::Error },
    #[error(
        "the signer's certificate was revoked ({reason}){}, which voids what it signed at {signed_at}",
        revoked_at.map(|t| format!(" at {t}")).unwrap_or_default()
    )]
    SignerRevoked { reason: String, revoked_at: Option<UnixMillis>, signed_at: UnixMillis },
    #[error("the manifest names publisher {manifest} but was signed by {signer}")]
    PublisherMismatch { manifest: DeptId, signer: DeptId },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot build a verifier from these credentials: {0}")]
    Credentials(#[from] TlsError),
}

/// Signs manifest bodies with a node's key. Clones share the key: [`ManifestSigner::replace`]
/// on one (a rotated certificate) changes what every clone signs with from then on.
#[derive(Clone)]
pub struct ManifestSigner {
    current: Arc<RwLock<Arc<SigningKey>>>,
    rng: SystemRandom,
}

struct SigningKey {
    key: EcdsaKeyPair,
    leaf: Vec<u8>,
    identity: Principal,
}

impl SigningKey {
    fn new(creds: &Credentials) -> Result<Self, TlsError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, creds.private_key().secret_pkcs8_der())
                .map_err(|e| TlsError::UnsupportedKey {
                    path: creds.paths().key.clone(),
                    detail: e.to_string(),
                })?;
        Ok(Self { key, leaf: creds.cert().to_vec(), identity: creds.principal().clone() })
    }
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestSigner").field("identity", &self.key().identity).finish_non_exhaustive()
    }
}

impl ManifestSigner {
    pub fn new(creds: &Credentials) -> Result<Self, TlsError> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(SigningKey::new(creds)?))),
            rng: SystemRandom::new(),
        })
    }

    fn key(&self) -> Arc<SigningKey> {
        // A poisoned lock only means a panic while swapping an Arc; the value is whole either way.
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Who signs (now).
    pub fn principal(&self) -> Principal {
        self.key().identity.clone()
    }

    /// Signs with the key and certificate of `creds` from now on (a rotated certificate). The
    /// caller checks that they are the same node's.
    pub fn replace(&self, creds: &Credentials) -> Result<(), TlsError> {
        let key = Arc::new(SigningKey::new(creds)?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        Ok(())
    }

    /// Signs `body` (the manifest JSON); `signer_chain` is our leaf certificate.
    pub fn sign(&self, body: Vec<u8>) -> SignedManifest {
        self.sign_as(body).0
    }

    /// [`ManifestSigner::sign`], also returning who signed: the certificate in force at that
    /// moment, which a rotation may change between two calls.
    pub fn sign_as(&self, body: Vec<u8>) -> (SignedManifest, Principal) {
        let current = self.key();
        // Invariant: the key was parsed as P-256 at construction; aws-lc ECDSA signing then fails
        // only if the system random generator does, which no caller could recover from.
        let signature = current.key.sign(&self.rng, &body).expect("ECDSA signing with a parsed key");
        let signed = SignedManifest {
            body,
            signature: signature.as_ref().to_vec(),
            signer_chain: vec![current.leaf.clone()],
        };
        (signed, current.identity.clone())
    }
}

/// Checks signed manifests against a CA and CRL, judged by the time each was signed (see
/// [`signed_time`]); build once, verify many.
#[derive(Debug)]
pub struct ManifestVerifier {
    trust: TrustAnchors,
}

/// A manifest that verified, who signed it, and how the signer's certificate stands.
#[derive(Debug)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    pub signer: Principal,
    pub standing: SignerStanding,
}

impl ManifestVerifier {
    pub fn new(creds: &Credentials) -> Result<Self, TlsError> {
        Ok(Self { trust: TrustAnchors::from_credentials(creds)? })
    }

    /// Verifies `signed`, with `now` the current time: the signature covers the body, the
    /// signer is a node of the manifest's publisher, and its certificate was valid when the
    /// manifest says it was signed (and that time is not in the future).
    pub fn verify(
        &self,
        signed: &SignedManifest,
        now: UnixTime,
    ) -> Result<(Manifest, Principal), SignatureError> {
        self.verify_judged(signed, now).map(|v| (v.manifest, v.signer))
    }

    /// [`ManifestVerifier::verify`], also saying whether the signer's certificate is valid now
    /// or only was when it signed.
    pub fn verify_judged(
        &self,
        signed: &SignedManifest,
        now: UnixTime,
    ) -> Result<VerifiedManifest, SignatureError> {
        let (leaf, intermediates) = signed
            .signer_chain
            .split_first()
            .ok_or(SignatureError::UntrustedSigner(rustls::Error::NoCertificatesPresented))?;
        let leaf = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<_> =
            intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let identity = principal_from_cert(&leaf)?;
        if !matches!(identity.role, Role::Ministry | Role::Province) {
            return Err(SignatureError::SignerNotANode { role: identity.role });
        }
        // The signature first: the signed time it vouches for decides the chain check.
        check_signature(&leaf, &signed.body, &signed.signature)?;
        let manifest = Manifest::from_json(&signed.body)?;
        let signed_at = signed_time::unix_ms_to_time(manifest.created_unix_ms);
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let usage = webpki::KeyUsage::client_auth();
        let standing = signed_time::check_signer(&leaf, &intermediates, &self.trust, usage, signed_at, now)?;
        if manifest.publisher != identity.dept {
            return Err(SignatureError::PublisherMismatch {
                manifest: manifest.publisher,
                signer: identity.dept,
            });
        }
        Ok(VerifiedManifest { manifest, signer: identity, standing })
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

/// Verifies a signed manifest against the CA and CRL of `creds`, judged by its signed time
/// (see [`ManifestVerifier`]); `now` is the current time.
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

    /// A structurally valid manifest body, serialized with serde (independent of `to_json`),
    /// signed now.
    fn body(publisher: &str) -> Vec<u8> {
        body_signed_at(publisher, now_ms())
    }

    pub(super) fn now_ms() -> i64 {
        signed_time::unix_ms(std::time::SystemTime::now()).0
    }

    /// [`body`] stating `created_unix_ms`.
    pub(super) fn body_signed_at(publisher: &str, created_unix_ms: i64) -> Vec<u8> {
        let manifest = Manifest {
            format: ferry_proto::manifest::MANIFEST_FORMAT,
            dataset: DatasetId::new("vehicle-registry").expect("id"),
            version: VersionNo::FIRST,
            kind: VersionKind::Snapshot,
            parent: None,
            publisher: DeptId::new(publisher).expect("dept"),
            created_unix_ms,
            schema_fingerprint: "00".repeat(32),
            definition_version: 1,
            share_type: ShareType::Unconditional,
            catalog_version: None,
            key_columns: vec!["vin".into()],
            layout: ferry_proto::TableLayout::default(),
            writer: None,
            row_count: 0,
            chunk_size: ferry_proto::manifest::MIN_CHUNK_SIZE,
            files: vec![],
            table: vec![],
            delta: None,
            derived_from: None,
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
    fn a_replaced_key_signs_for_every_clone_and_both_keys_verify() {
        let ca = TempCa::new("root");
        let old = node(&ca, "gd-transport", Role::Province, "gd-node");
        let signer = ManifestSigner::new(&old).expect("signer");
        let held_by_service = signer.clone();
        let before = held_by_service.sign(body("gd-transport"));
        let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node-2");
        let new = Credentials::load(&paths(&ca, &cert, &key)).expect("creds");
        signer.replace(&new).expect("replace");
        let (after, who) = held_by_service.sign_as(body("gd-transport"));
        assert_eq!(who.serial, new.principal().serial);
        assert_eq!(after.signer_chain, vec![new.cert().to_vec()]);
        for signed in [before, after] {
            verify_signed_manifest(&signed, &new, UnixTime::now()).expect("both keys verify");
        }
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
        assert!(
            matches!(err, SignatureError::NotValidWhenSigned { source: webpki::Error::UnknownIssuer, .. }),
            "{err}"
        );

        let (cert, key, serial) = ca.issue("gd-transport", Role::Province, "revoked-node");
        let publisher = Credentials::load(&paths(&ca, &cert, &key)).expect("creds");
        let signed = ManifestSigner::new(&publisher).expect("signer").sign(body("gd-transport"));
        ca.revoke(&serial);
        let reader = node(&ca, "ministry", Role::Ministry, "ministry-2");
        let err = verify_signed_manifest(&signed, &reader, UnixTime::now()).expect_err("revoked");
        assert!(matches!(err, SignatureError::SignerRevoked { .. }), "{err}");

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
