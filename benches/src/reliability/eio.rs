//! Sweep `eio`: a `ferry pull` onto a filesystem that fails writes with EIO, on loopback.
//!
//! The destination is the testkit's fault-injecting passthrough FUSE filesystem
//! ([`ferry_testkit::faultfs`], hosted by this process): the pull's 20th write under its partial
//! directory fails with EIO. The pull must fail with an error naming the I/O error, leave nothing
//! of the version visible (`<dest>/<dataset>/v1` absent), and, run again with the fault off,
//! resume (`resumed_bytes` > 0) and complete with every file equal to the source. The node's own
//! store and state directory on the same filesystem are covered in-process by the testkit's
//! `eio_fs` tests. Without `/dev/fuse` or the right to mount, reported as skipped with the reason.
//!
//! Neighbours: [`super::space`] (the same shape on a full tmpfs), [`crate::fleet`] starts the
//! processes.

use std::path::Path;

use anyhow::{Context, Result};
use ferry_proto::{Manifest, Role};
use ferry_testkit::faultfs::{FaultFs, FsFault, FsOp};

use super::site::wait_child;
use super::{PullLog, ReliabilityArgs, RunOutcome, Summary, Sweep, check_both};
use crate::fleet::{Binaries, NodeOptions, NodeProc, Pki, ferry_command, spawn_logged};
use crate::report::progress;
use crate::transfer::DATASET;

/// Which write of the pull fails.
const FAILING_WRITE: usize = 20;

/// `eio`: the one scenario's summary.
pub(super) fn run(args: &ReliabilityArgs, bins: &Binaries) -> Result<Summary> {
    let root = args.scratch.root()?;
    let probe = tempfile::Builder::new().prefix("ferry-bench-fuse-probe-").tempdir_in(&root)?;
    if let Err(reason) = FaultFs::mount_over(&probe.path().join("mnt")) {
        progress(&format!("eio: skipped: {reason}"));
        return Ok(Summary::skipped("eio", &reason));
    }
    let scratch = tempfile::Builder::new().prefix("ferry-bench-eio-").tempdir_in(&root)?;
    let pki = Pki::new();
    let opts = NodeOptions::loopback_ministry(args.file_mib());
    let setup = NodeProc::prepare(&pki, scratch.path(), &opts)?;
    let rows = usize::try_from(args.size_mib(Sweep::Eio))?;
    let (manifest, _) = crate::memory::build_version(&setup, rows, args.scratch.seed)?;
    let node = NodeProc::launch(bins, &setup, &opts.launcher)?;
    let source = node.version_dir(DATASET, 1);
    let mut summary = Summary::new("eio");
    for run in 1..=args.runs {
        let dir = scratch.path().join(format!("dest-{run}"));
        summary.record(run, destination_run(bins, &pki, &node, &manifest, &source, &dir, args));
    }
    Ok(summary)
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
    let fs = FaultFs::mount_over(dir).map_err(anyhow::Error::msg).context("mounting the FUSE filesystem")?;
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
    fs.plan(FsFault::new(FsOp::Write, "/.ferry-partial/").nth(FAILING_WRITE));
    let (ok, first) = pull(1)?;
    let message = first.error.clone().unwrap_or_default();
    outcome.figure("first_pull", if ok { "succeeded" } else { "failed" });
    outcome.figure("injected", fs.injected());
    if ok {
        outcome.fail("the pull onto a failing filesystem succeeded");
    } else if !message.contains("Input/output error") {
        outcome.fail(format!("the error does not name the I/O error: {message}"));
    }
    if dir.join(DATASET).join("v1").exists() {
        outcome.fail("the failed pull left the version visible");
    }
    fs.clear();
    let (ok, second) = pull(2)?;
    let resumed = second.done.map_or(0, |(_, resumed)| resumed);
    outcome.figure("resumed_bytes", resumed);
    outcome.figure("total_bytes", total);
    if !ok {
        outcome.fail(format!(
            "the pull with the fault off failed: {}",
            second.error.clone().unwrap_or_default()
        ));
    } else {
        if resumed == 0 {
            outcome.fail("the second pull resumed nothing");
        }
        check_both(&mut outcome, &dir.join(DATASET).join("v1"), source, manifest);
    }
    outcome.refetched = Some((first.fetched_bytes() + second.fetched_bytes()).saturating_sub(total));
    drop(fs);
    let _ = std::fs::remove_dir_all(dir);
    Ok(outcome)
}
