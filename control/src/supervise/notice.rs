//! Rectification notices (Art. 19, 23, 24): the S&T authority issues one against a finding the
//! evaluation shows for a department (a notice against a finding that does not stand is
//! refused), and closes it when rectified, with a note. Listing a notice says whether its
//! finding still stands, so closure can be checked against the records. Each issue, close and
//! refusal is one transaction with its audit entry.
//!
//! Neighbours: [`super::evaluate`] (the findings).

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::FindingCode;
use super::evaluate::DeptEvaluation;
use crate::audit::EntryKind;
use crate::catalog::read::corrupt;
use crate::grants::{IdTable, bounded_text, decision_entry, next_id};
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, from_unix, unix};

/// Longest notice or closing text, in characters.
pub const MAX_TEXT_CHARS: usize = 8192;

/// A rectification notice's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NoticeId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeState {
    Open,
    Closed,
}

/// One notice, with whether its finding stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RectificationNotice {
    pub id: NoticeId,
    pub dept: DeptId,
    pub finding: FindingCode,
    pub dataset: Option<DatasetId>,
    pub text: String,
    pub issued_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub state: NoticeState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub closed_by: Option<String>,
    pub closing_note: Option<String>,
    /// Whether the evaluation still finds it.
    pub finding_stands: bool,
}

macro_rules! select_notices {
    ($tail:literal) => {
        concat!(
            "SELECT id, dept, finding, dataset, text, issued_by, issued_at, state, closed_at, closed_by, \
             closing_note FROM rectification_notices ",
            $tail
        )
    };
}

fn stands(
    evaluation: &[DeptEvaluation],
    dept: &DeptId,
    code: FindingCode,
    dataset: Option<&DatasetId>,
) -> bool {
    evaluation
        .iter()
        .filter(|e| &e.dept == dept)
        .flat_map(|e| &e.findings)
        .any(|f| f.finding == code && dataset.is_none_or(|d| f.dataset.as_ref() == Some(d)))
}

fn notice(row: &AnyRow, evaluation: &[DeptEvaluation]) -> Result<RectificationNotice, StoreError> {
    let dept = DeptId::new(row.try_get::<String, _>(1)?).map_err(corrupt)?;
    let code: String = row.try_get(2)?;
    let finding = FindingCode::parse(&code).ok_or_else(|| corrupt(format!("finding {code:?}")))?;
    let dataset = row.try_get::<Option<String>, _>(3)?.map(DatasetId::new).transpose().map_err(corrupt)?;
    let state = match row.try_get::<String, _>(7)?.as_str() {
        "open" => NoticeState::Open,
        "closed" => NoticeState::Closed,
        other => return Err(corrupt(format!("notice state {other:?}"))),
    };
    Ok(RectificationNotice {
        id: NoticeId(u64::try_from(row.try_get::<i64, _>(0)?).map_err(corrupt)?),
        finding_stands: stands(evaluation, &dept, finding, dataset.as_ref()),
        dept,
        finding,
        dataset,
        text: row.try_get(4)?,
        issued_by: row.try_get(5)?,
        issued_at: from_unix(row.try_get(6)?)?,
        state,
        closed_at: row.try_get::<Option<i64>, _>(8)?.map(from_unix).transpose()?,
        closed_by: row.try_get(9)?,
        closing_note: row.try_get(10)?,
    })
}

