//! Signing and verifying the documents the control plane vouches for: audit checkpoints and
//! receipts (and, through the same seam, anything else the control-plane key signs).
//!
//! The cryptography stays behind two object-safe traits so that the caller chooses the key:
//! the ministry plugs in its control-plane key, a province node its node key, both through
//! `ferry-net`'s document signing (an adapter implements [`BlobSigner`] and [`BlobVerifier`]
//! over it). A verifier is built from what an outsider holds (the ministry CA certificate and its
//! CRL) and decides which signers it accepts; it never needs a database.
//!
//! [`KeyPairSigner`] and [`KeyPairVerifier`] are a plain Ed25519 implementation without
//! certificates, for tests and tools that pin a public key directly.
//!
//! Neighbours: [`crate::audit`] signs its checkpoints with a [`BlobSigner`];
//! [`crate::receipt`] signs receipt bodies with one and checks them with a [`BlobVerifier`].

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// A signed document: the exact bytes signed, the signature, and the signer's certificate
/// chain (leaf first; empty for a signer identified by a pinned public key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SignedBlob {
    #[serde(with = "hex_bytes")]
    pub body: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
    #[serde(with = "hex_list")]
    pub signer_chain: Vec<Vec<u8>>,
}

/// Why a document could not be signed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The key could not sign (a broken key or random source): an operator must act.
    #[error("cannot sign: {0}")]
    Unavailable(String),
    /// The signer's certificate is not trusted (wrong CA, revoked, expired, wrong role or
    /// purpose), or the signer is not the key this verifier accepts.
    #[error("the signer is not trusted: {0}")]
    UntrustedSigner(String),
    /// The signature does not match the body.
    #[error("the signature does not match the signed body")]
    BadSignature,
}

/// Signs document bodies with one key. Object safe: callers hold an `Arc<dyn BlobSigner>`.
pub trait BlobSigner: Send + Sync {
    /// Signs `body` and returns it with the signature and the signer's chain.
    fn sign(&self, body: &[u8]) -> Result<SignedBlob, SigningError>;
}

/// Checks signed documents; built from what a verifier trusts (a CA, a pinned key).
pub trait BlobVerifier: Send + Sync {
    /// Checks the signer and the signature over `blob.body`; returns a short description of
    /// the signer for display (e.g. its name, department and certificate serial).
    fn verify(&self, blob: &SignedBlob) -> Result<String, SigningError>;

    /// [`Self::verify`] judged at `signed_at`, the signing time the body states (a receipt's
    /// issue time, a checkpoint's time): a signer whose certificate has expired since still
    /// verifies. Verifiers without certificates have no validity to judge and just verify.
    fn verify_signed_at(
        &self,
        blob: &SignedBlob,
        signed_at: std::time::SystemTime,
    ) -> Result<String, SigningError> {
        let _ = signed_at;
        self.verify(blob)
    }
}

/// Signs with an Ed25519 key pair, without a certificate chain.
pub struct KeyPairSigner {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for KeyPairSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairSigner").field("public_key", &hex::encode(self.public_key())).finish()
    }
}

impl KeyPairSigner {
    /// A fresh random key.
    pub fn generate() -> Result<Self, SigningError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| SigningError::Unavailable(e.to_string()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 DER encoding.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, SigningError> {
        let key = Ed25519KeyPair::from_pkcs8(der).map_err(|e| SigningError::Unavailable(e.to_string()))?;
        Ok(Self { key })
    }

    /// The raw 32-byte public key, to pin in a [`KeyPairVerifier`].
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// A verifier that accepts exactly this key.
    pub fn verifier(&self) -> KeyPairVerifier {
        KeyPairVerifier::new(self.public_key())
    }
}

impl BlobSigner for KeyPairSigner {
    fn sign(&self, body: &[u8]) -> Result<SignedBlob, SigningError> {
        let signature = self.key.sign(body);
        Ok(SignedBlob {
            body: body.to_vec(),
            signature: signature.as_ref().to_vec(),
            signer_chain: Vec::new(),
        })
    }
}

/// Accepts signatures of one pinned Ed25519 public key.
#[derive(Debug, Clone)]
pub struct KeyPairVerifier {
    public_key: Vec<u8>,
}

impl KeyPairVerifier {
    pub fn new(public_key: Vec<u8>) -> Self {
        Self { public_key }
    }
}

impl BlobVerifier for KeyPairVerifier {
    fn verify(&self, blob: &SignedBlob) -> Result<String, SigningError> {
        if !blob.signer_chain.is_empty() {
            return Err(SigningError::UntrustedSigner(
                "a certificate chain where a pinned key is expected".into(),
            ));
        }
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(&blob.body, &blob.signature)
            .map_err(|_| SigningError::BadSignature)?;
        Ok(format!("ed25519 key {}", hex::encode(&self.public_key[..self.public_key.len().min(8)])))
    }
}

/// Byte strings as lowercase hex in JSON.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// Lists of byte strings as lists of lowercase hex in JSON.
pub(crate) mod hex_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.into_iter().map(|text| hex::decode(text).map_err(serde::de::Error::custom)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_blob_verifies_with_the_signers_key_only() {
        let signer = KeyPairSigner::generate().expect("key");
        let other = KeyPairSigner::generate().expect("key");
        let blob = signer.sign(b"checkpoint 7").expect("sign");
        assert!(signer.verifier().verify(&blob).is_ok());
        assert_eq!(other.verifier().verify(&blob), Err(SigningError::BadSignature));
    }

    #[test]
    fn a_changed_body_is_a_bad_signature() {
        let signer = KeyPairSigner::generate().expect("key");
        let mut blob = signer.sign(b"checkpoint 7").expect("sign");
        blob.body = b"checkpoint 8".to_vec();
        assert_eq!(signer.verifier().verify(&blob), Err(SigningError::BadSignature));
    }

    #[test]
    fn signed_blob_round_trips_through_json_as_hex() {
        let blob =
            SignedBlob { body: vec![1, 2], signature: vec![0xab], signer_chain: vec![vec![0xcd, 0xef]] };
        let json = serde_json::to_string(&blob).expect("json");
        assert_eq!(json, r#"{"body":"0102","signature":"ab","signer-chain":["cdef"]}"#);
        assert_eq!(serde_json::from_str::<SignedBlob>(&json).expect("parse"), blob);
    }
}
