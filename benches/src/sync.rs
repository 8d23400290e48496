//! Scenario `sync`: how long a new version takes to reach every subscribed province.
//!
//! Setup (not measured): a ministry `ferryd` and `--subscribers` (31) province `ferryd`
//! processes on loopback, each with a `[[subscription]]` of the vehicle registry at the ministry
//! (into its own store). The ministry publishes a `--rows` (1M) registry and every province
//! takes it in full (the subscription's first pull).
//!
//! Each run: the ministry publishes the next day's export, `--fraction` (1 %) of the vehicles
//! changed. The clock starts when the publish is acknowledged (the version committed at the
//! ministry) and stops, per province, when that version's signed manifest is in the province's
//! store (its commit is the last step of a pull: files, then directory entries, then the
//! manifest). Every province's files are checked afterwards against the ministry's copy of the
//! same version (sizes and BLAKE3).
//!
//! Recorded: every province's seconds per run; `sync_p50_s` is the median over all of them,
//! `sync_max_s` the largest; `hub_peak_rss_mib` is the ministry's `VmHWM` after the last run
//! (publishing included). The target, every province within 10 s, is printed, not
//! asserted.
//!
//! Neighbours: [`crate::fleet`] runs the processes, [`crate::report`] prints the line.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use clap::Args;
use ferry_client::conn::Connector;
use ferry_client::publish::publish_file;
use ferry_net::conn::NodeAddr;
use ferry_net::tls::Credentials;
use ferry_proto::{Role, SourceFormat};
use ferry_tables::synth;

use crate::fleet::{Binaries, Launcher, NodeOptions, NodeProc, Pki, ScratchArgs, VersionFiles};
use crate::report::progress;

const DATASET: &str = "vehicle-registry";

/// Options of `ferry-bench sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Rows of the vehicle registry.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Share of the vehicles changed by each next day's export.
    #[arg(long, default_value_t = 0.01)]
    pub fraction: f64,
    /// Province nodes subscribed to the ministry.
    #[arg(long, default_value_t = 31)]
    pub subscribers: usize,
    /// Versions published and timed (one run each).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Longest one version may take to reach every province, seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

pub fn run(args: &SyncArgs) -> Result<()> {
    if args.subscribers == 0 || args.runs == 0 {
        bail!("--subscribers and --runs must be at least 1");
    }
    let scratch = tempfile::Builder::new().prefix("ferry-bench-sync-").tempdir_in(args.scratch.root()?)?;
    let bins = Binaries::build()?;
    let pki = Pki::new();
    let ministry =
        NodeProc::start(&bins, &pki, scratch.path(), &NodeOptions::loopback_ministry(args.rows.div_ceil(4)))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let limit = Duration::from_secs(args.timeout_s);

    let mut table: Vec<RecordBatch> = synth::vehicle_registry(args.scratch.seed, args.rows).collect();
    let started = Instant::now();
    runtime.block_on(publish(&ministry, scratch.path(), &table, 1))?;
    progress(&format!("v1 published at the ministry in {:.1} s", started.elapsed().as_secs_f64()));

    let provinces = start_provinces(&bins, &pki, scratch.path(), &ministry, args.subscribers)?;
    let started = Instant::now();
    let first = await_version(&provinces, 1, Instant::now(), limit)?;
    progress(&format!(
        "{} provinces subscribed and took v1 in full in {:.1} s (slowest {:.1} s after the last started)",
        provinces.len(),
        started.elapsed().as_secs_f64(),
        first.iter().copied().fold(0.0, f64::max)
    ));

    let mut all = Vec::new();
    for run in 0..args.runs {
        let version = run as u64 + 2;
        table = synth::edit_vehicle_registry(&table, args.scratch.seed + version, args.fraction)?.batches;
        let committed = runtime.block_on(publish(&ministry, scratch.path(), &table, version))?;
        let seconds = await_version(&provinces, version, committed, limit)?;
        check_copies(&ministry, &provinces, version)?;
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        progress(&format!(
            "run {}: v{version} held by all {} provinces, median {:.3} s, slowest {:.3} s after the publish",
            run + 1,
            provinces.len(),
            median(&sorted),
            sorted.last().copied().unwrap_or(f64::NAN)
        ));
        all.extend(seconds);
    }
    all.sort_by(f64::total_cmp);
    let (p50, max) = (median(&all), all.last().copied().unwrap_or(f64::NAN));
    let hub_rss = ministry.peak_rss_mib();
    let verdict = if max <= 10.0 { "met" } else { "NOT met" };
    progress(&format!(
        "target: every province holds the new version within 10 s: {verdict} (slowest {max:.3} s)"
    ));
    drop(provinces);
    println!(
        "subscribers={} rows={} fraction={} runs={} sync_p50_s={p50:.3} sync_max_s={max:.3} hub_peak_rss_mib={hub_rss:.1}",
        args.subscribers, args.rows, args.fraction, args.runs
    );
    Ok(())
}

