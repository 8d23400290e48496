//! Grant lifecycle (Art. 16, 17): listing grants with their last use, revocation by the
//! provider or technical support, the uses nodes report, the disuse sweep that flags a grant
//! unused for 3 months, warns its holder and revokes it after a notice period, and the notices
//! grant holders get.
//!
//! Grants are made by the applications module (table `grants`, migration 0200); this module
//! only changes their state, `last_used_at` and `catalog_to`. Every change of a grant bumps the
//! policy serial in its own transaction, together with its audit entry, so nodes get it in the
//! next snapshot. Submodules: [`list`] (reading), [`revoke`], [`uses`] (report-use),
//! [`disuse`] (the sweep), [`notices`] (what a holder is told), [`change`] (catalog changes
//! that close a grant's catalog range).
//!
//! Neighbours: [`crate::store::ControlStore`] (the tables), [`crate::roles`] (who may),
//! [`crate::catalog::change`] (change control counts grant holders as consumers).

pub mod change;
pub mod disuse;
pub mod list;
pub mod notices;
pub mod revoke;
pub mod uses;

pub use disuse::{DisuseDecision, DisuseSweep, SweepReport};
pub use list::{GrantFilter, GrantState, GrantView};
pub use notices::{GrantNotice, GrantNoticeKind};
pub use uses::{PublishRefusalReport, UseReport, UsesRecorded};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The control plane's number of a grant (`grants.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrantId(pub u64);

impl GrantId {
    pub fn get(self) -> u64 {
        self.0
    }

    pub(crate) fn sql(self) -> Result<i64, crate::store::StoreError> {
        i64::try_from(self.0).map_err(|_| crate::store::StoreError::NotFound(format!("grant {}", self.0)))
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Settings of the lifecycle, from the ministry's `[control]` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// Days between the disuse warning and the revocation (`disuse-notice-days`, default 30).
    pub disuse_notice_days: u32,
    /// Working days a provider has to answer a quality issue (`quality-answer-days`, default 5).
    pub quality_answer_days: u32,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self { disuse_notice_days: 30, quality_answer_days: 5 }
    }
}

/// Months without use after which a grant is flagged (Art. 17).
pub const DISUSE_MONTHS: u32 = 3;

/// The tables whose rows are numbered by [`next_id`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdTable {
    GrantNotices,
    GrantFeedback,
    QualityIssues,
    RectificationNotices,
}

/// The next id of `table` (its `id` column), inside the caller's write transaction.
pub(crate) async fn next_id(
    conn: &mut sqlx::AnyConnection,
    table: IdTable,
) -> Result<i64, crate::store::StoreError> {
    use sqlx::Row;
    let query = match table {
        IdTable::GrantNotices => "SELECT COALESCE(MAX(id), 0) + 1 FROM grant_notices",
        IdTable::GrantFeedback => "SELECT COALESCE(MAX(id), 0) + 1 FROM grant_feedback",
        IdTable::QualityIssues => "SELECT COALESCE(MAX(id), 0) + 1 FROM quality_issues",
        IdTable::RectificationNotices => "SELECT COALESCE(MAX(id), 0) + 1 FROM rectification_notices",
    };
    let row = sqlx::query(query).fetch_one(conn).await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Text a caller gives (a reason, an effect, an issue): trimmed, non-empty, bounded.
pub(crate) fn bounded_text(
    what: &str,
    text: &str,
    max_chars: usize,
) -> Result<String, crate::store::StoreError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(crate::store::StoreError::Invalid(format!("{what} must not be empty")));
    }
    if text.chars().count() > max_chars {
        return Err(crate::store::StoreError::Invalid(format!(
            "{what} is longer than {max_chars} characters"
        )));
    }
    Ok(text.to_owned())
}

/// The audit entry of a lifecycle decision by `actor` at `at`.
pub(crate) fn decision_entry(
    kind: crate::audit::EntryKind,
    actor: &ferry_proto::Principal,
    dataset: Option<&ferry_proto::DatasetId>,
    refused: Option<&str>,
    detail: serde_json::Value,
    at: time::OffsetDateTime,
) -> crate::audit::NewEntry {
    use crate::audit::{Actor, Outcome};
    crate::audit::NewEntry {
        time_ms: crate::plane::unix_ms(at),
        kind,
        actor: Actor::from(actor),
        dataset: dataset.cloned(),
        outcome: if refused.is_some() { Outcome::Refused } else { Outcome::Accepted },
        reason: refused.map(|r| r.chars().take(512).collect()).unwrap_or_default(),
        detail: crate::audit::bounded_detail(detail),
    }
}
