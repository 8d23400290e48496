//! The control plane's seams for signing ([`crate::signing`]) over real certificates:
//! [`CertSigner`] signs with a key whose certificate the ministry CA issued (the control-plane
//! key, or a node's key for a province's audit checkpoints) and [`CaVerifier`] accepts a
//! document only from a signer of an expected role (and department) that chains to the CA and
//! is not revoked. Both wrap `ferry_net::sign`; signatures keep the certificate chain, so anyone
//! holding `ca.pem` can verify offline.

use crate::signing::{BlobSigner, BlobVerifier, SignedBlob, SigningError};
use ferry_net::sign::{DocumentSigner, TrustAnchors, verify_document, verify_document_signed_at};
use ferry_proto::{DeptId, Principal, Role, SignedDocument};
use std::time::SystemTime;

/// Signs with a CA-issued certificate's key.
pub struct CertSigner(pub DocumentSigner);

impl BlobSigner for CertSigner {
    fn sign(&self, body: &[u8]) -> Result<SignedBlob, SigningError> {
        let signed = self.0.sign(body);
        Ok(SignedBlob { body: signed.body, signature: signed.signature, signer_chain: signed.signer_chain })
    }
}

/// Accepts documents signed by a certificate of the CA with one of `roles`, and, when
/// `department` is set, of that department.
pub struct CaVerifier {
    trust: TrustAnchors,
    roles: Vec<Role>,
    department: Option<DeptId>,
}

impl CaVerifier {
    pub fn new(trust: TrustAnchors, roles: Vec<Role>, department: Option<DeptId>) -> Self {
        Self { trust, roles, department }
    }
}

impl CaVerifier {
    /// The signer's claimed role, checked against the accepted ones, and the document.
    fn claimed(&self, blob: &SignedBlob) -> Result<(Role, SignedDocument), SigningError> {
        let document = SignedDocument {
            body: blob.body.clone(),
            signature: blob.signature.clone(),
            signer_chain: blob.signer_chain.clone(),
        };
        let leaf = blob
            .signer_chain
            .first()
            .ok_or_else(|| SigningError::UntrustedSigner("no certificate".into()))?;
        let claimed = ferry_net::identity::principal_from_cert(leaf)
            .map_err(|e| SigningError::UntrustedSigner(e.to_string()))?;
        if !self.roles.contains(&claimed.role) {
            return Err(SigningError::UntrustedSigner(format!(
                "a {} certificate cannot sign this",
                claimed.role
            )));
        }
        Ok((claimed.role, document))
    }

    /// The department check on a verified signer.
    fn of_department(&self, signer: Principal) -> Result<String, SigningError> {
        if let Some(dept) = &self.department
            && signer.dept != *dept
        {
            return Err(SigningError::UntrustedSigner(format!("signed by {}, not by {dept}", signer.dept)));
        }
        Ok(signer.to_string())
    }
}

fn signing_error(e: ferry_net::sign::SignatureError) -> SigningError {
    match e {
        ferry_net::sign::SignatureError::BadSignature => SigningError::BadSignature,
        other => SigningError::UntrustedSigner(other.to_string()),
    }
}

impl BlobVerifier for CaVerifier {
    fn verify(&self, blob: &SignedBlob) -> Result<String, SigningError> {
        let (role, document) = self.claimed(blob)?;
        let signer =
            verify_document(&document, &self.trust, role, SystemTime::now()).map_err(signing_error)?;
        self.of_department(signer)
    }

    fn verify_signed_at(&self, blob: &SignedBlob, signed_at: SystemTime) -> Result<String, SigningError> {
        let (role, document) = self.claimed(blob)?;
        let (signer, _standing) =
            verify_document_signed_at(&document, &self.trust, role, signed_at, SystemTime::now())
                .map_err(signing_error)?;
        self.of_department(signer)
    }
}
