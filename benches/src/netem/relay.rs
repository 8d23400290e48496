//! The relay threads: one per direction, reading raw IP packets from one TUN device, passing
//! them through an [`Impairment`] and writing them to the other TUN device when due.
//!
//! Neighbours: [`super::EmulatedLink::start`] spawns them; [`super::stats`] holds what they
//! count.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::libc;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use super::duration_ns;
use super::impairment::{Impairment, Pending, Verdict};
use super::stats::{Counters, LocalCounts};

/// Size of a packet buffer (an IP packet of the MTU fits, with room to spare).
const BUF_SIZE: usize = 2048;
/// Packets read per wakeup before the due ones are released.
const READ_BATCH: usize = 64;
/// Hard bound on packets held by one direction (queue and propagation), whatever the profile.
const MAX_PENDING: usize = 32_768;
/// Longest sleep of a relay thread, so that it notices [`super::EmulatedLink`]'s drop.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// Pause before retrying a write that would block, or after a failing read.
const RETRY_PAUSE: Duration = Duration::from_micros(200);
/// Wakeup interval of a relay thread while packets flow: the granularity of its timing then.
/// Measured with TCP at 1 Gbit/s on 2 cores: 100 µs cost ~11 % of a core more than 200 µs; 500 µs
/// saved ~16 % more but bunches 40 packets.
const TICK: Duration = Duration::from_micros(200);
/// Timer slack of the relay threads (the kernel's default is 50 µs).
const TIMER_SLACK_NS: libc::c_ulong = 10_000;

/// Starts the relay thread `name`, moving packets from the TUN device `input` to `output`
/// through `impairment` and counting them in `counters`, until `stop`.
pub(super) fn spawn(
    name: &str,
    input: &File,
    output: &File,
    impairment: Impairment,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let (input, output) = (input.try_clone()?, output.try_clone()?);
    let (counters, stop) = (Arc::clone(counters), Arc::clone(stop));
    thread::Builder::new()
        .name(name.into())
        .spawn(move || relay(input, output, impairment, counters, stop))
        .context("spawning a relay thread")
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
    counters.claim_thread();
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
