//! Pulls between daemons: node to node, node to a user's directory, and a corrupted store.

use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullError, PullOptions, PullRequest, Quiet};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Manifest, Message, Role, ServiceMethod, SignedManifest, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles};
use std::sync::Arc;

/// Small files and chunks so a modest table spans several files and many chunks.
pub const SMALL_FILES: &str = "[transfer]\nrows-per-file = 10000\nchunk-size = \"64KiB\"\n";

pub fn read_manifest(dir: &std::path::Path) -> Manifest {
    let signed = SignedManifest::decode(&std::fs::read(dir.join("manifest.signed")).unwrap()).unwrap();
    Manifest::from_json(&signed.body).unwrap()
}

fn assert_files_match(dir: &std::path::Path, manifest: &Manifest) {
    for f in &manifest.files {
        assert_eq!(hash_file(&dir.join(f.name.as_str())), f.blake3.0, "{} differs from the manifest", f.name);
    }
}

pub async fn ministry_and_province(pki: &TestPki) -> (TestNode, TestNode) {
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(pki, spec).await;
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr())];
    let province = TestNode::start(pki, spec).await;
    (ministry, province)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_to_node_and_user_pull_match_the_manifest() {
    let pki = TestPki::new();
    let (ministry, province) = ministry_and_province(&pki).await;
    let published = publish_vehicles(&ministry, "vehicle-registry", 40_000, 7).await;
    assert_eq!(published.rows, 40_000);
    assert_eq!(published.version, VersionNo::FIRST);
    let ministry_manifest = read_manifest(&ministry.version_dir("vehicle-registry", 1));
    assert_eq!(ministry_manifest.files.len(), 4, "10k rows per file");
    assert!(
        ministry_manifest.files.iter().all(|f| ministry_manifest.chunk_count(f.size) >= 2),
        "several chunks per file"
    );

    // Node to node: the province pulls from the ministry.
    let ops = province.operator_session().await;
    let dataset = DatasetId::new("vehicle-registry").unwrap();
    let answer = ops
        .request(&Message::Replicate { peer: "ministry".into(), dataset: dataset.clone(), version: None })
        .await
        .unwrap();
    let Message::Replicated { version, bytes_fetched, files, .. } = answer else { panic!("{answer:?}") };
    assert_eq!((version, files), (VersionNo::FIRST, 4));
    assert_eq!(bytes_fetched, ministry_manifest.total_bytes());
    let stored = province.version_dir("vehicle-registry", 1);
    assert_eq!(read_manifest(&stored), ministry_manifest, "the province keeps the publisher's manifest");
    assert_files_match(&stored, &ministry_manifest);

    // A user of another department downloads from the province node.
    let user = pki.issue("zj-analyst", "zhejiang", Role::Operator);
    let creds = Credentials::load(&user).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset, version: None };
    let connector = Connector::new(&creds, province.node_addr()).unwrap();
    let report = transfer::pull(
        &connector,
        &creds,
        &request,
        dest.path(),
        &PullOptions::default(),
        Arc::new(Quiet),
        cancel.clone(),
    )
    .await
    .unwrap();
    assert_eq!(report.fetched_bytes, ministry_manifest.total_bytes());
    assert_eq!(report.path, dest.path().join("vehicle-registry").join("v1"));
    assert_files_match(&report.path, &ministry_manifest);
    assert!(!dest.path().join(".ferry-partial").exists(), "staging is gone after commit");

    // Pulling again finds it there and fetches nothing.
    let again = transfer::pull(
        &connector,
        &creds,
        &request,
        dest.path(),
        &PullOptions::default(),
        Arc::new(Quiet),
        cancel,
    )
    .await
    .unwrap();
    assert!(again.already_present);
    assert_eq!(again.fetched_bytes, 0);

    // The serving sides counted what they sent.
    let sent = ministry.metric("ferry_transfer_sent_bytes_total").await;
    assert!(sent >= ministry_manifest.total_bytes() as f64 * 0.5, "ministry sent {sent}");
    assert!(
        province.metric("ferry_transfer_chunks_verified_total").await >= ministry_manifest.files.len() as f64
    );
}

