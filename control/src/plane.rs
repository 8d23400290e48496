//! The control plane as the ministry node runs it: one value holding the catalog store, the
//! audit log, the receipt book and the control-plane key, answering [`ControlRequest`]s and
//! producing the policy snapshots nodes enforce.
//!
//! Every call runs as the principal of the caller's TLS connection; the store checks its role
//! and department. Receipts are issued from the store's facts by [`ControlPlane::issue_due_receipts`],
//! which is idempotent: a crash between a registration and its receipt leaves the receipt due,
//! and the next call for the dataset (or the next publication report) issues it.
//!
//! Neighbours: [`crate::store`] and [`crate::catalog`] (the tables), [`crate::audit`],
//! [`crate::receipt`], [`crate::snapshot`] (the signed policy), [`crate::api`] (the calls).

use crate::api::{ApiCode, ApiError, ControlRequest};
use crate::audit::{AuditError, AuditLog, ShowFilter};
use crate::receipt::{ComplianceSummary, ReceiptBook, ReceiptError, ReceiptRequest};
use crate::roles::Roles;
use crate::signing::{BlobSigner, BlobVerifier};
use crate::store::{ControlStore, StoreError};
use ferry_proto::{DatasetId, Principal, Role, VersionNo};
use ferry_tables::catalog::{CatalogDocumentError, CatalogEntry, CheckContext, check_document};
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

