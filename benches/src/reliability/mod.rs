//! Scenario `reliability`: fault sweeps against real `ferryd` and `ferry` processes. Each
//! sweep is one command, seeded (the same `--seed` kills at the same points), bounded in count
//! (`--kills`, `--runs`) and in time (`--timeout-s` per run), and ends with one line per
//! scenario:
//!
//! ```text
//! reliability scenario=kill-server runs=1 passed=1 failed=0 bytes_lost=0 refetched_max_bytes=…
//! ```
//!
//! - `kill-server` ([`kill`]): SIGKILL the serving ferryd at `--kills` seeded points of a pull of
//!   a multi-GiB version and start it again; the pull completes, every file hashes equal to the
//!   source, and the bytes fetched twice stay within one chunk per stream per kill.
//! - `kill-receiver` ([`kill`]): the same for the receiving ferryd of a `ferry replicate`.
//! - `partition` ([`partition`]): the link goes down mid-pull for a short (under QUIC's idle
//!   timeout) and a long (over it) while, on a clean link and on the WAN loss profiles.
//! - `enospc` ([`space`]): a puller's destination and a node's store on a small tmpfs; a typed
//!   error, nothing partial visible, the transfer resumes once the tmpfs is made larger.
//! - `eio` ([`eio`]): a puller's destination on a FUSE filesystem that fails a write with EIO;
//!   a typed error, nothing partial visible, the pull resumes once the fault is off.
//!
//! The node-to-node traffic of `kill-*` and `partition` crosses the link emulator
//! ([`crate::netem`]: namespaces A and B, root needed), whose counters give the exact IP bytes
//! the receiving side was sent; `refetched_max_bytes` is the largest, over runs, of those bytes
//! minus the bytes of the same transfer without faults (measured first, `baseline`), and of the
//! verified bytes fetched twice (sum of `fetched_bytes` over the pull's invocations minus the
//! version's size).
//!
//! `--quick` runs small versions and 2–3 faults (the ignored tests `faults::quick_*` of the
//! testkit run it); without it the defaults are the issue's: 2 GiB and 20 kills.
//!
//! Neighbours: [`crate::fleet`] starts the processes, [`crate::memory`] builds the version in the
//! node's store with the daemon's own code, [`crate::netem`] is the link.

mod eio;
mod kill;
mod partition;
mod site;
mod space;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ferry_proto::Manifest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fleet::{NodeProc, NodeSetup, ScratchArgs};
use crate::report::progress;

/// The chunk size of the nodes the sweeps start (the daemon's default).
pub(crate) const CHUNK: u64 = 1 << 20;
/// Streams of every pull whose re-fetch is bounded (passed as `--streams`).
pub(crate) const STREAMS: u64 = 4;

/// Which sweep to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sweep {
    KillServer,
    KillReceiver,
    Partition,
    Enospc,
    Eio,
    /// Every sweep above, one after another.
    All,
}

/// Options of `ferry-bench reliability`.
#[derive(Debug, Clone, Args)]
pub struct ReliabilityArgs {
    /// The sweep.
    #[arg(value_enum)]
    pub sweep: Sweep,
    /// Small versions and 2–3 faults (what the testkit's ignored `faults::quick_*` tests run).
    #[arg(long)]
    pub quick: bool,
    /// Size of the version, MiB [default: 2048 for kill-*, 256 partition, 64 enospc; --quick: 64,
    /// 32, 32].
    #[arg(long)]
    pub size_mib: Option<u64>,
    /// Size of each Parquet file, MiB (at most 256) [default: 64; --quick: 8].
    #[arg(long)]
    pub file_mib: Option<usize>,
    /// SIGKILLs per run of kill-server and kill-receiver [default: 20; --quick: 3 and 2].
    #[arg(long)]
    pub kills: Option<usize>,
    /// Runs of each sweep (each with its own kill points, from the seed).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Link profiles of `partition`: clean, wan30, wan80 [default: clean,wan30,wan80; --quick:
    /// wan80].
    #[arg(long, value_delimiter = ',')]
    pub profiles: Option<Vec<String>>,
    /// Longest one run may take, seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    #[command(flatten)]
    pub scratch: ScratchArgs,
}

