//! Scenario `transfer`: how fast a consumer gets a whole dataset version from a node, against the
//! tools a ministry engineer would use to copy the same files.
//!
//! Setup (not measured): an export of `--size-mib` rows, each an `id int64` key and a 1 MiB
//! `payload binary` of random bytes (incompressible), is published as ONE version on an
//! in-process ministry node whose `[transfer] rows-per-file` splits it into `--files` Parquet
//! files. The node's stored files are the peers' source (hard-linked into a scratch directory).
//! Each run then measures, interleaved (ferry, peers, ferry, peers, …), into empty directories:
//! - ferry: a consumer `transfer::sync`s the version over QUIC + mTLS on loopback (default
//!   options, BLAKE3 verification on);
//! - curl `--http1.1` from nginx over HTTPS (TLS 1.3), one curl for all files;
//! - rsync over ssh (`aes128-gcm@openssh.com`, no compression), new files;
//! - scp (sftp mode) over the same sshd;
//! - plain TCP with socat (128 KiB blocks), one connection per file (the floor of cost).
//!
//! Every output is checked (size and BLAKE3 of every file). MB/s is table bytes (10^6) per second
//! of wall time, to disk: ferry's pull syncs every file before its atomic commit, so a peer's
//! time runs until its output is synced too (each file `fsync`ed, then the directory, right after
//! the peer exits; `<peer>_exit_mb_s` gives the rate until the exit alone, with the output
//! possibly still in the page cache). CPU seconds per GB count both ends: for ferry the process's
//! own CPU time (node and consumer are both in it), for peers the clients' (waited-for children)
//! plus the server's (nginx, sshd and its finished sessions), from `/proc`.
//!
//! Neighbours: [`crate::servers`] starts nginx and sshd (killed on drop), [`crate::report`]
//! prints the table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{BinaryArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Args;
use ferry_client::conn::Connector;
use ferry_client::publish::publish_file;
use ferry_net::conn::NodeAddr;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{Role, SourceFormat};
use ferry_tables::synth;

use crate::fleet::{
    Binaries, Launcher, NodeOptions, NodeProc, Pki, ScratchArgs, VersionFiles, ferry_command, run_measured,
};
use crate::report::{Report, Unit, nproc, progress, show};
use crate::servers::{self, PeerServers, Placement};

/// Options of `ferry-bench transfer`.
#[derive(Debug, Clone, Args)]
pub struct TransferArgs {
    /// Total size of the dataset version (1 MiB per row).
    #[arg(long, default_value_t = 2048)]
    pub size_mib: usize,
    /// Files the version is split into (the node's `rows-per-file`).
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Runs of every contender (interleaved: ferry, peers, ferry, peers, …).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Run only these peers (comma-separated keys: curl, rsync, scp, tcp; `none` for ferry alone).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Extra arguments for every `ferry pull` (e.g. `--ferry-pull-arg=--streams=8`), to diagnose
    /// what limits it; the scenario's figures are for ferry's defaults, and the notes say when
    /// this was used.
    #[arg(long, allow_hyphen_values = true)]
    pub ferry_pull_arg: Vec<String>,
}

pub(crate) const DATASET: &str = "transfer-bench";
pub(crate) const PROVIDER: &str = "ministry";
pub(crate) const ROW_BYTES: usize = 1 << 20;
const BATCH_ROWS: usize = 16;

/// The peer contenders, in run order: key, what it is.
const PEERS: [(&str, &str); 4] = [
    ("curl", "curl --http1.1 from nginx over HTTPS (TLS 1.3)"),
    ("rsync", "rsync -r -e ssh (aes128-gcm@openssh.com), new files"),
    ("scp", "scp (sftp mode, aes128-gcm@openssh.com)"),
    ("tcp", "socat -b 131072 plain TCP, one connection per file"),
];

pub(crate) fn definition() -> String {
    format!(
        "id = \"{DATASET}\"\nname = \"transfer benchmark\"\nprovider = \"{PROVIDER}\"\n\
         description = \"1 MiB random payload per row\"\ndefinition-version = 1\n\
         share-type = \"unconditional\"\nupdate-cycle = \"daily\"\nsecurity-level = \"internal\"\n\
         source-system = \"ferry-bench\"\n\n\
         [[columns]]\nname = \"id\"\ntype = \"int64\"\nkey = true\nnullable = false\ndescription = \"row\"\n\n\
         [[columns]]\nname = \"payload\"\ntype = \"binary\"\nkey = false\nnullable = false\n\
         description = \"random bytes\"\n"
    )
}

