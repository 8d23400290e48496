//! Replays the seed corpus of the `decode_frame` fuzz target (`fuzz/corpus/decode_frame`) through
//! `ferry_proto::fuzz_decode`, the same function the fuzz target runs, so CI exercises every seed
//! on stable Rust. Also checks that the seeds still mean what their names say.

use bytes::BytesMut;
use ferry_proto::frame;
use ferry_proto::{Manifest, SignedManifest};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_frame");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
            (name, data)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_runs_through_the_fuzz_body() {
    let corpus = corpus();
    assert!(corpus.len() >= 20, "the corpus has only {} files", corpus.len());
    for (name, data) in &corpus {
        let result = std::panic::catch_unwind(|| ferry_proto::fuzz_decode(data));
        assert!(result.is_ok(), "seed {name} panicked");
    }
}

#[test]
fn frame_seeds_cover_every_message_and_decode_whole() {
    let mut tags = BTreeSet::new();
    for (name, data) in corpus().iter().filter(|(n, _)| n.starts_with("frame-")) {
        let mut buf = BytesMut::from(&data[..]);
        let msg = frame::decode(&mut buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        let msg = msg.unwrap_or_else(|| panic!("{name} is incomplete"));
        assert!(buf.is_empty(), "{name} has bytes after its frame");
        tags.insert(msg.tag());
    }
    let all = [
        0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x21, 0x22, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
        0x40, 0x41, 0x42, 0x43, 0x44, 0x50, 0x51, 0x60, 0x61, 0x70, 0x71, 0x7f, 0x80, 0x81, 0x82, 0x90, 0x91,
        0x92,
    ];
    assert_eq!(tags, BTreeSet::from(all));
}

#[test]
fn malformed_seeds_are_refused() {
    for (name, data) in corpus().iter().filter(|(n, _)| n.starts_with("bad-")) {
        let result = frame::decode(&mut BytesMut::from(&data[..]));
        let refused = match result {
            Err(_) => true,
            Ok(None) => name.contains("truncated"),
            Ok(Some(_)) => false,
        };
        assert!(refused, "{name} decoded as {result:?}");
    }
}

#[test]
fn stream_seed_holds_several_frames() {
    let (_, data) = corpus().into_iter().find(|(n, _)| n.starts_with("stream-")).expect("a stream seed");
    let mut buf = BytesMut::from(&data[..]);
    let mut count = 0;
    while let Some(_msg) = frame::decode(&mut buf).expect("stream seed decodes") {
        count += 1;
    }
    assert!(count > 1 && buf.is_empty(), "{count} frames, {} bytes left", buf.len());
}

#[test]
fn manifest_seeds_are_valid() {
    let corpus = corpus();
    let find = |name: &str| &corpus.iter().find(|(n, _)| n == name).expect(name).1;
    let manifest = Manifest::from_json(find("manifest.json")).expect("manifest.json is valid");
    let signed = SignedManifest::decode(find("signed-manifest.bin")).expect("signed manifest");
    assert_eq!(Manifest::from_json(&signed.body), Ok(manifest));
    assert!(matches!(
        frame::decode_body(find("body-get-chunks.bin")),
        Ok(ferry_proto::Message::GetChunks { .. })
    ));
}

/// The bodies of the `manifest` and `signed_document` fuzz targets, the same files the targets
/// compile.
#[path = "../../../fuzz/fuzz_targets/bodies/manifest.rs"]
mod manifest_body;
#[path = "../../../fuzz/fuzz_targets/bodies/signed_document.rs"]
mod signed_document_body;

/// The files of `fuzz/corpus/<target>`, sorted by name.
fn corpus_of(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn manifest_corpus_runs_through_its_fuzz_body() {
    let corpus = corpus_of("manifest");
    assert!(corpus.len() >= 10, "the manifest corpus has only {} files", corpus.len());
    for (name, data) in &corpus {
        let result = std::panic::catch_unwind(|| manifest_body::manifest(data));
        assert!(result.is_ok(), "manifest seed {name} panicked");
    }
    for (name, data) in corpus.iter().filter(|(n, _)| n.starts_with("bad-") && n.ends_with(".json")) {
        let refused = Manifest::from_json(data).map_or(true, |m| m.validate().is_err());
        assert!(refused, "manifest seed {name} was accepted");
    }
}

#[test]
fn signed_document_corpus_runs_through_its_fuzz_body() {
    use ferry_proto::SignedDocument;
    use ferry_proto::policy::PolicySnapshot;
    let corpus = corpus_of("signed_document");
    assert!(corpus.len() >= 10, "the signed_document corpus has only {} files", corpus.len());
    for (name, data) in &corpus {
        let result = std::panic::catch_unwind(|| signed_document_body::signed_document(data));
        assert!(result.is_ok(), "signed_document seed {name} panicked");
    }
    let find = |name: &str| &corpus.iter().find(|(n, _)| n == name).expect(name).1;
    // The valid seeds reach the deepest checks.
    let signed = SignedDocument::decode(find("signed-snapshot.bin")).expect("signed-snapshot.bin decodes");
    let snapshot = PolicySnapshot::parse(&signed.body).expect("its body is a valid snapshot");
    assert_eq!(PolicySnapshot::parse(find("snapshot.json")).expect("snapshot.json is valid"), snapshot);
    for (name, data) in corpus.iter().filter(|(n, _)| n.starts_with("bad-")) {
        let accepted = match SignedDocument::decode(data) {
            Ok(_) => true,
            Err(_) => PolicySnapshot::parse(data).is_ok(),
        };
        assert!(!accepted, "signed_document seed {name} was accepted");
    }
}
