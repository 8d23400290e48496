//! Node calls: what an operator asks of one node about that node (`ferry status`, and the
//! schedules and subscriptions it runs), as opposed to the ministry's control plane.
//!
//! The dispatcher hands a `ControlCall` whose op starts with `node-`
//! ([`ferry_proto::node_api::NodeRequest`]) here. Only certificates of the node's own department
//! are answered (an operator, or one of the department's nodes); another department's peer is
//! refused `forbidden` without learning anything about the node. The answer is the control
//! plane's document (`{"ok": …}` / `{"error": …}`), so the CLI reads both the same way.

use crate::data::service::DataService;
use crate::policy::Governance;
use crate::subscribe::Subscriptions;
use crate::telemetry::{Direction, DirectionLabel, Metrics};
use ferry_control::api::{ApiCode, ApiError, ControlAnswer};
use ferry_proto::node_api::{HeldDataset, NodeRequest, NodeStatus, PolicyView, TransfersView};
use ferry_proto::{DeptId, Principal, Role};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Answers node calls with what the node's parts know.
#[derive(Debug)]
pub struct NodeCalls {
    node_name: String,
    node_dept: DeptId,
    service: Arc<DataService>,
    governance: Option<Arc<Governance>>,
    metrics: Arc<Metrics>,
    started: Instant,
    /// The node's scheduled downloads.
    schedules: Option<Arc<crate::schedule::Scheduler>>,
    /// The node's subscriptions to peers' datasets.
    subscriptions: Option<Arc<Subscriptions>>,
}

impl NodeCalls {
    pub fn new(
        node_name: String,
        node_dept: DeptId,
        service: Arc<DataService>,
        governance: Option<Arc<Governance>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let started = Instant::now();
        Self {
            node_name,
            node_dept,
            service,
            governance,
            metrics,
            started,
            subscriptions: None,
            schedules: None,
        }
    }

    /// Answers the subscription calls from `subscriptions`, and shows them in the status.
    pub fn with_subscriptions(mut self, subscriptions: Arc<Subscriptions>) -> Self {
        self.subscriptions = Some(subscriptions);
        self
    }

    /// Answers the schedule calls from `schedules`, and shows them in the status.
    pub fn with_schedules(mut self, schedules: Arc<crate::schedule::Scheduler>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// The answer to `request` from `peer`.
    pub async fn call(&self, peer: &Principal, request: NodeRequest) -> ControlAnswer {
        if let Err(refused) = self.admit(peer) {
            return ControlAnswer::Error(refused);
        }
        let answer = match request {
            NodeRequest::NodeStatus {} => serde_json::to_value(self.status()),
            NodeRequest::NodeSubscriptionAdd { .. }
            | NodeRequest::NodeSubscriptionList {}
            | NodeRequest::NodeSubscriptionRemove { .. } => {
                return crate::subscribe::calls::answer(self.subscriptions.as_deref(), request);
            }
            NodeRequest::NodeScheduleAdd { .. }
            | NodeRequest::NodeScheduleList {}
            | NodeRequest::NodeScheduleRemove { .. }
            | NodeRequest::NodeScheduleRunNow { .. } => {
                return crate::schedule::calls::answer(self.schedules.as_ref(), request);
            }
        };
        match answer {
            Ok(value) => ControlAnswer::Ok(value),
            Err(e) => {
                ControlAnswer::Error(ApiError::new(ApiCode::Internal, format!("encoding the answer: {e}")))
            }
        }
    }

    /// Only the node's own department: its operators and its nodes.
    fn admit(&self, peer: &Principal) -> Result<(), ApiError> {
        let own = peer.dept == self.node_dept;
        let role = matches!(peer.role, Role::Operator | Role::Ministry | Role::Province);
        if own && role {
            return Ok(());
        }
        Err(ApiError::new(
            ApiCode::Forbidden,
            format!(
                "node calls are answered to the node's own department ({}); this is a {} certificate of {}",
                self.node_dept, peer.role, peer.dept
            ),
        ))
    }

    fn status(&self) -> NodeStatus {
        let now = SystemTime::now();
        let policy = self.governance.as_ref().map(|g| {
            let status = g.replica.status(now);
            PolicyView { serial: status.serial, age_s: status.age.map(|a| a.as_secs()), stale: status.stale }
        });
        let mut datasets: Vec<HeldDataset> = self
            .service
            .store()
            .list()
            .into_iter()
            .map(|d| HeldDataset { dataset: d.id, publisher: d.publisher, latest: d.latest })
            .collect();
        datasets.sort_by(|a, b| a.dataset.cmp(&b.dataset));
        let active = |direction| {
            let gauge = self.metrics.active_transfers.get_or_create(&DirectionLabel { direction }).get();
            u64::try_from(gauge).unwrap_or(0)
        };
        NodeStatus {
            node: self.node_name.clone(),
            dept: self.node_dept.clone(),
            now_ms: now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            uptime_s: self.started.elapsed().as_secs(),
            policy,
            datasets,
            transfers: TransfersView {
                serving: active(Direction::Serve),
                replicating: active(Direction::Pull),
            },
            schedules: self.schedules.as_ref().map(|s| s.list()).unwrap_or_default(),
            subscriptions: self.subscriptions.as_ref().map(|s| s.list()).unwrap_or_default(),
        }
    }
}
