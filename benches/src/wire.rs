//! How many bytes ferry needs on the wire to bring a consumer from snapshot N to N+1: a real
//! pull between an in-process ministry node and a consumer on loopback, counted on the UDP
//! socket.
//!
//! Setup ([`PullBench::start`]): a test PKI and a ministry node (`ferry-testkit`), on which the
//! exports N and N+1 are published as an operator would (`ferry_client::publish::publish_file`);
//! the node stores N+1 as a delta version. Each run ([`PullBench::measure`]): a fresh consumer
//! directory syncs to v1 directly (the full table, not counted), then syncs to the latest
//! version through a [`Relay`], a UDP forwarder on 127.0.0.1 that counts every datagram's
//! payload in both directions. The count therefore includes everything QUIC carries — the
//! handshake and certificates, the signed manifest, request and chunk framing, ACKs and any
//! retransmission — but not the 28 bytes of IP and UDP header per datagram (reported as a
//! datagram count). The sync must take one step, `delta v2`, and its materialized files must
//! hash like the benchmark's own N+1 snapshot.
//!
//! Neighbours: `delta` runs this between the diff/apply kernels and rsync.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, ensure};
use ferry_client::conn::Connector;
use ferry_client::publish::publish_file;
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet, SyncReport};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Role, SourceFormat, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Datagram payload and count in each direction, as the relay saw them.
#[derive(Debug, Default)]
struct Counters {
    to_consumer_bytes: AtomicU64,
    to_consumer_datagrams: AtomicU64,
    to_node_bytes: AtomicU64,
    to_node_datagrams: AtomicU64,
}

/// A UDP forwarder between one client and one server on loopback, counting what passes.
pub struct Relay {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1:0 and forwards to `target`; replies go to the last client address.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0").await.context("binding the relay")?;
        let back = UdpSocket::bind("127.0.0.1:0").await.context("binding the relay")?;
        back.connect(target).await.context("connecting the relay")?;
        let addr = front.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(forward(front, back, Arc::clone(&counters)));
        Ok(Self { addr, counters, task })
    }

    /// `(bytes, datagrams)` towards the client and towards the server so far.
    fn totals(&self) -> ((u64, u64), (u64, u64)) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            (load(&c.to_consumer_bytes), load(&c.to_consumer_datagrams)),
            (load(&c.to_node_bytes), load(&c.to_node_datagrams)),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(front: UdpSocket, back: UdpSocket, counters: Arc<Counters>) {
    let mut up = vec![0u8; 65_536];
    let mut down = vec![0u8; 65_536];
    let mut client: Option<SocketAddr> = None;
    loop {
        tokio::select! {
            received = front.recv_from(&mut up) => {
                let Ok((n, from)) = received else { return };
                client = Some(from);
                counters.to_node_bytes.fetch_add(n as u64, Ordering::Relaxed);
                counters.to_node_datagrams.fetch_add(1, Ordering::Relaxed);
                // A datagram the kernel refuses is lost, as on a real link; QUIC resends.
                let _ = back.send(&up[..n]).await;
            }
            received = back.recv(&mut down) => {
                let Ok(n) = received else { return };
                counters.to_consumer_bytes.fetch_add(n as u64, Ordering::Relaxed);
                counters.to_consumer_datagrams.fetch_add(1, Ordering::Relaxed);
                if let Some(client) = client {
                    let _ = front.send_to(&down[..n], client).await;
                }
            }
        }
    }
}

/// What one N → N+1 pull moved.
#[derive(Debug, Clone)]
pub struct PullMeasure {
    /// UDP payload bytes from the node to the consumer.
    pub to_consumer_bytes: u64,
    pub to_consumer_datagrams: u64,
    /// UDP payload bytes from the consumer to the node (requests, ACKs).
    pub to_node_bytes: u64,
    /// The delta files' bytes as the sync fetched them (chunk payloads, before framing).
    pub fetched_bytes: u64,
    /// Wall time of the sync: connect, fetch, apply, verify, commit.
    pub seconds: f64,
    /// Where the consumer's N+1 is (inside `scratch`).
    pub version_dir: PathBuf,
}

