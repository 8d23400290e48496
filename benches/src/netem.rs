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
//! B→A 15–20 %), of which ~5 % in user space; see [`DirectionStats::relay_cpu`].
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
//! The hidden `ferry-bench netem-selftest` subcommand ([`selftest`]) checks a profile end to end:
//! RTT, TCP goodput, UDP loss, and the CPU time of the relay threads.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Args;
use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sched::{CloneFlags, setns};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::{TimeSpec, TimeValLike};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Address of side A's TUN device (inside namespace A).
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Address of side B's TUN device (inside namespace B).
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// Name of the TUN device in both namespaces.
pub const TUN_NAME: &str = "fbt0";
/// MTU of the TUN devices: the IP packets on the emulated link are at most this long.
pub const MTU: usize = 1500;

/// Prefix of the namespaces' names; the owner's pid follows the side (`fbench-a-<pid>`).
const NS_PREFIX: &str = "fbench-";
/// Size of a packet buffer (an IP packet of the MTU fits, with room to spare).
const BUF_SIZE: usize = 2048;
/// Packets read per wakeup before the due ones are released.
const READ_BATCH: usize = 64;
/// Hard bound on packets held by one direction (queue and propagation), whatever the profile.
const MAX_PENDING: usize = 32_768;
/// Longest sleep of a relay thread, so that it notices [`EmulatedLink`]'s drop.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// Pause before retrying a write that would block, or after a failing read.
const RETRY_PAUSE: Duration = Duration::from_micros(200);
/// Wakeup interval of a relay thread while packets flow: the granularity of its timing then.
/// Measured with TCP at 1 Gbit/s on 2 cores: 100 µs cost ~11 % of a core more than 200 µs; 500 µs
/// saved ~16 % more but bunches 40 packets.
const TICK: Duration = Duration::from_micros(200);
/// Timer slack of the relay threads (the kernel's default is 50 µs).
const TIMER_SLACK_NS: libc::c_ulong = 10_000;
/// `txqueuelen` of the TUN devices: packets the kernel queues for the relay before dropping.
const TUN_TXQUEUELEN: u32 = 2000;

// ---------------------------------------------------------------------------------------------
// Profile and statistics
// ---------------------------------------------------------------------------------------------

/// What the emulated link does to packets, per direction (both directions are alike).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Short name for reports, e.g. `wan30`.
    pub name: String,
    /// Bottleneck rate in bit/s of IP packets (headers included); 0 means unlimited.
    pub rate_bps: u64,
    /// Round-trip propagation delay; each direction gets half.
    pub rtt: Duration,
    /// Per-direction delay variation, uniform in ±`jitter`; it never reorders packets.
    pub jitter: Duration,
    /// Probability (0–1) that a packet is dropped at random, per direction.
    pub loss: f64,
    /// Probability (0–1) that a packet is held back by `reorder_gap`, so later ones overtake it.
    pub reorder: f64,
    /// Extra delay of a packet chosen for reordering.
    pub reorder_gap: Duration,
    /// Bottleneck buffer in bytes; `None` is one bandwidth-delay product, at least 100 packets
    /// of 1500 bytes (see [`LinkProfile::queue_limit`]).
    pub queue_bytes: Option<usize>,
    /// Seed of the random streams (loss, jitter, reordering).
    pub seed: u64,
}

impl LinkProfile {
    /// A link without impairment other than `rate_bps` and `rtt`.
    pub fn clean(name: &str, rate_bps: u64, rtt: Duration) -> Self {
        LinkProfile {
            name: name.to_string(),
            rate_bps,
            rtt,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(1),
            queue_bytes: None,
            seed: 0x5EED_F0E2_2025,
        }
    }

    /// 1 Gbit/s, 30 ms RTT, 0.5 % loss per direction: a long national link.
    pub fn wan30() -> Self {
        LinkProfile { loss: 0.005, ..Self::clean("wan30", 1_000_000_000, Duration::from_millis(30)) }
    }

    /// 100 Mbit/s, 80 ms RTT, 2 % loss per direction: a poor intercontinental link.
    pub fn wan80() -> Self {
        LinkProfile { loss: 0.02, ..Self::clean("wan80", 100_000_000, Duration::from_millis(80)) }
    }

    /// The profile called `name` (`wan30` or `wan80`).
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "wan30" => Ok(Self::wan30()),
            "wan80" => Ok(Self::wan80()),
            _ => bail!("unknown link profile {name:?} (known: wan30, wan80)"),
        }
    }

    /// The bottleneck buffer in bytes: `queue_bytes`, or else max(rate × RTT / 8, 100 × 1500).
    pub fn queue_limit(&self) -> usize {
        self.queue_bytes.unwrap_or_else(|| {
            let bdp = self.rate_bps as f64 * self.rtt.as_secs_f64() / 8.0;
            (bdp as usize).max(100 * MTU)
        })
    }

    fn validate(&self) -> Result<()> {
        ensure!((0.0..=1.0).contains(&self.loss), "loss must be within 0..=1, not {}", self.loss);
        ensure!((0.0..=1.0).contains(&self.reorder), "reorder must be within 0..=1, not {}", self.reorder);
        ensure!(
            self.queue_limit() >= MTU,
            "the queue ({} bytes) must hold at least one packet of {MTU} bytes",
            self.queue_limit()
        );
        ensure!(
            self.rtt <= Duration::from_secs(60) && self.jitter <= Duration::from_secs(60),
            "delay too long"
        );
        Ok(())
    }
}

