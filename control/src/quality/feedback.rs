//! A holder's feedback on a grant (Art. 17): whether the data met the need, its quality (1–5)
//! and the effect of its use. Only an operator of the holder gives it; a refusal is audited.
//! Feedback is kept as given (rows are never changed); the latest is the holder's view. It is
//! read back ([`ControlStore::feedback_list`], `feedback-list`) by the department that gave it,
//! the dataset's provider, and technical support and the S&T authority.
//!
//! Neighbours: [`crate::grants::list`] reads the grant.

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::audit::EntryKind;
use crate::catalog::read::corrupt;
use crate::grants::list::grant_in;
use crate::grants::{GrantId, IdTable, bounded_text, decision_entry, next_id};
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, from_unix, unix};

/// Longest effect text, in characters.
pub const MAX_EFFECT_CHARS: usize = 4096;

/// Whether the data met the holder's need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeedMet {
    Yes,
    Partly,
    No,
}

impl NeedMet {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::Partly => "partly",
            Self::No => "no",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "yes" => Ok(Self::Yes),
            "partly" => Ok(Self::Partly),
            "no" => Ok(Self::No),
            other => Err(corrupt(format!("need met {other:?}"))),
        }
    }
}

/// One feedback as `ferry feedback list` shows it: as recorded, with the dataset's provider
/// (absent if the catalog no longer knows the dataset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FeedbackView {
    #[serde(flatten)]
    pub feedback: Feedback,
    pub provider: Option<DeptId>,
}

/// What `feedback-list` narrows to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackFilter {
    pub dataset: Option<DatasetId>,
}

/// Feedback as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Feedback {
    pub id: u64,
    pub grant: GrantId,
    pub holder: DeptId,
    pub dataset: DatasetId,
    pub need_met: NeedMet,
    pub quality: u8,
    pub effect: String,
    pub given_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub given_at: OffsetDateTime,
}

impl ControlStore {
    /// Records `caller`'s feedback on grant `grant` (see the module doc).
    pub async fn give_feedback(
        &self,
        caller: &Principal,
        grant: GrantId,
        need_met: NeedMet,
        quality: u8,
        effect: &str,
        now: OffsetDateTime,
    ) -> Result<Feedback, StoreError> {
        if !(1..=5).contains(&quality) {
            return Err(StoreError::Invalid(format!("quality is graded 1 to 5, not {quality}")));
        }
        let effect = bounded_text("the effect", effect, MAX_EFFECT_CHARS)?;
        let mut tx = self.begin_write().await?;
        let held = grant_in(&mut tx, grant).await?;
        let detail = json!({
            "grant": grant.get(),
            "holder": held.holder.as_str(),
            "need-met": need_met.as_str(),
            "quality": quality,
        });
        if let Err(forbidden) = self.roles.authorize(caller, Action::GiveFeedback, Some(&held.holder)) {
            let entry = decision_entry(
                EntryKind::GrantFeedback,
                caller,
                Some(&held.dataset),
                Some("forbidden"),
                detail,
                now,
            );
            self.audit_entry(&mut tx, &entry).await?;
            tx.commit().await?;
            return Err(forbidden);
        }
        let id = next_id(&mut tx, IdTable::GrantFeedback).await?;
        let given_by = crate::grants::revoke::revoker(caller);
        sqlx::query(
            "INSERT INTO grant_feedback (id, grant_id, dept, dataset, need_met, quality, effect, given_by, given_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(grant.sql()?)
        .bind(held.holder.as_str().to_owned())
        .bind(held.dataset.as_str().to_owned())
        .bind(need_met.as_str().to_owned())
        .bind(i64::from(quality))
        .bind(effect.clone())
        .bind(given_by.clone())
        .bind(unix(now))
        .execute(&mut *tx)
        .await?;
        let entry = decision_entry(EntryKind::GrantFeedback, caller, Some(&held.dataset), None, detail, now);
        self.audit_entry(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(Feedback {
            id: u64::try_from(id).unwrap_or_default(),
            grant,
            holder: held.holder,
            dataset: held.dataset,
            need_met,
            quality,
            effect,
            given_by,
            given_at: now,
        })
    }
}

impl ControlStore {
    /// The feedback `caller` may read, oldest first: what its department gave, feedback on the
    /// datasets it provides, and all of it for technical support and the S&T authority.
    pub async fn feedback_list(
        &self,
        caller: &Principal,
        filter: &FeedbackFilter,
    ) -> Result<Vec<FeedbackView>, StoreError> {
        let roles = self.roles();
        let supervisor = caller.dept == roles.technical_support || caller.dept == roles.st_authority;
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(
            "SELECT f.id, f.grant_id, f.dept, f.dataset, f.need_met, f.quality, f.effect, f.given_by, \
             f.given_at, d.provider FROM grant_feedback f \
             LEFT JOIN catalog_datasets d ON d.dataset = f.dataset ORDER BY f.id",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut listed = Vec::new();
        for row in &rows {
            let view = feedback_row(row)?;
            let own = view.feedback.holder == caller.dept;
            let provides = view.provider.as_ref() == Some(&caller.dept);
            let wanted = filter.dataset.as_ref().is_none_or(|d| &view.feedback.dataset == d);
            if (supervisor || own || provides) && wanted {
                listed.push(view);
            }
        }
        Ok(listed)
    }
}

fn feedback_row(row: &AnyRow) -> Result<FeedbackView, StoreError> {
    let number = |index: usize| -> Result<u64, StoreError> {
        u64::try_from(row.try_get::<i64, _>(index)?).map_err(corrupt)
    };
    let quality = u8::try_from(number(5)?).map_err(corrupt)?;
    let provider: Option<String> = row.try_get(9)?;
    Ok(FeedbackView {
        feedback: Feedback {
            id: number(0)?,
            grant: GrantId(number(1)?),
            holder: DeptId::new(row.try_get::<String, _>(2)?).map_err(corrupt)?,
            dataset: DatasetId::new(row.try_get::<String, _>(3)?).map_err(corrupt)?,
            need_met: NeedMet::parse(&row.try_get::<String, _>(4)?)?,
            quality,
            effect: row.try_get(6)?,
            given_by: row.try_get(7)?,
            given_at: from_unix(row.try_get(8)?)?,
        },
        provider: provider.map(DeptId::new).transpose().map_err(corrupt)?,
    })
}
