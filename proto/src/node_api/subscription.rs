//! The subscription node calls' documents: `ferry subscription add|list|remove` and the
//! subscriptions `ferry status` shows. A subscription keeps a node (or a directory it writes)
//! holding every version of a dataset a peer announces.

use crate::ids::{DatasetId, JobPriority, VersionNo};
use serde::{Deserialize, Serialize};

/// A subscription as an operator asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SubscriptionDefinition {
    pub dataset: DatasetId,
    /// The peer (a name of the node's `[peers]`) whose announcements are followed.
    pub from: String,
    /// A directory the versions are materialized into (absolute path on the node); absent:
    /// the node's own store, as `ferry replicate` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    /// `high`, `normal` (when absent) or `low`: the class of its pulls among the node's own and,
    /// declared, among its answers at the serving node ([`crate::JobPriority`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// Where a subscription was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionOrigin {
    /// `[[subscription]]` of the node config: changed there.
    Config,
    /// `ferry subscription add`: persisted by the node, removed by `ferry subscription remove`.
    Added,
}

/// What a subscription is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionState {
    /// Opening the stream to the source.
    #[default]
    Connecting,
    /// The stream is open; the latest announced version is held.
    Following,
    /// Pulling an announced version.
    Pulling,
    /// The last attempt failed (see `last_error`); retrying after a pause.
    Retrying,
}

/// One subscription of a node, with how far behind its source it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubscriptionView {
    pub dataset: DatasetId,
    /// The peer followed.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    pub origin: SubscriptionOrigin,
    /// The class of its pulls (`normal` from a node that does not say).
    #[serde(default)]
    pub priority: JobPriority,
    /// The version held (committed) now.
    pub held: Option<VersionNo>,
    /// The latest version the source announced.
    pub announced: Option<VersionNo>,
    /// Versions announced and not yet held.
    pub lag_versions: u64,
    /// Seconds since the source committed the announced version, while it is not held.
    pub seconds_behind: f64,
    pub state: SubscriptionState,
    /// Why the last attempt failed, while retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Announced versions pulled and committed since the node started.
    pub pulls: u64,
}
