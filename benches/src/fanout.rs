//! Scenario `fanout`: one ministry `ferryd` serving one version to all provinces at once.
//!
//! Setup (not measured): an export of `--size-mib` rows (an `id int64` key and a 1 MiB random
//! `payload`, as in [`crate::transfer`]) is published through the node's operator as ONE version
//! split into `--files` Parquet files. The node is then restarted on the same config and store,
//! so its peak RSS (`VmHWM`) counts serving only, not the publish.
//!
//! Each run, interleaved: one `ferry pull` alone (the single-puller figure), then `--pullers`
//! (31) `ferry pull` processes started together, each with the certificate of its own
//! department (`prov01`, …, role Operator) and its own empty directory. All of them are polled
//! every 10 ms so each one's exit is caught; the whole fan-out is bounded by `--timeout-s`.
//! Every puller's output is checked (size and BLAKE3 of every file against the node's stored
//! files) and removed before the next run.
//!
//! Recorded per run: single MB/s; aggregate MB/s = pullers × bytes / wall time of the fan-out
//! (first spawn to last exit); each puller's own MB/s (bytes / its own wall time); slowest,
//! fastest and mean of those; ferryd CPU seconds per GB served; ferryd's `VmHWM` after the
//! fan-out. The issue's targets are printed, not asserted: aggregate ≥ 80 % of the single
//! figure, no province below half the mean.
//!
//! Neighbours: [`crate::fleet`] runs the processes, [`crate::transfer`] makes and publishes the
//! export, [`crate::report`] prints the table.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use ferry_net::tls::TlsPaths;
use ferry_proto::Role;

use crate::fleet::{
    Binaries, Launcher, Measured, NodeOptions, NodeProc, Pki, Running, ScratchArgs, VersionFiles,
    ferry_command, free_bytes, run_measured,
};
use crate::report::{Report, Unit, nproc, progress, show};
use crate::servers;
use crate::transfer::{DATASET, generate_export, publish};

/// Options of `ferry-bench fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Total size of the dataset version (1 MiB per row).
    #[arg(long, default_value_t = 256)]
    pub size_mib: usize,
    /// Files the version is split into (the node's `rows-per-file`).
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Runs (interleaved: single puller, then the fan-out).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Province pullers started together.
    #[arg(long, default_value_t = 31)]
    pub pullers: usize,
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Longest one pull or one whole fan-out may take, seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
}

/// The serving node, the provinces' credentials and the version's files.
struct Fixture {
    scratch: tempfile::TempDir,
    bins: Binaries,
    _pki: Pki,
    node: NodeProc,
    provinces: Vec<TlsPaths>,
    /// The version's files as the node stored them.
    version: VersionFiles,
    /// ferryd's `VmHWM` while it published (before the restart), MiB.
    publish_peak_rss_mib: f64,
}

impl Fixture {
    fn prepare(args: &FanoutArgs) -> Result<Self> {
        let root = args.scratch.root()?;
        let size = args.size_mib as u64 * (1 << 20);
        // The export, its upload copy, the publish stage and the store (4 × size) while
        // publishing; then the store plus one run's outputs (pullers × size).
        let need = size as f64 * (args.pullers as f64 + 1.0).max(4.0) * 1.1;
        let free = free_bytes(&root)?;
        if (free as f64) < need {
            bail!(
                "not enough disk in {}: {:.1} GiB free, the scenario needs about {:.1} GiB \
                 ({} MiB × max(pullers + 1, 4) + 10 %); use --dir, --size-mib or --pullers",
                root.display(),
                free as f64 / f64::from(1 << 30),
                need / f64::from(1 << 30),
                args.size_mib
            );
        }
        let scratch = tempfile::Builder::new().prefix("ferry-bench-fanout-").tempdir_in(&root)?;
        let rows = args.size_mib;
        let export = generate_export(scratch.path(), rows, args.scratch.seed)?;
        let bins = Binaries::build()?;
        let pki = Pki::new();
        let opts = NodeOptions::loopback_ministry(rows.div_ceil(args.files));
        let setup = NodeProc::prepare(&pki, scratch.path(), &opts)?;
        let started = Instant::now();
        let node = NodeProc::launch(&bins, &setup, &opts.launcher)?;
        publish(&node, &export)?;
        let publish_peak_rss_mib = node.peak_rss_mib();
        drop(node);
        std::fs::remove_file(&export)?;
        // A fresh process on the same store: its VmHWM is the serving side's alone.
        let node = NodeProc::launch(&bins, &setup, &opts.launcher)?;
        let version = VersionFiles::read(&node.version_dir(DATASET, 1))?;
        let provinces = (1..=args.pullers)
            .map(|i| {
                let dept = format!("prov{i:02}");
                pki.issue(&dept, &dept, Role::Operator)
            })
            .collect();
        progress(&format!(
            "version published and node restarted in {:.1} s: {} files, {} bytes; {} province certificates",
            started.elapsed().as_secs_f64(),
            version.files.len(),
            version.bytes,
            args.pullers
        ));
        Ok(Self { scratch, bins, _pki: pki, node, provinces, version, publish_peak_rss_mib })
    }

