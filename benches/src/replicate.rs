//! Scenario `replicate`: one version (`--size-mib`, 1 MiB rows in `--file-mib` files) published
//! at a ministry node, then, in each of `--runs` runs:
//! (a) `ferry pull` of it into an empty directory;
//! (b) a second node replicating it (`ferry replicate`) into its local store: the pull into its
//!     state directory plus the import (a rename per file, with the hashes the pull verified);
//! (c) a node whose store is a Garage (S3) bucket replicating it: the pull plus the upload;
//! (d) a plain multipart upload of the same files to the same Garage by `object_store` itself,
//!     from the same machine: one file after another, 10 MiB parts, 8 in flight, the files
//!     first dropped from the page cache (the replicating node reads a copy the pull wrote
//!     around it).
//!
//! A plain upload before the runs, not counted, warms Garage up, and each (c) and (d) prints the
//! CPU seconds of the processes taking part (the receiving node's `pull_s` and `import_s` too
//! with `FERRY_BENCH_LOG=ferry_daemon=info`).
//!
//! Figures are medians of MB/s over the runs; `replicate_vs_pull` is (b) over (a), `s3_vs_upload`
//! (c) over (d), and `receiver_peak_rss_mib` the highest `VmHWM` of a receiving node (read after
//! its replication: the kernel's own peak, not a sample). Every copy is checked against the
//! manifest (size and BLAKE3) in the first run. Garage is started for the run from the `garage`
//! binary the S3 tests use (`ferry_testkit::garage`: `$FERRY_GARAGE_BIN`, `PATH`,
//! `~/.cargo/bin`); without it (c) and (d) are skipped, printed as `nan`, with how to install it.
//!
//! Neighbours: [`crate::memory`] builds the version ([`build_version`]) and checks copies,
//! [`crate::fleet`] runs the processes, [`crate::report`] prints the table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ferry_daemon::data::blob::{BlobStore, ObjectBlobStore};
use ferry_proto::{Manifest, Role};
use ferry_testkit::garage::Garage;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::fleet::{
    Binaries, NodeOptions, NodeProc, Pki, ScratchArgs, ferry_command, free_bytes, run_measured,
};
use crate::memory::{build_version, check, check_in_s3};
use crate::report::{Report, Unit, nproc, progress};
use crate::servers::{proc_cpu, self_cpu};
use crate::transfer::{DATASET, PROVIDER};
use ferry_net::tls::TlsPaths;

/// The receiving nodes' names start with this.
const RECEIVER: &str = "guangdong";
/// Parts of the plain upload: their size, and how many are in flight.
const PLAIN_PART: usize = 10 << 20;
const PLAIN_IN_FLIGHT: usize = 8;

