//! # ferry-net — what both ends of a ferry connection need
//!
//! TLS configurations for QUIC with mutual authentication, the identity a certificate carries,
//! endpoint settings, framed streams and the signing and verifying of documents. Both the
//! `ferry` client and the `ferryd` node depend on it; it depends only on `ferry-proto`.
