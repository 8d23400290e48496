//! One run of one contender over the link: its client started in namespace B, stopped at the cap
//! (then measured by the bytes it had received), its output checked, and what it cost on both
//! ends and on the link.
//!
//! Neighbours: [`super::site`] holds what the clients pull from; [`super::summary`] records the
//! outcome.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::WanArgs;
use super::site::Site;
use super::tuning::both_sides_rcvbuf_errors;
use crate::fleet::{Binaries, Launcher, ferry_command, spawn_logged, terminate};
use crate::netem::{EmulatedLink, LinkStats};
use crate::servers::{self, PeerServers};
use crate::transfer::DATASET;

/// How long a stopped run gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How one run of a contender went.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    /// Wall seconds, or the cap.
    pub(super) seconds: f64,
    /// Bytes delivered: the whole version, or what had arrived when the cap stopped the run.
    pub(super) bytes: u64,
    pub(super) capped: bool,
    /// CPU seconds of the client (with its children) and of the server.
    pub(super) client_cpu: f64,
    pub(super) server_cpu: f64,
    /// The link's counters during the run.
    pub(super) link: LinkStats,
    /// UDP datagrams dropped on full socket buffers in A and B during the run.
    pub(super) udp_rcvbuf_errors: u64,
    /// From ferry's output: the reasons of its `retry` events and any line that is not JSON
    /// (warnings, errors).
    pub(super) remarks: Vec<String>,
}

/// How a child run ended.
struct Ended {
    seconds: f64,
    /// `Some(bytes so far)` when the cap stopped it.
    capped: Option<u64>,
}

/// Runs `command` (output to `log`) until it exits or `cap` passes; then `so_far` counts what it
/// had received, and it is stopped (SIGTERM, SIGKILL after [`STOP_GRACE`]). A failure (other than
/// being stopped) is an error with the end of its log.
fn run_capped(command: &mut Command, log: &Path, cap: Duration, so_far: &dyn Fn() -> u64) -> Result<Ended> {
    let what = format!("{command:?}");
    let started = Instant::now();
    let mut child = spawn_logged(command, log)?;
    loop {
        if let Some(status) = child.try_wait()? {
            let seconds = started.elapsed().as_secs_f64();
            if !status.success() {
                bail!("{what} failed ({status}): {}", log_tail(log, 2000));
            }
            return Ok(Ended { seconds, capped: None });
        }
        if started.elapsed() >= cap {
            let bytes = so_far();
            // SIGTERM: ferry stops at a chunk boundary, rsync takes its ssh down.
            terminate(&mut child, STOP_GRACE);
            return Ok(Ended { seconds: cap.as_secs_f64(), capped: Some(bytes) });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last `max` bytes of a log.
fn log_tail(log: &Path, max: usize) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(max)..]).into_owned();
    text.trim().to_owned()
}

/// Bytes in the files under `dir` (recursively, hidden ones included: rsync's temporary files),
/// counting what is allocated for sparse ones.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => bytes_under(&entry.path()),
            Ok(meta) => meta.len().min(meta.blocks() * 512),
            Err(_) => 0,
        })
        .sum()
}