/// Options of `ferry-bench replicate`.
#[derive(Debug, Clone, Args)]
pub struct ReplicateArgs {
    /// Size of the version, MiB (1 MiB rows).
    #[arg(long, default_value_t = 2048)]
    pub size_mib: u64,
    /// Size of each Parquet file, MiB (the node's `rows-per-file`; at most 256).
    #[arg(long, default_value_t = 256)]
    pub file_mib: usize,
    /// Runs; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Longest one transfer may take, seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

/// What the scenario starts and keeps for all runs.
struct Fixture<'a> {
    args: &'a ReplicateArgs,
    bins: Binaries,
    pki: Pki,
    scratch: PathBuf,
    node: NodeProc,
    /// The published version's files in the ministry's store.
    files: Vec<PathBuf>,
    manifest: Manifest,
    garage: Option<Garage>,
    consumer: TlsPaths,
}

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &ReplicateArgs) -> Result<()> {
    ensure!(args.size_mib > 0 && args.runs > 0, "--size-mib and --runs must be at least 1");
    ensure!((1..=256).contains(&args.file_mib), "--file-mib must be 1..=256");
    let root = args.scratch.root()?;
    let size = args.size_mib << 20;
    // The published version, one copy received at a time, Garage's copy (under $TMPDIR).
    let free = free_bytes(&root)?;
    ensure!(
        free as f64 >= 3.2 * size as f64,
        "not enough disk in {}: {:.1} GiB free, need 3.2 × the version",
        root.display(),
        free as f64 / f64::from(1 << 30)
    );
    let fixture = Fixture::start(args, &root)?;
    if fixture.garage.is_some() {
        fixture.warm_up_garage()?;
    }
    let mut report = Report::default();
    let mut peak_rss: f64 = f64::NAN;
    for run in 1..=args.runs {
        progress(&format!("run {run}/{}", args.runs));
        let check_copies = run == 1;
        let pull = fixture.pull(run, check_copies)?;
        report.record("pull_mb_s", Unit::MegabytesPerSecond, "(a) ferry pull into a directory", pull);
        let (local, rss) = fixture.replicate(run, false, check_copies)?;
        report.record(
            "replicate_mb_s",
            Unit::MegabytesPerSecond,
            "(b) replication into a local store",
            local,
        );
        peak_rss = peak_rss.max(rss);
        if fixture.garage.is_some() {
            let (s3, rss) = fixture.replicate(run, true, check_copies)?;
            report.record(
                "replicate_s3_mb_s",
                Unit::MegabytesPerSecond,
                "(c) replication into Garage (S3)",
                s3,
            );
            peak_rss = peak_rss.max(rss);
            let plain = fixture.plain_upload(run)?;
            report.record(
                "upload_mb_s",
                Unit::MegabytesPerSecond,
                "(d) object_store multipart upload",
                plain,
            );
        }
    }
    report.record("receiver_peak_rss_mib", Unit::Mebibytes, "receiving ferryd VmHWM, highest", peak_rss);
    let bytes = fixture.manifest.total_bytes();
    report.note(format!(
        "{} files, {bytes} bytes; loopback; each receiving node started fresh; copies checked in run 1",
        fixture.files.len()
    ));
    report.note(format!(
        "(d): one file after another, {} MiB parts, {PLAIN_IN_FLIGHT} in flight, files dropped from the page \
         cache first",
        PLAIN_PART >> 20
    ));
    if fixture.garage.is_none() {
        report.note("(c) and (d) skipped: no `garage` binary (see above)");
    }
    println!(
        "ferry-bench replicate: size_mib={} file_mib={} runs={} nproc={}",
        args.size_mib,
        args.file_mib,
        args.runs,
        nproc()
    );
    print!("{}", report.table());
    let m = |key: &str| report.median_of(key);
    println!(
        "{}",
        summary_line(
            m("replicate_mb_s") / m("pull_mb_s"),
            m("replicate_s3_mb_s") / m("upload_mb_s"),
            peak_rss
        )
    );
    Ok(())
}

/// The last line: `replicate_vs_pull= s3_vs_upload= receiver_peak_rss_mib=`, `nan` where a
/// figure is missing.
pub fn summary_line(replicate_vs_pull: f64, s3_vs_upload: f64, receiver_peak_rss_mib: f64) -> String {
    let f = |v: f64, digits: usize| if v.is_finite() { format!("{v:.digits$}") } else { "nan".to_owned() };
    format!(
        "replicate_vs_pull={} s3_vs_upload={} receiver_peak_rss_mib={}",
        f(replicate_vs_pull, 3),
        f(s3_vs_upload, 3),
        f(receiver_peak_rss_mib, 1)
    )
}