/// Writes `rows` rows of 1 MiB random payload (BLAKE3 XOF of the seed) as a zstd Parquet export.
/// `rows` rows of 1 MiB random payload (BLAKE3 XOF of `seed`) with ascending `id`, in batches of
/// `BATCH_ROWS`, under `schema` (`id int64`, `payload binary`).
pub(crate) fn payload_batches(
    schema: Arc<Schema>,
    rows: usize,
    seed: u64,
) -> impl Iterator<Item = RecordBatch> + Send + 'static {
    let mut xof = blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
    (0..rows.div_ceil(BATCH_ROWS)).map(move |batch| {
        let start = batch * BATCH_ROWS;
        let count = BATCH_ROWS.min(rows - start);
        let mut payloads = vec![vec![0u8; ROW_BYTES]; count];
        for payload in &mut payloads {
            xof.fill(payload);
        }
        let ids = Int64Array::from_iter_values((start..start + count).map(|i| i as i64));
        let payloads = BinaryArray::from_iter_values(payloads.iter());
        RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(payloads)])
            .expect("columns match the schema")
    })
}

/// Writes the export of `rows` rows into `dir/export.parquet`, saying how long it took.
pub(crate) fn generate_export(dir: &Path, rows: usize, seed: u64) -> Result<PathBuf> {
    let export = dir.join("export.parquet");
    let started = Instant::now();
    write_export(&export, rows, seed)?;
    progress(&format!(
        "generated the export ({rows} rows of 1 MiB) in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(export)
}

pub(crate) fn write_export(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("payload", DataType::Binary, false),
    ]));
    let batches = payload_batches(schema.clone(), rows, seed);
    synth::write_parquet(path, schema, batches)?;
    Ok(())
}

/// The node holding the version, the consumer's credentials, and the version's files.
struct Fixture {
    scratch: tempfile::TempDir,
    bins: Binaries,
    _pki: Pki,
    node: NodeProc,
    consumer: TlsPaths,
    /// Hard links to the node's stored files: what the peers serve.
    peer_root: PathBuf,
    version: VersionFiles,
}

impl Fixture {
    fn prepare(args: &TransferArgs) -> Result<Self> {
        let root = args.scratch.root()?;
        let scratch = tempfile::Builder::new().prefix("ferry-bench-transfer-").tempdir_in(&root)?;
        let rows = args.size_mib;
        let rows_per_file = rows.div_ceil(args.files);
        let export = generate_export(scratch.path(), rows, args.scratch.seed)?;
        let bins = Binaries::build()?;
        let pki = Pki::new();
        let started = Instant::now();
        let opts = NodeOptions::loopback_ministry(rows_per_file);
        let node = NodeProc::start(&bins, &pki, scratch.path(), &opts)?;
        publish(&node, &export)?;
        let consumer = pki.issue("bench-consumer", "zhejiang", Role::Operator);
        std::fs::remove_file(&export)?;
        let peer_root = scratch.path().join("peer-root");
        let version = VersionFiles::link(&node.version_dir(DATASET, 1), &peer_root)?;
        progress(&format!(
            "node started, version published in {:.1} s: {} files, {} bytes",
            started.elapsed().as_secs_f64(),
            version.files.len(),
            version.bytes
        ));
        Ok(Self { scratch, bins, _pki: pki, node, consumer, peer_root, version })
    }

    /// A fresh empty directory for one contender's run.
    fn dest(&self, name: &str) -> Result<PathBuf> {
        crate::fleet::fresh_dir(self.scratch.path(), name)
    }

    /// Fails unless `dir` holds exactly the version's files (size and BLAKE3).
    fn check(&self, dir: &Path, who: &str) -> Result<()> {
        self.version.check_copy(dir, who)
    }

    /// One `ferry pull` into an empty directory: wall seconds, CPU seconds of the puller and of
    /// the node.
    fn ferry(&self, run: usize, extra: &[String]) -> Result<Sides> {
        let dest = self.dest(&format!("ferry-{run}"))?;
        let log = self.scratch.path().join(format!("ferry-pull-{run}.log"));
        let node = self.node.node_arg();
        let mut command = ferry_command(&self.bins, &Launcher::direct(), "pull", &self.consumer, &node);
        command.args([DATASET, "--version", "1", "--json", "--to"]).arg(&dest).args(extra);
        let server = self.node.cpu();
        let measured = run_measured(&mut command, &log, Duration::from_secs(3600))?;
        let sides = Sides {
            seconds: measured.seconds,
            client: measured.cpu,
            server: self.node.cpu() - server,
            exited: None,
        };
        self.check(&dest.join(DATASET).join("v1"), "ferry")?;
        std::fs::remove_dir_all(&dest)?;
        if std::env::var_os("FERRY_BENCH_LOG").is_some() {
            // Diagnostics asked for: the puller's log of this run, as it wrote it.
            eprint!("{}", std::fs::read_to_string(&log).unwrap_or_default());
            let node_log = std::fs::read_to_string(self.node.dir.join("ferryd.log")).unwrap_or_default();
            node_log
                .lines()
                .filter(|l| l.contains("connection ended"))
                .for_each(|l| eprintln!("ferryd: {l}"));
        }
        Ok(sides)
    }
}

