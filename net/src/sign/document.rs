//! Signing and verifying documents other than manifests: the control plane's policy snapshots,
//! receipts and audit checkpoints, signed by its key (a certificate of role
//! [`Role::Control`]), and anything else a caller wants tied to a certificate and a role.
//!
//! [`DocumentSigner::sign`] returns a [`SignedDocument`] (the shape and encoding of a signed
//! manifest). [`verify_document`] accepts one only when, at the time given:
//! - the signer's certificate has the role the caller expects (checked first, so a wrong role is
//!   named as such);
//! - it chains to one of the [`TrustAnchors`]' CA certificates, is within its validity, is not
//!   listed in their CRL (when one is given), and may sign documents: a control certificate must
//!   carry the document-signing extended key usage ([`DOCUMENT_SIGNING_OID`]), any other the
//!   client-authentication usage every node and operator certificate has;
//! - the signature covers the body exactly.
//!
//! The body is returned untouched: the caller parses it with its own type, which must refuse a
//! body of another kind (one key signs several kinds). [`TrustAnchors::load`] reads just a CA
//! PEM file and an optional CRL, so a user can check a receipt offline
//! (`ferry receipt verify FILE --ca ca.pem`).

use super::{SignatureError, check_signature};
use crate::identity::principal_from_cert;
use crate::tls::{
    Credentials, TlsError, check_key_matches, provider, read_crls, read_pem_all, read_private_key,
};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use ferry_proto::{Principal, Role, SignedDocument};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivatePkcs8KeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder,
};

/// DER value of the OID `id-kp-documentSigning` (RFC 9336, 1.3.6.1.5.5.7.3.36): the extended key
/// usage of a control certificate, and the only one it has.
pub const DOCUMENT_SIGNING_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x24];

/// The CA certificates and CRLs a document's signer must chain to and not be listed in.
#[derive(Debug)]
pub struct TrustAnchors {
    pub(super) ca_certs: Vec<CertificateDer<'static>>,
    pub(super) crls: Vec<CertRevocationList<'static>>,
}

impl TrustAnchors {
    /// The CA and CRL a node or operator already holds.
    pub fn from_credentials(creds: &Credentials) -> Result<Self, TlsError> {
        let crl_path = creds.paths().crl.clone().unwrap_or_default();
        Self::new(creds.ca_certs().to_vec(), &creds.crls(), &crl_path)
    }

    /// Just a CA PEM file (`ca.pem`) and, if given, its CRL (`crl.pem`): what a user needs to
    /// check a document offline. Without a CRL, revoked signers are accepted.
    pub fn load(ca: &Path, crl: Option<&Path>) -> Result<Self, TlsError> {
        let ca_certs = read_pem_all::<CertificateDer<'static>>(ca, "certificate")?;
        match crl {
            Some(path) => Self::new(ca_certs, &read_crls(path)?, path),
            None => Self::new(ca_certs, &[], Path::new("")),
        }
    }

    fn new(
        ca_certs: Vec<CertificateDer<'static>>,
        crls: &[CertificateRevocationListDer<'static>],
        crl_path: &Path,
    ) -> Result<Self, TlsError> {
        let crls = crls
            .iter()
            .map(|der| OwnedCertRevocationList::from_der(der).map(CertRevocationList::from))
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem { path: crl_path.to_owned(), detail: format!("unusable CRL: {e}") })?;
        Ok(Self { ca_certs, crls })
    }
}

/// Signs document bodies with one key, attaching its certificate chain.
pub struct DocumentSigner {
    key: EcdsaKeyPair,
    chain: Vec<Vec<u8>>,
    principal: Principal,
    rng: SystemRandom,
}

impl std::fmt::Debug for DocumentSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentSigner").field("principal", &self.principal).finish_non_exhaustive()
    }
}

impl DocumentSigner {
    /// Signs with the key of loaded credentials (a node's, for documents a node vouches for).
    pub fn new(creds: &Credentials) -> Result<Self, TlsError> {
        let chain = creds.cert_chain().iter().map(|c| c.to_vec()).collect();
        Self::build(creds.private_key(), chain, creds.principal().clone(), &creds.paths().key)
    }

