//! Fuzz target `control_call`: see `bodies/control_call.rs`, shared with the corpus replay test.
//!
//! Run with `cargo +nightly fuzz run control_call -- -rss_limit_mb=2048` from `fuzz/`.

#![no_main]

#[path = "bodies/control_call.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::control_call(data));
