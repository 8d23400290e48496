//! Fuzz target `signed_document`: see `bodies/signed_document.rs`, shared with the corpus replay test.
//!
//! Run with `cargo +nightly fuzz run signed_document -- -rss_limit_mb=2048` from `fuzz/`.

#![no_main]

#[path = "bodies/signed_document.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::signed_document(data));
