//! Integration tests of the daemon: a node started in this process on 127.0.0.1:0, spoken to
//! over QUIC by the client library.

mod authz;
