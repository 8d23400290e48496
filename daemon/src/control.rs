//! The ministry node's control plane host: opens [`ferry_control::plane::ControlPlane`] over the
//! configured database, signs a policy snapshot whenever the catalog changes and re-issues it
//! every `refresh` (installing each in the node's own replica, from which provinces are
//! served), answers `ControlCall`s, and writes the node's audit log.
//!
//! Neighbours: [`crate::policy`] (the replica the snapshots go to, the authorizer that reports
//! outcomes here), [`crate::config::ControlConfig`] (its settings). The data service never
//! reaches the control plane's tables: it only asks the authorizer.

use crate::policy::PolicyReplica;
use crate::policy::authorizer::unix_ms;
use ferry_control::api::{ApiCode, ApiError, ControlAnswer, ControlRequest};
use ferry_control::audit::{AuditLog, CheckpointPolicy, NewEntry};
use ferry_control::keys::{CaVerifier, CertSigner};
use ferry_control::plane::ControlPlane;
use ferry_control::roles::Roles;
use ferry_control::store::{ControlStore, StoreError};
use ferry_net::sign::{DocumentSigner, TrustAnchors};
use ferry_proto::{DeptId, Principal, Role};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// `[control]` of a ministry node's config, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// `sqlite://…` / a file path (default: `control.db` in the state directory), or
    /// `postgres://…`.
    pub database: String,
    /// The control-plane signing key and its certificate (`ferry pki issue --role control`).
    pub signing_cert: PathBuf,
    pub signing_key: PathBuf,
    /// 技术支持部门; `None`: the ministry node's own department.
    pub technical_support: Option<DeptId>,
    /// 部科技主管部门.
    pub st_authority: DeptId,
    /// How often an unchanged snapshot is re-issued.
    pub refresh: Duration,
    /// The disuse notice period and the quality answer deadline.
    pub lifecycle: ferry_control::grants::LifecycleSettings,
    /// More working-day calendar files (`<year>.toml`) over the built-in years.
    pub calendar_dir: Option<PathBuf>,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlStartError {
    #[error("control-plane signing key: {0}")]
    Key(#[from] ferry_net::tls::TlsError),
    #[error(
        "control-plane signing certificate {path} is a {role} certificate of {dept}; it must be of role control"
    )]
    NotAControlKey { path: PathBuf, role: Role, dept: DeptId },
    #[error("control store {database}: {source}")]
    Store { database: String, source: StoreError },
    #[error("first policy snapshot: {0}")]
    Snapshot(String),
    #[error("working-day calendar: {0}")]
    Calendar(#[from] ferry_control::calendar::CalendarFileError),
}

/// The running control plane of a ministry node.
pub struct ControlHost {
    plane: Arc<ControlPlane>,
    /// The control-plane key: snapshots, receipts and audit checkpoints.
    signer: Arc<CertSigner>,
    replica: Arc<PolicyReplica>,
    ministry: DeptId,
    refresh: Duration,
}

impl std::fmt::Debug for ControlHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHost").field("ministry", &self.ministry).finish_non_exhaustive()
    }
}

impl ControlHost {
    /// Opens the store (running migrations), loads the key, and issues a first snapshot.
    pub async fn open(
        settings: &ControlSettings,
        node: &Principal,
        trust: TrustAnchors,
        replica: Arc<PolicyReplica>,
    ) -> Result<Self, ControlStartError> {
        let signer =
            Arc::new(CertSigner(DocumentSigner::load(&settings.signing_cert, &settings.signing_key)?));
        let key = signer.0.principal().clone();
        if key.role != Role::Control || key.dept != node.dept {
            return Err(ControlStartError::NotAControlKey {
                path: settings.signing_cert.clone(),
                role: key.role,
                dept: key.dept,
            });
        }
        let roles = Roles {
            technical_support: settings.technical_support.clone().unwrap_or_else(|| node.dept.clone()),
            st_authority: settings.st_authority.clone(),
        };
        let store = ControlStore::open(&settings.database, roles).await.map_err(|source| {
            ControlStartError::Store { database: ferry_control::db::redact(&settings.database), source }
        })?;
        let verifier = Arc::new(CaVerifier::new(trust, vec![Role::Control], Some(node.dept.clone())));
        let audit =
            Arc::new(AuditLog::new(store.pool().clone(), signer.clone(), CheckpointPolicy::default()));
        // Catalog decisions are appended inside the catalog's own transactions.
        let store = store.with_audit(audit.clone());
        let store = match &settings.calendar_dir {
            Some(dir) => store.with_calendar(ferry_control::calendar::Calendar::shipped_and_dir(dir)?),
            None => store,
        };
        let plane = Arc::new(
            ControlPlane::new(store, audit, signer.clone(), verifier, node.clone())
                .with_lifecycle(settings.lifecycle),
        );
        let host = Self { plane, signer, replica, ministry: node.dept.clone(), refresh: settings.refresh };
        host.issue().await.map_err(ControlStartError::Snapshot)?;
        Ok(host)
    }

    pub fn plane(&self) -> &Arc<ControlPlane> {
        &self.plane
    }

    /// Signs the catalog state as of now and installs it in the node's replica.
    pub async fn issue(&self) -> Result<u64, String> {
        let now = SystemTime::now();
        let state = self
            .plane
            .store()
            .policy_state(self.plane.platform(), time::OffsetDateTime::from(now))
            .await
            .map_err(|e| e.to_string())?;
        let snapshot = ferry_control::snapshot::build(&state, &self.ministry, unix_ms(now));
        let signed = ferry_control::snapshot::sign(&snapshot, &self.signer.0);
        self.replica.offer(&signed, now).map_err(|e| e.to_string())?;
        Ok(snapshot.serial)
    }

