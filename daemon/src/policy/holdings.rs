//! The fleet view's two ends in a node: a province tells the ministry what it holds, and the
//! ministry exports how far behind every province is.
//!
//! - A province node ([`report_holdings`]) looks at its store every second and sends a
//!   `report-holdings` control call (the latest version of each dataset it stores) as soon as
//!   that changed (a commit: a publish, a replication, a subscription's pull) and otherwise once
//!   every [`REPORT_EVERY`], so the ministry can tell a quiet province from a silent one. While
//!   the ministry is unreachable the report is kept and retried with backoff (1 s doubling to
//!   [`REPORT_EVERY`]); what is sent is always the store as it is then.
//! - The ministry ([`export_fleet`]) reads the control plane's fleet view every
//!   [`EXPORT_EVERY`] into `ferry_fleet_versions_behind{dept,dataset}` (the worst node of the
//!   department) and `ferry_fleet_report_age_seconds{dept}` (its oldest report). Label values
//!   are catalog datasets and departments that reported or hold grants, at most
//!   [`MAX_SERIES`] series; series that leave the view are removed.
//!
//! Neighbours: `ferry_control::fleet` records and reads the reports; [`super::uses`] sends the
//! control call; [`crate::node`] starts both loops; [`crate::telemetry`] registers the metrics.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_client::conn::Connector;
use ferry_control::api::ControlRequest;
use ferry_control::fleet::{FleetView, HoldingReport};
use ferry_control::plane::ControlPlane;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::data::store::Store;

/// A province reports at least this often, and sends a changed holding at once.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// How often a province looks whether its holdings changed.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How often the ministry refreshes the fleet metrics.
pub const EXPORT_EVERY: Duration = Duration::from_secs(10);

/// Most series the fleet metrics carry (provinces x datasets); the rest are left out, logged.
pub const MAX_SERIES: usize = 4_096;

/// A department and a dataset of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeptDatasetLabel {
    pub dept: String,
    pub dataset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeptLabel {
    pub dept: String,
}

/// The ministry's fleet metrics (see the module doc).
#[derive(Debug, Default)]
pub struct FleetMetrics {
    pub versions_behind: Family<DeptDatasetLabel, Gauge>,
    pub report_age: Family<DeptLabel, Gauge>,
    /// The label sets set at the last refresh, to remove those that left the view.
    shown: Mutex<(HashSet<DeptDatasetLabel>, HashSet<DeptLabel>)>,
}

impl FleetMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_fleet_versions_behind",
            "At the ministry: publications of a dataset newer than what the department's most-behind node \
             last reported holding",
            self.versions_behind.clone(),
        );
        registry.register_with_unit(
            "ferry_fleet_report_age",
            "At the ministry: time since the department's node that reported least recently last reported \
             its holdings (a province that stopped reporting grows here)",
            Unit::Seconds,
            self.report_age.clone(),
        );
    }

    /// Shows `view`: sets its series, removes those no longer in it.
    pub fn show(&self, view: &FleetView) {
        let (behind, ages) = view.by_department();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let mut now_behind = HashSet::new();
        for ((dept, dataset), n) in behind.iter().take(MAX_SERIES) {
            let label = DeptDatasetLabel { dept: dept.to_string(), dataset: dataset.to_string() };
            self.versions_behind.get_or_create(&label).set(gauge(*n));
            now_behind.insert(label);
        }
        let mut now_ages = HashSet::new();
        for (dept, age) in ages.iter().take(MAX_SERIES) {
            let label = DeptLabel { dept: dept.to_string() };
            self.report_age.get_or_create(&label).set(gauge(*age));
            now_ages.insert(label);
        }
        if behind.len() > MAX_SERIES || ages.len() > MAX_SERIES {
            tracing::warn!(
                pairs = behind.len(),
                departments = ages.len(),
                "the fleet has more than {MAX_SERIES} series; the metrics show the first, `ferry status --fleet` all"
            );
        }
        for gone in shown.0.difference(&now_behind) {
            self.versions_behind.remove(gone);
        }
        for gone in shown.1.difference(&now_ages) {
            self.report_age.remove(gone);
        }
        *shown = (now_behind, now_ages);
    }
}

/// What `store` holds now, as a report: the latest version of each dataset.
pub fn holdings(store: &Store) -> Vec<HoldingReport> {
    let mut held: Vec<_> = store
        .list()
        .into_iter()
        .filter_map(|d| Some(HoldingReport { dataset: d.id, version: d.latest? }))
        .collect();
    held.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    held
}

/// When a province sends its next report (see the module doc).
#[derive(Debug)]
struct Pace {
    /// The holdings the ministry last accepted.
    sent: Option<Vec<HoldingReport>>,
    /// The next report regardless of change (the heartbeat, or the retry after a failure).
    due: Instant,
    /// The wait after the next failure.
    backoff: Duration,
    failing: bool,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Self { sent: None, due: now, backoff: LOOK_EVERY, failing: false }
    }

    /// Whether to send `held` at `now`: a change while the ministry answers, or the time is due.
    fn should_send(&self, held: &[HoldingReport], now: Instant) -> bool {
        let changed = self.sent.as_deref() != Some(held);
        (changed && !self.failing) || now >= self.due
    }

    fn sent(&mut self, held: Vec<HoldingReport>, now: Instant) {
        *self = Self { sent: Some(held), due: now + REPORT_EVERY, backoff: LOOK_EVERY, failing: false };
    }

    fn failed(&mut self, now: Instant) {
        self.failing = true;
        self.due = now + self.backoff;
        self.backoff = (self.backoff * 2).min(REPORT_EVERY);
    }
}

