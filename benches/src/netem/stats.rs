//! The link's counters: what each relay thread counts ([`Counters`], published after every
//! wakeup), and what [`super::EmulatedLink::stats`] reports from them ([`DirectionStats`],
//! [`LinkStats`]) together with the TUN devices' drops and the relay threads' CPU time.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering as Atomic};
use std::time::Duration;

use super::TUN_NAME;

/// Counters of one direction of the link, since [`super::EmulatedLink::start`].
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

/// Counters of both directions; see [`super::EmulatedLink::stats`].
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

/// Counters a relay thread publishes (it is their only writer).
#[derive(Debug, Default)]
pub(super) struct Counters {
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

impl Counters {
    /// Makes the calling thread the relay whose CPU time [`Counters::read`] reports.
    pub(super) fn claim_thread(&self) {
        self.tid.store(nix::unistd::gettid().as_raw(), Atomic::Relaxed);
    }

    /// What the relay thread has published, with its CPU time so far and `kernel_dropped` (the
    /// packets its sending TUN device dropped).
    pub(super) fn read(&self, kernel_dropped: u64) -> DirectionStats {
        let (relay_cpu, relay_cpu_user) = thread_cpu(self.tid.load(Atomic::Relaxed));
        DirectionStats {
            packets_in: self.packets_in.load(Atomic::Relaxed),
            forwarded: self.forwarded.load(Atomic::Relaxed),
            lost: self.lost.load(Atomic::Relaxed),
            queue_dropped: self.queue_dropped.load(Atomic::Relaxed),
            reordered: self.reordered.load(Atomic::Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Atomic::Relaxed),
            write_errors: self.write_errors.load(Atomic::Relaxed),
            kernel_dropped,
            relay_cpu,
            relay_cpu_user,
        }
    }
}

/// The relay thread's own copy of its counters, published after each wakeup.
#[derive(Debug, Default)]
pub(super) struct LocalCounts {
    pub(super) packets_in: u64,
    pub(super) forwarded: u64,
    pub(super) lost: u64,
    pub(super) queue_dropped: u64,
    pub(super) reordered: u64,
    pub(super) bytes_forwarded: u64,
    pub(super) write_errors: u64,
}

impl LocalCounts {
    pub(super) fn publish(&self, to: &Counters) {
        to.packets_in.store(self.packets_in, Atomic::Relaxed);
        to.forwarded.store(self.forwarded, Atomic::Relaxed);
        to.lost.store(self.lost, Atomic::Relaxed);
        to.queue_dropped.store(self.queue_dropped, Atomic::Relaxed);
        to.reordered.store(self.reordered, Atomic::Relaxed);
        to.bytes_forwarded.store(self.bytes_forwarded, Atomic::Relaxed);
        to.write_errors.store(self.write_errors, Atomic::Relaxed);
    }
}

/// The TUN device's `tx_dropped` from a `/proc/net/dev` opened in its namespace.
pub(super) fn tun_tx_dropped(net_dev: &Mutex<File>) -> u64 {
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
