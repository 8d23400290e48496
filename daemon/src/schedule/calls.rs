//! The schedule node calls (`node-schedule-add|list|remove|run-now`), answered from the
//! [`Scheduler`] for `crate::node_calls`, with the control plane's answer document.

use super::{ScheduleError, Scheduler};
use ferry_control::api::{ApiCode, ApiError, ControlAnswer};
use ferry_proto::node_api::NodeRequest;
use std::sync::Arc;

/// The answer to a schedule call; `scheduler` is `None` on a node that runs none.
pub fn answer(scheduler: Option<&Arc<Scheduler>>, request: NodeRequest) -> ControlAnswer {
    let Some(scheduler) = scheduler else {
        return ControlAnswer::Error(ApiError::new(ApiCode::NotFound, "this node runs no schedules"));
    };
    let value = match request {
        NodeRequest::NodeScheduleAdd { schedule } => scheduler.add(*schedule).map(serde_json::to_value),
        NodeRequest::NodeScheduleList {} => Ok(serde_json::to_value(scheduler.list())),
        NodeRequest::NodeScheduleRemove { name } => {
            scheduler.remove(&name).map(|()| Ok(serde_json::json!({ "removed": name })))
        }
        NodeRequest::NodeScheduleRunNow { name } => scheduler.run_now(&name).map(serde_json::to_value),
        other => {
            let message = format!("{} is not a schedule call", other.to_json());
            return ControlAnswer::Error(ApiError::new(ApiCode::BadRequest, message));
        }
    };
    match value {
        Ok(Ok(value)) => ControlAnswer::Ok(value),
        Ok(Err(e)) => {
            ControlAnswer::Error(ApiError::new(ApiCode::Internal, format!("encoding the answer: {e}")))
        }
        Err(e) => ControlAnswer::Error(refusal(&e)),
    }
}

fn refusal(e: &ScheduleError) -> ApiError {
    let code = match e {
        ScheduleError::Invalid(_) | ScheduleError::FromConfig(_) => ApiCode::BadRequest,
        ScheduleError::Exists(_) | ScheduleError::Running(_) => ApiCode::Conflict,
        ScheduleError::NotFound(_) => ApiCode::NotFound,
        ScheduleError::State(_) => ApiCode::Internal,
    };
    let mut error = ApiError::new(code, e.to_string());
    if let ScheduleError::Invalid(spec) = e {
        error.detail = Some(serde_json::json!({ "field": spec.field }));
    }
    error
}