/// The ministry's control plane (see the module doc).
pub struct ControlPlane {
    store: ControlStore,
    audit: Arc<AuditLog>,
    receipts: ReceiptBook,
    verifier: Arc<dyn BlobVerifier>,
    /// The principal the plane acts as for its own bookkeeping (the ministry node).
    platform: Principal,
    /// Bumped after every change of catalog state, so the node re-issues its snapshot.
    changed: watch::Sender<u64>,
    /// Disuse notice period and quality answer deadline ([`crate::lifecycle`]).
    lifecycle: crate::grants::LifecycleSettings,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("platform", &self.platform).finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds the plane over an open store. `signer` is the control-plane key (receipts, audit
    /// checkpoints, snapshots); `verifier` checks what it signed (audit verification).
    pub fn new(
        store: ControlStore,
        audit: Arc<AuditLog>,
        signer: Arc<dyn BlobSigner>,
        verifier: Arc<dyn BlobVerifier>,
        platform: Principal,
    ) -> Self {
        let receipts = ReceiptBook::new(store.pool().clone(), signer);
        let (changed, _) = watch::channel(0);
        Self {
            store,
            audit,
            receipts,
            verifier,
            platform,
            changed,
            lifecycle: crate::grants::LifecycleSettings::default(),
        }
    }

    /// Sets the disuse notice period and the quality answer deadline (config `[control]`).
    pub fn with_lifecycle(mut self, settings: crate::grants::LifecycleSettings) -> Self {
        self.lifecycle = settings;
        self
    }

    pub fn lifecycle(&self) -> crate::grants::LifecycleSettings {
        self.lifecycle
    }

    /// Ticks [`Self::changes`]: a change of what nodes enforce (a grant revoked) was committed.
    pub(crate) fn policy_changed(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn store(&self) -> &ControlStore {
        &self.store
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    pub fn roles(&self) -> &Roles {
        self.store.roles()
    }

    pub fn platform(&self) -> &Principal {
        &self.platform
    }

    /// Ticks after every change of catalog state.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Answers one call of `caller`.
    pub async fn call(
        &self,
        caller: &Principal,
        request: ControlRequest,
        now: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        if caller.role == Role::Control {
            return Err(ApiError::new(ApiCode::Forbidden, "the control-plane signing key makes no calls"));
        }
        match request {
            ControlRequest::CatalogRegister { document, effective_from } => {
                self.register(caller, &document, effective_from.as_deref(), now).await
            }
            ControlRequest::CatalogCheck { document } => {
                let report =
                    check_document(&document, &CheckContext { registrant: Some(caller.dept.clone()) });
                Ok(json!({ "passed": report.passed(), "report": report, "text": report.to_string() }))
            }
            ControlRequest::CatalogShow { dataset, version } => {
                to_value(self.store.entry(caller, &dataset, version).await.map_err(store_error)?)
            }
            ControlRequest::CatalogHistory { dataset } => {
                to_value(self.store.history(caller, &dataset).await.map_err(store_error)?)
            }
            ControlRequest::CatalogDiff { dataset, from, to } => {
                to_value(self.store.diff(caller, &dataset, from, to).await.map_err(store_error)?)
            }
            ControlRequest::CatalogList {} => {
                to_value(self.store.list(caller, now).await.map_err(store_error)?)
            }
            ControlRequest::Notices {} => {
                to_value(self.store.notices(caller, &caller.dept).await.map_err(store_error)?)
            }
            ControlRequest::AuditShow { dataset, department, since, until, limit } => {
                self.supervisor(caller, "read the audit log")?;
                let filter = ShowFilter {
                    dataset,
                    department,
                    kind: None,
                    from_ms: since.as_deref().map(parse_time).transpose()?.map(unix_ms),
                    until_ms: until.as_deref().map(parse_time).transpose()?.map(unix_ms),
                    before_seq: None,
                    limit: limit.unwrap_or(crate::audit::DEFAULT_LIMIT),
                };
                to_value(self.audit.show(&filter).await.map_err(audit_error)?)
            }
            ControlRequest::AuditVerify {} => {
                self.supervisor(caller, "verify the audit log")?;
                to_value(self.audit.verify(self.verifier.as_ref()).await.map_err(audit_error)?)
            }
            ControlRequest::Receipts { dataset } => self.receipts_of(caller, &dataset).await,
            ControlRequest::ReportPublication { dataset, version, catalog_version } => {
                self.report_publication(caller, &dataset, version, catalog_version, now).await
            }
            request @ (ControlRequest::Apply { .. }
            | ControlRequest::ReviewList { .. }
            | ControlRequest::ReviewDue {}
            | ControlRequest::ReviewApprove { .. }
            | ControlRequest::ReviewRefuse { .. }
            | ControlRequest::ReviewAskMaterial { .. }
            | ControlRequest::ReviewSupplyMaterial { .. }
            | ControlRequest::ReviewDelegate { .. }
            | ControlRequest::ReviewDelegated { .. }) => {
                crate::apply::calls::call(self, caller, request, now).await
            }
            request @ (ControlRequest::GrantList { .. }
            | ControlRequest::GrantRevoke { .. }
            | ControlRequest::GrantNotices {}
            | ControlRequest::ReportUse { .. }
            | ControlRequest::Feedback { .. }
            | ControlRequest::FeedbackList { .. }
            | ControlRequest::QualityFile { .. }
            | ControlRequest::QualityAnswer { .. }
            | ControlRequest::QualityList { .. }
            | ControlRequest::SuperviseReport { .. }
            | ControlRequest::SuperviseNotice { .. }
            | ControlRequest::SuperviseNoticeList { .. }
            | ControlRequest::SuperviseNoticeClose { .. }) => {
                crate::lifecycle::call(self, caller, request, now).await
            }
            request @ (ControlRequest::ReportHoldings { .. } | ControlRequest::Fleet {}) => {
                crate::fleet::call(self, caller, request, now).await
            }
            ControlRequest::Backup { destination } => {
                self.store.backup(caller, std::path::Path::new(&destination)).await.map_err(store_error)?;
                Ok(json!({ "destination": destination }))
            }
        }
    }

    async fn register(
        &self,
        caller: &Principal,
        document: &str,
        effective_from: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        let entry = match CatalogEntry::parse_toml(document) {
            Ok(entry) => entry,
            Err(CatalogDocumentError::Invalid(report)) => {
                let mut error = ApiError::new(ApiCode::ComplianceFailed, report.to_string());
                error.detail = serde_json::to_value(&report).ok();
                return Err(error);
            }
            Err(other) => return Err(ApiError::new(ApiCode::BadRequest, other.to_string())),
        };
        let effective_from = effective_from.map(parse_time).transpose()?;
        let registered =
            self.store.register(caller, entry, effective_from, now).await.map_err(store_error)?;
        self.changed.send_modify(|n| *n += 1);
        let receipts = self.issue_due_receipts(&registered.dataset).await?;
        Ok(json!({ "registered": registered, "receipts": receipts }))
    }

    /// Issues every receipt the store says is due for `dataset` and was not yet issued;
    /// returns the receipts issued now (`{receipt, file}` each).
    pub async fn issue_due_receipts(&self, dataset: &DatasetId) -> Result<Vec<Value>, ApiError> {
        let history = self.store.history(&self.platform, dataset).await.map_err(store_error)?;
        let issued: Vec<_> = self.receipts.receipts(dataset).await.map_err(receipt_error)?;
        let mut new = Vec::new();
        for version in history {
            let facts = self
                .store
                .receipt_facts(&self.platform, dataset, version.catalog_version)
                .await
                .map_err(store_error)?;
            for (due, _due_since) in &facts.receipts {
                let kind = *due;
                if issued
                    .iter()
                    .any(|r| r.receipt.kind == kind && r.receipt.catalog_version == facts.catalog_version)
                {
                    continue;
                }
                let stored = self
                    .store
                    .entry(&self.platform, dataset, Some(facts.catalog_version))
                    .await
                    .map_err(store_error)?;
                let request = ReceiptRequest {
                    kind,
                    dataset: dataset.clone(),
                    name: stored.entry.definition.name.clone(),
                    provider: facts.provider.clone(),
                    catalog_version: facts.catalog_version,
                    schema_fingerprint: stored.entry.items_fingerprint(),
                    compliance: ComplianceSummary {
                        passed: true,
                        rules_checked: ferry_tables::catalog::RuleCode::ALL.len() as u32,
                        checked_at_ms: unix_ms(facts.registered_at),
                    },
                    registered_at_ms: unix_ms(facts.registered_at),
                    connected_at_ms: facts.connected_at.map(unix_ms),
                };
                let receipt = match self.receipts.issue(request, unix_ms(OffsetDateTime::now_utc())).await {
                    Ok(receipt) => receipt,
                    // Another call issued it meanwhile (a publication report and a reader race).
                    Err(ReceiptError::AlreadyIssued { .. }) => continue,
                    Err(e) => return Err(receipt_error(e)),
                };
                new.push(json!({ "receipt": receipt.receipt, "file": receipt.file }));
            }
        }
        Ok(new)
    }

    async fn receipts_of(&self, caller: &Principal, dataset: &DatasetId) -> Result<Value, ApiError> {
        // The store decides who may read a dataset's receipt facts (provider, supervisors).
        let latest = self.store.entry(caller, dataset, None).await.map_err(store_error)?;
        self.store.receipt_facts(caller, dataset, latest.catalog_version).await.map_err(store_error)?;
        self.issue_due_receipts(dataset).await?;
        let receipts = self.receipts.receipts(dataset).await.map_err(receipt_error)?;
        Ok(Value::Array(
            receipts.into_iter().map(|r| json!({ "receipt": r.receipt, "file": r.file })).collect(),
        ))
    }

    async fn report_publication(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        version: u64,
        catalog_version: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        let stored = self.store.entry(&self.platform, dataset, None).await.map_err(store_error)?;
        if caller.dept != *stored.entry.provider()
            || !matches!(caller.role, Role::Ministry | Role::Province | Role::Operator)
        {
            return Err(ApiError::new(
                ApiCode::Forbidden,
                format!(
                    "only the provider of {dataset} ({}) reports its publications",
                    stored.entry.provider()
                ),
            ));
        }
        let version =
            VersionNo::new(version).map_err(|e| ApiError::new(ApiCode::BadRequest, e.to_string()))?;
        let catalog_version = catalog_version.unwrap_or(stored.catalog_version);
        self.store
            .record_publication(&self.platform, dataset, version, catalog_version, now)
            .await
            .map_err(store_error)?;
        let receipts = self.issue_due_receipts(dataset).await?;
        Ok(json!({ "receipts": receipts }))
    }

    /// Records that `dept` read `dataset` (a pull or a query), for change control; a provider
    /// reading its own dataset is not a use.
    pub async fn record_use(
        &self,
        dataset: &DatasetId,
        dept: &ferry_proto::DeptId,
    ) -> Result<(), StoreError> {
        let stored = self.store.entry(&self.platform, dataset, None).await?;
        if stored.entry.provider() == dept {
            return Ok(());
        }
        self.store.record_use(&self.platform, dataset, dept, OffsetDateTime::now_utc()).await
    }

    fn supervisor(&self, caller: &Principal, what: &str) -> Result<(), ApiError> {
        let roles = self.store.roles();
        if caller.dept == roles.technical_support || caller.dept == roles.st_authority {
            return Ok(());
        }
        Err(ApiError::new(
            ApiCode::Forbidden,
            format!(
                "only technical support ({}) and the S&T authority ({}) may {what}; {} may not",
                roles.technical_support, roles.st_authority, caller.dept
            ),
        ))
    }
}

fn to_value(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))
}

pub(crate) fn parse_time(text: &str) -> Result<OffsetDateTime, ApiError> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    // A bare date means its start in China Standard Time, the regulation's calendar.
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format).map(|d| d.midnight().assume_offset(time::macros::offset!(+8))).map_err(
        |_| {
            ApiError::new(
                ApiCode::BadRequest,
                format!("{text:?} is not an RFC 3339 time or a YYYY-MM-DD date"),
            )
        },
    )
}

pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Maps a store error to the answer the caller gets.
pub fn store_error(e: StoreError) -> ApiError {
    let code = match &e {
        StoreError::Unavailable(_) | StoreError::ReadOnly(_) => ApiCode::Unavailable,
        StoreError::Conflict(_) | StoreError::ProviderBound { .. } => ApiCode::Conflict,
        StoreError::NotFound(_) => ApiCode::NotFound,
        StoreError::Forbidden { .. } => ApiCode::Forbidden,
        StoreError::ComplianceFailed(_) => ApiCode::ComplianceFailed,
        StoreError::TooEarly { .. } => ApiCode::TooEarly,
        StoreError::Unsupported(_) | StoreError::Invalid(_) => ApiCode::BadRequest,
        StoreError::Corrupt(_) | StoreError::Database(_) => ApiCode::Internal,
    };
    let mut error = ApiError::new(code, e.to_string());
    error.detail = match &e {
        StoreError::ComplianceFailed(report) => serde_json::to_value(report).ok(),
        StoreError::TooEarly { earliest, .. } => {
            earliest.format(&Rfc3339).ok().map(|t| json!({ "earliest": t }))
        }
        _ => None,
    };
    if code == ApiCode::Internal {
        tracing::error!(error = %e, "control store failure");
    }
    error
}

fn audit_error(e: AuditError) -> ApiError {
    tracing::error!(error = %e, "audit log failure");
    ApiError::new(ApiCode::Unavailable, e.to_string())
}

fn receipt_error(e: ReceiptError) -> ApiError {
    let code = match &e {
        ReceiptError::NotFound { .. } => ApiCode::NotFound,
        ReceiptError::Unavailable(_) => ApiCode::Unavailable,
        ReceiptError::AlreadyIssued { .. } => ApiCode::Conflict,
        _ => ApiCode::Internal,
    };
    ApiError::new(code, e.to_string())
}
