//! Revoking a grant (Art. 17): by an operator of the dataset's provider or of technical
//! support, with a reason; anyone else is refused, and the refusal is audited too. One
//! transaction writes the grant's new state, closes an open disuse flag, tells the holder,
//! bumps the policy serial (nodes drop the grant with the next snapshot) and appends the audit
//! entry. The disuse sweep revokes through the same [`revoke_in`].
//!
//! Neighbours: [`super::list`] (the grant read), [`super::notices`], [`super::disuse`].

use ferry_proto::Principal;
use serde_json::json;
use sqlx::AnyConnection;
use time::OffsetDateTime;

use super::list::{GrantState, GrantView, grant_in};
use super::notices::{GrantNotice, GrantNoticeKind, insert_notice};
use super::{GrantId, bounded_text, decision_entry};
use crate::audit::EntryKind;
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, bump_policy_serial, unix};

/// Longest reason a revocation may give, in characters.
pub const MAX_REASON_CHARS: usize = 1024;

/// Who revoked, as the grant row records it.
pub(crate) fn revoker(caller: &Principal) -> String {
    format!("{} ({})", caller.dept, caller.name)
}

/// Revokes `grant` if it is still active: state, disuse flag, the holder's notice and the
/// policy serial, in the caller's transaction. `false` when it was no longer active (nothing
/// written).
pub(crate) async fn revoke_in(
    conn: &mut AnyConnection,
    grant: &GrantView,
    revoked_by: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE grants SET state = 'revoked', revoked_at = $2, revoked_by = $3, reason = $4 \
         WHERE id = $1 AND state = 'active'",
    )
    .bind(grant.id.sql()?)
    .bind(unix(now))
    .bind(revoked_by.to_owned())
    .bind(reason.to_owned())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE grant_disuse SET revoked_at = $2 WHERE grant_id = $1 AND cleared_at IS NULL AND revoked_at IS NULL",
    )
    .bind(grant.id.sql()?)
    .bind(unix(now))
    .execute(&mut *conn)
    .await?;
    let notice = GrantNotice {
        grant: grant.id,
        dataset: grant.dataset.clone(),
        kind: GrantNoticeKind::Revoked,
        at: now,
        deadline: None,
        text: format!("grant {} on {} was revoked by {revoked_by}: {reason}", grant.id, grant.dataset),
    };
    insert_notice(&mut *conn, &grant.holder, &notice).await?;
    bump_policy_serial(&mut *conn).await?;
    Ok(true)
}

impl ControlStore {
    /// Revokes grant `id` as `caller` with `reason` (see the module doc). Returns the grant as
    /// it is now.
    pub async fn revoke_grant(
        &self,
        caller: &Principal,
        id: GrantId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<GrantView, StoreError> {
        let reason = bounded_text("the reason of a revocation", reason, MAX_REASON_CHARS)?;
        let mut tx = self.begin_write().await?;
        let grant = grant_in(&mut tx, id).await?;
        let detail = json!({
            "grant": id.get(),
            "holder": grant.holder.as_str(),
            "provider": grant.provider.as_ref().map(|p| p.as_str()),
            "reason": reason,
        });
        let refusal = match self.roles.authorize(caller, Action::RevokeGrant, grant.provider.as_ref()) {
            Err(forbidden) => Some(("forbidden", forbidden)),
            Ok(()) if grant.state == GrantState::Revoked => {
                Some(("already-revoked", StoreError::Conflict(format!("grant {id} is already revoked"))))
            }
            Ok(()) => None,
        };
        if let Some((why, error)) = refusal {
            let entry =
                decision_entry(EntryKind::GrantRevoked, caller, Some(&grant.dataset), Some(why), detail, now);
            self.audit_entry(&mut tx, &entry).await?;
            tx.commit().await?;
            return Err(error);
        }
        if !revoke_in(&mut tx, &grant, &revoker(caller), &reason, now).await? {
            return Err(StoreError::Conflict(format!("grant {id} changed meanwhile; nothing was written")));
        }
        let mut detail = detail;
        detail["by"] = if caller.dept == self.roles.technical_support {
            "technical-support".into()
        } else {
            "provider".into()
        };
        let entry = decision_entry(EntryKind::GrantRevoked, caller, Some(&grant.dataset), None, detail, now);
        self.audit_entry(&mut tx, &entry).await?;
        let revoked = grant_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}
