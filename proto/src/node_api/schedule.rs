//! Scheduled bulk downloads (数据下载) as node calls carry them: the definition of a job as an
//! operator writes it (the same keys as a `[[schedule]]` table of the node config), and what
//! `ferry schedule list` and `ferry status` show of each job. Pure types: the daemon's `schedule`
//! module parses a [`ScheduleDefinition`] into its typed form and fills [`ScheduleView`].

use crate::ids::{DatasetId, JobPriority, VersionNo};
use serde::{Deserialize, Serialize};

/// A job as written: strings and optional settings, parsed (and refused with the field named)
/// by the node. Durations are humantime text (`"30s"`, `"2h"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScheduleDefinition {
    /// Unique on the node: letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub dataset: String,
    /// A peer name of the node's `[peers]`.
    pub from: String,
    /// An absolute directory the versions are materialized in, or `store` (the node's own store).
    pub into: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    pub cron: String,
    /// IANA name; `Asia/Shanghai` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A run starts up to this long after its scheduled time (spreads nodes sharing a cron).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// A run (retries included) that has not finished this long after it started is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Attempts after a failed one, for failures that may pass (the peer unreachable or busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Wait before the first retry; doubled for each further one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// After downtime that passed a scheduled time, run once at start (true when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<bool>,
    /// A disabled job keeps its state and runs only when asked (`run-now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `high`, `normal` (when absent) or `low`: the job's class among the node's own pulls and,
    /// declared, among its answers at the serving node ([`crate::JobPriority`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// Where a job comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleSource {
    /// A `[[schedule]]` of the node config: changed there, not by node calls.
    Config,
    /// Added by `node-schedule-add`; persisted in the node's state directory.
    Added,
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunTrigger {
    Scheduled,
    RunNow,
    /// At start, for a scheduled time passed while the node was down.
    CatchUp,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Succeeded,
    /// The serving node refused the read (no grant for download, unknown dataset, …): retrying
    /// does not help; `code` and `error` say why.
    Refused,
    /// Every attempt failed (the peer unreachable, a verification failure, a full disk, …).
    Failed,
    /// The run's deadline passed first; what was verified so far is kept for the next run.
    DeadlineExceeded,
}

impl RunOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::DeadlineExceeded => "deadline-exceeded",
        }
    }
}

/// One run of a job. A run still going has no `ended_ms` and no `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunRecord {
    pub trigger: RunTrigger,
    /// Unix milliseconds.
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// The version the target holds after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionNo>,
    /// Bytes fetched from the peer by this run (deltas, or a table where none could serve).
    #[serde(default)]
    pub bytes_fetched: u64,
    /// Attempts made (1 without retries).
    #[serde(default)]
    pub attempts: u32,
    /// The serving node's error code for a refusal or failure (`permission denied`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job as `ferry schedule list` and `ferry status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleView {
    pub name: String,
    pub dataset: DatasetId,
    pub from: String,
    pub into: String,
    pub cron: String,
    pub time_zone: String,
    pub enabled: bool,
    /// The job's class (`normal` from a node that does not say).
    #[serde(default)]
    pub priority: JobPriority,
    pub source: ScheduleSource,
    pub running: bool,
    /// Unix milliseconds of the next scheduled run (jitter not included); none when disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// Unix milliseconds of the last run that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
}

/// The answer to `node-schedule-run-now`: the run has started; its record appears in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunStarted {
    pub name: String,
    pub started_ms: u64,
}
