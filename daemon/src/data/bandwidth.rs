//! The node's bandwidth limits (`[limits] serve-bwlimit` and its neighbours, read by
//! `crate::config::BandwidthLimits`), applied with `ferry_net::bandwidth::RateLimiter`:
//! - chunks served: one limiter per peer identity (its connections and streams together; the
//!   timetable of its department if one is named, else `serve-bwlimit-per-peer`) and one for
//!   the whole node; an answer waits for both before each chunk (`data::service::serve`);
//! - chunks pulled: one limiter shared by every pull the node makes itself (replication,
//!   subscriptions, scheduled downloads), handed to the transfer engine in `PullOptions`, in
//!   the class of the job that pulls ([`as_job`]: high before normal before low, each worse
//!   class keeping about a tenth while a better one waits).
//!
//! Who is interactive: an operator's certificate (`ferry pull` at a terminal); node
//! certificates replicating or subscribing are bulk. A bulk answer waits behind interactive
//! ones at the node-wide limiter (bulk keeps about a tenth of it), and in the serve budget.
//! A request may declare its job's class (`GetChunks.priority`): at the peer's own limiter and
//! in the budget's queue it orders that peer's answers; among all peers it may only lower the
//! role's class ([`bounded_by_role`]), never raise a node's answer to an operator's.
//! Without any limit configured nothing here is built and an answer asks nothing per chunk.
//!
//! Metrics (a collector read at scrape time, so a timetable's edge shows without traffic):
//! `ferry_bandwidth_limit_bytes_per_second{direction,scope}` (0 = unlimited) and
//! `ferry_bandwidth_delayed_bytes_total{direction}`.

use crate::config::BandwidthLimits;
use crate::data::service::Borrower;
use ferry_net::bandwidth::{Priority, Rate, RateLimiter, SystemClock, Timetable, WallClock};
use ferry_net::conn::NodeAddr;
use ferry_proto::{DeptId, JobPriority, Principal, Role};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A peer's limiter no answer has used for this long is forgotten (its debt with it).
const FORGET_IDLE_PEER: Duration = Duration::from_secs(60);

/// How urgently a peer's answers are wanted: operators at a terminal before nodes.
pub fn priority_of(peer: &Principal) -> Priority {
    match peer.role {
        Role::Operator => Priority::Interactive,
        _ => Priority::BULK,
    }
}

tokio::task_local! {
    /// The class of the node's own job whose pulls run in this task: a schedule's run or a
    /// subscription's pull sets it ([`as_job`]); `DataService::pull_options` reads it.
    static JOB_PRIORITY: JobPriority;
}

/// Runs `pull` as a job of class `priority`: every pull the node makes in it (through
/// `DataService::pull_options`) queues at the node's pull limiter in that class and declares it
/// to the serving node.
pub async fn as_job<F: std::future::Future>(priority: JobPriority, pull: F) -> F::Output {
    JOB_PRIORITY.scope(priority, pull).await
}

/// The class of the node's own pulls made now: the job's ([`as_job`]), else bulk `normal`
/// (an operator's `ferry replicate`, a hub's relay).
pub fn job_priority() -> Priority {
    Priority::Bulk(JOB_PRIORITY.try_with(|p| *p).unwrap_or_default())
}

/// An answer's class among every peer's answers: the role's `role` (see [`priority_of`]), or
/// the class the request declared when that is worse. A node may declare `low` (worse than its
/// bulk `normal`) but not `high`, which orders only its own answers; an operator's declared
/// class is bulk, worse than interactive. No declaration ever makes an answer interactive.
pub fn bounded_by_role(role: Priority, declared: Option<JobPriority>) -> Priority {
    match declared {
        Some(class) if Priority::Bulk(class).rank() > role.rank() => Priority::Bulk(class),
        _ => role,
    }
}

/// The limits of served chunks (see the module doc).
#[derive(Debug)]
pub struct ServeLimits {
    node: Option<Arc<RateLimiter>>,
    per_peer: Option<Timetable>,
    by_dept: BTreeMap<DeptId, Option<Timetable>>,
    clock: Arc<dyn WallClock>,
    peers: Mutex<HashMap<Borrower, PeerLimiter>>,
    /// Bytes delayed by peers' limiters that were forgotten since.
    forgotten_delayed: AtomicU64,
}

