//! Reading the catalog: one version of an entry, its history, the list, the version in effect
//! at a time, and the diff of two versions. Old versions stay readable forever.
//!
//! Visibility ([`crate::roles`]): a not-shared entry is reported as not found to departments
//! other than its provider, technical support and the S&T authority.

use ferry_proto::{DatasetId, DeptId, Principal, ShareType};
use ferry_tables::catalog::{CatalogEntry, Stage};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::diff::{CatalogDiff, diff_entries};
use crate::store::{ControlStore, StoreError, from_unix, unix};

/// One catalog version of an entry, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEntry {
    pub dataset: DatasetId,
    pub catalog_version: u64,
    pub registered_by: DeptId,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    /// Whether this version changed the information items of the version in effect before it.
    pub items_changed: bool,
    /// Formal entries: the date by which data must be connected (registered + 6 months).
    #[serde(with = "time::serde::rfc3339::option")]
    pub connection_deadline: Option<OffsetDateTime>,
    /// The entry as TOML (`ferry_tables::catalog`'s document).
    pub document: String,
    #[serde(skip)]
    pub entry: CatalogEntry,
}

/// One line of an entry's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionSummary {
    pub catalog_version: u64,
    pub registered_by: DeptId,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    pub stage: Stage,
    pub share_type: ShareType,
    pub items_fingerprint: String,
    pub items_changed: bool,
}

/// One line of the catalog list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedEntry {
    pub dataset: DatasetId,
    pub provider: DeptId,
    pub name: String,
    pub classification: String,
    pub share_type: ShareType,
    pub stage: Stage,
    pub latest_version: u64,
    /// The version in effect at the time asked, if any yet.
    pub in_effect_version: Option<u64>,
}

/// `SELECT <the columns [stored_entry] reads> FROM catalog_versions <rest>`, as a literal.
macro_rules! select_versions {
    ($rest:literal) => {
        concat!(
            "SELECT dataset, catalog_version, registered_by, registered_at, effective_from, items_changed, \
             connection_deadline, document FROM catalog_versions ",
            $rest
        )
    };
}
pub(crate) use select_versions;

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn version_number(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(corrupt)
}

pub(crate) fn stored_entry(row: &AnyRow) -> Result<StoredEntry, StoreError> {
    let document: String = row.try_get(7)?;
    let entry = CatalogEntry::parse_toml(&document).map_err(corrupt)?;
    let deadline: Option<i64> = row.try_get(6)?;
    Ok(StoredEntry {
        dataset: DatasetId::new(row.try_get::<String, _>(0)?).map_err(corrupt)?,
        catalog_version: version_number(row.try_get(1)?)?,
        registered_by: DeptId::new(row.try_get::<String, _>(2)?).map_err(corrupt)?,
        registered_at: from_unix(row.try_get(3)?)?,
        effective_from: from_unix(row.try_get(4)?)?,
        items_changed: row.try_get::<i64, _>(5)? != 0,
        connection_deadline: deadline.map(from_unix).transpose()?,
        document,
        entry,
    })
}

/// The latest version of `dataset`, if registered.
pub(crate) async fn latest(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
) -> Result<Option<StoredEntry>, StoreError> {
    let sql = select_versions!("WHERE dataset = $1 ORDER BY catalog_version DESC LIMIT 1");
    let row = sqlx::query(sql).bind(dataset.as_str().to_owned()).fetch_optional(conn).await?;
    row.as_ref().map(stored_entry).transpose()
}

/// The version of `dataset` in effect at `at`: the highest whose effective date is <= `at`.
/// Effective dates never decrease with the version number (registration refuses that).
pub(crate) async fn in_effect_at(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
    at: OffsetDateTime,
) -> Result<Option<StoredEntry>, StoreError> {
    let sql =
        select_versions!("WHERE dataset = $1 AND effective_from <= $2 ORDER BY catalog_version DESC LIMIT 1");
    let row = sqlx::query(sql).bind(dataset.as_str().to_owned()).bind(unix(at)).fetch_optional(conn).await?;
    row.as_ref().map(stored_entry).transpose()
}

