//! Scenario `memory`: peak RSS of `ferryd` serving, and of the `ferry pull` process receiving,
//! one large version (20 GiB by default; `--sizes-gib 2,20` runs several sizes, each on a fresh
//! `ferryd`, to show whether memory grows with size; `--runs N` repeats each size, interleaved,
//! and the summary compares medians: a puller's peak varies from run to run with how long its
//! disk writes stall while the streams' receive windows fill).
//!
//! Setup (not measured): publishing 20 GiB through the upload path would need about 4 × the
//! size of disk (export, upload copy, stage, store), so the version is built as a fixture with
//! the project's own code instead, exactly as a publish on the node would build it:
//! - 1 MiB random-byte rows with an ascending `int64` key (the `transfer` dataset's definition)
//!   are written with [`CanonicalWriter`] into a staging directory, with the layout the node's
//!   config gives (`rows-per-file` = `--file-mib`, at most 256: the writer concatenates up to a
//!   file's rows into one Arrow batch);
//! - each file is described with [`describe_file`] at the node's chunk size, the [`Manifest`] is
//!   built as `net/publish.rs` builds it, signed with the node's own key ([`ManifestSigner`]),
//!   and committed with [`Store::commit_version`] (after [`Store::put_definition`]) into the
//!   node's local store, opened from the node's own config, moving the files (a rename each).
//!
//! Then `ferryd` starts on that store (it verifies the manifest when it loads it) and one
//! `ferry pull` fetches the whole version into an empty directory, measured from outside (wall
//! time, CPU, `VmHWM` sampled every 10 ms, and where that peak stood after 5%, 25% and 50% of
//! the pull's time: a pull's buffers fill for the first time in its first seconds, so a short
//! pull can end before the level a long one reaches in those seconds); ferryd's `VmHWM` and its
//! serving chunk buffers (`ferry_transfer_serve_buffers_bytes`, scraped from its admin port) are
//! read after the pull. `--pulls N` pulls the same version N times from the same ferryd, each
//! into an emptied directory, and reads ferryd after each: whether the node's memory grows with
//! the bytes it has served. Every pulled file is checked (size and BLAKE3 against the manifest).
//! Disk: the store plus the pulled copy need 2 × the size; the scenario refuses to start when the
//! filesystem of `--dir` has less than 2.2 × the largest size free. `--receiver ferryd` has a
//! second ferryd receive the version instead (`ferry replicate`), which pulls it into its state
//! directory and moves it into its store (both under `--dir`, so a rename): the same 2.2 ×.
//!
//! The issue's target is printed, not asserted: ferryd peak RSS ≤ 256 MiB serving (and, with
//! `--receiver ferryd`, receiving) 20 GiB, not growing with size.
//!
//! Neighbours: [`crate::fleet`] runs the processes, [`crate::report`] prints the table.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ferry_proto::Role;

mod fixture;
pub(crate) use fixture::{build_version, check, check_in_s3};

use crate::fleet::{
    Binaries, NodeOptions, NodeProc, PEAK_FRACTIONS, Pki, ScratchArgs, ferry_command, free_bytes,
    run_measured,
};
use crate::report::{Report, Unit, nproc, progress};
use crate::transfer::{DATASET, PROVIDER, ROW_BYTES};

/// The name of the receiving ferryd (`--receiver ferryd`).
const RECEIVER: &str = "guangdong";

