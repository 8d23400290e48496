//! # ferry-control — the ministry's control plane
//!
//! The versioned catalog and its compliance check, change control, the audit log, receipts and
//! the signed policy snapshots that every node enforces, over a SQL store (SQLite embedded by
//! default, PostgreSQL by URL). It does not depend on the daemon: the ministry's `ferryd` runs it
//! and every node enforces what it emits.

pub mod api;
pub mod apply;
pub mod audit;
pub mod calendar;
pub mod catalog;
pub mod db;
pub mod explain;
pub mod fleet;
pub mod grants;
pub mod keys;
pub mod lifecycle;
pub mod plane;
pub mod quality;
pub mod receipt;
pub mod roles;
pub mod signing;
pub mod snapshot;
pub mod store;
pub mod supervise;

#[cfg(test)]
mod test_db;
