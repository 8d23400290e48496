//! Durability of a committed version (issue 18, "Durability"): a node process runs under
//! `strace`, publishes or replicates a version, and the recorded `fsync`/`rename` sequence shows
//! that every stored file's data, then the directory entries naming them, then the manifest were
//! on disk before the node acknowledged; and a damaged head table does not poison the next delta.
//!
//! Without `strace` the order tests print why and return (they cannot run); with
//! `FERRY_REQUIRE_STRACE=1` (set by CI) a missing `strace` fails them instead.

use super::pull::{SMALL_FILES, read_manifest};
use ferry_client::publish::publish_file;
use ferry_net::conn::NodeAddr;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DatasetId, Message, Role, SourceFormat, VersionKind, VersionNo};
use ferry_tables::synth;
use ferry_testkit::{NodeSpec, TestNode, TestPki, connect, hash_file, publish_vehicle_batches};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const DATASET: &str = "vehicle-registry";

/// The syscalls the order is read from.
const TRACED: &str = "trace=fsync,fdatasync,rename,renameat,renameat2,openat,linkat,mkdir,mkdirat";

/// `strace`, or `None` after saying why the test cannot run (a failure under
/// `FERRY_REQUIRE_STRACE=1`).
fn strace() -> Option<PathBuf> {
    let found = ["/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        let reason = "strace is not installed: the commit order of a version cannot be recorded";
        assert!(std::env::var_os("FERRY_REQUIRE_STRACE").is_none(), "{reason}");
        eprintln!("SKIPPED: {reason}");
    }
    found
}

/// Where the node process finds its config (see [`durability_traced_node_process`]).
const NODE_CONFIG_ENV: &str = "FERRY_TRACED_NODE_CONFIG";

/// Not a test of its own: the node process the order tests start under `strace`. It runs a
/// node as `ferryd` does (the same `Config::load` and `node::start`; `ferryd`'s `main` adds only
/// flag parsing and logging), prints where it listens and drains on SIGTERM. This test binary
/// is the code under test, so no separately built `ferryd` can be stale.
#[test]
#[ignore = "started as a child process by the durability tests"]
fn durability_traced_node_process() {
    let Some(config) = std::env::var_os(NODE_CONFIG_ENV) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let config = ferry_daemon::config::Config::load(Path::new(&config)).expect("config loads");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let node = ferry_daemon::node::start(config).await.expect("node starts");
        println!("listening quic={}", node.addr);
        term.recv().await;
        node.shutdown().await;
    });
}

/// A node process started by `strace -f`, recording into `trace`.
struct TracedNode {
    name: String,
    dir: PathBuf,
    strace: Child,
    addr: std::net::SocketAddr,
    trace: PathBuf,
    operator: TlsPaths,
}

