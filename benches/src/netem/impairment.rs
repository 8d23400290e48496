//! The impairment pipeline of one direction, pure: loss, the bottleneck, propagation with
//! jitter, reordering. Times are ns on the relay thread's clock.
//!
//! Neighbours: [`super::relay`] runs it on every packet it reads; [`super::profile`] says what
//! it does.

use std::cmp::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{LinkProfile, duration_ns};

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Lost,
    QueueFull,
    Deliver { release: u64, reordered: bool },
}

/// The state of one direction: loss, bottleneck, propagation, reordering.
#[derive(Debug)]
pub(super) struct Impairment {
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
    pub(super) fn new(profile: &LinkProfile, stream: u64) -> Self {
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
    pub(super) fn admit(&mut self, len: usize, now: u64) -> Verdict {
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

/// A packet waiting for its release time; ordered so that [`BinaryHeap`](std::collections::BinaryHeap) pops the earliest
/// (then the first admitted).
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) release: u64,
    pub(super) seq: u64,
    pub(super) len: usize,
    pub(super) buf: Vec<u8>,
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

#[cfg(test)]
mod tests {
    use std::collections::BinaryHeap;
    use std::time::Duration;

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
}