/// Publishes the export as the dataset's first version, as the node's operator.
pub(crate) fn publish(node: &NodeProc, export: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let operator = Credentials::load(&node.operator).context("operator credentials")?;
        let addr = NodeAddr { addr: node.addr, server_name: node.name.clone() };
        let session = Connector::new(&operator, addr)?.connect().await?;
        publish_file(&session, export, definition(), SourceFormat::Parquet)
            .await
            .context("publishing the export on the node")?;
        session.close();
        anyhow::Ok(())
    })
}

/// One run's wall time and CPU seconds on each end.
#[derive(Debug, Clone, Copy)]
struct Sides {
    /// Until the output is on disk.
    seconds: f64,
    client: f64,
    server: f64,
    /// A peer's: until its client exited, before its output was synced.
    exited: Option<f64>,
}

/// Runs `command` to success, returning an error with its stderr otherwise.
fn run_ok(command: &mut Command) -> Result<()> {
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The peers' servers on 127.0.0.1 (killed when dropped).
struct Peers {
    servers: PeerServers,
}

impl Peers {
    fn start(fixture: &Fixture, only: Option<&[String]>, report: &mut Report) -> Self {
        let keys = PEERS.map(|(key, _)| key);
        let (scratch, root) = (fixture.scratch.path(), &fixture.peer_root);
        Self { servers: PeerServers::start(&keys, only, scratch, root, &Placement::loopback(), report) }
    }

    /// The peers that run: key and what it is, in run order.
    fn enabled(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        let label = |key: &str| PEERS.iter().find(|(k, _)| *k == key).map_or("?", |(_, label)| label);
        self.servers.enabled.iter().map(move |&key| (key, label(key)))
    }

    /// One run of peer `key` into an empty directory.
    fn run(&self, key: &str, fixture: &Fixture, run: usize) -> Result<Sides> {
        let dest = fixture.dest(&format!("{key}-{run}"))?;
        let names = fixture.version.names();
        let (client, server) = (servers::children_cpu(), self.servers.server_cpu(key));
        let started = Instant::now();
        let direct = Launcher::direct();
        match key {
            "curl" => run_ok(&mut self.servers.curl(&direct, &names, &dest)?)?,
            "rsync" => run_ok(&mut self.servers.rsync(&direct, &fixture.peer_root, &dest)?)?,
            "scp" => {
                let sshd = self.servers.sshd.as_ref().context("sshd")?;
                let mut command = Command::new("scp");
                command.arg("-q").arg("-F").arg(&sshd.client_config);
                for file in &fixture.version.files {
                    command.arg(format!("bench:{}", file.display()));
                }
                run_ok(command.arg(&dest))?;
            }
            "tcp" => {
                for (file, name) in fixture.version.files.iter().zip(&names) {
                    let port = servers::free_port()?;
                    let mut sender = Command::new("socat")
                        .args(["-u", "-b", "131072"])
                        .arg(format!("OPEN:{},rdonly", file.display()))
                        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
                        .stdin(Stdio::null())
                        .spawn()
                        .context("starting socat")?;
                    let received = run_ok(
                        Command::new("socat")
                            .args(["-u", "-b", "131072"])
                            .arg(format!("TCP:127.0.0.1:{port},retry=500,interval=0.01"))
                            .arg(format!("CREATE:{}", dest.join(name).display())),
                    );
                    if received.is_err() {
                        let _ = sender.kill();
                    }
                    let status = sender.wait()?;
                    received?;
                    ensure!(status.success(), "the sending socat failed ({status})");
                }
            }
            _ => bail!("unknown peer {key}"),
        }
        let exited = started.elapsed().as_secs_f64();
        sync_tree(&dest)?;
        let seconds = started.elapsed().as_secs_f64();
        let client = servers::children_cpu() - client;
        let server = self.servers.server_cpu(key) - server;
        fixture.check(&dest, key)?;
        std::fs::remove_dir_all(&dest)?;
        Ok(Sides { seconds, client, server, exited: Some(exited) })
    }
}

/// `fsync`s every file under `dir`, then the directories, as a commit to disk would.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
        }
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn record(report: &mut Report, key: &str, label: &str, bytes: u64, sides: Sides) {
    let mb_s = bytes as f64 / 1e6 / sides.seconds.max(1e-9);
    report.record(&format!("{key}_mb_s"), Unit::MegabytesPerSecond, &format!("{label}: MB/s"), mb_s);
    if let Some(exited) = sides.exited {
        let what = format!("{key}: MB/s until the client exited, output not yet synced");
        report.record(
            &format!("{key}_exit_mb_s"),
            Unit::MegabytesPerSecond,
            &what,
            bytes as f64 / 1e6 / exited.max(1e-9),
        );
    }
    let gb = bytes as f64 / 1e9;
    for (side, cpu) in [("client", sides.client), ("server", sides.server)] {
        let what = format!("{key}: CPU seconds per GB, {side}");
        report.record(&format!("{key}_{side}_cpu_s_per_gb"), Unit::Ratio, &what, cpu / gb);
    }
    let what = format!("{key}: CPU seconds per GB, both ends");
    report.record(&format!("{key}_cpu_s_per_gb"), Unit::Ratio, &what, (sides.client + sides.server) / gb);
}

