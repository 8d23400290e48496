//! The disuse sweep (Art. 17): a grant unused for [`DISUSE_MONTHS`] months is flagged and its
//! holder warned; unless it is used meanwhile it is revoked when the notice period
//! (`disuse-notice-days`) ends.
//!
//! The facts live in the database (`grant_disuse`: one row per flag, open until cleared by a
//! use or closed by the revocation), so the sweep is idempotent and crash-safe: each decision
//! (flag and warn, clear, revoke) is one transaction with its audit entry, taken on the grant's
//! state as read inside that transaction; running it again at the same time decides nothing
//! new, and a crash between two grants leaves the rest for the next run. "Unused" counts from
//! the last use nodes reported (`grants.last_used_at`), or from the grant's date if never used.
//!
//! Neighbours: [`super::uses`] moves `last_used_at`; [`super::revoke::revoke_in`] revokes;
//! the ministry node runs [`ControlStore::sweep_disuse`] on a timer through the plane.

use ferry_proto::Principal;
use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};
use time::{Duration, OffsetDateTime};

use super::list::{GrantState, GrantView, all_grants, grant_in};
use super::notices::{GrantNotice, GrantNoticeKind, insert_notice};
use super::revoke::revoke_in;
use super::{DISUSE_MONTHS, GrantId, decision_entry};
use crate::audit::EntryKind;
use crate::catalog::change::months_after;
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, unix};

/// The sweep's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisuseSweep {
    /// Days between the warning and the revocation.
    pub notice_days: u32,
}

/// One decision of a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum DisuseDecision {
    /// Unused for 3 months: flagged, holder warned; revoked at `revoke_after` unless used.
    Flagged {
        grant: GrantId,
        #[serde(with = "time::serde::rfc3339")]
        revoke_after: OffsetDateTime,
    },
    /// Used after the warning: the flag is cleared.
    Cleared { grant: GrantId },
    /// The notice period ended without a use: revoked.
    Revoked { grant: GrantId },
}

/// What one run of the sweep decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SweepReport {
    /// Active grants looked at.
    pub checked: usize,
    pub decisions: Vec<DisuseDecision>,
}

/// An open flag of a grant.
struct OpenFlag {
    flagged_at: i64,
    last_use: Option<i64>,
    revoke_after: i64,
}

async fn open_flag(conn: &mut AnyConnection, grant: GrantId) -> Result<Option<OpenFlag>, StoreError> {
    let row = sqlx::query(
        "SELECT flagged_at, last_use, revoke_after FROM grant_disuse WHERE grant_id = $1 \
         AND cleared_at IS NULL AND revoked_at IS NULL ORDER BY flagged_at DESC",
    )
    .bind(grant.sql()?)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(OpenFlag { flagged_at: r.try_get(0)?, last_use: r.try_get(1)?, revoke_after: r.try_get(2)? })
    })
    .transpose()
}

impl ControlStore {
    /// Runs the sweep at `now` as the platform (see the module doc).
    pub async fn sweep_disuse(
        &self,
        caller: &Principal,
        sweep: DisuseSweep,
        now: OffsetDateTime,
    ) -> Result<SweepReport, StoreError> {
        self.roles.authorize(caller, Action::RecordUse, None)?;
        let mut conn = self.pool().acquire().await?;
        let active: Vec<GrantId> = all_grants(&mut conn)
            .await?
            .into_iter()
            .filter(|g| g.state == GrantState::Active)
            .map(|g| g.id)
            .collect();
        drop(conn);
        let mut report = SweepReport { checked: active.len(), decisions: Vec::new() };
        for id in active {
            if let Some(decision) = self.decide_disuse(caller, id, sweep, now).await? {
                report.decisions.push(decision);
            }
        }
        Ok(report)
    }

    /// One grant's decision, in one transaction.
    async fn decide_disuse(
        &self,
        caller: &Principal,
        id: GrantId,
        sweep: DisuseSweep,
        now: OffsetDateTime,
    ) -> Result<Option<DisuseDecision>, StoreError> {
        let mut tx = self.begin_write().await?;
        // A no-op write takes the grant's row lock on PostgreSQL (SQLite's writer holds the
        // whole file), so a use reported meanwhile waits for this decision, or comes first.
        sqlx::query("UPDATE grants SET state = state WHERE id = $1")
            .bind(id.sql()?)
            .execute(&mut *tx)
            .await?;
        let grant = grant_in(&mut tx, id).await?;
        if grant.state != GrantState::Active {
            return Ok(None);
        }
        let decision = match open_flag(&mut tx, id).await? {
            Some(flag) if grant.last_used_at.map(unix) > flag.last_use => {
                self.clear_flag(&mut tx, caller, &grant, &flag, now).await?
            }
            Some(flag) if unix(now) >= flag.revoke_after => {
                self.revoke_unused(&mut tx, caller, &grant, now).await?
            }
            Some(_) => None,
            None => {
                let since = grant.last_used_at.unwrap_or(grant.granted_at);
                if months_after(since, DISUSE_MONTHS)? <= now {
                    self.flag(&mut tx, caller, &grant, sweep, now).await?
                } else {
                    None
                }
            }
        };
        if decision.is_some() {
            tx.commit().await?;
        }
        Ok(decision)
    }

