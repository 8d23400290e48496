//! Sweep `enospc`: a transfer onto a filesystem that is too small, on loopback.
//!
//! - `enospc-destination`: a `ferry pull` into a tmpfs of half the version's size fails with an
//!   error naming the lack of space (os error 28), and nothing of the version is visible in the
//!   destination (`<dest>/<dataset>/v1` does not exist). The tmpfs is then made larger
//!   (`mount -o remount,size=`) and the same pull run again: it resumes (`resumed_bytes` > 0)
//!   and every file equals the source.
//! - `enospc-store`: a province `ferryd` whose whole directory (state and store) is on such a
//!   tmpfs is told to replicate the version: the replication fails with an error answer, the
//!   node lists no version of the dataset, the tmpfs grows, the replication is asked again and
//!   completes, every stored file equal to the source.
//!
//! EIO is the sweep `eio` ([`super::eio`]), on a fault-injecting FUSE filesystem.
//!
//! Mounting needs root; without it each is reported as skipped, with the reason.
//!
//! Neighbours: [`crate::fleet`] starts the processes, [`crate::memory::build_version`] the version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use ferry_proto::{Manifest, Role};

use super::site::{tail, wait_child};
use super::{
    PullLog, ReliabilityArgs, RunOutcome, Summary, Sweep, check_both, free_loopback_port, pin_listen,
};
use crate::fleet::{Binaries, NodeOptions, NodeProc, NodeSetup, Pki, ferry_command, spawn_logged};
use crate::report::progress;
use crate::transfer::{DATASET, PROVIDER};

/// A tmpfs mounted for a run, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        mount(&["-t", "tmpfs", "-o", &format!("size={}", round_up(bytes)), "tmpfs"], dir)?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn resize(&self, bytes: u64) -> Result<()> {
        mount(&["-o", &format!("remount,size={}", round_up(bytes))], &self.dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).stdin(Stdio::null()).status();
    }
}

/// Sizes of a tmpfs are in pages.
fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(4096).max(1) * 4096
}