impl<'a> Fixture<'a> {
    fn start(args: &'a ReplicateArgs, root: &Path) -> Result<Self> {
        let garage = start_garage()?;
        let bins = Binaries::build()?;
        let scratch = tempfile::Builder::new().prefix("ferry-bench-replicate-").tempdir_in(root)?.keep();
        let pki = Pki::new();
        let opts = NodeOptions::loopback_ministry(args.file_mib);
        let setup = NodeProc::prepare(&pki, &scratch, &opts)?;
        let rows = usize::try_from(args.size_mib)?;
        progress(&format!("building the version ({rows} rows of 1 MiB) in the ministry's store"));
        let (manifest, _) = build_version(&setup, rows, args.scratch.seed)?;
        let node = NodeProc::launch(&bins, &setup, &opts.launcher)?;
        let dir = node.version_dir(DATASET, 1);
        let files = manifest.files.iter().map(|f| dir.join(f.name.as_str())).collect();
        let consumer = pki.issue("province", "prov01", Role::Operator);
        Ok(Self { args, bins, pki, scratch, node, files, manifest, garage, consumer })
    }

    fn mb_s(&self, seconds: f64) -> f64 {
        self.manifest.total_bytes() as f64 / 1e6 / seconds.max(1e-9)
    }

    /// (a): MB/s of one `ferry pull` into an empty directory.
    fn pull(&self, run: usize, check_copy: bool) -> Result<f64> {
        let dest = self.scratch.join(format!("pull-{run}"));
        std::fs::create_dir_all(&dest)?;
        let launcher = crate::fleet::Launcher::direct();
        let mut command = ferry_command(&self.bins, &launcher, "pull", &self.consumer, &self.node.node_arg());
        command.args([DATASET, "--version", "1", "--json", "--to"]).arg(&dest);
        let log = self.scratch.join(format!("pull-{run}.log"));
        let measured = run_measured(&mut command, &log, Duration::from_secs(self.args.timeout_s))?;
        let mb_s = self.mb_s(measured.seconds);
        progress(&format!("(a) ferry pull: {:.2} s, {mb_s:.1} MB/s", measured.seconds));
        if check_copy {
            check(&dest.join(DATASET).join("v1"), &self.manifest)?;
        }
        std::fs::remove_dir_all(&dest)?;
        Ok(mb_s)
    }

    /// (b) or (c): MB/s of one replication into a fresh node's local store or Garage bucket,
    /// and the node's VmHWM after it.
    fn replicate(&self, run: usize, s3: bool, check_copy: bool) -> Result<(f64, f64)> {
        let prefix = format!("replicate-{run}");
        let storage = match (&self.garage, s3) {
            (Some(garage), true) => Some(garage.storage_toml(&prefix)),
            _ => None,
        };
        // A name of its own each time: the CA issues one certificate per name.
        let name = format!("{RECEIVER}-{}-{run}", if s3 { "s3" } else { "local" });
        let root = self.scratch.join(&name);
        let opts = NodeOptions {
            name: &name,
            role: Role::Province,
            listen: self.node.addr.ip(),
            extra: format!("\n[peers.{PROVIDER}]\naddress = \"{}\"\n", self.node.addr),
            launcher: crate::fleet::Launcher::direct(),
            storage,
        };
        let province = NodeProc::start(&self.bins, &self.pki, &root, &opts)?;
        let mut command =
            ferry_command(&self.bins, &opts.launcher, "replicate", &province.operator, &province.node_arg());
        command.args(["--from", PROVIDER, DATASET, "--version", "1", "--json"]);
        let log = root.join("replicate.log");
        let before = (province.cpu(), self.node.cpu(), self.garage_cpu());
        let measured = run_measured(&mut command, &log, Duration::from_secs(self.args.timeout_s))?;
        let rss = province.peak_rss_mib();
        let cpu = (province.cpu() - before.0, self.node.cpu() - before.1, self.garage_cpu() - before.2);
        let mb_s = self.mb_s(measured.seconds);
        let what = if s3 { "(c) replication into Garage" } else { "(b) replication into a local store" };
        progress(&format!(
            "{what}: {:.2} s, {mb_s:.1} MB/s, receiver VmHWM {rss:.1} MiB; CPU s: receiver {:.2}, ministry {:.2}, \
             Garage {:.2}{}",
            measured.seconds,
            cpu.0,
            cpu.1,
            cpu.2,
            imported_line(&province.dir.join("ferryd.log")),
        ));
        match (&self.garage, s3, check_copy) {
            (_, false, true) => check(&province.version_dir(DATASET, 1), &self.manifest)?,
            (Some(garage), true, true) => check_in_s3(&garage.s3_config(&prefix), &self.manifest)?,
            _ => {}
        }
        drop(province);
        if let (Some(garage), true) = (&self.garage, s3) {
            empty_bucket_prefix(garage, &prefix)?;
        }
        std::fs::remove_dir_all(&root)?;
        Ok((mb_s, rss))
    }

