//! [`DeliveryCap`] on its own, and driving a simulated bottleneck: a FIFO link of fixed rate
//! with a drop-tail queue of one BDP, random loss, and a sender that would grow its window
//! without bound (as BBR's startup does) but for the ceiling.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};

use super::*;

const PACKET: u64 = 1200;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn windowed_min_forgets_old_samples() {
    let t0 = Instant::now();
    let mut min = WindowedMin::default();
    assert_eq!(min.get(), None);
    min.sample(t0, ms(30));
    min.sample(t0 + ms(500), ms(45));
    min.sample(t0 + Duration::from_secs(5), ms(60));
    assert_eq!(min.get(), Some(ms(30)));
    // 30 ms was sampled 12.5 s before: gone; 60 ms is the window's minimum.
    min.sample(t0 + MIN_RTT_WINDOW + ms(1500), ms(61));
    assert_eq!(min.get(), Some(ms(60)));
    assert!(min.buckets.len() <= (MIN_RTT_WINDOW.as_secs() + 1) as usize);
}

#[test]
fn one_round_gives_a_rate_and_a_ceiling() {
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    assert_eq!(cap.ceiling(4800), None);
    for pn in 0..10 {
        cap.on_sent(t0, pn);
    }
    // Packet 0 ends the first round; 10 × 1200 bytes acked 30 ms after they were sent.
    for _ in 0..10 {
        cap.on_ack(t0 + ms(30), t0, PACKET, false);
    }
    cap.on_end_acks(t0 + ms(30), Some(9));
    assert_eq!(cap.bandwidth(), 400_000);
    // 400 kB/s × 30 ms = 12 kB; twice that while the rate may still grow.
    assert_eq!(cap.ceiling(4800), Some(24_000));
    assert_eq!(cap.ceiling(100_000), Some(100_000));
    assert!(!cap.is_full());
}

#[test]
fn a_round_acked_within_one_burst_is_no_sample() {
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    for pn in 0..10 {
        cap.on_sent(t0, pn);
        cap.on_ack(t0 + ms(30), t0, PACKET, false);
    }
    assert!(cap.on_end_acks(t0 + ms(30), Some(9)));
    assert_eq!(cap.bandwidth(), 400_000);
    // 0.25 ms later, an ack up to packet 13 (10 was an ack-only packet, which no controller
    // sees sent) of four packets sent a round trip before: 19.2 MB/s over that burst.
    let t = t0 + ms(30);
    let burst = t + Duration::from_micros(250);
    for _ in 0..4 {
        cap.on_ack(burst, burst - ms(30), PACKET, false);
    }
    assert!(!cap.on_end_acks(burst, Some(13)));
    assert_eq!(cap.bandwidth(), 400_000);
    // The round closes once most of a round trip has passed, over all it delivered.
    for pn in 14..20 {
        cap.on_sent(t, pn);
        cap.on_ack(t + ms(30), t, PACKET, false);
    }
    assert!(cap.on_end_acks(t + ms(30), Some(19)));
    assert_eq!(cap.bandwidth(), 400_000, "ten packets in 30 ms");
}

#[test]
fn app_limited_rounds_count_only_when_faster() {
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    let mut t = t0;
    let mut pn = 0;
    let mut round = |cap: &mut DeliveryCap, packets: u64, app_limited: bool| {
        for _ in 0..packets {
            cap.on_sent(t, pn);
            pn += 1;
        }
        t += ms(30);
        for _ in 0..packets {
            cap.on_ack(t, t - ms(30), PACKET, app_limited);
        }
        cap.on_end_acks(t, Some(pn - 1));
    };
    round(&mut cap, 5, true);
    assert_eq!(cap.bandwidth(), 200_000);
    assert_eq!(cap.ceiling(0), None, "a sender that never filled its window gets no ceiling");
    round(&mut cap, 100, false);
    let full = cap.bandwidth();
    assert!(cap.ceiling(0).is_some());
    round(&mut cap, 10, true);
    assert_eq!(cap.bandwidth(), full, "an idle round is no sample");
    assert_eq!(cap.rates.len(), 2);
    round(&mut cap, 200, true);
    assert!(cap.bandwidth() > full, "an idle round that delivered more still counts");
}

