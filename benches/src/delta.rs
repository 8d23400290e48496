//! Scenario `delta`: what it costs to bring a consumer from snapshot N of a vehicle registry to
//! N+1 when `--fraction` of the rows changed, with ferry's row-level delta and with rsync's
//! block delta on the same files.
//!
//! Setup (not measured): `synth` generates the registry export N, `synth::edit_vehicle_registry`
//! edits it into N+1, and ferry's publish path writes both as key-sorted snapshots.
//! Each run then measures, in this order (ferry and rsync interleaved, run after run):
//! 1. publish: the N export through `write_sorted_parquet` (MB/s of Parquet written);
//! 2. diff(N, N+1) and 3. apply(N, delta) in child processes (rows/s, peak RSS), checking that the
//!    rebuilt files are byte-identical to N+1's;
//! 4. ferry's bytes on the wire to move the change: a consumer holding N syncs to N+1 from an
//!    in-process node (see [`crate::wire`]); with `--no-pull`, the delta files' size instead;
//! 5. rsync `--no-whole-file` of N+1's directory over a copy of N's, checking the result;
//! 6. DuckDB building the same N+1 from the same files (N's snapshot and the delta), timed
//!    around its `COPY` only, at its default threads ([`duckdb_apply`]): `apply_vs_duckdb` is
//!    DuckDB's seconds over apply's (≥ 1 when ferry is at least as fast).
//!
//! Neighbours: [`crate::kernel`] runs the child processes, [`crate::peers`] runs rsync,
//! [`crate::report`] prints the table and the summary line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use arrow::array::RecordBatch;
use clap::Args;
use ferry_tables::synth;

use crate::kernel::{self, Kernel, Outcome, parquet_files};
use crate::peers;
use crate::report::{Report, Unit, nproc, progress};
use crate::wire;

/// Options of `ferry-bench delta`.
#[derive(Debug, Clone, Args)]
pub struct DeltaArgs {
    /// Rows of the vehicle registry.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Runs of every measurement (interleaved: ferry, rsync, ferry, rsync, …).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Share of rows changed between snapshot N and N+1.
    #[arg(long, default_value_t = 0.01)]
    pub fraction: f64,
    /// Seed of the generated registry and of the edit.
    #[arg(long, default_value_t = 20_250_101)]
    pub seed: u64,
    /// Directory for the generated files (a temporary directory is made inside and removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the generated files and print where they are.
    #[arg(long)]
    pub keep: bool,
    /// Count ferry's bytes as the delta files' size instead of pulling N+1 from a node.
    #[arg(long)]
    pub no_pull: bool,
}

/// The dataset's key, as in `synth::vehicle_registry_definition`.
const KEY: &str = "vin";
const DATASET: &str = "vehicle-registry";
const PROVIDER: &str = "ministry";

/// Keys of the summary line, in order (the documented output contract).
pub const SUMMARY_KEYS: [&str; 8] = [
    "delta_fraction",
    "rsync_fraction",
    "vs_rsync",
    "diff_rows_per_s",
    "diff_peak_rss_mib",
    "apply_rows_per_s",
    "publish_mb_s",
    "apply_vs_duckdb",
];

const DELTA_FILES: &str = "ferry bytes = total size of the delta files (upserts + deletes) that diff \
     wrote (--no-pull); not a node-to-node pull counted on the wire";

/// The prepared inputs every run reads.
struct Fixture {
    dir: tempfile::TempDir,
    definition: PathBuf,
    export_n: PathBuf,
    export_n1: PathBuf,
    snapshot_n: PathBuf,
    snapshot_n1: PathBuf,
    /// BLAKE3 of N+1's files by name, to check apply's and rsync's output.
    n1_hashes: Vec<(String, blake3::Hash)>,
    n1_bytes: u64,
    n1_rows: u64,
    /// What the edit did, e.g. `9000 updated, 1000 inserted, 1000 deleted`.
    edits: String,
}

fn dir_bytes(files: &[PathBuf]) -> Result<u64> {
    let mut total = 0;
    for file in files {
        total += std::fs::metadata(file).with_context(|| format!("measuring {}", file.display()))?.len();
    }
    Ok(total)
}

