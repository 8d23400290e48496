//! The scheduler's metrics, registered in the node's registry (`crate::telemetry`). The
//! `schedule` label is a job's name: bounded by the jobs an operator defines, never a path or a
//! peer. It is not called `job`: Prometheus sets `job` on every series from its scrape config
//! and would rename ours to `exported_job`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct JobLabel {
    pub schedule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct JobOutcomeLabel {
    pub schedule: String,
    pub outcome: &'static str,
}

/// Every metric of scheduled downloads (a clone shares the same series).
#[derive(Debug, Clone)]
pub struct ScheduleMetrics {
    /// `ferry_schedule_runs_total{schedule,outcome}`.
    pub runs: Family<JobOutcomeLabel, Counter>,
    /// `ferry_schedule_last_success_timestamp_seconds{schedule}`.
    pub last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    /// `ferry_schedule_next_run_timestamp_seconds{schedule}`.
    pub next_run: Family<JobLabel, Gauge<f64, AtomicU64>>,
    /// `ferry_schedule_missed_runs_total{schedule}`: scheduled times that passed with no run
    /// starting for them (the node was down, or the previous run still ran).
    pub missed: Family<JobLabel, Counter>,
    /// `ferry_schedule_run_duration_seconds{schedule}`.
    pub duration: Family<JobLabel, Histogram>,
    /// `ferry_schedule_fetched_bytes_total{schedule}`.
    pub fetched: Family<JobLabel, Counter>,
}

impl Default for ScheduleMetrics {
    fn default() -> Self {
        Self {
            runs: Family::default(),
            last_success: Family::default(),
            next_run: Family::default(),
            missed: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.05, 2.0, 18))),
            fetched: Family::default(),
        }
    }
}

impl ScheduleMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_schedule_runs",
            "Finished scheduled download runs, by job and outcome",
            self.runs.clone(),
        );
        registry.register_with_unit(
            "ferry_schedule_last_success_timestamp",
            "Unix time at which the job's last successful run ended",
            Unit::Seconds,
            self.last_success.clone(),
        );
        registry.register_with_unit(
            "ferry_schedule_next_run_timestamp",
            "Unix time of the job's next scheduled run (jitter not included)",
            Unit::Seconds,
            self.next_run.clone(),
        );
        registry.register(
            "ferry_schedule_missed_runs",
            "Scheduled times that passed without a run starting for them (node down, or the previous run still running)",
            self.missed.clone(),
        );
        registry.register_with_unit(
            "ferry_schedule_run_duration",
            "Duration of finished scheduled download runs, retries included",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register_with_unit(
            "ferry_schedule_fetched",
            "Bytes fetched from peers by scheduled download runs",
            Unit::Bytes,
            self.fetched.clone(),
        );
    }

    pub fn job(job: &str) -> JobLabel {
        JobLabel { schedule: job.to_owned() }
    }
}