    /// Re-issues the snapshot at every catalog change and every `refresh`, until `draining`.
    pub async fn run(self: Arc<Self>, mut draining: watch::Receiver<bool>) {
        let mut changes = self.plane.changes();
        let mut ticks = tokio::time::interval(self.refresh);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = draining.wait_for(|d| *d) => return,
                changed = changes.changed() => if changed.is_err() { return },
                _ = ticks.tick() => {}
            }
            match self.issue().await {
                Ok(serial) => tracing::debug!(serial, "policy snapshot issued"),
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot issue a policy snapshot; provinces keep the last one until it goes stale"
                ),
            }
        }
    }

    /// Runs the disuse sweep (Art. 17) now and every [`DISUSE_SWEEP_EVERY`], until `draining`;
    /// a revocation it makes ticks the plane's changes, so [`Self::run`] re-issues the snapshot.
    pub async fn sweep_disuse(self: Arc<Self>, mut draining: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(DISUSE_SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = draining.wait_for(|d| *d) => return,
                _ = ticks.tick() => {}
            }
            match self.plane.sweep_disuse(time::OffsetDateTime::now_utc()).await {
                Ok(report) if !report.decisions.is_empty() => {
                    tracing::info!(decisions = report.decisions.len(), "disuse sweep: {:?}", report.decisions)
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "disuse sweep failed; it runs again at the next tick"),
            }
        }
    }

    /// Keeps `ferry_control_grants` and `ferry_control_quality_issues` current, every `refresh`.
    pub async fn report_lifecycle(
        self: Arc<Self>,
        metrics: Arc<crate::telemetry::Metrics>,
        mut draining: watch::Receiver<bool>,
    ) {
        use crate::telemetry::StateLabel;
        let mut ticks = tokio::time::interval(self.refresh);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = draining.wait_for(|d| *d) => return,
                _ = ticks.tick() => {}
            }
            let Ok(counts) = self.plane.lifecycle_counts(time::OffsetDateTime::now_utc()).await else {
                continue;
            };
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            metrics
                .control_grants
                .get_or_create(&StateLabel { state: "active" })
                .set(gauge(counts.grants_active));
            metrics
                .control_grants
                .get_or_create(&StateLabel { state: "revoked" })
                .set(gauge(counts.grants_revoked));
            let issues = &metrics.control_quality_issues;
            issues.get_or_create(&StateLabel { state: "open" }).set(gauge(counts.issues_open));
            issues.get_or_create(&StateLabel { state: "overdue" }).set(gauge(counts.issues_overdue));
            if let Ok(reviews) = self.plane.store().review_counts(time::OffsetDateTime::now_utc()).await {
                for (state, n) in &reviews.by_state {
                    metrics
                        .control_applications
                        .get_or_create(&StateLabel { state: state.as_str() })
                        .set(gauge(*n));
                }
                let due = &metrics.control_reviews;
                due.get_or_create(&StateLabel { state: "due-within-1-day" })
                    .set(gauge(reviews.due_within_one_day));
                due.get_or_create(&StateLabel { state: "overdue" }).set(gauge(reviews.overdue));
            }
        }
    }

    /// Answers one `ControlCall` document of `caller`.
    pub async fn call(&self, caller: &Principal, request: &str) -> ControlAnswer {
        let answer = match ControlRequest::parse(request) {
            Ok(request) => {
                let op = request.op();
                let changes_catalog = matches!(
                    request,
                    ControlRequest::CatalogRegister { .. }
                        | ControlRequest::Apply { .. }
                        | ControlRequest::ReviewApprove { .. }
                );
                let result = self.plane.call(caller, request, time::OffsetDateTime::now_utc()).await;
                if changes_catalog && result.is_ok() {
                    // This node enforces the change before it answers, so the registrant's next
                    // publish here finds it; provinces follow within seconds.
                    if let Err(e) = self.issue().await {
                        tracing::error!(error = %e, "cannot issue the policy snapshot after a registration");
                    }
                }
                if let Err(e) = &result {
                    tracing::info!(peer = %caller, op, code = ?e.code, "control call refused: {}", e.message);
                }
                result
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(value) => ControlAnswer::Ok(value),
            Err(e) => ControlAnswer::Error(e),
        }
    }
}

/// How often the ministry runs the disuse sweep.
pub const DISUSE_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Entries are written in batches of up to this many, one transaction each.
const AUDIT_BATCH: usize = 256;

/// Appends the node's audit entries in batches and hands their uses to `uses` (the grant
/// lifecycle's "last used", change control's "in use").
pub async fn write_audit(
    log: Arc<AuditLog>,
    mut queue: mpsc::Receiver<NewEntry>,
    uses: crate::policy::uses::UseSink,
    dropped: prometheus_client::metrics::counter::Counter,
) {
    // Checkpoints also come on a timer, so a quiet log's head is signed too.
    let _timer = log.spawn_checkpoint_timer(Duration::from_secs(300), || unix_ms(SystemTime::now()));
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while queue.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        if let Err(e) = log.append_batch(&batch).await {
            dropped.inc_by(batch.len() as u64);
            tracing::error!(error = %e, entries = batch.len(), "cannot append to the audit log; entries lost");
        }
        uses.record(&batch).await;
        batch.clear();
    }
}

/// The refusal a node without a control plane gives a `ControlCall`.
pub fn not_the_ministry() -> String {
    ControlAnswer::Error(ApiError::new(
        ApiCode::NotFound,
        "this node does not run the control plane; send control calls to the ministry node",
    ))
    .to_json()
}
