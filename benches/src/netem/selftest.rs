//! The hidden `ferry-bench netem-selftest` subcommand: starts a link and checks it end to end
//! (RTT, TCP goodput, UDP loss), printing the link's counters and the relay threads' CPU use.
//!
//! Neighbours: [`super::probes`] generates the traffic; [`super::EmulatedLink`] is what is
//! checked.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Args;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;

use super::probes::{measure_rtt, tcp_bulk, udp_blast};
use super::{EmulatedLink, LinkProfile, LinkStats, MTU, Side, TUN_NAME, cleanup_on_signals, ms};

/// Options of the hidden `ferry-bench netem-selftest`.
#[derive(Debug, Clone, Args)]
pub struct SelftestArgs {
    /// Link profile to start from: wan30 (1 Gbit/s, 30 ms, 0.5 % loss) or wan80 (100 Mbit/s,
    /// 80 ms, 2 % loss); the options below override its fields.
    #[arg(long, default_value = "wan80")]
    pub profile: String,
    /// Bottleneck rate in Mbit/s (0: unlimited).
    #[arg(long)]
    pub rate_mbit: Option<f64>,
    /// Round-trip time in ms.
    #[arg(long)]
    pub rtt_ms: Option<f64>,
    /// Jitter per direction in ms (uniform ±).
    #[arg(long)]
    pub jitter_ms: Option<f64>,
    /// Random loss per direction, as a fraction (0.005 is 0.5 %).
    #[arg(long)]
    pub loss: Option<f64>,
    /// Share of packets held back by the reorder gap (a fraction).
    #[arg(long)]
    pub reorder: Option<f64>,
    /// Bottleneck queue in KiB (default: one BDP, at least 150 KB).
    #[arg(long)]
    pub queue_kib: Option<usize>,
    /// Seed of the link's random streams.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds of the TCP bulk transfer A→B.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Raise the most TCP may buffer per socket (`tcp_rmem`/`tcp_wmem` max, in both namespaces)
    /// to this many MiB; the usual default `tcp_wmem` max of 4 MiB caps one connection's window
    /// at about 3 MB, ~750 Mbit/s at 30 ms.
    #[arg(long)]
    pub tcp_mem_mib: Option<u64>,
    /// TCP congestion control of the test's sender socket (e.g. cubic, bbr); default: the
    /// namespace's, which is the host's.
    #[arg(long)]
    pub tcp_cc: Option<String>,
    /// Rate of the UDP blast A→B in Mbit/s (default: half the link rate, at most 400).
    #[arg(long)]
    pub udp_mbit: Option<f64>,
    /// Seconds of the UDP blast.
    #[arg(long, default_value_t = 2.0)]
    pub udp_seconds: f64,
}

impl SelftestArgs {
    fn link_profile(&self) -> Result<LinkProfile> {
        let mut profile = LinkProfile::named(&self.profile)?;
        let millis = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let custom = self.rate_mbit.is_some()
            || self.rtt_ms.is_some()
            || self.jitter_ms.is_some()
            || self.loss.is_some()
            || self.reorder.is_some()
            || self.queue_kib.is_some();
        if let Some(mbit) = self.rate_mbit {
            profile.rate_bps = (mbit.max(0.0) * 1e6) as u64;
        }
        profile.rtt = self.rtt_ms.map_or(profile.rtt, millis);
        profile.jitter = self.jitter_ms.map_or(profile.jitter, millis);
        profile.loss = self.loss.unwrap_or(profile.loss);
        profile.reorder = self.reorder.unwrap_or(profile.reorder);
        profile.queue_bytes = self.queue_kib.map_or(profile.queue_bytes, |kib| Some(kib * 1024));
        profile.seed = self.seed.unwrap_or(profile.seed);
        if custom {
            profile.name.push_str("-custom");
        }
        Ok(profile)
    }
}

/// `ferry-bench netem-selftest`: starts a link and checks its RTT, TCP goodput and UDP loss;
/// prints the link's counters, the relay's CPU use and a `key=value` line. Fails if a check
/// fails.
pub fn selftest(args: &SelftestArgs) -> Result<()> {
    cleanup_on_signals()?;
    let profile = args.link_profile()?;
    println!("netem self-test: {profile}");
    let link = EmulatedLink::start(&profile)?;
    println!(
        "link up: {} {} <-> {} {} ({TUN_NAME}, MTU {MTU})",
        link.namespace(Side::A),
        link.addr(Side::A),
        link.namespace(Side::B),
        link.addr(Side::B)
    );
    let mut failures = Vec::new();
    tcp_settings(&link, args.tcp_mem_mib)?;
    let rtt = check_rtt(&link, &mut failures)?;
    let tcp = check_tcp(&link, args, &mut failures)?;
    let udp_loss = check_udp(&link, args, &mut failures)?;

    let total = link.stats();
    println!("link stats:\n{total}");
    let names = [link.namespace(Side::A).to_string(), link.namespace(Side::B).to_string()];
    drop(link);
    let left: Vec<&String> =
        names.iter().filter(|name| Path::new("/run/netns").join(name).exists()).collect();
    let threads = std::fs::read_dir("/proc/self/task").map(|dir| dir.count()).unwrap_or(0);
    println!("after drop: namespaces left {left:?}, threads in process {threads} (main + signal thread)");
    if !left.is_empty() {
        failures.push("cleanup");
    }
    println!(
        "netem profile={} rtt_ms={:.2} tcp_mbit_s={:.1} tcp_link_fraction={:.3} \
         tcp_steady_fraction={:.3} tcp_cc={} \
         udp_loss={udp_loss:.4} relay_cpu_pct_tcp={:.0} checks={}",
        profile.name,
        rtt,
        tcp.mbit,
        tcp.fraction,
        tcp.steady_fraction,
        tcp.congestion_control,
        tcp.relay_cpu_pct,
        if failures.is_empty() { "ok".to_string() } else { failures.join(",") }
    );
    ensure!(failures.is_empty(), "netem self-test failed: {}", failures.join(", "));
    Ok(())
}