impl ReliabilityArgs {
    fn size_mib(&self, sweep: Sweep) -> u64 {
        self.size_mib.unwrap_or(match (sweep, self.quick) {
            (Sweep::KillServer | Sweep::KillReceiver, false) => 2048,
            (Sweep::KillServer | Sweep::KillReceiver, true) => 64,
            (Sweep::Partition, false) => 256,
            (Sweep::Enospc | Sweep::Eio, false) => 64,
            _ => 32,
        })
    }

    fn file_mib(&self) -> usize {
        self.file_mib.unwrap_or(if self.quick { 8 } else { 64 })
    }

    fn kills(&self, sweep: Sweep) -> usize {
        self.kills.unwrap_or(match (sweep, self.quick) {
            (_, false) => 20,
            (Sweep::KillServer, true) => 3,
            _ => 2,
        })
    }

    fn profiles(&self) -> Vec<String> {
        self.profiles.clone().unwrap_or_else(|| {
            let names: &[&str] = if self.quick { &["wan80"] } else { &["clean", "wan30", "wan80"] };
            names.iter().map(|s| (*s).to_owned()).collect()
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

/// What one run of a sweep showed.
#[derive(Debug, Default)]
pub(crate) struct RunOutcome {
    /// `None` when the run passed; else why not.
    pub failure: Option<String>,
    /// Bytes of files that are missing or differ from the source once the run ended (in the
    /// copy or in the source's store).
    pub bytes_lost: u64,
    /// Bytes received twice (see the module doc); `None` where not measured.
    pub refetched: Option<u64>,
    /// `key=value` figures for the run's line.
    pub figures: Vec<(String, String)>,
}

impl RunOutcome {
    fn failed(reason: impl Into<String>) -> Self {
        Self { failure: Some(reason.into()), ..Self::default() }
    }

    pub(crate) fn figure(&mut self, key: &str, value: impl ToString) {
        self.figures.push((key.to_owned(), value.to_string()));
    }

    /// Adds `reason` to the run's failures.
    pub(crate) fn fail(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        self.failure = Some(match self.failure.take() {
            Some(earlier) => format!("{earlier}; {reason}"),
            None => reason,
        });
    }
}

/// The runs of one scenario and its summary line.
#[derive(Debug)]
pub(crate) struct Summary {
    scenario: String,
    outcomes: Vec<RunOutcome>,
    /// Why the scenario did not run here, if it did not.
    skipped: Option<String>,
}

impl Summary {
    pub(crate) fn new(scenario: &str) -> Self {
        Self { scenario: scenario.to_owned(), outcomes: Vec::new(), skipped: None }
    }

    pub(crate) fn skipped(scenario: &str, reason: &str) -> Self {
        Self { skipped: Some(reason.to_owned()), ..Self::new(scenario) }
    }

    /// Records one run, printing its line; a run that could not even be set up is a failure.
    pub(crate) fn record(&mut self, run: usize, outcome: Result<RunOutcome>) {
        let outcome = outcome.unwrap_or_else(|e| RunOutcome::failed(format!("{e:#}")));
        let figures: Vec<String> = outcome.figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "reliability-run scenario={} run={run} result={} bytes_lost={} refetched_bytes={} {}",
            self.scenario,
            if outcome.failure.is_none() { "passed" } else { "FAILED" },
            outcome.bytes_lost,
            outcome.refetched.map_or("nan".to_owned(), |b| b.to_string()),
            figures.join(" ")
        );
        if let Some(reason) = &outcome.failure {
            println!("reliability-run scenario={} run={run} failure: {reason}", self.scenario);
        }
        self.outcomes.push(outcome);
    }

    pub(crate) fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failure.is_some()).count()
    }

    /// `reliability scenario= runs= passed= failed= bytes_lost= refetched_max_bytes=`.
    pub(crate) fn line(&self) -> String {
        let failed = self.failed();
        let lost: u64 = self.outcomes.iter().map(|o| o.bytes_lost).sum();
        let refetched = self.outcomes.iter().filter_map(|o| o.refetched).max();
        let mut line = format!(
            "reliability scenario={} runs={} passed={} failed={failed} bytes_lost={lost} refetched_max_bytes={}",
            self.scenario,
            self.outcomes.len(),
            self.outcomes.len() - failed,
            refetched.map_or("nan".to_owned(), |b| b.to_string())
        );
        if let Some(reason) = &self.skipped {
            line.push_str(&format!(" skipped={reason:?}"));
        }
        line
    }
}

/// Runs the sweep(s) and prints one summary line per scenario; fails if any run failed.
pub fn run(args: &ReliabilityArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let sweeps = match args.sweep {
        Sweep::All => {
            vec![Sweep::KillServer, Sweep::KillReceiver, Sweep::Partition, Sweep::Enospc, Sweep::Eio]
        }
        one => vec![one],
    };
    let bins = crate::fleet::Binaries::build()?;
    let mut summaries = Vec::new();
    for sweep in sweeps {
        progress(&format!("reliability: {sweep:?}, seed {}", args.scratch.seed));
        let mut done = match sweep {
            Sweep::KillServer => vec![kill::kill_server(args, &bins)?],
            Sweep::KillReceiver => vec![kill::kill_receiver(args, &bins)?],
            Sweep::Partition => vec![partition::run(args, &bins)?],
            Sweep::Enospc => space::run(args, &bins)?,
            Sweep::Eio => vec![eio::run(args, &bins)?],
            Sweep::All => Vec::new(),
        };
        summaries.append(&mut done);
    }
    println!(
        "ferry-bench reliability: seed={} quick={} runs={} timeout_s={}",
        args.scratch.seed, args.quick, args.runs, args.timeout_s
    );
    for summary in &summaries {
        println!("{}", summary.line());
    }
    let failed: usize = summaries.iter().map(Summary::failed).sum();
    if failed > 0 {
        bail!("{failed} run(s) failed");
    }
    Ok(())
}

/// `count` points in (3 %, 97 %) of a transfer, ascending, from `seed`.
pub(crate) fn fault_points(seed: u64, stream: u64, count: usize) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut points: Vec<f64> = (0..count).map(|_| rng.random_range(0.03..0.97)).collect();
    points.sort_by(f64::total_cmp);
    points
}