#[test]
fn acks_in_the_instant_they_were_sent_measure_no_rate_and_do_not_panic() {
    // On loopback an RTT sample can be zero, and so the minimum RTT and the time since the
    // ack batch one minimum RTT ago.
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    for pn in 0..4 {
        cap.on_sent(t0, pn);
        cap.on_ack(t0, t0, PACKET, false);
        cap.on_end_acks(t0, Some(pn));
    }
    assert_eq!(cap.min_rtt.get(), Some(Duration::ZERO));
    assert!(cap.window(240_000, 4_800, 240_000) >= 240_000);
}

#[test]
fn rounds_that_acked_nothing_counted_give_no_ceiling() {
    // A puller: each round ends on an ack of its ack-only packets, which no controller saw sent,
    // so nothing it sent is acked in the round, and nothing says it was idle.
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    // Its first request, acked while it was idle: a rate, and the path's RTT.
    cap.on_sent(t0, 0);
    cap.on_ack(t0 + ms(80), t0, PACKET, true);
    assert!(cap.on_end_acks(t0 + ms(80), Some(0)));
    let mut pn = 1;
    for round in 2..=8u64 {
        let t = t0 + ms(80 * round);
        cap.on_sent(t - ms(80), pn);
        pn += 2;
        assert!(cap.on_end_acks(t, Some(pn)), "round {round} ends");
    }
    assert_eq!(cap.ceiling(4_800), None, "no round filled the window: {:?}", cap.rates);
    assert!(!cap.is_full());
    assert_eq!(cap.window(240_000, 4_800, 240_000), 240_000, "the controller's window stands");
}

#[test]
fn the_pipe_is_full_after_three_rounds_without_growth() {
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    let mut pn = 0;
    for round in 1..=8u64 {
        let packets = if round <= 4 { 10 << round } else { 10 << 4 };
        let t = t0 + ms(30 * round);
        for _ in 0..packets {
            cap.on_sent(t - ms(30), pn);
            cap.on_ack(t, t - ms(30), PACKET, false);
            pn += 1;
        }
        cap.on_end_acks(t, Some(pn - 1));
        assert_eq!(cap.is_full(), round >= 7, "round {round}");
    }
    let bdp = cap.bandwidth() as f64 * 0.030;
    assert_eq!(cap.ceiling(0), Some((STEADY_GAIN * bdp) as u64));
    cap.reset();
    assert_eq!((cap.bandwidth(), cap.is_full()), (0, false));
    assert_eq!(cap.min_rtt.get(), Some(ms(30)), "the path's delay is kept");
}

/// What a simulated transfer showed.
#[derive(Debug, Default)]
struct Outcome {
    /// Bytes delivered per 100 ms interval.
    delivered: Vec<u64>,
    /// Queue drops per 100 ms interval.
    drops: Vec<u64>,
    /// Largest queue backlog seen per 100 ms interval, bytes.
    backlog: Vec<u64>,
}

impl Outcome {
    fn utilization(&self, rate: u64, from_s: usize, to_s: usize) -> f64 {
        let bytes: u64 = self.delivered[from_s * 10..to_s * 10].iter().sum();
        bytes as f64 / (rate as f64 * (to_s - from_s) as f64)
    }
    fn drops(&self, from_s: usize, to_s: usize) -> u64 {
        self.drops[from_s * 10..to_s * 10].iter().sum()
    }
    fn max_backlog(&self, from_s: usize, to_s: usize) -> u64 {
        self.backlog[from_s * 10..to_s * 10].iter().copied().max().unwrap_or(0)
    }
}

/// The link: `rate` bytes per second, a drop-tail queue of `queue` bytes, random `loss`, and
/// a round-trip propagation delay of `rtt(t)`.
struct Link {
    rate: u64,
    queue: u64,
    loss: f64,
    rtt: fn(Duration) -> Duration,
}

/// The simulated sender's own window (the controller under the ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// Grows by every byte acked and never backs off, alone.
    Unbounded,
    /// The same, under [`DeliveryCap::window`] as [`super::super::PathAdaptive`] applies it on
    /// a long path.
    Capped,
    /// Under [`DeliveryCap::window`] too, but its own window halves at every loss it notices
    /// (down to four packets): a controller that reads random loss as congestion, as quinn's
    /// BBR does once a lossy round has ended its startup (its recovery window fell to 4.8 KB
    /// and to 63 KB in the ramp of a traced 80 ms, 2%-loss pull).
    CappedHalving,
}

