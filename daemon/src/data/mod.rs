//! Dataset storage and version descriptions on the node.

pub mod store;
pub mod version;