impl TracedNode {
    /// Writes a config under `dir` for a node `name` of department `name`, and starts it.
    fn start(strace: &Path, pki: &TestPki, dir: &Path, name: &str, role: Role, extra: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let tls = pki.issue(name, name, role);
        let operator = pki.issue(&format!("{name}-ops"), name, Role::Operator);
        let config = format!(
            "node-name = \"{name}\"\nlisten = \"127.0.0.1:0\"\nstate-dir = {:?}\n\n[storage]\nlocal = {:?}\n\n\
             [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n{extra}\n",
            dir.join("state"),
            dir.join("data"),
            tls.ca,
            tls.cert,
            tls.key,
            pki.crl(),
        );
        let config_path = dir.join("ferryd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let trace = dir.join("strace.txt");
        let log = std::fs::File::create(dir.join("ferryd.log")).expect("log file");
        let mut child = Command::new(strace)
            .args(["-f", "-ttt", "-T", "-y", "-s", "4096", "--seccomp-bpf", "-e", TRACED, "-o"])
            .arg(&trace)
            .arg(std::env::current_exe().expect("the test executable"))
            .args(["durability::durability_traced_node_process", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1"])
            .env(NODE_CONFIG_ENV, &config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("strace starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The test harness prints its own output around the node's (the test's name just
            // before it, on the same line); all is read to the end.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening quic=") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("quic=")).and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("ferryd.log")).unwrap_or_default();
            let trace = std::fs::read_to_string(&trace).unwrap_or_default();
            let tail: Vec<&str> = trace.lines().rev().take(15).collect();
            panic!(
                "the node did not start under strace: {log}\ntrace, last lines first:\n{}",
                tail.join("\n")
            );
        };
        Self { name: name.to_owned(), dir, strace: child, addr, trace, operator }
    }

    fn node_addr(&self) -> NodeAddr {
        NodeAddr { addr: self.addr, server_name: self.name.clone() }
    }

    fn store_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn version_dir(&self, version: u64) -> PathBuf {
        self.store_root().join("datasets").join(DATASET).join(format!("v{version}"))
    }

    /// The traced node's pid: the first pid of the trace.
    fn node_pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.trace).ok()?;
        text.split_whitespace().next().map(str::to_owned)
    }

    /// Stops the node (SIGTERM, SIGKILL if it lingers), waits for `strace` to write the whole
    /// trace, and parses it.
    fn stop(mut self) -> Trace {
        for signal in ["-TERM", "-KILL"] {
            if self.strace.try_wait().ok().flatten().is_some() {
                break;
            }
            if let Some(pid) = self.node_pid() {
                let _ = Command::new("kill").args([signal, &pid]).stderr(Stdio::null()).status();
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.strace.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(self.strace.try_wait().ok().flatten().is_some(), "strace did not finish");
        let text = std::fs::read_to_string(&self.trace).expect("trace");
        Trace::parse(&text)
    }
}

impl Drop for TracedNode {
    fn drop(&mut self) {
        if self.strace.try_wait().ok().flatten().is_none() {
            if let Some(pid) = self.node_pid() {
                let _ = Command::new("kill").args(["-KILL", &pid]).stderr(Stdio::null()).status();
            }
            let _ = self.strace.kill();
            let _ = self.strace.wait();
        }
    }
}

/// What one completed syscall did, with when it started and ended (seconds since the epoch).
#[derive(Debug, Clone)]
enum Call {
    /// `fsync` or `fdatasync` of the file or directory at this path.
    Sync(PathBuf),
    /// A new name: `rename`/`linkat` (from, to) or `mkdir` (to only).
    Name { from: Option<PathBuf>, to: PathBuf },
}

#[derive(Debug, Clone)]
struct Event {
    call: Call,
    start: f64,
    end: f64,
}

/// The successful calls of a trace, in the order they completed.
#[derive(Debug, Default)]
struct Trace {
    events: Vec<Event>,
}

impl Trace {
    fn parse(text: &str) -> Self {
        // Calls interrupted by another thread's: `<unfinished ...>`, then `<... x resumed>`.
        let mut pending: HashMap<&str, (f64, String)> = HashMap::new();
        let mut events = Vec::new();
        for line in text.lines() {
            // `<tid> <seconds> <call>`; strace pads short tids with spaces.
            let Some((tid, rest)) = line.trim_start().split_once(' ') else { continue };
            let Some((ts, rest)) = rest.trim_start().split_once(' ') else { continue };
            let Ok(ts) = ts.parse::<f64>() else { continue };
            if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
                pending.insert(tid, (ts, head.to_owned()));
                continue;
            }
            let (start, whole, end_at_ts) = match rest.strip_prefix("<... ") {
                Some(resumed) => {
                    let Some((start, head)) = pending.remove(tid) else { continue };
                    let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
                    (start, format!("{head}{tail}"), true)
                }
                None => (ts, rest.to_owned(), false),
            };
            let Some((call, outcome)) = whole.rsplit_once(" = ") else { continue };
            let mut outcome = outcome.split_whitespace();
            if outcome.next() != Some("0") && !call.starts_with("openat") {
                continue;
            }
            let took = outcome
                .next()
                .and_then(|d| d.strip_prefix('<')?.strip_suffix('>')?.parse::<f64>().ok())
                .unwrap_or(0.0);
            let end = if end_at_ts { ts } else { ts + took };
            if let Some(call) = Self::call(call.trim_end()) {
                events.push(Event { call, start, end });
            }
        }
        Self { events }
    }

    /// The call of `name(args)`, if it is one the order is read from.
    fn call(text: &str) -> Option<Call> {
        let (name, args) = text.split_once('(')?;
        let quoted: Vec<PathBuf> = args.split('"').skip(1).step_by(2).map(PathBuf::from).collect();
        match name {
            "fsync" | "fdatasync" => {
                let path = args.split_once('<')?.1.rsplit_once('>')?.0;
                Some(Call::Sync(PathBuf::from(path)))
            }
            "rename" | "renameat" | "renameat2" | "linkat" if quoted.len() >= 2 => {
                Some(Call::Name { from: Some(quoted[0].clone()), to: quoted[1].clone() })
            }
            "mkdir" | "mkdirat" => Some(Call::Name { from: None, to: quoted.first()?.clone() }),
            _ => None,
        }
    }

    /// Syncs of `path`, or of any name it had before a rename to it.
    fn syncs_of<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a Event> + 'a {
        let mut names = BTreeSet::from([path.to_path_buf()]);
        for e in self.events.iter().rev() {
            if let Call::Name { from: Some(from), to } = &e.call
                && names.contains(to)
            {
                names.insert(from.clone());
            }
        }
        self.events.iter().filter(move |e| matches!(&e.call, Call::Sync(p) if names.contains(p)))
    }

    /// The last rename of anything to `to`.
    fn last_rename_to(&self, to: &Path) -> Option<&Event> {
        self.events.iter().rev().find(|e| matches!(&e.call, Call::Name { from: Some(_), to: t } if t == to))
    }

    /// When the last name created in `dir` (renamed, linked or made there) appeared, before `by`.
    fn last_entry_in(&self, dir: &Path, by: f64) -> f64 {
        self.events
            .iter()
            .filter(|e| e.end <= by && matches!(&e.call, Call::Name { to, .. } if to.parent() == Some(dir)))
            .map(|e| e.end)
            .fold(0.0, f64::max)
    }
}

/// Every way the trace of committing `version_dir` breaks the order "files' data, their
/// directory entries, the manifest (staged, synced, renamed, its directory synced), then the
/// acknowledgement at `acked_at`".
fn commit_order_faults(trace: &Trace, store_root: &Path, version_dir: &Path, acked_at: f64) -> Vec<String> {
    let manifest = version_dir.join("manifest.signed");
    let Some(commit) = trace.last_rename_to(&manifest) else {
        return vec![format!("no rename to {} in the trace", manifest.display())];
    };
    let mut faults = Vec::new();
    let mut dirs = BTreeSet::new();
    for file in files_under(version_dir) {
        if file == manifest {
            continue;
        }
        if !trace.syncs_of(&file).any(|s| s.end <= commit.start) {
            faults.push(format!("{} is not fsynced before the manifest's rename", file.display()));
        }
        let mut dir = file.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(store_root)) {
            dirs.insert(d.to_path_buf());
            dir = d.parent();
        }
    }
    if let Call::Name { from: Some(staged), .. } = &commit.call
        && !trace.syncs_of(staged).any(|s| s.end <= commit.start)
    {
        faults.push(format!(
            "the manifest's staged file {} is not fsynced before its rename",
            staged.display()
        ));
    }
    for dir in &dirs {
        let after = trace.last_entry_in(dir, commit.start);
        if !trace.syncs_of(dir).any(|s| s.start >= after && s.end <= commit.start) {
            faults.push(format!(
                "directory {} is not fsynced between its last new entry and the manifest",
                dir.display()
            ));
        }
    }
    match trace.syncs_of(version_dir).find(|s| s.start >= commit.end) {
        None => faults.push("the manifest's directory is not fsynced after its rename".into()),
        Some(s) if s.end > acked_at => faults.push(format!(
            "the manifest's directory fsync ended {:.6}s after the acknowledgement arrived",
            s.end - acked_at
        )),
        Some(_) => {}
    }
    if commit.end > acked_at {
        faults.push("the manifest was renamed into place after the acknowledgement arrived".into());
    }
    faults
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read version dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

fn dataset() -> DatasetId {
    DatasetId::new(DATASET).expect("dataset id")
}

/// A publish is acknowledged only after its files, their directories and then its manifest are
/// on disk. Fails while the store's puts, copies and renames are not fsynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_publish_syncs_files_then_directories_then_manifest_before_acknowledging() {
    let Some(strace) = strace() else { return };
    let pki = TestPki::new();
    let root = tempfile::tempdir().expect("temp dir");
    let node = TracedNode::start(&strace, &pki, root.path(), "ministry", Role::Ministry, SMALL_FILES);

    let (export, definition) = ferry_testkit::vehicle_export(root.path(), DATASET, "ministry", 25_000, 9);
    let session = connect(&node.operator, node.node_addr()).await;
    let published =
        publish_file(&session, &export, definition, SourceFormat::Parquet).await.expect("publish");
    let acked_at = now();
    session.close();
    assert_eq!(published.version, VersionNo::FIRST);

    let (store_root, version_dir) = (node.store_root(), node.version_dir(1));
    let trace = node.stop();
    assert!(files_under(&version_dir).len() >= 5, "several part and chunk-hash files");
    let faults = commit_order_faults(&trace, &store_root, &version_dir, acked_at);
    assert!(faults.is_empty(), "the publish's commit order is broken:\n  {}", faults.join("\n  "));
}

/// The same order when a node imports a version it pulled from a peer (the files are moved,
/// not copied, into its store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_replication_syncs_files_then_directories_then_manifest_before_acknowledging() {
    let Some(strace) = strace() else { return };
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    ferry_testkit::publish_vehicles(&ministry, DATASET, 25_000, 5).await;

