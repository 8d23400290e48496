//! The uses nodes report (`report-use`): batches of (department, dataset, method, time), from
//! the ministry's own node in process and from each province by a control call at most once a
//! minute, plus the publishes a node refused because the data did not match the catalog.
//!
//! A use moves the holder's `grants.last_used_at` forward (never back) for every active grant
//! of that department on that dataset allowing that method, and the dataset's last use by the
//! department (change control's "in use"). A province reports for what it serves: uses of the
//! datasets its department provides, and uses by its own department; anything else in its
//! batch is ignored and counted. A time in the future (clock skew) counts as the time of the
//! report. One transaction per batch; uses are audited where they happen (the node's
//! `read-allowed` entries), not again here.
//!
//! Neighbours: [`super::disuse`] reads `last_used_at`; the supervision report counts
//! `publish_refusals`.

use std::collections::HashMap;

use ferry_proto::{DatasetId, DeptId, Principal, ServiceMethod};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use crate::roles::Action;
use crate::store::{ControlStore, StoreError, unix};

/// Most uses plus refusals one report may carry.
pub const MAX_REPORT_ITEMS: usize = 10_000;

/// One use seen by a node: `dept` read `dataset` by `method` at `at_ms` (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UseReport {
    pub dept: DeptId,
    pub dataset: DatasetId,
    pub method: ServiceMethod,
    pub at_ms: i64,
}

/// A publish a node refused because the data did not match the catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PublishRefusalReport {
    pub dataset: DatasetId,
    /// The node's refusal reason (a stable code, e.g. `schema_mismatch`).
    pub reason: String,
    pub at_ms: i64,
}

/// What a report changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsesRecorded {
    pub uses: usize,
    /// Grant rows whose last use moved forward.
    pub grants_touched: u64,
    pub refusals: usize,
    /// Items the reporting node may not report (see the module doc) or for unknown datasets.
    pub ignored: usize,
}

async fn providers(conn: &mut AnyConnection) -> Result<HashMap<String, String>, StoreError> {
    let rows = sqlx::query("SELECT dataset, provider FROM catalog_datasets").fetch_all(conn).await?;
    rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?))).collect()
}

fn seconds(at_ms: i64, now: OffsetDateTime) -> i64 {
    at_ms.div_euclid(1000).min(unix(now))
}

async fn record_one_use(conn: &mut AnyConnection, used: &UseReport, at: i64) -> Result<u64, StoreError> {
    sqlx::query(
        "INSERT INTO dataset_uses (dataset, dept, last_used_at) VALUES ($1, $2, $3) \
         ON CONFLICT (dataset, dept) DO UPDATE SET last_used_at = CASE \
         WHEN excluded.last_used_at > dataset_uses.last_used_at THEN excluded.last_used_at \
         ELSE dataset_uses.last_used_at END",
    )
    .bind(used.dataset.as_str().to_owned())
    .bind(used.dept.as_str().to_owned())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let touched = sqlx::query(
        "UPDATE grants SET last_used_at = $3 WHERE dept = $1 AND dataset = $2 AND state = 'active' \
         AND (last_used_at IS NULL OR last_used_at < $3) AND (',' || methods || ',') LIKE $4",
    )
    .bind(used.dept.as_str().to_owned())
    .bind(used.dataset.as_str().to_owned())
    .bind(at)
    .bind(format!("%,{},%", used.method.as_str()))
    .execute(conn)
    .await?;
    Ok(touched.rows_affected())
}

impl ControlStore {
    /// Records a node's batch of uses and publish refusals (see the module doc).
    pub async fn record_uses(
        &self,
        caller: &Principal,
        uses: &[UseReport],
        refusals: &[PublishRefusalReport],
        now: OffsetDateTime,
    ) -> Result<UsesRecorded, StoreError> {
        self.roles.authorize(caller, Action::ReportUse, None)?;
        if uses.len() + refusals.len() > MAX_REPORT_ITEMS {
            return Err(StoreError::Invalid(format!(
                "a use report carries at most {MAX_REPORT_ITEMS} items; split it"
            )));
        }
        let platform = caller.dept == self.roles.technical_support;
        let mut tx = self.begin_write().await?;
        let providers = providers(&mut tx).await?;
        let mut recorded = UsesRecorded::default();
        for used in uses {
            let Some(provider) = providers.get(used.dataset.as_str()) else {
                recorded.ignored += 1;
                continue;
            };
            let serves = platform || provider == caller.dept.as_str() || used.dept == caller.dept;
            if !serves {
                recorded.ignored += 1;
                continue;
            }
            if provider == used.dept.as_str() {
                continue; // a provider reading its own dataset is not a use
            }
            recorded.grants_touched += record_one_use(&mut tx, used, seconds(used.at_ms, now)).await?;
            recorded.uses += 1;
        }
        for refusal in refusals {
            let Some(provider) = providers.get(refusal.dataset.as_str()) else {
                recorded.ignored += 1;
                continue;
            };
            if !platform && provider != caller.dept.as_str() {
                recorded.ignored += 1;
                continue;
            }
            sqlx::query(
                "INSERT INTO publish_refusals (dataset, provider, node_dept, reason, refused_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(refusal.dataset.as_str().to_owned())
            .bind(provider.clone())
            .bind(caller.dept.as_str().to_owned())
            .bind(refusal.reason.chars().take(64).collect::<String>())
            .bind(seconds(refusal.at_ms, now))
            .execute(&mut *tx)
            .await?;
            recorded.refusals += 1;
        }
        tx.commit().await?;
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_use_from_the_future_counts_at_the_report() {
        let now = datetime!(2026-12-06 08:00 UTC);
        assert_eq!(seconds(unix(now) * 1000 + 60_000, now), unix(now));
        assert_eq!(seconds(1_500, now), 1);
    }

    #[test]
    fn reports_round_trip_and_refuse_unknown_fields() {
        let used = UseReport {
            dept: DeptId::new("guangdong").unwrap(),
            dataset: DatasetId::new("vehicles").unwrap(),
            method: ServiceMethod::Download,
            at_ms: 5,
        };
        let json = serde_json::to_string(&used).unwrap();
        assert_eq!(json, r#"{"dept":"guangdong","dataset":"vehicles","method":"download","at-ms":5}"#);
        assert_eq!(serde_json::from_str::<UseReport>(&json).unwrap(), used);
        assert!(serde_json::from_str::<UseReport>(&json.replace("}", r#","x":1}"#)).is_err());
    }
}