/// Options of `ferry-bench memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Size of the version, GiB (1 MiB rows).
    #[arg(long, default_value_t = 20)]
    pub size_gib: u64,
    /// Several sizes, GiB, each on a fresh ferryd (comma-separated: `2,20`); replaces --size-gib.
    #[arg(long, value_delimiter = ',')]
    pub sizes_gib: Option<Vec<u64>>,
    /// Size of each Parquet file, MiB (the node's `rows-per-file`; at most 256).
    #[arg(long, default_value_t = 256)]
    pub file_mib: usize,
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Longest the pull may take, seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    /// Runs of each size (sizes interleaved: 1, 20, 1, 20, ...); figures are medians.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Extra arguments for every `ferry pull` (e.g. `--ferry-pull-arg=--limit-rate=400M`, which
    /// makes each stream wait between chunks while the node sends ahead), to diagnose what sets
    /// its peak; the scenario's figures are for ferry's defaults, and the notes say when this was
    /// used.
    #[arg(long, allow_hyphen_values = true)]
    pub ferry_pull_arg: Vec<String>,
    /// Pulls of each version from the same ferryd, one after another, each into an emptied
    /// directory and checked: ferryd's peak RSS and chunk buffers are read after each, to show
    /// whether they grow with the bytes the node has served. The main figures are the first
    /// pull's.
    #[arg(long, default_value_t = 1)]
    pub pulls: usize,
    /// What receives the version: `pull`, a `ferry pull` process, or `ferryd`, a second node
    /// told to pull it from the first (`ferry replicate`), whose VmHWM then stands in the
    /// `pull_*` figures. A node pulls into its state directory and moves the copy into its
    /// store; both are under `--dir`, so the disk needed is the same 2.2 ×. `--pulls` must be 1.
    #[arg(long, value_enum, default_value_t = Receiver::Pull)]
    pub receiver: Receiver,
    /// Where a receiving ferryd keeps its versions: `local`, a directory beside its state, or
    /// `garage`, a bucket of a Garage (S3-compatible) server started for each size, whose copy
    /// is then checked through S3. Needs the `garage` binary (`.ci/run` installs it; see
    /// `ferry_testkit::garage`); its data is under `$TMPDIR`, best on the filesystem of `--dir`.
    #[arg(long, value_enum, default_value_t = ReceiverStore::Local)]
    pub receiver_store: ReceiverStore,
}

/// Where a receiving ferryd keeps versions in `ferry-bench memory --receiver ferryd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReceiverStore {
    /// A local directory on the filesystem of its state directory.
    Local,
    /// An S3 bucket on a Garage server started for the run.
    Garage,
}

/// What receives the version in `ferry-bench memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Receiver {
    /// `ferry pull`, sampled every 10 ms.
    Pull,
    /// A second ferryd (`ferry replicate`), its VmHWM read after the transfer.
    Ferryd,
}

/// Disk needed, in multiples of the largest size: the store's version plus the received copy. A
/// receiving node moves its copy into a local store on the same filesystem; into Garage (under
/// `$TMPDIR`) it uploads each file and then removes it, so the pulled copy and Garage's hold about
/// one copy between them.
const DISK_FACTOR: f64 = 2.2;

/// ferryd after one more pull of the same version (`--pulls`).
#[derive(Debug, Clone)]
struct Repeat {
    serve_peak_rss_mib: f64,
    serve_buffers_mib: f64,
    pull_peak_rss_mib: f64,
    mb_s: f64,
}

/// What one size measured.
#[derive(Debug, Clone)]
struct SizeResult {
    gib: u64,
    files: usize,
    bytes: u64,
    /// Fixture: write, describe, commit seconds.
    build: [f64; 3],
    pull_seconds: f64,
    pull_cpu: f64,
    pull_peak_rss_mib: f64,
    /// The puller's peak after each of [`PEAK_FRACTIONS`] of the pull's wall time.
    pull_peak_rss_mib_at: [f64; PEAK_FRACTIONS.len()],
    serve_cpu: f64,
    /// ferryd's VmHWM once started on the store, before the pull.
    serve_idle_rss_mib: f64,
    serve_peak_rss_mib: f64,
    /// ferryd's serving chunk buffers after the pull, in use and idle
    /// (`ferry_transfer_serve_buffers_bytes`), MiB.
    serve_buffers_mib: f64,
    /// ferryd after each further pull of the same version (`--pulls`), in order.
    repeats: Vec<Repeat>,
}

impl SizeResult {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.pull_seconds.max(1e-9)
    }
}

