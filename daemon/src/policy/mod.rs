//! Enforcing the catalog: the node's policy replica, the authorizer that decides from it, and
//! the policy stream between the ministry and the provinces.
//!
//! - [`replica`]: the verified, persisted, never-rolled-back copy of the signed policy snapshot,
//!   fresh or stale (fail closed past `max-staleness`).
//! - [`authorizer`]: the [`ferry_proto::authz::Authorizer`] of a node that enforces the catalog,
//!   reporting outcomes to the node's audit log.
//! - [`explain`]: answers `ferry explain` from the replica (and at the ministry the control
//!   store's pending applications).
//! - [`stream`]: a province subscribes to the ministry (`PolicySubscribe`) and installs each
//!   snapshot it is sent; every node answers `PolicySubscribe` from its replica, so a puller can
//!   check a version's publisher against the catalog whichever node it pulls from.
//! - [`uses`]: the uses a node served and the publishes it refused for not matching the catalog,
//!   reported to the control plane (in process at the ministry, batched from a province).
//! - [`holdings`]: a province reports what it holds to the ministry; the ministry exports how
//!   far behind each province is (the fleet view).
//!
//! The ministry's own snapshots come from its control plane ([`crate::control`]), which offers
//! each one to the same replica in-process.

pub mod authorizer;
pub mod explain;
pub mod governance;
pub mod holdings;
pub mod replica;
pub mod stream;
pub mod uses;

pub use authorizer::{AuditSink, PolicyAuthorizer};
pub use governance::Governance;
pub use replica::{PolicyReplica, PolicyStatus, ReplicaError, SnapshotVerifier};
