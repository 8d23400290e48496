//! Scenario `publish`: a province's export published on a ministry node end to end, against
//! DuckDB sorting the same export by the same key into zstd Parquet, in the same run.
//!
//! Setup (not measured): `synth` generates the export as a province would upload it, in its own
//! (unsorted) order, as one zstd Parquet file: `--kind vehicles` the vehicle registry (key `vin`,
//! rows in registration order) of `--rows` (10M) rows and its next day with `--fraction` (1 %) of
//! the rows changed; `--kind gps` the GPS feed (key `(vin, ts)`, rows in time order) of `--rows`
//! (100M) reports of `--rows / 1000` vehicles. A ministry `ferryd` (release build, mutual TLS,
//! default settings) starts on a fresh state directory under `--dir`.
//!
//! Each run, interleaved:
//! 1. ferry: the operator's `ferry_client::publish::publish_file` (upload over QUIC, the node's
//!    check, sort, diff against the head table, canonical zstd Parquet, file and rows hashes,
//!    signed manifest, fsync and atomic commit), timed from the start of the upload to the
//!    `Published` acknowledgement (the session is connected before). ferryd's peak RSS over the
//!    publish is its `VmHWM`, reset before the run (`/proc/<pid>/clear_refs`). Vehicles: the setup
//!    publishes day N+1, then day N (its diff compares values: a head without row prints), so
//!    the node holds day N with its row prints, as a daily publication does; the runs publish
//!    N+1, N, N+1, … so that each one diffs (by row prints) against a head that differs by
//!    `--fraction`. GPS: each run publishes into a dataset of its
//!    own (no head, so no diff: an append-only feed has no previous day to compare).
//! 2. DuckDB (Python, `duckdb` module), once ferryd has been idle for half a second (removing
//!    the upload and the superseded head after its answer): `COPY (SELECT * FROM
//!    read_parquet(export) ORDER BY key) TO out (FORMAT parquet, COMPRESSION zstd)` with its
//!    default threads, the COPY alone timed; its peak RSS is the Python process's `ru_maxrss`.
//!    Its spill directory is set to the scratch directory (the default is `.tmp` in the working
//!    directory); `--duckdb-memory-limit` sets its memory limit (default: DuckDB's own, 80 % of
//!    RAM).
//!
//! MB/s = export bytes / seconds. Last line (medians): `publish_mb_s= duckdb_mb_s= vs_duckdb=
//! publish_peak_rss_mib= rows=`, `vs_duckdb` = publish_mb_s / duckdb_mb_s.
//!
//! Neighbours: [`crate::fleet`] runs ferryd, [`crate::report`] prints the table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use arrow::array::RecordBatch;
use clap::Args;
use ferry_client::conn::Connector;
use ferry_client::publish::publish_file;
use ferry_net::conn::NodeAddr;
use ferry_net::tls::Credentials;
use ferry_proto::{Role, SourceFormat};
use ferry_tables::synth;

use crate::fleet::{Binaries, Launcher, NodeOptions, NodeProc, Pki, free_bytes};
use crate::report::{Report, Unit, nproc, progress};
use crate::transfer::PROVIDER;

/// Which export is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The vehicle registry (key `vin`), 10M rows by default.
    Vehicles,
    /// The GPS position feed (key `vin, ts`), 100M rows by default.
    Gps,
}

impl Kind {
    fn default_rows(self) -> usize {
        match self {
            Self::Vehicles => 10_000_000,
            Self::Gps => 100_000_000,
        }
    }

    fn dataset(self) -> &'static str {
        match self {
            Self::Vehicles => "vehicle-registry",
            Self::Gps => "gps-positions",
        }
    }

    /// The key as DuckDB's `ORDER BY` (the definitions' key columns, in order).
    fn order_by(self) -> &'static str {
        match self {
            Self::Vehicles => "vin",
            Self::Gps => "vin, ts",
        }
    }
}