#[derive(Debug)]
struct PeerLimiter {
    limiter: Arc<RateLimiter>,
    used: Instant,
}

/// What one answer's chunks pass, chunk by chunk.
#[derive(Debug, Clone)]
pub struct AnswerPace {
    peer: Option<Arc<RateLimiter>>,
    node: Option<Arc<RateLimiter>>,
    /// The answer's class at the peer's limiter: among the peer's own answers.
    own_priority: Priority,
    /// Its class at the node's limiter: among every peer's, bounded by the role.
    priority: Priority,
}

impl AnswerPace {
    /// Waits until a chunk of `bytes` may go to the peer.
    pub async fn before_chunk(&self, bytes: u64) {
        if let Some(peer) = &self.peer {
            peer.acquire(bytes, self.own_priority).await;
        }
        if let Some(node) = &self.node {
            node.acquire(bytes, self.priority).await;
        }
    }
}

impl ServeLimits {
    /// The limits `config` sets, on the system clock; `None` when it sets none.
    pub fn new(config: &BandwidthLimits) -> Option<Self> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// The limits `config` sets, on `clock`; `None` when it sets none.
    pub fn with_clock(config: &BandwidthLimits, clock: Arc<dyn WallClock>) -> Option<Self> {
        if config.serves_unlimited() {
            return None;
        }
        let node = config.serve.clone().map(|t| Arc::new(RateLimiter::with_clock(t, clock.clone())));
        Some(Self {
            node,
            per_peer: config.serve_per_peer.clone(),
            by_dept: config.serve_by_dept.clone(),
            clock,
            peers: Mutex::new(HashMap::new()),
            forgotten_delayed: AtomicU64::new(0),
        })
    }

    /// What the chunks of an answer to `who` pass.
    pub fn pace(&self, who: &Borrower) -> Option<AnswerPace> {
        let timetable = match self.by_dept.get(who.dept()) {
            Some(of_dept) => of_dept.as_ref(),
            None => self.per_peer.as_ref(),
        };
        let peer = timetable.map(|t| self.peer_limiter(who, t));
        if peer.is_none() && self.node.is_none() {
            return None;
        }
        Some(AnswerPace {
            peer,
            node: self.node.clone(),
            own_priority: who.own_priority(),
            priority: who.priority(),
        })
    }

    fn peer_limiter(&self, who: &Borrower, timetable: &Timetable) -> Arc<RateLimiter> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = peers.get_mut(who) {
            known.used = now;
            return known.limiter.clone();
        }
        // Forget the idle ones (no answer holds them) before adding one.
        peers.retain(|_, p| {
            let keep = Arc::strong_count(&p.limiter) > 1 || now.duration_since(p.used) < FORGET_IDLE_PEER;
            if !keep {
                self.forgotten_delayed.fetch_add(p.limiter.delayed_bytes(), Ordering::Relaxed);
            }
            keep
        });
        let limiter = Arc::new(RateLimiter::with_clock(timetable.clone(), self.clock.clone()));
        peers.insert(who.clone(), PeerLimiter { limiter: limiter.clone(), used: now });
        limiter
    }

    /// Bytes the serve limiters delayed, all peers and the node's together.
    fn delayed_bytes(&self) -> u64 {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let peers: u64 = peers.values().map(|p| p.limiter.delayed_bytes()).sum();
        peers
            + self.forgotten_delayed.load(Ordering::Relaxed)
            + self.node.as_ref().map_or(0, |n| n.delayed_bytes())
    }

    /// The per-peer rate in effect now for a peer of no named department.
    fn per_peer_rate(&self) -> Rate {
        self.per_peer.as_ref().map_or(Rate::Unlimited, |t| t.rate_at(self.clock.now()))
    }
}

/// The limiter of the node's own pulls, `None` without `pull-bwlimit`.
pub fn pull_limiter(config: &BandwidthLimits) -> Option<Arc<RateLimiter>> {
    config.pull.clone().map(|t| Arc::new(RateLimiter::new(t)))
}

