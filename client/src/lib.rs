//! # ferry-client — talking to ferry nodes
//!
//! The library half of the `ferry` CLI, also used by `ferryd` for node-to-node pulls: the
//! connection to a node ([`conn`]), the transfer engine ([`transfer`]), publishing ([`publish`]),
//! the ministry's control plane ([`control`]: catalog, notices, audit, receipts), the ministry's
//! certificate authority ([`pki`]) and the synthetic transport datasets ([`synth`]).
//! Below it: `ferry-net` (TLS, identity, framing, signing — what the node shares), `ferry-tables`
//! (rows) and `ferry-proto`, which defines every byte on the wire.

pub mod conn;
pub mod control;
pub mod malloc;
pub mod pki;
pub mod publish;
pub mod query;
pub mod report;
pub mod transfer;
pub use ferry_tables::synth;