/// Options of `ferry-bench publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// What is published.
    #[arg(long, value_enum, default_value_t = Kind::Vehicles)]
    pub kind: Kind,
    /// Rows of the export (default 10M vehicles, 100M GPS reports).
    #[arg(long)]
    pub rows: Option<usize>,
    /// Runs (ferry and DuckDB interleaved).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Vehicles: share of rows changed between the two days' exports.
    #[arg(long, default_value_t = 0.01)]
    pub fraction: f64,
    /// GPS: vehicles reporting (default rows / 1000).
    #[arg(long)]
    pub vehicles: Option<usize>,
    /// Seed of the generated exports.
    #[arg(long, default_value_t = 20_261_206)]
    pub seed: u64,
    /// Directory for the scratch files (a temporary directory is made inside and removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Vehicles: remove the head's row prints from the node's state directory before each run,
    /// so that each diff compares values, as after a head rebuilt from the store (to measure
    /// what the prints save).
    #[arg(long)]
    pub no_head_prints: bool,
    /// DuckDB's `memory_limit` (e.g. `6GB`); DuckDB's default when absent.
    #[arg(long)]
    pub duckdb_memory_limit: Option<String>,
    /// Keep the scratch directory and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Keep the generated exports in `--dir` (named by kind, rows, seed and fraction) and reuse
    /// them when they are there already.
    #[arg(long)]
    pub keep_exports: bool,
}

/// The exports of the runs: one for GPS, two days for vehicles.
struct Exports {
    definition_for: Box<dyn Fn(&str) -> String>,
    /// The export of run `i` is `files[i % files.len()]`; for vehicles `files[0]` is published
    /// in the setup, so runs start with `files[1]`.
    files: Vec<Export>,
}

struct Export {
    path: PathBuf,
    bytes: u64,
    rows: u64,
}

impl Exports {
    fn generate(args: &PublishArgs, rows: usize, dir: &Path) -> Result<Self> {
        let started = Instant::now();
        let exports = match args.kind {
            Kind::Vehicles if reusable(dir, &["vehicles-day-n.parquet", "vehicles-day-n1.parquet"]) => {
                let definition_for =
                    Box::new(|dataset: &str| synth::vehicle_registry_definition(dataset, PROVIDER));
                let files = vec![
                    Export::read(&dir.join("vehicles-day-n.parquet"))?,
                    Export::read(&dir.join("vehicles-day-n1.parquet"))?,
                ];
                Self { definition_for, files }
            }
            Kind::Gps if reusable(dir, &["gps.parquet"]) => {
                let definition_for =
                    Box::new(|dataset: &str| synth::gps_positions_definition(dataset, PROVIDER));
                Self { definition_for, files: vec![Export::read(&dir.join("gps.parquet"))?] }
            }
            Kind::Vehicles => {
                let day_n: Vec<RecordBatch> = synth::vehicle_registry(args.seed, rows).collect();
                let edit = synth::edit_vehicle_registry(&day_n, args.seed.wrapping_add(1), args.fraction)?;
                let schema = synth::vehicle_registry_schema();
                let n = write_export(&dir.join("vehicles-day-n.parquet"), schema.clone(), day_n)?;
                let n1 = write_export(&dir.join("vehicles-day-n1.parquet"), schema, edit.batches)?;
                progress(&format!(
                    "day N+1 = day N with {} updated, {} inserted, {} deleted",
                    edit.updated, edit.inserted, edit.deleted
                ));
                let definition_for =
                    Box::new(|dataset: &str| synth::vehicle_registry_definition(dataset, PROVIDER));
                Self { definition_for, files: vec![n, n1] }
            }
            Kind::Gps => {
                let vehicles = args.vehicles.unwrap_or(rows / 1000).max(1);
                let batches = synth::gps_positions(args.seed, rows, vehicles);
                let export = write_export(&dir.join("gps.parquet"), synth::gps_positions_schema(), batches)?;
                let definition_for =
                    Box::new(|dataset: &str| synth::gps_positions_definition(dataset, PROVIDER));
                Self { definition_for, files: vec![export] }
            }
        };
        for export in &exports.files {
            progress(&format!(
                "export {}: {} rows, {} bytes ({:.1} MiB) of zstd Parquet, unsorted",
                export.path.display(),
                export.rows,
                export.bytes,
                export.bytes as f64 / f64::from(1 << 20)
            ));
        }
        progress(&format!("exports generated in {:.1} s", started.elapsed().as_secs_f64()));
        Ok(exports)
    }

