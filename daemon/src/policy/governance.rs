//! Starting what a node needs to enforce the catalog, from its `[policy]` and `[control]`
//! config: the replica, the audit log and its writer, at the ministry the control plane, at a
//! province the stream that follows the ministry, and a ticker that keeps the policy's metrics
//! and `/healthz` current.

use super::authorizer::AUDIT_QUEUE;
use super::replica::{PolicyReplica, SnapshotVerifier};
use super::stream::{SnapshotObserver, follow_ministry};
use super::{AuditSink, authorizer::unix_ms};
use crate::config::{Config, PolicySource};
use crate::control::{ControlHost, ControlStartError, write_audit};
use crate::telemetry::{Metrics, ReasonLabel};
use ferry_client::conn::Connector;
use ferry_control::api::{ControlAnswer, ControlRequest};
use ferry_control::audit::{Actor, AuditLog, CheckpointPolicy, EntryKind, NewEntry, Outcome};
use ferry_control::keys::CertSigner;
use ferry_net::sign::{DocumentSigner, TrustAnchors, verify_document, verify_document_signed_at};
use ferry_net::tls::Credentials;
use ferry_proto::policy::PolicySnapshot;
use ferry_proto::{DatasetId, DeptId, Message, Role, SignedDocument};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// Name of a province node's audit database in its state directory.
pub const AUDIT_DB: &str = "audit.db";

/// Why the node's governance could not start.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error(transparent)]
    Control(#[from] ControlStartError),
    #[error("trust anchors for policy snapshots: {0}")]
    Trust(#[from] ferry_net::tls::TlsError),
    #[error("audit log {path}: {detail}")]
    Audit { path: String, detail: String },
    #[error("policy.ministry names peer {0}, which is not configured")]
    UnknownPeer(String),
}

/// What enforces the catalog on a node.
pub struct Governance {
    pub replica: Arc<PolicyReplica>,
    pub audit: AuditSink,
    /// The control plane, at the ministry.
    pub control: Option<Arc<ControlHost>>,
    pub node_dept: DeptId,
    /// How a province reaches the ministry (policy stream, publication reports).
    ministry: Option<Connector>,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("node_dept", &self.node_dept)
            .field("control", &self.control.is_some())
            .field("follows_ministry", &self.ministry.is_some())
            .finish_non_exhaustive()
    }
}

/// Accepts snapshots signed by the control-plane key of the ministry's department.
#[derive(Debug)]
struct ControlKeyVerifier {
    trust: TrustAnchors,
    ministry: DeptId,
}

impl SnapshotVerifier for ControlKeyVerifier {
    fn verify(&self, signed: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        let document = SignedDocument::decode(signed).map_err(|e| format!("not a signed document: {e}"))?;
        let signer =
            verify_document(&document, &self.trust, Role::Control, now).map_err(|e| e.to_string())?;
        self.of_ministry(signer.dept)?;
        Ok(document.body)
    }

    fn verify_issued(&self, signed: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        let document = SignedDocument::decode(signed).map_err(|e| format!("not a signed document: {e}"))?;
        // The issue time the body states: the signature, checked first, covers it.
        let issued = PolicySnapshot::parse(&document.body).map_err(|e| e.to_string())?.issued_at_ms;
        let signed_at = SystemTime::UNIX_EPOCH + Duration::from_millis(issued.max(0).unsigned_abs());
        let (signer, _standing) =
            verify_document_signed_at(&document, &self.trust, Role::Control, signed_at, now)
                .map_err(|e| e.to_string())?;
        self.of_ministry(signer.dept)?;
        Ok(document.body)
    }
}

impl ControlKeyVerifier {
    fn of_ministry(&self, dept: DeptId) -> Result<(), String> {
        match dept == self.ministry {
            true => Ok(()),
            false => {
                Err(format!("signed by the control key of {dept}, not of the ministry ({})", self.ministry))
            }
        }
    }
}

