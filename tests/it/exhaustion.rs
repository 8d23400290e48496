//! Issue 18, section 2: no authenticated peer can exhaust or stall a node. Each test is one
//! attack made by a real QUIC client holding a certificate the CA issued, speaking raw frames;
//! beside it an honest user pulls the same dataset, and its files must hash equal to the
//! manifest while (or after) the attacker is refused or cut off. The limits are set short in
//! the node's `[limits]` so nothing waits for minutes.

use bytes::{BufMut, BytesMut};
use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet};
use ferry_net::tls::{self, Credentials, TlsPaths};
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::frame::MAX_FRAME_LEN;
use ferry_proto::{DatasetId, ErrorCode, Message, PublishMode, Role, ServiceMethod, SourceFormat, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles};
use std::sync::Arc;
use std::time::Duration;

const DATASET: &str = "vehicle-registry";

/// Small chunks, so a modest table has many of them.
const SMALL_CHUNKS: &str = "[transfer]\nrows-per-file = 10000\nchunk-size = \"64KiB\"\n";

/// A ministry node with `limits` (a `[limits]` body) and a published vehicle registry.
async fn node_with(pki: &TestPki, transfer: &str, limits: &str) -> TestNode {
    let extra = format!("{transfer}\n[limits]\n{limits}\n");
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = &extra;
    let node = TestNode::start(pki, spec).await;
    publish_vehicles(&node, DATASET, 20_000, 3).await;
    node
}

/// An attacker's connection: a valid certificate, the ferry ALPN, any transport settings.
async fn raw_connection(
    paths: &TlsPaths,
    node: &TestNode,
    transport: Option<quinn::TransportConfig>,
) -> quinn::Connection {
    let creds = Credentials::load(paths).unwrap();
    let mut config = tls::loopback_client_config(&creds).unwrap();
    if let Some(transport) = transport {
        config.transport_config(Arc::new(transport));
    }
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint.connect(node.addr(), &node.name).unwrap().await.expect("handshake")
}

/// Sends `request` on a new stream and reads the first answer frame, within `within`.
async fn ask(conn: &quinn::Connection, request: &Message, within: Duration) -> Result<Message, String> {
    let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut writer = FrameWriter::new(send);
    writer.send(request).await.map_err(|e| e.to_string())?;
    let _ = writer.finish();
    let mut reader = FrameReader::new(recv);
    match tokio::time::timeout(within, reader.next()).await {
        Err(_) => Err(format!("no answer within {within:?}")),
        Ok(Ok(Some(msg))) => Ok(msg),
        Ok(Ok(None)) => Err("stream ended without an answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// An honest user of another department pulls the latest version; its files hash equal to the
/// node's manifest.
async fn honest_pull(pki: &TestPki, node: &TestNode, within: Duration) {
    let paths = pki.issue("zj-analyst", "zhejiang", Role::Operator);
    let creds = Credentials::load(&paths).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new(DATASET).unwrap(), version: None };
    let connector = Connector::new(&creds, node.node_addr()).unwrap();
    let options = PullOptions::default();
    let pull = transfer::pull(&connector, &creds, &request, dest.path(), &options, Arc::new(Quiet), cancel);
    let report = tokio::time::timeout(within, pull)
        .await
        .unwrap_or_else(|_| panic!("the honest pull did not complete within {within:?}"))
        .expect("honest pull");
    let manifest = crate::pull::read_manifest(&node.version_dir(DATASET, 1));
    assert_eq!(report.fetched_bytes, manifest.total_bytes());
    for f in &manifest.files {
        assert_eq!(hash_file(&report.path.join(f.name.as_str())), f.blake3.0, "{} hashes equal", f.name);
    }
}

fn get_chunks() -> Message {
    Message::GetChunks {
        dataset: DatasetId::new(DATASET).unwrap(),
        version: VersionNo::FIRST,
        file: 0,
        first: 0,
        count: 2,
        accept_zstd: false,
        method: ServiceMethod::Download,
        priority: None,
    }
}

fn attacker(pki: &TestPki) -> TlsPaths {
    pki.issue("mallory", "hainan", Role::Operator)
}

/// (a) A request frame is bounded by its kind before it is buffered: an 8 MiB `GetChunks`
/// is refused from its length prefix and tag alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_frame_is_refused_before_its_body_arrives() {
    let pki = TestPki::new();
    let node = node_with(&pki, SMALL_CHUNKS, "").await;
    let conn = raw_connection(&attacker(&pki), &node, None).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut head = BytesMut::new();
    head.put_u32(MAX_FRAME_LEN);
    head.put_u8(get_chunks().tag());
    send.write_all(&head).await.unwrap();
    // Only the length and the tag: a node that buffers by the length prefix waits here.
    let mut reader = FrameReader::new(recv);
    let answer = tokio::time::timeout(Duration::from_secs(3), reader.next()).await;
    let Ok(Ok(Some(Message::Error { code, message }))) = answer else {
        panic!("expected a refusal before the body, got {answer:?}");
    };
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(message.contains("exceeds the maximum of 4096"), "{message}");
    // A data frame is no request at all.
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut head = BytesMut::new();
    head.put_u32(MAX_FRAME_LEN);
    head.put_u8(Message::PublishData { data: bytes::Bytes::new() }.tag());
    send.write_all(&head).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), FrameReader::new(recv).next()).await;
    let Ok(Ok(Some(Message::Error { code: ErrorCode::BadRequest, message }))) = answer else {
        panic!("expected a refusal of a data frame as a request, got {answer:?}");
    };
    assert!(message.contains("not expected as a request"), "{message}");
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
}

