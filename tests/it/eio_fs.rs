//! EIO from a real filesystem: the node's store, its state directory and a puller's destination
//! are mounted on the testkit's fault-injecting passthrough FUSE filesystem
//! (`ferry_testkit::faultfs`), which fails chosen `write(2)`, `fsync(2)` and `rename(2)` calls
//! with EIO. Each fault gives a typed error, nothing partial is listed or visible, and once the
//! fault is off the next attempt succeeds (resuming what was verified), files equal (BLAKE3).
//!
//! Mounting needs `/dev/fuse` and root: without them each test prints why and skips, unless
//! `FERRY_REQUIRE_FUSE=1` (set by CI) makes that a failure. The seam-level variants of these
//! faults (`IoFaultStore`, `PullOptions::write_fault`) are in `store_faults.rs`.

use super::pull::{SMALL_FILES, read_manifest};
use ferry_client::conn::{ClientError, Connector};
use ferry_client::publish::{PublishError, Published, publish_file};
use ferry_client::transfer::{self, PullError, PullOptions, PullReport, PullRequest, Quiet};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, ErrorCode, Manifest, Message, Role, SourceFormat, VersionNo};
use ferry_testkit::faultfs::{self, FaultFs, FsFault, FsOp};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles, vehicle_export};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DATASET: &str = "vehicle-registry";

fn dataset() -> DatasetId {
    DatasetId::new(DATASET).unwrap()
}

/// The filesystem mounted over `dir`, or `None` (printed why) where this process cannot mount.
fn mount(dir: &Path) -> Option<FaultFs> {
    match FaultFs::mount_over(dir) {
        Ok(fs) => Some(fs),
        Err(reason) => {
            assert!(!faultfs::required(), "{reason} — but FERRY_REQUIRE_FUSE=1");
            eprintln!("skipped: {reason}");
            None
        }
    }
}

/// The `[storage]` table of a node whose store is at `dir`.
fn storage_at(dir: &Path) -> String {
    format!("[storage]\nlocal = {:?}", dir.display().to_string())
}

fn version_dir(store: &Path, version: u64) -> PathBuf {
    store.join("datasets").join(DATASET).join(format!("v{version}"))
}

/// Nothing of `version` listed by the node nor committed in its store at `store`.
fn holds_no_version(node: &TestNode, store: &Path, version: u64) -> bool {
    let listed = node.running.as_ref().expect("running").store().versions(&dataset()).unwrap_or_default();
    !listed.iter().any(|v| v.manifest.version.get() == version)
        && !version_dir(store, version).join("manifest.signed").exists()
}

fn assert_files_match(dir: &Path, manifest: &Manifest) {
    for f in &manifest.files {
        assert_eq!(hash_file(&dir.join(f.name.as_str())), f.blake3.0, "{}", f.name);
    }
}

/// An error answer that names no storage internals, with an incident number.
fn assert_internal_answer(error: ClientError, node: &TestNode) {
    let ClientError::Remote { code, message } = error else {
        panic!("expected an error answer, got {error:?}")
    };
    assert_eq!(code, ErrorCode::Internal, "{message}");
    assert!(message.contains("incident"), "{message}");
    let dir = node.dir.path().to_string_lossy().into_owned();
    for leak in [dir.as_str(), "Input/output", "incoming", ".parquet", "datasets/", ".backing"] {
        assert!(!message.contains(leak), "{leak:?} reaches the peer: {message}");
    }
}