/// The summary line: medians, `nan` for a contender that did not run.
fn summary_line(report: &Report) -> String {
    let median = |key: &str| report.median_of(key);
    let ferry = median("ferry_mb_s");
    let mut parts: Vec<String> = ["ferry", "curl", "rsync", "scp", "tcp"]
        .iter()
        .map(|key| format!("{key}_mb_s={}", show(median(&format!("{key}_mb_s")), 1)))
        .collect();
    for peer in ["curl", "rsync"] {
        parts.push(format!("vs_{peer}={}", show(ferry / median(&format!("{peer}_mb_s")), 3)));
    }
    parts.join(" ")
}

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &TransferArgs) -> Result<()> {
    if args.runs == 0 || args.files == 0 || args.size_mib < args.files {
        bail!("--runs and --files must be at least 1, and --size-mib at least --files");
    }
    let fixture = Fixture::prepare(args)?;
    let mut report = Report::default();
    let peers = Peers::start(&fixture, args.peers.as_deref(), &mut report);
    for run in 1..=args.runs {
        progress(&format!("run {run}/{}: ferry", args.runs));
        let measured = fixture.ferry(run, &args.ferry_pull_arg)?;
        let bytes = fixture.version.bytes;
        record(&mut report, "ferry", "ferry pull from ferryd (QUIC + mTLS, BLAKE3)", bytes, measured);
        for (key, label) in peers.enabled() {
            progress(&format!("run {run}/{}: {key}", args.runs));
            let measured = peers.run(key, &fixture, run)?;
            record(&mut report, key, label, bytes, measured);
        }
    }
    drop(peers);
    report.note(format!(
        "{} Parquet files, {} bytes ({} rows of 1 MiB random payload), into empty directories on loopback",
        fixture.version.files.len(),
        fixture.version.bytes,
        args.size_mib
    ));
    report.note(
        "every contender's output checked (size and BLAKE3 of every file); MB/s = 10^6 bytes per wall second",
    );
    if !args.ferry_pull_arg.is_empty() {
        report.note(format!(
            "NOT ferry's defaults: every `ferry pull` ran with the extra arguments {:?} (--ferry-pull-arg)",
            args.ferry_pull_arg
        ));
    }
    report.note(
        "CPU from /proc: client = `ferry pull` / the peer's client processes; server = the ferryd process / \
         nginx / sshd with its sessions",
    );
    println!(
        "ferry-bench transfer: size_mib={} files={} runs={} seed={} nproc={}",
        args.size_mib,
        args.files,
        args.runs,
        args.scratch.seed,
        nproc()
    );
    print!("{}", report.table());
    println!("{}", summary_line(&report));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_has_a_key_and_a_binary_payload() {
        let def = ferry_tables::definition::DatasetDefinition::parse_toml(&definition()).expect("parses");
        assert_eq!(def.columns.len(), 2);
    }

    #[test]
    fn summary_prints_nan_for_missing_peers() {
        let mut report = Report::default();
        record(
            &mut report,
            "ferry",
            "ferry",
            1_000_000_000,
            Sides { seconds: 2.0, client: 2.0, server: 2.0, exited: None },
        );
        let curl = Sides { seconds: 1.0, client: 1.0, server: 1.0, exited: Some(0.5) };
        record(&mut report, "curl", "curl", 1_000_000_000, curl);
        assert_eq!(
            summary_line(&report),
            "ferry_mb_s=500.0 curl_mb_s=1000.0 rsync_mb_s=nan scp_mb_s=nan tcp_mb_s=nan vs_curl=0.500 vs_rsync=nan"
        );
        // The rate until the peer exited is kept beside the synced one, not in the ratios.
        assert_eq!(report.median_of("curl_exit_mb_s"), 2000.0);
        assert!(report.median_of("ferry_exit_mb_s").is_nan());
    }
}
