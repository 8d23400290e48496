//! `ferry explain DEPT DATASET [--method M]`: why a department may or may not get a dataset.
//!
//! Every node that enforces a catalog answers an [`ExplainRequest`] (a `ControlCall` whose `op`
//! is `explain`) from the policy it enforces: the catalog entry in effect, the department's
//! grants in force, and for each method the decision of [`PolicySnapshot::decide`] — the very
//! call the node makes for every request, so an explanation cannot disagree with enforcement —
//! and the age of the node's copy of the policy. The ministry's node adds the department's
//! pending applications from the control store ([`pending_applications`]). The daemon
//! (`daemon/src/policy/explain.rs`) fills in the replica; the CLI renders [`render`].
//!
//! Who may ask: the department itself, the dataset's provider, and the supervisors (technical
//! support, which runs the ministry platform, and the S&T authority). A not-shared entry is
//! explained only to its provider and the supervisors; to everyone else it reads as absent.

use crate::apply::Application;
use crate::store::{ControlStore, StoreError};
use ferry_proto::authz::{Access, Denial, ReadPart, Request};
use ferry_proto::policy::{PolicyGrant, PolicySnapshot, PolicyStage};
use ferry_proto::{DatasetId, DeptId, Principal, Role, ServiceMethod, ShareType};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// The call: `{"op":"explain","dept":"gd","dataset":"vehicles","method":"download"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ExplainRequest {
    Explain {
        dept: DeptId,
        dataset: DatasetId,
        /// Absent: every method the catalog entry offers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<ServiceMethod>,
    },
}

impl ExplainRequest {
    /// Reads a `ControlCall` body as an explain call, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The catalog entry in effect, as the policy carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogView {
    pub provider: DeptId,
    pub catalog_version: u64,
    pub effective_from_ms: i64,
    pub stage: PolicyStage,
    pub share_type: ShareType,
    pub methods: Vec<ServiceMethod>,
}

/// What the node decides for a read by one method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MethodDecision {
    pub method: ServiceMethod,
    /// `full`, `restricted` or `refused`.
    pub outcome: String,
    /// The grant that allows a restricted read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<u64>,
    /// The refusal's reason label (`no_grant`, `policy_stale`, …) and words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The node's copy of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicaView {
    /// The node that answered.
    pub node: String,
    pub serial: Option<u64>,
    pub issued_at_ms: Option<i64>,
    /// Seconds since the copy was last confirmed fresh.
    pub age_seconds: Option<u64>,
    pub max_staleness_seconds: u64,
    /// Past its max-staleness (or none held): the node refuses every read.
    pub stale: bool,
}

/// An application not yet decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PendingApplication {
    pub id: u64,
    pub state: String,
    pub purpose: String,
    pub methods: Vec<ServiceMethod>,
    /// The last day the pending step is on time (YYYY-MM-DD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_on: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Explanation {
    pub dept: DeptId,
    pub dataset: DatasetId,
    /// `None`: not in the catalog in effect (or not shown to the asker).
    pub catalog: Option<CatalogView>,
    /// The department's grants in force for the dataset.
    pub grants: Vec<PolicyGrant>,
    pub decisions: Vec<MethodDecision>,
    /// Filled by the ministry's node; `None` where the control store is not at hand.
    pub applications: Option<Vec<PendingApplication>>,
    pub replica: Option<ReplicaView>,
}

/// Why an explanation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "department {asker} may not ask why {dept} may or may not get a dataset (the department itself, the provider and the supervisors may)"
)]
pub struct NotYours {
    pub asker: DeptId,
    pub dept: DeptId,
}

/// Explains `query` from `policy`, the snapshot the node enforces. `enforcing` is the denial
/// every read gets when the node holds no fresh snapshot (then `policy` is the stale copy, if
/// any). `supervisor`: the asker is technical support or the S&T authority.
pub fn explain(
    policy: Option<&PolicySnapshot>,
    enforcing: Option<&Denial>,
    asker: &Principal,
    supervisor: bool,
    query: &ExplainRequest,
    now_ms: i64,
) -> Result<Explanation, NotYours> {
    let ExplainRequest::Explain { dept, dataset, method } = query;
    let record = policy.and_then(|p| p.in_effect(dataset, now_ms));
    let provider = record.is_some_and(|(d, _)| d.provider == asker.dept);
    if asker.dept != *dept && !supervisor && !provider {
        return Err(NotYours { asker: asker.dept.clone(), dept: dept.clone() });
    }
    let shown = record.filter(|(_, e)| e.share_type != ShareType::NotShared || supervisor || provider);
    let catalog = shown.map(|(d, e)| CatalogView {
        provider: d.provider.clone(),
        catalog_version: e.catalog_version,
        effective_from_ms: e.effective_from_ms,
        stage: e.stage,
        share_type: e.share_type,
        methods: e.methods.clone(),
    });
    let grants: Vec<PolicyGrant> = match (policy, shown) {
        (Some(p), Some(_)) => p.grants_of(dept, dataset).cloned().collect(),
        _ => Vec::new(),
    };
    let methods = match (method, &catalog) {
        (Some(m), _) => vec![*m],
        (None, Some(c)) if !c.methods.is_empty() => c.methods.clone(),
        _ => vec![ServiceMethod::OnlineQuery, ServiceMethod::Subscription, ServiceMethod::Download],
    };
    // The department's own operator asks the node, as a consumer would.
    let reader = Principal {
        dept: dept.clone(),
        role: Role::Operator,
        name: format!("{dept}-explain"),
        serial: String::new(),
        fingerprint: String::new(),
    };
    let decisions = methods
        .into_iter()
        .map(|m| {
            let request = Request::Read {
                dataset: dataset.clone(),
                version: None,
                method: m,
                part: ReadPart::Manifest,
            };
            let result = match (enforcing, policy) {
                (Some(denial), _) => Err(denial.clone()),
                (None, Some(p)) => p.decide(&reader.dept, &reader, &request, now_ms),
                (None, None) => Err(Denial::unavailable("no_policy", "no policy snapshot is held")),
            };
            decision(m, result, shown.is_some())
        })
        .collect();
    Ok(Explanation {
        dept: dept.clone(),
        dataset: dataset.clone(),
        catalog,
        grants,
        decisions,
        applications: None,
        replica: None,
    })
}

