//! Fuzz target `parquet_upload`: see `bodies/upload.rs`, shared with the corpus replay test.
//!
//! Run with `cargo +nightly fuzz run parquet_upload -- -rss_limit_mb=2048` from `fuzz/`.

#![no_main]

#[path = "bodies/upload.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::upload(data));
