//! Registering a catalog entry: the compliance check first, then the provider binding, the
//! change-control rule of Art. 9, and one transaction that writes the new version, the
//! consumers' notices, the receipt facts, the policy serial and the audit entry.
//!
//! A refusal (compliance, provider binding, too early) is itself recorded, in its own
//! transaction, before the error is returned.

use ferry_proto::{DatasetId, DeptId, Principal};
use ferry_tables::catalog::{CatalogEntry, CheckContext, ComplianceReport, Stage, check};
use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::change::{CHANGE_NOTICE_MONTHS, CONNECTION_MONTHS, consumers_in_use, months_after};
use super::publication::{ReceiptKind, insert_receipt, is_connected};
use super::read::{StoredEntry, in_effect_at, latest};
use crate::roles::Action;
use crate::store::{ControlEvent, ControlEventKind, ControlStore, StoreError, bump_policy_serial, unix};

/// What a successful registration made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    pub dataset: DatasetId,
    pub catalog_version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    /// Passed (empty), kept for the receipt and the record.
    pub compliance: ComplianceReport,
    /// The receipt now due (pre-catalog at once; formal once data is connected).
    pub receipt_kind: Option<ReceiptKind>,
    /// Formal entries: data must be connected by then (registered + 6 months).
    #[serde(with = "time::serde::rfc3339::option")]
    pub connection_deadline: Option<OffsetDateTime>,
    /// Whether the information items differ from the version in effect.
    pub items_changed: bool,
    /// Consumers told of the change (Art. 9).
    pub notified: Vec<DeptId>,
}

/// Why a registration was refused, for the refusals table.
struct Refusal {
    reason: &'static str,
    detail: serde_json::Value,
    error: StoreError,
}

/// The decided shape of a new version, before it is written.
struct Plan {
    catalog_version: u64,
    effective_from: OffsetDateTime,
    items_changed: bool,
    notify: Vec<DeptId>,
    previous_version: u64,
    /// Columns of the version compared against that this one drops (grants naming them close).
    dropped: Vec<String>,
}