    /// CPU seconds Garage has used so far (`NaN` without it).
    fn garage_cpu(&self) -> f64 {
        let pid = self.garage.as_ref().map(|g| g.pid().to_string());
        pid.and_then(|pid| proc_cpu(&pid).ok()).map_or(f64::NAN, |(own, _)| own)
    }

    /// One plain upload of the files before the runs, not counted: a fresh Garage's first GiB
    /// costs it about half as much CPU again as the next ones (9.7–9.9 s against 6.3–6.8), which
    /// fell on run 1's (c), always run before its (d).
    fn warm_up_garage(&self) -> Result<()> {
        let garage = self.garage.as_ref().context("no Garage")?;
        let before = self.garage_cpu();
        let seconds = self.upload_files("warm-up")?;
        progress(&format!(
            "Garage warmed up by one plain upload (not counted): {seconds:.2} s, Garage CPU {:.2} s",
            self.garage_cpu() - before
        ));
        empty_bucket_prefix(garage, "warm-up")
    }

    /// (d): MB/s of `object_store`'s own multipart upload of the version's files to Garage.
    fn plain_upload(&self, run: usize) -> Result<f64> {
        let garage = self.garage.as_ref().context("no Garage")?;
        let prefix = format!("plain-{run}");
        let before = (self_cpu(), self.garage_cpu());
        let seconds = self.upload_files(&prefix)?;
        let cpu = (self_cpu() - before.0, self.garage_cpu() - before.1);
        let mb_s = self.mb_s(seconds);
        progress(&format!(
            "(d) object_store multipart upload: {seconds:.2} s, {mb_s:.1} MB/s; CPU s: uploader {:.2}, Garage {:.2}",
            cpu.0, cpu.1
        ));
        empty_bucket_prefix(garage, &prefix)?;
        Ok(mb_s)
    }

    /// Seconds `object_store`'s own multipart upload of the files takes, to `prefix` in Garage
    /// (the files first dropped from the page cache).
    fn upload_files(&self, prefix: &str) -> Result<f64> {
        let garage = self.garage.as_ref().context("no Garage")?;
        for file in &self.files {
            drop_from_cache(file)?;
        }
        let store: Arc<dyn ObjectStore> = Arc::new(s3_store(garage)?);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let started = Instant::now();
        runtime.block_on(async {
            for file in &self.files {
                let name = file.file_name().context("a file name")?.to_string_lossy();
                let path = object_store::path::Path::from(format!("{prefix}/{name}"));
                plain_multipart(store.as_ref(), &path, file).await?;
            }
            anyhow::Ok(())
        })?;
        Ok(started.elapsed().as_secs_f64())
    }
}

impl Drop for Fixture<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The receiving node's own account of the replication (`pull_s`, `import_s`), logged at
/// `info` (`FERRY_BENCH_LOG=ferry_daemon=info`), as `; <fields>`; empty when not logged.
fn imported_line(log: &Path) -> String {
    let text = without_colours(&std::fs::read_to_string(log).unwrap_or_default());
    let Some(line) = text.lines().rev().find(|l| l.contains("imported")) else { return String::new() };
    let fields: Vec<&str> =
        line.split_whitespace().filter(|w| w.starts_with("pull_s=") || w.starts_with("import_s=")).collect();
    if fields.is_empty() { String::new() } else { format!("; {}", fields.join(" ")) }
}

