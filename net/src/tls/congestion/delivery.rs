//! A ceiling on a long path's congestion window, from what the path has delivered: at most
//! [`STEADY_GAIN`] times its bandwidth-delay product in flight, measured over whole round trips.
//!
//! quinn's BBR keeps `2 × bandwidth × min RTT` (plus its ack-aggregation allowance) in flight,
//! with a bandwidth taken as the largest rate between two consecutive acks. Acks arrive in
//! bunches (a receiver acks every other packet, links and NICs batch), so that rate runs above
//! the bottleneck's, and quinn paces at `1.25 × window / smoothed RTT` rather than at BBR's
//! pacing rate. On a path whose bottleneck buffers one bandwidth-delay product (a common sizing),
//! that standing queue of a BDP or more overflows again and again: on the emulated 1 Gbit/s,
//! 30 ms link of `ferry-bench wan`, 23,000–42,000 queue drops per 1 GiB pull, ten times the
//! link's random losses, every one of them a retransmission and a recovery episode.
//!
//! [`DeliveryCap`] measures the delivery rate over each round trip (bytes acked between two
//! round ends, over the time between them), keeps the largest of the last [`RATE_ROUNDS`], and
//! the smallest RTT sample of the last [`MIN_RTT_WINDOW`]. The ceiling is their product times a
//! gain: [`STARTUP_GAIN`] while the rate still grows by a quarter per round (slow start's
//! doubling) and no round has seen a standing queue (see [`FULL_PIPE_QUEUE`]), then
//! [`STEADY_GAIN`]: the bottleneck stays busy and its queue holds at most half a BDP. A window that size still probes upwards (if the path can carry more, the next round
//! delivers more and the ceiling rises), and losses do not lower it: on a lossy long path
//! (a provincial link) a random loss is not congestion.
//!
//! The measurement also drives the startup ([`DeliveryCap::window`]): until the rate stops
//! growing, a standing queue forms or a round loses more than [`STARTUP_LOSS_EXIT`] of its
//! bytes, the window is slow start's (the initial window plus every byte acked, doubling each
//! round trip), bounded by twice what the last round trip delivered (so that at most one BDP
//! queues once the link is full), and never below the ceiling; whatever the controller's is.
//! quinn's BBR ends its startup at its first round with a loss, and its recovery window then
//! falls to a few datagrams; at the 2% random loss of a lossy provincial link that is every
//! round, and the ramp to the link's rate took about a second of an 80 ms link. The ceiling
//! alone, twice what the last whole round delivered, lags a round behind the window it
//! measures and doubled the window only every other round trip. After the startup the
//! controller's window is kept between [`FLOOR_GAIN`] BDPs and the ceiling.
//!
//! The minimum RTT is windowed rather than all-time, so that a path that got longer (a route
//! change) raises it within [`MIN_RTT_WINDOW`] instead of choking the window. A window kept at
//! 1.5 BDP keeps a standing queue, though, and a windowed minimum would take that queue for
//! propagation delay once the drained samples have aged out, and grow the window on it. So when
//! no sample has come near the minimum for [`PROBE_RTT_INTERVAL`], the ceiling drops to
//! [`PROBE_RTT_GAIN`] BDP for [`PROBE_RTT_TIME`] (BBR's ProbeRTT): the queue drains and the
//! samples show the path's own delay again, old or new. It costs about a quarter of the link
//! for 0.2 s in 10 s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Ceiling gain once the delivery rate stopped growing: half a BDP of queue at the most.
pub(super) const STEADY_GAIN: f64 = 1.5;
/// Floor gain once the rate stopped growing: a controller that reads random loss as congestion
/// does not take the window below this. Above one BDP, since a window of exactly the measured
/// BDP delivers a little less than it (the losses), and the next measurement is then lower.
pub(super) const FLOOR_GAIN: f64 = 1.25;
/// Ceiling gain while the rate still grows: twice what the last round delivered, slow start's pace.
pub(super) const STARTUP_GAIN: f64 = 2.0;
/// Round-trip rate samples the bandwidth is the largest of.
pub(super) const RATE_ROUNDS: usize = 10;
/// The shortest round, as a fraction of the minimum RTT. A round's last packet can be one that
/// no controller saw sent (an ack-only packet), acked in the same burst of acks as the packets
/// before it: over that fraction of a millisecond the burst's bytes read as a rate above the
/// link's (18.4 MB/s on the emulated 100 Mbit/s link), the ceiling then held twice the link's
/// BDP for ten rounds and the bottleneck queue overflowed (1,918 drops in that pull). Such a
/// round goes on.
const MIN_ROUND_FRACTION: f64 = 0.75;
/// Rounds without a quarter more bandwidth after which the path counts as full.
const FULL_PIPE_ROUNDS: u32 = 3;
/// While the rate still grows: a round whose every RTT sample exceeds the minimum by this
/// fraction has a standing queue, so the path is full already (HyStart's delay signal). Without
/// it the startup gain runs one BDP of queue before the rate stops growing, which overflows a
/// one-BDP bottleneck buffer.
const FULL_PIPE_QUEUE: f64 = 0.25;
/// While the rate still grows: RTT samples at the start of a round that tell whether a queue
/// stands (HyStart's eight), checked as soon as they are in rather than at the round's end: the
/// startup's window doubles every round trip, so a queue noticed only at the end of the round
/// it formed in has doubled again by then.
const QUEUE_SAMPLES: u32 = 8;
/// While the rate still grows: a round that lost more than this fraction of its bytes overflowed
/// a queue, so the path is full. Random loss on a lossy long link (2% on the emulated 80 ms link)
/// stays below it; a doubling window that overflows a drop-tail queue loses far more.
const STARTUP_LOSS_EXIT: f64 = 0.05;
/// Lost bytes a round needs besides [`STARTUP_LOSS_EXIT`] to end the startup: a loss or two out
/// of a small early round is chance, not a full queue.
const STARTUP_LOSS_MIN_BYTES: u64 = 12_000;
/// How long an RTT sample counts towards the minimum.
pub(super) const MIN_RTT_WINDOW: Duration = Duration::from_secs(12);
/// Granularity of the windowed minimum RTT.
const MIN_RTT_BUCKET: Duration = Duration::from_secs(1);
/// Time without a sample near the minimum RTT after which the queue is drained.
pub(super) const PROBE_RTT_INTERVAL: Duration = Duration::from_secs(10);
/// How long the queue is drained for.
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Ceiling gain while draining: under one BDP in flight, so the bottleneck's queue empties.
pub(super) const PROBE_RTT_GAIN: f64 = 0.75;

