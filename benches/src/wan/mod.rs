//! Scenario `wan`: the `transfer` scenario's whole-version pull, over an emulated WAN link
//! ([`crate::netem`]) instead of loopback, against the same peer tools on the same link.
//!
//! Setup, per link profile (not measured): a link between namespaces A (10.201.0.1) and B
//! (10.201.0.2) with the profile's rate, delay and random loss in both directions; it is the only
//! path between them. An export of `--size-mib` rows of 1 MiB random payload (default 1024 on
//! wan30, 64 on wan80, where a lossy TCP peer may crawl) is published as ONE version (split
//! into `--files` Parquet files) on a ministry `ferryd` in namespace A, listening on 10.201.0.1;
//! its stored files are what nginx (HTTPS) and sshd, also in A, serve. Every client runs in
//! namespace B, so every byte of every contender crosses the link A→B. Each run then measures,
//! interleaved (ferry, curl, rsync, ferry, …), into empty directories:
//! - ferry: `ferry pull --json` (its defaults: 8 streams, BLAKE3 per chunk) from the `ferryd` in A;
//! - curl `--http1.1` from nginx over HTTPS (TLS 1.3), one curl for all files;
//! - rsync over ssh (`aes128-gcm@openssh.com`, no compression), new files.
//!
//! Every output is checked (size and BLAKE3 of every file). MB/s is 10^6 bytes per second of wall
//! time (connection setup and the client's final commit included); link_fraction is that goodput
//! in bit/s over the profile's rate (which counts IP bytes, so ~0.96 is the ceiling for 1500-byte
//! packets). A run that outlives `--seconds-cap` is stopped; its rate is the bytes it had received
//! by then (ferry: verified bytes of its last progress line; peers: the sizes of the files in its
//! directory) over the cap, and it is named in the notes as capped. The link's counters are
//! recorded per run: random losses, bottleneck queue drops, packets the sender offered per packet
//! delivered (what losses and drops cost it), IP bytes delivered per payload byte (headers and
//! duplicate deliveries; a lost packet's retransmission replaces it, so it does not count twice).
//!
//! TCP in the namespaces (what this host gives; printed in the notes as read in A and B): the
//! default congestion control is the host's, bbr here (a new namespace inherits it; cubic cannot
//! be made the namespaces' default because the host's `tcp_allowed_congestion_control` is
//! `reno bbr`), so curl and rsync run with bbr. The namespaces copy the host's `tcp_wmem` max of
//! 4 MiB, which caps one TCP connection at ~750 Mbit/s at 30 ms; the scenario raises the
//! `tcp_rmem`/`tcp_wmem` max in both namespaces to (at least) 16 MiB, as a tuned WAN host has, and
//! sets `tcp_no_metrics_save` so that every connection starts afresh rather than from the
//! congestion state a previous run left behind. It tries to raise `net.core.rmem_max`/`wmem_max`
//! (the ceiling of UDP socket buffers, i.e. QUIC's) to 16 MiB too; where the kernel keeps them
//! read-only inside a namespace (6.18 does: they are per namespace, copied from the host), they
//! stay at the host's values, and the notes say so. ferry runs with its defaults (no
//! benchmark-only switches): its congestion control is whatever its transport config chooses
//! (named in the notes). `--ferry-pull-arg` adds arguments to `ferry pull` for diagnosis only;
//! the notes then say that the figures are not ferry's defaults.
//!
//! Layout: this module runs the profiles and writes the notes; [`tuning`] sets and reads the
//! namespaces' TCP/UDP settings, [`site`] is side A (the node, its files, the peers' servers),
//! [`runs`] one run of one contender, [`summary`] what a run records and the summary line.
//!
//! Neighbours: [`crate::netem`] (the link), [`crate::fleet`] (`ferryd` and `ferry` processes),
//! [`crate::servers`] (nginx and sshd, placed in namespace A), [`crate::transfer`] (the export and
//! the publish), [`crate::report`] (the table).

mod runs;
mod site;
mod summary;
mod tuning;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Args;

use crate::fleet::{Binaries, Launcher, ScratchArgs};
use crate::netem::{self, EmulatedLink, LinkProfile, Side};
use crate::report::{self, Report, Unit, nproc, progress, show};
use runs::Bench;
use site::Site;
use summary::{record, summary_line};
use tuning::{Tuning, ferry_congestion_control, tune};

