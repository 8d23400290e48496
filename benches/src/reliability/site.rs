//! The place a sweep runs: an emulated link (namespaces A and B), a ministry `ferryd` in A
//! listening on a fixed port (so it comes back at the same address after a SIGKILL), one
//! version of `--size-mib` MiB built into its store, and the commands of the processes in B.
//!
//! Neighbours: [`super::kill`] and [`super::partition`] run their faults on it;
//! [`crate::netem`] is the link, [`crate::memory::build_version`] the version.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_net::tls::TlsPaths;
use ferry_proto::{Manifest, Role};

use super::{PullLog, ReliabilityArgs, pin_listen};
use crate::fleet::{Binaries, Launcher, NodeOptions, NodeProc, NodeSetup, Pki, ferry_command, spawn_logged};
use crate::netem::{EmulatedLink, LinkProfile, Side};
use crate::report::progress;
use crate::transfer::{DATASET, PROVIDER};

/// The port every node of a sweep listens on, in its own namespace.
pub(super) const PORT: u16 = 7443;

/// A link, the serving node in A and its version.
pub(super) struct Site {
    pub link: EmulatedLink,
    pub pki: Pki,
    pub scratch: tempfile::TempDir,
    pub setup: NodeSetup,
    /// The serving node; `None` between a SIGKILL and its restart.
    pub node: Option<NodeProc>,
    pub manifest: Manifest,
    /// A consumer of another department, the puller of the `pull` sweeps.
    pub consumer: TlsPaths,
}

impl Site {
    /// Starts the link with `profile`, builds the version in a ministry node's store and starts
    /// the node in A.
    pub fn start(
        args: &ReliabilityArgs,
        bins: &Binaries,
        profile: &LinkProfile,
        size_mib: u64,
    ) -> Result<Self> {
        let link = EmulatedLink::start(profile).context("starting the link emulator (needs root)")?;
        let root = args.scratch.root()?;
        let scratch = tempfile::Builder::new().prefix("ferry-bench-reliability-").tempdir_in(root)?;
        let pki = Pki::new();
        let opts = NodeOptions::ministry(args.file_mib(), link.addr(Side::A), Self::launcher(&link, Side::A));
        let setup = NodeProc::prepare(&pki, scratch.path(), &opts)?;
        pin_listen(&setup, SocketAddr::new(link.addr(Side::A), PORT))?;
        let rows = usize::try_from(size_mib)?;
        progress(&format!("building a {size_mib} MiB version in the node's store ({} link)", profile.name));
        let (manifest, _) = crate::memory::build_version(&setup, rows, args.scratch.seed)?;
        let node = NodeProc::launch(bins, &setup, &Self::launcher(&link, Side::A))?;
        let consumer = pki.issue("bench-consumer", "zhejiang", Role::Operator);
        Ok(Self { link, pki, scratch, setup, node: Some(node), manifest, consumer })
    }

    pub fn launcher(link: &EmulatedLink, side: Side) -> Launcher {
        Launcher::in_netns(link.namespace(side))
    }

    /// `ministry@10.201.0.1:PORT`.
    pub fn node_arg(&self) -> String {
        format!("{PROVIDER}@{}", self.serve_addr())
    }

    pub fn serve_addr(&self) -> SocketAddr {
        SocketAddr::new(self.link.addr(Side::A), PORT)
    }

    /// IP bytes the link has carried from A to B so far.
    pub fn wire(&self) -> u64 {
        self.link.stats().a_to_b.bytes_forwarded
    }

    /// The version's files in the serving node's store.
    pub fn source_dir(&self) -> PathBuf {
        self.setup.dir.join("data").join("datasets").join(DATASET).join("v1")
    }

    pub fn total(&self) -> u64 {
        self.manifest.total_bytes()
    }

    /// SIGKILLs the serving node.
    pub fn kill_node(&mut self) {
        if let Some(node) = self.node.take() {
            super::sigkill(node);
        }
    }

    /// Starts the serving node again on its store and port.
    pub fn restart_node(&mut self, bins: &Binaries) -> Result<()> {
        let launcher = Self::launcher(&self.link, Side::A);
        self.node = Some(NodeProc::launch(bins, &self.setup, &launcher)?);
        Ok(())
    }

