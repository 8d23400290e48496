//! Quality issues (Art. 15): filed against a published version of a dataset by an operator of
//! a department that holds (or held) a grant for it or used it; answered by an operator of the
//! provider. The answer is due on the `quality-answer-days`th working day after the day it was
//! filed (China Standard Time, the official calendar); an issue without an answer after that
//! day is overdue. A late answer is still recorded, and shows as late.
//!
//! Each filing, answer and refusal is one transaction with its audit entry. Neighbours:
//! [`crate::calendar`], [`crate::supervise`] (overdue issues are a finding of the provider).

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::{Date, OffsetDateTime};

use crate::audit::EntryKind;
use crate::calendar::{Calendar, china_date};
use crate::catalog::read::corrupt;
use crate::grants::{IdTable, bounded_text, decision_entry, next_id};
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, from_unix, unix};

/// Longest issue or answer text, in characters.
pub const MAX_TEXT_CHARS: usize = 8192;

/// A quality issue's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IssueId(pub u64);

/// Where an issue stands on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueState {
    /// Unanswered, still on time.
    Open,
    /// Unanswered after its last day.
    Overdue,
    Answered,
    /// Answered after its last day.
    AnsweredLate,
}

/// One quality issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct QualityIssue {
    pub id: IssueId,
    pub dataset: DatasetId,
    pub version: u64,
    pub provider: DeptId,
    pub filed_by_dept: DeptId,
    pub filed_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub filed_at: OffsetDateTime,
    pub text: String,
    /// The last day (China Standard Time) the answer is on time, `YYYY-MM-DD`.
    pub due_on: String,
    pub state: IssueState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub answered_at: Option<OffsetDateTime>,
    pub answered_by: Option<String>,
    pub answer: Option<String>,
}

/// What `ferry quality list` narrows to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueFilter {
    pub dataset: Option<DatasetId>,
    /// Only unanswered issues.
    pub unanswered: bool,
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

pub(crate) fn date_text(date: Date) -> String {
    date.format(DATE).unwrap_or_default()
}

pub(crate) fn parse_date(text: &str) -> Result<Date, StoreError> {
    Date::parse(text, DATE).map_err(corrupt)
}

fn state(due_on: Date, answered_at: Option<OffsetDateTime>, now: OffsetDateTime) -> IssueState {
    match answered_at {
        Some(at) if china_date(at) > due_on => IssueState::AnsweredLate,
        Some(_) => IssueState::Answered,
        None if china_date(now) > due_on => IssueState::Overdue,
        None => IssueState::Open,
    }
}

/// `SELECT` of every issue field, then `$tail` (a static string, as sqlx asks).
macro_rules! concat_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, dataset, version, provider, filed_by_dept, filed_by, filed_at, text, due_on, \
             answered_at, answered_by, answer FROM quality_issues ",
            $tail
        )
    };
}

fn issue(row: &AnyRow, now: OffsetDateTime) -> Result<QualityIssue, StoreError> {
    let due_on: String = row.try_get(8)?;
    let answered_at = row.try_get::<Option<i64>, _>(9)?.map(from_unix).transpose()?;
    Ok(QualityIssue {
        id: IssueId(u64::try_from(row.try_get::<i64, _>(0)?).map_err(corrupt)?),
        dataset: DatasetId::new(row.try_get::<String, _>(1)?).map_err(corrupt)?,
        version: u64::try_from(row.try_get::<i64, _>(2)?).map_err(corrupt)?,
        provider: DeptId::new(row.try_get::<String, _>(3)?).map_err(corrupt)?,
        filed_by_dept: DeptId::new(row.try_get::<String, _>(4)?).map_err(corrupt)?,
        filed_by: row.try_get(5)?,
        filed_at: from_unix(row.try_get(6)?)?,
        text: row.try_get(7)?,
        state: state(parse_date(&due_on)?, answered_at, now),
        due_on,
        answered_at,
        answered_by: row.try_get(10)?,
        answer: row.try_get(11)?,
    })
}