/// The smallest sample of the last [`MIN_RTT_WINDOW`], kept as one minimum per
/// [`MIN_RTT_BUCKET`].
#[derive(Debug, Clone, Default)]
struct WindowedMin {
    buckets: VecDeque<(Instant, Duration)>,
}

impl WindowedMin {
    fn sample(&mut self, now: Instant, rtt: Duration) {
        while self
            .buckets
            .front()
            .is_some_and(|(start, _)| now.saturating_duration_since(*start) > MIN_RTT_WINDOW)
        {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((start, min)) if now.saturating_duration_since(*start) < MIN_RTT_BUCKET => {
                *min = (*min).min(rtt);
            }
            _ => self.buckets.push_back((now, rtt)),
        }
    }

    fn get(&self) -> Option<Duration> {
        self.buckets.iter().map(|(_, min)| *min).min()
    }
}

/// The delivery-rate ceiling of one path (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(super) struct DeliveryCap {
    /// The packet whose acknowledgement ends the current round, and when the round began.
    round: Option<(u64, Instant)>,
    largest_sent: u64,
    acked_in_round: u64,
    lost_in_round: u64,
    app_limited_in_round: bool,
    /// The smallest RTT sample of the current round.
    round_min_rtt: Option<Duration>,
    /// RTT samples of the current round so far (counted up to [`QUEUE_SAMPLES`]).
    round_samples: u32,
    /// Delivery rates of the last rounds, bytes per second (a ring of [`RATE_ROUNDS`]).
    rates: VecDeque<u64>,
    min_rtt: WindowedMin,
    /// Whether a round has been measured that the application kept busy. A sender that never
    /// filled its window (a puller, sending requests and acknowledgements) has measured only
    /// what it chose to send, which says nothing of the path: it gets no ceiling.
    window_limited: bool,
    /// When an RTT sample last came within an eighth of the minimum.
    near_min_at: Option<Instant>,
    /// While the queue is drained: until when.
    draining_until: Option<Instant>,
    full_pipe: bool,
    full_rate: u64,
    rounds_without_growth: u32,
    /// Bytes acked during the startup of packets the application kept the window full for: slow
    /// start's window is the initial window plus these ([`Self::window`]).
    startup_acked: u64,
    /// Every byte acked so far, and during the startup (time, that total) at the ends of the
    /// ack batches of the last minimum RTT or a little more.
    acked_total: u64,
    ack_history: VecDeque<(Instant, u64)>,
    /// Bytes per second acked over that last round trip (0 until one is in): the startup's
    /// bound on slow start ([`Self::window`]).
    recent_rate: u64,
}

