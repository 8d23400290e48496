//! `ferry-bench query`: online query latency of a node against DuckDB on the same Parquet files
//! in the same run.
//!
//! 1. A generated vehicle registry of `--rows` rows (10M by default) is published to one node
//!    (canonical files: key-sorted by VIN, page index, bloom filters on the key).
//! 2. Keys are sampled from the stored files: VINs (the key) and plates (a non-key column).
//! 3. ferry: each query over QUIC on loopback through `ferry_client::query` (Arrow IPC result,
//!    decoded): key lookups `vin = '…'`, non-key lookups `plate = '…'`, and key ranges
//!    (`vin BETWEEN … AND …`, about `--range-rows` rows) with a projection of three columns.
//! 4. DuckDB (from Python, one process, so its start-up is not counted; its Parquet metadata
//!    cache on) runs the same queries as SQL over the same files, each timed alone.
//!
//! Last line: `key_p99_ms=… duckdb_key_p99_ms=… vs_duckdb_key=… range_vs_duckdb=…` (ratios are
//! ferry / DuckDB at p99 for keys and at p50 for ranges; below 1 ferry is faster).

use anyhow::{Context, Result, bail};
use arrow::array::{AsArray, RecordBatch};
use ferry_client::conn::Session;
use ferry_client::publish::publish_file;
use ferry_client::query::query_batches;
use ferry_proto::query::{QueryFormat, QuerySpec};
use ferry_proto::{DatasetId, Role, SourceFormat};
use ferry_testkit::{NodeSpec, TestNode, TestPki, vehicle_export};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Rows of the vehicle registry.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Key lookups timed (by VIN, each a different key).
    #[arg(long, default_value_t = 200)]
    pub keys: usize,
    /// Lookups by plate (a non-key column: every row group's plate pages are read).
    #[arg(long, default_value_t = 20)]
    pub plates: usize,
    /// Key ranges timed.
    #[arg(long, default_value_t = 50)]
    pub ranges: usize,
    /// Rows in each key range.
    #[arg(long, default_value_t = 1_000)]
    pub range_rows: usize,
    /// Seed of the generated registry.
    #[arg(long, default_value_t = 20_261_206)]
    pub seed: u64,
}

const DATASET: &str = "vehicle-registry";

/// The queries of one run, the same for both engines.
struct Workload {
    keys: Vec<String>,
    plates: Vec<String>,
    /// (low, high) VINs.
    ranges: Vec<(String, String)>,
}

pub fn run(args: &QueryArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: &QueryArgs) -> Result<()> {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("zj", Role::Province)).await;
    let scratch = tempfile::tempdir()?;
    let (path, definition) = vehicle_export(scratch.path(), DATASET, &node.dept, args.rows, args.seed);
    let session = node.operator_session().await;
    let started = Instant::now();
    let published = publish_file(&session, &path, definition, SourceFormat::Parquet).await?;
    eprintln!("published {} rows in {:.1} s", published.rows, started.elapsed().as_secs_f64());
    std::fs::remove_file(&path)?;
    let files = stored_files(&node.version_dir(DATASET, 1))?;
    let workload = sample(&files, args)?;
    eprintln!(
        "{} files; {} keys, {} plates, {} ranges",
        files.len(),
        workload.keys.len(),
        workload.plates.len(),
        workload.ranges.len()
    );

    let ferry = ferry_latencies(&session, &workload).await?;
    session.close();
    let duck = duckdb_latencies(&files, &workload, scratch.path())?;
    let report = |name: &str, f: &mut Vec<f64>, d: &mut Vec<f64>| {
        eprintln!(
            "{name:<6} ferry p50 {:8.2} ms p99 {:8.2} ms | duckdb p50 {:8.2} ms p99 {:8.2} ms",
            percentile(f, 0.5),
            percentile(f, 0.99),
            percentile(d, 0.5),
            percentile(d, 0.99)
        );
    };
    let (mut fk, mut fp, mut fr) = ferry;
    let (mut dk, mut dp, mut dr) = duck;
    report("key", &mut fk, &mut dk);
    report("plate", &mut fp, &mut dp);
    report("range", &mut fr, &mut dr);
    println!(
        "rows={} key_p50_ms={:.3} duckdb_key_p50_ms={:.3} plate_p50_ms={:.3} plate_p99_ms={:.3} duckdb_plate_p50_ms={:.3} \
         duckdb_plate_p99_ms={:.3} range_p50_ms={:.3} range_p99_ms={:.3} duckdb_range_p50_ms={:.3} duckdb_range_p99_ms={:.3}",
        published.rows,
        percentile(&mut fk, 0.5),
        percentile(&mut dk, 0.5),
        percentile(&mut fp, 0.5),
        percentile(&mut fp, 0.99),
        percentile(&mut dp, 0.5),
        percentile(&mut dp, 0.99),
        percentile(&mut fr, 0.5),
        percentile(&mut fr, 0.99),
        percentile(&mut dr, 0.5),
        percentile(&mut dr, 0.99),
    );
    let (key_p99, duck_key_p99) = (percentile(&mut fk, 0.99), percentile(&mut dk, 0.99));
    println!(
        "key_p99_ms={key_p99:.3} duckdb_key_p99_ms={duck_key_p99:.3} vs_duckdb_key={:.3} range_vs_duckdb={:.3}",
        key_p99 / duck_key_p99,
        percentile(&mut fr, 0.5) / percentile(&mut dr, 0.5)
    );
    Ok(())
}

