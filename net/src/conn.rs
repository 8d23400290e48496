//! What both ends say about a connection beyond TLS: where a node is ([`NodeAddr`]), the short
//! name of a message for error text, and the path statistics logged when a connection ends.
//!
//! Neighbours: the client's `Connector` dials a [`NodeAddr`]; the node's configuration names its
//! peers by one; [`crate::tls`] builds the endpoints and transport settings these connections use.

use ferry_proto::Message;
use std::net::SocketAddr;

/// Where a node listens and the name its certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub addr: SocketAddr,
    pub server_name: String,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.server_name, self.addr)
    }
}

impl std::str::FromStr for NodeAddr {
    type Err = String;
    /// `NAME@HOST:PORT`, e.g. `ministry@127.0.0.1:7400`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, addr) = s.split_once('@').ok_or_else(|| {
            format!("{s:?} is not NAME@HOST:PORT (the node's certificate name, then its address)")
        })?;
        let addr = addr.parse().map_err(|e| format!("{addr:?} is not an address: {e}"))?;
        if name.is_empty() {
            return Err(format!("{s:?} has an empty node name"));
        }
        Ok(Self { addr, server_name: name.to_owned() })
    }
}

/// A short name of a message for error text: its variant's name, never its payload (a `Chunk`'s
/// megabyte is not formatted to find it).
pub fn message_name(msg: &Message) -> String {
    ferry_proto::exchange::message_name(msg).to_owned()
}

/// Logs (at debug) what the connection's path looked like: datagram size reached, round trip,
/// congestion window, losses. The first thing to read when a transfer is slower than its link.
pub fn log_path_stats(conn: &quinn::Connection, what: &str) {
    let stats = conn.stats();
    tracing::debug!(
        remote = %conn.remote_address(),
        mtu = stats.path.current_mtu,
        rtt_us = stats.path.rtt.as_micros() as u64,
        cwnd = stats.path.cwnd,
        sent_packets = stats.path.sent_packets,
        lost_packets = stats.path.lost_packets,
        congestion_events = stats.path.congestion_events,
        black_holes = stats.path.black_holes_detected,
        udp_rx_datagrams = stats.udp_rx.datagrams,
        udp_tx_datagrams = stats.udp_tx.datagrams,
        udp_tx_ios = stats.udp_tx.ios,
        "{what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addr_parses_name_at_address() {
        let node: NodeAddr = "ministry@127.0.0.1:7400".parse().expect("parse");
        assert_eq!(node.server_name, "ministry");
        assert_eq!(node.addr, "127.0.0.1:7400".parse().expect("addr"));
        assert_eq!(node.to_string(), "ministry@127.0.0.1:7400");
        assert!("127.0.0.1:7400".parse::<NodeAddr>().is_err());
        assert!("@127.0.0.1:7400".parse::<NodeAddr>().is_err());
        assert!("ministry@nowhere".parse::<NodeAddr>().is_err());
    }

    #[test]
    fn message_name_is_the_variant() {
        assert_eq!(message_name(&Message::ListDatasets), "ListDatasets");
        let hello = Message::Hello { minor: 0, agent: "x".into() };
        assert_eq!(message_name(&hello), "Hello");
    }
}