/// A seeded pause, `min_ms..max_ms`, before a killed node starts again.
pub(crate) fn seeded_ms(rng: &mut ChaCha8Rng, min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(min_ms..max_ms.max(min_ms + 1)))
}

/// Makes a prepared node listen on `addr` for good, so that it comes back where its peers
/// expect it after a restart (the config [`NodeProc::prepare`] writes asks for port 0).
pub(crate) fn pin_listen(setup: &NodeSetup, addr: std::net::SocketAddr) -> Result<()> {
    let text = std::fs::read_to_string(&setup.config)?;
    let pinned: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("listen = ") { format!("listen = \"{addr}\"") } else { l.to_owned() })
        .collect();
    std::fs::write(&setup.config, pinned.join("\n") + "\n")?;
    Ok(())
}

/// A free UDP port on 127.0.0.1 (bound and released at once).
pub(crate) fn free_loopback_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// SIGKILLs a node and reaps it (its `Drop` then finds it gone).
pub(crate) fn sigkill(node: NodeProc) {
    let pid = nix::unistd::Pid::from_raw(node.pid() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    drop(node);
}

/// SIGKILLs a child process and reaps it.
pub(crate) fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Bytes of the manifest's files that `dir` lacks or holds with another size or BLAKE3.
pub(crate) fn lost_bytes(dir: &Path, manifest: &Manifest) -> u64 {
    manifest
        .files
        .iter()
        .filter(|entry| {
            let path = dir.join(entry.name.as_str());
            let Ok(file) = std::fs::File::open(&path) else { return true };
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(file).is_err() || hasher.finalize().as_bytes() != &entry.blake3.0
        })
        .map(|entry| entry.size)
        .sum()
}

/// Checks a copy and the source's store against the manifest: the bytes lost, and a failure
/// naming what differs.
pub(crate) fn check_both(outcome: &mut RunOutcome, copy: &Path, source: &Path, manifest: &Manifest) {
    for (what, dir) in [("copy", copy), ("source store", source)] {
        if let Err(e) = crate::memory::check(dir, manifest) {
            outcome.bytes_lost += lost_bytes(dir, manifest);
            outcome.fail(format!("the {what} differs from the manifest: {e:#}"));
        }
    }
}

/// What a `ferry pull --json` has printed so far, read from its log as it grows.
#[derive(Debug, Default)]
pub(crate) struct PullLog {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// Largest `verified_bytes` of a progress line.
    pub verified: u64,
    /// `fetched_bytes` of the last progress line (verified by this invocation).
    pub fetched: u64,
    /// `fetched_bytes` and `resumed_bytes` of the `done` line.
    pub done: Option<(u64, u64)>,
    /// The `error` line's message.
    pub error: Option<String>,
}

impl PullLog {
    pub(crate) fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), ..Self::default() }
    }

    /// Reads the lines written since the last call.
    pub(crate) fn update(&mut self) -> Result<()> {
        let mut file = std::fs::File::open(&self.path).with_context(|| self.path.display().to_string())?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        self.offset += file.read_to_string(&mut text)? as u64;
        self.partial.push_str(&text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(&line);
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        if line.contains("\"event\":\"progress\"") {
            self.verified = self.verified.max(json_u64(line, "verified_bytes").unwrap_or(0));
            self.fetched = json_u64(line, "fetched_bytes").unwrap_or(self.fetched);
        } else if line.contains("\"event\":\"done\"") {
            let fetched = json_u64(line, "fetched_bytes").unwrap_or(0);
            self.done = Some((fetched, json_u64(line, "resumed_bytes").unwrap_or(0)));
        } else if line.contains("\"event\":\"error\"") {
            self.error = Some(line.trim().to_owned());
        }
    }

    /// Verified bytes this invocation fetched: the `done` line's, else the last progress line's.
    pub(crate) fn fetched_bytes(&self) -> u64 {
        self.done.map_or(self.fetched, |(fetched, _)| fetched)
    }
}