    /// Signs with the certificate (PEM, leaf first) and PKCS#8 key (PEM) in two files, such as
    /// the control plane's signing key issued with `ferry pki issue --role control`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_pem_all::<CertificateDer<'static>>(cert, "certificate")?;
        let key_der = read_private_key(key)?;
        // Invariant: read_pem_all returns at least one certificate or an error.
        let leaf = &chain[0];
        let principal = principal_from_cert(leaf)
            .map_err(|source| TlsError::Identity { path: cert.to_owned(), source })?;
        check_key_matches(leaf, &key_der, cert, key)?;
        Self::build(&key_der, chain.iter().map(|c| c.to_vec()).collect(), principal, key)
    }

    fn build(
        key: &PrivatePkcs8KeyDer<'_>,
        chain: Vec<Vec<u8>>,
        principal: Principal,
        key_path: &Path,
    ) -> Result<Self, TlsError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_pkcs8_der())
            .map_err(|e| TlsError::UnsupportedKey { path: PathBuf::from(key_path), detail: e.to_string() })?;
        Ok(Self { key, chain, principal, rng: SystemRandom::new() })
    }

    /// Who signs.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Signs `body` exactly as given.
    pub fn sign(&self, body: &[u8]) -> SignedDocument {
        // Invariant: the key was parsed as P-256 at construction; aws-lc ECDSA signing then fails
        // only if the system random generator does, which no caller could recover from.
        let signature = self.key.sign(&self.rng, body).expect("ECDSA signing with a parsed key");
        SignedDocument {
            body: body.to_vec(),
            signature: signature.as_ref().to_vec(),
            signer_chain: self.chain.clone(),
        }
    }
}

/// Verifies `signed` as of `at` against `trust`, requiring a signer of `expected_role` (see the
/// module documentation); returns who signed. The body is in `signed.body`.
pub fn verify_document(
    signed: &SignedDocument,
    trust: &TrustAnchors,
    expected_role: Role,
    at: SystemTime,
) -> Result<Principal, SignatureError> {
    let (principal, leaf, intermediates) = signer_of(signed, expected_role)?;
    check_chain(&leaf, &intermediates, trust, expected_role, at)?;
    check_signature(&leaf, &signed.body, &signed.signature)?;
    Ok(principal)
}

/// [`verify_document`] judged by the time the document was signed, `signed_at` (a time its
/// body states, which the signature covers), rather than by the current time `now`: a
/// document whose signer has since expired, or was revoked after `signed_at` for a reason that
/// keeps earlier signatures, still verifies (the rule of [`super::signed_time`]).
pub fn verify_document_signed_at(
    signed: &SignedDocument,
    trust: &TrustAnchors,
    expected_role: Role,
    signed_at: SystemTime,
    now: SystemTime,
) -> Result<(Principal, super::SignerStanding), SignatureError> {
    let (principal, leaf, intermediates) = signer_of(signed, expected_role)?;
    check_signature(&leaf, &signed.body, &signed.signature)?;
    let usage = usage_for(expected_role);
    let standing = super::signed_time::check_signer(&leaf, &intermediates, trust, usage, signed_at, now)?;
    Ok((principal, standing))
}

/// The signer of `signed` (its leaf and intermediates, in the form webpki takes), required to
/// hold `expected_role`: the first step of both verifications.
fn signer_of(
    signed: &SignedDocument,
    expected_role: Role,
) -> Result<(Principal, CertificateDer<'_>, Vec<CertificateDer<'_>>), SignatureError> {
    let (leaf, intermediates) = signed
        .signer_chain
        .split_first()
        .ok_or(SignatureError::UntrustedSigner(rustls::Error::NoCertificatesPresented))?;
    let principal = principal_from_cert(leaf)?;
    if principal.role != expected_role {
        return Err(SignatureError::WrongRole { expected: expected_role, found: principal.role });
    }
    let intermediates = intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    Ok((principal, CertificateDer::from(leaf.as_slice()), intermediates))
}

/// The extended key usage a signer of `role` must have.
fn usage_for(role: Role) -> KeyUsage {
    match role {
        Role::Control => KeyUsage::required(DOCUMENT_SIGNING_OID),
        Role::Ministry | Role::Province | Role::Operator => KeyUsage::client_auth(),
    }
}

/// The chain, validity, revocation and usage checks of [`verify_document`].
fn check_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    trust: &TrustAnchors,
    role: Role,
    at: SystemTime,
) -> Result<(), SignatureError> {
    let refused = SignatureError::SignerRefused;
    let cert = EndEntityCert::try_from(leaf).map_err(refused)?;
    let anchors = trust
        .ca_certs
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(refused)?;
    let crls: Vec<&CertRevocationList<'_>> = trust.crls.iter().collect();
    // Our CA signs leaves directly; the CRL covers exactly those. Unknown status fails closed.
    let revocation = RevocationOptionsBuilder::new(&crls)
        .ok()
        .map(|builder| builder.with_depth(RevocationCheckDepth::EndEntity).build());
    let usage = usage_for(role);
    let time = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    let algorithms = provider().signature_verification_algorithms.all;
    cert.verify_for_usage(algorithms, &anchors, intermediates, time, usage, revocation, None)
        .map_err(refused)?;
    Ok(())
}

#[cfg(test)]
mod tests;