    let root = tempfile::tempdir().expect("temp dir");
    let peers = format!("\n[peers.ministry]\naddress = \"{}\"\n", ministry.addr());
    let province = TracedNode::start(&strace, &pki, root.path(), "guangdong", Role::Province, &peers);
    let session = connect(&province.operator, province.node_addr()).await;
    let answer = session
        .request(&Message::Replicate { peer: "ministry".into(), dataset: dataset(), version: None })
        .await
        .expect("replicate");
    let acked_at = now();
    session.close();
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");

    let (store_root, version_dir) = (province.store_root(), province.version_dir(1));
    let trace = province.stop();
    let faults = commit_order_faults(&trace, &store_root, &version_dir, acked_at);
    assert!(faults.is_empty(), "the import's commit order is broken:\n  {}", faults.join("\n  "));
}

/// The head keeps its table's row prints: a dataset's second publish diffs by value and leaves
/// prints, the next ones diff by them (reading the head's key columns only); prints with a
/// flipped bit are refused and that publish diffs by value again. Every delta is the true
/// change, and a consumer applying it gets the publisher's table byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_the_heads_row_prints_are_used_only_when_whole() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).expect("creds");
    let dest = tempfile::tempdir().expect("temp dir");
    let mut day: Vec<_> = synth::vehicle_registry(37, 20_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day.clone()).await;
    ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), Some(VersionNo::FIRST)).await;
    let heads = ministry.config.state_dir.join("heads").join(DATASET);
    let prints_of = |v: u64| heads.join(format!("v{v}")).join("rows.prints");
    assert!(!prints_of(1).exists(), "a dataset's first publish diffs nothing and keeps no prints");
    // (version, flip a bit of the head's prints first, diffs by prints and by values after it)
    for (v, damage, by_prints, by_values) in
        [(2, false, 0.0, 1.0), (3, false, 1.0, 1.0), (4, true, 1.0, 2.0), (5, false, 2.0, 2.0)]
    {
        if damage {
            let path = prints_of(v - 1);
            let mut bytes = std::fs::read(&path).expect("read prints");
            bytes[100] ^= 0x01;
            std::fs::write(&path, &bytes).expect("write prints");
        }
        let edits = synth::edit_vehicle_registry(&day, 40 + v, 0.02).expect("edits");
        let published = publish_vehicle_batches(&ministry, DATASET, edits.batches.clone()).await;
        assert_eq!(published.version, VersionNo::new(v).unwrap());
        let m = read_manifest(&ministry.version_dir(DATASET, v));
        let counts = m.delta.expect("delta counts");
        assert_eq!(
            (counts.updated, counts.inserted, counts.deleted),
            (edits.updated as u64, edits.inserted as u64, edits.deleted as u64),
            "v{v}: the delta is the true change"
        );
        assert!(prints_of(v).is_file(), "v{v}: the new head keeps its prints");
        let update = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), None).await;
        assert_eq!(update.steps, vec![format!("delta v{v}")]);
        for f in &m.table {
            assert_eq!(hash_file(&update.path.join(f.name.as_str())), f.blake3.0, "v{v}: {}", f.name);
        }
        let diffs = |by: &str| format!("ferry_publish_diffs_total{{by=\"{by}\"}}");
        assert_eq!(ministry.metric(&diffs("prints")).await, by_prints, "v{v}: diffs by prints");
        assert_eq!(ministry.metric(&diffs("values")).await, by_values, "v{v}: diffs by value");
        day = edits.batches;
    }
}