/// Options of `ferry-bench wan`.
#[derive(Debug, Clone, Args)]
pub struct WanArgs {
    /// Link profiles, run in this order: wan30 (1 Gbit/s, 30 ms RTT, 0.5 % loss), wan80
    /// (100 Mbit/s, 80 ms RTT, 2 % loss).
    #[arg(long, value_delimiter = ',', default_value = "wan30,wan80")]
    pub profiles: Vec<String>,
    /// Size of the dataset version in MiB (1 MiB per row), for every profile [default: 1024 on
    /// wan30, 64 on wan80].
    #[arg(long)]
    pub size_mib: Option<usize>,
    /// Files the version is split into (the node's `rows-per-file`).
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Runs of every contender per profile (interleaved: ferry, curl, rsync, ferry, …).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Longest a run may take, in seconds; a run still going then is stopped and recorded at the
    /// bytes it had received (marked as capped).
    #[arg(long, default_value_t = 120)]
    pub seconds_cap: u64,
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Run only these peers (comma-separated: curl, rsync; `none` for ferry alone).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Keep the scratch directories (ferryd.log, the pullers' and peers' logs) and print them.
    #[arg(long)]
    pub keep: bool,
    /// Extra arguments for every `ferry pull` (e.g. `--ferry-pull-arg=--streams=16`), to diagnose
    /// what limits it; the scenario's figures are for ferry's defaults, and the notes say when
    /// this was used.
    #[arg(long, allow_hyphen_values = true)]
    pub ferry_pull_arg: Vec<String>,
}

/// Pause between runs, so that the previous contender's last packets (and its connection's
/// close) have left the link.
const SETTLE: Duration = Duration::from_secs(1);

/// The contenders, in run order: key, what it is.
const CONTENDERS: [(&str, &str); 3] = [
    ("ferry", "ferry pull from ferryd (QUIC + mTLS, BLAKE3)"),
    ("curl", "curl --http1.1 from nginx (HTTPS, TLS 1.3)"),
    ("rsync", "rsync -r -e ssh (aes128-gcm), new files"),
];

/// The peers (the contenders other than ferry).
const PEERS: [&str; 2] = ["curl", "rsync"];

