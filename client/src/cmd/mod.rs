//! One module per `ferry` command.

pub mod apply;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod demo;
pub mod explain;
pub mod fleet;
pub mod gen_data;
pub mod grant;
pub mod node;
pub mod pki;
pub mod pull;
pub mod query;
pub mod receipt;
pub mod schedule;
pub mod status;
pub mod subscription;
pub mod supervise;
pub mod verify;
