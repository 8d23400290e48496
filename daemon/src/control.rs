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
use ferry_control::audit::{AuditLog, CheckpointPolicy, EntryKind, NewEntry};
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
        let plane = Arc::new(ControlPlane::new(store, audit, signer.clone(), verifier, node.clone()));
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

    /// Answers one `ControlCall` document of `caller`.
    pub async fn call(&self, caller: &Principal, request: &str) -> ControlAnswer {
        let answer = match ControlRequest::parse(request) {
            Ok(request) => {
                let op = request.op();
                let changes_catalog = matches!(request, ControlRequest::CatalogRegister { .. });
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

/// Entries are written in batches of up to this many, one transaction each.
const AUDIT_BATCH: usize = 256;

pub async fn write_audit(
    log: Arc<AuditLog>,
    mut queue: mpsc::Receiver<NewEntry>,
    plane: Option<Arc<ControlPlane>>,
    dropped: prometheus_client::metrics::counter::Counter,
) {
    // Checkpoints also come on a timer, so a quiet log's head is signed too.
    let _timer = log.spawn_checkpoint_timer(Duration::from_secs(300), || unix_ms(SystemTime::now()));
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while queue.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        let uses: Vec<_> = batch
            .iter()
            .filter(|e| e.kind == EntryKind::ReadAllowed)
            .filter_map(|e| e.dataset.clone().map(|d| (d, e.actor.department.clone())))
            .collect();
        if let Err(e) = log.append_batch(&batch).await {
            dropped.inc_by(batch.len() as u64);
            tracing::error!(error = %e, entries = batch.len(), "cannot append to the audit log; entries lost");
        }
        batch.clear();
        let Some(plane) = &plane else { continue };
        for (dataset, dept) in uses {
            if let Err(e) = plane.record_use(&dataset, &dept).await {
                tracing::warn!(error = %e, %dataset, "cannot record a dataset use");
            }
        }
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
