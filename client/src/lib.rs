//! # ferry-client — talking to ferry nodes
//!
//! The library half of the `ferry` CLI, also used by `ferryd` for node-to-node pulls:
//! certificates and the ministry PKI ([`pki`]), TLS configuration for QUIC with mutual
//! authentication ([`tls`]), the synthetic transport datasets ([`synth`]).
//! Its only neighbour below is `ferry-proto`, which defines every byte on the wire.

pub mod conn;
pub mod malloc;
pub mod pki;
pub mod publish;
pub mod sign;

pub mod tls;
pub mod transfer;
pub mod wire;
pub use ferry_tables::synth;
pub use pki::identity;