impl Governance {
    /// Starts everything `config` asks for; `None` for a node without `[policy]`/`[control]`.
    pub async fn start(
        config: &Config,
        creds: &Credentials,
        endpoint: &quinn::Endpoint,
        metrics: &Arc<Metrics>,
        draining: watch::Receiver<bool>,
    ) -> Result<Option<Self>, GovernanceError> {
        let Some(policy) = &config.policy else {
            tracing::warn!(
                "no [policy] or [control] in the config: this node enforces no catalog (interim rules: \
                 unconditional data to any verified department, the rest to its publisher)"
            );
            return Ok(None);
        };
        let node = creds.principal().clone();
        let ministry = policy.ministry_dept.clone().unwrap_or_else(|| node.dept.clone());
        let trust = TrustAnchors::from_credentials(creds)?;
        let verifier = Arc::new(ControlKeyVerifier {
            trust: TrustAnchors::from_credentials(creds)?,
            ministry: ministry.clone(),
        });
        let replica = Arc::new(PolicyReplica::open(
            &config.state_dir,
            verifier,
            policy.max_staleness,
            SystemTime::now(),
        ));
        let (queue, entries) = mpsc::channel(AUDIT_QUEUE);
        let audit = AuditSink::new(queue, metrics.audit_dropped.clone());
        let (control, log) = match &config.control {
            Some(settings) => {
                let host = Arc::new(ControlHost::open(settings, &node, trust, replica.clone()).await?);
                tokio::spawn(host.clone().run(draining.clone()));
                tokio::spawn(host.clone().sweep_disuse(draining.clone()));
                tokio::spawn(host.clone().report_lifecycle(metrics.clone(), draining.clone()));
                let log = host.plane().audit().clone();
                (Some(host), log)
            }
            None => {
                let path = config.state_dir.join(AUDIT_DB);
                let signer = Arc::new(CertSigner(DocumentSigner::new(creds)?));
                let log = AuditLog::open(&path.display().to_string(), signer, CheckpointPolicy::default())
                    .await
                    .map_err(|e| GovernanceError::Audit {
                        path: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
                (None, Arc::new(log))
            }
        };
        let use_batch = Arc::new(std::sync::Mutex::new(super::uses::UseBatch::default()));
        let uses = match (&control, &policy.source) {
            (Some(c), _) => super::uses::UseSink::Plane(c.plane().clone()),
            (None, PolicySource::Ministry { .. }) => super::uses::UseSink::Batch(use_batch.clone()),
            (None, PolicySource::Local) => super::uses::UseSink::Nowhere,
        };
        tokio::spawn(write_audit(log, entries, uses, metrics.audit_dropped.clone()));
        let mut ministry_connector = None;
        if let PolicySource::Ministry { peer } = &policy.source {
            let addr =
                config.peers.get(peer).cloned().ok_or_else(|| GovernanceError::UnknownPeer(peer.clone()))?;
            let connector =
                Connector::with_endpoint(endpoint.clone(), addr).with_loopback_config(creds).map_err(
                    |e| GovernanceError::Audit { path: "policy stream".into(), detail: e.to_string() },
                )?;
            ministry_connector = Some(connector.clone());
            tokio::spawn(super::uses::report_uses(
                connector.clone(),
                use_batch,
                policy.report_uses_every,
                draining.clone(),
            ));
            let observer = Arc::new(AuditingObserver {
                audit: audit.clone(),
                metrics: metrics.clone(),
                ministry: ministry.clone(),
            });
            tokio::spawn(follow_ministry(connector, replica.clone(), observer, draining.clone()));
        }
        tokio::spawn(report_status(replica.clone(), metrics.clone(), draining));
        Ok(Some(Self { replica, audit, control, node_dept: node.dept, ministry: ministry_connector }))
    }

    /// How a province reaches the ministry (`None` at the ministry or without `[policy] ministry`).
    pub fn ministry(&self) -> Option<&Connector> {
        self.ministry.as_ref()
    }

    /// Tells the control plane that `dataset` `version` was published here (data connected,
    /// Art. 20: a formal receipt may be due), in the background: at the ministry directly, at a
    /// province over a control call as the node. A failure is logged; the provider can report
    /// again (`report-publication`), and receipts are issued idempotently.
    pub fn report_publication(&self, dataset: DatasetId, version: u64, catalog_version: Option<u64>) {
        let request =
            ControlRequest::ReportPublication { dataset: dataset.clone(), version, catalog_version };
        if let Some(control) = &self.control {
            let plane = control.plane().clone();
            tokio::spawn(async move {
                let platform = plane.platform().clone();
                if let Err(e) = plane.call(&platform, request, time::OffsetDateTime::now_utc()).await {
                    tracing::warn!(%dataset, version, error = %e, "cannot record the publication in the catalog");
                }
            });
        } else if let Some(connector) = self.ministry.clone() {
            tokio::spawn(async move {
                let answer = async {
                    let session = connector.connect().await.map_err(|e| e.to_string())?;
                    let message = Message::ControlCall { request: request.to_json() };
                    let answer = session.request(&message).await.map_err(|e| e.to_string());
                    session.close();
                    match answer? {
                        Message::ControlAnswer { answer } => ControlAnswer::parse(&answer)
                            .and_then(ControlAnswer::into_result)
                            .map_err(|e| e.to_string()),
                        _ => Err("the ministry did not answer the control call".to_string()),
                    }
                };
                match answer.await {
                    Ok(_) => tracing::info!(%dataset, version, "publication reported to the ministry"),
                    Err(e) => {
                        tracing::warn!(%dataset, version, error = %e, "cannot report the publication to the ministry")
                    }
                }
            });
        }
    }
}

/// Counts and audits each snapshot a province receives.
struct AuditingObserver {
    audit: AuditSink,
    metrics: Arc<Metrics>,
    ministry: DeptId,
}

impl SnapshotObserver for AuditingObserver {
    fn snapshot(&self, outcome: Result<u64, (&'static str, String)>) {
        let (kind, result, reason, detail) = match &outcome {
            Ok(serial) => (
                EntryKind::SnapshotInstalled,
                Outcome::Accepted,
                "installed",
                serde_json::json!({ "serial": serial }),
            ),
            Err((reason, message)) => (
                EntryKind::SnapshotRefused,
                Outcome::Refused,
                *reason,
                serde_json::json!({ "message": message.chars().take(512).collect::<String>() }),
            ),
        };
        self.metrics.policy_snapshots.get_or_create(&ReasonLabel { reason }).inc();
        // A refresh of the serial held is not worth an entry; a change or a refusal is.
        if kind == EntryKind::SnapshotInstalled
            && self.metrics.policy_serial.get() == detail["serial"].as_i64().unwrap_or(-1)
        {
            return;
        }
        self.audit.record(NewEntry {
            time_ms: unix_ms(SystemTime::now()),
            kind,
            actor: Actor {
                department: self.ministry.clone(),
                role: Role::Control,
                name: "ministry control plane".into(),
                cert_serial: String::new(),
            },
            dataset: None,
            outcome: result,
            reason: if result == Outcome::Accepted { String::new() } else { reason.to_string() },
            detail,
        });
    }
}

/// Keeps `ferry_policy_*` and `/healthz` current, every second.
async fn report_status(
    replica: Arc<PolicyReplica>,
    metrics: Arc<Metrics>,
    mut draining: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stale = false;
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            _ = ticks.tick() => {}
        }
        let status = replica.status(SystemTime::now());
        metrics.policy_serial.set(status.serial.map_or(0, |s| s as i64));
        metrics.policy_age_seconds.set(status.age.map_or(-1, |a| a.as_secs() as i64));
        metrics.policy_stale.set(i64::from(status.stale));
        let problem = status.stale.then(|| match (status.serial, status.age) {
            (Some(serial), Some(age)) => format!(
                "snapshot {serial} is {}s old (max-staleness {}s)",
                age.as_secs(),
                status.max_staleness.as_secs()
            ),
            _ => "no policy snapshot from the ministry yet".to_string(),
        });
        if status.stale != was_stale {
            match &problem {
                Some(p) => {
                    tracing::error!("policy stale, refusing requests that need a policy decision: {p}")
                }
                None => tracing::info!(serial = ?status.serial, "policy fresh again"),
            }
            was_stale = status.stale;
        }
        metrics.set_policy_problem(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::pki::{self, IssueRequest};
    use ferry_proto::policy::{POLICY_FORMAT, PolicySnapshot};
    use std::path::{Path, PathBuf};
    use time::OffsetDateTime;

    fn issue(ca_dir: &Path, name: &str, dept: &str, role: Role) -> (PathBuf, PathBuf) {
        let now = OffsetDateTime::now_utc();
        let request = IssueRequest {
            dept: DeptId::new(dept).unwrap(),
            role,
            name: name.into(),
            dns_names: vec![name.into()],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(1),
        };
        let (cert, key) = (ca_dir.join(format!("{name}.pem")), ca_dir.join(format!("{name}.key")));
        pki::issue(ca_dir, &request, &cert, &key).unwrap();
        (cert, key)
    }

    fn signed_by(cert: &(PathBuf, PathBuf)) -> Vec<u8> {
        let snapshot = PolicySnapshot {
            format: POLICY_FORMAT.into(),
            serial: 1,
            issued_at_ms: 0,
            ministry: DeptId::new("mot").unwrap(),
            datasets: vec![],
            grants: vec![],
        };
        DocumentSigner::load(&cert.0, &cert.1).unwrap().sign(&snapshot.to_json()).encode()
    }

    #[test]
    fn only_the_ministrys_control_key_signs_the_policy() {
        let ca = tempfile::tempdir().unwrap();
        pki::init(ca.path(), "test CA", time::Duration::days(1)).unwrap();
        let other_ca = tempfile::tempdir().unwrap();
        pki::init(other_ca.path(), "another CA", time::Duration::days(1)).unwrap();
        let verifier = ControlKeyVerifier {
            trust: TrustAnchors::load(&ca.path().join("ca.pem"), None).unwrap(),
            ministry: DeptId::new("mot").unwrap(),
        };
        let now = SystemTime::now();
        let good = signed_by(&issue(ca.path(), "control", "mot", Role::Control));
        assert!(verifier.verify(&good, now).is_ok());
        let province_control =
            verifier.verify(&signed_by(&issue(ca.path(), "gd-control", "gd", Role::Control)), now);
        assert!(province_control.unwrap_err().contains("not of the ministry"));
        let node_key = verifier.verify(&signed_by(&issue(ca.path(), "ministry", "mot", Role::Ministry)), now);
        assert!(node_key.is_err(), "a node's TLS key does not sign policy");
        let foreign =
            verifier.verify(&signed_by(&issue(other_ca.path(), "control", "mot", Role::Control)), now);
        assert!(foreign.is_err(), "a key of another CA does not sign policy");
        let mut tampered = good.clone();
        let at = tampered.len() / 3;
        tampered[at] ^= 1;
        assert!(verifier.verify(&tampered, now).is_err());
        assert!(verifier.verify(b"\x00\x00", now).unwrap_err().contains("not a signed document"));
    }
}