/// The unsigned integer after `"key":` in a flat JSON line.
pub(crate) fn json_u64(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String =
        line[start..].chars().skip_while(|c| *c == ' ').take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_points_are_seeded_sorted_and_inside_the_transfer() {
        let points = fault_points(7, 0, 20);
        assert_eq!(points, fault_points(7, 0, 20));
        assert_ne!(points, fault_points(8, 0, 20));
        assert!(points.windows(2).all(|w| w[0] <= w[1]));
        assert!(points.iter().all(|p| (0.03..0.97).contains(p)));
    }

    #[test]
    fn pull_log_reads_progress_done_and_error_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pull.log");
        std::fs::write(
            &path,
            "{\"event\":\"progress\",\"verified_bytes\":10,\"fetched_bytes\":4,\"total_bytes\":20}\n{\"ev",
        )
        .unwrap();
        let mut log = PullLog::new(&path);
        log.update().unwrap();
        assert_eq!((log.verified, log.fetched, log.done), (10, 4, None));
        let more = "ent\":\"done\",\"fetched_bytes\":16,\"resumed_bytes\":4}\n{\"event\":\"error\",\"kind\":\"failed\"}\n";
        std::io::Write::write_all(
            &mut std::fs::OpenOptions::new().append(true).open(&path).unwrap(),
            more.as_bytes(),
        )
        .unwrap();
        log.update().unwrap();
        assert_eq!(log.done, Some((16, 4)));
        assert_eq!(log.fetched_bytes(), 16);
        assert!(log.error.is_some());
    }

    #[test]
    fn a_summary_counts_failures_and_the_largest_refetch() {
        let mut summary = Summary::new("kill-server");
        summary.record(1, Ok(RunOutcome { refetched: Some(5), ..RunOutcome::default() }));
        summary.record(2, Ok(RunOutcome { refetched: Some(9), bytes_lost: 3, ..RunOutcome::failed("x") }));
        summary.record(3, Err(anyhow::anyhow!("no link")));
        assert_eq!(
            summary.line(),
            "reliability scenario=kill-server runs=3 passed=1 failed=2 bytes_lost=3 refetched_max_bytes=9"
        );
    }
}
