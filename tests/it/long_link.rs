//! A client on a long path: a UDP relay on loopback holds every datagram for half a round trip,
//! so a connection to a node behaves as over a WAN link (what the round trips and QUIC's
//! timers, which scale with the RTT, cost a client).

use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Role};
use ferry_testkit::{NodeSpec, TestNode, TestPki, publish_vehicles};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Forwards datagrams between one client and `node`, each `delay` late and in the order they
/// came (as a link does; a task per datagram would reorder those that share a timer tick), and
/// counts the client's. Closed with [`DelayRelay::hold_after_client_data`], it holds back what
/// the node sends once the client has sent its first 1-RTT packet, until released: whatever the
/// node then receives, the client asked without having seen a single answer.
struct DelayRelay {
    addr: SocketAddr,
    from_client: Arc<AtomicU64>,
    gate: Arc<Gate>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether the relay holds the node's datagrams back, and when it started to.
#[derive(Default)]
struct Gate {
    /// Hold the node's datagrams once the client sends 1-RTT data.
    armed: std::sync::atomic::AtomicBool,
    /// Set when the client's first 1-RTT packet passed an armed gate.
    closed: std::sync::atomic::AtomicBool,
    /// Wakes the sender of the node's datagrams when the gate opens.
    opened: tokio::sync::Notify,
}

/// Whether a datagram carries a QUIC packet with a short header (1-RTT): alone, or coalesced
/// after long-header packets, as QUIC allows (a client's last Handshake packet and its first
/// requests may share a datagram). A short header's first byte has the
/// header form bit 0; its fixed bit is not looked at, since quinn greases it (RFC 9287) and
/// about half of a client's 1-RTT packets have it 0 (reading it, this test missed the client's
/// first requests in about a third of its runs). A long header's lengths are not covered by
/// header protection (RFC 9000 §17.2), so the packets before a short one can be stepped over.
fn carries_short_header(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while let Some(&first) = rest.first() {
        if first & 0x80 == 0 {
            return true;
        }
        let Some(next) = after_long_header_packet(rest) else { return false };
        rest = next;
    }
    false
}

/// The bytes after the long-header packet that opens `packet` (`None` for a Retry, which has no
/// length, or a truncated packet).
fn after_long_header_packet(packet: &[u8]) -> Option<&[u8]> {
    let kind = (packet[0] >> 4) & 0x03;
    let mut at = 5; // first byte and version
    for _ in 0..2 {
        // destination, then source connection ID
        at += 1 + usize::from(*packet.get(at)?);
    }
    if kind == 0 {
        let (token, used) = varint(packet.get(at..)?)?;
        at += used + usize::try_from(token).ok()?;
    }
    if kind == 3 {
        return None;
    }
    let (length, used) = varint(packet.get(at..)?)?;
    packet.get(at + used + usize::try_from(length).ok()?..)
}

#[test]
fn a_short_header_is_found_after_coalesced_long_header_packets() {
    // Handshake: type 2, version 1, an 8-byte destination ID, no source ID, 32 bytes long.
    let mut handshake = vec![0xe0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x40, 32];
    handshake.extend([0xaa; 32]);
    // Initial: type 0, with a 2-byte token, 20 bytes long.
    let mut initial = vec![0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 2, 9, 9, 20];
    initial.extend([0xbb; 20]);
    let short = [0x41, 1, 2, 3, 4, 5, 6, 7, 8, 0xcc, 0xcc];
    assert!(carries_short_header(&short));
    assert!(carries_short_header(&[0x39, 1, 2, 3]), "a greased fixed bit");
    assert!(!carries_short_header(&handshake));
    assert!(!carries_short_header(&[initial.clone(), handshake.clone()].concat()));
    assert!(carries_short_header(&[handshake.clone(), short.to_vec()].concat()));
    assert!(carries_short_header(&[initial, handshake.clone(), short.to_vec()].concat()));
    assert!(!carries_short_header(&handshake[..20]), "truncated");
}

/// A QUIC variable-length integer and the bytes it took.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let mut value = u64::from(first & 0x3f);
    for &b in bytes.get(1..len)? {
        value = (value << 8) | u64::from(b);
    }
    Some((value, len))
}

