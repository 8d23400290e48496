//! Sweeps `kill-server` and `kill-receiver`: SIGKILL a `ferryd` at seeded points of a transfer
//! and start it again on the same store and port.
//!
//! - `kill-server`: the ministry in A serves one `ferry pull --streams 4` in B; at each point
//!   (a share of the version's bytes verified by the puller, from its `--json` progress) the
//!   ministry is killed and, after a seeded pause of up to a second, started again. The same
//!   pull process reconnects and goes on; were it to give up, it is run again and resumes from
//!   its journal (counted as `pull_invocations`).
//! - `kill-receiver`: a province `ferryd` in B is told with `ferry replicate` to pull the version
//!   from the ministry; at each point (a share of the version's bytes carried by the link) the
//!   province and the `ferry replicate` waiting on it are killed, the province is started
//!   again and the replication asked again: its pull resumes from the journal in its state
//!   directory.
//!
//! Each run then checks every file of the copy and of the source's store against the manifest
//! (size and BLAKE3), and bounds the bytes received twice (see [`super`] for how they are
//! measured): by one chunk per stream per kill, and for a killed receiver on the link by one
//! chunk per stream plus the connection receive window its pull sets
//! ([`ferry_client::transfer::connection_receive_window`]) per kill, since what QUIC had
//! received for the dead process is fetched again (the line says whether the chunk bound was
//! met).
//!
//! Neighbours: [`super::site`] sets up the link and the serving node.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_proto::{Manifest, Role};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::site::{PORT, RetriedPull, Site, tail, wait_child};
use super::{
    CHUNK, ReliabilityArgs, RunOutcome, STREAMS, Summary, Sweep, check_both, fault_points, seeded_ms,
};
use crate::fleet::{Binaries, NodeOptions, NodeProc, NodeSetup, fresh_dir, spawn_logged};
use crate::netem::{LinkProfile, Side};
use crate::report::progress;
use crate::transfer::{DATASET, PROVIDER};

/// The receiving node of `kill-receiver`.
const RECEIVER: &str = "guangdong";

/// A link without impairment: it only counts the bytes.
fn counting_link() -> LinkProfile {
    LinkProfile::clean("counting", 0, Duration::ZERO)
}

/// `kill-server`: see the module doc.
pub(super) fn kill_server(args: &ReliabilityArgs, bins: &Binaries) -> Result<Summary> {
    let mut summary = Summary::new("kill-server");
    let mut site = match Site::start(args, bins, &counting_link(), args.size_mib(Sweep::KillServer)) {
        Ok(site) => site,
        Err(e) => {
            summary.record(1, Err(e));
            return Ok(summary);
        }
    };
    let dest = fresh_dir(site.scratch.path(), "baseline")?;
    let baseline = site.baseline_pull(bins, &dest, args.timeout())?;
    std::fs::remove_dir_all(&dest)?;
    progress(&format!("kill-server: a pull without faults took {baseline} bytes on the link"));
    for run in 1..=args.runs {
        let outcome = server_run(args, bins, &mut site, baseline, run);
        summary.record(run, outcome);
    }
    Ok(summary)
}

