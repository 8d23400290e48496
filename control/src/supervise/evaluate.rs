//! The evaluation: every finding computed at `now` from the records, one list per department.
//!
//! | finding | from | against |
//! |---|---|---|
//! | catalog-not-compiled | no `catalog_datasets` row of the department | the department |
//! | catalog-not-updated | newest registration older than 12 months | the provider |
//! | data-not-provided | formal entry in effect longer than its update cycle allows, never published, connection deadline not passed | the provider |
//! | data-not-updated | last publication older than the update cycle allows | the provider |
//! | data-inconsistent | publishes refused by a node for not matching the catalog, last 90 days | the provider |
//! | quality-unanswered | quality issue unanswered after its last day | the provider |
//! | review-overdue | application waiting for a review past its last day | technical support (first review) or the decider |
//! | grant-unused | active grant unused (or never used) for 3 months | the holder |
//! | data-not-connected | formal entry, 6-month connection deadline passed, nothing published | the provider |
//!
//! The departments evaluated are every department the records name (providers, grant holders,
//! applicants, users, departments with notices), except the S&T authority. "Allows" for an
//! update cycle is the cycle plus a day of grace ([`cycle_allowance`]); an on-change dataset
//! is never late.
//!
//! Neighbours: [`super::notice`] checks a notice's finding against this evaluation.

use std::collections::{BTreeMap, BTreeSet};

use ferry_proto::{DatasetId, DeptId, Principal};
use ferry_tables::catalog::Stage;
use ferry_tables::definition::UpdateCycle;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use time::{Duration, OffsetDateTime};

use super::{FindingCode, csv_field};
use crate::calendar::china_date;
use crate::catalog::change::months_after;
use crate::catalog::read::{corrupt, in_effect_at};
use crate::grants::DISUSE_MONTHS;
use crate::grants::list::{GrantState, all_grants};
use crate::quality::IssueState;
use crate::quality::issues::{all_issues, parse_date};
use crate::roles::{Action, Roles};
use crate::store::{ControlStore, StoreError, from_unix};

/// A department whose newest catalog registration is older than this many months has not
/// updated its catalog.
pub const CATALOG_UPDATE_MONTHS: u32 = 12;

/// Publish refusals count for this many days.
pub const REFUSAL_WINDOW_DAYS: i64 = 90;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    pub dept: DeptId,
    pub finding: FindingCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetId>,
    /// The record it stands on: `grant 7`, `application 3`, `quality-issue 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Since when it stands (a deadline passed, a last use, a last publication).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub since: Option<OffsetDateTime>,
    pub detail: String,
}

/// One department's evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeptEvaluation {
    pub dept: DeptId,
    /// Findings by code (codes without findings omitted).
    pub counts: BTreeMap<FindingCode, usize>,
    pub findings: Vec<Finding>,
    /// Rectification notices against the department still open.
    pub open_notices: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SupervisionReport {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub departments: Vec<DeptEvaluation>,
}

/// The CSV header of [`SupervisionReport::to_csv`].
pub const CSV_HEADER: &str = "dept,finding,dataset,subject,since,detail";

impl SupervisionReport {
    /// One line per finding under [`CSV_HEADER`]; a department without findings has one line
    /// with an empty finding, so every department evaluated appears.
    pub fn to_csv(&self) -> String {
        let mut out = format!("{CSV_HEADER}\n");
        for dept in &self.departments {
            if dept.findings.is_empty() {
                out.push_str(&format!("{},,,,,\n", csv_field(dept.dept.as_str())));
            }
            for f in &dept.findings {
                let since = f
                    .since
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    csv_field(f.dept.as_str()),
                    f.finding,
                    csv_field(f.dataset.as_ref().map_or("", |d| d.as_str())),
                    csv_field(f.subject.as_deref().unwrap_or("")),
                    since,
                    csv_field(&f.detail)
                ));
            }
        }
        out
    }
}