/// (b) Unidirectional streams are refused: QUIC gives the peer no credit for one, so nothing
/// it writes there is buffered by the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidirectional_streams_get_no_credit() {
    let pki = TestPki::new();
    let node = node_with(&pki, SMALL_CHUNKS, "").await;
    let conn = raw_connection(&attacker(&pki), &node, None).await;
    let opened = tokio::time::timeout(Duration::from_secs(2), async {
        let mut send = conn.open_uni().await.ok()?;
        send.write_all(&vec![0u8; 1 << 20]).await.ok()?;
        Some(())
    })
    .await;
    assert!(
        !matches!(opened, Ok(Some(()))),
        "the node granted a unidirectional stream and took 1 MiB that nothing reads"
    );
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
}

/// (b) Streams per identity are capped over all its connections (one more is refused with a
/// message the client prints), and a stream that never completes its request is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_identity_cap_are_refused_and_silent_ones_are_cut() {
    let pki = TestPki::new();
    let node = node_with(&pki, SMALL_CHUNKS, "streams-per-peer = 4\nrequest-timeout = \"1500ms\"").await;
    let mallory = attacker(&pki);
    let (first, second) =
        (raw_connection(&mallory, &node, None).await, raw_connection(&mallory, &node, None).await);
    let mut silent = Vec::new();
    for conn in [&first, &first, &second, &second] {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        // Half a length prefix, then nothing.
        send.write_all(&[0, 0]).await.unwrap();
        silent.push((send, recv));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = ask(&second, &Message::ListDatasets, Duration::from_secs(3)).await;
    let Ok(Message::Error { code: ErrorCode::Unavailable, message }) = &answer else {
        panic!("a fifth stream of the same identity must be refused, got {answer:?}");
    };
    assert!(message.contains("streams open (at most 4)"), "{message}");
    // The silent streams are cut after the request timeout, which frees their places.
    for (send, recv) in silent {
        let answer = tokio::time::timeout(Duration::from_secs(5), FrameReader::new(recv).next()).await;
        let Ok(Ok(Some(Message::Error { code: ErrorCode::BadRequest, message }))) = answer else {
            panic!("a stream without a whole request must be cut, got {answer:?}");
        };
        assert!(message.contains("no whole frame arrived within 1.5s"), "{message}");
        drop(send);
    }
    let answer = ask(&first, &Message::ListDatasets, Duration::from_secs(3)).await;
    assert!(matches!(answer, Ok(Message::DatasetList { .. })), "{answer:?}");
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
}