/// A province's reporter: sends its holdings to the ministry (see the module doc) until
/// `draining`.
pub async fn report_holdings(
    connector: Connector,
    service: Arc<crate::data::service::DataService>,
    mut draining: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(LOOK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = Pace::new(Instant::now());
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            _ = ticks.tick() => {}
        }
        let held = holdings(service.store());
        if !pace.should_send(&held, Instant::now()) {
            continue;
        }
        let request = ControlRequest::ReportHoldings { holdings: held.clone() };
        match super::uses::send(&connector, &request).await {
            Ok(_) => pace.sent(held, Instant::now()),
            Err(e) => {
                if !pace.failing {
                    tracing::warn!(error = %e, "cannot report holdings to the ministry; retrying");
                }
                pace.failed(Instant::now());
            }
        }
    }
}

/// The ministry's exporter: refreshes the fleet metrics every [`EXPORT_EVERY`] until `draining`.
pub async fn export_fleet(
    plane: Arc<ControlPlane>,
    metrics: Arc<crate::telemetry::Metrics>,
    mut draining: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(EXPORT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            _ = ticks.tick() => {}
        }
        match plane.fleet(time::OffsetDateTime::now_utc()).await {
            Ok(view) => metrics.fleet.show(&view),
            Err(e) => tracing::warn!(error = %e, "cannot read the fleet view for the metrics"),
        }
    }
}

/// Starts what the node's role asks: at the ministry the exporter, at a province following
/// the ministry the reporter.
pub fn start(
    governance: &super::Governance,
    service: &Arc<crate::data::service::DataService>,
    metrics: &Arc<crate::telemetry::Metrics>,
    draining: watch::Receiver<bool>,
) {
    if let Some(control) = &governance.control {
        tokio::spawn(export_fleet(control.plane().clone(), metrics.clone(), draining));
    } else if let Some(connector) = governance.ministry() {
        tokio::spawn(report_holdings(connector.clone(), service.clone(), draining));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_control::fleet::{FleetNode, FleetRow};
    use ferry_proto::{DatasetId, DeptId, VersionNo};

    fn held(version: u64) -> Vec<HoldingReport> {
        vec![HoldingReport {
            dataset: DatasetId::new("vehicles").unwrap(),
            version: VersionNo::new(version).unwrap(),
        }]
    }

    #[test]
    fn a_change_goes_at_once_a_quiet_store_once_a_minute_a_failure_backs_off() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        assert!(pace.should_send(&held(1), t0), "the first report goes at start");
        pace.sent(held(1), t0);
        assert!(!pace.should_send(&held(1), t0 + Duration::from_secs(59)));
        assert!(pace.should_send(&held(2), t0 + Duration::from_secs(1)), "a commit is reported at once");
        assert!(pace.should_send(&held(1), t0 + REPORT_EVERY), "the heartbeat");
        pace.failed(t0);
        assert!(!pace.should_send(&held(2), t0), "no retry before the backoff");
        assert!(pace.should_send(&held(2), t0 + LOOK_EVERY));
        pace.failed(t0);
        pace.failed(t0);
        assert_eq!(pace.due, t0 + 4 * LOOK_EVERY);
        pace.sent(held(2), t0);
        assert!(!pace.failing);
        assert!(pace.should_send(&held(3), t0), "reachable again: changes go at once");
    }

    #[test]
    fn metrics_remove_series_that_left_the_view() {
        let metrics = FleetMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let row = |dept: &str, behind| FleetRow {
            dept: DeptId::new(dept).unwrap(),
            node: Some(format!("{dept}-node")),
            dataset: DatasetId::new("vehicles").unwrap(),
            held: Some(1),
            latest: Some(1 + behind),
            versions_behind: behind,
            seconds_behind: 0,
            report_age_s: Some(3),
            stale: false,
        };
        let node = |dept: &str| FleetNode {
            dept: DeptId::new(dept).unwrap(),
            node: format!("{dept}-node"),
            report_age_s: 3,
            stale: false,
        };
        metrics.show(&FleetView {
            at: 0,
            rows: vec![row("gd", 2), row("zj", 0)],
            nodes: vec![node("gd"), node("zj")],
        });
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"ferry_fleet_versions_behind{dept="gd",dataset="vehicles"} 2"#), "{text}");
        assert!(text.contains(r#"ferry_fleet_report_age_seconds{dept="zj"} 3"#), "{text}");
        metrics.show(&FleetView { at: 0, rows: vec![row("gd", 0)], nodes: vec![node("gd")] });
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(r#"dept="zj""#), "{text}");
        assert!(text.contains(r#"ferry_fleet_versions_behind{dept="gd",dataset="vehicles"} 0"#), "{text}");
    }
}