impl fmt::Display for LinkProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = if self.rate_bps == 0 {
            "unlimited".to_string()
        } else {
            format!("{} Mbit/s", self.rate_bps as f64 / 1e6)
        };
        write!(
            f,
            "{}: {rate}, RTT {} ms ± {} ms jitter, loss {}%, reorder {}% (gap {} ms), queue {} KB, seed {}",
            self.name,
            ms(self.rtt),
            ms(self.jitter),
            self.loss * 100.0,
            self.reorder * 100.0,
            ms(self.reorder_gap),
            self.queue_limit() / 1000,
            self.seed
        )
    }
}

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

/// Counters of one direction of the link, since [`EmulatedLink::start`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirectionStats {
    /// Packets read from the sending side's TUN.
    pub packets_in: u64,
    /// Packets written to the receiving side's TUN.
    pub forwarded: u64,
    /// Packets dropped at random (`loss`).
    pub lost: u64,
    /// Packets dropped because the bottleneck queue was full.
    pub queue_dropped: u64,
    /// Packets held back to be overtaken (`reorder`).
    pub reordered: u64,
    /// IP bytes written to the receiving side's TUN.
    pub bytes_forwarded: u64,
    /// Packets the receiving side's kernel refused (malformed) or that failed to be written.
    pub write_errors: u64,
    /// Packets the sending side's kernel dropped before the relay read them (TUN `tx_dropped`:
    /// the relay fell behind by more than the device's queue).
    pub kernel_dropped: u64,
    /// CPU time of this direction's relay thread (user and system). The system part includes
    /// the receiving kernel's work on each written packet (the network stack of the other
    /// namespace runs in the writer's context, e.g. TCP's ACK processing and the segments it
    /// sends in response).
    pub relay_cpu: Duration,
    /// The user-space part of `relay_cpu` (the pipeline itself), at clock-tick resolution.
    pub relay_cpu_user: Duration,
}

impl DirectionStats {
    fn since(&self, earlier: &DirectionStats) -> DirectionStats {
        DirectionStats {
            packets_in: self.packets_in.saturating_sub(earlier.packets_in),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            lost: self.lost.saturating_sub(earlier.lost),
            queue_dropped: self.queue_dropped.saturating_sub(earlier.queue_dropped),
            reordered: self.reordered.saturating_sub(earlier.reordered),
            bytes_forwarded: self.bytes_forwarded.saturating_sub(earlier.bytes_forwarded),
            write_errors: self.write_errors.saturating_sub(earlier.write_errors),
            kernel_dropped: self.kernel_dropped.saturating_sub(earlier.kernel_dropped),
            relay_cpu: self.relay_cpu.saturating_sub(earlier.relay_cpu),
            relay_cpu_user: self.relay_cpu_user.saturating_sub(earlier.relay_cpu_user),
        }
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in {} pkts, forwarded {} pkts ({:.1} MB), lost {}, queue-dropped {}, reordered {}, \
             write errors {}, kernel-dropped {}, relay CPU {:.2} s ({:.2} s user)",
            self.packets_in,
            self.forwarded,
            self.bytes_forwarded as f64 / 1e6,
            self.lost,
            self.queue_dropped,
            self.reordered,
            self.write_errors,
            self.kernel_dropped,
            self.relay_cpu.as_secs_f64(),
            self.relay_cpu_user.as_secs_f64()
        )
    }
}

/// Counters of both directions; see [`EmulatedLink::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    /// Packets sent from A to B.
    pub a_to_b: DirectionStats,
    /// Packets sent from B to A.
    pub b_to_a: DirectionStats,
}

impl LinkStats {
    /// The counts between `earlier` and `self` (to measure one phase of a run).
    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats { a_to_b: self.a_to_b.since(&earlier.a_to_b), b_to_a: self.b_to_a.since(&earlier.b_to_a) }
    }

    /// CPU time of both relay threads.
    pub fn relay_cpu(&self) -> Duration {
        self.a_to_b.relay_cpu + self.b_to_a.relay_cpu
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "A→B: {}", self.a_to_b)?;
        write!(f, "B→A: {}", self.b_to_a)
    }
}

// ---------------------------------------------------------------------------------------------
// The impairment pipeline (pure: times are ns on the relay thread's clock)
// ---------------------------------------------------------------------------------------------

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Lost,
    QueueFull,
    Deliver { release: u64, reordered: bool },
}

/// The state of one direction: loss, bottleneck, propagation, reordering.
#[derive(Debug)]
struct Impairment {
    rate_bps: u64,
    one_way_ns: u64,
    jitter_ns: i64,
    loss: f64,
    reorder: f64,
    reorder_gap_ns: u64,
    queue_bytes: u64,
    rng: ChaCha8Rng,
    /// When the last admitted packet leaves the bottleneck.
    last_departure: u64,
    /// Release time of the last packet not chosen for reordering (jitter keeps FIFO order).
    last_release: u64,
}

impl Impairment {
    fn new(profile: &LinkProfile, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(profile.seed);
        rng.set_stream(stream);
        Impairment {
            rate_bps: profile.rate_bps,
            one_way_ns: duration_ns(profile.rtt) / 2,
            jitter_ns: duration_ns(profile.jitter).min(i64::MAX as u64) as i64,
            loss: profile.loss,
            reorder: profile.reorder,
            reorder_gap_ns: duration_ns(profile.reorder_gap),
            queue_bytes: profile.queue_limit() as u64,
            rng,
            last_departure: 0,
            last_release: 0,
        }
    }

