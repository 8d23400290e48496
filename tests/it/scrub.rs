//! The store's scrub (issue 18, durability): a flipped byte in a stored part file and a truncated
//! chunk-hash file are found, the damaged file is set aside under `quarantine/` and put back —
//! fetched from a peer holding a replica, or rebuilt from the verified part file — after which a
//! pull of the version succeeds with equal hashes. Without a peer holding a good copy the file
//! stays aside, the version is never served with the bad bytes and the summary and metric say
//! unrepairable. The scheduled scrub does the same on its own. Runs are asked for as `ferry
//! verify` asks: `POST /scrub` on the node's admin port.

use super::pull::{SMALL_FILES, ministry_and_province, read_manifest};
use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullError, PullOptions, PullReport, PullRequest, Quiet};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Message, Role, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DATASET: &str = "vehicle-registry";

/// Asks `node` for a scrub as `ferry verify` does; returns the findings and the summary.
async fn scrub(node: &TestNode, query: &str) -> (Vec<Value>, Value) {
    let admin = node.running.as_ref().expect("running").admin_addr.expect("admin port");
    let mut stream = tokio::net::TcpStream::connect(admin).await.expect("connect to admin port");
    let request = format!("POST /scrub?{query} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let (summary, findings) = lines.split_last().expect("a summary line");
    let findings = findings.iter().map(|f| f["finding"].clone()).collect();
    (findings, summary["summary"].clone())
}

/// Flips one bit of a stored file in place.
fn flip_byte(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open stored file");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).expect("write");
}

/// An analyst of another province.
fn analyst(pki: &TestPki) -> Credentials {
    Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap()
}

/// The analyst pulls version 1 from `node` into a new directory.
async fn pull(creds: &Credentials, node: &TestNode, dest: &Path) -> Result<PullReport, PullError> {
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new(DATASET).unwrap(), version: Some(VersionNo::FIRST) };
    let connector = Connector::new(creds, node.node_addr()).unwrap();
    let opts = PullOptions { max_retries: 1, ..PullOptions::default() };
    transfer::pull(&connector, creds, &request, dest, &opts, Arc::new(Quiet), cancel).await
}

/// Every file of the pulled version hashes as the one `node` stores.
fn assert_same_as_stored(pulled: &Path, node: &TestNode) {
    let stored = node.version_dir(DATASET, 1);
    let manifest = read_manifest(&stored);
    for f in &manifest.files {
        assert_eq!(
            hash_file(&pulled.join(f.name.as_str())),
            f.blake3.0,
            "{} differs from the manifest",
            f.name
        );
    }
}

/// The single file under the node's quarantine, by walking `data/quarantine`.
fn quarantined(node: &TestNode) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { walk(&path, out) } else { out.push(path) }
        }
    }
    let mut out = Vec::new();
    let root = node.version_dir(DATASET, 1);
    let data = root.ancestors().nth(3).expect("the store's root");
    walk(&data.join("quarantine"), &mut out);
    out
}