/// The value of `"field":<number>` in the last line of `text` that has it.
fn last_json_number(text: &str, field: &str) -> Option<u64> {
    let needle = format!("\"{field}\":");
    text.lines().rev().find_map(|line| {
        let rest = line.split_once(&needle)?.1.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// From `ferry pull --json` output: `retry: <reason>` for each retry event, and every line that
/// is not JSON (without ANSI colours).
fn pull_remarks(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| {
            if !line.starts_with('{') {
                return (!line.is_empty()).then(|| strip_ansi(line));
            }
            line.contains("\"event\":\"retry\"").then(|| {
                let reason = line
                    .split_once("\"reason\":\"")
                    .map(|(_, rest)| rest.split('"').next().unwrap_or_default());
                format!("retry: {}", reason.unwrap_or(line))
            })
        })
        .collect()
}

/// Removes ANSI colour sequences (`ESC [ … m`).
pub(super) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Everything one profile's runs need.
pub(super) struct Bench<'a> {
    pub(super) args: &'a WanArgs,
    pub(super) bins: &'a Binaries,
    pub(super) link: &'a EmulatedLink,
    pub(super) site: &'a Site,
    pub(super) peers: &'a PeerServers,
    /// `ip netns exec <B>`: where every client runs.
    pub(super) client: Launcher,
}

impl Bench<'_> {
    fn cap(&self) -> Duration {
        Duration::from_secs(self.args.seconds_cap)
    }

    /// One run of `key` into an empty directory; the output is checked unless the run was capped.
    pub(super) fn run(&self, key: &str, run: usize) -> Result<Outcome> {
        let site = self.site;
        let dest = site.dest(&format!("{key}-{run}"))?;
        let log = site.scratch.path().join(format!("{key}-{run}.log"));
        let server_cpu =
            |key: &str| if key == "ferry" { site.node.cpu() } else { self.peers.server_cpu(key) };
        let (client0, server0) = (servers::children_cpu(), server_cpu(key));
        let (stats0, rcvbuf0) = (self.link.stats(), both_sides_rcvbuf_errors(self.link));
        let ended = match key {
            "ferry" => {
                let node = site.node.node_arg();
                let mut command = ferry_command(self.bins, &self.client, "pull", &site.consumer, &node);
                command.args([DATASET, "--version", "1", "--json", "--to"]).arg(&dest);
                command.args(&self.args.ferry_pull_arg);
                let so_far = || {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_json_number(&text, "verified_bytes").unwrap_or_else(|| bytes_under(&dest))
                };
                run_capped(&mut command, &log, self.cap(), &so_far)?
            }
            "curl" => {
                let mut command = self.peers.curl(&self.client, &site.names, &dest)?;
                run_capped(&mut command, &log, self.cap(), &|| bytes_under(&dest))?
            }
            "rsync" => {
                let mut command = self.peers.rsync(&self.client, &site.peer_root, &dest)?;
                run_capped(&mut command, &log, self.cap(), &|| bytes_under(&dest))?
            }
            _ => bail!("unknown contender {key}"),
        };
        let link = self.link.stats().since(&stats0);
        let udp_rcvbuf_errors = both_sides_rcvbuf_errors(self.link).saturating_sub(rcvbuf0);
        let client_cpu = servers::children_cpu() - client0;
        let server_cpu = server_cpu(key) - server0;
        let remarks = if key == "ferry" {
            pull_remarks(&std::fs::read_to_string(&log).unwrap_or_default())
        } else {
            vec![]
        };
        let bytes = match ended.capped {
            Some(bytes) => bytes,
            None => {
                let out = if key == "ferry" { dest.join(DATASET).join("v1") } else { dest.clone() };
                site.check(&out, key)?;
                site.version.bytes
            }
        };
        std::fs::remove_dir_all(&dest)?;
        Ok(Outcome {
            seconds: ended.seconds,
            bytes,
            capped: ended.capped.is_some(),
            client_cpu,
            server_cpu,
            link,
            udp_rcvbuf_errors,
            remarks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_progress_line() {
        let text = "{\"event\":\"started\",\"total_bytes\":100}\n\
                    {\"event\":\"progress\",\"verified_bytes\":10,\"fetched_bytes\":12}\n\
                    {\"event\":\"progress\",\"verified_bytes\": 42,\"fetched_bytes\":50}\n";
        assert_eq!(last_json_number(text, "verified_bytes"), Some(42));
        assert_eq!(last_json_number(text, "total_bytes"), Some(100));
        assert_eq!(last_json_number(text, "rows"), None);
    }

    #[test]
    fn finds_pull_remarks_and_strips_colours() {
        let text =
            "{\"event\":\"retry\",\"attempt\":1,\"reason\":\"timed out\"}\n{\"event\":\"verifying\"}\n";
        assert_eq!(pull_remarks(text), ["retry: timed out"]);
        assert_eq!(pull_remarks("{\"event\":\"verifying\"}\n\u{1b}[33mWARN\u{1b}[0m slow\n"), ["WARN slow"]);
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }
}