/// How long after a publication (or after taking effect) the next one is due: the cycle plus a
/// day of grace; `None` for on-change data.
pub fn cycle_allowance(cycle: UpdateCycle) -> Option<Duration> {
    let days = match cycle {
        UpdateCycle::Realtime | UpdateCycle::Hourly => 1,
        UpdateCycle::Daily => 2,
        UpdateCycle::Weekly => 8,
        UpdateCycle::Monthly => 32,
        UpdateCycle::Quarterly => 93,
        UpdateCycle::Yearly => 367,
        UpdateCycle::OnChange => return None,
    };
    Some(Duration::days(days))
}

fn finding(dept: &DeptId, code: FindingCode, dataset: Option<&DatasetId>) -> Finding {
    Finding {
        dept: dept.clone(),
        finding: code,
        dataset: dataset.cloned(),
        subject: None,
        since: None,
        detail: String::new(),
    }
}

async fn strings(conn: &mut AnyConnection, sql: &'static str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(sql).fetch_all(conn).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
}

fn dept_id(text: String) -> Result<DeptId, StoreError> {
    DeptId::new(text).map_err(corrupt)
}

/// Catalog compiled and updated, per department.
async fn catalog_findings(
    conn: &mut AnyConnection,
    depts: &BTreeSet<DeptId>,
    now: OffsetDateTime,
) -> Result<Vec<Finding>, StoreError> {
    let rows = sqlx::query("SELECT provider, MAX(registered_at) FROM catalog_versions GROUP BY provider")
        .fetch_all(&mut *conn)
        .await?;
    let mut newest = BTreeMap::new();
    for row in &rows {
        newest.insert(dept_id(row.try_get(0)?)?, from_unix(row.try_get(1)?)?);
    }
    let mut findings = Vec::new();
    for dept in depts {
        match newest.get(dept) {
            None => findings.push(Finding {
                detail: "no catalog entry registered".into(),
                ..finding(dept, FindingCode::CatalogNotCompiled, None)
            }),
            Some(at) if months_after(*at, CATALOG_UPDATE_MONTHS)? <= now => findings.push(Finding {
                since: Some(*at),
                detail: format!(
                    "newest registration {} is older than {CATALOG_UPDATE_MONTHS} months",
                    at.date()
                ),
                ..finding(dept, FindingCode::CatalogNotUpdated, None)
            }),
            Some(_) => {}
        }
    }
    Ok(findings)
}

/// Data provided, updated and connected, per dataset in effect.
async fn data_findings(conn: &mut AnyConnection, now: OffsetDateTime) -> Result<Vec<Finding>, StoreError> {
    let datasets = strings(&mut *conn, "SELECT dataset FROM catalog_datasets ORDER BY dataset").await?;
    let mut findings = Vec::new();
    for dataset in datasets {
        let dataset = DatasetId::new(dataset).map_err(corrupt)?;
        let Some(current) = in_effect_at(&mut *conn, &dataset, now).await? else { continue };
        if current.entry.stage != Stage::Formal {
            continue;
        }
        let provider = current.entry.provider().clone();
        let row = sqlx::query("SELECT MAX(published_at) FROM catalog_publications WHERE dataset = $1")
            .bind(dataset.as_str().to_owned())
            .fetch_one(&mut *conn)
            .await?;
        let last: Option<i64> = row.try_get(0)?;
        let row = sqlx::query(
            "SELECT MIN(connection_deadline) FROM catalog_versions WHERE dataset = $1 AND stage = 'formal'",
        )
        .bind(dataset.as_str().to_owned())
        .fetch_one(&mut *conn)
        .await?;
        let deadline = row.try_get::<Option<i64>, _>(0)?.map(from_unix).transpose()?;
        let allowance = cycle_allowance(current.entry.definition.update_cycle);
        let cycle = format!("{:?}", current.entry.definition.update_cycle).to_lowercase();
        match last.map(from_unix).transpose()? {
            None if deadline.is_some_and(|d| d < now) => findings.push(Finding {
                since: deadline,
                detail: "formal entry without data connected within 6 months of registration".into(),
                ..finding(&provider, FindingCode::DataNotConnected, Some(&dataset))
            }),
            None if allowance.is_some_and(|a| current.effective_from + a <= now) => findings.push(Finding {
                since: Some(current.effective_from),
                detail: format!(
                    "in effect since {}, update cycle {cycle}, nothing published",
                    current.effective_from.date()
                ),
                ..finding(&provider, FindingCode::DataNotProvided, Some(&dataset))
            }),
            Some(at) if allowance.is_some_and(|a| at + a <= now) => findings.push(Finding {
                since: Some(at),
                detail: format!("last published {}, update cycle {cycle}", at.date()),
                ..finding(&provider, FindingCode::DataNotUpdated, Some(&dataset))
            }),
            _ => {}
        }
    }
    Ok(findings)
}