    async fn flag(
        &self,
        conn: &mut AnyConnection,
        caller: &Principal,
        grant: &GrantView,
        sweep: DisuseSweep,
        now: OffsetDateTime,
    ) -> Result<Option<DisuseDecision>, StoreError> {
        let revoke_after = now + Duration::days(i64::from(sweep.notice_days));
        sqlx::query(
            "INSERT INTO grant_disuse (grant_id, flagged_at, last_use, revoke_after) VALUES ($1, $2, $3, $4)",
        )
        .bind(grant.id.sql()?)
        .bind(unix(now))
        .bind(grant.last_used_at.map(unix))
        .bind(unix(revoke_after))
        .execute(&mut *conn)
        .await?;
        let unused_since = grant.last_used_at.unwrap_or(grant.granted_at);
        let notice = GrantNotice {
            grant: grant.id,
            dataset: grant.dataset.clone(),
            kind: GrantNoticeKind::DisuseWarning,
            at: now,
            deadline: Some(revoke_after),
            text: format!(
                "grant {} on {} has not been used since {}; it will be revoked after {} unless used (Art. 17)",
                grant.id,
                grant.dataset,
                unused_since.date(),
                revoke_after.date()
            ),
        };
        insert_notice(&mut *conn, &grant.holder, &notice).await?;
        let detail = json!({
            "grant": grant.id.get(),
            "holder": grant.holder.as_str(),
            "step": "flagged-and-warned",
            "unused-since": unix(unused_since),
            "revoke-after": unix(revoke_after),
        });
        let entry = decision_entry(EntryKind::GrantDisuse, caller, Some(&grant.dataset), None, detail, now);
        self.audit_entry(conn, &entry).await?;
        Ok(Some(DisuseDecision::Flagged { grant: grant.id, revoke_after }))
    }

    async fn clear_flag(
        &self,
        conn: &mut AnyConnection,
        caller: &Principal,
        grant: &GrantView,
        flag: &OpenFlag,
        now: OffsetDateTime,
    ) -> Result<Option<DisuseDecision>, StoreError> {
        sqlx::query("UPDATE grant_disuse SET cleared_at = $3 WHERE grant_id = $1 AND flagged_at = $2")
            .bind(grant.id.sql()?)
            .bind(flag.flagged_at)
            .bind(unix(now))
            .execute(&mut *conn)
            .await?;
        let detail = json!({
            "grant": grant.id.get(),
            "holder": grant.holder.as_str(),
            "step": "cleared-by-use",
            "flagged-at": flag.flagged_at,
            "used-at": grant.last_used_at.map(unix),
        });
        let entry = decision_entry(EntryKind::GrantDisuse, caller, Some(&grant.dataset), None, detail, now);
        self.audit_entry(conn, &entry).await?;
        Ok(Some(DisuseDecision::Cleared { grant: grant.id }))
    }

    async fn revoke_unused(
        &self,
        conn: &mut AnyConnection,
        caller: &Principal,
        grant: &GrantView,
        now: OffsetDateTime,
    ) -> Result<Option<DisuseDecision>, StoreError> {
        let since = grant.last_used_at.unwrap_or(grant.granted_at);
        let reason = format!("unused since {} and not used within the notice period (Art. 17)", since.date());
        if !revoke_in(&mut *conn, grant, "disuse sweep", &reason, now).await? {
            return Ok(None);
        }
        let detail = json!({
            "grant": grant.id.get(),
            "holder": grant.holder.as_str(),
            "by": "disuse",
            "reason": reason,
            "unused-since": unix(since),
        });
        let entry = decision_entry(EntryKind::GrantRevoked, caller, Some(&grant.dataset), None, detail, now);
        self.audit_entry(conn, &entry).await?;
        Ok(Some(DisuseDecision::Revoked { grant: grant.id }))
    }
}
