//! Faults, quick: a full disk under a pull (a real tmpfs, when this process may mount one), the
//! quick variants of the `ferry-bench reliability` sweeps (ignored: they start release binaries
//! and SIGKILL them; see `docs/RELIABILITY.md`), and the corpus replays of the fuzz targets
//! whose code is outside `ferry-proto` (the Parquet/CSV upload reader, the ControlCall JSON).

use super::pull::{SMALL_FILES, read_manifest};
use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullError, PullOptions, PullRequest, Quiet};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Role};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The body of the `parquet_upload` fuzz target (the file the target compiles).
#[path = "../../fuzz/fuzz_targets/bodies/upload.rs"]
mod upload_body;

/// The body of the `control_call` fuzz target.
#[path = "../../fuzz/fuzz_targets/bodies/control_call.rs"]
mod control_call_body;

/// A tmpfs of a given size, unmounted when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (and why, printed) when this process may not mount.
    pub(crate) fn mount(dir: &Path, bytes: u64) -> Option<Self> {
        Self::mount_with(dir, &format!("size={}", bytes.div_ceil(4096) * 4096))
    }

    /// A read-only tmpfs: nothing can be created under `dir`. `None` as for [`Tmpfs::mount`].
    pub(crate) fn mount_read_only(dir: &Path) -> Option<Self> {
        Self::mount_with(dir, "ro,size=1m")
    }

    fn mount_with(dir: &Path, options: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir).output();
        match out {
            Ok(out) if out.status.success() => Some(Self(dir.to_owned())),
            Ok(out) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    pub(crate) fn resize(&self, bytes: u64) {
        let size = format!("remount,size={}", bytes.div_ceil(4096) * 4096);
        let status = Command::new("mount").args(["-o", &size]).arg(&self.0).status().unwrap();
        assert!(status.success(), "remounting the tmpfs larger");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_destination_fails_typed_shows_nothing_and_the_pull_resumes_once_space_is_back() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    publish_vehicles(&ministry, "vehicle-registry", 60_000, 17).await;
    let manifest = read_manifest(&ministry.version_dir("vehicle-registry", 1));
    let total = manifest.total_bytes();
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    let Some(tmpfs) = Tmpfs::mount(&dest, total / 2) else { return };

    let creds = Credentials::load(&pki.issue("gd-analyst", "guangdong", Role::Operator)).unwrap();
    let connector = Connector::new(&creds, ministry.node_addr()).unwrap();
    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let opts = PullOptions::default();
    let pull = || async {
        let (_tx, cancel) = tokio::sync::watch::channel(false);
        transfer::pull(&connector, &creds, &request, &dest, &opts, Arc::new(Quiet), cancel).await
    };
    match pull().await {
        Err(PullError::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC, as a typed I/O error: {source}")
        }
        other => panic!("a pull into half the space it needs gave {other:?}"),
    }
    assert!(!dest.join("vehicle-registry").exists(), "nothing of the version is visible");

    tmpfs.resize(2 * total + (8 << 20));
    let report = pull().await.expect("the pull completes once there is space");
    assert!(report.resumed_bytes > 0, "it resumed what the first run verified");
    assert_eq!(report.resumed_bytes + report.fetched_bytes, total);
    for f in &manifest.files {
        assert_eq!(hash_file(&report.path.join(f.name.as_str())), f.blake3.0, "{}", f.name);
    }
    drop(tmpfs);
}

/// Runs `ferry-bench reliability <sweep> --quick` (release build) and checks its summary lines.
fn quick_sweep(sweep: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(cargo)
        .current_dir(&root)
        .args(["run", "-q", "--release", "-p", "ferry-benches", "--bin", "ferry-bench", "--"])
        .args(["reliability", sweep, "--quick"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running ferry-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    let summaries: Vec<&str> = stdout.lines().filter(|l| l.starts_with("reliability scenario=")).collect();
    assert!(!summaries.is_empty(), "no summary line");
    for line in summaries {
        assert!(line.contains(" failed=0 ") && line.contains(" bytes_lost=0 "), "{line}");
    }
    assert!(output.status.success(), "ferry-bench reliability {sweep} --quick: {}", output.status);
}

#[test]
#[ignore = "starts release binaries and SIGKILLs them (about 2 minutes, needs root for the link emulator)"]
fn quick_kill_server() {
    quick_sweep("kill-server");
}

#[test]
#[ignore = "starts release binaries and SIGKILLs them (about 2 minutes, needs root for the link emulator)"]
fn quick_kill_receiver() {
    quick_sweep("kill-receiver");
}

#[test]
#[ignore = "cuts an emulated WAN link twice, once for over 30 s (needs root for the link emulator)"]
fn quick_partition() {
    quick_sweep("partition");
}

#[test]
#[ignore = "starts release binaries on tmpfs mounts (needs root)"]
fn quick_enospc() {
    quick_sweep("enospc");
}

/// The files of `fuzz/corpus/<target>`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn parquet_upload_corpus_runs_through_its_fuzz_body() {
    let corpus = corpus("parquet_upload");
    assert!(corpus.len() >= 10, "only {} seeds", corpus.len());
    for (name, data) in &corpus {
        let result = std::panic::catch_unwind(|| upload_body::upload(data));
        assert!(result.is_ok(), "parquet_upload seed {name} panicked");
    }
}

#[test]
fn control_call_corpus_runs_through_its_fuzz_body() {
    use ferry_control::api::ControlRequest;
    let corpus = corpus("control_call");
    assert!(corpus.len() >= 10, "only {} seeds", corpus.len());
    for (name, data) in &corpus {
        let result = std::panic::catch_unwind(|| control_call_body::control_call(data));
        assert!(result.is_ok(), "control_call seed {name} panicked");
        let text = String::from_utf8_lossy(data);
        if name.starts_with("request-") {
            assert!(ControlRequest::parse(&text).is_ok(), "{name} is a valid request");
        } else if name.starts_with("bad-") {
            assert!(ControlRequest::parse(&text).is_err(), "{name} is refused");
        }
    }
}

/// Found by the `parquet_upload` fuzz target (`fuzz/regressions/parquet_upload/`, kept out of
/// the corpus until fixed): Parquet uploads whose footer or embedded Arrow schema has a changed
/// byte make parquet 57.3.2 / arrow-ipc 57.3.2 panic inside `write_sorted_parquet` (the node
/// answers an internal error naming a panicked task), and a CSV upload with invalid UTF-8 is
/// accepted and written as Parquet that does not read back (consumers could not read the
/// version). With arrow/parquet 60.2 and the UTF-8 check of CSV text columns every one is refused
/// with a typed error, so this runs in every `cargo test`.
#[test]
fn uploads_found_by_fuzzing_are_refused_not_a_panic_nor_unreadable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/parquet_upload");
    let mut failed = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| upload_body::upload(&data)).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    failed.sort();
    assert!(failed.is_empty(), "the upload reader panicked or wrote unreadable files on {failed:?}");
}