/// Publishes refused for not matching the catalog, per dataset.
async fn refusal_findings(conn: &mut AnyConnection, now: OffsetDateTime) -> Result<Vec<Finding>, StoreError> {
    let since = crate::store::unix(now - Duration::days(REFUSAL_WINDOW_DAYS));
    let rows = sqlx::query(
        "SELECT provider, dataset, COUNT(*), MIN(refused_at) FROM publish_refusals WHERE refused_at >= $1 \
         GROUP BY provider, dataset ORDER BY provider, dataset",
    )
    .bind(since)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let dataset = DatasetId::new(row.try_get::<String, _>(1)?).map_err(corrupt)?;
            let count: i64 = row.try_get(2)?;
            Ok(Finding {
                since: Some(from_unix(row.try_get(3)?)?),
                detail: format!(
                    "{count} publish(es) refused for not matching the catalog in {REFUSAL_WINDOW_DAYS} days"
                ),
                ..finding(&dept_id(row.try_get(0)?)?, FindingCode::DataInconsistent, Some(&dataset))
            })
        })
        .collect()
}

/// Overdue quality issues, against the provider.
async fn quality_findings(conn: &mut AnyConnection, now: OffsetDateTime) -> Result<Vec<Finding>, StoreError> {
    let issues = all_issues(conn, now).await?;
    issues
        .into_iter()
        .filter(|i| i.state == IssueState::Overdue)
        .map(|i| {
            let due = parse_date(&i.due_on)?;
            Ok(Finding {
                subject: Some(format!("quality-issue {}", i.id.0)),
                since: Some(due.midnight().assume_offset(crate::calendar::CHINA_OFFSET)),
                detail: format!(
                    "issue on v{} filed by {} unanswered; answer was due {}",
                    i.version, i.filed_by_dept, i.due_on
                ),
                ..finding(&i.provider, FindingCode::QualityUnanswered, Some(&i.dataset))
            })
        })
        .collect()
}

/// Reviews past their last day, against whoever must act.
async fn review_findings(
    conn: &mut AnyConnection,
    roles: &Roles,
    now: OffsetDateTime,
) -> Result<Vec<Finding>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, dataset, dept, provider, state, decider, due_on FROM applications \
         WHERE state IN ('first-review', 'provider-review') AND due_on IS NOT NULL ORDER BY id",
    )
    .fetch_all(conn)
    .await?;
    let today = china_date(now);
    let mut findings = Vec::new();
    for row in &rows {
        let due_on: String = row.try_get(6)?;
        let due = parse_date(&due_on)?;
        if today <= due {
            continue;
        }
        let state: String = row.try_get(4)?;
        let decider: String = row.try_get(5)?;
        let reviewer = match (state.as_str(), decider.as_str()) {
            ("first-review", _) | (_, "technical-support") => roles.technical_support.clone(),
            (_, "st-authority") => roles.st_authority.clone(),
            _ => dept_id(row.try_get(3)?)?,
        };
        let dataset = DatasetId::new(row.try_get::<String, _>(1)?).map_err(corrupt)?;
        findings.push(Finding {
            subject: Some(format!("application {}", row.try_get::<i64, _>(0)?)),
            since: Some(due.midnight().assume_offset(crate::calendar::CHINA_OFFSET)),
            detail: format!(
                "{state} of the application of {} was due {due_on}",
                row.try_get::<String, _>(2)?
            ),
            ..finding(&reviewer, FindingCode::ReviewOverdue, Some(&dataset))
        });
    }
    Ok(findings)
}

