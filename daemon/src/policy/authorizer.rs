//! The authorizer of a node that enforces the catalog: every decision comes from the policy
//! replica ([`super::replica`]), every outcome goes to the node's audit log.
//!
//! Decisions are [`ferry_proto::policy::PolicySnapshot::decide`]'s, on the snapshot in force; with
//! no fresh snapshot every request that needs a decision is refused (`Unavailable`, reason
//! `policy_stale` or `no_policy`), and listings show nothing. Outcomes are queued to the audit
//! writer ([`AuditSink`]); which ones are recorded is [`audit_entry`]'s choice: every denial,
//! every publish and replication, and a read when its manifest is fetched (once per pull of a
//! version, not once per chunk request, so the log does not grow with the bytes moved).

use super::replica::PolicyReplica;
use ferry_control::audit::{Actor, EntryKind, NewEntry, Outcome as AuditOutcome};
use ferry_proto::authz::{Access, Authorizer, Denial, Outcome, ReadPart, Request};
use ferry_proto::{DatasetId, DeptId, Principal};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Entries waiting for the audit writer; past this the node logs an ERROR per lost entry and
/// counts it (`ferry_audit_dropped_entries_total`): a node under a flood of refused requests
/// keeps serving rather than buffering without bound.
pub const AUDIT_QUEUE: usize = 65_536;

/// Where a node's authorizer sends audit entries (a writer task appends them in order).
#[derive(Debug, Clone)]
pub struct AuditSink {
    queue: mpsc::Sender<NewEntry>,
    dropped: prometheus_client::metrics::counter::Counter,
}

impl AuditSink {
    pub fn new(queue: mpsc::Sender<NewEntry>, dropped: prometheus_client::metrics::counter::Counter) -> Self {
        Self { queue, dropped }
    }

    /// Queues an entry without waiting.
    pub fn record(&self, entry: NewEntry) {
        if let Err(e) = self.queue.try_send(entry) {
            self.dropped.inc();
            let entry = match &e {
                mpsc::error::TrySendError::Full(entry) | mpsc::error::TrySendError::Closed(entry) => entry,
            };
            tracing::error!(kind = %entry.kind, reason = %entry.reason, "audit queue unavailable; entry lost");
        }
    }
}

/// Decides from the policy replica; reports to the audit log.
#[derive(Debug)]
pub struct PolicyAuthorizer {
    replica: Arc<PolicyReplica>,
    node_dept: DeptId,
    audit: Option<AuditSink>,
}

impl PolicyAuthorizer {
    pub fn new(replica: Arc<PolicyReplica>, node_dept: DeptId, audit: Option<AuditSink>) -> Self {
        Self { replica, node_dept, audit }
    }
}

impl Authorizer for PolicyAuthorizer {
    fn authorize(&self, peer: &Principal, request: &Request) -> Result<Access, Denial> {
        let now = SystemTime::now();
        let policy = self.replica.current(now)?;
        policy.decide(&self.node_dept, peer, request, unix_ms(now))
    }

    fn visible(&self, peer: &Principal, dataset: &DatasetId) -> bool {
        let now = SystemTime::now();
        self.replica.current(now).is_ok_and(|policy| policy.visible(peer, dataset, unix_ms(now)))
    }

    fn report(&self, peer: &Principal, request: &Request, outcome: &Outcome<'_>) {
        if let Some(audit) = &self.audit
            && let Some(entry) = audit_entry(peer, request, outcome, unix_ms(SystemTime::now()))
        {
            audit.record(entry);
        }
    }
}

/// Checks a version pulled from a peer against the policy: its publisher must be the catalog's
/// provider of its dataset (a node that re-serves a version cannot pass off its own).
#[derive(Debug)]
pub struct PolicyProvenance {
    replica: Arc<PolicyReplica>,
}

impl PolicyProvenance {
    pub fn new(replica: Arc<PolicyReplica>) -> Self {
        Self { replica }
    }
}

