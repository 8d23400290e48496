//! The fleet view: what every province node holds of the catalog's datasets and how far behind
//! the latest publication it is, for the ministry's operators (`ferry status --fleet`) and its
//! metrics (`ferry_fleet_*`).
//!
//! A province node reports its holdings (`report-holdings`: the latest version of each dataset
//! it stores) on each commit and at least once a minute; the report replaces the node's rows
//! (tables `fleet_nodes`, `fleet_holdings`, migration 0400). Only a province node's certificate
//! reports, and only for itself (department and node name come from its certificate); datasets
//! unknown to the catalog are ignored and counted. The latest version of a dataset is the
//! newest publication the control plane recorded (`catalog_publications`); a node is behind by
//! the publications newer than what it holds, and by the seconds since the oldest of those was
//! published. Departments holding an active download or subscription grant for a dataset they
//! never reported appear too, holding nothing. A report is a fact, not a decision: it is not
//! audited, as uses are not.
//!
//! Neighbours: [`crate::plane`] dispatches the calls here; the daemon's
//! `policy::holdings` sends the reports and exports the metrics; [`crate::roles`] says who may.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_proto::{DatasetId, DeptId, Principal, VersionNo};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use crate::api::{ApiCode, ApiError, ControlRequest};
use crate::plane::{ControlPlane, store_error};
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, unix};

/// Most datasets one holdings report may name.
pub const MAX_HOLDINGS: usize = 10_000;

/// A node whose last report is older than this many seconds is shown stale (it reports at least
/// once a minute).
pub const STALE_AFTER_S: u64 = 300;

/// One dataset a node holds: its latest committed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HoldingReport {
    pub dataset: DatasetId,
    pub version: VersionNo,
}

/// What a holdings report changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HoldingsRecorded {
    /// Holdings stored for the node.
    pub holdings: usize,
    /// Holdings of datasets the catalog does not know, not stored.
    pub ignored: usize,
}

/// One row of the fleet view: a department's node and a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FleetRow {
    pub dept: DeptId,
    /// The reporting node; `None`: the department holds a grant but no node reported the dataset.
    pub node: Option<String>,
    pub dataset: DatasetId,
    /// The version held as of the node's last report (`None`: none).
    pub held: Option<u64>,
    /// The newest publication the control plane recorded (`None`: never published).
    pub latest: Option<u64>,
    /// Publications newer than the version held.
    pub versions_behind: u64,
    /// Seconds since the oldest publication newer than the version held (0 when up to date).
    pub seconds_behind: u64,
    /// Seconds since the node's last report (`None`: it never reported).
    pub report_age_s: Option<u64>,
    /// The node's last report is older than [`STALE_AFTER_S`], or it never reported.
    pub stale: bool,
}

/// A node and its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FleetNode {
    pub dept: DeptId,
    pub node: String,
    pub report_age_s: u64,
    pub stale: bool,
}

/// The answer to `fleet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FleetView {
    /// When the view was computed, unix seconds.
    pub at: i64,
    pub rows: Vec<FleetRow>,
    pub nodes: Vec<FleetNode>,
}

impl FleetView {
    /// The worst row per (department, dataset) and the oldest report per department: what the
    /// ministry's metrics show (one series per pair, however many nodes a department runs).
    pub fn by_department(&self) -> (BTreeMap<(DeptId, DatasetId), u64>, BTreeMap<DeptId, u64>) {
        let mut behind = BTreeMap::new();
        for row in &self.rows {
            let worst = behind.entry((row.dept.clone(), row.dataset.clone())).or_insert(0);
            *worst = row.versions_behind.max(*worst);
        }
        let mut ages = BTreeMap::new();
        for node in &self.nodes {
            let oldest = ages.entry(node.dept.clone()).or_insert(0);
            *oldest = node.report_age_s.max(*oldest);
        }
        (behind, ages)
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("fleet row: {what}"))
}

fn sql_version(version: VersionNo) -> Result<i64, StoreError> {
    i64::try_from(version.get()).map_err(|_| StoreError::Invalid(format!("version {version:?} is too large")))
}

async fn known_datasets(conn: &mut AnyConnection) -> Result<HashSet<String>, StoreError> {
    let rows = sqlx::query("SELECT dataset FROM catalog_datasets").fetch_all(conn).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
}

/// The node's current rows: dataset → (version, held since).
async fn current(
    conn: &mut AnyConnection,
    dept: &str,
    node: &str,
) -> Result<HashMap<String, (i64, i64)>, StoreError> {
    let rows =
        sqlx::query("SELECT dataset, version, held_since FROM fleet_holdings WHERE dept = $1 AND node = $2")
            .bind(dept.to_owned())
            .bind(node.to_owned())
            .fetch_all(conn)
            .await?;
    rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, (r.try_get(1)?, r.try_get(2)?)))).collect()
}

