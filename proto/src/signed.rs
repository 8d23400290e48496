//! A signed document: policy snapshots, receipts and audit checkpoints as the control plane's key
//! signed them, in the same shape and encoding as a [`crate::SignedManifest`].
//!
//! This module only carries and encodes the bytes; `ferry_net::sign` signs and verifies them
//! (ECDSA P-256 over `body`, the signer's certificate checked against the ministry CA and CRL, its
//! role required by the caller). The body must say what kind of document it is (a `format` field
//! of its own, as manifests do), since one key signs several kinds.

use crate::message::tag;
use crate::wire::{Counter, Reader, Sink};

/// Smallest encoded certificate: an empty byte string.
const MIN_CERT_LEN: usize = 4;

/// The exact bytes signed, the signature over them and the signer's certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDocument {
    /// The document as signed (JSON of the document's own type).
    pub body: Vec<u8>,
    /// Signature over `body` by the key of `signer_chain[0]` (ECDSA P-256 SHA-256, ASN.1 DER).
    pub signature: Vec<u8>,
    /// DER certificates, leaf first, up to but excluding the root CA.
    pub signer_chain: Vec<Vec<u8>>,
}

impl SignedDocument {
    /// The stored and transmitted form, `body:bytes signature:bytes signer_chain:list<bytes>`:
    /// the body of a `PolicySnapshot` frame and the content of a receipt file.
    pub fn encode(&self) -> Vec<u8> {
        let mut counter = Counter::default();
        self.write(&mut counter);
        let mut out = Vec::with_capacity(counter.0);
        self.write(&mut out);
        out
    }

    /// Parses [`SignedDocument::encode`]'s form. Errors report the tag of `PolicySnapshot`
    /// (0x61), the frame that carries one.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        let mut r = Reader::new(bytes, tag::POLICY_SNAPSHOT);
        let signed = read_parts(&mut r)?;
        r.finish()?;
        Ok(signed)
    }

    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        write_parts(&self.body, &self.signature, &self.signer_chain, out);
    }
}

/// `body:bytes signature:bytes signer_chain:list<bytes>`: the one encoding of a signed manifest
/// and of a signed document.
pub(crate) fn write_parts<S: Sink + ?Sized>(
    body: &[u8],
    signature: &[u8],
    signer_chain: &[Vec<u8>],
    out: &mut S,
) {
    out.blob(body);
    out.blob(signature);
    out.len_prefix(signer_chain.len());
    for cert in signer_chain {
        out.blob(cert);
    }
}

/// Reads [`write_parts`]'s form.
pub(crate) fn read_parts(r: &mut Reader<'_>) -> Result<SignedDocument, crate::DecodeError> {
    Ok(SignedDocument {
        body: r.blob("signed.body")?.to_vec(),
        signature: r.blob("signed.signature")?.to_vec(),
        signer_chain: r.list("signed.signer_chain", MIN_CERT_LEN, |r| {
            r.blob("signed.signer_chain").map(<[u8]>::to_vec)
        })?,
    })
}

impl From<crate::SignedManifest> for SignedDocument {
    fn from(m: crate::SignedManifest) -> Self {
        Self { body: m.body, signature: m.signature, signer_chain: m.signer_chain }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        let doc =
            SignedDocument { body: b"{}".to_vec(), signature: vec![0xaa], signer_chain: vec![vec![1, 2]] };
        let expected: &[u8] = &[0, 0, 0, 2, b'{', b'}', 0, 0, 0, 1, 0xaa, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2];
        assert_eq!(doc.encode(), expected);
        assert_eq!(SignedDocument::decode(expected), Ok(doc));
    }

    #[test]
    fn trailing_or_missing_bytes_are_refused() {
        let doc = SignedDocument { body: vec![1], signature: vec![], signer_chain: vec![] };
        let mut bytes = doc.encode();
        bytes.push(0);
        assert!(SignedDocument::decode(&bytes).is_err());
        assert!(SignedDocument::decode(&bytes[..bytes.len() - 3]).is_err());
        // A list count larger than the bytes left is refused before allocating.
        assert!(SignedDocument::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    proptest! {
        #[test]
        fn same_encoding_as_a_signed_manifest(m in crate::arb::signed_manifest()) {
            let doc = SignedDocument::from(m.clone());
            prop_assert_eq!(doc.encode(), m.encode());
            prop_assert_eq!(SignedDocument::decode(&m.encode()), Ok(doc));
        }
    }
}