/// Runs a sender for `seconds` over `link` in steps of 100 µs. The sender's own window starts at
/// ten packets and grows by every byte acked ([`Sender`] says what else). It paces as quinn
/// does, at 1.25 windows per round trip (here the propagation delay, which paces faster than
/// quinn's smoothed RTT would), with bursts of up to ten packets. Its window starts at
/// `initial_packets`.
fn simulate(link: &Link, seconds: u64, sender: Sender, initial_packets: u64) -> Outcome {
    let step = Duration::from_micros(100);
    let steps = seconds * 10_000;
    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut cap = DeliveryCap::default();
    let mut own_window = initial_packets * PACKET;
    // In flight: (ack arrives at, packet number, sent at); lost: (noticed at, packet number).
    let mut flight: VecDeque<(Duration, u64, Duration)> = VecDeque::new();
    let mut lost: VecDeque<(Duration, u64)> = VecDeque::new();
    let (mut in_flight, mut next_pn, mut link_free_at) = (0u64, 0u64, Duration::ZERO);
    let mut tokens = 10.0 * PACKET as f64;
    let mut out = Outcome::default();
    for n in 0..steps {
        let now = step * n as u32;
        let interval = (n / 1000) as usize;
        if out.delivered.len() <= interval {
            out.delivered.push(0);
            out.drops.push(0);
            out.backlog.push(0);
        }
        // Acks due, then losses noticed (a round trip after the packet was sent).
        let mut largest = None;
        while flight.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, pn, sent) = flight.pop_front().expect("front");
            cap.on_ack(t0 + now, t0 + sent, PACKET, false);
            own_window += PACKET;
            in_flight -= PACKET;
            out.delivered[interval] += PACKET;
            largest = Some(pn);
        }
        while lost.front().is_some_and(|(due, _)| *due <= now) {
            lost.pop_front();
            in_flight -= PACKET;
            cap.on_loss(PACKET);
            if sender == Sender::CappedHalving {
                own_window = (own_window / 2).max(4 * PACKET);
            }
        }
        cap.on_end_acks(t0 + now, largest);
        let window = match sender {
            Sender::Unbounded => own_window,
            Sender::Capped | Sender::CappedHalving => {
                cap.window(own_window, 4 * PACKET, initial_packets * PACKET)
            }
        };
        // Send what the window and the pacer allow, into the bottleneck's queue.
        let rtt = (link.rtt)(now);
        tokens = (tokens + 1.25 * window as f64 * step.as_secs_f64() / rtt.as_secs_f64())
            .min(10.0 * PACKET as f64);
        while in_flight + PACKET <= window && tokens >= PACKET as f64 {
            tokens -= PACKET as f64;
            let pn = next_pn;
            next_pn += 1;
            cap.on_sent(t0 + now, pn);
            in_flight += PACKET;
            let backlog = link_free_at.saturating_sub(now).as_nanos() as u64 * link.rate / 1_000_000_000;
            if rng.random::<f64>() < link.loss || backlog + PACKET > link.queue {
                if backlog + PACKET > link.queue {
                    out.drops[interval] += 1;
                }
                lost.push_back((now + rtt, pn));
                continue;
            }
            let serialization = Duration::from_nanos(PACKET * 1_000_000_000 / link.rate);
            link_free_at = link_free_at.max(now) + serialization;
            let backlog = backlog + PACKET;
            out.backlog[interval] = out.backlog[interval].max(backlog);
            flight.push_back((link_free_at + rtt, pn, now));
        }
    }
    out
}

fn thirty_ms(_: Duration) -> Duration {
    ms(30)
}

/// 100 Mbit/s, 30 ms, a queue of one BDP (375 kB), 0.5 % random loss.
fn lossy_link() -> Link {
    Link { rate: 12_500_000, queue: 375_000, loss: 0.005, rtt: thirty_ms }
}

#[test]
fn without_the_ceiling_the_simulated_sender_overflows_the_queue() {
    let out = simulate(&lossy_link(), 6, Sender::Unbounded, 10);
    assert!(out.drops(2, 6) > 1000, "{:?}", out.drops);
}

