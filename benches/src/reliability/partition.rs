//! Sweep `partition`: the link between the serving ministry (A) and a `ferry pull` (B) is cut
//! mid-pull and healed, on each link profile (`clean`: no impairment; `wan30`, `wan80`: the WAN
//! loss profiles of [`crate::netem::LinkProfile`]).
//!
//! A cut sets B's TUN device down (`ip -n <B> link set fbt0 down`): what A sends is dropped by
//! the link, what B sends fails at once. Each run cuts twice, at seeded points of the pull: a
//! short cut (2–10 s, seeded), under QUIC's 30 s idle timeout, which the connection outlives,
//! and a long one (31–45 s, seeded; 31–35 s with `--quick`), after which the puller must
//! reconnect. A pull that gives up is run again and resumes from its journal
//! (`pull_invocations`). The pull must complete with every file equal to the source.
//!
//! Neighbours: [`super::site`] sets up the link and the serving node.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::site::{RetriedPull, Site};
use super::{ReliabilityArgs, RunOutcome, Summary, Sweep, check_both, fault_points, seeded_ms};
use crate::fleet::{Binaries, fresh_dir};
use crate::netem::{LinkProfile, Side, TUN_NAME};
use crate::report::progress;
use crate::transfer::DATASET;

/// `partition`: one summary over every profile's runs.
pub(super) fn run(args: &ReliabilityArgs, bins: &Binaries) -> Result<Summary> {
    let mut summary = Summary::new("partition");
    let mut run = 0;
    for name in args.profiles() {
        let profile = match name.as_str() {
            "clean" => LinkProfile::clean("clean", 0, Duration::ZERO),
            other => LinkProfile::named(other)?,
        };
        let site = match Site::start(args, bins, &profile, args.size_mib(Sweep::Partition)) {
            Ok(site) => site,
            Err(e) => {
                run += 1;
                summary.record(run, Err(e));
                continue;
            }
        };
        for _ in 0..args.runs {
            run += 1;
            let mut outcome = partition_run(args, bins, &site, run);
            if let Ok(outcome) = &mut outcome {
                outcome.figure("profile", &profile.name);
            }
            summary.record(run, outcome);
        }
    }
    Ok(summary)
}

/// Sets B's end of the link down (`up = false`) or up again.
fn set_link(site: &Site, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    let status = Command::new("ip")
        .args(["-n", site.link.namespace(Side::B), "link", "set", TUN_NAME, state])
        .stdin(Stdio::null())
        .status()?;
    ensure!(status.success(), "ip link set {TUN_NAME} {state}: {status}");
    Ok(())
}

fn partition_run(args: &ReliabilityArgs, bins: &Binaries, site: &Site, run: usize) -> Result<RunOutcome> {
    let points = fault_points(args.scratch.seed, 2000 + run as u64, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(args.scratch.seed ^ (2000 + run as u64) << 32);
    let long_max = if args.quick { 35_000 } else { 45_000 };
    let mut cuts = [seeded_ms(&mut rng, 2_000, 10_000), seeded_ms(&mut rng, 31_000, long_max)];
    // Which of the two points gets the long cut is seeded too.
    if seeded_ms(&mut rng, 0, 2).as_millis() == 1 {
        cuts.reverse();
    }
    let dest = fresh_dir(site.scratch.path(), &format!("pull-{run}"))?;
    let logs = site.scratch.path().join(format!("pull-{run}"));
    let total = site.total();
    let started = Instant::now();
    let mut outcome = RunOutcome::default();
    let mut pull = RetriedPull::start(site, bins, &dest, &logs, None)?;
    let mut done = 0;
    let finished = loop {
        if pull.poll(site, bins)? == Some(true) {
            break true;
        }
        if pull.invocations > 6 {
            outcome.fail(format!("the pull was run {} times without finishing", pull.invocations));
            break false;
        }
        let verified = pull.log.verified;
        if points.get(done).is_some_and(|p| verified as f64 >= p * total as f64) {
            let cut = cuts[done];
            progress(&format!(
                "partition run {run} ({}): link down for {:.1} s at {verified} of {total} bytes",
                site.link.profile().name,
                cut.as_secs_f64()
            ));
            set_link(site, false)?;
            std::thread::sleep(cut);
            set_link(site, true)?;
            done += 1;
        }
        if started.elapsed() > args.timeout() {
            pull.stop();
            outcome.fail(format!("the pull did not finish within {:?}", args.timeout()));
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cut_list: Vec<String> = cuts.iter().take(done).map(|c| format!("{:.1}s", c.as_secs_f64())).collect();
    outcome.figure("cuts", cut_list.join(","));
    outcome.figure("pull_invocations", pull.invocations);
    outcome.figure("seconds", format!("{:.1}", started.elapsed().as_secs_f64()));
    if finished {
        check_both(&mut outcome, &dest.join(DATASET).join("v1"), &site.source_dir(), &site.manifest);
    }
    std::fs::remove_dir_all(&dest)?;
    Ok(outcome)
}
