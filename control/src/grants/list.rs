//! Reading grants: one [`GrantView`] per row of `grants`, with the dataset's provider, the
//! holder's last use and an open disuse warning, for `ferry grant list` and the other
//! lifecycle steps.
//!
//! Who sees what: technical support and the S&T authority every grant; a department the grants
//! it holds and the grants on the datasets it provides. Neighbours: [`super::revoke`] and
//! [`super::disuse`] read one grant through [`grant_in`].

use ferry_proto::{DatasetId, DeptId, Principal, ServiceMethod};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::GrantId;
use crate::catalog::read::corrupt;
use crate::store::{ControlStore, StoreError, from_unix};

/// Whether a grant is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantState {
    Active,
    Revoked,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "active" => Ok(Self::Active),
            "revoked" => Ok(Self::Revoked),
            other => Err(corrupt(format!("grant state {other:?}"))),
        }
    }
}

/// One grant as `ferry grant list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GrantView {
    pub id: GrantId,
    pub application: u64,
    pub holder: DeptId,
    pub dataset: DatasetId,
    /// The dataset's provider (absent if the catalog no longer knows the dataset).
    pub provider: Option<DeptId>,
    pub purpose: String,
    pub methods: Vec<ServiceMethod>,
    /// Permitted columns; `None`: every column.
    pub columns: Option<Vec<String>>,
    /// Permitted rows (a row filter's text); `None`: every row.
    pub rows: Option<String>,
    pub catalog_from: u64,
    /// `None`: every later catalog version.
    pub catalog_to: Option<u64>,
    pub state: GrantState,
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revoked_by: Option<String>,
    pub reason: Option<String>,
    /// The holder's last transfer or query under it, as nodes reported it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// An open disuse warning: revoked at this time unless used before.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoke_after: Option<OffsetDateTime>,
}

/// What `ferry grant list` narrows to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub dataset: Option<DatasetId>,
    pub holder: Option<DeptId>,
}

/// `SELECT` of every [`GrantView`] field, then `$tail` (a static string, as sqlx asks).
macro_rules! select_grants {
    ($tail:literal) => {
        concat!(
            "SELECT g.id, g.application, g.dept, g.dataset, g.purpose, g.methods, g.restriction_columns, \
             g.restriction_rows, g.catalog_from, g.catalog_to, g.granted_at, g.state, g.revoked_at, \
             g.revoked_by, g.reason, g.last_used_at, d.provider, \
             (SELECT MAX(u.revoke_after) FROM grant_disuse u WHERE u.grant_id = g.id \
              AND u.cleared_at IS NULL AND u.revoked_at IS NULL) \
             FROM grants g LEFT JOIN catalog_datasets d ON d.dataset = g.dataset ",
            $tail
        )
    };
}

fn number(row: &AnyRow, index: usize) -> Result<u64, StoreError> {
    u64::try_from(row.try_get::<i64, _>(index)?).map_err(corrupt)
}

fn optional_time(row: &AnyRow, index: usize) -> Result<Option<OffsetDateTime>, StoreError> {
    row.try_get::<Option<i64>, _>(index)?.map(from_unix).transpose()
}

pub(crate) fn parse_methods(text: &str) -> Result<Vec<ServiceMethod>, StoreError> {
    text.split(',').filter(|m| !m.is_empty()).map(|m| m.parse().map_err(corrupt)).collect()
}

fn grant_view(row: &AnyRow) -> Result<GrantView, StoreError> {
    let columns: Option<String> = row.try_get(6)?;
    let columns = columns.map(|c| serde_json::from_str::<Vec<String>>(&c).map_err(corrupt)).transpose()?;
    let catalog_to: Option<i64> = row.try_get(9)?;
    let provider: Option<String> = row.try_get(16)?;
    Ok(GrantView {
        id: GrantId(number(row, 0)?),
        application: number(row, 1)?,
        holder: DeptId::new(row.try_get::<String, _>(2)?).map_err(corrupt)?,
        dataset: DatasetId::new(row.try_get::<String, _>(3)?).map_err(corrupt)?,
        provider: provider.map(DeptId::new).transpose().map_err(corrupt)?,
        purpose: row.try_get(4)?,
        methods: parse_methods(&row.try_get::<String, _>(5)?)?,
        columns,
        rows: row.try_get(7)?,
        catalog_from: number(row, 8)?,
        catalog_to: catalog_to.map(u64::try_from).transpose().map_err(corrupt)?,
        granted_at: from_unix(row.try_get(10)?)?,
        state: GrantState::parse(&row.try_get::<String, _>(11)?)?,
        revoked_at: optional_time(row, 12)?,
        revoked_by: row.try_get(13)?,
        reason: row.try_get(14)?,
        last_used_at: optional_time(row, 15)?,
        revoke_after: optional_time(row, 17)?,
    })
}

/// One grant, read in the caller's transaction.
pub(crate) async fn grant_in(conn: &mut AnyConnection, id: GrantId) -> Result<GrantView, StoreError> {
    let row = sqlx::query(select_grants!("WHERE g.id = $1"))
        .bind(id.sql()?)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("grant {id}")))?;
    grant_view(&row)
}

/// Every grant, in id order.
pub(crate) async fn all_grants(conn: &mut AnyConnection) -> Result<Vec<GrantView>, StoreError> {
    let rows = sqlx::query(select_grants!("ORDER BY g.id")).fetch_all(conn).await?;
    rows.iter().map(grant_view).collect()
}

impl ControlStore {
    /// The grants `caller` may see (see the module doc), narrowed by `filter`.
    pub async fn grants(
        &self,
        caller: &Principal,
        filter: &GrantFilter,
    ) -> Result<Vec<GrantView>, StoreError> {
        let roles = self.roles();
        let supervisor = caller.dept == roles.technical_support || caller.dept == roles.st_authority;
        let mut conn = self.pool().acquire().await?;
        let grants = all_grants(&mut conn).await?;
        Ok(grants
            .into_iter()
            .filter(|g| supervisor || g.holder == caller.dept || g.provider.as_ref() == Some(&caller.dept))
            .filter(|g| filter.dataset.as_ref().is_none_or(|d| &g.dataset == d))
            .filter(|g| filter.holder.as_ref().is_none_or(|d| &g.holder == d))
            .collect())
    }

    /// One grant, for whoever may see it ([`ControlStore::grants`]'s rule); others get
    /// `NotFound`, so a grant's existence does not leak.
    pub async fn grant(&self, caller: &Principal, id: GrantId) -> Result<GrantView, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let grant = grant_in(&mut conn, id).await?;
        let roles = self.roles();
        let visible = caller.dept == roles.technical_support
            || caller.dept == roles.st_authority
            || grant.holder == caller.dept
            || grant.provider.as_ref() == Some(&caller.dept);
        if visible { Ok(grant) } else { Err(StoreError::NotFound(format!("grant {id}"))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_stored_as_wire_names_joined_by_commas() {
        assert_eq!(
            parse_methods("online-query,download").unwrap(),
            [ServiceMethod::OnlineQuery, ServiceMethod::Download]
        );
        assert!(parse_methods("").unwrap().is_empty());
        assert!(matches!(parse_methods("fax"), Err(StoreError::Corrupt(_))));
    }
}