/// (c) Connections per identity are capped: one more is closed with a code and a reason the
/// ferry client prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_identity_cap_are_closed_with_a_reason() {
    let pki = TestPki::new();
    let node = node_with(&pki, SMALL_CHUNKS, "connections-per-peer = 3").await;
    let mallory = attacker(&pki);
    let creds = Credentials::load(&mallory).unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Connector::new(&creds, node.node_addr()).unwrap().connect().await.expect("within the cap"));
    }
    let refused = Connector::new(&creds, node.node_addr()).unwrap().connect().await;
    let err = match refused {
        Ok(session) => {
            // The node may close it just after the handshake: a request then fails.
            let listed = session.request(&Message::ListDatasets).await;
            listed.map(|_| "a fourth connection was served".to_owned()).unwrap_or_else(|e| e.to_string())
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("connections (at most 3)"), "the client prints why: {err}");
    // The ones within the cap still work, and an honest user is not counted with mallory.
    assert!(held[0].request(&Message::ListDatasets).await.is_ok());
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
    drop(held);
}

/// (d) A puller that opens answers and never reads them cannot hold the node-wide serve
/// budget: one peer may hold at most its fair share — half the budget while it is alone — so
/// an honest puller finds room at once instead of waiting for the stall timeout to reset the
/// hog's streams. The stall timeout is set far beyond the honest pull's time limit, so only the
/// share can let the honest pull through; the hog's windows let every one of its answers
/// reserve a chunk that is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_cannot_starve_other_pullers() {
    let pki = TestPki::new();
    let transfer = "[transfer]\nrows-per-file = 10000\nchunk-size = \"64KiB\"\nserve-buffer = \"512KiB\"\n";
    let node = node_with(&pki, transfer, "stall-timeout = \"120s\"").await;
    let manifest = crate::pull::read_manifest(&node.version_dir(DATASET, 1));
    // Each stream takes a few KiB, the connection as much as all streams together: every
    // answer gets its first frames out and then holds a reserved chunk it cannot send.
    let mut transport = tls::transport_config();
    transport.stream_receive_window(quinn::VarInt::from_u32(8 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(16 << 20));
    let conn = raw_connection(&attacker(&pki), &node, Some(transport)).await;
    let mut hogs = Vec::new();
    for round in 0..16u32 {
        let file = round % manifest.files.len() as u32;
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut writer = FrameWriter::new(send);
        let request = Message::GetChunks {
            dataset: DatasetId::new(DATASET).unwrap(),
            version: VersionNo::FIRST,
            file,
            first: 0,
            count: 2,
            accept_zstd: false,
            method: ServiceMethod::Download,
            priority: None,
        };
        writer.send(&request).await.unwrap();
        writer.finish().unwrap();
        hogs.push((writer, recv));
    }
    // Let the node reserve what it will for the hog's answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = node.metric("ferry_transfer_serve_held_bytes").await;
    assert!(held >= 256.0 * 1024.0, "the hog's answers hold room: {held} bytes");
    honest_pull(&pki, &node, Duration::from_secs(20)).await;
    drop(hogs);
}

/// (e) A connection with no stream open is closed after the idle timeout, although its
/// keep-alives keep QUIC's own idle timer from firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_despite_keep_alives() {
    let pki = TestPki::new();
    let node = node_with(&pki, SMALL_CHUNKS, "idle-timeout = \"1s\"").await;
    let conn = raw_connection(&attacker(&pki), &node, None).await;
    let hello = Message::Hello { minor: ferry_proto::PROTOCOL_MINOR, agent: "idler".into() };
    assert!(matches!(ask(&conn, &hello, Duration::from_secs(3)).await, Ok(Message::HelloAck { .. })));
    let closed = tokio::time::timeout(Duration::from_secs(6), conn.closed()).await;
    let Ok(quinn::ConnectionError::ApplicationClosed(close)) = closed else {
        panic!("an idle connection must be closed by the node, got {closed:?}");
    };
    assert_eq!(close.error_code, quinn::VarInt::from_u32(ferry_daemon::net::CLOSE_IDLE));
    assert!(String::from_utf8_lossy(&close.reason).contains("idle"), "{close}");
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
}