/// `(file name, BLAKE3)` of every file of `dir`, in name order.
pub fn hash_dir(dir: &Path) -> Result<Vec<(String, blake3::Hash)>> {
    let mut out = Vec::new();
    for path in parquet_files(dir, "")? {
        let mut hasher = blake3::Hasher::new();
        let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        hasher.update_reader(file).with_context(|| format!("hashing {}", path.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        out.push((name, hasher.finalize()));
    }
    Ok(out)
}

fn key_args() -> Vec<String> {
    vec![KEY.to_owned()]
}

impl Fixture {
    fn prepare(args: &DeltaArgs) -> Result<Self> {
        let root = args.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&root)?;
        let dir = tempfile::Builder::new().prefix("ferry-bench-delta-").tempdir_in(&root)?;
        let definition = dir.path().join("vehicle-registry.toml");
        std::fs::write(&definition, synth::vehicle_registry_definition(DATASET, PROVIDER))?;
        let export_n = dir.path().join("export-n.parquet");
        let export_n1 = dir.path().join("export-n1.parquet");
        let started = Instant::now();
        let schema = synth::vehicle_registry_schema();
        let day_n: Vec<RecordBatch> = synth::vehicle_registry(args.seed, args.rows).collect();
        let edit = synth::edit_vehicle_registry(&day_n, args.seed.wrapping_add(1), args.fraction)?;
        synth::write_parquet(&export_n, schema.clone(), day_n)?;
        synth::write_parquet(&export_n1, schema, edit.batches)?;
        let edits = format!("{} updated, {} inserted, {} deleted", edit.updated, edit.inserted, edit.deleted);
        progress(&format!(
            "generated exports N and N+1 ({} rows; edit: {edits}) in {:.1} s",
            args.rows,
            started.elapsed().as_secs_f64()
        ));
        let snapshot_n = dir.path().join("snapshot-n");
        let snapshot_n1 = dir.path().join("snapshot-n1");
        let mut n1_rows = 0;
        for (source, out) in [(&export_n, &snapshot_n), (&export_n1, &snapshot_n1)] {
            let kernel =
                Kernel::Publish { definition: definition.clone(), source: source.clone(), out: out.clone() };
            n1_rows = kernel::spawn(&kernel)?.rows;
        }
        let n1_files = parquet_files(&snapshot_n1, "part-")?;
        let n1_bytes = dir_bytes(&n1_files)?;
        let n_bytes = dir_bytes(&parquet_files(&snapshot_n, "part-")?)?;
        progress(&format!(
            "published N ({n_bytes} bytes) and N+1 ({n1_bytes} bytes, {} files, {n1_rows} rows)",
            n1_files.len()
        ));
        let n1_hashes = hash_dir(&snapshot_n1)?;
        Ok(Self {
            dir,
            definition,
            export_n,
            export_n1,
            snapshot_n,
            snapshot_n1,
            n1_hashes,
            n1_bytes,
            n1_rows,
            edits,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fails unless `dir` holds exactly N+1's files, byte for byte.
    fn check_is_n1(&self, dir: &Path, who: &str) -> Result<()> {
        let hashes = hash_dir(dir)?;
        ensure!(
            hashes == self.n1_hashes,
            "{who} did not reproduce snapshot N+1 byte for byte ({} files vs {})",
            hashes.len(),
            self.n1_hashes.len()
        );
        Ok(())
    }
}

fn record_kernel(report: &mut Report, name: &str, outcome: &Outcome) {
    let rate_label = format!("{name}: rows of the resulting table per second (child process)");
    report.record(&format!("{name}_rows_per_s"), Unit::RowsPerSecond, &rate_label, outcome.rows_per_second());
    report.record(&format!("{name}_seconds"), Unit::Seconds, &format!("{name}: wall time"), outcome.seconds);
    if let Some(mib) = outcome.peak_rss_mib() {
        let label = format!("{name}: peak RSS of the child process (VmHWM)");
        report.record(&format!("{name}_peak_rss_mib"), Unit::Mebibytes, &label, mib);
    }
}

/// The node-to-node pull of the ferry side, when it is measured.
struct Pull {
    runtime: tokio::runtime::Runtime,
    bench: wire::PullBench,
}

impl Pull {
    fn start(fixture: &Fixture) -> Result<Self> {
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let definition = synth::vehicle_registry_definition(DATASET, PROVIDER);
        let bench = runtime.block_on(wire::PullBench::start(
            DATASET,
            &definition,
            &fixture.export_n,
            &fixture.export_n1,
        ))?;
        progress(&format!(
            "node started, N and N+1 published on it in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(Self { runtime, bench })
    }

    /// Ferry's bytes to the consumer for N → N+1 (and the other figures of the pull).
    fn measure(&self, fixture: &Fixture, run: usize, report: &mut Report) -> Result<u64> {
        let scratch = fixture.path(&format!("consumer-{run}"));
        std::fs::create_dir_all(&scratch)?;
        let pull = self.runtime.block_on(self.bench.measure(&scratch))?;
        fixture.check_is_n1(&pull.version_dir, "the consumer's sync")?;
        std::fs::remove_dir_all(&scratch)?;
        let label = "pull N→N+1: UDP payload bytes node → consumer";
        report.record("ferry_bytes", Unit::Bytes, label, pull.to_consumer_bytes as f64);
        let label = "pull N→N+1: UDP datagrams node → consumer";
        report.record("ferry_datagrams", Unit::Count, label, pull.to_consumer_datagrams as f64);
        let label = "pull N→N+1: UDP payload bytes consumer → node";
        report.record("ferry_up_bytes", Unit::Bytes, label, pull.to_node_bytes as f64);
        let label = "pull N→N+1: delta file bytes fetched (chunk payloads)";
        report.record("ferry_fetched_bytes", Unit::Bytes, label, pull.fetched_bytes as f64);
        let label = "pull N→N+1: sync wall time (fetch, apply, verify)";
        report.record("ferry_sync_seconds", Unit::Seconds, label, pull.seconds);
        Ok(pull.to_consumer_bytes)
    }
}

/// One run of the ferry side: publish, diff, apply (and DuckDB's apply), bytes to move.
fn ferry_run(fixture: &Fixture, pull: Option<&Pull>, run: usize, report: &mut Report) -> Result<u64> {
    let published = fixture.path(&format!("publish-{run}"));
    let kernel = Kernel::Publish {
        definition: fixture.definition.clone(),
        source: fixture.export_n.clone(),
        out: published.clone(),
    };
    let outcome = kernel::spawn(&kernel)?;
    let mb_s = outcome.bytes as f64 / 1e6 / outcome.seconds.max(1e-9);
    report.record(
        "publish_mb_s",
        Unit::MegabytesPerSecond,
        "publish: MB of Parquet written per second",
        mb_s,
    );
    record_kernel(report, "publish", &outcome);
    std::fs::remove_dir_all(&published)?;

    let delta = fixture.path(&format!("delta-{run}"));
    let kernel = Kernel::Diff {
        old: fixture.snapshot_n.clone(),
        new: fixture.snapshot_n1.clone(),
        key: key_args(),
        out: delta.clone(),
    };
    let outcome = kernel::spawn(&kernel)?;
    record_kernel(report, "diff", &outcome);
    let delta_bytes = outcome.bytes;

    let rebuilt = fixture.path(&format!("rebuilt-{run}"));
    let kernel = Kernel::Apply {
        base: fixture.snapshot_n.clone(),
        delta: delta.clone(),
        key: key_args(),
        out: rebuilt.clone(),
    };
    let outcome = kernel::spawn(&kernel)?;
    record_kernel(report, "apply", &outcome);
    fixture.check_is_n1(&rebuilt, "apply")?;
    std::fs::remove_dir_all(&rebuilt)?;
    if let Some((duck, version)) = duckdb_apply(fixture, &delta, run)? {
        if run == 1 {
            report.note(format!(
                "apply_vs_duckdb: DuckDB {version} (python) runs `COPY (SELECT * FROM (N ANTI JOIN \
                 (deleted and upserted keys) UNION ALL upserts) ORDER BY {KEY}) TO … (FORMAT parquet, \
                 COMPRESSION zstd)` at its default threads, timed around the COPY; row count checked"
            ));
        }
        report.record(
            "duckdb_apply_seconds",
            Unit::Seconds,
            "DuckDB: COPY of (N minus deleted and updated keys, plus upserts) ordered by key to zstd Parquet",
            duck,
        );
        let label = "DuckDB's COPY seconds / apply's seconds (same run)";
        report.record("apply_vs_duckdb", Unit::Ratio, label, duck / outcome.seconds.max(1e-9));
    }

    std::fs::remove_dir_all(&delta)?;
    let label = "diff: bytes of the delta files (upserts + deletes)";
    report.record("delta_file_bytes", Unit::Bytes, label, delta_bytes as f64);
    let ferry_bytes = match pull {
        Some(pull) => pull.measure(fixture, run, report)?,
        None => {
            let label = "ferry: bytes to bring a consumer from N to N+1 (delta files)";
            report.record("ferry_bytes", Unit::Bytes, label, delta_bytes as f64);
            delta_bytes
        }
    };
    let fraction = ferry_bytes as f64 / fixture.n1_bytes as f64;
    report.record("delta_fraction", Unit::Ratio, "ferry bytes / N+1 snapshot bytes", fraction);
    Ok(ferry_bytes)
}

/// DuckDB's side of the materialize comparison; prints `{"seconds": s, "rows": n, "version": v}`.
const DUCKDB_APPLY: &str = r#"
import json, sys, time, duckdb
base, upserts, deletes, out, key = json.load(open(sys.argv[1]))
def files(paths):
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
gone = f"SELECT {key} FROM read_parquet({files(deletes)}) UNION ALL SELECT {key} FROM read_parquet({files(upserts)})"
query = (
    f"COPY (SELECT * FROM (SELECT b.* FROM read_parquet({files(base)}) b ANTI JOIN ({gone}) g USING ({key}) "
    f"UNION ALL SELECT * FROM read_parquet({files(upserts)})) ORDER BY {key}) "
    f"TO '{out.replace(chr(39), chr(39) * 2)}' (FORMAT parquet, COMPRESSION zstd)"
)
con = duckdb.connect()
started = time.perf_counter()
con.execute(query)
seconds = time.perf_counter() - started
rows = con.execute(f"SELECT count(*) FROM read_parquet('{out.replace(chr(39), chr(39) * 2)}')").fetchone()[0]
print(json.dumps({"seconds": seconds, "rows": rows, "version": duckdb.__version__}))
"#;

/// Seconds DuckDB takes to build N+1 from N's snapshot and the delta in `delta` (its `COPY`
/// only) and its version, checking its row count; `None` when python3 with duckdb is not installed.
fn duckdb_apply(fixture: &Fixture, delta: &Path, run: usize) -> Result<Option<(f64, String)>> {
    let strings = |paths: Vec<PathBuf>| paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    let base = strings(parquet_files(&fixture.snapshot_n, "part-")?);
    let upserts = strings(parquet_files(delta, "upserts-")?);
    let deletes = strings(parquet_files(delta, "deletes-")?);
    let out = fixture.path(&format!("duckdb-{run}.parquet"));
    let input = fixture.path("duckdb-apply.json");
    let args = serde_json::json!([base, upserts, deletes, out.display().to_string(), KEY]);
    std::fs::write(&input, serde_json::to_vec(&args)?)?;
    let script = fixture.path("duckdb_apply.py");
    std::fs::write(&script, DUCKDB_APPLY)?;
    let result = std::process::Command::new("python3").arg(&script).arg(&input).output();
    let _ = std::fs::remove_file(&out);
    let output = match result {
        Ok(output) if output.status.success() => output,
        Ok(output) if String::from_utf8_lossy(&output.stderr).contains("No module named 'duckdb'") => {
            progress("python3 has no duckdb module: the DuckDB comparison is skipped");
            return Ok(None);
        }
        Ok(output) => bail!("duckdb failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(e) => {
            progress(&format!("python3 could not be started ({e}): the DuckDB comparison is skipped"));
            return Ok(None);
        }
    };
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading duckdb's answer")?;
    let rows = answer["rows"].as_u64().context("duckdb's row count")?;
    ensure!(rows == fixture.n1_rows, "DuckDB built {rows} rows, N+1 has {}", fixture.n1_rows);
    let seconds = answer["seconds"].as_f64().context("duckdb's seconds")?;
    Ok(Some((seconds, answer["version"].as_str().unwrap_or("?").to_owned())))
}

/// One run of rsync: N+1's directory synced over a fresh copy of N's.
fn rsync_run(fixture: &Fixture, run: usize, ferry_bytes: u64, report: &mut Report) -> Result<()> {
    let dest = fixture.path(&format!("rsync-{run}"));
    std::fs::create_dir_all(&dest)?;
    for path in parquet_files(&fixture.snapshot_n, "part-")? {
        let name = path.file_name().context("file name")?;
        std::fs::copy(&path, dest.join(name))?;
    }
    let (stats, seconds) = peers::rsync_delta(&fixture.snapshot_n1, &dest)?;
    fixture.check_is_n1(&dest, "rsync")?;
    std::fs::remove_dir_all(&dest)?;
    let sent = stats.total_bytes_sent as f64;
    report.record("rsync_bytes", Unit::Bytes, "rsync: Total bytes sent (sender to receiver)", sent);
    let received = stats.total_bytes_received as f64;
    report.record(
        "rsync_received_bytes",
        Unit::Bytes,
        "rsync: Total bytes received (block checksums)",
        received,
    );
    let literal = stats.literal_data as f64;
    report.record("rsync_literal_bytes", Unit::Bytes, "rsync: Literal data", literal);
    report.record("rsync_seconds", Unit::Seconds, "rsync: wall time", seconds);
    report.record(
        "rsync_fraction",
        Unit::Ratio,
        "rsync bytes sent / N+1 snapshot bytes",
        sent / fixture.n1_bytes as f64,
    );
    report.record(
        "vs_rsync",
        Unit::Ratio,
        "ferry bytes / rsync bytes sent",
        ferry_bytes as f64 / sent.max(1.0),
    );
    Ok(())
}

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &DeltaArgs) -> Result<()> {
    if args.runs == 0 || args.rows == 0 {
        bail!("--runs and --rows must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.fraction) {
        bail!("--fraction must be between 0 and 1");
    }
    let rsync = peers::rsync_version();
    if rsync.is_none() {
        progress(
            "rsync is not installed: the rsync comparison is skipped (install it, e.g. `apt-get install rsync`)",
        );
    }
    let fixture = Fixture::prepare(args)?;
    let pull = if args.no_pull { None } else { Some(Pull::start(&fixture)?) };
    let mut report = Report::default();
    for run in 1..=args.runs {
        progress(&format!("run {run}/{}: ferry", args.runs));
        let ferry_bytes = ferry_run(&fixture, pull.as_ref(), run, &mut report)?;
        if rsync.is_some() {
            progress(&format!("run {run}/{}: rsync", args.runs));
            rsync_run(&fixture, run, ferry_bytes, &mut report)?;
        }
    }
    report.record(
        "snapshot_bytes",
        Unit::Bytes,
        "N+1 snapshot: bytes of its Parquet files",
        fixture.n1_bytes as f64,
    );
    report.record("snapshot_rows", Unit::Count, "N+1 snapshot: rows", fixture.n1_rows as f64);
    report.note(format!("N+1 = N edited with --fraction {}: {}", args.fraction, fixture.edits));
    report.note(if pull.is_some() { wire::describe() } else { DELTA_FILES.to_owned() });
    report.note(
        "apply (and the consumer's sync) rebuilt N+1 byte for byte in every run (BLAKE3 of every file)",
    );
    report.note(match &rsync {
        Some(version) => format!(
            "rsync: `rsync -r -I --delete --no-whole-file --stats` of N+1's directory over a copy of N's \
             (same file names), output checked byte for byte; {version}"
        ),
        None => "rsync: not installed, comparison skipped".to_owned(),
    });
    println!(
        "ferry-bench delta: rows={} runs={} fraction={} seed={} nproc={}",
        args.rows,
        args.runs,
        args.fraction,
        args.seed,
        nproc()
    );
    print!("{}", report.table());
    let mut line = report.summary_line(&SUMMARY_KEYS);
    let measured_as = if pull.is_some() { wire::MEASURED_AS } else { "delta_files" };
    line.push_str(&format!(" ferry_bytes_measured_as={measured_as}"));
    println!("{line}");
    if args.keep {
        let kept = fixture.dir.keep();
        progress(&format!("files kept in {}", kept.display()));
    }
    Ok(())
}