impl ControlStore {
    /// Registers `entry` as the next catalog version of its dataset, effective at
    /// `effective_from` (default: `now`). See the module doc for the order of checks.
    pub async fn register(
        &self,
        caller: &Principal,
        entry: CatalogEntry,
        effective_from: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Registered, StoreError> {
        self.roles.authorize(caller, Action::Register, Some(entry.provider()))?;
        let compliance = check(&entry, &CheckContext { registrant: Some(caller.dept.clone()) });
        if !compliance.passed() {
            let detail = serde_json::to_value(&compliance).unwrap_or_default();
            let error = StoreError::ComplianceFailed(compliance);
            return Err(self
                .refuse(caller, entry.dataset(), now, Refusal { reason: "compliance", detail, error })
                .await);
        }
        let mut tx = self.begin_write().await?;
        let plan = match plan(&mut tx, &entry, effective_from, now).await? {
            Ok(plan) => plan,
            Err(refusal) => {
                drop(tx);
                return Err(self.refuse(caller, entry.dataset(), now, refusal).await);
            }
        };
        let registered = self.write_version(&mut tx, caller, &entry, &plan, now).await?;
        tx.commit().await?;
        Ok(Registered { compliance, ..registered })
    }

    async fn write_version(
        &self,
        conn: &mut AnyConnection,
        caller: &Principal,
        entry: &CatalogEntry,
        plan: &Plan,
        now: OffsetDateTime,
    ) -> Result<Registered, StoreError> {
        let deadline = match entry.stage {
            Stage::Formal => Some(months_after(now, CONNECTION_MONTHS)?),
            Stage::PreCatalog => None,
        };
        insert_version(&mut *conn, caller, entry, plan, deadline, now).await?;
        insert_notices(&mut *conn, entry.dataset(), plan, now).await?;
        let last_covered = plan.catalog_version.saturating_sub(1);
        let closed = crate::grants::change::close_ranges(
            &mut *conn,
            entry.dataset(),
            last_covered,
            &plan.dropped,
            now,
        )
        .await?;
        let receipt_kind = match entry.stage {
            Stage::PreCatalog => Some(ReceiptKind::PreCatalog),
            Stage::Formal if is_connected(&mut *conn, entry.dataset()).await? => Some(ReceiptKind::Formal),
            Stage::Formal => None,
        };
        if let Some(kind) = receipt_kind {
            insert_receipt(&mut *conn, entry.dataset(), plan.catalog_version, kind, now).await?;
        }
        bump_policy_serial(&mut *conn).await?;
        let detail = json!({
            "effective-from": unix(plan.effective_from),
            "items-changed": plan.items_changed,
            "notified": plan.notify.iter().map(DeptId::as_str).collect::<Vec<_>>(),
            "stage": entry.stage.as_str(),
            "grants-closed": closed.iter().map(|g| g.get()).collect::<Vec<_>>(),
        });
        let event = ControlEvent {
            kind: ControlEventKind::Registered,
            dataset: entry.dataset().clone(),
            dept: caller.dept.clone(),
            actor: caller.clone(),
            catalog_version: Some(plan.catalog_version),
            at: unix(now),
            detail,
        };
        self.audit(&mut *conn, event).await?;
        Ok(Registered {
            dataset: entry.dataset().clone(),
            catalog_version: plan.catalog_version,
            effective_from: plan.effective_from,
            compliance: ComplianceReport::default(),
            receipt_kind,
            connection_deadline: deadline,
            items_changed: plan.items_changed,
            notified: plan.notify.clone(),
        })
    }

    /// Records a refused registration and hands back the error to return.
    async fn refuse(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        now: OffsetDateTime,
        refusal: Refusal,
    ) -> StoreError {
        match self.record_refusal(caller, dataset, now, refusal.reason, &refusal.detail).await {
            Ok(()) => refusal.error,
            Err(recording) => recording,
        }
    }

    async fn record_refusal(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        now: OffsetDateTime,
        reason: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(attempt), 0) FROM catalog_refusals WHERE dataset = $1")
            .bind(dataset.as_str().to_owned())
            .fetch_one(&mut *tx)
            .await?;
        let attempt: i64 = row.try_get::<i64, _>(0)? + 1;
        sqlx::query(
            "INSERT INTO catalog_refusals (dataset, attempt, dept, refused_at, reason, report) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(dataset.as_str().to_owned())
        .bind(attempt)
        .bind(caller.dept.as_str().to_owned())
        .bind(unix(now))
        .bind(reason.to_owned())
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await?;
        let event = ControlEvent {
            kind: ControlEventKind::RegistrationRefused,
            dataset: dataset.clone(),
            dept: caller.dept.clone(),
            actor: caller.clone(),
            catalog_version: None,
            at: unix(now),
            detail: json!({ "reason": reason, "detail": detail }),
        };
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many registrations of `dataset` were refused (compliance, binding, change control).
    pub async fn refusals(&self, dataset: &DatasetId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM catalog_refusals WHERE dataset = $1")
            .bind(dataset.as_str().to_owned())
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or_default())
    }
}

/// Decides version number, effective date and notices, or the refusal.
async fn plan(
    conn: &mut AnyConnection,
    entry: &CatalogEntry,
    effective_from: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Result<Plan, Refusal>, StoreError> {
    let dataset = entry.dataset();
    let bound = sqlx::query("SELECT provider FROM catalog_datasets WHERE dataset = $1")
        .bind(dataset.as_str().to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = bound {
        let provider =
            DeptId::new(row.try_get::<String, _>(0)?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if &provider != entry.provider() {
            let detail = json!({ "provider": provider.as_str() });
            let error = StoreError::ProviderBound { dataset: dataset.clone(), provider };
            return Ok(Err(Refusal { reason: "provider-bound", detail, error }));
        }
    }
    let effective = effective_from.unwrap_or(now);
    let too_early = |earliest: OffsetDateTime, reason: &str| {
        let detail = json!({ "earliest": unix(earliest), "asked": unix(effective) });
        Refusal {
            reason: "too-early",
            detail,
            error: StoreError::TooEarly { earliest, reason: reason.to_owned() },
        }
    };
    if effective < now {
        return Ok(Err(too_early(now, "an entry cannot take effect in the past")));
    }
    let Some(previous) = latest(&mut *conn, dataset).await? else {
        let plan = Plan {
            catalog_version: 1,
            effective_from: effective,
            items_changed: false,
            notify: Vec::new(),
            previous_version: 0,
            dropped: Vec::new(),
        };
        return Ok(Ok(plan));
    };
    if effective < previous.effective_from {
        return Ok(Err(too_early(
            previous.effective_from,
            "a version cannot take effect before the previous one",
        )));
    }
    let current: Option<StoredEntry> = in_effect_at(&mut *conn, dataset, now).await?;
    let compared = current.as_ref().unwrap_or(&previous);
    let items_changed = compared.entry.items_fingerprint() != entry.items_fingerprint();
    let consumers = if items_changed {
        consumers_in_use(&mut *conn, dataset, entry.provider(), now).await?
    } else {
        Vec::new()
    };
    if !consumers.is_empty() {
        let earliest = months_after(now, CHANGE_NOTICE_MONTHS)?;
        if effective_from.is_none_or(|asked| asked < earliest) {
            let reason = "the information items of a dataset in use change at least 3 months after registration (Art. 9)";
            return Ok(Err(too_early(earliest, reason)));
        }
    }
    Ok(Ok(Plan {
        catalog_version: previous.catalog_version + 1,
        effective_from: effective,
        items_changed,
        notify: consumers,
        previous_version: compared.catalog_version,
        dropped: crate::grants::change::dropped_columns(&compared.entry, entry),
    }))
}

fn sql_version(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|e| StoreError::Conflict(format!("catalog version {version}: {e}")))
}

/// The dataset's binding (first version) and the version row itself.
async fn insert_version(
    conn: &mut AnyConnection,
    caller: &Principal,
    entry: &CatalogEntry,
    plan: &Plan,
    deadline: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let dataset = entry.dataset().as_str().to_owned();
    if plan.catalog_version == 1 {
        sqlx::query(
            "INSERT INTO catalog_datasets (dataset, provider, first_registered_at) VALUES ($1, $2, $3)",
        )
        .bind(dataset.clone())
        .bind(entry.provider().as_str().to_owned())
        .bind(unix(now))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO catalog_versions (dataset, catalog_version, provider, registered_by, registered_at, \
         effective_from, stage, share_type, items_fingerprint, items_changed, connection_deadline, document) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(dataset)
    .bind(sql_version(plan.catalog_version)?)
    .bind(entry.provider().as_str().to_owned())
    .bind(caller.dept.as_str().to_owned())
    .bind(unix(now))
    .bind(unix(plan.effective_from))
    .bind(entry.stage.as_str().to_owned())
    .bind(entry.share_type().as_str().to_owned())
    .bind(entry.items_fingerprint())
    .bind(i64::from(plan.items_changed))
    .bind(deadline.map(unix))
    .bind(entry.to_toml())
    .execute(conn)
    .await?;
    Ok(())
}

/// One notice per consumer of a dataset in use whose items change (Art. 9).
async fn insert_notices(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
    plan: &Plan,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for dept in &plan.notify {
        sqlx::query(
            "INSERT INTO change_notices (dept, dataset, catalog_version, previous_version, registered_at, \
             effective_from) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(dept.as_str().to_owned())
        .bind(dataset.as_str().to_owned())
        .bind(sql_version(plan.catalog_version)?)
        .bind(sql_version(plan.previous_version)?)
        .bind(unix(now))
        .bind(unix(plan.effective_from))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