impl ControlStore {
    /// Issues a notice against `dept`'s `finding` (on `dataset`, if named) as the S&T authority.
    pub async fn issue_rectification(
        &self,
        caller: &Principal,
        dept: &DeptId,
        finding: FindingCode,
        dataset: Option<&DatasetId>,
        text: &str,
        now: OffsetDateTime,
    ) -> Result<RectificationNotice, StoreError> {
        let text = bounded_text("the notice", text, MAX_TEXT_CHARS)?;
        let evaluation = self.evaluate_all(now).await?;
        let detail = json!({ "step": "issued", "dept": dept.as_str(), "finding": finding.as_str() });
        let refusal = match self.roles.authorize(caller, Action::Rectify, None) {
            Err(forbidden) => Some(("forbidden", forbidden)),
            Ok(()) if !stands(&evaluation, dept, finding, dataset) => Some((
                "no-such-finding",
                StoreError::Invalid(format!(
                    "the evaluation finds no {finding} for {dept}{}; a notice stands on a finding",
                    dataset.map(|d| format!(" on {d}")).unwrap_or_default()
                )),
            )),
            Ok(()) => None,
        };
        let mut tx = self.begin_write().await?;
        if let Some((why, error)) = refusal {
            let entry =
                decision_entry(EntryKind::RectificationNotice, caller, dataset, Some(why), detail, now);
            self.audit_entry(&mut tx, &entry).await?;
            tx.commit().await?;
            return Err(error);
        }
        let id = next_id(&mut tx, IdTable::RectificationNotices).await?;
        sqlx::query(
            "INSERT INTO rectification_notices (id, dept, finding, dataset, text, issued_by, issued_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'open')",
        )
        .bind(id)
        .bind(dept.as_str().to_owned())
        .bind(finding.as_str().to_owned())
        .bind(dataset.map(|d| d.as_str().to_owned()))
        .bind(text)
        .bind(crate::grants::revoke::revoker(caller))
        .bind(unix(now))
        .execute(&mut *tx)
        .await?;
        let mut detail = detail;
        detail["notice"] = id.into();
        let entry = decision_entry(EntryKind::RectificationNotice, caller, dataset, None, detail, now);
        self.audit_entry(&mut tx, &entry).await?;
        let row = sqlx::query(select_notices!("WHERE id = $1")).bind(id).fetch_one(&mut *tx).await?;
        let issued = notice(&row, &evaluation)?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Closes notice `id` with `note` as the S&T authority; closing a closed notice conflicts.
    pub async fn close_rectification(
        &self,
        caller: &Principal,
        id: NoticeId,
        note: &str,
        now: OffsetDateTime,
    ) -> Result<RectificationNotice, StoreError> {
        let note = bounded_text("the closing note", note, MAX_TEXT_CHARS)?;
        let sql_id = i64::try_from(id.0).map_err(|_| StoreError::NotFound(format!("notice {}", id.0)))?;
        let evaluation = self.evaluate_all(now).await?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(select_notices!("WHERE id = $1"))
            .bind(sql_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("rectification notice {}", id.0)))?;
        let found = notice(&row, &evaluation)?;
        let detail = json!({
            "step": "closed",
            "notice": id.0,
            "dept": found.dept.as_str(),
            "finding": found.finding.as_str(),
            "finding-stands": found.finding_stands,
        });
        let refusal = match self.roles.authorize(caller, Action::Rectify, None) {
            Err(forbidden) => Some(("forbidden", forbidden)),
            Ok(()) if found.state == NoticeState::Closed => {
                Some(("already-closed", StoreError::Conflict(format!("notice {} is already closed", id.0))))
            }
            Ok(()) => None,
        };
        if let Some((why, error)) = refusal {
            let entry = decision_entry(
                EntryKind::RectificationNotice,
                caller,
                found.dataset.as_ref(),
                Some(why),
                detail,
                now,
            );
            self.audit_entry(&mut tx, &entry).await?;
            tx.commit().await?;
            return Err(error);
        }
        sqlx::query(
            "UPDATE rectification_notices SET state = 'closed', closed_at = $2, closed_by = $3, closing_note = $4 \
             WHERE id = $1 AND state = 'open'",
        )
        .bind(sql_id)
        .bind(unix(now))
        .bind(crate::grants::revoke::revoker(caller))
        .bind(note)
        .execute(&mut *tx)
        .await?;
        let entry =
            decision_entry(EntryKind::RectificationNotice, caller, found.dataset.as_ref(), None, detail, now);
        self.audit_entry(&mut tx, &entry).await?;
        let row = sqlx::query(select_notices!("WHERE id = $1")).bind(sql_id).fetch_one(&mut *tx).await?;
        let closed = notice(&row, &evaluation)?;
        tx.commit().await?;
        Ok(closed)
    }

    /// The notices `caller` may see (all for supervisors, its own for a department), narrowed
    /// to `dept`.
    pub async fn rectifications(
        &self,
        caller: &Principal,
        dept: Option<&DeptId>,
        now: OffsetDateTime,
    ) -> Result<Vec<RectificationNotice>, StoreError> {
        let supervisor =
            caller.dept == self.roles.technical_support || caller.dept == self.roles.st_authority;
        if let Some(other) = dept.filter(|d| !supervisor && *d != &caller.dept) {
            self.roles.authorize(caller, Action::ReadSupervision, Some(other))?;
        }
        let evaluation = self.evaluate_all(now).await?;
        let rows = sqlx::query(select_notices!("ORDER BY id")).fetch_all(self.pool()).await?;
        let mut notices = Vec::new();
        for row in &rows {
            let n = notice(row, &evaluation)?;
            if (supervisor || n.dept == caller.dept) && dept.is_none_or(|d| &n.dept == d) {
                notices.push(n);
            }
        }
        Ok(notices)
    }
}