fn age(now: i64, then: i64) -> u64 {
    u64::try_from(now.saturating_sub(then)).unwrap_or(0)
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(corrupt)
}

impl ControlStore {
    /// Replaces what `caller`'s node holds with `holdings` (see the module doc).
    pub async fn record_holdings(
        &self,
        caller: &Principal,
        holdings: &[HoldingReport],
        now: OffsetDateTime,
    ) -> Result<HoldingsRecorded, StoreError> {
        self.roles.authorize(caller, Action::ReportHoldings, None)?;
        if holdings.len() > MAX_HOLDINGS {
            return Err(StoreError::Invalid(format!(
                "a holdings report names at most {MAX_HOLDINGS} datasets; this one names {}",
                holdings.len()
            )));
        }
        let (dept, node, at) = (caller.dept.as_str(), caller.name.as_str(), unix(now));
        let mut latest: BTreeMap<&str, VersionNo> = BTreeMap::new();
        for held in holdings {
            let version = latest.entry(held.dataset.as_str()).or_insert(held.version);
            *version = held.version.max(*version);
        }
        let mut tx = self.begin_write().await?;
        let known = known_datasets(&mut tx).await?;
        let before = current(&mut tx, dept, node).await?;
        sqlx::query("DELETE FROM fleet_holdings WHERE dept = $1 AND node = $2")
            .bind(dept.to_owned())
            .bind(node.to_owned())
            .execute(&mut *tx)
            .await?;
        let mut recorded = HoldingsRecorded::default();
        for (dataset, version) in latest {
            if !known.contains(dataset) {
                recorded.ignored += 1;
                continue;
            }
            let version = sql_version(version)?;
            let since = match before.get(dataset) {
                Some((held, since)) if *held == version => *since,
                _ => at,
            };
            sqlx::query(
                "INSERT INTO fleet_holdings (dept, node, dataset, version, held_since) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(dept.to_owned())
            .bind(node.to_owned())
            .bind(dataset.to_owned())
            .bind(version)
            .bind(since)
            .execute(&mut *tx)
            .await?;
            recorded.holdings += 1;
        }
        sqlx::query(
            "INSERT INTO fleet_nodes (dept, node, reported_at) VALUES ($1, $2, $3) \
             ON CONFLICT (dept, node) DO UPDATE SET reported_at = excluded.reported_at",
        )
        .bind(dept.to_owned())
        .bind(node.to_owned())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// The fleet view at `now`, for an operator of the ministry (`ministry`) or of technical
    /// support, or the ministry's node.
    pub async fn fleet(
        &self,
        caller: &Principal,
        ministry: &DeptId,
        now: OffsetDateTime,
    ) -> Result<FleetView, StoreError> {
        self.roles.authorize(caller, Action::ReadFleet, Some(ministry))?;
        let at = unix(now);
        let mut conn = self.pool().acquire().await?;
        let nodes = fleet_nodes(&mut conn, at).await?;
        let mut rows = held_rows(&mut conn, at).await?;
        rows.extend(granted_not_held(&mut conn, at).await?);
        rows.sort_by(|a, b| (&a.dept, &a.dataset, &a.node).cmp(&(&b.dept, &b.dataset, &b.node)));
        Ok(FleetView { at, rows, nodes })
    }
}

async fn fleet_nodes(conn: &mut AnyConnection, at: i64) -> Result<Vec<FleetNode>, StoreError> {
    let rows = sqlx::query("SELECT dept, node, reported_at FROM fleet_nodes ORDER BY dept, node")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            let report_age_s = age(at, r.try_get(2)?);
            Ok(FleetNode {
                dept: DeptId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                node: r.try_get(1)?,
                report_age_s,
                stale: report_age_s > STALE_AFTER_S,
            })
        })
        .collect()
}

async fn held_rows(conn: &mut AnyConnection, at: i64) -> Result<Vec<FleetRow>, StoreError> {
    // Publications after the held version: how many, the oldest one's time; and the newest.
    let rows = sqlx::query(
        "SELECT h.dept, h.node, h.dataset, h.version, n.reported_at, \
         (SELECT COUNT(*) FROM catalog_publications p WHERE p.dataset = h.dataset AND p.version > h.version), \
         (SELECT MIN(p.published_at) FROM catalog_publications p WHERE p.dataset = h.dataset AND p.version > h.version), \
         (SELECT MAX(p.version) FROM catalog_publications p WHERE p.dataset = h.dataset) \
         FROM fleet_holdings h JOIN fleet_nodes n ON n.dept = h.dept AND n.node = h.node",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let report_age_s = age(at, r.try_get(4)?);
            let versions_behind = count(r.try_get(5)?)?;
            let oldest_missing: Option<i64> = r.try_get(6)?;
            Ok(FleetRow {
                dept: DeptId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                node: Some(r.try_get(1)?),
                dataset: DatasetId::new(r.try_get::<String, _>(2)?).map_err(corrupt)?,
                held: Some(count(r.try_get(3)?)?),
                latest: r.try_get::<Option<i64>, _>(7)?.map(count).transpose()?,
                versions_behind,
                seconds_behind: oldest_missing.map_or(0, |t| age(at, t)),
                report_age_s: Some(report_age_s),
                stale: report_age_s > STALE_AFTER_S,
            })
        })
        .collect()
}