    /// Admits a packet of `len` bytes that arrived at `now`.
    fn admit(&mut self, len: usize, now: u64) -> Verdict {
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            return Verdict::Lost;
        }
        let departure = if self.rate_bps == 0 {
            now
        } else {
            let backlog_ns = self.last_departure.saturating_sub(now);
            let backlog = (u128::from(backlog_ns) * u128::from(self.rate_bps) / 8_000_000_000) as u64;
            if backlog + len as u64 > self.queue_bytes {
                return Verdict::QueueFull;
            }
            let serialization = (len as u128 * 8_000_000_000 / u128::from(self.rate_bps)) as u64;
            self.last_departure = self.last_departure.max(now) + serialization;
            self.last_departure
        };
        let mut release = departure + self.one_way_ns;
        if self.jitter_ns > 0 {
            let jitter = self.rng.random_range(-self.jitter_ns..=self.jitter_ns);
            release = release.saturating_add_signed(jitter).max(departure);
        }
        release = release.max(self.last_release);
        self.last_release = release;
        if self.reorder > 0.0 && self.rng.random::<f64>() < self.reorder {
            return Verdict::Deliver { release: release + self.reorder_gap_ns, reordered: true };
        }
        Verdict::Deliver { release, reordered: false }
    }
}

/// A packet waiting for its release time; ordered so that [`BinaryHeap`] pops the earliest
/// (then the first admitted).
#[derive(Debug)]
struct Pending {
    release: u64,
    seq: u64,
    len: usize,
    buf: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}

// ---------------------------------------------------------------------------------------------
// The relay threads
// ---------------------------------------------------------------------------------------------

/// Counters a relay thread publishes (it is their only writer).
#[derive(Debug, Default)]
struct Counters {
    packets_in: AtomicU64,
    forwarded: AtomicU64,
    lost: AtomicU64,
    queue_dropped: AtomicU64,
    reordered: AtomicU64,
    bytes_forwarded: AtomicU64,
    write_errors: AtomicU64,
    /// Kernel thread id of the relay thread (0 until it runs), for its CPU time.
    tid: AtomicI32,
}

/// The relay thread's own copy of its counters, published after each wakeup.
#[derive(Debug, Default)]
struct LocalCounts {
    packets_in: u64,
    forwarded: u64,
    lost: u64,
    queue_dropped: u64,
    reordered: u64,
    bytes_forwarded: u64,
    write_errors: u64,
}

impl LocalCounts {
    fn publish(&self, to: &Counters) {
        to.packets_in.store(self.packets_in, Atomic::Relaxed);
        to.forwarded.store(self.forwarded, Atomic::Relaxed);
        to.lost.store(self.lost, Atomic::Relaxed);
        to.queue_dropped.store(self.queue_dropped, Atomic::Relaxed);
        to.reordered.store(self.reordered, Atomic::Relaxed);
        to.bytes_forwarded.store(self.bytes_forwarded, Atomic::Relaxed);
        to.write_errors.store(self.write_errors, Atomic::Relaxed);
    }
}

/// One direction: reads packets from `input` (non-blocking TUN), impairs them, writes them to
/// `output` (non-blocking TUN) when due, until `stop`.
///
/// Wakeups are what costs (a syscall, a timer, often an inter-processor interrupt): while
/// packets arrive the thread does not wait for each one but wakes every [`tick`] to read all
/// that arrived (stamped with the middle of the interval) and write all that is due within half
/// a tick (rounded to the nearest tick); when none arrived during the last interval, it sleeps
/// until the next release or the next packet, whichever comes first, so that sparse traffic
/// (pings, handshakes) is timed to the timer slack.
fn relay(input: File, output: File, mut link: Impairment, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    counters.tid.store(nix::unistd::gettid().as_raw(), Atomic::Relaxed);
    // Sleeps end within 10 µs of the release time rather than the default 50 µs.
    let _ = nix::sys::prctl::set_timerslack(TIMER_SLACK_NS);
    let tick = tick();
    let tick_ns = duration_ns(tick);
    let epoch = Instant::now();
    let clock = || epoch.elapsed().as_nanos() as u64;
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut seq = 0u64;
    let mut counts = LocalCounts::default();
    // Time of the previous wakeup, and whether the thread slept a tick since.
    let mut previous_wake = clock();
    let mut ticked = false;

    while !stop.load(Atomic::Relaxed) {
        let wake = clock();
        // Packets read after a tick arrived at some point during it; else they just woke us.
        let arrival = if ticked { previous_wake + (wake - previous_wake) / 2 } else { wake };
        previous_wake = wake;
        ticked = false;

        // 1. Read what has arrived, up to a batch.
        let mut reads = 0;
        let mut read_failed = false;
        while reads < READ_BATCH {
            let mut buf = pool.pop().unwrap_or_else(|| vec![0; BUF_SIZE]);
            match (&input).read(&mut buf) {
                Ok(len) if len > 0 => {
                    reads += 1;
                    counts.packets_in += 1;
                    // The hard bound on memory, whatever the profile allows.
                    let verdict =
                        if heap.len() >= MAX_PENDING { Verdict::QueueFull } else { link.admit(len, arrival) };
                    match verdict {
                        Verdict::Lost => {
                            counts.lost += 1;
                            pool.push(buf);
                        }
                        Verdict::QueueFull => {
                            counts.queue_dropped += 1;
                            pool.push(buf);
                        }
                        Verdict::Deliver { release, reordered } => {
                            counts.reordered += u64::from(reordered);
                            heap.push(Pending { release, seq, len, buf });
                            seq += 1;
                        }
                    }
                }
                Ok(_) => {
                    pool.push(buf);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => pool.push(buf),
                Err(e) => {
                    pool.push(buf);
                    read_failed = e.kind() != io::ErrorKind::WouldBlock;
                    break;
                }
            }
        }
        let busy = reads > 0;

        // 2. Release everything that is due (within half a tick when waking by the tick).
        let horizon = clock() + if busy { tick_ns / 2 } else { 0 };
        let mut blocked = false;
        while let Some(next) = heap.peek() {
            if next.release > horizon {
                break;
            }
            match (&output).write(&next.buf[..next.len]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => {
                    let done = heap.pop().expect("peeked");
                    if result.is_ok() {
                        counts.forwarded += 1;
                        counts.bytes_forwarded += done.len as u64;
                    } else {
                        counts.write_errors += 1;
                    }
                    pool.push(done.buf);
                }
            }
        }
        counts.publish(&counters);
        if reads == READ_BATCH && !blocked {
            continue; // more is probably waiting
        }

        // 3. Sleep: a tick while packets flow, else until the next release or packet.
        if read_failed {
            // The device is gone or broken: don't spin on it.
            thread::sleep(RETRY_PAUSE);
            continue;
        }
        if busy && !tick.is_zero() {
            thread::sleep(tick);
            ticked = true;
            continue;
        }
        let until_release =
            heap.peek().map(|next| Duration::from_nanos(next.release.saturating_sub(clock())));
        let sleep = if blocked { RETRY_PAUSE } else { until_release.unwrap_or(MAX_SLEEP).min(MAX_SLEEP) };
        if sleep.is_zero() {
            continue;
        }
        let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
        let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(sleep)), None);
    }
    counts.publish(&counters);
}