fn decision(method: ServiceMethod, result: Result<Access, Denial>, shown: bool) -> MethodDecision {
    let (outcome, grant, reason, message) = match result {
        Ok(Access::Full) => ("full", None, None, None),
        Ok(Access::Restricted { grant, .. }) => ("restricted", Some(grant), None, None),
        // A dataset not shown to the asker is refused with the words an absent one gets.
        Err(d) if !shown => ("refused", None, Some("not_in_catalog".to_owned()), Some(d.message)),
        Err(d) => ("refused", None, Some(d.reason.to_owned()), Some(d.message)),
    };
    MethodDecision { method, outcome: outcome.into(), grant, reason, message }
}

/// The undecided applications of `dept` for `dataset` that `asker` may see, oldest first.
pub async fn pending_applications(
    store: &ControlStore,
    asker: &Principal,
    dept: &DeptId,
    dataset: &DatasetId,
) -> Result<Vec<PendingApplication>, StoreError> {
    let all = store.applications(asker, None).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(all
        .into_iter()
        .filter(|a| a.dept == *dept && a.dataset == *dataset && !a.state.is_decided())
        .map(view)
        .collect())
}

fn view(app: Application) -> PendingApplication {
    PendingApplication {
        id: app.id.0,
        state: app.state.as_str().to_owned(),
        purpose: app.purpose,
        methods: app.methods,
        due_on: app.due_on.map(|d| d.to_string()),
    }
}

/// A few readable lines.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let (dept, dataset) = (&e.dept, &e.dataset);
    match &e.catalog {
        None => {
            let _ = writeln!(out, "{dataset}: not in the catalog in effect (or not shared with {dept})");
        }
        Some(c) => {
            let methods: Vec<&str> = c.methods.iter().map(|m| m.as_str()).collect();
            let _ = writeln!(
                out,
                "{dataset}: catalog version {} ({:?}, provided by {}), {}, offered by {}",
                c.catalog_version,
                c.stage,
                c.provider,
                c.share_type.as_str(),
                if methods.is_empty() { "no method".to_owned() } else { methods.join(", ") }
            );
        }
    }
    if e.grants.is_empty() {
        let _ = writeln!(out, "grants of {dept}: none in force");
    }
    for g in &e.grants {
        let methods: Vec<&str> = g.methods.iter().map(|m| m.as_str()).collect();
        let content = match g.effective_restriction() {
            None => "the whole dataset".to_owned(),
            Some(r) => format!(
                "columns {}, rows {}",
                r.columns.as_ref().map_or("all".to_owned(), |c| c.join(", ")),
                r.rows.as_deref().unwrap_or("all")
            ),
        };
        let _ = writeln!(
            out,
            "grant {} of {dept}: {} for {:?}; {content}; catalog versions from {}{}",
            g.id,
            methods.join(", "),
            g.purpose,
            g.catalog_versions.from,
            g.catalog_versions.to.map_or(" on".to_owned(), |t| format!(" to {t}"))
        );
    }
    match &e.applications {
        None => {
            let _ = writeln!(out, "pending applications: ask the ministry (ferry explain --ministry)");
        }
        Some(apps) if apps.is_empty() => {
            let _ = writeln!(out, "pending applications: none");
        }
        Some(apps) => {
            for a in apps {
                let due = a.due_on.as_deref().map_or(String::new(), |d| format!(", step due {d}"));
                let _ = writeln!(out, "application {}: {}{due} ({:?})", a.id, a.state, a.purpose);
            }
        }
    }
    for d in &e.decisions {
        let line = match d.outcome.as_str() {
            "full" => format!("{}: allowed, the whole dataset", d.method),
            "restricted" => format!(
                "{}: allowed, restricted to what grant {} permits",
                d.method,
                d.grant.unwrap_or_default()
            ),
            _ => format!(
                "{}: refused ({}): {}",
                d.method,
                d.reason.as_deref().unwrap_or("refused"),
                d.message.as_deref().unwrap_or_default()
            ),
        };
        let _ = writeln!(out, "{line}");
    }
    if let Some(r) = &e.replica {
        let state = if r.stale { "STALE: the node refuses every read" } else { "fresh" };
        let _ = writeln!(
            out,
            "policy at {}: serial {}, {}s old (max {}s), {state}",
            r.node,
            r.serial.map_or("none".to_owned(), |s| s.to_string()),
            r.age_seconds.map_or("-".to_owned(), |a| a.to_string()),
            r.max_staleness_seconds
        );
    }
    out
}

#[cfg(test)]
mod tests;
