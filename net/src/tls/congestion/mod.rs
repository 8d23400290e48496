//! Congestion control chosen by the path: Cubic on short paths (a LAN, a machine room, loopback),
//! BBR on long ones (links between provinces).
//!
//! On a long path with losses that no queue caused (a lossy provincial link), a loss-based
//! controller reads each loss as congestion and collapses (TCP with Cubic got 8 Mbit/s on a
//! 1 Gbit/s, 30 ms emulated path with 0.5% random loss, `ferry-bench netem-selftest`). BBR sizes
//! its window from the measured bottleneck rate and holds most of the link. On a short path BBR
//! costs more datagrams and CPU per byte than Cubic's bursts (on loopback here: about 35% less
//! throughput), and losses there do mean congestion. Both controllers see every event; the
//! window in force is BBR's once the path's minimum RTT reaches [`LONG_PATH_RTT`], under the
//! ceiling of `delivery`: quinn's BBR alone keeps more in flight than a bottleneck buffer of
//! one BDP holds. The same measurement drives the startup and keeps BBR's window above a floor
//! after it: quinn's BBR reads every random loss as a reason to leave its startup and to shrink
//! its recovery window.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{BbrConfig, Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

mod delivery;
use delivery::DeliveryCap;

/// Paths with at least this minimum round-trip time use BBR's window.
pub const LONG_PATH_RTT: Duration = Duration::from_millis(5);

fn is_long_path(min_rtt: Duration) -> bool {
    min_rtt >= LONG_PATH_RTT
}

/// The default congestion control of every ferry endpoint (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct PathAdaptiveConfig {
    cubic: CubicConfig,
    bbr: BbrConfig,
}

impl PathAdaptiveConfig {
    /// Both controllers starting from `bytes` of window (quinn's default, 14,720 bytes, is less
    /// than one datagram when a connection starts at 65 KB datagrams).
    pub fn with_initial_window(bytes: u64) -> Self {
        let mut config = Self::default();
        config.cubic.initial_window(bytes);
        config.bbr.initial_window(bytes);
        config
    }
}

impl ControllerFactory for PathAdaptiveConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(PathAdaptive {
            cubic: Arc::new(self.cubic.clone()).build(now, current_mtu),
            bbr: Arc::new(self.bbr.clone()).build(now, current_mtu),
            long_path: false,
            cap: DeliveryCap::default(),
            mtu: current_mtu,
        })
    }
}

/// Cubic and BBR fed the same events; [`Controller::window`] is the one the path calls for.
struct PathAdaptive {
    cubic: Box<dyn Controller>,
    bbr: Box<dyn Controller>,
    long_path: bool,
    /// The ceiling on BBR's window, measured all along so that it is ready when the path
    /// turns out long.
    cap: DeliveryCap,
    mtu: u16,
}

/// The smallest ceiling, in datagrams (BBR's own minimum window is four).
const MIN_CEILING_DATAGRAMS: u64 = 4;

impl PathAdaptive {
    fn active(&self) -> &dyn Controller {
        if self.long_path { self.bbr.as_ref() } else { self.cubic.as_ref() }
    }
}

impl Controller for PathAdaptive {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.cap.on_sent(now, last_packet_number);
        self.cubic.on_sent(now, bytes, last_packet_number);
        self.bbr.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool, rtt: &RttEstimator) {
        self.long_path = is_long_path(rtt.min());
        self.cap.on_ack(now, sent, bytes, app_limited);
        self.cubic.on_ack(now, sent, bytes, app_limited, rtt);
        self.bbr.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        let round_ended = self.cap.on_end_acks(now, largest_packet_num_acked);
        self.cubic.on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
        self.bbr.on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
        if round_ended && self.long_path {
            // Per round on a long path, for diagnosis (`ferry_net::congestion=trace`).
            tracing::trace!(
                target: "ferry_net::congestion",
                bbr = self.bbr.window(),
                window = self.window(),
                in_flight,
                cap = ?self.cap,
                "round"
            );
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if is_persistent_congestion {
            self.cap.reset();
        }
        self.cap.on_loss(lost_bytes);
        self.cubic.on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        self.bbr.on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu;
        self.cubic.on_mtu_update(new_mtu);
        self.bbr.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        if !self.long_path {
            return self.cubic.window();
        }
        let min_window = MIN_CEILING_DATAGRAMS * u64::from(self.mtu);
        self.cap.window(self.bbr.window(), min_window, self.bbr.initial_window())
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.active().metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            cubic: self.cubic.clone_box(),
            bbr: self.bbr.clone_box(),
            long_path: self.long_path,
            cap: self.cap.clone(),
            mtu: self.mtu,
        })
    }

    fn initial_window(&self) -> u64 {
        self.cubic.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_cubic_and_switches_at_the_long_path_rtt() {
        let now = Instant::now();
        let controller = Arc::new(PathAdaptiveConfig::default()).build(now, 1200);
        let adaptive = controller.into_any().downcast::<PathAdaptive>().expect("type");
        assert!(!adaptive.long_path);
        assert_eq!(adaptive.window(), adaptive.cubic.window());
        assert!(!is_long_path(Duration::from_micros(300)));
        assert!(!is_long_path(Duration::from_millis(2)));
        assert!(is_long_path(Duration::from_millis(30)));
    }
}
