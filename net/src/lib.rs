//! # ferry-net — what both ends of a ferry connection need
//!
//! TLS configurations for QUIC with mutual authentication, the identity a certificate carries,
//! endpoint settings, framed streams and the signing and verifying of documents. Both the
//! `ferry` client and the `ferryd` node depend on it; it depends only on `ferry-proto`.
//!
//! | module       | what it holds                                                              |
//! |--------------|----------------------------------------------------------------------------|
//! | [`tls`]      | credentials, server/client configs, transport settings, the UDP endpoint, congestion control, handshake refusals |
//! | [`identity`] | certificate → [`ferry_proto::Principal`] (department and role URIs)        |
//! | [`sign`]     | manifest and document signatures checked against the CA and CRL          |
//! | [`wire`]     | frames over QUIC streams, and whether a chunk is worth compressing         |
//! | [`aligned`]  | the aligned, reused buffers received chunk payloads land in               |
//! | [`conn`]     | a node's address, message names for errors, path statistics              |
//! | [`bandwidth`] | bandwidth timetables (rclone's `--bwlimit` notation) and the rate limiter both ends pace chunks with |
//!
//! Above it: `ferry-client` (connector, transfer engine, CA, CLI) and `ferry-daemon` (the node).

pub mod aligned;
pub mod bandwidth;
pub mod conn;
pub mod identity;
pub mod sign;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod testca;
