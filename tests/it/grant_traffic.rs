//! What a grantee's traffic at a province does to its grant, end to end (issue 19): a ministry
//! running the control plane and a province node serving its own dataset under the ministry's
//! policy. The uses the province serves reach the ministry in its batched `report-use` and set
//! the grant's `last_used_at`; a revocation at the ministry cuts off a chunk answer the
//! province is already sending (the stream is reset with `RESET_NO_LONGER_ALLOWED`), and a
//! pull in progress commits nothing.

use ferry_client::conn::{ClientError, Connector};
use ferry_client::control::call;
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet};
use ferry_control::api::ControlRequest;
use ferry_net::tls::{self, Credentials, TlsPaths};
use ferry_net::wire::{FrameReader, FrameWriter, RESET_NO_LONGER_ALLOWED, WireError};
use ferry_proto::authz::reason_of;
use ferry_proto::{DatasetId, ErrorCode, Message, Role, ServiceMethod, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, sync_vehicles};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATASET: &str = "vehicle-registry";

/// The vehicle registry of `provider` as an unconditional catalog entry (granted on application).
pub(crate) fn unconditional_entry(provider: &str) -> String {
    let definition = ferry_client::synth::vehicle_registry_definition(DATASET, provider);
    format!(
        "{definition}\n[catalog]\nclassification = \"base/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"every verified transport department\"\nmethods = [\"download\"]\n"
    )
}

pub(crate) async fn start_ministry(pki: &TestPki) -> TestNode {
    let control = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        control.cert, control.key
    );
    let spec = NodeSpec { dept: "mot", extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) };
    TestNode::start(pki, spec).await
}

/// Zhejiang's node following the ministry, reporting uses every `report_every`, with `transfer`
/// (a `[transfer]` section or nothing).
pub(crate) async fn start_province(
    pki: &TestPki,
    ministry: &TestNode,
    report_every: &str,
    transfer: &str,
) -> TestNode {
    let extra = format!(
        "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"3s\"\n\
         report-uses-every = \"{report_every}\"\n{transfer}"
    );
    let spec = NodeSpec {
        dept: "zj",
        peers: vec![("ministry", ministry.addr())],
        extra: &extra,
        ..NodeSpec::new("zj", Role::Province)
    };
    TestNode::start(pki, spec).await
}

pub(crate) async fn control(who: &TlsPaths, node: &TestNode, request: ControlRequest) -> serde_json::Value {
    let session = ferry_testkit::connect(who, node.node_addr()).await;
    let answer = call(&session, &request).await;
    session.close();
    answer.unwrap_or_else(|e| panic!("{}: {e}", request.op()))
}

