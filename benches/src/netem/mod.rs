//! A userspace WAN link emulator for the benchmarks: two network namespaces joined by a relay
//! that delays, rate-limits, drops and reorders every IP packet, the same way for UDP (ferry's
//! QUIC) and TCP (rsync over ssh, curl against nginx). It stands in for `tc qdisc … netem` and
//! `tbf`, which this kernel lacks; it needs root, `/dev/net/tun` and `ip` (iproute2).
//!
//! ```text
//!  namespace A (fbench-a-<pid>)                          namespace B (fbench-b-<pid>)
//!  10.201.0.1  fbt0 (TUN) ──read──▶ [ loss → bottleneck → delay ] ──write──▶ fbt0 (TUN)  10.201.0.2
//!                         ◀──write── [ loss → bottleneck → delay ] ◀──read──
//! ```
//!
//! [`EmulatedLink::start`] makes both namespaces, a TUN device `fbt0` in each (addresses
//! [`ADDR_A`] and [`ADDR_B`], point-to-point, MTU 1500) and one relay thread per direction, which
//! reads raw IP packets from one TUN and writes them to the other. Per direction, the pipeline is
//! that of netem with a rate plus a tbf-like drop-tail queue:
//! 1. random loss with probability [`LinkProfile::loss`];
//! 2. a bottleneck of [`LinkProfile::rate_bps`] (IP bytes, headers included): a packet departs at
//!    `max(arrival, previous departure) + len·8/rate`; a packet that finds more than
//!    [`LinkProfile::queue_bytes`] not yet departed is dropped (drop-tail);
//! 3. propagation: released at `departure + rtt/2 ± jitter`; jitter never reorders (a packet is
//!    never released before the one admitted before it, as in netem with a rate); with
//!    probability [`LinkProfile::reorder`] a packet is held back by [`LinkProfile::reorder_gap`]
//!    so that later packets overtake it;
//! 4. a min-heap of release times; due packets are written in a batch, then the thread sleeps.
//!    An idle link waits (`ppoll`, ns timeout, 10 µs timer slack) for the next release or the next
//!    packet, so sparse traffic is timed to ~10 µs. While packets flow, the thread wakes every
//!    200 µs instead (env `FERRY_NETEM_TICK_US` overrides it; 0 wakes for every packet) and moves
//!    all that arrived and all that is due within ±100 µs: per-wakeup costs (syscalls, timers,
//!    interrupts in this VM) dominate at 1 Gbit/s, and this cut the relays' CPU there by a third
//!    (TCP at 1 Gbit/s: from ~100 % to ~70 % of one core). The bottleneck's pacing stays exact
//!    (departure times are computed, not slept); the timing of a single packet is then within
//!    ±100 µs, like a NIC's interrupt coalescing.
//!
//! The random streams are seeded from [`LinkProfile::seed`] (ChaCha8, one stream per
//! direction), so two runs with the same traffic see the same drops.
//!
//! Processes reach the namespaces through [`EmulatedLink::command`] (`ip netns exec`), in-process
//! code through [`EmulatedLink::run_in`] (a thread that `setns`es into the namespace: sockets it
//! creates stay there). Dropping the link stops the relay, removes the TUN devices and deletes
//! both namespaces; namespaces left behind by a killed process are removed by the next
//! [`EmulatedLink::start`], and [`cleanup_on_signals`] deletes them on Ctrl-C or SIGTERM.
//!
//! Cost: every packet takes one `read` and one `write`; the `write` runs the receiving
//! namespace's network stack (e.g. TCP's receive path, or for ACKs the sender's ACK processing
//! and the segments it sends in response) in the relay thread. At 1 Gbit/s of TCP (~80k
//! packets/s one way, ~21k ACKs back) the relay threads used 55–70 % of one core (A→B 40–50 %,
//! B→A 15–20 %), of which ~5 % in user space; see [`stats::DirectionStats::relay_cpu`].
//!
//! For the benchmarks: TCP endpoints in the namespaces use the namespaces' sysctls. A new
//! namespace copies the host's `tcp_rmem`/`tcp_wmem` and default congestion control, but most
//! other `net.*` sysctls start at the kernel's defaults, not the host's tuning. The usual
//! `tcp_wmem` max of 4 MiB limits one connection to ~750 Mbit/s at 30 ms
//! ([`EmulatedLink::set_sysctl`] changes it). The congestion control matters most: bbr (this
//! machine's default) shrugs off random loss where cubic collapses, and a namespace may only
//! default to one of the host's `net.ipv4.tcp_allowed_congestion_control`, while a socket can
//! choose any available one (`TCP_CONGESTION`, as root).
//!
//! The hidden `ferry-bench netem-selftest` subcommand ([`selftest()`]) checks a profile end to end:
//! RTT, TCP goodput, UDP loss, and the CPU time of the relay threads.
//!
//! Layout: this module holds [`EmulatedLink`] and [`Side`]; [`profile`] the link profiles,
//! [`impairment`] the per-packet pipeline, [`relay`] the relay threads, [`stats`] their counters,
//! [`namespaces`] the namespaces, TUN devices and sysctls, [`mod@selftest`] and [`probes`] the
//! self-test.

mod impairment;
mod namespaces;
mod probes;
mod profile;
mod relay;
mod selftest;
mod stats;

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use impairment::Impairment;
use namespaces::{Namespaces, in_namespace, preflight, remove_stale_namespaces, setup_side, sysctl_path};
use stats::{Counters, tun_tx_dropped};

