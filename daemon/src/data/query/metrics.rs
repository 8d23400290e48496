//! The online query service's metrics: queries by outcome, rows returned, how long each took,
//! and what pruning saved (row groups skipped by statistics, by bloom filter; row groups and
//! bytes read).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PrunedLabel {
    pub by: &'static str,
}

#[derive(Debug)]
pub struct QueryMetrics {
    /// By outcome: `ok`, `truncated`, `bad_request`, `busy`, `timeout`, `not_found`, `failed`.
    pub queries: Family<OutcomeLabel, Counter>,
    pub rows: Counter,
    pub seconds: Histogram,
    /// Row groups decoded (after pruning).
    pub row_groups_read: Counter,
    /// Row groups skipped, by what ruled them out (`statistics`, `bloom`).
    pub row_groups_pruned: Family<PrunedLabel, Counter>,
    /// Bytes read from the store (cache misses).
    pub read_bytes: Counter,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        Self {
            queries: Family::default(),
            rows: Counter::default(),
            seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            row_groups_read: Counter::default(),
            row_groups_pruned: Family::default(),
            read_bytes: Counter::default(),
        }
    }
}

impl QueryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("ferry_query_queries", "Online queries answered, by outcome", self.queries.clone());
        registry.register("ferry_query_rows", "Rows returned by online queries", self.rows.clone());
        registry.register_with_unit(
            "ferry_query",
            "Time from an online query's request to its last frame",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register(
            "ferry_query_row_groups_read",
            "Row groups online queries decoded after pruning",
            self.row_groups_read.clone(),
        );
        registry.register(
            "ferry_query_row_groups_pruned",
            "Row groups online queries skipped, by what ruled them out (statistics, bloom)",
            self.row_groups_pruned.clone(),
        );
        registry.register_with_unit(
            "ferry_query_read",
            "Bytes online queries read from the store (verified chunks not in the cache)",
            Unit::Bytes,
            self.read_bytes.clone(),
        );
    }

    pub fn outcome(&self, outcome: &'static str) {
        self.queries.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