impl DelayRelay {
    async fn start(node: SocketAddr, delay: Duration) -> Self {
        let outer = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let inner = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        inner.connect(node).await.unwrap();
        let addr = outer.local_addr().unwrap();
        let from_client = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate::default());
        let (client_tx, client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
        let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let (down_tx, mut down_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let receive_up = {
            let (outer, count, gate) = (outer.clone(), from_client.clone(), gate.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((len, from)) = outer.recv_from(&mut buf).await {
                    let _ = client_tx.send(Some(from));
                    count.fetch_add(1, Ordering::Relaxed);
                    if gate.armed.load(Ordering::SeqCst) && carries_short_header(&buf[..len]) {
                        gate.closed.store(true, Ordering::SeqCst);
                    }
                    let _ = up_tx.send((Instant::now() + delay, buf[..len].to_vec()));
                }
            })
        };
        let send_up = {
            let inner = inner.clone();
            tokio::spawn(async move {
                while let Some((at, datagram)) = up_rx.recv().await {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = inner.send(&datagram).await;
                }
            })
        };
        let receive_down = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(len) = inner.recv(&mut buf).await {
                let _ = down_tx.send((Instant::now() + delay, buf[..len].to_vec()));
            }
        });
        let send_down = {
            let gate = gate.clone();
            tokio::spawn(async move {
                while let Some((at, datagram)) = down_rx.recv().await {
                    tokio::time::sleep_until(at.into()).await;
                    while gate.closed.load(Ordering::SeqCst) {
                        let opened = gate.opened.notified();
                        if !gate.closed.load(Ordering::SeqCst) {
                            break;
                        }
                        opened.await;
                    }
                    let Some(client) = *client_rx.borrow() else { continue };
                    let _ = outer.send_to(&datagram, client).await;
                }
            })
        };
        Self { addr, from_client, gate, tasks: vec![receive_up, send_up, receive_down, send_down] }
    }

    fn client_datagrams(&self) -> u64 {
        self.from_client.load(Ordering::Relaxed)
    }

    /// Holds the node's datagrams back from the client's first 1-RTT packet on.
    fn hold_after_client_data(&self) {
        self.gate.armed.store(true, Ordering::SeqCst);
    }

    fn holding(&self) -> bool {
        self.gate.closed.load(Ordering::SeqCst)
    }

    /// Lets the held datagrams and all later ones through.
    fn release(&self) {
        self.gate.armed.store(false, Ordering::SeqCst);
        self.gate.closed.store(false, Ordering::SeqCst);
        self.gate.opened.notify_waiters();
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

/// Closing the client's endpoint sends the node the close at once and returns: it does not
/// wait out QUIC's draining period (three probe timeouts, over half a second at a 150 ms round
/// trip), which a `ferry pull` on a long link spent after its last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_the_node_without_waiting_out_the_drain() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let relay = DelayRelay::start(node.addr(), Duration::from_millis(75)).await;
    let creds = Credentials::load(&pki.issue("gd-analyst", "gd", Role::Operator)).unwrap();
    let mut addr = node.node_addr();
    addr.addr = relay.addr;
    let connector = Connector::new(&creds, addr).unwrap();
    let session = connector.connect().await.expect("connect through the relay");
    assert!(session.connection().rtt() >= Duration::from_millis(140), "{:?}", session.connection().rtt());
    // Whatever acknowledgement was still due has gone out.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = relay.client_datagrams();

    let started = Instant::now();
    connector.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(250), "shutdown took {took:?}");
    assert!(relay.client_datagrams() > before, "the close never left the client");
    drop(session);
}

/// Requests of `kind` the node has handled (counted as each is dispatched, answered or not).
async fn requests(node: &TestNode, kind: &str) -> f64 {
    node.metric(&format!("ferry_net_requests_total{{request=\"{kind}\"}}")).await
}

/// A pull into an empty directory asks `Hello`, `ListVersions` and the version's
/// `GetManifest` together, as soon as its handshake is done: the node receives all three while
/// the relay holds back everything the node sent after the client's first 1-RTT packet, so
/// none of them waited for an answer. One after the other (three round trips before the first
/// `GetChunks` instead of one), the node saw `Hello` and at most `ListVersions` and then
/// nothing more until the held answers went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_asks_its_first_questions_before_any_answer() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    publish_vehicles(&node, "vehicle-registry", 2_000, 1).await;
    let relay = DelayRelay::start(node.addr(), Duration::from_millis(20)).await;
    relay.hold_after_client_data();
    let creds = Credentials::load(&pki.issue("analyst", &node.dept, Role::Operator)).unwrap();
    let mut addr = node.node_addr();
    addr.addr = relay.addr;
    let connector = Connector::new(&creds, addr).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (hellos, manifests) = (requests(&node, "hello").await, requests(&node, "manifest").await);

    let pull = {
        let (connector, root) = (connector.clone(), dest.path().to_owned());
        tokio::spawn(async move {
            let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
            let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
            transfer::sync(
                &connector,
                &creds,
                &request,
                &root,
                &PullOptions::default(),
                Arc::new(Quiet),
                cancel,
            )
            .await
        })
    };
    // Generous: what is waited for needs no answer from the node, only the client's first flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests(&node, "manifest").await == manifests && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked_manifest = requests(&node, "manifest").await - manifests;
    let asked_hello = requests(&node, "hello").await - hellos;
    let held = relay.holding();
    relay.release();
    let report = pull.await.unwrap().expect("pull through the relay");
    connector.shutdown().await;

    assert!(held, "the relay never saw the client's 1-RTT data");
    assert_eq!(asked_hello, 1.0);
    assert_eq!(asked_manifest, 1.0, "GetManifest was not asked before an answer came back");
    assert!(report.fetched_bytes > 0);
    // The manifest asked with the version list was used, not asked for again.
    assert_eq!(requests(&node, "manifest").await - manifests, 1.0);
}