pub use namespaces::cleanup_on_signals;
pub use profile::LinkProfile;
pub use selftest::{SelftestArgs, selftest};
pub use stats::LinkStats;

/// Address of side A's TUN device (inside namespace A).
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Address of side B's TUN device (inside namespace B).
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// Name of the TUN device in both namespaces.
pub const TUN_NAME: &str = "fbt0";
/// MTU of the TUN devices: the IP packets on the emulated link are at most this long.
pub const MTU: usize = 1500;

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Namespace A, address [`ADDR_A`].
    A,
    /// Namespace B, address [`ADDR_B`].
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// A running emulated link between namespaces A and B. Dropping it (also when unwinding from a
/// panic) stops the relay threads, removes the TUN devices and deletes both namespaces.
#[derive(Debug)]
pub struct EmulatedLink {
    profile: LinkProfile,
    names: [String; 2],
    stop: Arc<AtomicBool>,
    /// A→B, then B→A.
    counters: [Arc<Counters>; 2],
    relays: Vec<JoinHandle<()>>,
    /// A's, then B's namespace fd and `/proc/net/dev`.
    netns: [File; 2],
    net_dev: [Mutex<File>; 2],
    /// Dropped last: deletes the namespaces.
    _namespaces: Namespaces,
}

impl EmulatedLink {
    /// Makes the namespaces and TUN devices and starts relaying with `profile`'s impairments.
    /// Fails (leaving nothing behind) without root, `/dev/net/tun` or `ip`.
    pub fn start(profile: &LinkProfile) -> Result<Self> {
        profile.validate()?;
        preflight()?;
        remove_stale_namespaces();

        let names = namespaces::new_names();
        let mut namespaces = Namespaces::default();
        for name in &names {
            namespaces.add(name)?;
        }
        let a = setup_side(&names[0], ADDR_A, ADDR_B).context("setting up side A")?;
        let b = setup_side(&names[1], ADDR_B, ADDR_A).context("setting up side B")?;

        let stop = Arc::new(AtomicBool::new(false));
        let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
        let mut link = EmulatedLink {
            profile: profile.clone(),
            names,
            stop: Arc::clone(&stop),
            counters: counters.clone(),
            relays: Vec::new(),
            netns: [a.netns, b.netns],
            net_dev: [a.net_dev, b.net_dev],
            _namespaces: namespaces,
        };
        // From here on, dropping `link` on an error stops the threads already started.
        let directions = [("netem-a2b", &a.tun, &b.tun, 0), ("netem-b2a", &b.tun, &a.tun, 1)];
        for (name, input, output, stream) in directions {
            let impairment = Impairment::new(profile, stream);
            let relay = relay::spawn(name, input, output, impairment, &counters[stream as usize], &stop)?;
            link.relays.push(relay);
        }
        Ok(link)
    }

    /// The profile the link runs.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// The address of `side`'s TUN device: 10.201.0.1 for A, 10.201.0.2 for B.
    pub fn addr(&self, side: Side) -> IpAddr {
        IpAddr::V4(match side {
            Side::A => ADDR_A,
            Side::B => ADDR_B,
        })
    }

    /// The name of `side`'s network namespace (for `ip netns exec` and `ip -n`).
    pub fn namespace(&self, side: Side) -> &str {
        &self.names[side.index()]
    }

    /// `ip netns exec <namespace> program`: add the program's arguments and run it. Its
    /// sockets are in `side`'s namespace (a server started so must be stopped by the caller).
    pub fn command(&self, side: Side, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec"]).arg(self.namespace(side)).arg(program);
        command
    }

    /// Runs `f` on a fresh thread inside `side`'s network namespace and returns its result.
    /// Sockets created by `f` stay in that namespace, whichever thread uses them afterwards;
    /// threads spawned by `f` start in the namespace too. A panic in `f` is resumed here.
    pub fn run_in<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_namespace(&self.netns[side.index()], f)
    }

    /// Sets the sysctl `key` (dotted, e.g. `net.ipv4.tcp_rmem`) to `value` inside `side`'s
    /// namespace. Only the sysctls a network namespace has of its own (most of `net.*`) exist
    /// there, so this never changes the host's.
    pub fn set_sysctl(&self, side: Side, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.run_in(side, || std::fs::write(&path, value))?
            .with_context(|| format!("setting {key} = {value} in {}", self.namespace(side)))
    }

    /// Reads the sysctl `key` (dotted) inside `side`'s namespace.
    pub fn sysctl(&self, side: Side, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let value = self
            .run_in(side, || std::fs::read_to_string(&path))?
            .with_context(|| format!("reading {key} in {}", self.namespace(side)))?;
        Ok(value.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Counters of both directions since [`EmulatedLink::start`], with the relay threads' CPU.
    pub fn stats(&self) -> LinkStats {
        // The sending side's TUN (A's for A→B) drops what the relay did not read in time.
        let direction = |index: usize| self.counters[index].read(tun_tx_dropped(&self.net_dev[index]));
        LinkStats { a_to_b: direction(0), b_to_a: direction(1) }
    }
}

impl Drop for EmulatedLink {
    fn drop(&mut self) {
        self.stop.store(true, Atomic::Relaxed);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
        // The threads closed their TUN fds (the devices are gone); `_namespaces` deletes the
        // namespaces once the remaining fds are dropped.
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn duration_ns(duration: Duration) -> u64 {
    duration.as_nanos().min(u128::from(u64::MAX)) as u64
}