    /// `ferry pull --json --streams 4` of the version into `dest`, run in B, its output to `log`.
    pub fn spawn_pull(
        &self,
        bins: &Binaries,
        dest: &Path,
        log: &Path,
        streams: Option<u64>,
    ) -> Result<Child> {
        let launcher = Self::launcher(&self.link, Side::B);
        let mut command = ferry_command(bins, &launcher, "pull", &self.consumer, &self.node_arg());
        command.args([DATASET, "--version", "1", "--json", "--to"]).arg(dest);
        if let Some(streams) = streams {
            command.arg("--streams").arg(streams.to_string());
        }
        spawn_logged(&mut command, log)
    }

    /// A fault-free pull into `dest`: the IP bytes it took on the link (what a run with faults is
    /// compared with).
    pub fn baseline_pull(&self, bins: &Binaries, dest: &Path, limit: Duration) -> Result<u64> {
        let log = self.scratch.path().join("baseline-pull.log");
        let before = self.wire();
        let mut child = self.spawn_pull(bins, dest, &log, Some(super::STREAMS))?;
        wait_child(&mut child, limit, &log)?;
        let bytes = self.wire() - before;
        crate::memory::check(&dest.join(DATASET).join("v1"), &self.manifest).context("the baseline pull")?;
        Ok(bytes)
    }

    /// A command of the `ferry` CLI run in B as `user` against `node`.
    pub fn command_in_b(&self, bins: &Binaries, subcommand: &str, user: &TlsPaths, node: &str) -> Command {
        ferry_command(bins, &Self::launcher(&self.link, Side::B), subcommand, user, node)
    }
}

/// Waits for `child` to succeed within `limit`; its output is in `log`.
pub(super) fn wait_child(child: &mut Child, limit: Duration, log: &Path) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "{status}: {}", tail(log));
            return Ok(());
        }
        if started.elapsed() > limit {
            super::kill_child(child);
            anyhow::bail!("did not finish within {limit:?}: {}", tail(log));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a log, for an error message.
pub(super) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(4).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// A pull that is run again (resuming from its journal) whenever it exits without finishing,
/// each invocation with its own log.
pub(super) struct RetriedPull {
    dest: PathBuf,
    logs: PathBuf,
    streams: Option<u64>,
    pub child: Child,
    pub log: PullLog,
    /// Invocations so far.
    pub invocations: usize,
    /// Verified bytes fetched by the invocations that have ended.
    pub fetched_before: u64,
}

impl RetriedPull {
    pub fn start(
        site: &Site,
        bins: &Binaries,
        dest: &Path,
        logs: &Path,
        streams: Option<u64>,
    ) -> Result<Self> {
        let path = logs.with_extension("1.log");
        let child = site.spawn_pull(bins, dest, &path, streams)?;
        Ok(Self {
            dest: dest.to_owned(),
            logs: logs.to_owned(),
            streams,
            child,
            log: PullLog::new(&path),
            invocations: 1,
            fetched_before: 0,
        })
    }

    /// Reads its progress; `Some(true)` once it finished, `Some(false)` when it exited without
    /// finishing (and was started again), `None` while it runs.
    pub fn poll(&mut self, site: &Site, bins: &Binaries) -> Result<Option<bool>> {
        self.log.update()?;
        let Some(status) = self.child.try_wait()? else { return Ok(None) };
        self.log.update()?;
        self.fetched_before += self.log.fetched_bytes();
        if status.success() && self.log.done.is_some() {
            return Ok(Some(true));
        }
        progress(&format!(
            "the pull exited ({status}: {}); running it again",
            self.log.error.as_deref().unwrap_or("no error line")
        ));
        self.invocations += 1;
        let path = self.logs.with_extension(format!("{}.log", self.invocations));
        self.child = site.spawn_pull(bins, &self.dest, &path, self.streams)?;
        let verified = self.log.verified;
        self.log = PullLog::new(&path);
        self.log.verified = verified;
        Ok(Some(false))
    }

    /// Stops it (a run that timed out).
    pub fn stop(&mut self) {
        super::kill_child(&mut self.child);
    }
}