/// `text` without the terminal colour codes (`ESC [ … m`) the node's log writes around fields.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts a Garage for the run, or says how to get one and returns `None`.
fn start_garage() -> Result<Option<Garage>> {
    let Some(bin) = ferry_testkit::garage::binary() else {
        progress(
            "no `garage` binary: (c) and (d) are skipped (nan). Install it as `.ci/run` does (`cargo install \
             garage --locked --version 2.5.0 --no-default-features --features bundled-libs,lmdb`), or set \
             FERRY_GARAGE_BIN to its path; the scenario starts its own server from it",
        );
        return Ok(None);
    };
    progress(&format!("starting Garage ({})", bin.display()));
    Ok(Some(Garage::start(&bin)?))
}

fn s3_store(garage: &Garage) -> Result<object_store::aws::AmazonS3> {
    Ok(object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(ferry_testkit::garage::BUCKET)
        .with_region(ferry_testkit::garage::REGION)
        .with_endpoint(&garage.endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_access_key_id(&garage.access_key_id)
        .with_secret_access_key(&garage.secret_access_key)
        .build()?)
}

/// One file through `WriteMultipart`: read in [`PLAIN_PART`] pieces, [`PLAIN_IN_FLIGHT`]
/// parts in flight.
async fn plain_multipart(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    file: &Path,
) -> Result<()> {
    use std::io::Read;
    let upload = store.put_multipart(path).await?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, PLAIN_PART);
    let mut local = std::fs::File::open(file)?;
    loop {
        let mut buf = vec![0u8; PLAIN_PART];
        let mut filled = 0;
        while filled < buf.len() {
            match local.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        parts.wait_for_capacity(PLAIN_IN_FLIGHT).await?;
        parts.put(buf.into());
    }
    parts.finish().await?;
    Ok(())
}

/// Asks the kernel to drop `file`'s cached pages.
fn drop_from_cache(file: &Path) -> Result<()> {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let f = std::fs::File::open(file)?;
    posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
    Ok(())
}

/// Removes every object under `prefix` (the disk Garage holds is the run's).
fn empty_bucket_prefix(garage: &Garage, prefix: &str) -> Result<()> {
    let blobs = ObjectBlobStore::s3(&garage.s3_config(prefix))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        for key in blobs.list("").await? {
            blobs.delete(&key).await?;
        }
        anyhow::Ok(())
    })?;
    if runtime.block_on(blobs.list(""))?.is_empty() {
        Ok(())
    } else {
        bail!("objects are left under {prefix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_imported_line_is_read_through_colour_codes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("ferryd.log");
        let line = "INFO ferry_daemon: \u{1b}[3mpull_s\u{1b}[0m\u{1b}[2m=\u{1b}[0m1.5 \
                    \u{1b}[3mimport_s\u{1b}[0m\u{1b}[2m=\u{1b}[0m0.25 imported\n";
        std::fs::write(&log, line).expect("write");
        assert_eq!(imported_line(&log), "; pull_s=1.5 import_s=0.25");
        assert_eq!(imported_line(&dir.path().join("missing")), "");
    }

    #[test]
    fn the_summary_line_has_the_three_figures_and_nan_for_missing_ones() {
        assert_eq!(
            summary_line(0.93456, 0.8123, 187.25),
            "replicate_vs_pull=0.935 s3_vs_upload=0.812 receiver_peak_rss_mib=187.2"
        );
        assert_eq!(
            summary_line(1.0, f64::NAN, 50.0),
            "replicate_vs_pull=1.000 s3_vs_upload=nan receiver_peak_rss_mib=50.0"
        );
        assert_eq!(
            summary_line(f64::INFINITY, f64::NAN, f64::NAN),
            "replicate_vs_pull=nan s3_vs_upload=nan receiver_peak_rss_mib=nan"
        );
    }
}