/// One size on a fresh node.
fn run_size(args: &MemoryArgs, bins: &Binaries, root: &Path, gib: u64) -> Result<SizeResult> {
    let size = gib << 30;
    let free = free_bytes(root)?;
    ensure!(
        free as f64 >= DISK_FACTOR * size as f64,
        "not enough disk in {} for {gib} GiB: {:.1} GiB free, need {} × {gib} = {:.1} GiB",
        root.display(),
        free as f64 / f64::from(1 << 30),
        DISK_FACTOR,
        DISK_FACTOR * gib as f64
    );
    let scratch = tempfile::Builder::new().prefix(&format!("ferry-bench-memory-{gib}g-")).tempdir_in(root)?;
    let pki = Pki::new();
    let opts = NodeOptions::loopback_ministry(args.file_mib);
    let setup = NodeProc::prepare(&pki, scratch.path(), &opts)?;
    let rows = usize::try_from(size / ROW_BYTES as u64)?;
    progress(&format!("{gib} GiB: building the version ({rows} rows of 1 MiB) in the node's store"));
    let (manifest, build) = build_version(&setup, rows, args.scratch.seed)?;
    let node = NodeProc::launch(bins, &setup, &opts.launcher)?;
    let serve_idle_rss_mib = node.peak_rss_mib();
    let consumer = pki.issue("province", "prov01", Role::Operator);
    let dest = scratch.path().join("pull");
    std::fs::create_dir_all(&dest)?;
    let log = scratch.path().join("pull.log");
    let garage = match args.receiver_store {
        ReceiverStore::Local => None,
        ReceiverStore::Garage => {
            let bin = ferry_testkit::garage::binary().context("the garage binary")?;
            Some(ferry_testkit::garage::Garage::start(&bin)?)
        }
    };
    let province = match args.receiver {
        Receiver::Pull => None,
        Receiver::Ferryd => {
            let opts = NodeOptions {
                name: RECEIVER,
                role: Role::Province,
                listen: opts.listen,
                extra: format!("\n[peers.{PROVIDER}]\naddress = \"{}\"\n", node.addr),
                launcher: opts.launcher.clone(),
                storage: garage.as_ref().map(|g| g.storage_toml(RECEIVER)),
            };
            let setup = NodeProc::prepare(&pki, scratch.path(), &opts)?;
            Some(NodeProc::launch(bins, &setup, &opts.launcher)?)
        }
    };
    let mut command = match &province {
        None => {
            let mut command = ferry_command(bins, &opts.launcher, "pull", &consumer, &node.node_arg());
            command.args([DATASET, "--version", "1", "--json", "--to"]).arg(&dest).args(&args.ferry_pull_arg);
            command
        }
        Some(province) => {
            let mut command =
                ferry_command(bins, &opts.launcher, "replicate", &province.operator, &province.node_arg());
            command.args(["--from", PROVIDER, DATASET, "--version", "1", "--json"]);
            command
        }
    };
    progress(&format!("{gib} GiB: ferryd started (VmHWM {serve_idle_rss_mib:.1} MiB); pulling"));
    let server = node.cpu();
    let receiver_cpu = province.as_ref().map(|p| (p, p.cpu()));
    let mut measured = run_measured(&mut command, &log, Duration::from_secs(args.timeout_s))?;
    if let Some((province, before)) = receiver_cpu {
        // The receiving node's figures, not those of the `ferry replicate` that asked it.
        measured.cpu = province.cpu() - before;
        measured.peak_rss_mib = province.peak_rss_mib();
        measured.peak_rss_mib_at = [f64::NAN; PEAK_FRACTIONS.len()];
    }
    let serve_cpu = node.cpu() - server;
    let serve_peak_rss_mib = node.peak_rss_mib();
    let serve_buffers_mib = chunk_buffers_mib(&node);
    let mut result = SizeResult {
        gib,
        files: manifest.files.len(),
        bytes: manifest.total_bytes(),
        build,
        pull_seconds: measured.seconds,
        pull_cpu: measured.cpu,
        pull_peak_rss_mib: measured.peak_rss_mib,
        pull_peak_rss_mib_at: measured.peak_rss_mib_at,
        serve_cpu,
        serve_idle_rss_mib,
        serve_peak_rss_mib,
        serve_buffers_mib,
        repeats: Vec::new(),
    };
    progress(&format!(
        "{gib} GiB: pulled in {:.1} s ({:.1} MB/s); VmHWM ferryd {serve_peak_rss_mib:.1} MiB (chunk buffers \
         {serve_buffers_mib:.1} MiB), ferry pull {:.1} MiB; checking the pulled files",
        result.pull_seconds,
        result.mb_s(),
        result.pull_peak_rss_mib
    ));
    let started = Instant::now();
    let checked = match (&province, &garage) {
        (None, _) => check(&dest.join(DATASET).join("v1"), &manifest),
        (Some(province), None) => check(&province.version_dir(DATASET, 1), &manifest),
        (Some(_), Some(garage)) => check_in_s3(&garage.s3_config(RECEIVER), &manifest),
    };
    checked.map_err(|e| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        e.context(format!("the pulled copy is wrong; last lines of the pull's log: {:?}", tail))
    })?;
    progress(&format!("{gib} GiB: every file checked in {:.1} s", started.elapsed().as_secs_f64()));
    for pull in 2..=args.pulls {
        std::fs::remove_dir_all(&dest)?;
        std::fs::create_dir_all(&dest)?;
        progress(&format!("{gib} GiB: pull {pull}/{} from the same ferryd", args.pulls));
        let measured = run_measured(&mut command, &log, Duration::from_secs(args.timeout_s))?;
        let repeat = Repeat {
            serve_peak_rss_mib: node.peak_rss_mib(),
            serve_buffers_mib: chunk_buffers_mib(&node),
            pull_peak_rss_mib: measured.peak_rss_mib,
            mb_s: result.bytes as f64 / 1e6 / measured.seconds.max(1e-9),
        };
        progress(&format!(
            "{gib} GiB: pull {pull} in {:.1} s ({:.1} MB/s); VmHWM ferryd {:.1} MiB (chunk buffers {:.1} MiB), \
             ferry pull {:.1} MiB; checking the pulled files",
            measured.seconds,
            repeat.mb_s,
            repeat.serve_peak_rss_mib,
            repeat.serve_buffers_mib,
            repeat.pull_peak_rss_mib
        ));
        check(&dest.join(DATASET).join("v1"), &manifest)?;
        result.repeats.push(repeat);
    }
    drop(node);
    Ok(result)
}

