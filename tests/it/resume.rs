//! Interrupted pulls resume from the journal: killing the puller (SIGKILL, a child process) and
//! draining the serving node in the middle of a multi-file pull.

use super::pull::{SMALL_FILES, read_manifest};
use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullEvent, PullObserver, PullOptions, PullRequest};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DatasetId, Role};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const CHILD_ENV: &str = "FERRY_TEST_PULL_CHILD";
const STREAMS: usize = 4;
const CHUNK: u64 = 64 * 1024;

/// Prints pull events as JSON lines, flushed, like `ferry pull --json`.
struct Lines;

impl PullObserver for Lines {
    fn event(&self, event: &PullEvent) {
        if let PullEvent::Chunk { verified_bytes, .. } = event {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{{\"event\":\"progress\",\"verified_bytes\":{verified_bytes}}}");
            let _ = out.flush();
        }
    }
}

/// Not a test of its own: the body of the child process the kill test starts (it re-runs this
/// test binary with `CHILD_ENV` set). Without that variable it returns at once.
#[test]
#[ignore = "the child process of killed_puller_resumes_and_refetches_at_most_a_chunk_per_stream"]
fn pull_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let s = |k: &str| spec[k].as_str().unwrap().to_owned();
    let paths = TlsPaths { ca: s("ca").into(), cert: s("cert").into(), key: s("key").into(), crl: None };
    let node: NodeAddr = s("node").parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let creds = Credentials::load(&paths).unwrap();
        let connector = Connector::new(&creds, node).unwrap();
        let opts =
            PullOptions { streams: STREAMS, rate_limit: spec["rate"].as_u64(), ..PullOptions::default() };
        let (_tx, cancel) = tokio::sync::watch::channel(false);
        let request = PullRequest { dataset: DatasetId::new(s("dataset")).unwrap(), version: None };
        let report = transfer::pull(
            &connector,
            &creds,
            &request,
            std::path::Path::new(&s("dest")),
            &opts,
            Arc::new(Lines),
            cancel,
        )
        .await
        .unwrap();
        println!(
            "{{\"event\":\"done\",\"fetched_bytes\":{},\"resumed_bytes\":{},\"total_bytes\":{}}}",
            report.fetched_bytes, report.resumed_bytes, report.total_bytes
        );
    });
}

fn spawn_child(spec: &serde_json::Value) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["resume::pull_child_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn field(line: &str, key: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v[key].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_puller_resumes_and_refetches_at_most_a_chunk_per_stream() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    publish_vehicles(&ministry, "vehicle-registry", 60_000, 11).await;
    let manifest = read_manifest(&ministry.version_dir("vehicle-registry", 1));
    let total = manifest.total_bytes();
    assert!(manifest.files.len() >= 6);

    let user = pki.issue("gd-analyst", "guangdong", Role::Operator);
    let dest = tempfile::tempdir().unwrap();
    let mut child_spec = serde_json::json!({
        "ca": user.ca, "cert": user.cert, "key": user.key,
        "node": ministry.node_addr().to_string(), "dataset": "vehicle-registry",
        "dest": dest.path(), "rate": total / 3, // about three seconds
    });

    // Kill at a random point after a fifth of the bytes are verified.
    let mut child = spawn_child(&child_spec);
    let stdout = child.stdout.take().unwrap();
    let extra_ms = u64::from(std::process::id() % 400);
    let verified_at_kill = tokio::task::spawn_blocking(move || {
        let mut verified = 0;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(v) = field(&line, "verified_bytes") {
                verified = v;
                if verified > total / 5 {
                    break;
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(extra_ms);
        while std::time::Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => verified = field(&line, "verified_bytes").unwrap_or(verified),
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Lines already written before the kill are still in the pipe.
        for line in lines.map_while(Result::ok) {
            verified = field(&line, "verified_bytes").unwrap_or(verified);
        }
        child.wait().unwrap();
        verified
    })
    .await
    .unwrap();
    assert!(
        verified_at_kill > 0 && verified_at_kill < total,
        "killed mid-way: {verified_at_kill} of {total}"
    );
    assert!(!dest.path().join("vehicle-registry").exists(), "nothing committed by the killed run");

    // Restart without a rate limit; it must finish, fetching only what was not verified.
    child_spec["rate"] = serde_json::Value::Null;
    let child = spawn_child(&child_spec);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let done = text.lines().find(|l| l.contains("\"done\"")).expect("done line");
    let fetched = field(done, "fetched_bytes").unwrap();
    let resumed = field(done, "resumed_bytes").unwrap();
    assert_eq!(fetched + resumed, total);
    assert!(resumed >= verified_at_kill, "everything reported verified was journaled");
    let bound = total - verified_at_kill + STREAMS as u64 * CHUNK;
    assert!(
        fetched <= bound,
        "re-fetched {fetched} > {bound} (verified at kill {verified_at_kill}, total {total})"
    );
    let dir = dest.path().join("vehicle-registry").join("v1");
    for f in &manifest.files {
        assert_eq!(hash_file(&dir.join(f.name.as_str())), f.blake3.0);
    }
}

/// Counts verified bytes as they happen.
#[derive(Default)]
struct Count(AtomicU64);

impl PullObserver for Count {
    fn event(&self, event: &PullEvent) {
        if let PullEvent::Chunk { verified_bytes, .. } = event {
            self.0.fetch_max(*verified_bytes, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_stops_at_a_chunk_boundary_and_the_pull_resumes_after_restart() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let mut ministry = TestNode::start(&pki, spec).await;
    publish_vehicles(&ministry, "vehicle-registry", 60_000, 5).await;
    let manifest = read_manifest(&ministry.version_dir("vehicle-registry", 1));
    let total = manifest.total_bytes();
    let addr = ministry.addr();

    let creds = Credentials::load(&pki.issue("gd-analyst", "guangdong", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let count = Arc::new(Count::default());
    let opts = PullOptions {
        streams: STREAMS,
        rate_limit: Some(total / 3),
        max_retries: 20,
        ..PullOptions::default()
    };
    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let connector = Connector::new(&creds, ministry.node_addr()).unwrap();
    let root = dest.path().to_owned();
    let observer = count.clone();
    let pull = tokio::spawn(async move {
        let (_tx, cancel) = tokio::sync::watch::channel(false);
        transfer::pull(&connector, &creds, &request, &root, &opts, observer, cancel).await
    });
    while count.0.load(Ordering::SeqCst) < total / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ministry.stop().await; // drains: answers end at a chunk boundary
    let verified_at_stop = count.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ministry.restart(addr).await;
    let report = pull.await.unwrap().expect("the pull finishes after the node is back");
    assert!(report.retries >= 1, "the puller reconnected");
    assert_eq!(report.fetched_bytes, total, "every byte verified exactly once in this run");
    let served_after_restart = ministry.metric("ferry_transfer_sent_bytes_total").await as u64;
    let bound = total - verified_at_stop + STREAMS as u64 * CHUNK;
    assert!(served_after_restart <= bound, "restarted node served {served_after_restart} > {bound}");
    for f in &manifest.files {
        assert_eq!(hash_file(&report.path.join(f.name.as_str())), f.blake3.0);
    }
}