/// Every issue, oldest first.
pub(crate) async fn all_issues(
    conn: &mut AnyConnection,
    now: OffsetDateTime,
) -> Result<Vec<QualityIssue>, StoreError> {
    let rows = sqlx::query(concat_select!("")).fetch_all(conn).await?;
    let mut issues = rows.iter().map(|r| issue(r, now)).collect::<Result<Vec<_>, _>>()?;
    issues.sort_by_key(|i| i.id);
    Ok(issues)
}

/// Whether `dept` holds or held a grant for `dataset`, or used it.
async fn is_consumer(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
    dept: &DeptId,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM grants WHERE dataset = $1 AND dept = $2) \
         + (SELECT COUNT(*) FROM dataset_uses WHERE dataset = $1 AND dept = $2)",
    )
    .bind(dataset.as_str().to_owned())
    .bind(dept.as_str().to_owned())
    .fetch_one(conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

impl ControlStore {
    /// Files a quality issue against `version` of `dataset` (see the module doc).
    #[allow(clippy::too_many_arguments)]
    pub async fn file_quality_issue(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        version: u64,
        text: &str,
        calendar: &Calendar,
        answer_days: u32,
        now: OffsetDateTime,
    ) -> Result<QualityIssue, StoreError> {
        let text = bounded_text("the issue", text, MAX_TEXT_CHARS)?;
        let due_on = calendar
            .add_working_days(china_date(now), answer_days)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.begin_write().await?;
        let provider = sqlx::query("SELECT provider FROM catalog_datasets WHERE dataset = $1")
            .bind(dataset.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("dataset {dataset}")))?
            .try_get::<String, _>(0)?;
        let provider = DeptId::new(provider).map_err(corrupt)?;
        let sql_version =
            i64::try_from(version).map_err(|_| StoreError::NotFound(format!("{dataset} v{version}")))?;
        let published = sqlx::query("SELECT 1 FROM catalog_publications WHERE dataset = $1 AND version = $2")
            .bind(dataset.as_str().to_owned())
            .bind(sql_version)
            .fetch_optional(&mut *tx)
            .await?;
        if published.is_none() {
            return Err(StoreError::NotFound(format!("{dataset} v{version} was not published")));
        }
        let consumer = is_consumer(&mut tx, dataset, &caller.dept).await?;
        let detail = json!({ "step": "filed", "version": version, "provider": provider.as_str() });
        let subject = consumer.then_some(&caller.dept);
        if let Err(forbidden) = self.roles.authorize(caller, Action::FileQualityIssue, subject) {
            let entry = decision_entry(
                EntryKind::QualityIssue,
                caller,
                Some(dataset),
                Some("forbidden"),
                detail,
                now,
            );
            self.audit_entry(&mut tx, &entry).await?;
            tx.commit().await?;
            return Err(forbidden);
        }
        let id = next_id(&mut tx, IdTable::QualityIssues).await?;
        sqlx::query(
            "INSERT INTO quality_issues (id, dataset, version, provider, filed_by_dept, filed_by, filed_at, text, due_on) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(dataset.as_str().to_owned())
        .bind(sql_version)
        .bind(provider.as_str().to_owned())
        .bind(caller.dept.as_str().to_owned())
        .bind(crate::grants::revoke::revoker(caller))
        .bind(unix(now))
        .bind(text)
        .bind(date_text(due_on))
        .execute(&mut *tx)
        .await?;
        let mut detail = detail;
        detail["issue"] = id.into();
        detail["due-on"] = date_text(due_on).into();
        let entry = decision_entry(EntryKind::QualityIssue, caller, Some(dataset), None, detail, now);
        self.audit_entry(&mut tx, &entry).await?;
        let filed = sqlx::query(concat_select!("WHERE id = $1")).bind(id).fetch_one(&mut *tx).await?;
        let filed = issue(&filed, now)?;
        tx.commit().await?;
        Ok(filed)
    }

    /// Answers issue `id` as an operator of its provider; a second answer is a conflict.
    pub async fn answer_quality_issue(
        &self,
        caller: &Principal,
        id: IssueId,
        text: &str,
        now: OffsetDateTime,
    ) -> Result<QualityIssue, StoreError> {
        let text = bounded_text("the answer", text, MAX_TEXT_CHARS)?;
        let sql_id =
            i64::try_from(id.0).map_err(|_| StoreError::NotFound(format!("quality issue {}", id.0)))?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat_select!("WHERE id = $1"))
            .bind(sql_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("quality issue {}", id.0)))?;
        let found = issue(&row, now)?;
        let detail = json!({ "step": "answered", "issue": id.0, "version": found.version });
        let refusal = match self.roles.authorize(caller, Action::AnswerQualityIssue, Some(&found.provider)) {
            Err(forbidden) => Some(("forbidden", forbidden)),
            Ok(()) if found.answered_at.is_some() => Some((
                "already-answered",
                StoreError::Conflict(format!("quality issue {} is already answered", id.0)),
            )),
            Ok(()) => None,
        };
        if let Some((why, error)) = refusal {
            let entry =
                decision_entry(EntryKind::QualityIssue, caller, Some(&found.dataset), Some(why), detail, now);
            self.audit_entry(&mut tx, &entry).await?;
            tx.commit().await?;
            return Err(error);
        }
        sqlx::query(
            "UPDATE quality_issues SET answered_at = $2, answered_by = $3, answer = $4 WHERE id = $1 AND answered_at IS NULL",
        )
        .bind(sql_id)
        .bind(unix(now))
        .bind(crate::grants::revoke::revoker(caller))
        .bind(text)
        .execute(&mut *tx)
        .await?;
        let mut detail = detail;
        detail["late"] = (china_date(now) > parse_date(&found.due_on)?).into();
        let entry = decision_entry(EntryKind::QualityIssue, caller, Some(&found.dataset), None, detail, now);
        self.audit_entry(&mut tx, &entry).await?;
        let row = sqlx::query(concat_select!("WHERE id = $1")).bind(sql_id).fetch_one(&mut *tx).await?;
        let answered = issue(&row, now)?;
        tx.commit().await?;
        Ok(answered)
    }

    /// The issues `caller` may see (its own filings, those on datasets it provides; every issue
    /// for supervisors), narrowed by `filter`, states as of `now`.
    pub async fn quality_issues(
        &self,
        caller: &Principal,
        filter: &IssueFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<QualityIssue>, StoreError> {
        let roles = self.roles();
        let supervisor = caller.dept == roles.technical_support || caller.dept == roles.st_authority;
        let mut conn = self.pool().acquire().await?;
        Ok(all_issues(&mut conn, now)
            .await?
            .into_iter()
            .filter(|i| supervisor || i.filed_by_dept == caller.dept || i.provider == caller.dept)
            .filter(|i| filter.dataset.as_ref().is_none_or(|d| &i.dataset == d))
            .filter(|i| !filter.unanswered || i.answered_at.is_none())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn an_issue_is_overdue_the_day_after_its_last_day_in_china() {
        let due = date!(2026 - 12 - 11);
        // 2026-12-11 23:30 +08:00 is still the last day.
        assert_eq!(state(due, None, datetime!(2026-12-11 15:30 UTC)), IssueState::Open);
        assert_eq!(state(due, None, datetime!(2026-12-11 16:30 UTC)), IssueState::Overdue);
        assert_eq!(
            state(due, Some(datetime!(2026-12-11 15:00 UTC)), datetime!(2027-01-01 00:00 UTC)),
            IssueState::Answered
        );
        assert_eq!(
            state(due, Some(datetime!(2026-12-12 01:00 UTC)), datetime!(2026-12-12 02:00 UTC)),
            IssueState::AnsweredLate
        );
        assert_eq!(parse_date(&date_text(due)).unwrap(), due);
    }
}