/// ferryd's serving chunk buffers (in use and idle), MiB; NaN when its metrics cannot be read.
fn chunk_buffers_mib(node: &NodeProc) -> f64 {
    node.metric("ferry_transfer_serve_buffers_bytes").map_or(f64::NAN, |b| b / f64::from(1 << 20))
}

/// The per-size table.
fn size_table(results: &[SizeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8} {:>5} {:>13} {:>8} {:>7} {:>14} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "size_GiB",
        "files",
        "bytes",
        "pull_s",
        "MB/s",
        "ferryd_idle",
        "ferryd_peak",
        "ferryd_buffers",
        "pull_peak",
        "ferryd_cpu",
        "pull_cpu"
    );
    let _ = writeln!(
        out,
        "{:>8} {:>5} {:>13} {:>8} {:>7} {:>14} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "", "", "", "", "", "RSS MiB", "RSS MiB", "MiB", "RSS MiB", "s/GB", "s/GB"
    );
    for r in results {
        let gb = r.bytes as f64 / 1e9;
        let _ = writeln!(
            out,
            "{:>8} {:>5} {:>13} {:>8.1} {:>7.1} {:>14.1} {:>14.1} {:>14.1} {:>14.1} {:>12.3} {:>12.3}",
            r.gib,
            r.files,
            r.bytes,
            r.pull_seconds,
            r.mb_s(),
            r.serve_idle_rss_mib,
            r.serve_peak_rss_mib,
            r.serve_buffers_mib,
            r.pull_peak_rss_mib,
            r.serve_cpu / gb,
            r.pull_cpu / gb
        );
    }
    out
}