/// The relay's wakeup interval while packets flow ([`TICK`]; `FERRY_NETEM_TICK_US` overrides it
/// for experiments, 0 waking for every packet).
fn tick() -> Duration {
    std::env::var("FERRY_NETEM_TICK_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros)
        .unwrap_or(TICK)
}

// ---------------------------------------------------------------------------------------------
// Namespaces and TUN devices
// ---------------------------------------------------------------------------------------------

/// Names of the namespaces this process made and has not deleted yet (for
/// [`cleanup_on_signals`]).
static LIVE_NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Links started by this process so far, to name their namespaces apart.
static LINKS_STARTED: AtomicU32 = AtomicU32::new(0);

/// Network namespaces made by this process, deleted on drop.
#[derive(Debug, Default)]
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn add(&mut self, name: &str) -> Result<()> {
        if Path::new("/run/netns").join(name).exists() {
            // Left by an earlier process that had our pid (e.g. in a previous container).
            delete_namespace(name);
        }
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        lock_live().push(name.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            delete_namespace(name);
            lock_live().retain(|live| live != name);
        }
    }
}

fn lock_live() -> std::sync::MutexGuard<'static, Vec<String>> {
    LIVE_NAMESPACES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn delete_namespace(name: &str) {
    let status = Command::new("ip").args(["netns", "delete", name]).stderr(Stdio::null()).status();
    if !matches!(status, Ok(s) if s.success()) && Path::new("/run/netns").join(name).exists() {
        eprintln!("netem: could not delete network namespace {name}");
    }
}

/// Deletes `fbench-*` namespaces whose owner process is gone.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = namespace_owner(&name) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netem: removing stale network namespace {name} (process {pid} is gone)");
            delete_namespace(&name);
        }
    }
}

/// The pid in a namespace name `fbench-<a|b>-<pid>[-<n>]`.
fn namespace_owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix(NS_PREFIX)?.split('-');
    if !matches!(parts.next()?, "a" | "b") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running `ip` (iproute2)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `TUNSETIFF`: attaches `tun` (an open `/dev/net/tun`) to a new TUN device `name` (IFF_TUN,
/// IFF_NO_PI) in the calling thread's network namespace.
#[allow(unsafe_code)] // the one ioctl of this module; nix has no safe wrapper for it
fn tun_set_iff(tun: &File, name: &str) -> Result<()> {
    ensure!(name.len() < libc::IFNAMSIZ, "interface name {name:?} too long");
    // SAFETY: `ifreq` is plain old data (arrays, integers, pointers, unions of them); all zeroes
    // is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and writes back the name into) a `struct ifreq`, which `request`
    // is, and it lives for the duration of the call; the fd is open.
    let result = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    Errno::result(result).with_context(|| format!("TUNSETIFF {name}"))?;
    Ok(())
}

/// Runs `f` on a fresh thread that has joined the network namespace `netns`.
fn in_namespace<T: Send>(netns: &File, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|scope| {
        let thread = thread::Builder::new()
            .name("netem-setns".into())
            .spawn_scoped(scope, move || -> Result<T> {
                setns(netns, CloneFlags::CLONE_NEWNET).context("setns into the network namespace")?;
                Ok(f())
            })
            .context("spawning a thread")?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// One side's kernel objects: the namespace's fd, its TUN device, its `/proc/net/dev`.
#[derive(Debug)]
struct SideHandles {
    netns: File,
    tun: File,
    net_dev: Mutex<File>,
}

fn setup_side(namespace: &str, local: Ipv4Addr, peer: Ipv4Addr) -> Result<SideHandles> {
    let netns_path = Path::new("/run/netns").join(namespace);
    let netns = File::open(&netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
    let (tun, net_dev) = in_namespace(&netns, || -> Result<(File, File)> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun")?;
        tun_set_iff(&tun, TUN_NAME)?;
        // No IPv6 on the link: router solicitations and MLD reports would ride it.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TUN_NAME}/disable_ipv6"), "1");
        // Opened here, this file shows this namespace's devices from whatever thread reads it.
        let net_dev = File::open("/proc/thread-self/net/dev").context("opening /proc/thread-self/net/dev")?;
        Ok((tun, net_dev))
    })??;
    let (local, peer, txqueuelen) = (local.to_string(), peer.to_string(), TUN_TXQUEUELEN.to_string());
    let mtu = MTU.to_string();
    ip(&["-n", namespace, "link", "set", "lo", "up"])?;
    ip(&["-n", namespace, "addr", "add", &local, "peer", &peer, "dev", TUN_NAME])?;
    ip(&["-n", namespace, "link", "set", TUN_NAME, "mtu", &mtu, "txqueuelen", &txqueuelen, "up"])?;
    Ok(SideHandles { netns, tun, net_dev: Mutex::new(net_dev) })
}

/// The TUN device's `tx_dropped` from a `/proc/net/dev` opened in its namespace.
fn tun_tx_dropped(net_dev: &Mutex<File>) -> u64 {
    let mut file = net_dev.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return 0;
    }
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim() == TUN_NAME)
        .and_then(|(_, fields)| fields.split_whitespace().nth(11)?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of thread `tid` of this process: (user and system, user).
fn thread_cpu(tid: i32) -> (Duration, Duration) {
    if tid <= 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // stat: utime and stime (fields 14 and 15) in clock ticks (100 Hz), after the `(comm)`.
    let ticks: Vec<u64> = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|text| {
            let (_, rest) = text.rsplit_once(')')?;
            Some(rest.split_whitespace().skip(11).take(2).map(|v| v.parse().unwrap_or(0)).collect())
        })
        .unwrap_or_default();
    let tick = |i: usize| Duration::from_millis(ticks.get(i).copied().unwrap_or(0) * 10);
    let user = tick(0);
    // schedstat: ns on the CPU (precise), ns waiting, timeslices.
    let total = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| user + tick(1));
    (total, user)
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Fails with a clear message when the emulator cannot work here.
fn preflight() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the link emulator needs root (network namespaces, TUN devices)"
    );
    ensure!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing (no TUN support; try `modprobe tun`)"
    );
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("the `ip` command is missing (install iproute2)")
        }
        Err(e) => Err(e).context("running `ip -V`"),
    }
}