fn server_run(
    args: &ReliabilityArgs,
    bins: &Binaries,
    site: &mut Site,
    baseline: u64,
    run: usize,
) -> Result<RunOutcome> {
    let kills = args.kills(Sweep::KillServer);
    let points = fault_points(args.scratch.seed, run as u64, kills);
    let mut rng = ChaCha8Rng::seed_from_u64(args.scratch.seed ^ (run as u64) << 32);
    let dest = fresh_dir(site.scratch.path(), &format!("pull-{run}"))?;
    let logs = site.scratch.path().join(format!("pull-{run}"));
    let total = site.total();
    let wire_before = site.wire();
    let started = Instant::now();
    let mut outcome = RunOutcome::default();
    let mut pull = RetriedPull::start(site, bins, &dest, &logs, Some(STREAMS))?;
    let (mut done_kills, mut floor, mut sent_to_dead) = (0, 0, 0);
    let finished = loop {
        if pull.poll(site, bins)? == Some(true) {
            break true;
        }
        if pull.invocations > 2 * kills + 3 {
            outcome.fail(format!("the pull was run {} times without finishing", pull.invocations));
            break false;
        }
        let verified = pull.log.verified;
        let due = points.get(done_kills).is_some_and(|p| verified as f64 >= p * total as f64);
        if due && verified >= floor + CHUNK {
            site.kill_node();
            let at_kill = site.wire();
            done_kills += 1;
            let pause = seeded_ms(&mut rng, 0, 1000);
            progress(&format!(
                "kill-server run {run}: SIGKILL {done_kills}/{kills} at {verified} of {total} bytes verified; \
                 restart in {} ms",
                pause.as_millis()
            ));
            std::thread::sleep(pause);
            site.restart_node(bins)?;
            sent_to_dead += site.wire() - at_kill;
            floor = verified;
        }
        if started.elapsed() > args.timeout() {
            pull.stop();
            outcome.fail(format!("the pull did not finish within {:?}", args.timeout()));
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wire = site.wire() - wire_before;
    let seconds = started.elapsed().as_secs_f64();
    let refetched_verified = pull.fetched_before.saturating_sub(total);
    let measured = Measured { wire, baseline, sent_to_dead, refetched_verified: Some(refetched_verified) };
    judge(&mut outcome, measured, done_kills, 0);
    outcome.figure("kills", format!("{done_kills}/{kills}"));
    outcome.figure("pull_invocations", pull.invocations);
    outcome.figure("seconds", format!("{seconds:.1}"));
    if finished {
        check_both(&mut outcome, &dest.join(DATASET).join("v1"), &site.source_dir(), &site.manifest);
    }
    std::fs::remove_dir_all(&dest)?;
    Ok(outcome)
}

/// Records the bytes received twice: on the link, those a run carried beyond the baseline less
/// those carried while the killed side was down (`sent_to_dead`: what the live side had in
/// flight towards a dead process, never received); and the verified bytes fetched twice.
///
/// The issue's bound is one chunk per stream per kill (`chunk_bound`). A killed receiver also
/// loses what QUIC had buffered for it and it had not read yet, up to `buffered` per stream (its
/// share of the connection receive window), which it fetches again: the run fails when the bytes on the link exceed a
/// chunk plus `buffered` per stream per kill, or the verified bytes fetched twice exceed the
/// chunk bound; the line says whether the chunk bound itself was met on the link.
fn judge(outcome: &mut RunOutcome, measured: Measured, kills: usize, buffered: u64) {
    let wire_extra = measured.wire.saturating_sub(measured.baseline);
    let refetched_wire = wire_extra.saturating_sub(measured.sent_to_dead);
    let chunk_bound = kills as u64 * STREAMS * CHUNK;
    let bound = kills as u64 * STREAMS * (CHUNK + buffered);
    outcome.figure("wire_bytes", measured.wire);
    outcome.figure("baseline_wire_bytes", measured.baseline);
    outcome.figure("wire_extra_bytes", wire_extra);
    outcome.figure("sent_to_dead_bytes", measured.sent_to_dead);
    outcome.figure("refetched_wire_bytes", refetched_wire);
    match measured.refetched_verified {
        Some(bytes) => outcome.figure("refetched_verified_bytes", bytes),
        None => outcome.figure("refetched_verified_bytes", "unmeasured"),
    }
    outcome.figure("chunk_bound_bytes", chunk_bound);
    outcome.figure("chunk_bound", if refetched_wire <= chunk_bound { "met" } else { "NOT-met" });
    let refetched_verified = measured.refetched_verified.unwrap_or(0);
    outcome.refetched = Some(refetched_wire.max(refetched_verified));
    if refetched_wire > bound {
        outcome.fail(format!("{refetched_wire} bytes received twice on the link: above {bound}"));
    }
    if refetched_verified > chunk_bound {
        outcome.fail(format!(
            "{refetched_verified} verified bytes fetched twice: above {kills} kills × {STREAMS} streams × {CHUNK}"
        ));
    }
}

/// Bytes of one run with faults (see [`judge`]).
#[derive(Debug, Clone, Copy)]
struct Measured {
    wire: u64,
    baseline: u64,
    sent_to_dead: u64,
    /// `None` where the fetches of a killed process cannot be counted (a killed receiver: see
    /// [`AtKill`] for what is measured instead).
    refetched_verified: Option<u64>,
}

/// `kill-receiver`: see the module doc.
pub(super) fn kill_receiver(args: &ReliabilityArgs, bins: &Binaries) -> Result<Summary> {
    let mut summary = Summary::new("kill-receiver");
    let site = match Site::start(args, bins, &counting_link(), args.size_mib(Sweep::KillReceiver)) {
        Ok(site) => site,
        Err(e) => {
            summary.record(1, Err(e));
            return Ok(summary);
        }
    };
    let baseline = {
        let receiver = Receiver::start(&site, bins, "fujian", &site.scratch.path().join("baseline"))?;
        let log = site.scratch.path().join("baseline-replicate.log");
        let before = site.wire();
        let mut child = receiver.spawn_replicate(&site, bins, &log)?;
        wait_child(&mut child, args.timeout(), &log)?;
        let bytes = site.wire() - before;
        crate::memory::check(&receiver.version_dir(), &site.manifest)?;
        drop(receiver);
        bytes
    };
    progress(&format!("kill-receiver: a replication without faults took {baseline} bytes on the link"));
    for run in 1..=args.runs {
        let outcome = receiver_run(args, bins, &site, baseline, run);
        summary.record(run, outcome);
    }
    Ok(summary)
}

/// A province node in B that replicates from the ministry, on a fixed port.
struct Receiver {
    setup: NodeSetup,
    node: Option<NodeProc>,
}

impl Receiver {
    fn start(site: &Site, bins: &Binaries, name: &'static str, root: &Path) -> Result<Self> {
        let opts = NodeOptions {
            name,
            role: Role::Province,
            listen: site.link.addr(Side::B),
            extra: format!("\n[peers.{PROVIDER}]\naddress = \"{}\"\n", site.serve_addr()),
            launcher: Site::launcher(&site.link, Side::B),
            storage: None,
        };
        let setup = NodeProc::prepare(&site.pki, root, &opts)?;
        super::pin_listen(&setup, std::net::SocketAddr::new(site.link.addr(Side::B), PORT))?;
        let node = NodeProc::launch(bins, &setup, &opts.launcher)?;
        Ok(Self { setup, node: Some(node) })
    }

    fn spawn_replicate(&self, site: &Site, bins: &Binaries, log: &Path) -> Result<Child> {
        let addr = std::net::SocketAddr::new(site.link.addr(Side::B), PORT);
        let node = format!("{}@{addr}", self.setup.name);
        let mut command = site.command_in_b(bins, "replicate", &self.setup.operator, &node);
        command.args(["--from", PROVIDER, DATASET, "--version", "1", "--json"]);
        spawn_logged(&mut command, log)
    }

    /// Bytes of the chunks the node's resume journal of the version records as verified and
    /// written: the pull of a replication keeps it in the node's state directory.
    fn journaled(&self, manifest: &Manifest) -> u64 {
        let incoming = self.setup.dir.join("state").join("incoming");
        let staging = ferry_client::transfer::staging_dir(&incoming, &manifest.dataset, manifest.version);
        let journal = ferry_client::transfer::workdir::journal_path(&staging);
        let sizes: Vec<u64> = manifest.files.iter().map(|f| f.size).collect();
        std::fs::read_to_string(journal)
            .map_or(0, |text| journaled_bytes(&text, u64::from(manifest.chunk_size), &sizes))
    }

    fn version_dir(&self) -> std::path::PathBuf {
        self.setup.dir.join("data").join("datasets").join(DATASET).join("v1")
    }

    /// SIGKILLs the node; returns the link's byte count as the signal was sent, before the
    /// process is reaped.
    fn kill(&mut self, site: &Site) -> u64 {
        let node = self.node.take();
        if let Some(node) = &node {
            let pid = nix::unistd::Pid::from_raw(node.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let wire = site.wire();
        drop(node);
        wire
    }

    fn restart(&mut self, site: &Site, bins: &Binaries) -> Result<()> {
        self.node = Some(NodeProc::launch(bins, &self.setup, &Site::launcher(&site.link, Side::B))?);
        Ok(())
    }
}

fn receiver_run(
    args: &ReliabilityArgs,
    bins: &Binaries,
    site: &Site,
    baseline: u64,
    run: usize,
) -> Result<RunOutcome> {
    let kills = args.kills(Sweep::KillReceiver);
    let points = fault_points(args.scratch.seed, 1000 + run as u64, kills);
    let mut rng = ChaCha8Rng::seed_from_u64(args.scratch.seed ^ (1000 + run as u64) << 32);
    let root = fresh_dir(site.scratch.path(), &format!("receiver-{run}"))?;
    let mut receiver = Receiver::start(site, bins, RECEIVER, &root)?;
    let total = site.total();
    let wire_before = site.wire();
    let started = Instant::now();
    let mut outcome = RunOutcome::default();
    let mut attempts = 1;
    let log = |n: usize| root.join(format!("replicate-{n}.log"));
    let mut at_kill = AtKill::new(site.wire(), baseline, total);
    let mut child = receiver.spawn_replicate(site, bins, &log(attempts))?;
    let (mut done_kills, mut floor, mut sent_to_dead) = (0, 0, 0);
    let finished = loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                break true;
            }
            progress(&format!("the replication failed ({status}: {}); asking again", tail(&log(attempts))));
            attempts += 1;
            if attempts > 2 * kills + 3 {
                outcome.fail(format!("the replication was asked {attempts} times without finishing"));
                break false;
            }
            at_kill.asked_again(site.wire(), receiver.journaled(&site.manifest));
            child = receiver.spawn_replicate(site, bins, &log(attempts))?;
        }
        let carried = site.wire() - wire_before;
        let due = points.get(done_kills).is_some_and(|p| carried as f64 >= p * total as f64);
        if due && carried >= floor + CHUNK {
            // Counted as the signal is sent: what the link carries once the process is dying
            // (while it is reaped) reaches no reader and is counted as sent to the dead.
            let wire_at_kill = receiver.kill(site);
            super::kill_child(&mut child);
            at_kill.killed(wire_at_kill, receiver.journaled(&site.manifest));
            done_kills += 1;
            let pause = seeded_ms(&mut rng, 0, 1000);
            progress(&format!(
                "kill-receiver run {run}: SIGKILL {done_kills}/{kills} at {carried} of {total} bytes carried; \
                 restart in {} ms",
                pause.as_millis()
            ));
            std::thread::sleep(pause);
            receiver.restart(site, bins)?;
            sent_to_dead += site.wire() - wire_at_kill;
            attempts += 1;
            at_kill.asked_again(site.wire(), receiver.journaled(&site.manifest));
            child = receiver.spawn_replicate(site, bins, &log(attempts))?;
            floor = carried;
        }
        if started.elapsed() > args.timeout() {
            super::kill_child(&mut child);
            outcome.fail(format!("the replication did not finish within {:?}", args.timeout()));
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wire = site.wire() - wire_before;
    let measured = Measured { wire, baseline, sent_to_dead, refetched_verified: None };
    // The counting link has no delay of its own: a short path.
    let window =
        ferry_client::transfer::connection_receive_window(Duration::ZERO, STREAMS as usize, CHUNK as u32)
            .unwrap_or(STREAMS * u64::from(ferry_net::tls::STREAM_RECEIVE_WINDOW));
    judge(&mut outcome, measured, done_kills, window / STREAMS);
    at_kill.judge(&mut outcome, window);
    outcome.figure("kills", format!("{done_kills}/{kills}"));
    outcome.figure("replicate_invocations", attempts);
    outcome.figure("seconds", format!("{:.1}", started.elapsed().as_secs_f64()));
    if finished {
        at_kill.judge_last_ask(&mut outcome, &log(attempts), total);
        check_both(&mut outcome, &receiver.version_dir(), &site.source_dir(), &site.manifest);
    }
    drop(receiver);
    std::fs::remove_dir_all(&root)?;
    Ok(outcome)
}

/// What a killed receiver took with it, kill by kill: the bytes the link carried to it during
/// the replication it was running (from its start to the SIGKILL) less those its resume journal
/// recorded in that time, counted in link bytes (the journaled payload times the link's bytes
/// per payload byte of the baseline, for the packets' headers). What is left is what the
/// process held and had not journaled: at most one chunk per stream in its hands (being read
/// from QUIC, or verified and written), and what QUIC had received for it and it had not read,
/// which flow control bounds by the connection receive window the pull sets (datagrams still
/// in the socket are within that window too). All of it is fetched again; nothing the journal
/// recorded is.
struct AtKill {
    /// Link bytes when the running replication was asked.
    wire_at_ask: u64,
    /// Journaled bytes when it was asked.
    journaled_at_ask: u64,
    /// Link bytes per payload byte of a replication without faults.
    wire_per_byte: f64,
    /// Lost bytes, one per kill.
    lost: Vec<u64>,
}

impl AtKill {
    fn new(wire: u64, baseline: u64, total: u64) -> Self {
        let wire_per_byte = baseline as f64 / total.max(1) as f64;
        Self { wire_at_ask: wire, journaled_at_ask: 0, wire_per_byte, lost: Vec::new() }
    }

    fn killed(&mut self, wire: u64, journaled: u64) {
        let carried = wire.saturating_sub(self.wire_at_ask);
        let recorded = journaled.saturating_sub(self.journaled_at_ask) as f64 * self.wire_per_byte;
        self.lost.push(carried.saturating_sub(recorded as u64));
    }

    fn asked_again(&mut self, wire: u64, journaled: u64) {
        self.wire_at_ask = wire;
        self.journaled_at_ask = journaled;
    }

    /// Each kill's loss must stay within a chunk per stream plus the connection receive window.
    fn judge(&self, outcome: &mut RunOutcome, window: u64) {
        let bound = STREAMS * CHUNK + window;
        let max = self.lost.iter().copied().max().unwrap_or(0);
        let mean = self.lost.iter().sum::<u64>() / self.lost.len().max(1) as u64;
        outcome.figure("unjournaled_at_kill_max_bytes", max);
        outcome.figure("unjournaled_at_kill_mean_bytes", mean);
        outcome.figure("per_kill_bound_bytes", format!("{bound}(={STREAMS}x{CHUNK}+{window})"));
        if max > bound {
            outcome.fail(format!("a kill lost {max} bytes the journal had not recorded: above {bound}"));
        }
    }
}

impl AtKill {
    /// The replication that completed fetched exactly what its journal lacked when it was asked:
    /// no chunk the journal recorded was fetched again (`ferry replicate --json` prints the
    /// bytes fetched).
    fn judge_last_ask(&self, outcome: &mut RunOutcome, log: &Path, total: u64) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let Some(fetched) = json_number(&text, "bytes_fetched") else {
            outcome.fail(format!("no bytes_fetched in {}", log.display()));
            return;
        };
        outcome.figure("last_ask_resumed_bytes", self.journaled_at_ask);
        outcome.figure("last_ask_fetched_bytes", fetched);
        if fetched + self.journaled_at_ask != total {
            outcome.fail(format!(
                "the last replication fetched {fetched} bytes with {} journaled, of {total}",
                self.journaled_at_ask
            ));
        }
    }
}

/// The number after `"key":` in a line of JSON.
fn json_number(text: &str, key: &str) -> Option<u64> {
    let pattern = format!("\"{key}\":");
    let at = text.rfind(&pattern)? + pattern.len();
    let digits: String = text[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The bytes of the chunks a journal's text records (`<file> <chunk>` lines after its header),
/// for files of `sizes` cut in chunks of `chunk_size`.
fn journaled_bytes(text: &str, chunk_size: u64, sizes: &[u64]) -> u64 {
    let done: std::collections::HashSet<(usize, u64)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (file, chunk) = line.split_once(' ')?;
            Some((file.parse().ok()?, chunk.parse().ok()?))
        })
        .collect();
    done.iter()
        .filter_map(|&(file, chunk)| {
            let size = *sizes.get(file)?;
            Some(size.saturating_sub(chunk * chunk_size).min(chunk_size))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_counts_each_recorded_chunk_once_at_its_length() {
        let text = "ferry-journal 1 abc\n0 0\n0 2\n0 2\n0 9\n7 0\n0 1";
        assert_eq!(journaled_bytes(text, 4, &[10]), 4 + 2 + 4, "chunks 0, 2 (the short last), 1");
        assert_eq!(
            json_number(r#"{"dataset":"x","bytes_fetched": 1234,"files":2}"#, "bytes_fetched"),
            Some(1234)
        );
    }
}
