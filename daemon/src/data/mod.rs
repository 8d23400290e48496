//! Dataset definitions, publishing, storage and serving.

pub mod definition;
pub mod publish;
pub mod store;
pub mod version;
