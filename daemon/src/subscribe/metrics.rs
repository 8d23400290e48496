//! The subscriptions' metrics, registered with the node's others (`crate::telemetry`).
//!
//! At a serving node, per dataset and subscriber (the peer's certificate name) while its stream
//! is open: `ferry_subscriber_lag_versions`, `ferry_subscriber_behind_seconds`; a subscriber's
//! series is removed when its stream ends, so the label set stays that of the open streams. At a
//! subscribing node, per dataset and source peer (both from the node's own config):
//! `ferry_subscription_version_lag`, `ferry_subscription_seconds_behind`, and
//! `ferry_subscription_pulls_total{dataset,outcome}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A subscriber of this node's dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SubscriberLabel {
    pub dataset: String,
    pub subscriber: String,
}

/// A subscription of this node to a peer's dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabel {
    pub dataset: String,
    pub source: String,
}

/// How a subscription's pull ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PullOutcomeLabel {
    pub dataset: String,
    pub outcome: &'static str,
}

/// Every subscription metric of a node (see the module doc).
#[derive(Debug, Default)]
pub struct SubscriptionMetrics {
    pub subscriber_lag: Family<SubscriberLabel, Gauge>,
    pub subscriber_behind: Family<SubscriberLabel, Gauge<f64, AtomicU64>>,
    pub version_lag: Family<SourceLabel, Gauge>,
    pub seconds_behind: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    pub pulls: Family<PullOutcomeLabel, Counter>,
}

impl SubscriptionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_subscriber_lag_versions",
            "Versions a subscriber with an open stream lacks of this node's latest",
            self.subscriber_lag.clone(),
        );
        registry.register(
            "ferry_subscriber_behind_seconds",
            "Seconds since the first version a subscriber lacks was committed here (0: up to date)",
            self.subscriber_behind.clone(),
        );
        registry.register(
            "ferry_subscription_version_lag",
            "Versions this node lacks of what its source announced",
            self.version_lag.clone(),
        );
        registry.register(
            "ferry_subscription_seconds_behind",
            "Seconds since the source committed the first version this node lacks (0: up to date)",
            self.seconds_behind.clone(),
        );
        registry.register(
            "ferry_subscription_pulls",
            "Pulls made for announced versions, by outcome",
            self.pulls.clone(),
        );
    }

    /// Records what a subscriber holds.
    pub fn subscriber(&self, label: &SubscriberLabel, versions: u64, seconds: f64) {
        self.subscriber_lag.get_or_create(label).set(i64::try_from(versions).unwrap_or(i64::MAX));
        self.subscriber_behind.get_or_create(label).set(seconds);
    }

    /// A subscriber's stream ended: its series go.
    pub fn subscriber_gone(&self, label: &SubscriberLabel) {
        self.subscriber_lag.remove(label);
        self.subscriber_behind.remove(label);
    }

    /// Records how far this node's subscription is behind its source.
    pub fn subscription(&self, label: &SourceLabel, versions: u64, seconds: f64) {
        self.version_lag.get_or_create(label).set(i64::try_from(versions).unwrap_or(i64::MAX));
        self.seconds_behind.get_or_create(label).set(seconds);
    }

    /// A subscription was removed: its series go.
    pub fn subscription_gone(&self, label: &SourceLabel) {
        self.version_lag.remove(label);
        self.seconds_behind.remove(label);
    }
}