/// Departments with an active download or subscription grant for a dataset none of their nodes
/// reported holding.
async fn granted_not_held(conn: &mut AnyConnection, at: i64) -> Result<Vec<FleetRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT DISTINCT g.dept, g.dataset FROM grants g WHERE g.state = 'active' \
         AND ((',' || g.methods || ',') LIKE '%,download,%' OR (',' || g.methods || ',') LIKE '%,subscription,%') \
         AND NOT EXISTS (SELECT 1 FROM fleet_holdings h WHERE h.dept = g.dept AND h.dataset = g.dataset)",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let dataset: String = r.try_get(1)?;
        let published = sqlx::query(
            "SELECT COUNT(*), MIN(published_at), MAX(version) FROM catalog_publications WHERE dataset = $1",
        )
        .bind(dataset.clone())
        .fetch_one(&mut *conn)
        .await?;
        let oldest: Option<i64> = published.try_get(1)?;
        out.push(FleetRow {
            dept: DeptId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
            node: None,
            dataset: DatasetId::new(dataset).map_err(corrupt)?,
            held: None,
            latest: published.try_get::<Option<i64>, _>(2)?.map(count).transpose()?,
            versions_behind: count(published.try_get(0)?)?,
            seconds_behind: oldest.map_or(0, |t| age(at, t)),
            report_age_s: None,
            stale: true,
        });
    }
    Ok(out)
}

/// Answers `report-holdings` and `fleet` (the plane dispatches only these here).
pub(crate) async fn call(
    plane: &ControlPlane,
    caller: &Principal,
    request: ControlRequest,
    now: OffsetDateTime,
) -> Result<serde_json::Value, ApiError> {
    let value = match request {
        ControlRequest::ReportHoldings { holdings } => serde_json::to_value(
            plane.store().record_holdings(caller, &holdings, now).await.map_err(store_error)?,
        ),
        ControlRequest::Fleet {} => serde_json::to_value(
            plane.store().fleet(caller, &plane.platform().dept, now).await.map_err(store_error)?,
        ),
        other => return Err(ApiError::new(ApiCode::Internal, format!("{} is not a fleet call", other.op()))),
    };
    value.map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))
}

impl ControlPlane {
    /// The fleet view at `now`, as the ministry's node (for its metrics).
    pub async fn fleet(&self, now: OffsetDateTime) -> Result<FleetView, ApiError> {
        self.store().fleet(self.platform(), &self.platform().dept, now).await.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dept: &str, node: &str, behind: u64) -> FleetRow {
        FleetRow {
            dept: DeptId::new(dept).unwrap(),
            node: Some(node.into()),
            dataset: DatasetId::new("vehicles").unwrap(),
            held: Some(1),
            latest: Some(1 + behind),
            versions_behind: behind,
            seconds_behind: 0,
            report_age_s: Some(1),
            stale: false,
        }
    }

    #[test]
    fn metrics_show_the_worst_node_of_a_department() {
        let view = FleetView {
            at: 0,
            rows: vec![row("gd", "gd-1", 0), row("gd", "gd-2", 3), row("zj", "zj-1", 1)],
            nodes: vec![
                FleetNode {
                    dept: DeptId::new("gd").unwrap(),
                    node: "gd-1".into(),
                    report_age_s: 5,
                    stale: false,
                },
                FleetNode {
                    dept: DeptId::new("gd").unwrap(),
                    node: "gd-2".into(),
                    report_age_s: 50,
                    stale: false,
                },
            ],
        };
        let (behind, ages) = view.by_department();
        let behind: Vec<_> = behind.iter().map(|((d, _), n)| (d.as_str(), *n)).collect();
        assert_eq!(behind, [("gd", 3), ("zj", 1)]);
        assert_eq!(ages.values().copied().collect::<Vec<_>>(), [50]);
    }

    #[test]
    fn reports_refuse_unknown_fields_and_version_zero() {
        let json = r#"{"dataset":"vehicles","version":2}"#;
        assert_eq!(serde_json::from_str::<HoldingReport>(json).unwrap().version.get(), 2);
        assert!(serde_json::from_str::<HoldingReport>(r#"{"dataset":"vehicles","version":0}"#).is_err());
        assert!(
            serde_json::from_str::<HoldingReport>(r#"{"dataset":"vehicles","version":2,"x":1}"#).is_err()
        );
    }
}