/// The limiters of the node's own pulls from each peer that `[limits.pull-bwlimit-by-peer]`
/// limits, by the peer's address and server name (what a pull's connector names).
pub fn pull_peer_limiters(
    config: &BandwidthLimits,
    peers: &BTreeMap<String, NodeAddr>,
) -> HashMap<String, Arc<RateLimiter>> {
    let limited = config.pull_by_peer.iter().filter_map(|(name, t)| Some((peers.get(name)?, t.clone()?)));
    limited.map(|(node, t)| (pull_peer_key(node), Arc::new(RateLimiter::new(t)))).collect()
}

/// How a peer's pull limiter is found: the address and the server name the node dials.
pub fn pull_peer_key(node: &NodeAddr) -> String {
    format!("{}/{}", node.addr, node.server_name)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    direction: &'static str,
    scope: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DelayedLabels {
    direction: &'static str,
}

/// The bandwidth metrics, read from the limiters at each scrape.
#[derive(Debug, Clone, Default)]
pub struct BandwidthMetrics {
    limiters: Arc<RwLock<Limiters>>,
}

#[derive(Debug, Default)]
struct Limiters {
    serve: Option<Arc<ServeLimits>>,
    pull: Option<Arc<RateLimiter>>,
}

impl BandwidthMetrics {
    /// Registers the collector.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// The limiters the metrics are read from.
    pub fn watch(&self, serve: Option<Arc<ServeLimits>>, pull: Option<Arc<RateLimiter>>) {
        let mut limiters = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        *limiters = Limiters { serve, pull };
    }
}

fn bytes_per_second(rate: Rate) -> i64 {
    rate.bytes_per_second().map_or(0, |r| i64::try_from(r).unwrap_or(i64::MAX))
}

impl Collector for BandwidthMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let limiters = self.limiters.read().unwrap_or_else(|p| p.into_inner());
        let serve = limiters.serve.as_deref();
        let limits = [
            (
                "serve",
                "node",
                serve.and_then(|s| s.node.as_ref()).map_or(Rate::Unlimited, |n| n.current_rate()),
            ),
            ("serve", "peer", serve.map_or(Rate::Unlimited, ServeLimits::per_peer_rate)),
            ("pull", "node", limiters.pull.as_ref().map_or(Rate::Unlimited, |p| p.current_rate())),
        ];
        let mut family = encoder.encode_descriptor(
            "ferry_bandwidth_limit_bytes_per_second",
            "Bandwidth limit in effect now, by direction and scope (node: all transfers together; peer: each peer identity of no named department); 0 = unlimited",
            None,
            MetricType::Gauge,
        )?;
        for (direction, scope, rate) in limits {
            let labels = LimitLabels { direction, scope };
            ConstGauge::new(bytes_per_second(rate)).encode(family.encode_family(&labels)?)?;
        }
        let delayed = [
            ("serve", serve.map_or(0, ServeLimits::delayed_bytes)),
            ("pull", limiters.pull.as_ref().map_or(0, |p| p.delayed_bytes())),
        ];
        let mut family = encoder.encode_descriptor(
            "ferry_bandwidth_delayed_bytes",
            "Chunk bytes that waited for a bandwidth limit, by direction",
            None,
            MetricType::Counter,
        )?;
        for (direction, bytes) in delayed {
            ConstCounter::new(bytes).encode(family.encode_family(&DelayedLabels { direction })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_class_may_lower_the_roles_but_never_raise_it() {
        let (op, node) = (Priority::Interactive, Priority::BULK);
        assert_eq!(bounded_by_role(op, None), Priority::Interactive);
        assert_eq!(bounded_by_role(node, None), Priority::BULK);
        for class in [JobPriority::High, JobPriority::Normal, JobPriority::Low] {
            assert_eq!(bounded_by_role(op, Some(class)), Priority::Bulk(class), "an operator's bulk job");
        }
        assert_eq!(bounded_by_role(node, Some(JobPriority::High)), Priority::BULK, "not above other nodes");
        assert_eq!(bounded_by_role(node, Some(JobPriority::Low)), Priority::Bulk(JobPriority::Low));
    }
}