/// A bit flipped in the provider's head table is found by its hash before the next publish
/// diffs against it: the head is rebuilt from the store, and the delta published is the true
/// change (a consumer applying it gets the publisher's table byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_a_flipped_bit_in_the_head_table_does_not_poison_the_next_delta() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    let day1: Vec<_> = synth::vehicle_registry(31, 20_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1.clone()).await;

    // One bit of the stored head, in the middle of its first file.
    let head_dir = ministry.config.state_dir.join("heads").join(DATASET).join("v1");
    let mut heads: Vec<PathBuf> = files_under(&head_dir);
    heads.sort();
    let victim = heads.first().expect("a head file");
    // The stored table (v1 is a snapshot, in a local directory) and the head are files of their
    // own: the store took the writer's files, the head a copy. No link joins them, so damage to
    // one leaves the other whole.
    let stored = ministry.version_dir(DATASET, 1).join(victim.file_name().expect("name"));
    let (head_meta, stored_meta) =
        (std::fs::metadata(victim).expect("head"), std::fs::metadata(&stored).expect("stored"));
    use std::os::unix::fs::MetadataExt;
    assert_ne!(head_meta.ino(), stored_meta.ino());
    assert_eq!((head_meta.nlink(), stored_meta.nlink()), (1, 1));
    assert_eq!(hash_file(victim), hash_file(&stored));
    let mut bytes = std::fs::read(victim).expect("read head");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(victim, &bytes).expect("write head");

    let edits = synth::edit_vehicle_registry(&day1, 32, 0.02).expect("edits");
    let second = publish_vehicle_batches(&ministry, DATASET, edits.batches.clone()).await;
    assert_eq!(second.version, VersionNo::new(2).unwrap());
    let m2 = read_manifest(&ministry.version_dir(DATASET, 2));
    assert_eq!(m2.kind, VersionKind::Delta);
    let counts = m2.delta.expect("delta counts");
    assert_eq!(
        (counts.updated, counts.inserted, counts.deleted),
        (edits.updated as u64, edits.inserted as u64, edits.deleted as u64),
        "the delta is the true change"
    );

    // A consumer holding v1 applies the delta and gets the publisher's table.
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).expect("creds");
    let dest = tempfile::tempdir().expect("temp dir");
    ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), Some(VersionNo::FIRST)).await;
    let update = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), None).await;
    assert_eq!(update.steps, vec!["delta v2"]);
    for f in &m2.table {
        assert_eq!(hash_file(&update.path.join(f.name.as_str())), f.blake3.0, "{}", f.name);
    }
    let rebuilt = ministry.metric("ferry_publish_head_rebuilds_total{reason=\"corrupt\"}").await;
    assert_eq!(rebuilt, 1.0, "the damaged head is counted");
}
