//! What a node tells the control plane about its traffic, for the grant lifecycle and
//! supervision: the uses it served (a manifest read allowed, a replication completed: which
//! department, dataset, method, when) and the publishes it refused because the export did not
//! match the catalog (`schema_mismatch`).
//!
//! The facts are read off the audit entries the node writes anyway ([`facts_of`]). At the
//! ministry they go to the control plane in process, once per audit batch; a province merges
//! them ([`UseBatch`]: the latest time per department, dataset and method) and sends one
//! `report-use` control call at most every `[policy] report-uses-every` (default
//! [`REPORT_EVERY`]), keeping the batch for the next
//! round when the ministry is unreachable.
//!
//! Neighbours: [`crate::control::write_audit`] feeds it; [`super::authorizer::audit_entry`]
//! names a schema mismatch; `ferry_control::grants::uses` records the reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::conn::Connector;
use ferry_control::api::{ControlAnswer, ControlRequest};
use ferry_control::audit::{EntryKind, NewEntry};
use ferry_control::grants::{PublishRefusalReport, UseReport};
use ferry_control::plane::ControlPlane;
use ferry_proto::{DatasetId, DeptId, Message, ServiceMethod};
use tokio::sync::watch;

/// A province sends at most one report per this period unless `[policy] report-uses-every` says
/// otherwise.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The audit reason of a publish refused because the export did not match the catalog entry.
pub const SCHEMA_MISMATCH: &str = "schema_mismatch";

/// Most refusals a province keeps while the ministry is unreachable (the oldest go first).
const MAX_PENDING_REFUSALS: usize = 1_000;

/// The uses and schema-mismatch refusals among `entries`.
pub fn facts_of(entries: &[NewEntry]) -> (Vec<UseReport>, Vec<PublishRefusalReport>) {
    let mut uses = Vec::new();
    let mut refusals = Vec::new();
    for entry in entries {
        let Some(dataset) = entry.dataset.clone() else { continue };
        let method = match entry.kind {
            EntryKind::ReadAllowed => {
                entry.detail.get("method").and_then(|m| m.as_str()).and_then(|m| m.parse().ok())
            }
            EntryKind::TransferCompleted => Some(ServiceMethod::Download),
            EntryKind::PublishRefused if entry.reason == SCHEMA_MISMATCH => {
                refusals.push(PublishRefusalReport {
                    dataset,
                    reason: entry.reason.clone(),
                    at_ms: entry.time_ms,
                });
                continue;
            }
            _ => None,
        };
        if let Some(method) = method {
            uses.push(UseReport {
                dept: entry.actor.department.clone(),
                dataset,
                method,
                at_ms: entry.time_ms,
            });
        }
    }
    (uses, refusals)
}

/// Uses merged by (department, dataset, method), keeping the latest time, and refusals.
#[derive(Debug, Default)]
pub struct UseBatch {
    uses: HashMap<(DeptId, DatasetId, ServiceMethod), i64>,
    refusals: Vec<PublishRefusalReport>,
}

impl UseBatch {
    pub fn add(&mut self, uses: Vec<UseReport>, refusals: Vec<PublishRefusalReport>) {
        for used in uses {
            let at = self.uses.entry((used.dept, used.dataset, used.method)).or_insert(used.at_ms);
            *at = (*at).max(used.at_ms);
        }
        self.refusals.extend(refusals);
        let excess = self.refusals.len().saturating_sub(MAX_PENDING_REFUSALS);
        self.refusals.drain(..excess);
    }

    pub fn is_empty(&self) -> bool {
        self.uses.is_empty() && self.refusals.is_empty()
    }

    /// The batch as one `report-use` request, leaving it empty.
    pub fn take(&mut self) -> ControlRequest {
        let uses = std::mem::take(&mut self.uses)
            .into_iter()
            .map(|((dept, dataset, method), at_ms)| UseReport { dept, dataset, method, at_ms })
            .collect();
        ControlRequest::ReportUse { uses, publish_refusals: std::mem::take(&mut self.refusals) }
    }

    /// Puts back what a failed report carried.
    pub fn restore(&mut self, request: ControlRequest) {
        if let ControlRequest::ReportUse { uses, publish_refusals } = request {
            self.add(uses, publish_refusals);
        }
    }
}