/// Default size of the version on `profile`: small enough that a lossy TCP peer finishes.
fn default_size_mib(profile: &LinkProfile) -> usize {
    if profile.rate_bps >= 500_000_000 { 1024 } else { 64 }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// What went wrong or was notable in one profile, for the notes and the exit status.
#[derive(Default)]
struct Trouble {
    /// Runs that failed (no sample recorded).
    failed: Vec<String>,
    /// Runs stopped by the cap.
    capped: Vec<String>,
}

/// What the runs on one profile showed besides their metrics, for the notes.
#[derive(Default)]
struct Observed {
    /// Per contender: the relay threads' CPU in each run, % of one core.
    relay_pct: BTreeMap<&'static str, Vec<f64>>,
    /// Per contender: packets the TUN devices dropped, all runs.
    tun_drops: BTreeMap<&'static str, u64>,
    /// ferry's retry events and non-JSON lines, `run N: …`.
    remarks: Vec<String>,
}

/// Runs every profile's contenders and records them.
fn run_profile(
    args: &WanArgs,
    bins: &Binaries,
    profile: &LinkProfile,
    report: &mut Report,
    trouble: &mut Trouble,
) -> Result<()> {
    let p = &profile.name;
    let size_mib = args.size_mib.unwrap_or_else(|| default_size_mib(profile));
    ensure!(size_mib >= args.files, "--size-mib ({size_mib}) must be at least --files ({})", args.files);
    progress(&format!("{p}: starting the link ({profile})"));
    let link = EmulatedLink::start(profile)?;
    let tuning = tune(&link)?;
    let load_before = loadavg();
    let site = Site::prepare(args, bins, &link, size_mib)?;
    let peers = site.start_peers(&link, &PEERS, args.peers.as_deref(), report);
    let client = Launcher::in_netns(link.namespace(Side::B));
    let bench = Bench { args, bins, link: &link, site: &site, peers: &peers, client };
    let observed = run_contenders(&bench, profile, report, trouble);
    let ferry = report.median_of(&format!("{p}_ferry_mb_s"));
    for peer in ["rsync", "curl"] {
        let ratio = ferry / report.median_of(&format!("{p}_{peer}_mb_s"));
        if ratio.is_finite() {
            let what = format!("{p}: median ferry MB/s ÷ median {peer} MB/s");
            report.record(&format!("{p}_vs_{peer}"), Unit::Ratio, &what, ratio);
        }
    }
    note_profile(report, profile, &site, &tuning, &observed, &load_before);
    drop(bench);
    drop(peers);
    if args.keep {
        let node = site.node.dir.clone();
        drop(site.node);
        let kept = site.scratch.keep();
        report.note(format!("{p}: kept {} (ferryd.log in {})", kept.display(), node.display()));
    } else {
        drop(site);
    }
    drop(link);
    Ok(())
}

/// Every run of every contender on the bench's profile, interleaved; records each outcome and
/// notes in `trouble` the runs that failed or were capped.
fn run_contenders(
    bench: &Bench<'_>,
    profile: &LinkProfile,
    report: &mut Report,
    trouble: &mut Trouble,
) -> Observed {
    let (p, args) = (&profile.name, bench.args);
    let contenders: Vec<&'static str> =
        std::iter::once("ferry").chain(bench.peers.enabled.iter().copied()).collect();
    let mut observed = Observed::default();
    for run in 1..=args.runs {
        for &key in &contenders {
            progress(&format!("{p}: run {run}/{}: {key}", args.runs));
            std::thread::sleep(SETTLE);
            let outcome = match bench.run(key, run) {
                Ok(outcome) => outcome,
                Err(err) => {
                    let message = format!("{p} run {run} {key}: FAILED: {err:#}");
                    progress(&message);
                    trouble.failed.push(message);
                    continue;
                }
            };
            let mb_s = outcome.bytes as f64 / 1e6 / outcome.seconds.max(1e-9);
            let link = &outcome.link;
            progress(&format!(
                "{p}: run {run}: {key}: {:.2} s, {mb_s:.1} MB/s{}; link: lost {}+{}, queue drops {}+{}",
                outcome.seconds,
                if outcome.capped { " (CAPPED)" } else { "" },
                link.a_to_b.lost,
                link.b_to_a.lost,
                link.a_to_b.queue_dropped,
                link.b_to_a.queue_dropped,
            ));
            if outcome.capped {
                trouble.capped.push(format!(
                    "{p} run {run} {key}: capped at {} s with {} of {} bytes received ({mb_s:.2} MB/s)",
                    args.seconds_cap, outcome.bytes, bench.site.version.bytes
                ));
            }
            let relay = link.relay_cpu().as_secs_f64() / outcome.seconds.max(1e-9) * 100.0;
            observed.relay_pct.entry(key).or_default().push(relay);
            *observed.tun_drops.entry(key).or_default() +=
                link.a_to_b.kernel_dropped + link.b_to_a.kernel_dropped;
            observed.remarks.extend(outcome.remarks.iter().map(|r| format!("run {run}: {r}")));
            record(report, profile, key, &outcome);
        }
    }
    observed
}

/// The profile's notes: the link and the version, TCP settings in effect, what the relay threads
/// cost, ferry's remarks and what ferryd logged during the runs.
fn note_profile(
    report: &mut Report,
    profile: &LinkProfile,
    site: &Site,
    tuning: &Tuning,
    observed: &Observed,
    load_before: &str,
) {
    let p = &profile.name;
    report.note(format!(
        "{p}: link {profile}; {} files, {} bytes ({} rows of 1 MiB random payload)",
        site.names.len(),
        site.version.bytes,
        site.size_mib
    ));
    report.note(format!(
        "{p}: TCP congestion control in effect (net.ipv4.tcp_congestion_control): A (nginx/sshd, sending) {}, \
         B (curl/rsync, receiving) {}: this host's default, inherited by the namespaces (cubic cannot be the \
         namespaces' default: the host's tcp_allowed_congestion_control is \"reno bbr\"); ferry's QUIC: {}",
        tuning.cc_a,
        tuning.cc_b,
        ferry_congestion_control()
    ));
    report.note(format!("{p}: {}", tuning.memory));
    let relay: Vec<String> = observed
        .relay_pct
        .iter()
        .map(|(key, pcts)| format!("{key} {:.0}%", report::median(pcts).unwrap_or(f64::NAN)))
        .collect();
    let dropped: Vec<String> =
        observed.tun_drops.iter().filter(|(_, n)| **n > 0).map(|(key, n)| format!("{key} {n}")).collect();
    report.note(format!(
        "{p}: the link emulator's relay threads (in this process, competing for the {} cores) used, median per \
         run, % of one core: {}; packets the TUN devices dropped because the relay did not read them in time \
         (CPU starvation, not part of the profile), all runs: {}; load average before {load_before}, after {}",
        nproc(),
        relay.join(", "),
        if dropped.is_empty() { "none".to_owned() } else { dropped.join(", ") },
        loadavg()
    ));
    let remarks = &observed.remarks;
    if !remarks.is_empty() {
        let what = first_lines(remarks, 5);
        report.note(format!(
            "{p}: ferry pull printed {} retry events or non-JSON lines: {what}",
            remarks.len()
        ));
    }
    let node_log: Vec<String> =
        site.node_log().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if node_log.is_empty() {
        report.note(format!("{p}: ferryd.log got no lines during the runs (it logs at FERRY_LOG=warn)"));
    } else {
        report.note(format!(
            "{p}: ferryd.log (FERRY_LOG=warn) got {} lines during the runs: {}",
            node_log.len(),
            first_lines(&node_log, 5)
        ));
    }
}

/// Up to `max` of `lines`, distinct, shortened, joined by ` | `.
fn first_lines(lines: &[String], max: usize) -> String {
    let mut seen: Vec<String> = Vec::new();
    for line in lines {
        let short: String = line.chars().take(240).collect();
        if !seen.contains(&short) {
            seen.push(short);
        }
    }
    let more = if seen.len() > max { format!(" | … ({} distinct)", seen.len()) } else { String::new() };
    seen.truncate(max);
    format!("{}{more}", seen.join(" | "))
}

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &WanArgs) -> Result<()> {
    ensure!(args.runs >= 1 && args.files >= 1, "--runs and --files must be at least 1");
    ensure!(args.seconds_cap >= 1, "--seconds-cap must be at least 1");
    let profiles: Vec<LinkProfile> =
        args.profiles.iter().map(|p| LinkProfile::named(p)).collect::<Result<_>>()?;
    ensure!(!profiles.is_empty(), "--profiles names no profile");
    if let Some(peers) = &args.peers {
        for peer in peers {
            ensure!(
                matches!(peer.as_str(), "curl" | "rsync" | "none"),
                "unknown peer {peer:?} (known: curl, rsync, none)"
            );
        }
    }
    // Before any other thread exists: Ctrl-C then deletes the namespaces.
    netem::cleanup_on_signals()?;
    let bins = Binaries::build()?;
    let load = loadavg();
    let mut report = Report::default();
    let mut trouble = Trouble::default();
    for profile in &profiles {
        run_profile(args, &bins, profile, &mut report, &mut trouble)?;
    }
    report.note(
        "every output checked (size and BLAKE3 of every file; not for capped runs); MB/s = 10^6 bytes per wall \
         second, connection setup and the client's commit included; link_fraction = goodput in bit/s ÷ the \
         profile's rate (IP bytes, so ~0.96 is the ceiling)",
    );
    report.note(
        "servers (ferryd, nginx, sshd) in namespace A, clients (ferry pull, curl, rsync) in B; CPU from /proc: \
         client = the client process and its children, server = ferryd / nginx / sshd with its sessions",
    );
    {
        let p = "wan30";
        let fraction = report.median_of(&format!("{p}_ferry_link_fraction"));
        let vs_rsync =
            report.median_of(&format!("{p}_ferry_mb_s")) / report.median_of(&format!("{p}_rsync_mb_s"));
        if fraction.is_finite() || vs_rsync.is_finite() {
            let met = |ok: bool| if ok { "met" } else { "NOT met" };
            report.note(format!(
                "target (issue; printed, not asserted): at {p} ferry's goodput ≥ 70% of the link rate: {} ({}); \
                 ≥ 3× rsync over ssh: {}× ({})",
                show(fraction, 3),
                met(fraction >= 0.7),
                show(vs_rsync, 2),
                met(vs_rsync >= 3.0)
            ));
        }
    }
    if !args.ferry_pull_arg.is_empty() {
        report.note(format!(
            "NOT ferry's defaults: every `ferry pull` ran with the extra arguments {:?} (--ferry-pull-arg)",
            args.ferry_pull_arg
        ));
    }
    for line in trouble.capped.iter().chain(&trouble.failed) {
        report.note(line.clone());
    }
    let sizes: Vec<String> = profiles
        .iter()
        .map(|p| format!("{}:{}", p.name, args.size_mib.unwrap_or_else(|| default_size_mib(p))))
        .collect();
    println!(
        "ferry-bench wan: profiles={} size_mib={} files={} runs={} seconds_cap={} seed={} nproc={} load_before={}",
        args.profiles.join(","),
        sizes.join(","),
        args.files,
        args.runs,
        args.seconds_cap,
        args.scratch.seed,
        nproc(),
        load.replace(' ', "/")
    );
    print!("{}", report.table());
    println!("{}", summary_line(&report, trouble.capped.len()));
    ensure!(
        trouble.failed.is_empty(),
        "{} run(s) failed: {}",
        trouble.failed.len(),
        trouble.failed.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_follow_the_rate() {
        assert_eq!(default_size_mib(&LinkProfile::wan30()), 1024);
        assert_eq!(default_size_mib(&LinkProfile::wan80()), 64);
    }
}
