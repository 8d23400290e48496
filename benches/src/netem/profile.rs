//! What the emulated link does to packets: [`LinkProfile`] (rate, delay, jitter, loss,
//! reordering, queue) and the named profiles the scenarios run (`wan30`, `wan80`).
//!
//! Neighbours: [`super::impairment`] applies a profile to each packet; [`super::EmulatedLink`]
//! starts a link with one.

use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail, ensure};

use super::{MTU, ms};

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

    pub(super) fn validate(&self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_queue_is_bdp_or_100_packets() {
        assert_eq!(LinkProfile::wan30().queue_limit(), 3_750_000);
        assert_eq!(LinkProfile::wan80().queue_limit(), 1_000_000);
        assert_eq!(LinkProfile::clean("test", 10_000_000, Duration::from_millis(10)).queue_limit(), 150_000);
    }
}