#[test]
fn the_ceiling_keeps_the_link_busy_and_the_queue_short() {
    let link = lossy_link();
    let out = simulate(&link, 20, Sender::Capped, 10);
    let utilization = out.utilization(link.rate, 3, 20);
    assert!(utilization > 0.95, "utilization {utilization:.3}");
    assert_eq!(out.drops(3, 20), 0, "queue drops after startup: {:?}", out.drops);
    // Half a BDP of queue (1.5 BDP in flight), and a little more for a moment after each drain
    // (the ceiling returns from 0.75 to 1.5 BDP at once; the pacer spreads that over ~12 ms).
    let bdp = 375_000;
    let per_second: Vec<u64> = (3..20).map(|s| out.max_backlog(s, s + 1)).collect();
    let mut sorted = per_second.clone();
    sorted.sort_unstable();
    assert!(sorted[sorted.len() / 2] <= bdp * 55 / 100, "backlog per second {per_second:?}, BDP {bdp}");
    assert!(sorted[sorted.len() - 1] <= bdp * 7 / 10, "backlog per second {per_second:?}, BDP {bdp}");
    // Startup overshoots at most by the startup gain: no more than a queue's worth is dropped.
    assert!(out.drops(0, 3) * PACKET <= link.queue, "startup drops {}", out.drops(0, 3));
}

#[test]
fn the_startup_doubles_every_round_trip_without_overflowing_the_queue() {
    // From ten packets to the 375 kB BDP is five doublings: about 0.15 s at slow start's pace,
    // twice that when the window doubles only every other round trip (a ceiling of twice what
    // the last whole round delivered, which lags a round behind the window it measures).
    let link = lossy_link();
    let out = simulate(&link, 3, Sender::Capped, 10);
    let first = out.utilization(link.rate, 0, 1);
    let ramp: u64 = out.delivered[..3].iter().sum();
    assert!(
        ramp as f64 > 0.2 * link.rate as f64 * 0.3,
        "first 0.3 s: {:.3} of the link; per 100 ms {:?}",
        ramp as f64 / (link.rate as f64 * 0.3),
        out.delivered
    );
    assert!(first > 0.6, "first second's utilization {first:.3}");
    assert!(out.drops(0, 3) * PACKET <= link.queue / 10, "startup drops {:?}", out.drops);
}

fn doubles_at_five_seconds(t: Duration) -> Duration {
    if t < Duration::from_secs(5) { ms(30) } else { ms(60) }
}

#[test]
fn a_path_that_gets_longer_gets_its_window_back() {
    let link = Link { rtt: doubles_at_five_seconds, ..lossy_link() };
    let out = simulate(&link, 30, Sender::Capped, 10);
    // Once the 30 ms samples have left the window, the ceiling is sized for 60 ms.
    let after = out.utilization(link.rate, 5 + MIN_RTT_WINDOW.as_secs() as usize + 3, 30);
    assert!(after > 0.9, "utilization after the change {after:.3}");
}

#[test]
fn a_standing_queue_ends_the_startup_while_the_rate_still_grows() {
    let t0 = Instant::now();
    let mut cap = DeliveryCap::default();
    let mut pn = 0;
    let mut t = t0;
    // Round k: 10 << k packets, every one acked 30 ms after it was sent, then 40 ms (a third
    // more: a queue has formed) in round 3, while the rate still doubles.
    for round in 1..=3u64 {
        let rtt = if round < 3 { ms(30) } else { ms(40) };
        t += rtt;
        for _ in 0..(10u64 << round) {
            cap.on_sent(t - rtt, pn);
            cap.on_ack(t, t - rtt, PACKET, false);
            pn += 1;
        }
        cap.on_end_acks(t, Some(pn - 1));
        assert_eq!(cap.is_full(), round == 3, "round {round}");
    }
    let bdp = cap.bandwidth() as f64 * 0.030;
    assert_eq!(cap.ceiling(0), Some((STEADY_GAIN * bdp) as u64), "the minimum RTT stays 30 ms");
}

/// 100 Mbit/s, 80 ms, a queue of about one BDP (1 MB), 2 % random loss: the `wan80` profile.
fn wan80_link() -> Link {
    Link { rate: 12_500_000, queue: 1_000_000, loss: 0.02, rtt: |_| ms(80) }
}