/// Publishes `table` at the ministry as its operator; returns when the version is committed.
async fn publish(
    ministry: &NodeProc,
    scratch: &Path,
    table: &[RecordBatch],
    version: u64,
) -> Result<Instant> {
    let export = scratch.join(format!("export-v{version}.parquet"));
    synth::write_parquet(&export, synth::vehicle_registry_schema(), table.iter().cloned())?;
    let creds = Credentials::load(&ministry.operator)?;
    let node = NodeAddr { addr: ministry.addr, server_name: ministry.name.clone() };
    let session = Connector::new(&creds, node)?.connect().await?;
    let definition = synth::vehicle_registry_definition(DATASET, &ministry.name);
    let published = publish_file(&session, &export, definition, SourceFormat::Parquet).await;
    let committed = Instant::now();
    session.close();
    std::fs::remove_file(&export)?;
    let published = published?;
    if published.version.get() != version {
        bail!("the ministry published {} where v{version} was expected", published.version);
    }
    Ok(committed)
}

/// Starts the province nodes, each subscribed to the registry at the ministry.
fn start_provinces(
    bins: &Binaries,
    pki: &Pki,
    root: &Path,
    ministry: &NodeProc,
    count: usize,
) -> Result<Vec<NodeProc>> {
    let extra = format!(
        "\n[peers.{name}]\naddress = \"{addr}\"\nserver-name = \"{name}\"\n\n\
         [[subscription]]\ndataset = \"{DATASET}\"\nfrom = \"{name}\"\n",
        name = ministry.name,
        addr = ministry.addr,
    );
    (1..=count)
        .map(|i| {
            let name = format!("prov{i:02}");
            let opts = NodeOptions {
                name: &name,
                role: Role::Province,
                listen: [127, 0, 0, 1].into(),
                extra: extra.clone(),
                launcher: Launcher::direct(),
                storage: None,
            };
            NodeProc::start(bins, pki, root, &opts).with_context(|| format!("starting {name}"))
        })
        .collect()
}

/// Waits until every province holds `version` (its signed manifest committed); each one's
/// seconds after `since`.
fn await_version(provinces: &[NodeProc], version: u64, since: Instant, limit: Duration) -> Result<Vec<f64>> {
    let mut seconds: Vec<Option<f64>> = vec![None; provinces.len()];
    loop {
        for (held, node) in seconds.iter_mut().zip(provinces) {
            if held.is_none() && node.version_dir(DATASET, version).join("manifest.signed").exists() {
                *held = Some(since.elapsed().as_secs_f64());
            }
        }
        if seconds.iter().all(Option::is_some) {
            return Ok(seconds.into_iter().flatten().collect());
        }
        if since.elapsed() > limit {
            let missing: Vec<_> = provinces
                .iter()
                .zip(&seconds)
                .filter(|(_, s)| s.is_none())
                .map(|(n, _)| n.name.as_str())
                .collect();
            bail!("v{version} not held within {limit:?} by {}; see their ferryd.log", missing.join(", "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every province's stored files of `version` equal the ministry's (sizes and BLAKE3).
fn check_copies(ministry: &NodeProc, provinces: &[NodeProc], version: u64) -> Result<()> {
    let source = VersionFiles::read(&ministry.version_dir(DATASET, version))?;
    for node in provinces {
        source.check_copy(&node.version_dir(DATASET, version), &node.name)?;
    }
    Ok(())
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
