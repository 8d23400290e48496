//! End-to-end tests: real nodes on loopback, real certificates, real files.

mod deploy;
mod handshake;
mod lying_peer;
mod pull;
mod resume;