    /// A fresh empty directory.
    fn dest(&self, name: &str) -> Result<PathBuf> {
        crate::fleet::fresh_dir(self.scratch.path(), name)
    }

    /// `ferry pull` of the version into `dest` as `user`.
    fn pull_command(&self, user: &TlsPaths, dest: &Path) -> std::process::Command {
        let mut command = ferry_command(&self.bins, &Launcher::direct(), "pull", user, &self.node.node_arg());
        command.args([DATASET, "--version", "1", "--json", "--to"]).arg(dest);
        command
    }

    /// Fails unless `dest` holds exactly the version's files (size and BLAKE3); `log` is shown
    /// with the failure.
    fn check(&self, dest: &Path, who: &str, log: &Path) -> Result<()> {
        let result = self.version.check_copy(&dest.join(DATASET).join("v1"), who);
        result.map_err(|e| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            e.context(format!("log of {who}: {}", text.trim()))
        })
    }

    /// One puller alone: MB/s and ferryd CPU seconds.
    fn single(&self, run: usize, limit: Duration) -> Result<(f64, f64)> {
        let dest = self.dest(&format!("single-{run}"))?;
        let log = self.scratch.path().join(format!("single-{run}.log"));
        let server = self.node.cpu();
        let measured = run_measured(&mut self.pull_command(&self.provinces[0], &dest), &log, limit)?;
        let server = self.node.cpu() - server;
        self.check(&dest, "the single puller", &log)?;
        std::fs::remove_dir_all(&dest)?;
        Ok((self.version.bytes as f64 / 1e6 / measured.seconds.max(1e-9), server))
    }

    /// All provinces at once.
    fn fanout(&self, run: usize, limit: Duration) -> Result<Fanout> {
        let mut dests = Vec::new();
        let mut logs = Vec::new();
        for i in 1..=self.provinces.len() {
            dests.push(self.dest(&format!("fan-{run}-prov{i:02}"))?);
            logs.push(self.scratch.path().join(format!("fan-{run}-prov{i:02}.log")));
        }
        let mut commands: Vec<_> =
            self.provinces.iter().zip(&dests).map(|(user, dest)| self.pull_command(user, dest)).collect();
        let server = self.node.cpu();
        let harness = servers::self_cpu();
        let waits = self.node.metric(BUDGET_WAITS);
        let started = Instant::now();
        let mut running = Vec::new();
        for (command, log) in commands.iter_mut().zip(&logs) {
            match Running::spawn(command, log) {
                Ok(r) => running.push(Some(r)),
                Err(e) => {
                    for r in running.iter_mut().flatten() {
                        r.kill();
                    }
                    return Err(e.context("starting the pullers"));
                }
            }
        }
        let spawned = started.elapsed().as_secs_f64();
        let mut done: Vec<Option<Measured>> = vec![None; running.len()];
        let mut failed = Vec::new();
        let mut wall = 0.0;
        let kill_all = |running: &mut Vec<Option<Running>>| {
            for r in running.iter_mut().flatten() {
                r.kill();
            }
        };
        while running.iter().any(Option::is_some) {
            let mut poll_error = None;
            for (i, slot) in running.iter_mut().enumerate() {
                let Some(r) = slot else { continue };
                match r.poll() {
                    Ok(None) => {}
                    Ok(Some((status, measured))) => {
                        wall = started.elapsed().as_secs_f64();
                        if !status.success() {
                            failed.push((i, status));
                        }
                        done[i] = Some(measured);
                        *slot = None;
                    }
                    Err(e) => {
                        poll_error = Some(e.context(format!("polling puller prov{:02}", i + 1)));
                        break;
                    }
                }
            }
            if let Some(e) = poll_error {
                kill_all(&mut running);
                return Err(e);
            }
            if started.elapsed() > limit {
                let left = running.iter().filter(|r| r.is_some()).count();
                kill_all(&mut running);
                bail!("{left} of {} pullers did not finish within {limit:?}", self.provinces.len());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let server = self.node.cpu() - server;
        let harness = servers::self_cpu() - harness;
        let budget_waits =
            self.node.metric(BUDGET_WAITS).zip(waits).map_or(f64::NAN, |(after, before)| after - before);
        if let Some(&(first, status)) = failed.first() {
            let names: Vec<String> = failed.iter().map(|(i, s)| format!("prov{:02} ({s})", i + 1)).collect();
            let text = std::fs::read_to_string(&logs[first]).unwrap_or_default();
            bail!(
                "{} of {} pullers failed: {}; log of prov{:02} ({status}): {}",
                failed.len(),
                logs.len(),
                names.join(", "),
                first + 1,
                text.trim()
            );
        }
        let peak_rss_mib = self.node.peak_rss_mib();
        for (i, (dest, log)) in dests.iter().zip(&logs).enumerate() {
            self.check(dest, &format!("prov{:02}", i + 1), log)?;
            std::fs::remove_dir_all(dest)?;
        }
        let mb_s: Vec<f64> =
            done.iter().flatten().map(|m| self.version.bytes as f64 / 1e6 / m.seconds.max(1e-9)).collect();
        let puller_peak_rss_mib = done.iter().flatten().map(|m| m.peak_rss_mib).fold(0.0, f64::max);
        Ok(Fanout { wall, spawned, mb_s, server, harness, peak_rss_mib, puller_peak_rss_mib, budget_waits })
    }
}

/// What one fan-out measured.
struct Fanout {
    /// First spawn to last exit, seconds.
    wall: f64,
    /// Time to spawn every puller, seconds.
    spawned: f64,
    /// Each puller's own MB/s.
    mb_s: Vec<f64>,
    /// ferryd CPU seconds during the fan-out.
    server: f64,
    /// This process's CPU seconds during the fan-out (spawning and polling).
    harness: f64,
    /// ferryd's VmHWM after the fan-out, MiB.
    peak_rss_mib: f64,
    /// The largest VmHWM of a puller, MiB.
    puller_peak_rss_mib: f64,
    /// Chunks that waited for room in the node's serve budget during the fan-out.
    budget_waits: f64,
}

/// The node's counter of chunks that waited for room in its serve budget.
const BUDGET_WAITS: &str = "ferry_transfer_serve_budget_waits_total";

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &FanoutArgs) -> Result<()> {
    if args.runs == 0 || args.files == 0 || args.pullers == 0 || args.size_mib < args.files {
        bail!("--runs, --files and --pullers must be at least 1, and --size-mib at least --files");
    }
    if args.pullers > 99 {
        bail!("--pullers is at most 99 (departments prov01 … prov99)");
    }
    let limit = Duration::from_secs(args.timeout_s);
    let fixture = Fixture::prepare(args)?;
    let n = args.pullers as f64;
    let bytes = fixture.version.bytes;
    let gb = bytes as f64 / 1e9;
    let mut report = Report::default();
    for run in 1..=args.runs {
        progress(&format!("run {run}/{}: one puller alone", args.runs));
        let (single, single_server) = fixture.single(run, limit)?;
        progress(&format!("run {run}/{}: {} pullers at once", args.runs, args.pullers));
        let fan = fixture.fanout(run, limit)?;
        let aggregate = n * bytes as f64 / 1e6 / fan.wall.max(1e-9);
        let slowest = fan.mb_s.iter().copied().fold(f64::INFINITY, f64::min);
        let fastest = fan.mb_s.iter().copied().fold(0.0, f64::max);
        let mean = fan.mb_s.iter().sum::<f64>() / fan.mb_s.len() as f64;
        let below_half = fan.mb_s.iter().filter(|&&v| v < mean / 2.0).count();
        progress(&format!(
            "run {run}: single {single:.1} MB/s; fan-out wall {:.2} s, aggregate {aggregate:.1} MB/s \
             ({:.3} of single), pullers {slowest:.1} – {fastest:.1} MB/s (mean {mean:.1}, {below_half} below half), \
             ferryd VmHWM {:.1} MiB, {} chunks waited for serve budget",
            fan.wall,
            aggregate / single,
            fan.peak_rss_mib,
            fan.budget_waits
        ));
        let mb = Unit::MegabytesPerSecond;
        report.record("single_mb_s", mb, "one puller alone: MB/s", single);
        report.record(
            "single_server_cpu_s_per_gb",
            Unit::Ratio,
            "one puller alone: ferryd CPU s per GB",
            single_server / gb,
        );
        report.record(
            "aggregate_mb_s",
            mb,
            &format!("fan-out: {} × bytes / wall time of the whole fan-out", args.pullers),
            aggregate,
        );
        report.record(
            "aggregate_vs_single",
            Unit::Ratio,
            "aggregate MB/s / single-puller MB/s (target ≥ 0.8)",
            aggregate / single,
        );
        for &v in &fan.mb_s {
            report.record("puller_mb_s", mb, "fan-out: each puller's own MB/s (all pullers of all runs)", v);
        }
        report.record("slowest_mb_s", mb, "fan-out: slowest puller's MB/s", slowest);
        report.record("fastest_mb_s", mb, "fan-out: fastest puller's MB/s", fastest);
        report.record("mean_mb_s", mb, "fan-out: mean of the pullers' MB/s", mean);
        report.record("slowest_vs_mean", Unit::Ratio, "slowest puller / mean (target ≥ 0.5)", slowest / mean);
        report.record(
            "pullers_below_half_mean",
            Unit::Count,
            "pullers below half the mean",
            below_half as f64,
        );
        report.record("fanout_wall_s", Unit::Seconds, "fan-out: first spawn to last exit", fan.wall);
        report.record("spawn_s", Unit::Seconds, "fan-out: time to spawn every puller", fan.spawned);
        report.record(
            "server_cpu_s_per_gb",
            Unit::Ratio,
            "fan-out: ferryd CPU seconds per GB served",
            fan.server / (n * gb),
        );
        report.record(
            "harness_cpu_s",
            Unit::Seconds,
            "fan-out: ferry-bench's own CPU (spawn + 10 ms polling)",
            fan.harness,
        );
        report.record(
            "ministry_peak_rss_mib",
            Unit::Mebibytes,
            "ferryd VmHWM after the fan-out (serving only)",
            fan.peak_rss_mib,
        );
        report.record(
            "serve_budget_waits",
            Unit::Count,
            "fan-out: chunks that waited for room in ferryd's serve budget",
            fan.budget_waits,
        );
        report.record(
            "puller_peak_rss_mib",
            Unit::Mebibytes,
            "largest VmHWM of a puller",
            fan.puller_peak_rss_mib,
        );
    }
    report.note(format!(
        "{} Parquet files, {} bytes ({} rows of 1 MiB random payload), one ferryd on loopback; {} pullers \
         (departments prov01…, role Operator) started together into empty directories",
        fixture.version.files.len(),
        bytes,
        args.size_mib,
        args.pullers
    ));
    report.note(
        "every puller's output checked (size and BLAKE3 of every file); MB/s = 10^6 bytes per wall second; \
         a puller's own wall time runs from its spawn to its exit (caught by 10 ms polling)",
    );
    report.note(format!(
        "ferryd restarted after the publish (VmHWM while publishing: {:.1} MiB), so ministry_peak_rss_mib \
         counts serving only; on {} cores the pullers, ferryd and this harness share the CPUs",
        fixture.publish_peak_rss_mib,
        nproc()
    ));
    println!(
        "ferry-bench fanout: size_mib={} files={} pullers={} runs={} seed={} nproc={}",
        args.size_mib,
        args.files,
        args.pullers,
        args.runs,
        args.scratch.seed,
        nproc()
    );
    print!("{}", report.table());
    let median = |key: &str| report.median_of(key);
    let worst = |key: &str| {
        report.metric(key).map_or(f64::NAN, |m| m.samples.iter().copied().fold(f64::INFINITY, f64::min))
    };
    let peak = report
        .metric("ministry_peak_rss_mib")
        .map_or(f64::NAN, |m| m.samples.iter().copied().fold(0.0, f64::max));
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "target: aggregate ≥ 80% of the single-puller figure: {} (median {}, worst run {})",
        verdict(worst("aggregate_vs_single") >= 0.8),
        show(median("aggregate_vs_single"), 3),
        show(worst("aggregate_vs_single"), 3)
    );
    println!(
        "target: no province below half the mean: {} (slowest/mean median {}, worst run {})",
        verdict(worst("slowest_vs_mean") >= 0.5),
        show(median("slowest_vs_mean"), 3),
        show(worst("slowest_vs_mean"), 3)
    );
    println!(
        "aggregate_vs_single={} slowest_vs_mean={} ministry_peak_rss_mib={} single_mb_s={} aggregate_mb_s={} \
         slowest_mb_s={} fastest_mb_s={} mean_mb_s={} server_cpu_s_per_gb={} pullers={}",
        show(median("aggregate_vs_single"), 3),
        show(median("slowest_vs_mean"), 3),
        show(peak, 1),
        show(median("single_mb_s"), 1),
        show(median("aggregate_mb_s"), 1),
        show(median("slowest_mb_s"), 1),
        show(median("fastest_mb_s"), 1),
        show(median("mean_mb_s"), 1),
        show(median("server_cpu_s_per_gb"), 3),
        args.pullers
    );
    Ok(())
}