/// Runs the scenario and prints the tables and the summary line on stdout.
pub fn run(args: &MemoryArgs) -> Result<()> {
    let mut sizes = args.sizes_gib.clone().unwrap_or_else(|| vec![args.size_gib]);
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 {
        bail!("sizes must be at least 1 GiB");
    }
    if args.file_mib == 0 || args.file_mib > 256 {
        bail!(
            "--file-mib must be 1..=256: the canonical writer gathers up to a file's rows (1 MiB each) into one \
             Arrow batch before encoding"
        );
    }
    let root = args.scratch.root()?;
    let largest = *sizes.last().unwrap_or(&0);
    let free = free_bytes(&root)?;
    if (free as f64) < DISK_FACTOR * (largest << 30) as f64 {
        bail!(
            "not enough disk in {}: {:.1} GiB free, but {largest} GiB needs {DISK_FACTOR} × {largest} = {:.1} GiB \
             (the version in the node's store plus the received copy); use --dir elsewhere or a smaller size",
            root.display(),
            free as f64 / f64::from(1 << 30),
            DISK_FACTOR * largest as f64
        );
    }
    if args.runs == 0 || args.pulls == 0 {
        bail!("--runs and --pulls must be at least 1");
    }
    if args.receiver == Receiver::Ferryd && (args.pulls > 1 || !args.ferry_pull_arg.is_empty()) {
        bail!("--receiver ferryd takes neither --pulls nor --ferry-pull-arg");
    }
    if args.receiver_store == ReceiverStore::Garage {
        ensure!(args.receiver == Receiver::Ferryd, "--receiver-store garage needs --receiver ferryd");
        ensure!(
            ferry_testkit::garage::binary().is_some(),
            "--receiver-store garage: the `garage` binary is not installed (`.ci/run` installs it with \
             `cargo install garage`; FERRY_GARAGE_BIN may name it)"
        );
    }
    let bins = Binaries::build()?;
    let mut results = Vec::new();
    for run in 1..=args.runs {
        if args.runs > 1 {
            progress(&format!("run {run}/{}", args.runs));
        }
        for &gib in &sizes {
            results.push(run_size(args, &bins, &root, gib)?);
        }
    }
    results.sort_by_key(|r| r.gib);

    let mut report = Report::default();
    for r in &results {
        let g = r.gib;
        let gb = r.bytes as f64 / 1e9;
        let mib = Unit::Mebibytes;
        report.record(
            &format!("serve_peak_rss_mib_{g}g"),
            mib,
            &format!("{g} GiB: ferryd VmHWM after the pull"),
            r.serve_peak_rss_mib,
        );
        report.record(
            &format!("serve_buffers_mib_{g}g"),
            mib,
            &format!("{g} GiB: ferryd's chunk buffers after the pull (in use and idle)"),
            r.serve_buffers_mib,
        );
        for (k, repeat) in (2..).zip(&r.repeats) {
            report.record(
                &format!("serve_peak_rss_mib_{g}g_pull{k}"),
                mib,
                &format!("{g} GiB: ferryd VmHWM after pull {k} of the same version"),
                repeat.serve_peak_rss_mib,
            );
            report.record(
                &format!("serve_buffers_mib_{g}g_pull{k}"),
                mib,
                &format!("{g} GiB: ferryd's chunk buffers after pull {k}"),
                repeat.serve_buffers_mib,
            );
            report.record(
                &format!("pull_peak_rss_mib_{g}g_pull{k}"),
                mib,
                &format!("{g} GiB: VmHWM of `ferry pull` number {k}"),
                repeat.pull_peak_rss_mib,
            );
            report.record(
                &format!("pull_mb_s_{g}g_pull{k}"),
                Unit::MegabytesPerSecond,
                &format!("{g} GiB: MB/s of pull {k}"),
                repeat.mb_s,
            );
        }
        report.record(
            &format!("serve_idle_rss_mib_{g}g"),
            mib,
            &format!("{g} GiB: ferryd VmHWM before the pull"),
            r.serve_idle_rss_mib,
        );
        report.record(
            &format!("pull_peak_rss_mib_{g}g"),
            mib,
            &format!("{g} GiB: `ferry pull` VmHWM"),
            r.pull_peak_rss_mib,
        );
        for (fraction, peak) in PEAK_FRACTIONS.iter().zip(r.pull_peak_rss_mib_at) {
            let pct = (fraction * 100.0).round();
            report.record(
                &format!("pull_peak_rss_mib_{g}g_at_{pct}pct"),
                mib,
                &format!("{g} GiB: `ferry pull` VmHWM after {pct}% of the pull's time"),
                peak,
            );
        }
        report.record(
            &format!("pull_mb_s_{g}g"),
            Unit::MegabytesPerSecond,
            &format!("{g} GiB: pull MB/s"),
            r.mb_s(),
        );
        report.record(
            &format!("serve_cpu_s_per_gb_{g}g"),
            Unit::Ratio,
            &format!("{g} GiB: ferryd CPU s per GB"),
            r.serve_cpu / gb,
        );
        report.record(
            &format!("pull_cpu_s_per_gb_{g}g"),
            Unit::Ratio,
            &format!("{g} GiB: `ferry pull` CPU s per GB"),
            r.pull_cpu / gb,
        );
        let [write, describe, commit] = r.build;
        report.note(format!(
            "{g} GiB: {} files, {} bytes; fixture built in {write:.1} s (write) + {describe:.1} s (describe) + \
             {commit:.1} s (commit)",
            r.files, r.bytes
        ));
    }
    report.note(
        "one `ferry pull` of the whole version into an empty directory on loopback, a fresh ferryd per size; \
         VmHWM of ferry pull sampled every 10 ms, of ferryd read after the pull; every pulled file checked \
         (size and BLAKE3 against the manifest)",
    );
    if args.receiver_store == ReceiverStore::Garage {
        report.note(
            "receiver store: a Garage (S3) bucket on loopback, started for each size; the node uploads each \
             file in 10 MiB parts and removes its own copy; the stored copy was read back and checked",
        );
    }
    if args.receiver == Receiver::Ferryd {
        report.note(
            "receiver: a second ferryd on loopback, told to pull the version with `ferry replicate`; every \
             `pull_*` figure is that node's (VmHWM read after the transfer, not sampled within it: the \
             5/25/50% figures are NaN), and its time includes importing the copy into its store",
        );
    }
    if !args.ferry_pull_arg.is_empty() {
        report.note(format!(
            "NOT ferry's defaults: every `ferry pull` ran with the extra arguments {:?} (--ferry-pull-arg)",
            args.ferry_pull_arg
        ));
    }
    println!(
        "ferry-bench memory: sizes_gib={} runs={} pulls={} file_mib={} seed={} nproc={}",
        sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        args.runs,
        args.pulls,
        args.file_mib,
        args.scratch.seed,
        nproc()
    );
    print!("{}", size_table(&results));
    println!();
    print!("{}", report.table());
    let serve = |g: u64| report.median_of(&format!("serve_peak_rss_mib_{g}g"));
    let pull = |g: u64| report.median_of(&format!("pull_peak_rss_mib_{g}g"));
    let (first, last) = (sizes[0], largest);
    let at = |pct: f64| report.median_of(&format!("pull_peak_rss_mib_{last}g_at_{pct}pct"));
    if args.receiver == Receiver::Ferryd {
        let met = serve(last) <= 256.0 && pull(last) <= 256.0;
        println!(
            "target: ferryd peak RSS ≤ 256 MiB serving or receiving {last} GiB: {} ({:.1} MiB serving, {:.1} MiB \
             receiving); growth of the medians from {first} to {last} GiB: {:+.1} MiB serving, {:+.1} MiB receiving",
            if met { "met" } else { "NOT met" },
            serve(last),
            pull(last),
            serve(last) - serve(first),
            pull(last) - pull(first)
        );
    } else {
        let met = serve(last) <= 256.0;
        println!(
            "target: ferryd peak RSS ≤ 256 MiB serving {last} GiB: {} ({:.1} MiB); growth of the medians from \
             {first} to {last} GiB: {:+.1} MiB ferryd, {:+.1} MiB ferry pull",
            if met { "met" } else { "NOT met" },
            serve(last),
            serve(last) - serve(first),
            pull(last) - pull(first)
        );
        println!(
            "within the {last} GiB pull, medians of the puller's peak after 5%, 25%, 50% and all of its time: \
             {:.1}, {:.1}, {:.1}, {:.1} MiB (growth after the first quarter: {:+.1} MiB)",
            at(5.0),
            at(25.0),
            at(50.0),
            pull(last),
            pull(last) - at(25.0)
        );
    }
    let buffers = |g: u64| report.median_of(&format!("serve_buffers_mib_{g}g"));
    println!(
        "ferryd's chunk buffers after the pull (medians): {}",
        sizes.iter().map(|&g| format!("{:.1} MiB at {g} GiB", buffers(g))).collect::<Vec<_>>().join(", ")
    );
    if args.pulls > 1 {
        let after = |g: u64, k: usize| {
            let suffix = if k == 1 { String::new() } else { format!("_pull{k}") };
            (
                report.median_of(&format!("serve_peak_rss_mib_{g}g{suffix}")),
                report.median_of(&format!("serve_buffers_mib_{g}g{suffix}")),
            )
        };
        let steps: Vec<String> = (1..=args.pulls)
            .map(|k| {
                let (peak, buf) = after(last, k);
                format!("{} GiB served: {peak:.1} MiB (buffers {buf:.1})", k as u64 * last)
            })
            .collect();
        println!(
            "ferryd serving the {last} GiB version {} times, VmHWM after each pull: {}",
            args.pulls,
            steps.join(", ")
        );
    }
    let mut parts = vec![
        format!("serve_peak_rss_mib={:.1}", serve(last)),
        format!("pull_peak_rss_mib={:.1}", pull(last)),
    ];
    for &g in &sizes {
        parts.push(format!("serve_peak_rss_mib_{g}g={:.1}", serve(g)));
        parts.push(format!("pull_peak_rss_mib_{g}g={:.1}", pull(g)));
        parts.push(format!("pull_mb_s_{g}g={:.1}", report.median_of(&format!("pull_mb_s_{g}g"))));
    }
    parts.push(format!("pull_peak_rss_mib_{last}g_at_25pct={:.1}", at(25.0)));
    parts.push(format!("serve_buffers_mib_{last}g={:.1}", buffers(last)));
    if args.pulls > 1 {
        let k = args.pulls;
        parts.push(format!(
            "serve_peak_rss_mib_{last}g_pull{k}={:.1}",
            report.median_of(&format!("serve_peak_rss_mib_{last}g_pull{k}"))
        ));
    }
    println!("{}", parts.join(" "));
    Ok(())
}
