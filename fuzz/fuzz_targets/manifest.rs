//! Fuzz target `manifest`: see `bodies/manifest.rs`, shared with the corpus replay test.
//!
//! Run with `cargo +nightly fuzz run manifest -- -rss_limit_mb=2048` from `fuzz/`.

#![no_main]

#[path = "bodies/manifest.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::manifest(data));
