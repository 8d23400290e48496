//! Fuzzes every decoder of peer and file bytes in `ferry-proto`: the incremental frame decoder,
//! `decode_body`, `SignedManifest::decode` and `Manifest::from_json`, checking that whatever
//! decodes re-encodes to the same bytes. The body is `ferry_proto::fuzz_decode`, which the proto
//! crate's corpus replay test (`proto/tests/it/fuzz_corpus.rs`) also runs on `corpus/decode_frame`.
//!
//! Run with `cargo +nightly fuzz run decode_frame` from this directory.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferry_proto::fuzz_decode(data));
