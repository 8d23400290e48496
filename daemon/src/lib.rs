//! # ferry-daemon — the ferry node
//!
//! `ferryd` runs at the ministry and at each province. This library holds everything the binary
//! wires together: parsed configuration ([`config`]), the QUIC endpoint and request dispatch
//! ([`net`]), the data service: serving, publishing, replicating and storage ([`data`]), the
//! choice of authorizer ([`authz`]), the catalog enforced from the signed policy replica and the
//! node's audit log ([`policy`]), the ministry's control plane host ([`control`]), subscriptions
//! to other nodes' datasets and the announcements this node sends its subscribers
//! ([`subscribe`]), metrics and
//! the admin port ([`telemetry`]), and start/drain ([`node`]).

pub mod authz;
pub mod config;
pub mod control;
pub mod data;
pub mod net;
pub mod node;
pub mod node_calls;
pub mod policy;
pub mod schedule;
pub mod subscribe;
pub mod telemetry;
