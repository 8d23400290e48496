//! Answers `ferry explain` at any node that enforces a catalog: the decision part from the
//! node's own replica (the snapshot its authorizer decides by, and whether it is stale), and at
//! the ministry the pending applications from the control store. The rules and the rendering
//! are `ferry_control::explain`'s; `crate::net::dispatch` hands it the `explain` control calls.

use super::Governance;
use super::authorizer::unix_ms;
use ferry_control::api::{ApiCode, ApiError, ControlAnswer};
use ferry_control::explain::{ExplainRequest, ReplicaView, explain, pending_applications};
use ferry_proto::{Principal, Role};
use std::time::SystemTime;

/// The answer to an `explain` call of `peer` at the node `node_name`.
pub async fn answer(
    governance: &Governance,
    node_name: &str,
    peer: &Principal,
    query: &ExplainRequest,
) -> ControlAnswer {
    if peer.role == Role::Control {
        return ControlAnswer::Error(ApiError::new(
            ApiCode::Forbidden,
            "the control-plane signing key makes no calls",
        ));
    }
    let now = SystemTime::now();
    let enforcing = governance.replica.current(now);
    let held = governance.replica.held();
    let supervisor = match &governance.control {
        Some(control) => {
            let roles = control.plane().roles();
            peer.dept == roles.technical_support || peer.dept == roles.st_authority
        }
        None => held.as_ref().is_some_and(|p| p.ministry == peer.dept),
    };
    let denial = enforcing.as_ref().err();
    let mut explanation = match explain(held.as_deref(), denial, peer, supervisor, query, unix_ms(now)) {
        Ok(e) => e,
        Err(e) => return ControlAnswer::Error(ApiError::new(ApiCode::Forbidden, e.to_string())),
    };
    let status = governance.replica.status(now);
    explanation.replica = Some(ReplicaView {
        node: node_name.to_owned(),
        serial: status.serial,
        issued_at_ms: held.as_ref().map(|p| p.issued_at_ms),
        age_seconds: status.age.map(|a| a.as_secs()),
        max_staleness_seconds: status.max_staleness.as_secs(),
        stale: status.stale,
    });
    if let Some(control) = &governance.control {
        let ExplainRequest::Explain { dept, dataset, .. } = query;
        match pending_applications(control.plane().store(), peer, dept, dataset).await {
            Ok(applications) => explanation.applications = Some(applications),
            Err(e) => tracing::warn!(error = %e, "explain: pending applications unavailable"),
        }
    }
    match serde_json::to_value(&explanation) {
        Ok(value) => ControlAnswer::Ok(value),
        Err(e) => ControlAnswer::Error(ApiError::new(ApiCode::Internal, e.to_string())),
    }
}