impl ferry_client::transfer::Provenance for PolicyProvenance {
    fn check(&self, manifest: &ferry_proto::Manifest) -> Result<(), String> {
        let policy = self.replica.current(SystemTime::now()).map_err(|d| d.message)?;
        policy
            .check_publisher(&manifest.dataset, &manifest.publisher, manifest.catalog_version)
            .map_err(|e| e.to_string())
    }
}

/// The audit entry for an outcome, or `None` for outcomes not recorded (see the module doc).
pub fn audit_entry(
    peer: &Principal,
    request: &Request,
    outcome: &Outcome<'_>,
    now_ms: i64,
) -> Option<NewEntry> {
    let (kind, result, reason, detail) = match (request, outcome) {
        (Request::List, Outcome::Denied(d)) => (EntryKind::ReadDenied, AuditOutcome::Refused, d.reason, None),
        (Request::List, _) => return None,
        (Request::Read { .. } | Request::ReadForGrant { .. }, Outcome::Denied(d)) => {
            (EntryKind::ReadDenied, AuditOutcome::Refused, d.reason, None)
        }
        (
            Request::Read { part: ReadPart::Manifest, .. }
            | Request::ReadForGrant { part: ReadPart::Manifest, .. },
            Outcome::Allowed,
        ) => (EntryKind::ReadAllowed, AuditOutcome::Accepted, "", None),
        (Request::Read { .. } | Request::ReadForGrant { .. }, _) => return None,
        (Request::Publish { .. }, Outcome::Denied(d)) => {
            (EntryKind::PublishRefused, AuditOutcome::Refused, d.reason, None)
        }
        (Request::Publish { .. }, Outcome::Completed { bytes }) => {
            (EntryKind::PublishAccepted, AuditOutcome::Accepted, "", Some(*bytes))
        }
        // The export did not match the catalog's information items: counted by supervision.
        (Request::Publish { .. }, Outcome::Failed { code: ferry_proto::ErrorCode::InvalidData, .. }) => {
            (EntryKind::PublishRefused, AuditOutcome::Refused, super::uses::SCHEMA_MISMATCH, None)
        }
        (Request::Publish { .. }, Outcome::Failed { .. }) => {
            (EntryKind::PublishRefused, AuditOutcome::Refused, "failed", None)
        }
        (Request::Replicate { .. }, Outcome::Denied(d)) => {
            (EntryKind::ReadDenied, AuditOutcome::Refused, d.reason, None)
        }
        (Request::Replicate { .. }, Outcome::Completed { bytes }) => {
            (EntryKind::TransferCompleted, AuditOutcome::Accepted, "", Some(*bytes))
        }
        (Request::Publish { .. } | Request::Replicate { .. }, _) => return None,
    };
    let mut facts = serde_json::Map::new();
    facts.insert("request".into(), request.kind().into());
    if let Request::Read { version: Some(v), .. }
    | Request::ReadForGrant { version: Some(v), .. }
    | Request::Replicate { version: Some(v), .. } = request
    {
        facts.insert("version".into(), v.get().into());
    }
    if let Request::Read { method, .. } | Request::ReadForGrant { method, .. } = request {
        facts.insert("method".into(), method.as_str().into());
    }
    if let Request::ReadForGrant { grant, .. } = request {
        facts.insert("for_grant".into(), (*grant).into());
    }
    if let Request::Replicate { source, .. } = request {
        facts.insert("source".into(), source.as_str().chars().take(64).collect::<String>().into());
    }
    if let Some(bytes) = detail {
        facts.insert("bytes".into(), bytes.into());
    }
    if let Outcome::Denied(d) = outcome {
        facts.insert("message".into(), d.message.chars().take(512).collect::<String>().into());
    }
    Some(NewEntry {
        time_ms: now_ms,
        kind,
        actor: Actor::from(peer),
        dataset: request.dataset().cloned(),
        outcome: result,
        reason: reason.to_string(),
        detail: serde_json::Value::Object(facts),
    })
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