/// Active grants unused for 3 months, against the holder.
async fn grant_findings(conn: &mut AnyConnection, now: OffsetDateTime) -> Result<Vec<Finding>, StoreError> {
    let mut findings = Vec::new();
    for grant in all_grants(conn).await?.into_iter().filter(|g| g.state == GrantState::Active) {
        let since = grant.last_used_at.unwrap_or(grant.granted_at);
        if months_after(since, DISUSE_MONTHS)? > now {
            continue;
        }
        let detail = match grant.last_used_at {
            Some(at) => format!("last used {}", at.date()),
            None => format!("never used since granted {}", grant.granted_at.date()),
        };
        findings.push(Finding {
            subject: Some(format!("grant {}", grant.id)),
            since: Some(since),
            detail,
            ..finding(&grant.holder, FindingCode::GrantUnused, Some(&grant.dataset))
        });
    }
    Ok(findings)
}

/// Every department the records name, but the S&T authority.
async fn departments(conn: &mut AnyConnection, roles: &Roles) -> Result<BTreeSet<DeptId>, StoreError> {
    let names = strings(
        conn,
        "SELECT provider FROM catalog_datasets UNION SELECT dept FROM grants UNION SELECT dept FROM applications \
         UNION SELECT dept FROM dataset_uses UNION SELECT dept FROM rectification_notices",
    )
    .await?;
    let mut depts = BTreeSet::new();
    for name in names {
        let dept = dept_id(name)?;
        if dept != roles.st_authority {
            depts.insert(dept);
        }
    }
    Ok(depts)
}

impl ControlStore {
    /// Every department's evaluation at `now` (no role check: for the plane's own use).
    pub(crate) async fn evaluate_all(&self, now: OffsetDateTime) -> Result<Vec<DeptEvaluation>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let depts = departments(&mut conn, &self.roles).await?;
        let mut all = catalog_findings(&mut conn, &depts, now).await?;
        all.extend(data_findings(&mut conn, now).await?);
        all.extend(refusal_findings(&mut conn, now).await?);
        all.extend(quality_findings(&mut conn, now).await?);
        all.extend(review_findings(&mut conn, &self.roles, now).await?);
        all.extend(grant_findings(&mut conn, now).await?);
        let rows = sqlx::query(
            "SELECT dept, COUNT(*) FROM rectification_notices WHERE state = 'open' GROUP BY dept",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut open = BTreeMap::new();
        for row in &rows {
            open.insert(
                dept_id(row.try_get(0)?)?,
                usize::try_from(row.try_get::<i64, _>(1)?).unwrap_or_default(),
            );
        }
        let mut by_dept: BTreeMap<DeptId, Vec<Finding>> =
            depts.into_iter().map(|d| (d, Vec::new())).collect();
        for f in all {
            by_dept.entry(f.dept.clone()).or_default().push(f);
        }
        Ok(by_dept
            .into_iter()
            .map(|(dept, findings)| {
                let mut counts = BTreeMap::new();
                for f in &findings {
                    *counts.entry(f.finding).or_insert(0) += 1;
                }
                let open_notices = open.get(&dept).copied().unwrap_or_default();
                DeptEvaluation { dept, counts, findings, open_notices }
            })
            .collect())
    }

    /// The supervision report at `now`: every department for technical support and the S&T
    /// authority, narrowed to `dept` if given; a department may read its own only.
    pub async fn supervision_report(
        &self,
        caller: &Principal,
        dept: Option<&DeptId>,
        now: OffsetDateTime,
    ) -> Result<SupervisionReport, StoreError> {
        self.roles.authorize(caller, Action::ReadSupervision, dept)?;
        let departments =
            self.evaluate_all(now).await?.into_iter().filter(|e| dept.is_none_or(|d| &e.dept == d)).collect();
        Ok(SupervisionReport { generated_at: now, departments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_on_change_data_is_never_late() {
        assert_eq!(cycle_allowance(UpdateCycle::Daily), Some(Duration::days(2)));
        assert_eq!(cycle_allowance(UpdateCycle::OnChange), None);
    }
}