#[test]
fn random_loss_does_not_end_the_startup_nor_shrink_the_window_below_a_bdp() {
    let link = wan80_link();
    let out = simulate(&link, 5, Sender::CappedHalving, 200);
    // From quinn's initial window (200 packets, 240 kB) to 1 MB in flight is two doublings; the
    // link is full within the first half second, and stays so although the sender's own window
    // halves at every loss.
    let ramp = out.utilization(link.rate, 0, 1);
    let after = out.utilization(link.rate, 1, 5);
    assert!(ramp > 0.5, "first second's utilization {ramp:.3}: {:?} drops {:?}", out.delivered, out.drops);
    assert!(after > 0.95, "utilization after the first second {after:.3}");
    assert!(out.drops(1, 5) * PACKET <= link.queue, "queue drops after startup: {:?}", out.drops);
}

/// Feeds `cap` one round of `packets` sent at `t` and acked `rtt` later, `lost` of them lost.
fn lossy_round(cap: &mut DeliveryCap, pn: &mut u64, t: &mut Instant, packets: u64, lost: u64, rtt: Duration) {
    let sent = *t;
    *t += rtt;
    for _ in 0..packets {
        cap.on_sent(sent, *pn);
        *pn += 1;
    }
    for _ in 0..packets - lost {
        cap.on_ack(*t, sent, PACKET, false);
    }
    cap.on_loss(lost * PACKET);
    cap.on_end_acks(*t, Some(*pn - 1));
}

#[test]
fn the_startup_goes_on_under_random_loss_and_ends_on_a_lossy_round() {
    let t0 = Instant::now();
    let (mut cap, mut pn, mut t) = (DeliveryCap::default(), 0, t0);
    // Doubling rounds with 2 % of their packets lost: still the startup.
    for round in 1..=6u64 {
        let packets = 10u64 << round;
        lossy_round(&mut cap, &mut pn, &mut t, packets, packets / 50, ms(80));
        assert!(!cap.is_full(), "round {round}");
    }
    let growing = cap.ceiling(0).expect("a ceiling");
    assert_eq!(growing, (STARTUP_GAIN * cap.bandwidth() as f64 * 0.080) as u64);
    // Then a round that doubled into a full queue: a fifth of it lost.
    let packets = 10u64 << 7;
    lossy_round(&mut cap, &mut pn, &mut t, packets, packets / 5, ms(80));
    assert!(cap.is_full());
    // A small round losing a tenth of its few packets is chance, not a full queue.
    let (mut small, mut pn, mut t) = (DeliveryCap::default(), 0, t0);
    lossy_round(&mut small, &mut pn, &mut t, 40, 4, ms(80));
    assert!(!small.is_full());
}

#[test]
fn the_window_is_the_ceiling_in_startup_and_at_least_a_bdp_after() {
    let t0 = Instant::now();
    let (mut cap, mut pn, mut t) = (DeliveryCap::default(), 0, t0);
    // Before any round that filled the window: the controller's, but not below the initial.
    assert_eq!(cap.window(4_800, 4_800, 240_000), 240_000);
    assert_eq!(cap.window(500_000, 4_800, 240_000), 500_000);
    for round in 1..=3u64 {
        lossy_round(&mut cap, &mut pn, &mut t, 100 << round, 2 << round, ms(80));
    }
    let bdp = cap.bandwidth() as f64 * 0.080;
    // Startup: twice what the path delivered, whatever a loss did to the controller's window.
    let startup = (STARTUP_GAIN * bdp) as u64;
    assert_eq!(cap.window(4_800, 4_800, 240_000), startup);
    assert_eq!(cap.window(u64::MAX, 4_800, 240_000), startup);
    for _ in 0..3 {
        lossy_round(&mut cap, &mut pn, &mut t, 100 << 3, 16, ms(80));
    }
    assert!(cap.is_full());
    let bdp = cap.bandwidth() as f64 * 0.080;
    // Then the controller's window, between FLOOR_GAIN and STEADY_GAIN BDPs.
    assert_eq!(cap.window(4_800, 4_800, 240_000), (FLOOR_GAIN * bdp) as u64);
    assert_eq!(cap.window(u64::MAX, 4_800, 240_000), (STEADY_GAIN * bdp) as u64);
    let between = (1.4 * bdp) as u64;
    assert_eq!(cap.window(between, 4_800, 240_000), between);
}