fn mount(args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new("mount").args(args).arg(dir).stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "mount {} {}: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Why tmpfs cannot be mounted here, if it cannot.
fn mount_refused(root: &Path) -> Option<String> {
    let probe = root.join(format!("ferry-bench-mount-probe-{}", std::process::id()));
    let result = Tmpfs::mount(&probe, 1 << 20).map(drop);
    let _ = std::fs::remove_dir(&probe);
    result.err().map(|e| format!("cannot mount a tmpfs here ({e:#})"))
}

/// `enospc`: the three scenarios' summaries.
pub(super) fn run(args: &ReliabilityArgs, bins: &Binaries) -> Result<Vec<Summary>> {
    let root = args.scratch.root()?;
    if let Some(reason) = mount_refused(&root) {
        progress(&format!("enospc: skipped: {reason}"));
        return Ok(vec![
            Summary::skipped("enospc-destination", &reason),
            Summary::skipped("enospc-store", &reason),
        ]);
    }
    let scratch = tempfile::Builder::new().prefix("ferry-bench-enospc-").tempdir_in(&root)?;
    let pki = Pki::new();
    let opts = NodeOptions::loopback_ministry(args.file_mib());
    let setup = NodeProc::prepare(&pki, scratch.path(), &opts)?;
    let rows = usize::try_from(args.size_mib(Sweep::Enospc))?;
    let (manifest, _) = crate::memory::build_version(&setup, rows, args.scratch.seed)?;
    let node = NodeProc::launch(bins, &setup, &opts.launcher)?;
    let source = node.version_dir(DATASET, 1);
    let mut destination = Summary::new("enospc-destination");
    let mut store = Summary::new("enospc-store");
    for run in 1..=args.runs {
        let dir = scratch.path().join(format!("dest-{run}"));
        destination.record(run, destination_run(bins, &pki, &node, &manifest, &source, &dir, args));
        let dir = scratch.path().join(format!("province-{run}"));
        store.record(run, store_run(bins, &pki, &node, &manifest, &source, &dir, args));
    }
    Ok(vec![destination, store])
}

fn destination_run(
    bins: &Binaries,
    pki: &Pki,
    node: &NodeProc,
    manifest: &Manifest,
    source: &Path,
    dir: &Path,
    args: &ReliabilityArgs,
) -> Result<RunOutcome> {
    let total = manifest.total_bytes();
    let tmpfs = Tmpfs::mount(dir, total / 2)?;
    let consumer = pki.issue("bench-consumer", "zhejiang", Role::Operator);
    let pull = |n: usize| -> Result<(bool, PullLog)> {
        let log = dir.with_extension(format!("{n}.log"));
        let mut command =
            ferry_command(bins, &crate::fleet::Launcher::direct(), "pull", &consumer, &node.node_arg());
        command.args([DATASET, "--version", "1", "--json", "--to"]).arg(dir);
        let mut child = spawn_logged(&mut command, &log)?;
        let ok = wait_child(&mut child, args.timeout(), &log).is_ok();
        let mut parsed = PullLog::new(&log);
        parsed.update()?;
        Ok((ok, parsed))
    };
    let mut outcome = RunOutcome::default();
    let (ok, first) = pull(1)?;
    let message = first.error.clone().unwrap_or_default();
    outcome.figure("first_pull", if ok { "succeeded" } else { "failed" });
    if ok {
        outcome.fail("the pull into a tmpfs of half the version's size succeeded");
    } else if !message.contains("No space left") {
        outcome.fail(format!("the error does not say the disk is full: {message}"));
    }
    if dir.join(DATASET).join("v1").exists() {
        outcome.fail("the failed pull left the version visible");
    }
    tmpfs.resize(2 * total + (32 << 20))?;
    let (ok, second) = pull(2)?;
    let resumed = second.done.map_or(0, |(_, resumed)| resumed);
    outcome.figure("resumed_bytes", resumed);
    outcome.figure("total_bytes", total);
    if !ok {
        outcome.fail(format!(
            "the pull after the tmpfs grew failed: {}",
            second.error.clone().unwrap_or_default()
        ));
    } else {
        if resumed == 0 {
            outcome.fail("the second pull resumed nothing");
        }
        check_both(&mut outcome, &dir.join(DATASET).join("v1"), source, manifest);
    }
    outcome.refetched = Some((first.fetched_bytes() + second.fetched_bytes()).saturating_sub(total));
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(dir);
    Ok(outcome)
}

fn store_run(
    bins: &Binaries,
    pki: &Pki,
    node: &NodeProc,
    manifest: &Manifest,
    source: &Path,
    dir: &Path,
    args: &ReliabilityArgs,
) -> Result<RunOutcome> {
    let total = manifest.total_bytes();
    let tmpfs = Tmpfs::mount(dir, total / 2)?;
    let opts = NodeOptions {
        name: "guangdong",
        role: Role::Province,
        listen: std::net::IpAddr::from([127, 0, 0, 1]),
        extra: format!("\n[peers.{PROVIDER}]\naddress = \"{}\"\n", node.addr),
        launcher: crate::fleet::Launcher::direct(),
        storage: None,
    };
    let setup = NodeProc::prepare(pki, dir, &opts)?;
    pin_listen(&setup, std::net::SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?)))?;
    let province = NodeProc::launch(bins, &setup, &opts.launcher)?;
    let replicate = |n: usize| -> Result<(bool, String)> {
        let log = dir.with_extension(format!("{n}.log"));
        let mut command =
            ferry_command(bins, &opts.launcher, "replicate", &setup.operator, &province.node_arg());
        command.args(["--from", PROVIDER, DATASET, "--version", "1", "--json"]);
        let mut child = spawn_logged(&mut command, &log)?;
        let result = wait_child(&mut child, args.timeout(), &log);
        Ok((result.is_ok(), tail(&log)))
    };
    let mut outcome = RunOutcome::default();
    let (ok, first) = replicate(1)?;
    outcome.figure("first_replicate", if ok { "succeeded" } else { "failed" });
    if ok {
        outcome.fail("the replication onto a tmpfs of half the version's size succeeded");
    } else {
        progress(&format!("enospc-store: the replication failed as it should: {first}"));
    }
    if listed(bins, &setup, &province)? {
        outcome.fail("the province lists the dataset after the failed replication");
    }
    tmpfs.resize(3 * total + (64 << 20))?;
    let (ok, second) = replicate(2)?;
    if !ok {
        outcome.fail(format!("the replication after the tmpfs grew failed: {second}"));
    } else {
        let copy = province.version_dir(DATASET, 1);
        check_both(&mut outcome, &copy, source, manifest);
    }
    drop(province);
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(dir);
    Ok(outcome)
}

/// Whether the province lists the dataset (`ferry list --json`).
fn listed(bins: &Binaries, setup: &NodeSetup, province: &NodeProc) -> Result<bool> {
    let launcher = crate::fleet::Launcher::direct();
    let mut command = ferry_command(bins, &launcher, "list", &setup.operator, &province.node_arg());
    let out = command.arg("--json").stdin(Stdio::null()).output().context("ferry list")?;
    ensure!(out.status.success(), "ferry list: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).contains(DATASET))
}
