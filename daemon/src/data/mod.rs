//! Dataset storage and version descriptions on the node.

pub mod bandwidth;
pub mod blob;
pub mod gc;
pub mod head;
pub mod pool;
pub mod query;
pub mod restricted;
pub mod scrub;
pub mod service;
pub mod store;
pub mod version;