// ---------------------------------------------------------------------------------------------
// The link
// ---------------------------------------------------------------------------------------------

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

        let pid = std::process::id();
        let suffix = match LINKS_STARTED.fetch_add(1, Atomic::Relaxed) {
            0 => pid.to_string(),
            n => format!("{pid}-{n}"),
        };
        let names = [format!("{NS_PREFIX}a-{suffix}"), format!("{NS_PREFIX}b-{suffix}")];
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
            let (input, output) = (input.try_clone()?, output.try_clone()?);
            let impairment = Impairment::new(profile, stream);
            let (counters, stop) = (Arc::clone(&counters[stream as usize]), Arc::clone(&stop));
            let handle = thread::Builder::new()
                .name(name.into())
                .spawn(move || relay(input, output, impairment, counters, stop))
                .context("spawning a relay thread")?;
            link.relays.push(handle);
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
        let direction = |index: usize| {
            let c = &self.counters[index];
            let (relay_cpu, relay_cpu_user) = thread_cpu(c.tid.load(Atomic::Relaxed));
            DirectionStats {
                packets_in: c.packets_in.load(Atomic::Relaxed),
                forwarded: c.forwarded.load(Atomic::Relaxed),
                lost: c.lost.load(Atomic::Relaxed),
                queue_dropped: c.queue_dropped.load(Atomic::Relaxed),
                reordered: c.reordered.load(Atomic::Relaxed),
                bytes_forwarded: c.bytes_forwarded.load(Atomic::Relaxed),
                write_errors: c.write_errors.load(Atomic::Relaxed),
                // The sending side's TUN (A's for A→B) drops what the relay did not read in time.
                kernel_dropped: tun_tx_dropped(&self.net_dev[index]),
                relay_cpu,
                relay_cpu_user,
            }
        };
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