async fn try_publish(node: &TestNode, seed: u64) -> Result<Published, PublishError> {
    let scratch = tempfile::tempdir().unwrap();
    let (path, definition) = vehicle_export(scratch.path(), DATASET, &node.dept, 20_000, seed);
    let session = node.operator_session().await;
    let result = publish_file(&session, &path, definition, SourceFormat::Parquet).await;
    session.close();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_from_the_filesystem_under_the_store_during_publish_publishes_nothing_then_works() {
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let Some(fs) = mount(&store) else { return };
    let pki = TestPki::new();
    let storage = storage_at(&store);
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    spec.storage = Some(&storage);
    let ministry = TestNode::start(&pki, spec).await;

    // The first write into the store, the fsync of a file of v1, the rename that commits its manifest.
    let faults = [
        FsFault::new(FsOp::Write, "").nth(1),
        FsFault::new(FsOp::Fsync, "/v1/"),
        FsFault::new(FsOp::Rename, "/v1/manifest"),
    ];
    for (n, fault) in faults.into_iter().enumerate() {
        fs.plan(fault.clone());
        match try_publish(&ministry, 3).await {
            Err(PublishError::Client(error)) => assert_internal_answer(error, &ministry),
            other => panic!("a publish meeting {fault:?} gave {other:?}"),
        }
        assert_eq!(fs.injected(), n + 1, "{fault:?} was met");
        assert!(holds_no_version(&ministry, &store, 1), "nothing published after {fault:?}");
        fs.clear();
    }
    let published = try_publish(&ministry, 3).await.expect("the next publish works");
    assert_eq!((published.version, published.rows), (VersionNo::FIRST, 20_000));
    let manifest = read_manifest(&version_dir(&store, 1));
    assert_files_match(&version_dir(fs.backing(), 1), &manifest);

    let creds = analyst(&pki);
    let dest = tempfile::tempdir().unwrap();
    let report = pull(&creds, &ministry, dest.path(), &PullOptions::default()).await.expect("pull v1");
    assert_files_match(&report.path, &manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_from_the_filesystem_under_a_replication_answers_typed_lists_nothing_and_resumes() {
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let Some(store_fs) = mount(&store) else { return };
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    let storage = storage_at(&store);
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr())];
    spec.storage = Some(&storage);
    let province = TestNode::start(&pki, spec).await;
    let Some(incoming_fs) = mount(&province.config.state_dir.join("incoming")) else { return };
    publish_vehicles(&ministry, DATASET, 40_000, 17).await;
    let manifest = read_manifest(&ministry.version_dir(DATASET, 1));
    let total = manifest.total_bytes();
    let ops = province.operator_session().await;
    let replicate = |version: u64| Message::Replicate {
        peer: "ministry".into(),
        dataset: dataset(),
        version: Some(VersionNo::new(version).unwrap()),
    };

    // The pull's copy in the state directory: its eighth write fails.
    incoming_fs.plan(FsFault::new(FsOp::Write, "/.ferry-partial/").nth(8));
    let error = ops.request(&replicate(1)).await.expect_err("the state directory fails");
    assert_internal_answer(error, &province);
    assert_eq!(incoming_fs.injected(), 1);
    assert!(holds_no_version(&province, &store, 1), "nothing of v1 is listed");
    incoming_fs.clear();
    let answer = ops.request(&replicate(1)).await.expect("replicates once the disk works");
    let Message::Replicated { bytes_fetched, .. } = answer else { panic!("{answer:?}") };
    assert!(bytes_fetched < total, "resumed: fetched {bytes_fetched} of {total} bytes");
    assert_files_match(&version_dir(&store, 1), &manifest);

    // The store while the replication commits v2: its first write, then the fsync of a file.
    publish_vehicles(&ministry, DATASET, 40_000, 18).await;
    let v2 = read_manifest(&ministry.version_dir(DATASET, 2));
    for fault in [FsFault::new(FsOp::Write, ""), FsFault::new(FsOp::Fsync, "/v2/")] {
        store_fs.plan(fault.clone());
        let error = ops.request(&replicate(2)).await.expect_err("the store fails");
        assert_internal_answer(error, &province);
        assert!(store_fs.injected() > 0, "{fault:?} was met");
        assert!(holds_no_version(&province, &store, 2), "nothing of v2 is listed after {fault:?}");
        store_fs.clear();
    }
    let answer = ops.request(&replicate(2)).await.expect("replicates once the store works");
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");
    assert_files_match(&version_dir(&store, 2), &v2);
    assert_files_match(&version_dir(&store, 1), &manifest);
}

/// A consumer of another department.
fn analyst(pki: &TestPki) -> Credentials {
    Credentials::load(&pki.issue("gd-analyst", "guangdong", Role::Operator)).unwrap()
}

async fn pull(
    creds: &Credentials,
    node: &TestNode,
    dest: &Path,
    opts: &PullOptions,
) -> Result<PullReport, PullError> {
    let connector = Connector::new(creds, node.node_addr()).unwrap();
    let request = PullRequest { dataset: dataset(), version: None };
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    transfer::pull(&connector, creds, &request, dest, opts, Arc::new(Quiet), cancel).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_from_the_pullers_filesystem_fails_typed_shows_nothing_and_resumes() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    publish_vehicles(&ministry, DATASET, 40_000, 11).await;
    let manifest = read_manifest(&ministry.version_dir(DATASET, 1));
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    let Some(fs) = mount(&dest) else { return };
    let creds = analyst(&pki);

    // A chunk's write in the middle of the pull, then the fsync before the commit.
    for fault in [FsFault::new(FsOp::Write, "/.ferry-partial/").nth(6), FsFault::new(FsOp::Fsync, "")] {
        fs.plan(fault.clone());
        match pull(&creds, &ministry, &dest, &PullOptions::default()).await {
            Err(PullError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(5), "EIO: {source}"),
            other => panic!("a pull meeting {fault:?} gave {other:?}"),
        }
        assert!(fs.injected() > 0, "{fault:?} was met");
        assert!(!dest.join(DATASET).exists(), "nothing of the version is visible after {fault:?}");
        fs.clear();
    }
    let report = pull(&creds, &ministry, &dest, &PullOptions::default()).await.expect("resumes");
    assert!(report.resumed_bytes > 0, "it resumed the chunks written before the faults");
    assert_eq!(report.resumed_bytes + report.fetched_bytes, manifest.total_bytes());
    assert_files_match(&report.path, &manifest);
}