fn stored_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no table files under {}", dir.display());
    }
    Ok(files)
}

/// Keys spread over the whole table: every file's VINs and plates at a stride.
fn sample(files: &[PathBuf], args: &QueryArgs) -> Result<Workload> {
    let mut vins = Vec::new();
    let mut plates = Vec::new();
    for path in files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [0, 1]);
        for batch in builder.with_projection(mask).build()? {
            let batch: RecordBatch = batch?;
            let (v, p) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
            for i in (0..batch.num_rows()).step_by(997) {
                vins.push(v.value(i).to_owned());
                plates.push(p.value(i).to_owned());
            }
        }
    }
    let pick = |all: &[String], n: usize| -> Vec<String> {
        let stride = (all.len() / n.max(1)).max(1);
        all.iter().step_by(stride).take(n).cloned().collect()
    };
    let keys = pick(&vins, args.keys);
    let plates = pick(&plates, args.plates);
    // Consecutive samples are 997 rows apart.
    let span = (args.range_rows / 997).max(1);
    let starts = pick(&vins[..vins.len().saturating_sub(span + 1)], args.ranges);
    let ranges = starts
        .into_iter()
        .filter_map(|low| {
            let at = vins.iter().position(|v| *v == low)?;
            Some((low, vins.get(at + span)?.clone()))
        })
        .collect();
    Ok(Workload { keys, plates, ranges })
}

fn spec(predicate: &str, columns: Option<&[&str]>) -> Result<QuerySpec> {
    let columns = columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect());
    Ok(QuerySpec::new(Some(predicate), columns, None, QueryFormat::ArrowIpc)?)
}

type Latencies = (Vec<f64>, Vec<f64>, Vec<f64>);

async fn ferry_latencies(session: &Session, w: &Workload) -> Result<Latencies> {
    let dataset = DatasetId::new(DATASET)?;
    let time = |spec: QuerySpec| {
        let dataset = dataset.clone();
        async move {
            let started = Instant::now();
            let (_, done) = query_batches(session, &dataset, None, &spec).await?;
            anyhow::Ok((started.elapsed().as_secs_f64() * 1e3, done.rows))
        }
    };
    // One warm-up of each kind (footers into the node's cache), not counted.
    time(spec(&format!("vin = '{}'", w.keys[0]), None)?).await?;
    let mut keys = Vec::new();
    for vin in &w.keys {
        let (ms, rows) = time(spec(&format!("vin = '{vin}'"), None)?).await?;
        if rows != 1 {
            bail!("vin = '{vin}' returned {rows} rows");
        }
        keys.push(ms);
    }
    let mut plates = Vec::new();
    for plate in &w.plates {
        let (ms, rows) = time(spec(&format!("plate = '{plate}'"), None)?).await?;
        if rows == 0 {
            bail!("plate = '{plate}' returned no row");
        }
        plates.push(ms);
    }
    let mut ranges = Vec::new();
    for (low, high) in &w.ranges {
        let predicate = format!("vin BETWEEN '{low}' AND '{high}'");
        let (ms, _) = time(spec(&predicate, Some(&["vin", "plate", "registered_on"]))?).await?;
        ranges.push(ms);
    }
    Ok((keys, plates, ranges))
}

const DUCKDB: &str = r#"
import json, sys, time, duckdb
files, queries = json.load(open(sys.argv[1]))
con = duckdb.connect()
for setting in ("SET enable_object_cache = true", "SET parquet_metadata_cache = true"):
    try:
        con.execute(setting)
    except Exception:
        pass
paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
con.execute("CREATE VIEW t AS SELECT * FROM read_parquet([" + paths + "])")
def fetch(result):
    # Arrow, as ferry's answer is decoded into Arrow batches.
    return result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()
out = {}
for kind, items in queries.items():
    fetch(con.execute(items[0]))
    times = []
    for q in items:
        started = time.perf_counter()
        fetch(con.execute(q))
        times.append((time.perf_counter() - started) * 1e3)
    out[kind] = times
print(json.dumps(out))
"#;

fn duckdb_latencies(files: &[PathBuf], w: &Workload, scratch: &Path) -> Result<Latencies> {
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let keys: Vec<String> = w.keys.iter().map(|v| format!("SELECT * FROM t WHERE vin = '{v}'")).collect();
    let plates: Vec<String> =
        w.plates.iter().map(|p| format!("SELECT * FROM t WHERE plate = '{p}'")).collect();
    let ranges: Vec<String> = w
        .ranges
        .iter()
        .map(|(l, h)| format!("SELECT vin, plate, registered_on FROM t WHERE vin BETWEEN '{l}' AND '{h}'"))
        .collect();
    let input = scratch.join("duckdb-queries.json");
    let queries = serde_json::json!({ "key": keys, "plate": plates, "range": ranges });
    std::fs::write(&input, serde_json::to_vec(&serde_json::json!([files, queries]))?)?;
    let script = scratch.join("duckdb_queries.py");
    std::fs::write(&script, DUCKDB)?;
    let out =
        Command::new("python3").arg(&script).arg(&input).output().context("running python3 with duckdb")?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let times: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading duckdb's timings")?;
    let list = |kind: &str| -> Vec<f64> {
        times[kind].as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default()
    };
    Ok((list("key"), list("plate"), list("range")))
}

/// The `q` quantile of `values` (nearest rank), sorting them; NaN when empty.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}