/// Where a node's use facts go.
#[derive(Clone)]
pub enum UseSink {
    /// A node that reports nothing (no `[policy]`).
    Nowhere,
    /// The ministry: its own control plane, in process.
    Plane(Arc<ControlPlane>),
    /// A province: batched, sent to the ministry by [`report_uses`].
    Batch(Arc<Mutex<UseBatch>>),
}

impl UseSink {
    /// Hands over the facts of one audit batch.
    pub async fn record(&self, entries: &[NewEntry]) {
        let (uses, refusals) = facts_of(entries);
        if uses.is_empty() && refusals.is_empty() {
            return;
        }
        match self {
            Self::Nowhere => {}
            Self::Plane(plane) => {
                if let Err(e) = plane.record_uses(&uses, &refusals).await {
                    tracing::warn!(error = %e, uses = uses.len(), "cannot record dataset uses");
                }
            }
            Self::Batch(batch) => batch.lock().unwrap_or_else(|p| p.into_inner()).add(uses, refusals),
        }
    }
}

/// Sends `batch` to the ministry every `every` while it holds anything, until `draining`.
pub async fn report_uses(
    connector: Connector,
    batch: Arc<Mutex<UseBatch>>,
    every: Duration,
    mut draining: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            _ = ticks.tick() => {}
        }
        let request = {
            let mut batch = batch.lock().unwrap_or_else(|p| p.into_inner());
            if batch.is_empty() {
                continue;
            }
            batch.take()
        };
        if let Err(e) = send(&connector, &request).await {
            tracing::warn!(error = %e, "cannot report dataset uses to the ministry; kept for the next round");
            batch.lock().unwrap_or_else(|p| p.into_inner()).restore(request);
        }
    }
}

/// One control call to the ministry as this node.
pub async fn send(connector: &Connector, request: &ControlRequest) -> Result<serde_json::Value, String> {
    let session = connector.connect().await.map_err(|e| e.to_string())?;
    let message = Message::ControlCall { request: request.to_json() };
    let answer = session.request(&message).await.map_err(|e| e.to_string());
    session.close();
    match answer? {
        Message::ControlAnswer { answer } => {
            ControlAnswer::parse(&answer).and_then(ControlAnswer::into_result).map_err(|e| e.to_string())
        }
        _ => Err("the ministry did not answer the control call".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_control::audit::{Actor, Outcome};
    use ferry_proto::Role;

    fn entry(kind: EntryKind, reason: &str, detail: serde_json::Value, at: i64) -> NewEntry {
        NewEntry {
            time_ms: at,
            kind,
            actor: Actor {
                department: DeptId::new("guangdong").unwrap(),
                role: Role::Province,
                name: "gd".into(),
                cert_serial: "01".into(),
            },
            dataset: Some(DatasetId::new("vehicles").unwrap()),
            outcome: Outcome::Accepted,
            reason: reason.into(),
            detail,
        }
    }

    #[test]
    fn reads_replications_and_schema_refusals_become_one_merged_report() {
        let entries = [
            entry(EntryKind::ReadAllowed, "", serde_json::json!({"method": "download"}), 1_000),
            entry(EntryKind::ReadAllowed, "", serde_json::json!({"method": "download"}), 5_000),
            entry(EntryKind::TransferCompleted, "", serde_json::json!({}), 3_000),
            entry(EntryKind::ReadAllowed, "", serde_json::json!({"method": "online-query"}), 2_000),
            entry(EntryKind::PublishRefused, SCHEMA_MISMATCH, serde_json::json!({}), 4_000),
            entry(EntryKind::PublishRefused, "failed", serde_json::json!({}), 4_000),
            entry(EntryKind::ReadDenied, "no_grant", serde_json::json!({"method": "download"}), 4_000),
        ];
        let (uses, refusals) = facts_of(&entries);
        assert_eq!((uses.len(), refusals.len()), (4, 1));
        let mut batch = UseBatch::default();
        batch.add(uses, refusals);
        let ControlRequest::ReportUse { mut uses, publish_refusals } = batch.take() else {
            panic!("report-use")
        };
        uses.sort_by_key(|u| u.at_ms);
        assert_eq!(
            uses.iter().map(|u| (u.method, u.at_ms)).collect::<Vec<_>>(),
            [(ServiceMethod::OnlineQuery, 2_000), (ServiceMethod::Download, 5_000)]
        );
        assert_eq!(publish_refusals.len(), 1);
        assert!(batch.is_empty());
    }
}
