//! A holder's feedback on a grant (Art. 17): whether the data met the need, its quality (1–5)
//! and the effect of its use. Only an operator of the holder gives it; a refusal is audited.
//! Feedback is kept as given (rows are never changed); the latest is the holder's view.
//!
//! Neighbours: [`crate::grants::list`] reads the grant.

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::EntryKind;
use crate::grants::list::grant_in;
use crate::grants::{GrantId, IdTable, bounded_text, decision_entry, next_id};
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, unix};

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
