//! Body of the `manifest` fuzz target: a version's manifest as a puller or a node reads it from a
//! peer or from its store (`SignedManifest::decode`, `Manifest::from_json`, `Manifest::validate`).
//! Whatever decodes must re-encode to the same bytes; a manifest must survive its JSON round trip.
//!
//! Shared by the fuzz target and its corpus replay (`proto/tests/it/fuzz_corpus.rs`).

use ferry_proto::{Manifest, SignedManifest};

pub fn manifest(data: &[u8]) {
    if let Ok(signed) = SignedManifest::decode(data) {
        assert_eq!(signed.encode(), data, "SignedManifest is not canonical");
        json(&signed.body);
    }
    json(data);
}

fn json(data: &[u8]) {
    let Ok(manifest) = Manifest::from_json(data) else { return };
    let _ = manifest.validate();
    let _ = manifest.total_bytes();
    let again = Manifest::from_json(&manifest.to_json());
    // A manifest whose JSON grows past the bound on the way out may be refused on the way back.
    if let Ok(again) = again {
        assert_eq!(again, manifest, "manifest JSON round trip");
    }
}