impl ControlStore {
    /// Fails with not found unless `caller` may see `entry`.
    fn visible(&self, caller: &Principal, entry: &StoredEntry) -> Result<(), StoreError> {
        if self.roles.may_see(caller, entry.entry.provider(), entry.entry.share_type()) {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("dataset {}", entry.dataset)))
        }
    }

    /// The latest version's visibility decides for the whole entry.
    async fn visible_dataset(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
    ) -> Result<StoredEntry, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let latest = latest(&mut conn, dataset).await?;
        let latest = latest.ok_or_else(|| StoreError::NotFound(format!("dataset {dataset}")))?;
        self.visible(caller, &latest)?;
        Ok(latest)
    }

    /// Catalog version `version` of `dataset`, or its latest.
    pub async fn entry(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        version: Option<u64>,
    ) -> Result<StoredEntry, StoreError> {
        let latest = self.visible_dataset(caller, dataset).await?;
        let Some(version) = version.filter(|v| *v != latest.catalog_version) else { return Ok(latest) };
        let sql = select_versions!("WHERE dataset = $1 AND catalog_version = $2");
        let number = i64::try_from(version)
            .map_err(|_| StoreError::NotFound(format!("{dataset} version {version}")))?;
        let row = sqlx::query(sql)
            .bind(dataset.as_str().to_owned())
            .bind(number)
            .fetch_optional(self.pool())
            .await?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("{dataset} catalog version {version}")))?;
        stored_entry(&row)
    }

    /// The version of `dataset` in effect at `at` (not found before its first effective date).
    pub async fn in_effect(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        at: OffsetDateTime,
    ) -> Result<StoredEntry, StoreError> {
        self.visible_dataset(caller, dataset).await?;
        let mut conn = self.pool().acquire().await?;
        let found = in_effect_at(&mut conn, dataset, at).await?;
        found.ok_or_else(|| StoreError::NotFound(format!("{dataset}: no catalog version in effect at {at}")))
    }

    /// Every version of `dataset`, oldest first.
    pub async fn history(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
    ) -> Result<Vec<VersionSummary>, StoreError> {
        self.visible_dataset(caller, dataset).await?;
        let sql = select_versions!("WHERE dataset = $1 ORDER BY catalog_version");
        let rows = sqlx::query(sql).bind(dataset.as_str().to_owned()).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let stored = stored_entry(row)?;
                Ok(VersionSummary {
                    catalog_version: stored.catalog_version,
                    registered_by: stored.registered_by,
                    registered_at: stored.registered_at,
                    effective_from: stored.effective_from,
                    stage: stored.entry.stage,
                    share_type: stored.entry.share_type(),
                    items_fingerprint: stored.entry.items_fingerprint(),
                    items_changed: stored.items_changed,
                })
            })
            .collect()
    }

    /// Field-by-field and item-by-item differences from version `from` to version `to`.
    pub async fn diff(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        from: u64,
        to: u64,
    ) -> Result<CatalogDiff, StoreError> {
        let before = self.entry(caller, dataset, Some(from)).await?;
        let after = self.entry(caller, dataset, Some(to)).await?;
        Ok(diff_entries(dataset.clone(), (from, &before.entry), (to, &after.entry)))
    }

    /// Every entry the caller may see, by dataset id, with the version in effect at `at`.
    pub async fn list(&self, caller: &Principal, at: OffsetDateTime) -> Result<Vec<ListedEntry>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query("SELECT dataset FROM catalog_datasets ORDER BY dataset")
            .fetch_all(&mut *conn)
            .await?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in &rows {
            let dataset = DatasetId::new(row.try_get::<String, _>(0)?).map_err(corrupt)?;
            let Some(latest) = latest(&mut conn, &dataset).await? else { continue };
            if self.visible(caller, &latest).is_err() {
                continue;
            }
            let in_effect = in_effect_at(&mut conn, &dataset, at).await?;
            let entry = &latest.entry;
            listed.push(ListedEntry {
                dataset,
                provider: entry.provider().clone(),
                name: entry.definition.name.clone(),
                classification: entry.classification.to_string(),
                share_type: entry.share_type(),
                stage: entry.stage,
                latest_version: latest.catalog_version,
                in_effect_version: in_effect.map(|e| e.catalog_version),
            });
        }
        Ok(listed)
    }
}
