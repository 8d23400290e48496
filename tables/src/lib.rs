//! # ferry-tables — key-sorted Parquet tables
//!
//! Everything ferry does to rows, without networking or storage: dataset definitions as schema
//! contracts ([`definition`]), reading a CSV or Parquet export into key-sorted, zstd Parquet
//! ([`source`]), and the seeded synthetic transport datasets of demos, tests and
//! benchmarks ([`synth`]). Both the node (publishing) and the client (materializing what it pulled) use it,
//! which is why it is a crate of its own rather than part of the daemon.

pub mod canonical;
pub mod catalog;
pub mod definition;
pub mod delta;
pub mod error;
pub mod proof;
pub mod prune;
pub mod restrict;
pub mod rows_hash;
pub mod sorted;
pub mod source;
pub mod synth;

#[cfg(test)]
mod lying_footer;