async fn replicate_v1(province: &TestNode) {
    let ops = province.operator_session().await;
    let request = Message::Replicate {
        peer: "ministry".into(),
        dataset: DatasetId::new(DATASET).unwrap(),
        version: None,
    };
    let answer = ops.request(&request).await.unwrap();
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_set_aside_and_fetched_again_from_a_replica() {
    let pki = TestPki::new();
    let analyst = analyst(&pki);
    let (mut ministry, province) = ministry_and_province(&pki).await;
    publish_vehicles(&ministry, DATASET, 30_000, 3).await;
    replicate_v1(&province).await;
    // The ministry learns of the province as a peer (a restart with the peer in its config).
    let addr = ministry.addr();
    ministry.stop().await;
    ministry.config.peers.insert("guangdong".into(), province.node_addr());
    ministry.restart(addr).await;

    let victim = ministry.version_dir(DATASET, 1).join("part-00001.parquet");
    let good = hash_file(&victim);
    flip_byte(&victim, 64 * 1024 + 100);
    let (findings, summary) = scrub(&ministry, "").await;

    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(
        (f["file"].as_str(), f["problem"]["kind"].as_str()),
        (Some("part-00001.parquet"), Some("content"))
    );
    assert_eq!(f["outcome"], serde_json::json!({"kind": "repaired", "from": "peer guangdong"}));
    assert!(f["quarantined"].as_str().is_some_and(|k| k.starts_with("quarantine/")), "{f}");
    assert_eq!((summary["damaged"].as_u64(), summary["repaired"].as_u64()), (Some(1), Some(1)));
    assert_eq!(summary["unrepairable"].as_u64(), Some(0));
    assert_eq!(hash_file(&victim), good, "the file is back as published");
    let aside = quarantined(&ministry);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_ne!(hash_file(&aside[0]), good, "the damaged copy is kept aside, not deleted");
    assert_eq!(ministry.metric("ferry_scrub_damaged_files_total").await, 1.0);
    assert_eq!(ministry.metric("ferry_scrub_repaired_files_total").await, 1.0);
    assert_eq!(ministry.metric("ferry_scrub_unrepairable_files_total").await, 0.0);
    assert!(ministry.metric("ferry_scrub_hashed_bytes_total").await > 0.0);

    let dest = tempfile::tempdir().unwrap();
    let report = pull(&analyst, &ministry, dest.path()).await.expect("the repaired version is served");
    assert_same_as_stored(&report.path, &ministry);
    // A second run finds nothing.
    let (findings, summary) = scrub(&ministry, "dataset=vehicle-registry&version=1").await;
    assert!(findings.is_empty() && summary["damaged"].as_u64() == Some(0), "{findings:?} {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_good_copy_the_file_stays_aside_and_is_never_served() {
    let pki = TestPki::new();
    let analyst = analyst(&pki);
    let ministry =
        TestNode::start(&pki, NodeSpec { extra: SMALL_FILES, ..NodeSpec::new("ministry", Role::Ministry) })
            .await;
    publish_vehicles(&ministry, DATASET, 30_000, 3).await;
    let victim = ministry.version_dir(DATASET, 1).join("part-00001.parquet");
    flip_byte(&victim, 100);

    let (findings, summary) = scrub(&ministry, "").await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["outcome"]["kind"], "unrepairable");
    assert!(findings[0]["outcome"]["reason"].as_str().unwrap().contains("no peer"), "{}", findings[0]);
    assert_eq!(summary["unrepairable"].as_u64(), Some(1));
    assert_eq!(ministry.metric("ferry_scrub_unrepairable_files_total").await, 1.0);
    assert!(!victim.exists(), "the damaged file is no longer where the node serves from");
    assert_eq!(quarantined(&ministry).len(), 1);

    // The version is not served with the bad bytes: the pull fails and commits nothing.
    let dest = tempfile::tempdir().unwrap();
    let err =
        pull(&analyst, &ministry, dest.path()).await.expect_err("a damaged version cannot be pulled whole");
    assert!(!dest.path().join(DATASET).join("v1").exists(), "nothing committed: {err}");

    // Each later run tries again and still reports it.
    let (findings, summary) = scrub(&ministry, "").await;
    assert_eq!(findings[0]["problem"]["kind"], "missing", "{findings:?}");
    assert_eq!(summary["unrepairable"].as_u64(), Some(1));
    assert_eq!(quarantined(&ministry).len(), 1, "nothing more is set aside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chunk_hash_file_is_rebuilt_from_its_part_file() {
    let pki = TestPki::new();
    let analyst = analyst(&pki);
    let ministry =
        TestNode::start(&pki, NodeSpec { extra: SMALL_FILES, ..NodeSpec::new("ministry", Role::Ministry) })
            .await;
    publish_vehicles(&ministry, DATASET, 30_000, 3).await;
    let hashes = ministry.version_dir(DATASET, 1).join(".ferry/chunk-hashes/1");
    let good = std::fs::read(&hashes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&hashes).unwrap();
    file.set_len(good.len() as u64 - 5).unwrap();
    drop(file);
    let dest = tempfile::tempdir().unwrap();
    pull(&analyst, &ministry, dest.path()).await.expect_err("the truncated page is refused");

    let (findings, summary) = scrub(&ministry, "rate=100MiB%2Fs").await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["file"], ".ferry/chunk-hashes/1");
    assert_eq!(findings[0]["problem"]["kind"], "size");
    assert_eq!(findings[0]["outcome"]["kind"], "repaired", "{}", findings[0]);
    assert_eq!(summary["repaired"].as_u64(), Some(1));
    assert_eq!(std::fs::read(&hashes).unwrap(), good, "rebuilt as written at publish");

    let dest = tempfile::tempdir().unwrap();
    let report = pull(&analyst, &ministry, dest.path()).await.expect("served again");
    assert_same_as_stored(&report.path, &ministry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_scrub_repairs_on_its_own() {
    let pki = TestPki::new();
    let analyst = analyst(&pki);
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr())];
    spec.extra = "[scrub]\ninterval = \"1s\"\nrate = \"200MiB/s\"\n";
    let province = TestNode::start(&pki, spec).await;
    publish_vehicles(&ministry, DATASET, 30_000, 3).await;
    replicate_v1(&province).await;

    let victim = province.version_dir(DATASET, 1).join("part-00000.parquet");
    let good = hash_file(&victim);
    flip_byte(&victim, 10);
    let mut repaired = 0.0;
    for _ in 0..100 {
        repaired = province.metric("ferry_scrub_repaired_files_total").await;
        if repaired >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(repaired >= 1.0, "the scheduled scrub repaired nothing in 20 s");
    assert!(province.metric("ferry_scrub_runs_total").await >= 1.0);
    assert_eq!(province.metric("ferry_scrub_unrepairable_files_total").await, 0.0);
    assert_eq!(hash_file(&victim), good);
    let dest = tempfile::tempdir().unwrap();
    let report = pull(&analyst, &province, dest.path()).await.expect("served again");
    assert_same_as_stored(&report.path, &province);
}