impl DeliveryCap {
    pub(super) fn on_sent(&mut self, now: Instant, packet_number: u64) {
        self.largest_sent = self.largest_sent.max(packet_number);
        if self.round.is_none() {
            self.round = Some((packet_number, now));
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        self.acked_in_round += bytes;
        self.acked_total = self.acked_total.saturating_add(bytes);
        self.app_limited_in_round |= app_limited;
        let rtt = now.saturating_duration_since(sent);
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |min| min.min(rtt)));
        if !self.full_pipe && !app_limited {
            self.startup_acked = self.startup_acked.saturating_add(bytes);
            if self.round_samples < QUEUE_SAMPLES {
                self.round_samples += 1;
                if self.round_samples == QUEUE_SAMPLES {
                    // The round's first samples all came late: a queue stood when it began.
                    self.check_standing_queue();
                }
            }
        }
        self.min_rtt.sample(now, rtt);
        if self.min_rtt.get().is_some_and(|min| rtt <= min + min / 8) {
            self.near_min_at = Some(now);
        }
    }

    /// Bytes declared lost (counted against the round in which the loss is noticed).
    pub(super) fn on_loss(&mut self, bytes: u64) {
        self.lost_in_round += bytes;
    }

    /// The end of one batch of acks: closes the round if its last packet is now acknowledged
    /// and most of a round trip has passed (and then returns true).
    pub(super) fn on_end_acks(&mut self, now: Instant, largest_acked: Option<u64>) -> bool {
        self.update_probe_rtt(now);
        self.update_recent_rate(now);
        let (Some(acked), Some((end, started))) = (largest_acked, self.round) else { return false };
        if acked < end {
            return false;
        }
        let elapsed = now.saturating_duration_since(started);
        if self.min_rtt.get().is_some_and(|min| elapsed < min.mul_f64(MIN_ROUND_FRACTION)) {
            // Its last packet was acked within a burst of acks: the round goes on.
            return false;
        }
        // A round in which nothing was acked that a controller saw sent (its end reached by acks
        // of ack-only packets: a puller's rounds, mostly) says nothing of the path. Counted, it
        // read as a window-limited round delivering 0 B/s: a puller's ceiling fell to four
        // datagrams, and two or three of its packets lost on a 2%-loss link then held back all it
        // sends, acknowledgements included, for a round trip or more (the node, its window full
        // of unacknowledged data, sent nothing for 110 ms of a traced 80 ms pull).
        if !elapsed.is_zero() && self.acked_in_round > 0 {
            let rate = (u128::from(self.acked_in_round) * 1_000_000_000 / elapsed.as_nanos()) as u64;
            // A round the application left idle says nothing about the path, unless it still
            // delivered more than any before.
            if !self.app_limited_in_round || rate > self.bandwidth() {
                if self.rates.len() == RATE_ROUNDS {
                    self.rates.pop_front();
                }
                self.rates.push_back(rate);
            }
            if !self.app_limited_in_round {
                self.window_limited = true;
                self.check_full_pipe();
                self.check_standing_queue();
                self.check_round_loss();
            }
        }
        self.round = Some((self.largest_sent.max(acked + 1), now));
        self.acked_in_round = 0;
        self.lost_in_round = 0;
        self.app_limited_in_round = false;
        self.round_min_rtt = None;
        self.round_samples = 0;
        true
    }

    /// Keeps [`Self::recent_rate`] during the startup: the bytes acked since the last batch end
    /// at least a minimum RTT ago, over the time since then (one entry per ack batch of the last
    /// round trip; none once the startup is over).
    fn update_recent_rate(&mut self, now: Instant) {
        if self.full_pipe {
            self.ack_history = VecDeque::new();
            return;
        }
        let Some(min_rtt) = self.min_rtt.get() else { return };
        if self.ack_history.back().is_none_or(|&(_, total)| total != self.acked_total) {
            self.ack_history.push_back((now, self.acked_total));
        }
        if let Some(horizon) = now.checked_sub(min_rtt) {
            while self.ack_history.get(1).is_some_and(|&(at, _)| at <= horizon) {
                self.ack_history.pop_front();
            }
        }
        self.recent_rate = match self.ack_history.front() {
            Some(&(since, total)) => {
                let elapsed = now.saturating_duration_since(since);
                if elapsed < min_rtt || elapsed.is_zero() {
                    0
                } else {
                    (u128::from(self.acked_total - total) * 1_000_000_000 / elapsed.as_nanos()) as u64
                }
            }
            None => 0,
        };
    }

    fn update_probe_rtt(&mut self, now: Instant) {
        match self.draining_until {
            Some(until) if now >= until => {
                self.draining_until = None;
                self.near_min_at = Some(now);
            }
            Some(_) => {}
            None => {
                let stale =
                    self.near_min_at.is_some_and(|at| now.saturating_duration_since(at) > PROBE_RTT_INTERVAL);
                if stale && self.full_pipe {
                    self.draining_until = Some(now + PROBE_RTT_TIME);
                }
            }
        }
    }

    /// Whether the ceiling is draining the queue (see [`PROBE_RTT_INTERVAL`]).
    fn is_draining(&self) -> bool {
        self.draining_until.is_some()
    }

    fn check_full_pipe(&mut self) {
        if self.full_pipe {
            return;
        }
        let bandwidth = self.bandwidth();
        if bandwidth >= self.full_rate.saturating_add(self.full_rate / 4) {
            self.full_rate = bandwidth;
            self.rounds_without_growth = 0;
        } else {
            self.rounds_without_growth += 1;
            self.full_pipe = self.rounds_without_growth >= FULL_PIPE_ROUNDS;
        }
    }

    fn check_standing_queue(&mut self) {
        let (Some(round_min), Some(min)) = (self.round_min_rtt, self.min_rtt.get()) else { return };
        if round_min.as_secs_f64() > min.as_secs_f64() * (1.0 + FULL_PIPE_QUEUE) {
            self.full_pipe = true;
        }
    }

    fn check_round_loss(&mut self) {
        let lost = self.lost_in_round;
        let sent = lost + self.acked_in_round;
        if lost >= STARTUP_LOSS_MIN_BYTES && lost as f64 > sent as f64 * STARTUP_LOSS_EXIT {
            self.full_pipe = true;
        }
    }

    /// Persistent congestion (every packet of a long period lost): what was measured is stale.
    pub(super) fn reset(&mut self) {
        *self = DeliveryCap {
            min_rtt: std::mem::take(&mut self.min_rtt),
            near_min_at: self.near_min_at,
            ..DeliveryCap::default()
        };
    }

    /// The path's bandwidth: the largest delivery rate of the last rounds, bytes per second.
    pub(super) fn bandwidth(&self) -> u64 {
        self.rates.iter().copied().max().unwrap_or(0)
    }

    /// Whether the delivery rate has stopped growing (the startup is over).
    #[cfg(test)]
    pub(super) fn is_full(&self) -> bool {
        self.full_pipe
    }

    /// The window in force on a long path, from `controller`'s window (quinn's BBR), at least
    /// `min_window`. During the startup (the rate still grows, see [`Self::is_full`]) it is slow
    /// start's window (`initial_window` and every byte acked since) up to twice what the last
    /// round trip delivered, and at least the ceiling (twice what the last whole round
    /// delivered), or before any round that filled the window `controller`'s but at least
    /// `initial_window`: quinn's BBR ends its startup at the first round with a loss and its
    /// recovery window then falls to a few datagrams, which on a link with random loss is every
    /// round. After the startup it is `controller`'s window, between
    /// [`FLOOR_GAIN`] BDPs (a random loss is not congestion; the delivery rate, not the losses,
    /// says what the path carries) and the ceiling.
    pub(super) fn window(&self, controller: u64, min_window: u64, initial_window: u64) -> u64 {
        if !self.full_pipe {
            let measured =
                self.ceiling(min_window.max(initial_window)).unwrap_or(controller.max(initial_window));
            let slow_start = initial_window.saturating_add(self.startup_acked);
            let recent = self
                .min_rtt
                .get()
                .map_or(0, |rtt| (STARTUP_GAIN * self.recent_rate as f64 * rtt.as_secs_f64()) as u64);
            return measured.max(slow_start.min(recent));
        }
        let Some(ceiling) = self.ceiling(min_window) else { return controller };
        let floor = self.bdp_window(FLOOR_GAIN).unwrap_or(0).clamp(min_window, ceiling);
        controller.clamp(floor, ceiling)
    }

    /// The ceiling on the window, at least `min_window`; `None` until a round has been measured
    /// in which the application kept the window full.
    pub(super) fn ceiling(&self, min_window: u64) -> Option<u64> {
        if !self.window_limited {
            return None;
        }
        let gain = if self.is_draining() {
            PROBE_RTT_GAIN
        } else if self.full_pipe {
            STEADY_GAIN
        } else {
            STARTUP_GAIN
        };
        Some(self.bdp_window(gain)?.max(min_window))
    }

    /// `gain` times the measured bandwidth-delay product, once there is one.
    fn bdp_window(&self, gain: f64) -> Option<u64> {
        let bandwidth = self.bandwidth();
        let rtt = self.min_rtt.get()?;
        if bandwidth == 0 {
            return None;
        }
        Some((gain * bandwidth as f64 * rtt.as_secs_f64()) as u64)
    }
}

#[cfg(test)]
mod tests;
