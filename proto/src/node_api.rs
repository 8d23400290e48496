//! Calls an operator makes of one node about that node itself (its status, and in later
//! modules its schedules and subscriptions), as opposed to the ministry's control plane.
//!
//! They travel as a `ControlCall` whose JSON `op` starts with [`NODE_OP_PREFIX`]; every node
//! answers them itself, with the control plane's answer document (`{"ok": …}` or
//! `{"error": …}`). The node answers only certificates of its own department. Pure types: the
//! daemon's `node_calls` module answers them, the CLI sends them.

use crate::ids::{DatasetId, DeptId, VersionNo};
use serde::{Deserialize, Serialize};

mod schedule;
mod subscription;
pub use schedule::{
    RunOutcome, RunRecord, RunStarted, RunTrigger, ScheduleDefinition, ScheduleSource, ScheduleView,
};
pub use subscription::{SubscriptionDefinition, SubscriptionOrigin, SubscriptionState, SubscriptionView};

/// Every node call's `op` starts with this; any other op is the control plane's.
pub const NODE_OP_PREFIX: &str = "node-";

/// A call about the node answering it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NodeRequest {
    /// `ferry status`: what the node holds and does now ([`NodeStatus`]).
    NodeStatus {},
    /// `ferry schedule add`: a scheduled download job, persisted by the node ([`ScheduleView`]).
    NodeScheduleAdd { schedule: Box<ScheduleDefinition> },
    /// `ferry schedule list`: every job with its last run and next run (`Vec<ScheduleView>`).
    NodeScheduleList {},
    /// `ferry schedule remove`: a job added by a node call (config jobs are changed there).
    NodeScheduleRemove { name: String },
    /// `ferry schedule run-now`: starts a run at once ([`RunStarted`]); `conflict` while one runs.
    NodeScheduleRunNow { name: String },
    /// `ferry subscription add`: follow a peer's dataset, persisted by the node
    /// ([`SubscriptionView`]).
    NodeSubscriptionAdd { subscription: SubscriptionDefinition },
    /// `ferry subscription list`: every subscription with its lag (`Vec<SubscriptionView>`).
    NodeSubscriptionList {},
    /// `ferry subscription remove`: one added by a node call (config ones are changed there);
    /// `into` names which one when the dataset is followed into several places.
    NodeSubscriptionRemove {
        dataset: DatasetId,
        #[serde(default)]
        into: Option<String>,
    },
}

impl NodeRequest {
    /// `None` when `json` is not a node call (no `op`, or one without the prefix): the control
    /// plane answers it. `Some(Err)` names what is wrong with a node call.
    pub fn parse(json: &str) -> Option<Result<Self, String>> {
        #[derive(Deserialize)]
        struct Op<'a> {
            #[serde(borrow)]
            op: Option<std::borrow::Cow<'a, str>>,
        }
        let op = serde_json::from_str::<Op<'_>>(json).ok()?.op?;
        if !op.starts_with(NODE_OP_PREFIX) {
            return None;
        }
        Some(serde_json::from_str(json).map_err(|e| format!("malformed {op} call: {e}")))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The answer to [`NodeRequest::NodeStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeStatus {
    pub node: String,
    pub dept: DeptId,
    /// The node's clock when it answered, Unix milliseconds.
    pub now_ms: u64,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// The policy replica, when the node enforces a catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyView>,
    /// Each dataset the node stores, with its latest version.
    pub datasets: Vec<HeldDataset>,
    /// Pulls and answers in progress now.
    #[serde(default)]
    pub transfers: TransfersView,
    /// Scheduled download jobs, with their last and next runs.
    #[serde(default)]
    pub schedules: Vec<ScheduleView>,
    /// The node's subscriptions to peers' datasets, with their lag.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionView>,
}

/// What the node's policy replica holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyView {
    /// Serial of the snapshot held, if any.
    pub serial: Option<u64>,
    /// Seconds since the copy was last confirmed fresh.
    pub age_s: Option<u64>,
    pub stale: bool,
}

/// One dataset a node stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HeldDataset {
    pub dataset: DatasetId,
    pub publisher: DeptId,
    pub latest: Option<VersionNo>,
}

/// Transfers in progress at a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TransfersView {
    /// Streams answering reads (downloads, subscription pulls) now.
    pub serving: u64,
    /// Replications (node-to-node pulls) running now.
    pub replicating: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_prefixed_ops_are_node_calls() {
        assert_eq!(NodeRequest::parse(r#"{"op":"node-status"}"#), Some(Ok(NodeRequest::NodeStatus {})));
        assert_eq!(NodeRequest::parse(r#"{"op":"catalog-list"}"#), None);
        assert_eq!(NodeRequest::parse(r#"{"dept":"x"}"#), None);
        assert_eq!(NodeRequest::parse("not json"), None);
        let err = NodeRequest::parse(r#"{"op":"node-status","extra":1}"#).unwrap().unwrap_err();
        assert!(err.contains("node-status"), "{err}");
        let err = NodeRequest::parse(r#"{"op":"node-unheard-of"}"#).unwrap().unwrap_err();
        assert!(err.contains("node-unheard-of"), "{err}");
        assert_eq!(NodeRequest::NodeStatus {}.to_json(), r#"{"op":"node-status"}"#);
    }
}
