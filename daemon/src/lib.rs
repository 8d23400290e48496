//! # ferry-daemon — the ferry node
//!
//! `ferryd` runs at the ministry and at each province. This library holds everything the binary
//! wires together: parsed configuration ([`config`]), the QUIC endpoint and request handling
//! ([`net`]), dataset definitions, publishing and storage ([`data`]), the authorization seam
//! ([`authz`]), metrics and the admin port ([`telemetry`]), and start/drain ([`node`]).

pub mod authz;
pub mod config;
pub mod control;
pub mod data;
pub mod net;
pub mod node;
pub mod policy;
pub mod telemetry;