/// Registers the dataset, waits until zj may publish it, publishes `rows` rows and grants it to
/// Guangdong (whose operator is returned with the grant's number).
async fn granted_at_province(
    pki: &TestPki,
    ministry: &TestNode,
    zj: &TestNode,
    rows: usize,
) -> (TlsPaths, u64) {
    let register =
        ControlRequest::CatalogRegister { document: unconditional_entry("zj"), effective_from: None };
    control(&zj.operator, ministry, register).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let scratch = tempfile::tempdir().unwrap();
    let (path, definition) = ferry_testkit::vehicle_export(scratch.path(), DATASET, "zj", rows, 7);
    loop {
        let session = zj.operator_session().await;
        let published = ferry_client::publish::publish_file(
            &session,
            &path,
            definition.clone(),
            ferry_proto::SourceFormat::Parquet,
        )
        .await;
        session.close();
        if published.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "zj never followed the catalog: {published:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gd = pki.issue("gd-analyst", "gd", Role::Operator);
    let grant = ferry_testkit::apply_and_wait_for_grant(&gd, "gd", ministry, DATASET, &[ministry, zj]).await;
    (gd, grant)
}

/// The grant `grant` as the ministry lists it.
async fn grant_row(ministry: &TestNode, grant: u64) -> serde_json::Value {
    let list =
        control(&ministry.operator, ministry, ControlRequest::GrantList { dataset: None, dept: None }).await;
    let grants = list.get("grants").unwrap_or(&list).as_array().cloned().unwrap_or_default();
    grants
        .into_iter()
        .find(|g| g["id"].as_u64() == Some(grant))
        .unwrap_or_else(|| panic!("grant {grant} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_served_by_a_province_sets_the_grants_last_use_at_the_ministry() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki).await;
    let zj = start_province(&pki, &ministry, "1s", "").await;
    let (gd, grant) = granted_at_province(&pki, &ministry, &zj, 500).await;
    let before = grant_row(&ministry, grant).await;
    assert!(before["last-used-at"].is_null(), "never used yet: {before}");

    let started = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let pulled = sync_vehicles(&Credentials::load(&gd).unwrap(), &zj, dest.path(), None).await;
    assert_eq!(pulled.rows, 500);

    // zj reports within its period (1 s here); the ministry records the use on the grant.
    let deadline = Instant::now() + Duration::from_secs(15);
    let used = loop {
        let row = grant_row(&ministry, grant).await;
        if let Some(at) = row["last-used-at"].as_str() {
            break time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
        }
        assert!(Instant::now() < deadline, "the province's use never reached the ministry: {row}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(used >= started, "the use is the pull's, not earlier: {used} < {started}");
    assert!(used <= time::OffsetDateTime::now_utc(), "{used}");
}

/// A raw connection of Guangdong whose stream windows are a few KiB, so a chunk answer stays
/// open at the serving node until it is read.
async fn slow_reader(paths: &TlsPaths, node: &TestNode) -> quinn::Connection {
    let creds = Credentials::load(paths).unwrap();
    let mut config = tls::loopback_client_config(&creds).unwrap();
    let mut transport = tls::transport_config();
    transport.stream_receive_window(quinn::VarInt::from_u32(8 * 1024));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint.connect(node.addr(), &node.name).unwrap().await.expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_cuts_off_a_chunk_answer_already_open_and_a_pull_commits_nothing() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki).await;
    let small_chunks = "[transfer]\nrows-per-file = 50000\nchunk-size = \"64KiB\"\n";
    let zj = start_province(&pki, &ministry, "1m", small_chunks).await;
    let (gd, grant) = granted_at_province(&pki, &ministry, &zj, 150_000).await;

    // An answer of every chunk of the largest file, not read until the revocation took effect.
    let stored = crate::pull::read_manifest(&zj.version_dir(DATASET, 1));
    // The pull below must still have chunks to ask for after the revocation: more than its
    // streams ask for at once (what the node has written before the revocation is delivered).
    let defaults = PullOptions::default();
    let at_once = (defaults.streams as u64) * u64::from(defaults.chunks_per_request) * 64 * 1024;
    assert!(
        stored.total_bytes() > 2 * at_once,
        "{} bytes, {at_once} asked for at once",
        stored.total_bytes()
    );
    let (largest, file) = stored.files.iter().enumerate().max_by_key(|(_, f)| f.size).unwrap();
    assert!(file.size > 512 * 1024, "the answer outgrows the reader's window: {} bytes", file.size);
    let conn = slow_reader(&gd, &zj).await;
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut writer = FrameWriter::new(send);
    let request = Message::GetChunks {
        dataset: DatasetId::new(DATASET).unwrap(),
        version: VersionNo::FIRST,
        file: largest as u32,
        first: 0,
        count: u32::try_from(file.size.div_ceil(64 * 1024)).unwrap(),
        accept_zstd: false,
        method: ServiceMethod::Download,
        priority: None,
    };
    writer.send(&request).await.unwrap();
    writer.finish().unwrap();
    let mut answer = FrameReader::new(recv);
    let first = answer.next_incoming().await.expect("the answer starts").expect("a first frame");
    if let ferry_net::wire::Incoming::Message(Message::Error { code, message }) = first {
        panic!("the answer is refused: {code}: {message}");
    }

    // A pull of the whole version, slowed so that it is mid-transfer at the revocation.
    let consumer = Credentials::load(&gd).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let pull = {
        let dest = dest.path().to_path_buf();
        let connector = Connector::new(&consumer, zj.node_addr()).unwrap();
        tokio::spawn(async move {
            let (_tx, cancel) = tokio::sync::watch::channel(false);
            let request = PullRequest { dataset: DatasetId::new(DATASET).unwrap(), version: None };
            let options = PullOptions { rate_limit: Some(64 * 1024), ..PullOptions::default() };
            transfer::pull(&connector, &consumer, &request, &dest, &options, Arc::new(Quiet), cancel).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!pull.is_finished(), "the slowed pull is still in progress at the revocation");

    let revoke = ControlRequest::GrantRevoke { grant, reason: "purpose fulfilled".into() };
    control(&ministry.operator, &ministry, revoke).await;
    let revoked_at = Instant::now();

    // The province learns of the revocation (a new request is refused) while the open answer
    // still waits for its reader; the answer is then found reset with the typed code.
    loop {
        if let Err((code, message)) = manifest(&gd, &zj).await {
            assert_eq!(
                (code, reason_of(&message)),
                (ErrorCode::PermissionDenied, Some("no_grant")),
                "{message}"
            );
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "zj still serves gd 10 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let enforced_after = revoked_at.elapsed();
    let mut frames = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), answer.next_incoming()).await {
            Err(_) => panic!(
                "the open answer was neither cut off nor finished 5 s after the revocation took effect"
            ),
            Ok(Ok(Some(_))) => frames += 1,
            Ok(other) => break other,
        }
    };
    match &ended {
        Err(WireError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), u64::from(RESET_NO_LONGER_ALLOWED), "{ended:?}")
        }
        other => {
            panic!("the open answer must be reset as no longer allowed, got {other:?} after {frames} frames")
        }
    }
    assert!(frames <= 2, "at most what was in flight arrives after the cut-off: {frames} frames");
    println!(
        "revocation at the ministry -> enforced at the province, open answer reset: {:.0} ms",
        enforced_after.as_secs_f64() * 1e3
    );

    // The pull fails with the reason, and nothing is committed at its destination.
    // The engine may retry the refused range with backoff before it gives up (about 30 s at
    // most): the bound is that it ends refused, not how soon.
    let outcome = tokio::time::timeout(Duration::from_secs(60), pull).await.expect("the pull ends").unwrap();
    match outcome {
        Err(
            transfer::PullError::Client(ClientError::Remote { code, message })
            | transfer::PullError::RetriesExhausted { last: ClientError::Remote { code, message }, .. },
        ) => {
            assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
            assert_eq!(reason_of(&message), Some("no_grant"), "{message}");
        }
        other => panic!("the pull must be refused after the revocation, got {other:?}"),
    }
    let final_dir = transfer::version_dir(dest.path(), &DatasetId::new(DATASET).unwrap(), VersionNo::FIRST);
    assert!(!final_dir.exists(), "nothing is committed after the revocation: {:?}", walk(dest.path()));
    assert!(zj.metric("ferry_authz_denials_total{reason=\"no_grant\"}").await >= 1.0);
}

/// Asks `node` for the dataset's manifest as `who`: `Ok` or the node's refusal.
async fn manifest(who: &TlsPaths, node: &TestNode) -> Result<(), (ErrorCode, String)> {
    let session = ferry_testkit::connect(who, node.node_addr()).await;
    let request = Message::GetManifest {
        dataset: DatasetId::new(DATASET).unwrap(),
        version: None,
        method: ServiceMethod::Download,
    };
    let answer = session.request(&request).await;
    session.close();
    match answer {
        Ok(_) => Ok(()),
        Err(ClientError::Remote { code, message }) => Err((code, message)),
        Err(other) => panic!("unexpected: {other}"),
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