/// Deletes this process's namespaces on SIGINT, SIGTERM or SIGHUP, then exits (status 128 +
/// signal). Call it at the start of `main`'s scenario, before any other thread exists: it blocks
/// those signals in the calling thread (new threads inherit that) and waits for them on a thread
/// of its own (call it once). Child processes start with no signal blocked.
pub fn cleanup_on_signals() -> Result<()> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking SIGINT/SIGTERM/SIGHUP")?;
    thread::Builder::new()
        .name("netem-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                let names = lock_live().clone();
                for name in &names {
                    delete_namespace(name);
                }
                eprintln!("netem: {signal}: deleted network namespaces {names:?}");
                std::process::exit(128 + signal as i32);
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Self-test
// ---------------------------------------------------------------------------------------------

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
        let mut custom = false;
        if let Some(mbit) = self.rate_mbit {
            profile.rate_bps = (mbit.max(0.0) * 1e6) as u64;
            custom = true;
        }
        if let Some(rtt) = self.rtt_ms {
            profile.rtt = millis(rtt);
            custom = true;
        }
        if let Some(jitter) = self.jitter_ms {
            profile.jitter = millis(jitter);
            custom = true;
        }
        if let Some(loss) = self.loss {
            profile.loss = loss;
            custom = true;
        }
        if let Some(reorder) = self.reorder {
            profile.reorder = reorder;
            custom = true;
        }
        if let Some(kib) = self.queue_kib {
            profile.queue_bytes = Some(kib * 1024);
            custom = true;
        }
        if let Some(seed) = self.seed {
            profile.seed = seed;
        }
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
    if let Some(mib) = args.tcp_mem_mib {
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

    // RTT, B → A.
    let rtt = measure_rtt(&link)?;
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

    // TCP bulk A → B.
    let (stats0, cpu0, wall0) = (link.stats(), process_cpu(), Instant::now());
    let tcp = tcp_bulk(&link, Duration::from_secs(args.seconds), args.tcp_cc.as_deref())?;
    let cc = &tcp.congestion_control;
    let (phase, cpu, wall) = (link.stats().since(&stats0), process_cpu() - cpu0, wall0.elapsed());
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
    println!("  link during tcp: {}", phase.a_to_b);
    println!("  acks during tcp: {}", phase.b_to_a);
    print_cpu("tcp", &phase, cpu, wall);
    if profile.loss == 0.0 && profile.reorder == 0.0 && profile.rate_bps > 0 {
        let ok = steady_fraction >= 0.85;
        println!("  tcp without loss should reach 85% of the link in the second half: {}", verdict(ok));
        if !ok {
            failures.push("tcp");
        }
    }
    let relay_cpu_pct = phase.relay_cpu().as_secs_f64() / wall.as_secs_f64() * 100.0;

    // UDP blast A → B.
    let default_udp = if profile.rate_bps == 0 { 400.0 } else { (profile.rate_bps as f64 / 2e6).min(400.0) };
    let udp_mbit = args.udp_mbit.unwrap_or(default_udp);
    let (stats0, cpu0, wall0) = (link.stats(), process_cpu(), Instant::now());
    let udp = udp_blast(&link, udp_mbit, Duration::from_secs_f64(args.udp_seconds))?;
    let (phase, cpu, wall) = (link.stats().since(&stats0), process_cpu() - cpu0, wall0.elapsed());
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
    println!("  link during udp: {}", phase.a_to_b);
    print_cpu("udp", &phase, cpu, wall);
    if !udp_ok {
        failures.push("udp");
    }

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
        "netem profile={} rtt_ms={:.2} tcp_mbit_s={tcp_mbit:.1} tcp_link_fraction={fraction:.3} \
         tcp_steady_fraction={steady_fraction:.3} tcp_cc={cc} \
         udp_loss={udp_loss:.4} relay_cpu_pct_tcp={relay_cpu_pct:.0} checks={}",
        profile.name,
        rtt.avg_ms,
        if failures.is_empty() { "ok".to_string() } else { failures.join(",") }
    );
    ensure!(failures.is_empty(), "netem self-test failed: {}", failures.join(", "));
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL" }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn duration_ns(duration: Duration) -> u64 {
    duration.as_nanos().min(u128::from(u64::MAX)) as u64
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

fn print_cpu(phase: &str, stats: &LinkStats, process: Duration, wall: Duration) {
    let pct = |cpu: Duration| cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "  cpu during {phase} ({:.1} s, % of one core): relay A→B {:.0}% ({:.0}% user), relay B→A \
         {:.0}% ({:.0}% user), whole process {:.0}% (relays + endpoints + their kernel work)",
        wall.as_secs_f64(),
        pct(stats.a_to_b.relay_cpu),
        pct(stats.a_to_b.relay_cpu_user),
        pct(stats.b_to_a.relay_cpu),
        pct(stats.b_to_a.relay_cpu_user),
        pct(process)
    );
}

/// Round trips measured by `ping` or the in-process UDP echo.
#[derive(Debug)]
struct RttSample {
    method: &'static str,
    sent: usize,
    received: usize,
    min_ms: f64,
    avg_ms: f64,
    max_ms: f64,
}

/// RTT from B to A: `ping -c 20 -i 0.05` if there is a ping, else a UDP echo in-process.
fn measure_rtt(link: &EmulatedLink) -> Result<RttSample> {
    if let Some(ping) = find_program("ping") {
        let out = link
            .command(Side::B, &ping)
            .args(["-c", "20", "-i", "0.05", "-q", "-w", "15"])
            .arg(link.addr(Side::A).to_string())
            .stdin(Stdio::null())
            .output()
            .context("running ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(sample) = parse_ping(&text) {
            return Ok(sample);
        }
        eprintln!("netem: could not read ping's output ({}), using a UDP echo", text.trim());
    }
    udp_echo_rtt(link, 20)
}

