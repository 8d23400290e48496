//! End-to-end tests: real nodes on loopback, real certificates, real files.

mod control_cli;
mod delta;
mod deploy;
mod durability;
mod enforcement;
mod exhaustion;
mod faults;
mod fleet;
mod governance;
mod handshake;
mod interop;
mod lying_peer;
mod names;
mod pull;
mod query;
mod replicate;
mod restricted;
mod resume;
mod retention;
mod revocation;
mod rotation;
mod schedule;
mod scrub;
mod status;
mod storage;
mod store_faults;