/// An upload that stops sending is cut after the upload frame timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stops_sending_is_cut() {
    let pki = TestPki::new();
    let node = node_with(&pki, SMALL_CHUNKS, "upload-frame-timeout = \"1s\"").await;
    let conn = raw_connection(&node.operator, &node, None).await;
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut writer = FrameWriter::new(send);
    let definition = ferry_client::synth::vehicle_registry_definition("slow-upload", &node.dept);
    let begin = Message::PublishBegin {
        definition,
        format: SourceFormat::Parquet,
        mode: PublishMode::Snapshot,
        size: 1 << 20,
    };
    writer.send(&begin).await.unwrap();
    writer.send(&Message::PublishData { data: bytes::Bytes::from(vec![0u8; 1000]) }).await.unwrap();
    // ... and nothing more, the stream left open.
    let answer = tokio::time::timeout(Duration::from_secs(5), FrameReader::new(recv).next()).await;
    let Ok(Ok(Some(Message::Error { message, .. }))) = answer else {
        panic!("a stalled upload must be cut, got {answer:?}");
    };
    assert!(message.contains("no whole frame arrived within 1s"), "{message}");
    drop(writer);
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
}

/// A node that answers `Hello` and then nothing: a replication from it never ends.
async fn silent_node(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (mut reader, mut writer) = (FrameReader::new(recv), FrameWriter::new(send));
                if let Ok(Some(Message::Hello { .. })) = reader.next().await {
                    let ack = Message::HelloAck {
                        node: "slow".into(),
                        node_dept: ferry_proto::DeptId::new("slow").unwrap(),
                        peer_dept: ferry_proto::DeptId::new("guangdong").unwrap(),
                        peer_role: Role::Province,
                    };
                    let _ = writer.send(&ack).await;
                    let _ = writer.finish();
                } else {
                    held.push((reader, writer));
                }
            }
        });
    }
}

/// A replication waits for another replication of the same dataset only so long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_waits_for_the_dataset_lock_only_so_long() {
    let pki = TestPki::new();
    let slow_creds = Credentials::load(&pki.issue("slow", "slow", Role::Province)).unwrap();
    let server = tls::server_config(&slow_creds, Arc::new(tls::IgnoreRefusals)).unwrap();
    let slow = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let _silent = tokio::spawn(silent_node(slow.clone()));
    let extra = format!("{SMALL_CHUNKS}\n[limits]\nreplicate-lock-timeout = \"1s\"\n");
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.extra = &extra;
    spec.peers = vec![("slow", slow_addr)];
    let node = TestNode::start(&pki, spec).await;
    publish_vehicles(&node, DATASET, 20_000, 3).await;
    let ops = raw_connection(&node.operator, &node, None).await;
    let replicate =
        Message::Replicate { peer: "slow".into(), dataset: DatasetId::new(DATASET).unwrap(), version: None };
    // The first replication hangs on the silent node, holding the dataset's lock.
    let first = tokio::spawn({
        let (ops, replicate) = (ops.clone(), replicate.clone());
        async move { ask(&ops, &replicate, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = ask(&ops, &replicate, Duration::from_secs(5)).await;
    let Ok(Message::Error { code: ErrorCode::Unavailable, message }) = &second else {
        panic!("a replication waiting on the lock must give up, got {second:?}");
    };
    assert!(message.contains("another replication"), "{message}");
    honest_pull(&pki, &node, Duration::from_secs(30)).await;
    first.abort();
    slow.close(0u32.into(), b"");
}