/// `ping -q`'s summary: "20 packets transmitted, 19 received, …" and "… = min/avg/max/… ms".
fn parse_ping(text: &str) -> Option<RttSample> {
    let counts = text.lines().find(|line| line.contains("transmitted"))?;
    let numbers: Vec<usize> =
        counts.split(',').filter_map(|part| part.split_whitespace().next()?.parse().ok()).collect();
    let (sent, received) = (*numbers.first()?, *numbers.get(1)?);
    if received == 0 {
        return Some(RttSample { method: "ping", sent, received, min_ms: 0.0, avg_ms: 0.0, max_ms: 0.0 });
    }
    let rtts = text.lines().find(|line| line.contains("min/avg/max"))?;
    let values: Vec<f64> = rtts
        .split_once('=')?
        .1
        .trim()
        .trim_end_matches("ms")
        .split('/')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    Some(RttSample {
        method: "ping",
        sent,
        received,
        min_ms: *values.first()?,
        avg_ms: *values.get(1)?,
        max_ms: *values.get(2)?,
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `probes` UDP round trips from B to an echo in A, one at a time, at least 50 ms apart.
fn udp_echo_rtt(link: &EmulatedLink, probes: usize) -> Result<RttSample> {
    let server = link.run_in(Side::A, || UdpSocket::bind((ADDR_A, 0)))??;
    let client = link.run_in(Side::B, || UdpSocket::bind((ADDR_B, 0)))??;
    client.connect(server.local_addr()?)?;
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    let wait = (link.profile().rtt + link.profile().jitter * 2) * 3 + Duration::from_millis(200);
    client.set_read_timeout(Some(wait))?;
    let stop = AtomicBool::new(false);
    let rtts = thread::scope(|scope| -> Result<Vec<f64>> {
        scope.spawn(|| {
            let mut buf = [0u8; 64];
            while !stop.load(Atomic::Relaxed) {
                if let Ok((len, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..len], from);
                }
            }
        });
        let result = (|| -> Result<Vec<f64>> {
            let mut rtts = Vec::new();
            let mut buf = [0u8; 64];
            for probe in 0..probes as u64 {
                let sent = Instant::now();
                client.send(&probe.to_le_bytes())?;
                while let Ok(len) = client.recv(&mut buf) {
                    if len == 8 && buf[..8] == probe.to_le_bytes() {
                        rtts.push(ms(sent.elapsed()));
                        break;
                    }
                }
                thread::sleep(Duration::from_millis(50).saturating_sub(sent.elapsed()));
            }
            Ok(rtts)
        })();
        stop.store(true, Atomic::Relaxed);
        result
    })?;
    let received = rtts.len();
    let (min_ms, max_ms) = rtts.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let avg_ms = if received > 0 { rtts.iter().sum::<f64>() / received as f64 } else { 0.0 };
    Ok(RttSample { method: "udp echo", sent: probes, received, min_ms: min_ms.min(max_ms), avg_ms, max_ms })
}

#[derive(Debug)]
struct TcpResult {
    bytes: u64,
    elapsed: Duration,
    /// Bytes received in each second since the connection was made.
    per_second: Vec<u64>,
    /// The sender's congestion control.
    congestion_control: String,
}

/// A sender in A writes for `duration` to a receiver in B, which reads until EOF. `cc` sets the
/// sender's congestion control on its socket: a namespace's default can only be one of the host's
/// `net.ipv4.tcp_allowed_congestion_control`, a socket's any available one (as root).
fn tcp_bulk(link: &EmulatedLink, duration: Duration, cc: Option<&str>) -> Result<TcpResult> {
    let listener = link.run_in(Side::A, || TcpListener::bind((ADDR_A, 0)))??;
    let target = SocketAddr::new(link.addr(Side::A), listener.local_addr()?.port());
    let cc = cc.map(std::ffi::OsString::from);
    let sender =
        thread::Builder::new().name("selftest-tcp-tx".into()).spawn(move || -> Result<(u64, String)> {
            let (mut stream, _) = listener.accept()?;
            if let Some(cc) = &cc {
                setsockopt(&stream, sockopt::TcpCongestion, cc)
                    .with_context(|| format!("TCP_CONGESTION {cc:?}"))?;
            }
            let cc = getsockopt(&stream, sockopt::TcpCongestion)?.to_string_lossy().into_owned();
            let chunk = vec![0x5a_u8; 256 * 1024];
            let (start, mut sent) = (Instant::now(), 0u64);
            while start.elapsed() < duration {
                stream.write_all(&chunk)?;
                sent += chunk.len() as u64;
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok((sent, cc))
        })?;
    let mut stream = link
        .run_in(Side::B, || TcpStream::connect_timeout(&target, Duration::from_secs(10)))?
        .context("connecting from B to A")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let start = Instant::now();
    let (mut bytes, mut per_second, mut buf) = (0u64, Vec::new(), vec![0u8; 1 << 20]);
    loop {
        let len = stream.read(&mut buf).context("receiving in B")?;
        if len == 0 {
            break;
        }
        bytes += len as u64;
        let second = start.elapsed().as_secs() as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += len as u64;
    }
    let elapsed = start.elapsed();
    let (sent, congestion_control) = sender.join().map_err(|_| anyhow!("the TCP sender panicked"))??;
    ensure!(sent == bytes, "TCP: sent {sent} bytes but received {bytes}");
    Ok(TcpResult { bytes, elapsed, per_second, congestion_control })
}

#[derive(Debug)]
struct UdpResult {
    sent: u64,
    send_errors: u64,
    received: u64,
}

/// Datagrams of 1200 bytes from A to B, paced at `mbit` (IP bytes) for `duration`; counts the
/// distinct sequence numbers that arrive.
fn udp_blast(link: &EmulatedLink, mbit: f64, duration: Duration) -> Result<UdpResult> {
    const PAYLOAD: usize = 1200;
    let receiver = link.run_in(Side::B, || UdpSocket::bind((ADDR_B, 0)))??;
    let sender = link.run_in(Side::A, || UdpSocket::bind((ADDR_A, 0)))??;
    // Root may exceed net.core.rmem_max: the receiver must not be the one dropping.
    let _ = setsockopt(&receiver, sockopt::RcvBufForce, &(32 << 20));
    receiver.set_read_timeout(Some(Duration::from_millis(100)))?;
    sender.connect(receiver.local_addr()?)?;
    let pps = (mbit * 1e6 / ((PAYLOAD + 28) * 8) as f64).max(1.0);
    let total = (pps * duration.as_secs_f64()) as u64;
    let stop = AtomicBool::new(false);
    let linger = (link.profile().rtt + link.profile().jitter * 2 + link.profile().reorder_gap) * 2
        + Duration::from_millis(300);
    thread::scope(|scope| -> Result<UdpResult> {
        let counter = scope.spawn(|| {
            let mut seen = vec![false; total as usize];
            let (mut received, mut buf) = (0u64, [0u8; 2048]);
            loop {
                match receiver.recv(&mut buf) {
                    Ok(len) if len >= 8 => {
                        let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                        if let Some(slot) = seen.get_mut(seq)
                            && !*slot
                        {
                            *slot = true;
                            received += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) if stop.load(Atomic::Relaxed) => break,
                    Err(_) => {}
                }
            }
            received
        });
        let (mut sent, mut send_errors, mut packet) = (0u64, 0u64, vec![0u8; PAYLOAD]);
        let start = Instant::now();
        for seq in 0..total {
            let due = start + Duration::from_secs_f64(seq as f64 / pps);
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                thread::sleep(due - now);
            }
            packet[..8].copy_from_slice(&seq.to_le_bytes());
            match sender.send(&packet) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
        }
        thread::sleep(linger);
        stop.store(true, Atomic::Relaxed);
        let received = counter.join().map_err(|_| anyhow!("the UDP receiver panicked"))?;
        Ok(UdpResult { sent, send_errors, received })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(rate_bps: u64, rtt_ms: u64) -> LinkProfile {
        LinkProfile::clean("test", rate_bps, Duration::from_millis(rtt_ms))
    }

    #[test]
    fn serialization_and_propagation() {
        let mut link = Impairment::new(&profile(1_000_000_000, 30), 0);
        // 1500 bytes at 1 Gbit/s take 12 µs; one way is 15 ms.
        assert_eq!(link.admit(1500, 0), Verdict::Deliver { release: 12_000 + 15_000_000, reordered: false });
        assert_eq!(link.admit(1500, 0), Verdict::Deliver { release: 24_000 + 15_000_000, reordered: false });
        // An idle link: departure counts from the arrival.
        assert_eq!(
            link.admit(1500, 1_000_000),
            Verdict::Deliver { release: 1_012_000 + 15_000_000, reordered: false }
        );
    }

    #[test]
    fn queue_drops_tail_and_bounds_backlog() {
        let mut p = profile(8_000_000, 10); // 1 byte per µs
        p.queue_bytes = Some(15_000);
        let mut link = Impairment::new(&p, 0);
        let verdicts: Vec<Verdict> = (0..20).map(|_| link.admit(1500, 0)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::QueueFull).count(), 10);
        // After 1500 µs, one packet has left: one more fits.
        assert!(matches!(link.admit(1500, 1_500_000), Verdict::Deliver { .. }));
        assert_eq!(link.admit(1500, 1_500_000), Verdict::QueueFull);
    }

    #[test]
    fn default_queue_is_bdp_or_100_packets() {
        assert_eq!(LinkProfile::wan30().queue_limit(), 3_750_000);
        assert_eq!(LinkProfile::wan80().queue_limit(), 1_000_000);
        assert_eq!(profile(10_000_000, 10).queue_limit(), 150_000);
    }

    #[test]
    fn loss_rate_and_seeded_streams() {
        let mut p = profile(0, 0);
        p.loss = 0.02;
        let run = |stream| {
            let mut link = Impairment::new(&p, stream);
            (0..200_000).map(|_| link.admit(100, 0) == Verdict::Lost).collect::<Vec<bool>>()
        };
        let lost = run(0).iter().filter(|l| **l).count() as f64 / 200_000.0;
        assert!((lost - 0.02).abs() < 0.002, "loss {lost}");
        assert_eq!(run(0), run(0), "same seed and stream, same drops");
        assert_ne!(run(0), run(1), "the directions draw apart");
    }

    #[test]
    fn jitter_keeps_order_and_reorder_overtakes() {
        let mut p = profile(0, 20);
        p.jitter = Duration::from_millis(5);
        p.reorder = 0.1;
        let mut link = Impairment::new(&p, 0);
        let (mut last, mut reordered) = (0, 0);
        for i in 0..10_000u64 {
            match link.admit(100, i * 1000) {
                Verdict::Deliver { release, reordered: false } => {
                    assert!(release >= last);
                    assert!(release >= i * 1000 + 5_000_000);
                    last = release;
                }
                Verdict::Deliver { release, reordered: true } => {
                    assert!(release >= last + 1_000_000);
                    reordered += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((800..1200).contains(&reordered), "{reordered}");
    }

    #[test]
    fn pending_pops_earliest_first() {
        let mut heap = BinaryHeap::new();
        for (release, seq) in [(5, 0), (1, 1), (5, 2), (3, 3)] {
            heap.push(Pending { release, seq, len: 0, buf: Vec::new() });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|p| p.seq)).collect();
        assert_eq!(order, [1, 3, 0, 2]);
    }

    #[test]
    fn namespace_owner_parses_names() {
        assert_eq!(namespace_owner("fbench-a-1234"), Some(1234));
        assert_eq!(namespace_owner("fbench-b-1234-2"), Some(1234));
        assert_eq!(namespace_owner("fbench-c-1234"), None);
        assert_eq!(namespace_owner("other-a-1"), None);
    }

    #[test]
    fn ping_summary() {
        let text = "--- 10.201.0.1 ping statistics ---\n20 packets transmitted, 19 received, 5% packet loss, \
                    time 1000ms\nrtt min/avg/max/mdev = 80.101/80.402/81.003/0.200 ms\n";
        let sample = parse_ping(text).unwrap();
        assert_eq!((sample.sent, sample.received), (20, 19));
        assert_eq!((sample.min_ms, sample.avg_ms, sample.max_ms), (80.101, 80.402, 81.003));
    }
}
