//! Publication status and the facts receipts state (Art. 20).
//!
//! A pre-catalog entry that passes gets a pre-catalog receipt at registration. A formal entry
//! gets a formal receipt only once its data is connected: at least one version of the dataset
//! published ([`ControlStore::record_publication`]); the connection deadline (registration +
//! 6 months) is stored with the version. The signed receipt document is built from
//! [`ReceiptFacts`] by [`crate::receipt`].

use ferry_proto::{DatasetId, Principal, VersionNo};
use ferry_tables::catalog::Stage;
use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::read::{corrupt, version_number};
use crate::roles::Action;
use crate::store::{ControlEvent, ControlEventKind, ControlStore, StoreError, from_unix, unix};

/// The two receipts of Art. 20: one type for the facts the catalog keeps and the documents the
/// receipt book signs.
pub use crate::receipt::ReceiptKind;

/// What a receipt for one catalog version can state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptFacts {
    pub dataset: DatasetId,
    pub catalog_version: u64,
    pub provider: ferry_proto::DeptId,
    pub stage: Stage,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    /// Formal entries: data must be connected by then.
    #[serde(with = "time::serde::rfc3339::option")]
    pub connection_deadline: Option<OffsetDateTime>,
    /// When the first version of the dataset was published, if yet.
    #[serde(with = "time::serde::rfc3339::option")]
    pub connected_at: Option<OffsetDateTime>,
    /// The receipts due for this catalog version and since when.
    pub receipts: Vec<(ReceiptKind, i64)>,
}

pub(crate) async fn is_connected(conn: &mut AnyConnection, dataset: &DatasetId) -> Result<bool, StoreError> {
    Ok(first_publication(conn, dataset).await?.is_some())
}

async fn first_publication(conn: &mut AnyConnection, dataset: &DatasetId) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT MIN(published_at) FROM catalog_publications WHERE dataset = $1")
        .bind(dataset.as_str().to_owned())
        .fetch_one(conn)
        .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

pub(crate) async fn insert_receipt(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
    catalog_version: u64,
    kind: ReceiptKind,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO receipt_facts (dataset, catalog_version, kind, issued_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(dataset.as_str().to_owned())
    .bind(i64::try_from(catalog_version).map_err(corrupt)?)
    .bind(kind.as_str().to_owned())
    .bind(unix(at))
    .execute(conn)
    .await?;
    Ok(())
}

impl ControlStore {
    /// Records that `version` of `dataset` was published following `catalog_version`. The
    /// first publication connects the data: every formal version still without a formal
    /// receipt gets one. Returns the catalog versions that got a formal receipt now.
    pub async fn record_publication(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        version: VersionNo,
        catalog_version: u64,
        at: OffsetDateTime,
    ) -> Result<Vec<u64>, StoreError> {
        self.roles.authorize(caller, Action::RecordPublication, None)?;
        let mut tx = self.begin_write().await?;
        let number = i64::try_from(catalog_version).map_err(corrupt)?;
        let known = sqlx::query("SELECT 1 FROM catalog_versions WHERE dataset = $1 AND catalog_version = $2")
            .bind(dataset.as_str().to_owned())
            .bind(number)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("{dataset} catalog version {catalog_version}")));
        }
        sqlx::query(
            "INSERT INTO catalog_publications (dataset, version, catalog_version, published_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(dataset.as_str().to_owned())
        .bind(i64::try_from(version.get()).map_err(corrupt)?)
        .bind(number)
        .bind(unix(at))
        .execute(&mut *tx)
        .await?;
        let pending = sqlx::query(
            "SELECT v.catalog_version FROM catalog_versions v WHERE v.dataset = $1 AND v.stage = 'formal' \
             AND NOT EXISTS (SELECT 1 FROM receipt_facts r WHERE r.dataset = v.dataset \
             AND r.catalog_version = v.catalog_version AND r.kind = 'formal') ORDER BY v.catalog_version",
        )
        .bind(dataset.as_str().to_owned())
        .fetch_all(&mut *tx)
        .await?;
        let mut issued = Vec::with_capacity(pending.len());
        for row in &pending {
            let pending_version = version_number(row.try_get(0)?)?;
            insert_receipt(&mut tx, dataset, pending_version, ReceiptKind::Formal, at).await?;
            issued.push(pending_version);
        }
        let event = ControlEvent {
            kind: ControlEventKind::Published,
            dataset: dataset.clone(),
            dept: caller.dept.clone(),
            actor: caller.clone(),
            catalog_version: Some(catalog_version),
            at: unix(at),
            detail: json!({ "version": version.get(), "formal-receipts": issued }),
        };
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// The receipt facts of one catalog version; for its provider, technical support and the
    /// S&T authority.
    pub async fn receipt_facts(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        catalog_version: u64,
    ) -> Result<ReceiptFacts, StoreError> {
        let stored = self.entry(caller, dataset, Some(catalog_version)).await?;
        self.roles.authorize(caller, Action::ReadReceiptFacts, Some(stored.entry.provider()))?;
        let mut conn = self.pool().acquire().await?;
        // The receipts before the first publication: a publication and the formal receipt it
        // makes due commit together, and each statement here reads its own snapshot, so read
        // the other way round a report landing in between showed a formal receipt due with no
        // publication (a receipts call then failed as an internal error).
        let rows = sqlx::query(
            "SELECT kind, issued_at FROM receipt_facts WHERE dataset = $1 AND catalog_version = $2 ORDER BY issued_at",
        )
        .bind(dataset.as_str().to_owned())
        .bind(i64::try_from(catalog_version).map_err(corrupt)?)
        .fetch_all(&mut *conn)
        .await?;
        let connected_at = first_publication(&mut conn, dataset).await?.map(from_unix).transpose()?;
        let mut receipts = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind = match row.try_get::<String, _>(0)?.as_str() {
                "pre-catalog" => ReceiptKind::PreCatalog,
                "formal" => ReceiptKind::Formal,
                other => return Err(corrupt(format!("receipt kind {other:?}"))),
            };
            receipts.push((kind, row.try_get::<i64, _>(1)?));
        }
        Ok(ReceiptFacts {
            dataset: dataset.clone(),
            catalog_version,
            provider: stored.entry.provider().clone(),
            stage: stored.entry.stage,
            registered_at: stored.registered_at,
            connection_deadline: stored.connection_deadline,
            connected_at,
            receipts,
        })
    }
}
