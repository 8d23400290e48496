//! Notices addressed to a grant holder: a disuse warning (revoked at a date unless used), a
//! revocation, a catalog range closed by a change of the items the grant names. `ferry notices`
//! shows them beside the catalog's change notices.
//!
//! Neighbours: written inside the transactions of [`super::disuse`], [`super::revoke`] and
//! [`super::change`]; read by the holder only (as change notices are).

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::{GrantId, IdTable, next_id};
use crate::catalog::read::corrupt;
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, from_unix, unix};

/// What a grant notice tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantNoticeKind {
    /// Unused for 3 months: revoked at `deadline` unless used before (Art. 17).
    DisuseWarning,
    Revoked,
    /// A catalog change dropped an item the grant names: it covers catalog versions up to the
    /// last one before the change.
    RangeClosed,
}

impl GrantNoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DisuseWarning => "disuse-warning",
            Self::Revoked => "revoked",
            Self::RangeClosed => "range-closed",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "disuse-warning" => Ok(Self::DisuseWarning),
            "revoked" => Ok(Self::Revoked),
            "range-closed" => Ok(Self::RangeClosed),
            other => Err(corrupt(format!("grant notice kind {other:?}"))),
        }
    }
}

/// One notice to a grant holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GrantNotice {
    pub grant: GrantId,
    pub dataset: DatasetId,
    pub kind: GrantNoticeKind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Disuse warnings: when the grant is revoked unless used.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    pub text: String,
}

/// Writes a notice to `holder` in the caller's transaction.
pub(crate) async fn insert_notice(
    conn: &mut AnyConnection,
    holder: &DeptId,
    notice: &GrantNotice,
) -> Result<(), StoreError> {
    let id = next_id(&mut *conn, IdTable::GrantNotices).await?;
    sqlx::query(
        "INSERT INTO grant_notices (id, dept, grant_id, dataset, kind, at, deadline, text) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(holder.as_str().to_owned())
    .bind(notice.grant.sql()?)
    .bind(notice.dataset.as_str().to_owned())
    .bind(notice.kind.as_str().to_owned())
    .bind(unix(notice.at))
    .bind(notice.deadline.map(unix))
    .bind(notice.text.clone())
    .execute(conn)
    .await?;
    Ok(())
}

impl ControlStore {
    /// The grant notices of `dept`, newest first; only `dept` itself may read them.
    pub async fn grant_notices(
        &self,
        caller: &Principal,
        dept: &DeptId,
    ) -> Result<Vec<GrantNotice>, StoreError> {
        self.roles.authorize(caller, Action::ReadNotices, Some(dept))?;
        let rows = sqlx::query(
            "SELECT grant_id, dataset, kind, at, deadline, text FROM grant_notices WHERE dept = $1 \
             ORDER BY at DESC, id DESC",
        )
        .bind(dept.as_str().to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(GrantNotice {
                    grant: GrantId(u64::try_from(row.try_get::<i64, _>(0)?).map_err(corrupt)?),
                    dataset: DatasetId::new(row.try_get::<String, _>(1)?).map_err(corrupt)?,
                    kind: GrantNoticeKind::parse(&row.try_get::<String, _>(2)?)?,
                    at: from_unix(row.try_get(3)?)?,
                    deadline: row.try_get::<Option<i64>, _>(4)?.map(from_unix).transpose()?,
                    text: row.try_get(5)?,
                })
            })
            .collect()
    }
}
