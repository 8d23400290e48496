//! The one integration test binary of `ferry-proto`: checks that go through the public API only.

mod fuzz_corpus;
