//! A client on a long path: a UDP relay on loopback holds every datagram for half a round trip,
//! so a connection to a node behaves as over a WAN link (what the round trips and QUIC's
//! timers, which scale with the RTT, cost a client).

use ferry_client::conn::Connector;
use ferry_net::tls::Credentials;
use ferry_proto::Role;
use ferry_testkit::{NodeSpec, TestNode, TestPki};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Forwards datagrams between one client and `node`, each `delay` late, and counts the
/// client's.
struct DelayRelay {
    addr: SocketAddr,
    from_client: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DelayRelay {
    async fn start(node: SocketAddr, delay: Duration) -> Self {
        let outer = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let inner = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        inner.connect(node).await.unwrap();
        let addr = outer.local_addr().unwrap();
        let from_client = Arc::new(AtomicU64::new(0));
        let (client_tx, client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
        let up = {
            let (outer, inner, count) = (outer.clone(), inner.clone(), from_client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((len, from)) = outer.recv_from(&mut buf).await {
                    let _ = client_tx.send(Some(from));
                    count.fetch_add(1, Ordering::Relaxed);
                    let (inner, datagram) = (inner.clone(), buf[..len].to_vec());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = inner.send(&datagram).await;
                    });
                }
            })
        };
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(len) = inner.recv(&mut buf).await {
                let Some(client) = *client_rx.borrow() else { continue };
                let (outer, datagram) = (outer.clone(), buf[..len].to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = outer.send_to(&datagram, client).await;
                });
            }
        });
        Self { addr, from_client, tasks: vec![up, down] }
    }

    fn client_datagrams(&self) -> u64 {
        self.from_client.load(Ordering::Relaxed)
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
