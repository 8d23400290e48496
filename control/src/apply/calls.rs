//! The control calls of applications and reviews (`ferry apply`, `ferry review ...`) as the
//! ministry node answers them: each call runs as the caller's principal, its answer is the
//! JSON of the result, and a refusal is an [`ApiError`] whose code the CLI maps to its exit
//! status. A call that makes a grant ticks the plane's changes, so the node re-issues its
//! policy snapshot at once.
//!
//! `review approve` and `review refuse` act on the application's pending step: the first
//! review while it waits for technical support, the decision after that.

use ferry_proto::Principal;
use serde_json::Value;
use time::OffsetDateTime;

use super::review::Verdict;
use super::{ApplicationId, ApplicationRequest, ApplicationState, ApplyError};
use crate::api::{ApiCode, ApiError, ControlRequest};
use crate::plane::{ControlPlane, parse_time, store_error};

/// Maps an application error to the answer the caller gets.
pub fn apply_error(e: ApplyError) -> ApiError {
    let e = match e {
        ApplyError::Store(store) => return store_error(store),
        other => other,
    };
    let code = match &e {
        ApplyError::Calendar(_) => {
            tracing::error!(error = %e, "review deadline beyond the working-day calendar; add the year's file");
            ApiCode::Unavailable
        }
        ApplyError::Invalid(_)
        | ApplyError::MethodNotOffered { .. }
        | ApplyError::UnknownColumn { .. }
        | ApplyError::KeyColumnMissing { .. }
        | ApplyError::RowFilter(_)
        | ApplyError::ContentNotApplicable { .. }
        | ApplyError::OwnDataset { .. }
        | ApplyError::BasisRequired(_) => ApiCode::BadRequest,
        ApplyError::KeyReused { .. } | ApplyError::WrongState { .. } => ApiCode::Conflict,
        ApplyError::WrongRole { .. } => ApiCode::Forbidden,
        ApplyError::Store(_) => ApiCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

fn to_value(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))
}

/// Answers one application or review call of `caller`.
pub async fn call(
    plane: &ControlPlane,
    caller: &Principal,
    request: ControlRequest,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let store = plane.store();
    match request {
        ControlRequest::Apply { dataset, purpose, methods, columns, rows, key } => {
            let request = ApplicationRequest { dataset, purpose, methods, columns, rows, key };
            let submitted = store.submit_application(caller, &request, now).await.map_err(apply_error)?;
            if submitted.created && submitted.application.grant.is_some() {
                plane.policy_changed();
            }
            to_value(submitted)
        }
        ControlRequest::ReviewList { state } => {
            to_value(store.applications(caller, state).await.map_err(apply_error)?)
        }
        ControlRequest::ReviewDue {} => to_value(store.reviews_due(caller, now).await.map_err(apply_error)?),
        ControlRequest::ReviewApprove { application, note } => {
            review(plane, caller, ApplicationId(application), Verdict::Approve { note }, now).await
        }
        ControlRequest::ReviewRefuse { application, basis } => {
            review(plane, caller, ApplicationId(application), Verdict::Refuse { basis }, now).await
        }
        ControlRequest::ReviewAskMaterial { application, what } => {
            let app = store.ask_material(caller, ApplicationId(application), &what, now).await;
            to_value(app.map_err(apply_error)?)
        }
        ControlRequest::ReviewSupplyMaterial { application, note } => {
            let app = store.supply_material(caller, ApplicationId(application), &note, now).await;
            to_value(app.map_err(apply_error)?)
        }
        ControlRequest::ReviewDelegate { delegate } => {
            to_value(store.set_review_delegation(caller, delegate, now).await.map_err(apply_error)?)
        }
        ControlRequest::ReviewDelegated { provider, since } => {
            let provider = provider.unwrap_or_else(|| caller.dept.clone());
            let since = since.as_deref().map(parse_time).transpose()?.unwrap_or(OffsetDateTime::UNIX_EPOCH);
            to_value(store.delegated_decisions(caller, &provider, since).await.map_err(apply_error)?)
        }
        other => Err(ApiError::new(ApiCode::Internal, format!("{} is not an application call", other.op()))),
    }
}

/// Approves or refuses the pending step of `id`: the first review, or the decision.
async fn review(
    plane: &ControlPlane,
    caller: &Principal,
    id: ApplicationId,
    verdict: Verdict,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let store = plane.store();
    let app = store.application(caller, id).await.map_err(apply_error)?;
    let decided = if app.state == ApplicationState::FirstReview {
        store.first_review(caller, id, &verdict, now).await
    } else {
        store.decide_application(caller, id, &verdict, now).await
    };
    let decided = decided.map_err(apply_error)?;
    if decided.grant.is_some() {
        plane.policy_changed();
    }
    to_value(decided)
}