/// A ministry holding one published version in small files, with one byte of its stored file
/// `relative` (under the version's directory) flipped at `offset`.
pub async fn ministry_with_a_flipped_byte(pki: &TestPki, relative: &str, offset: usize) -> TestNode {
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(pki, spec).await;
    publish_vehicles(&ministry, "vehicle-registry", 30_000, 3).await;
    let victim = ministry.version_dir("vehicle-registry", 1).join(relative);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    ministry
}

/// A province analyst's pull of the latest version into `dest`, which must fail.
async fn failing_pull(
    pki: &TestPki,
    ministry: &TestNode,
    dest: &std::path::Path,
    opts: &PullOptions,
) -> PullError {
    let creds = Credentials::load(&pki.issue("gd-analyst", "guangdong", Role::Operator)).unwrap();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let connector = Connector::new(&creds, ministry.node_addr()).unwrap();
    transfer::pull(&connector, &creds, &request, dest, opts, Arc::new(Quiet), cancel).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_the_server_is_caught_and_nothing_is_committed() {
    let pki = TestPki::new();
    let offset = 64 * 1024 + 100; // inside chunk 1
    let ministry = ministry_with_a_flipped_byte(&pki, "part-00001.parquet", offset).await;
    let dest = tempfile::tempdir().unwrap();
    let err = failing_pull(&pki, &ministry, dest.path(), &PullOptions::default()).await;
    match &err {
        PullError::Corrupt { file, chunk, .. } => {
            assert_eq!(file, "part-00001.parquet");
            assert_eq!(*chunk, 1);
        }
        other => panic!("expected a corrupt-chunk error, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("part-00001.parquet") && message.contains("chunk 1"), "{message}");
    assert!(!dest.path().join("vehicle-registry").exists(), "nothing under the final name");
}

/// The node checks the chunk hashes it stores against the signed manifest before sending them:
/// a changed byte there is refused at the source, and the puller commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_stored_chunk_hashes_is_refused_by_the_node() {
    let pki = TestPki::new();
    // Byte 33: in the hash of chunk 1 (32 bytes per chunk).
    let ministry = ministry_with_a_flipped_byte(&pki, ".ferry/chunk-hashes/1", 33).await;
    let dest = tempfile::tempdir().unwrap();
    // The node's refusal is an internal error, which a puller retries; once is enough here.
    let opts = PullOptions { max_retries: 1, ..PullOptions::default() };
    let message = failing_pull(&pki, &ministry, dest.path(), &opts).await.to_string();
    // The node refuses to serve the damaged page; the peer reads that the node failed and an
    // incident number, not the node's storage internals (its log has the page and the file).
    assert!(message.contains("failed on its side (incident "), "{message}");
    assert!(!message.contains("chunk-hashes") && !message.contains(".ferry"), "{message}");
    assert!(!dest.path().join("vehicle-registry").exists(), "nothing under the final name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_dataset_is_denied_as_if_absent_and_counted() {
    let pki = TestPki::new();
    let ministry = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, definition) =
        ferry_testkit::vehicle_export(scratch.path(), "owner-records", "ministry", 1000, 1);
    let definition = definition.replace("share-type = \"unconditional\"", "share-type = \"conditional\"");
    assert!(definition.contains("conditional"));
    let session = ministry.operator_session().await;
    ferry_client::publish::publish_file(&session, &path, definition, ferry_proto::SourceFormat::Parquet)
        .await
        .unwrap();

    let province = pki.issue("gd-node", "guangdong", Role::Province);
    let session = ferry_testkit::connect(&province, ministry.node_addr()).await;
    // A dataset the province may not see is answered as one the node does not hold, so the
    // denial does not tell that it exists; the node counts it as a denial all the same.
    let ask = |id: &str| Message::GetManifest {
        dataset: DatasetId::new(id).unwrap(),
        version: None,
        method: ServiceMethod::Download,
    };
    let hidden = session.request(&ask("owner-records")).await.unwrap_err().to_string();
    let absent = session.request(&ask("owner-recordz")).await.unwrap_err().to_string();
    assert_eq!(hidden.replace("owner-records", "ID"), absent.replace("owner-recordz", "ID"));
    assert!(hidden.contains("not found"), "{hidden}");
    assert_eq!(ministry.metric("ferry_authz_denials_total{reason=\"no_grant\"}").await, 1.0);
    let Message::DatasetList { datasets } = session.request(&Message::ListDatasets).await.unwrap() else {
        panic!("a dataset list")
    };
    assert!(datasets.is_empty(), "the conditional dataset is not listed to the province: {datasets:?}");

    // A province cannot publish on the ministry node.
    let (path, definition) = ferry_testkit::vehicle_export(scratch.path(), "vehicles", "ministry", 10, 1);
    let err =
        ferry_client::publish::publish_file(&session, &path, definition, ferry_proto::SourceFormat::Parquet)
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("permission denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_take_turns_in_a_tight_serve_budget_and_give_it_all_back() {
    let pki = TestPki::new();
    // Two 64 KiB chunks of room for three pullers of four streams each: answers must wait.
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = "[transfer]\nrows-per-file = 10000\nchunk-size = \"64KiB\"\nserve-buffer = \"128KiB\"\n";
    let ministry = TestNode::start(&pki, spec).await;
    publish_vehicles(&ministry, "vehicle-registry", 40_000, 7).await;
    let manifest = read_manifest(&ministry.version_dir("vehicle-registry", 1));
    assert!(manifest.files.iter().map(|f| manifest.chunk_count(f.size)).sum::<u64>() >= 8, "many chunks");
    assert_eq!(ministry.metric("ferry_transfer_serve_budget_bytes").await, 131_072.0);

    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let mut pulls = tokio::task::JoinSet::new();
    for name in ["gd-analyst", "zj-analyst", "sc-analyst"] {
        let creds = Credentials::load(&pki.issue(name, name, Role::Operator)).unwrap();
        let connector = Connector::new(&creds, ministry.node_addr()).unwrap();
        let request = request.clone();
        pulls.spawn(async move {
            let dest = tempfile::tempdir().unwrap();
            let (_tx, cancel) = tokio::sync::watch::channel(false);
            let options = PullOptions::default();
            let report =
                transfer::pull(&connector, &creds, &request, dest.path(), &options, Arc::new(Quiet), cancel)
                    .await
                    .unwrap();
            (dest, report)
        });
    }
    while let Some(joined) = pulls.join_next().await {
        let (_dest, report) = joined.unwrap();
        assert_eq!(report.fetched_bytes, manifest.total_bytes());
        assert_files_match(&report.path, &manifest);
    }
    assert!(ministry.metric("ferry_transfer_serve_budget_waits_total").await > 0.0, "answers took turns");
    // Every reservation comes back once QUIC has the chunks acknowledged.
    let mut held = f64::NAN;
    for _ in 0..100 {
        held = ministry.metric("ferry_transfer_serve_held_bytes").await;
        if held == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held, 0.0, "no served bytes left reserved");
    // The chunk buffers are bounded by the budget, not by the bytes served: a buffer is taken
    // only with a reservation, and idle ones are reused. A file's shorter last chunk can leave a
    // buffer too small for a whole chunk idle beside the others, at most one per file.
    let buffers = ministry.metric("ferry_transfer_serve_buffers_bytes").await;
    let served = 3.0 * manifest.total_bytes() as f64;
    let bound = 131_072.0 + manifest.files.len() as f64 * 65_536.0;
    assert!(buffers > 0.0 && buffers <= bound, "{buffers} bytes of chunk buffers after serving {served}");
    assert!(bound < served, "the bound is below what was served");
}