/// Raises the TCP buffer limits in both namespaces to `mem_mib` (if given), checks that the
/// namespace reads the same through `ip netns exec` as in-process, and prints the TCP settings.
fn tcp_settings(link: &EmulatedLink, mem_mib: Option<u64>) -> Result<()> {
    if let Some(mib) = mem_mib {
        let max = (mib << 20).to_string();
        for side in [Side::A, Side::B] {
            link.set_sysctl(side, "net.ipv4.tcp_rmem", &format!("4096 131072 {max}"))?;
            link.set_sysctl(side, "net.ipv4.tcp_wmem", &format!("4096 16384 {max}"))?;
        }
    }
    let default_cc = link.sysctl(Side::A, "net.ipv4.tcp_congestion_control")?;
    // Read back through `ip netns exec` too, to check both ways into the namespace agree.
    let outside = link.command(Side::B, "cat").arg("/proc/sys/net/ipv4/tcp_rmem").output()?;
    let outside = String::from_utf8_lossy(&outside.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    let (rmem, wmem) =
        (link.sysctl(Side::B, "net.ipv4.tcp_rmem")?, link.sysctl(Side::A, "net.ipv4.tcp_wmem")?);
    ensure!(outside == rmem, "tcp_rmem is {rmem:?} in-process but {outside:?} through `ip netns exec`");
    println!(
        "tcp: namespace default congestion control {default_cc}, receiver (B) tcp_rmem {rmem}, \
         sender (A) tcp_wmem {wmem}"
    );
    Ok(())
}

/// RTT, B → A, against the profile's; returns the mean RTT in ms.
fn check_rtt(link: &EmulatedLink, failures: &mut Vec<&str>) -> Result<f64> {
    let profile = link.profile();
    let rtt = measure_rtt(link)?;
    let expected = ms(profile.rtt);
    let tolerance = 0.2 * expected + 2.0 * ms(profile.jitter);
    let rtt_ok = rtt.received > 0 && (rtt.avg_ms - expected).abs() <= tolerance;
    println!(
        "rtt ({}): {}/{} replies, min/avg/max {:.2}/{:.2}/{:.2} ms; \
         expected {expected:.1} ± {tolerance:.1} ms: {}",
        rtt.method,
        rtt.received,
        rtt.sent,
        rtt.min_ms,
        rtt.avg_ms,
        rtt.max_ms,
        verdict(rtt_ok)
    );
    if !rtt_ok {
        failures.push("rtt");
    }
    Ok(rtt.avg_ms)
}

/// What the TCP bulk transfer reached.
struct TcpCheck {
    /// Goodput over the whole transfer, Mbit/s, and as a fraction of the link's rate.
    mbit: f64,
    fraction: f64,
    /// Goodput in the second half of the transfer, as a fraction of the link's rate.
    steady_fraction: f64,
    /// The sender's congestion control.
    congestion_control: String,
    /// CPU of both relay threads during the transfer, % of one core.
    relay_cpu_pct: f64,
}

/// TCP bulk A → B; without loss or reordering it must reach 85 % of the link's rate.
fn check_tcp(link: &EmulatedLink, args: &SelftestArgs, failures: &mut Vec<&str>) -> Result<TcpCheck> {
    let profile = link.profile();
    let duration = Duration::from_secs(args.seconds);
    let (tcp, phase) = measured(link, || tcp_bulk(link, duration, args.tcp_cc.as_deref()))?;
    let cc = &tcp.congestion_control;
    let tcp_mbit = tcp.bytes as f64 * 8.0 / tcp.elapsed.as_secs_f64() / 1e6;
    let fraction = if profile.rate_bps > 0 { tcp_mbit * 1e6 / profile.rate_bps as f64 } else { f64::NAN };
    let per_second: Vec<String> =
        tcp.per_second.iter().map(|b| format!("{:.0}", *b as f64 * 8.0 / 1e6)).collect();
    // The second half of the whole seconds (past slow start and its recovery), without the last,
    // partial one.
    let steady_mbit = match tcp.per_second.len() {
        n if n >= 3 => {
            let whole = &tcp.per_second[((n - 1) / 2).max(1)..n - 1];
            whole.iter().sum::<u64>() as f64 * 8.0 / whole.len() as f64 / 1e6
        }
        _ => tcp_mbit,
    };
    let steady_fraction =
        if profile.rate_bps > 0 { steady_mbit * 1e6 / profile.rate_bps as f64 } else { f64::NAN };
    println!(
        "tcp A→B ({cc}): {:.1} MB in {:.2} s = {tcp_mbit:.1} Mbit/s = {:.1}% of the link; second half \
         {steady_mbit:.1} Mbit/s = {:.1}%; per second (Mbit/s): {}",
        tcp.bytes as f64 / 1e6,
        tcp.elapsed.as_secs_f64(),
        fraction * 100.0,
        steady_fraction * 100.0,
        per_second.join(" ")
    );
    println!("  link during tcp: {}", phase.link.a_to_b);
    println!("  acks during tcp: {}", phase.link.b_to_a);
    phase.print_cpu("tcp");
    if profile.loss == 0.0 && profile.reorder == 0.0 && profile.rate_bps > 0 {
        let ok = steady_fraction >= 0.85;
        println!("  tcp without loss should reach 85% of the link in the second half: {}", verdict(ok));
        if !ok {
            failures.push("tcp");
        }
    }
    Ok(TcpCheck {
        mbit: tcp_mbit,
        fraction,
        steady_fraction,
        relay_cpu_pct: phase.link.relay_cpu().as_secs_f64() / phase.wall.as_secs_f64() * 100.0,
        congestion_control: tcp.congestion_control,
    })
}

/// A UDP blast A → B, whose loss must match the profile's; returns the loss measured.
fn check_udp(link: &EmulatedLink, args: &SelftestArgs, failures: &mut Vec<&str>) -> Result<f64> {
    let profile = link.profile();
    let default_udp = if profile.rate_bps == 0 { 400.0 } else { (profile.rate_bps as f64 / 2e6).min(400.0) };
    let udp_mbit = args.udp_mbit.unwrap_or(default_udp);
    let duration = Duration::from_secs_f64(args.udp_seconds);
    let (udp, phase) = measured(link, || udp_blast(link, udp_mbit, duration))?;
    let udp_loss = 1.0 - udp.received as f64 / udp.sent.max(1) as f64;
    let sigma = (profile.loss * (1.0 - profile.loss) / udp.sent.max(1) as f64).sqrt();
    let udp_ok = udp.sent > 0 && (udp_loss - profile.loss).abs() <= 4.0 * sigma + 0.002;
    println!(
        "udp A→B at {udp_mbit:.0} Mbit/s: sent {} ({} send errors), received {}, loss {:.4} \
         (expected {:.4} ± {:.4}): {}",
        udp.sent,
        udp.send_errors,
        udp.received,
        udp_loss,
        profile.loss,
        4.0 * sigma + 0.002,
        verdict(udp_ok)
    );
    println!("  link during udp: {}", phase.link.a_to_b);
    phase.print_cpu("udp");
    if !udp_ok {
        failures.push("udp");
    }
    Ok(udp_loss)
}

/// What one phase of the self-test cost: the link's counters during it, the CPU time of the
/// whole process, the wall time.
struct Phase {
    link: LinkStats,
    cpu: Duration,
    wall: Duration,
}

impl Phase {
    /// Prints the CPU use of the relay threads and of the whole process, % of one core.
    fn print_cpu(&self, phase: &str) {
        let pct = |cpu: Duration| cpu.as_secs_f64() / self.wall.as_secs_f64() * 100.0;
        let stats = &self.link;
        println!(
            "  cpu during {phase} ({:.1} s, % of one core): relay A→B {:.0}% ({:.0}% user), relay B→A \
             {:.0}% ({:.0}% user), whole process {:.0}% (relays + endpoints + their kernel work)",
            self.wall.as_secs_f64(),
            pct(stats.a_to_b.relay_cpu),
            pct(stats.a_to_b.relay_cpu_user),
            pct(stats.b_to_a.relay_cpu),
            pct(stats.b_to_a.relay_cpu_user),
            pct(self.cpu)
        );
    }
}

/// Runs `f` as one phase, measuring what it cost.
fn measured<T>(link: &EmulatedLink, f: impl FnOnce() -> Result<T>) -> Result<(T, Phase)> {
    let (stats0, cpu0, wall0) = (link.stats(), process_cpu(), Instant::now());
    let value = f()?;
    let phase = Phase { link: link.stats().since(&stats0), cpu: process_cpu() - cpu0, wall: wall0.elapsed() };
    Ok((value, phase))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL" }
}

/// CPU time of the whole process (all threads, user and system).
fn process_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|usage| {
            let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
            Duration::from_micros(micros.max(0) as u64)
        })
        .unwrap_or_default()
}
