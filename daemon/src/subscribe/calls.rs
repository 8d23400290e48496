//! The `node-subscription-add|list|remove` calls (`ferry subscription ...`), answered from the
//! node's [`Subscriptions`] for `crate::node_calls`, which has already admitted the caller.

use super::registry::Subscriptions;
use super::spec::SubscriptionError;
use ferry_control::api::{ApiCode, ApiError, ControlAnswer};
use ferry_proto::node_api::NodeRequest;

/// The answer to a subscription call; `None`: the node has no subscriptions part.
pub fn answer(subscriptions: Option<&Subscriptions>, request: NodeRequest) -> ControlAnswer {
    let Some(subscriptions) = subscriptions else {
        return ControlAnswer::Error(ApiError::new(ApiCode::NotFound, "this node runs no subscriptions"));
    };
    let answer = match request {
        NodeRequest::NodeSubscriptionAdd { subscription } => {
            subscriptions.add(subscription).map(serde_json::to_value)
        }
        NodeRequest::NodeSubscriptionList {} => Ok(serde_json::to_value(subscriptions.list())),
        NodeRequest::NodeSubscriptionRemove { dataset, into } => {
            subscriptions.remove(&dataset, into.as_deref()).map(serde_json::to_value)
        }
        other => {
            let message = format!("{} is not a subscription call", other.to_json());
            return ControlAnswer::Error(ApiError::new(ApiCode::BadRequest, message));
        }
    };
    match answer {
        Ok(Ok(value)) => ControlAnswer::Ok(value),
        Ok(Err(e)) => {
            ControlAnswer::Error(ApiError::new(ApiCode::Internal, format!("encoding the answer: {e}")))
        }
        Err(e) => ControlAnswer::Error(ApiError::new(code_of(&e), e.to_string())),
    }
}

fn code_of(error: &SubscriptionError) -> ApiCode {
    match error {
        SubscriptionError::UnknownPeer { .. }
        | SubscriptionError::RelativeTarget(_)
        | SubscriptionError::BadPriority(_) => ApiCode::BadRequest,
        SubscriptionError::Duplicate { .. } | SubscriptionError::FromConfig { .. } => ApiCode::Conflict,
        SubscriptionError::NotFound { .. } => ApiCode::NotFound,
        SubscriptionError::Persist { .. } | SubscriptionError::Corrupt { .. } => ApiCode::Internal,
    }
}