    /// The export run `run` (1-based) publishes, and the dataset it goes to.
    fn for_run(&self, kind: Kind, run: usize) -> (&Export, String) {
        match kind {
            Kind::Vehicles => (&self.files[run % self.files.len()], kind.dataset().to_owned()),
            Kind::Gps => (&self.files[0], format!("{}-r{run}", kind.dataset())),
        }
    }
}

/// Whether `dir` holds every one of `names` (exports kept by an earlier run).
fn reusable(dir: &Path, names: &[&str]) -> bool {
    names.iter().all(|name| dir.join(name).is_file())
}

impl Export {
    /// An export kept by an earlier run: its size and the rows its footer declares.
    fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let bytes = file.metadata()?.len();
        let reader = parquet::file::reader::SerializedFileReader::new(file)?;
        let rows = parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows();
        Ok(Self { path: path.to_owned(), bytes, rows: u64::try_from(rows)? })
    }
}

fn write_export(
    path: &Path,
    schema: arrow::datatypes::SchemaRef,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> Result<Export> {
    let rows = synth::write_parquet(path, schema, batches)?;
    let bytes = std::fs::metadata(path)?.len();
    Ok(Export { path: path.to_owned(), bytes, rows })
}

/// The ministry node and its operator's credentials.
struct Ministry {
    node: NodeProc,
    runtime: tokio::runtime::Runtime,
    /// The certificates' directory lives as long as the node.
    _pki: Pki,
}

/// What one publish measured.
struct Publish {
    seconds: f64,
    peak_rss_mib: f64,
    cpu: f64,
    rows: u64,
    stored_bytes: u64,
}

impl Ministry {
    fn start(root: &Path) -> Result<Self> {
        let bins = Binaries::build()?;
        let pki = Pki::new();
        // Default settings: no [transfer] or [publish] table of the bench's own.
        let opts = NodeOptions {
            name: PROVIDER,
            role: Role::Ministry,
            listen: std::net::IpAddr::from([127, 0, 0, 1]),
            extra: String::new(),
            launcher: Launcher::direct(),
            storage: None,
        };
        let node = NodeProc::start(&bins, &pki, root, &opts)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(Self { node, runtime, _pki: pki })
    }

    /// Removes the row prints the node keeps with its head of `dataset` (`--no-head-prints`).
    fn remove_head_prints(&self, dataset: &str) -> Result<()> {
        let heads = self.node.dir.join("state").join("heads").join(dataset);
        for version in std::fs::read_dir(&heads).with_context(|| format!("listing {}", heads.display()))? {
            let prints = version?.path().join("rows.prints");
            if prints.exists() {
                std::fs::remove_file(&prints).with_context(|| format!("removing {}", prints.display()))?;
            }
        }
        Ok(())
    }

    /// Publishes `export` as `dataset`, timed from the upload's start to the acknowledgement.
    fn publish(&self, export: &Export, dataset: &str, definition: String) -> Result<Publish> {
        let reset = reset_peak_rss(self.node.pid());
        let cpu_before = self.node.cpu();
        let (seconds, published) = self.runtime.block_on(async {
            let creds = Credentials::load(&self.node.operator).context("operator credentials")?;
            let addr = NodeAddr { addr: self.node.addr, server_name: self.node.name.clone() };
            let session = Connector::new(&creds, addr)?.connect().await?;
            let started = Instant::now();
            let published = publish_file(&session, &export.path, definition, SourceFormat::Parquet).await;
            let seconds = started.elapsed().as_secs_f64();
            session.close();
            anyhow::Ok((seconds, published.with_context(|| format!("publishing {dataset} on ferryd"))?))
        })?;
        ensure!(!published.unchanged, "the node found {dataset} unchanged: nothing was published");
        ensure!(
            published.rows == export.rows,
            "the node published {} rows of an export of {}",
            published.rows,
            export.rows
        );
        let peak_rss_mib = if reset { self.node.peak_rss_mib() } else { f64::NAN };
        let cpu = self.node.cpu() - cpu_before;
        Ok(Publish { seconds, peak_rss_mib, cpu, rows: published.rows, stored_bytes: published.bytes })
    }
}

/// Resets the peak RSS (`VmHWM`) of process `pid` to its current RSS; false where the kernel
/// refuses (the figure is then not reported).
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

const DUCKDB: &str = r#"
import json, resource, sys, time, duckdb
source, out, order_by, memory_limit, temp = sys.argv[1:6]
quote = lambda text: "'" + text.replace("'", "''") + "'"
con = duckdb.connect()
con.execute("SET temp_directory = " + quote(temp))
if memory_limit:
    con.execute("SET memory_limit = " + quote(memory_limit))
settings = con.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchone()
sql = ("COPY (SELECT * FROM read_parquet(" + quote(source) + ") ORDER BY " + order_by + ") TO "
       + quote(out) + " (FORMAT parquet, COMPRESSION zstd)")
started = time.perf_counter()
con.execute(sql)
seconds = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = con.execute("SELECT count(*) FROM read_parquet(" + quote(out) + ")").fetchone()[0]
print(json.dumps({"seconds": seconds, "peak_rss_kib": peak_kib, "rows": rows,
                  "threads": settings[0], "memory_limit": settings[1], "version": duckdb.__version__}))
"#;

/// What one DuckDB sort measured.
#[derive(Debug)]
struct Duck {
    seconds: f64,
    peak_rss_mib: f64,
    /// `threads=… memory_limit=… version=…`.
    settings: String,
}

fn duckdb_sort(kind: Kind, export: &Export, scratch: &Path, memory_limit: Option<&str>) -> Result<Duck> {
    let script = scratch.join("duckdb_sort.py");
    std::fs::write(&script, DUCKDB)?;
    let out = scratch.join("duckdb-sorted.parquet");
    let temp = scratch.join("duckdb-tmp");
    std::fs::create_dir_all(&temp)?;
    let output = Command::new("python3")
        .arg(&script)
        .arg(&export.path)
        .arg(&out)
        .arg(kind.order_by())
        .arg(memory_limit.unwrap_or(""))
        .arg(&temp)
        .output()
        .context("running python3 with duckdb")?;
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_dir_all(&temp);
    ensure!(output.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading DuckDB's figures")?;
    let rows = json["rows"].as_u64().unwrap_or(0);
    ensure!(rows == export.rows, "DuckDB wrote {rows} rows of an export of {}", export.rows);
    let seconds = json["seconds"].as_f64().context("DuckDB's seconds")?;
    let peak_rss_mib = json["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    let settings = format!(
        "threads={} memory_limit={} version={}",
        json["threads"], json["memory_limit"], json["version"]
    );
    Ok(Duck { seconds, peak_rss_mib, settings })
}

/// The summary line: `publish_mb_s` and `duckdb_mb_s` are medians, `vs_duckdb` their ratio.
pub fn summary_line(publish_mb_s: f64, duckdb_mb_s: f64, publish_peak_rss_mib: f64, rows: u64) -> String {
    let ratio = publish_mb_s / duckdb_mb_s;
    format!(
        "publish_mb_s={} duckdb_mb_s={} vs_duckdb={} publish_peak_rss_mib={} rows={rows}",
        Unit::MegabytesPerSecond.format(publish_mb_s),
        Unit::MegabytesPerSecond.format(duckdb_mb_s),
        Unit::Ratio.format(ratio),
        Unit::Mebibytes.format(publish_peak_rss_mib),
    )
}

fn record_publish(report: &mut Report, export: &Export, publish: &Publish) {
    let mb_s = export.bytes as f64 / 1e6 / publish.seconds.max(1e-9);
    report.record("publish_mb_s", Unit::MegabytesPerSecond, "ferry: export MB / s, upload to ack", mb_s);
    report.record("publish_seconds", Unit::Seconds, "ferry: upload start to Published", publish.seconds);
    let label = "ferry: ferryd VmHWM over the publish (reset before)";
    report.record("publish_peak_rss_mib", Unit::Mebibytes, label, publish.peak_rss_mib);
    report.record("publish_cpu_seconds", Unit::Seconds, "ferry: ferryd CPU seconds", publish.cpu);
    let label = "ferry: bytes the node stored for the version";
    report.record("publish_stored_bytes", Unit::Bytes, label, publish.stored_bytes as f64);
}

fn record_duckdb(report: &mut Report, export: &Export, duck: &Duck) {
    let mb_s = export.bytes as f64 / 1e6 / duck.seconds.max(1e-9);
    report.record("duckdb_mb_s", Unit::MegabytesPerSecond, "DuckDB: export MB / s, COPY only", mb_s);
    report.record("duckdb_seconds", Unit::Seconds, "DuckDB: COPY … ORDER BY … (zstd)", duck.seconds);
    report.record("duckdb_peak_rss_mib", Unit::Mebibytes, "DuckDB: python3 ru_maxrss", duck.peak_rss_mib);
}

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &PublishArgs) -> Result<()> {
    let rows = args.rows.unwrap_or_else(|| args.kind.default_rows());
    if args.runs == 0 || rows == 0 {
        bail!("--runs and --rows must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.fraction) {
        bail!("--fraction must be between 0 and 1");
    }
    let root = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root)?;
    let scratch = tempfile::Builder::new().prefix("ferry-bench-publish-").tempdir_in(&root)?;
    progress(&format!(
        "{} rows of {:?} in {}; {:.1} GiB free there",
        rows,
        args.kind,
        scratch.path().display(),
        free_bytes(&root)? as f64 / f64::from(1 << 30)
    ));
    let exports_dir = if args.keep_exports {
        let name =
            format!("ferry-bench-publish-exports-{:?}-{rows}-{}-{}", args.kind, args.seed, args.fraction);
        let dir = root.join(name.to_lowercase());
        std::fs::create_dir_all(&dir)?;
        dir
    } else {
        scratch.path().to_owned()
    };
    let exports = Exports::generate(args, rows, &exports_dir)?;
    let ministry = Ministry::start(scratch.path())?;
    let mut report = Report::default();
    if args.kind == Kind::Vehicles {
        // Day N+1 first (no head), then day N: diffed by value against a head without row
        // prints, it leaves its table with prints, as every publish but a dataset's first does.
        let dataset = args.kind.dataset();
        for (export, what) in [
            (&exports.files[1], "day N+1 published (no head)"),
            (
                &exports.files[0],
                "day N published (diffed by value: the head had no row prints), the head the runs diff against",
            ),
        ] {
            let setup = ministry.publish(export, dataset, (exports.definition_for)(dataset))?;
            progress(&format!(
                "setup: {what} in {:.2} s (VmHWM {:.1} MiB, {:.1} CPU s)",
                setup.seconds, setup.peak_rss_mib, setup.cpu
            ));
        }
    }
    let mut settings = String::new();
    let mut published_rows = 0;
    for run in 1..=args.runs {
        let (export, dataset) = exports.for_run(args.kind, run);
        if args.no_head_prints {
            ministry.remove_head_prints(&dataset)?;
        }
        let publish = ministry.publish(export, &dataset, (exports.definition_for)(&dataset))?;
        progress(&format!(
            "run {run}/{}: ferry published {} ({} rows) in {:.2} s, ferryd VmHWM {:.1} MiB, {:.1} CPU s",
            args.runs, dataset, publish.rows, publish.seconds, publish.peak_rss_mib, publish.cpu
        ));
        record_publish(&mut report, export, &publish);
        published_rows = publish.rows;
        // DuckDB does not share the cores with the node's work after its answer.
        let settled = ministry.node.wait_idle(std::time::Duration::from_secs(60));
        progress(&format!("run {run}/{}: ferryd idle {settled:.1} s after its answer", args.runs));
        let duck = duckdb_sort(args.kind, export, scratch.path(), args.duckdb_memory_limit.as_deref())?;
        progress(&format!(
            "run {run}/{}: DuckDB sorted it in {:.2} s, peak RSS {:.1} MiB",
            args.runs, duck.seconds, duck.peak_rss_mib
        ));
        record_duckdb(&mut report, export, &duck);
        settings = duck.settings;
    }
    report.note(format!("DuckDB: {settings}; spill directory in the scratch directory; output not fsynced"));
    report.note(match args.kind {
        Kind::Vehicles if args.no_head_prints => {
            "ferry: each run diffs against the other day's table (the node's head), by value: its row prints removed"
        }
        Kind::Vehicles => "ferry: each run diffs against the other day's table (the node's head), by its row prints",
        Kind::Gps => "ferry: each run publishes into a new dataset (no head, no diff)",
    });
    report.note("ferry: ferryd release build, mutual TLS, default settings; fsync and atomic commit");
    report.note("DuckDB starts once ferryd has been idle for half a second (its work after the answer done)");
    println!(
        "ferry-bench publish: kind={:?} rows={rows} runs={} export_bytes={} nproc={}",
        args.kind,
        args.runs,
        exports.files.iter().map(|e| e.bytes.to_string()).collect::<Vec<_>>().join(","),
        nproc()
    );
    print!("{}", report.table());
    println!(
        "{}",
        summary_line(
            report.median_of("publish_mb_s"),
            report.median_of("duckdb_mb_s"),
            report.median_of("publish_peak_rss_mib"),
            published_rows
        )
    );
    drop(ministry);
    if args.keep {
        progress(&format!("files kept in {}", scratch.keep().display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_has_the_documented_keys_and_the_ratio_of_the_medians() {
        let line = summary_line(120.0, 80.0, 900.25, 10_000_000);
        assert_eq!(
            line,
            "publish_mb_s=120.0 duckdb_mb_s=80.0 vs_duckdb=1.500 publish_peak_rss_mib=900.2 rows=10000000"
        );
        let keys: Vec<&str> = line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k).collect();
        assert_eq!(keys, ["publish_mb_s", "duckdb_mb_s", "vs_duckdb", "publish_peak_rss_mib", "rows"]);
    }

    #[test]
    fn a_missing_contender_prints_nan_not_a_number() {
        let line = summary_line(120.0, f64::NAN, f64::NAN, 5);
        assert_eq!(line, "publish_mb_s=120.0 duckdb_mb_s=NaN vs_duckdb=NaN publish_peak_rss_mib=NaN rows=5");
    }

    #[test]
    fn vehicles_alternate_days_and_gps_takes_a_new_dataset_each_run() {
        let export = |name: &str| Export { path: PathBuf::from(name), bytes: 1, rows: 1 };
        let exports = Exports {
            definition_for: Box::new(|d: &str| d.to_owned()),
            files: vec![export("n"), export("n1")],
        };
        let picked: Vec<(PathBuf, String)> =
            (1..=3).map(|r| exports.for_run(Kind::Vehicles, r)).map(|(e, d)| (e.path.clone(), d)).collect();
        assert_eq!(picked[0], (PathBuf::from("n1"), "vehicle-registry".to_owned()));
        assert_eq!(picked[1].0, PathBuf::from("n"));
        assert_eq!(picked[2].0, PathBuf::from("n1"));
        let gps = Exports { definition_for: Box::new(|d: &str| d.to_owned()), files: vec![export("g")] };
        assert_eq!(gps.for_run(Kind::Gps, 2).1, "gps-positions-r2");
    }
}