/// A ministry node holding N (snapshot) and N+1 (delta), and a consumer's credentials.
pub struct PullBench {
    _pki: TestPki,
    ministry: TestNode,
    consumer: Credentials,
    dataset: DatasetId,
}

impl PullBench {
    /// Starts the node and publishes the two exports on it (see the module doc).
    pub async fn start(dataset: &str, definition: &str, export_n: &Path, export_n1: &Path) -> Result<Self> {
        let pki = TestPki::new();
        let ministry = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
        let operator = Credentials::load(&ministry.operator).context("operator credentials")?;
        let session = Connector::new(&operator, ministry.node_addr())?.connect().await?;
        for export in [export_n, export_n1] {
            publish_file(&session, export, definition.to_owned(), SourceFormat::Parquet)
                .await
                .with_context(|| format!("publishing {} on the node", export.display()))?;
        }
        session.close();
        let consumer = Credentials::load(&pki.issue("bench-consumer", "zhejiang", Role::Operator))
            .context("consumer credentials")?;
        Ok(Self { _pki: pki, ministry, consumer, dataset: DatasetId::new(dataset)? })
    }

    async fn sync(&self, node: NodeAddr, root: &Path, version: Option<VersionNo>) -> Result<SyncReport> {
        let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
        let request = PullRequest { dataset: self.dataset.clone(), version };
        let connector = Connector::new(&self.consumer, node)?;
        let report = transfer::sync(
            &connector,
            &self.consumer,
            &request,
            root,
            &PullOptions::default(),
            Arc::new(Quiet),
            cancel,
        )
        .await?;
        Ok(report)
    }

    /// One consumer in `scratch` (an empty directory) goes to v1 directly, then to N+1 through a
    /// counting relay.
    pub async fn measure(&self, scratch: &Path) -> Result<PullMeasure> {
        let first = self.sync(self.ministry.node_addr(), scratch, Some(VersionNo::FIRST)).await?;
        ensure!(first.steps == ["table v1"], "the first sync took {:?}", first.steps);
        let relay = Relay::start(self.ministry.addr()).await?;
        let via_relay = NodeAddr { addr: relay.addr, server_name: self.ministry.name.clone() };
        let update = self.sync(via_relay, scratch, None).await?;
        let ((to_consumer_bytes, to_consumer_datagrams), (to_node_bytes, _)) = relay.totals();
        drop(relay);
        ensure!(
            update.steps == ["delta v2"],
            "N → N+1 took {:?} instead of one delta (the node did not store N+1 as a delta)",
            update.steps
        );
        Ok(PullMeasure {
            to_consumer_bytes,
            to_consumer_datagrams,
            to_node_bytes,
            fetched_bytes: update.fetched_bytes,
            seconds: update.seconds,
            version_dir: update.path,
        })
    }
}

/// What the benchmark's ferry byte count is, for the summary line.
pub const MEASURED_AS: &str = "udp_payload_of_node_pull";

/// One line for the report saying what was measured.
pub fn describe() -> String {
    "ferry bytes = UDP payload from node to consumer while a consumer holding N syncs to N+1 from an \
     in-process ministry node over QUIC+mTLS on loopback (counted by a relay; includes handshake, \
     manifest, framing, ACKs; excludes IP/UDP headers)"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relay_forwards_both_ways_and_counts_payload() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let relay = Relay::start(server.local_addr().expect("addr")).await.expect("relay");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client.send_to(b"hello", relay.addr).await.expect("send");
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).await.expect("server receives");
        assert_eq!(&buf[..n], b"hello");
        server.send_to(b"welcome back", from).await.expect("reply");
        let (n, _) = client.recv_from(&mut buf).await.expect("client receives");
        assert_eq!(&buf[..n], b"welcome back");
        assert_eq!(relay.totals(), ((12, 1), (5, 1)));
    }
}
