//! The subscribing side: one task per subscription keeps a `Subscribe` stream open to the peer
//! it follows, pulls each announced version with the node's transfer engine under the
//! `subscription` service method (a delta when the parent is held, the peer's snapshot past
//! its retention), commits it with the usual verification and answers `Holding`. A lost stream
//! is reopened with backoff; the `have` it sends makes the peer announce anything missed
//! meanwhile, so a lost announcement or a restart never loses a version.
//!
//! Checked before anything is pulled: the announcement is for the dataset subscribed to, and
//! (with a policy replica) its publisher is the catalog's provider; the pull checks the signed
//! manifest again (`crate::policy::authorizer::PolicyProvenance`). Either failing is a typed
//! [`FollowError`], logged and counted; nothing is committed.

use super::announce::now_ms;
use super::metrics::{PullOutcomeLabel, SourceLabel};
use super::spec::{SubscriptionSpec, SubscriptionTarget};
use crate::data::service::{DataService, Refusal, Replicated};
use crate::policy::replica::PolicyReplica;
use crate::telemetry::Metrics;
use ferry_client::conn::ClientError;
use ferry_proto::node_api::SubscriptionState;
use ferry_proto::{DatasetId, DeptId, ErrorCode, Message, ServiceMethod, VersionNo};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A stream that stayed open this long was healthy: the next failure starts the backoff over.
const HEALTHY: Duration = Duration::from_secs(30);

/// Why following a subscription stopped (the task then retries after a pause).
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach {peer}: {message}")]
    Unreachable { peer: String, message: String },
    #[error("{peer} refused the subscription ({reason}): {message}")]
    Refused { peer: String, reason: String, message: String },
    #[error("{peer} announced {announced} on the stream of {dataset}")]
    WrongDataset { peer: String, dataset: DatasetId, announced: DatasetId },
    #[error("{peer} announced {dataset} {version} by {publisher}, not its provider: {why}")]
    NotProvider { peer: String, dataset: DatasetId, version: VersionNo, publisher: DeptId, why: String },
    #[error("pulling {dataset} {version} failed ({outcome}): {message}")]
    Pull { dataset: DatasetId, version: VersionNo, outcome: &'static str, message: String },
    #[error("the subscription stream from {peer} broke: {message}")]
    Stream { peer: String, message: String },
}

impl FollowError {
    /// The `outcome` label it is counted under in `ferry_subscription_pulls_total`, when it
    /// concerns an announced version.
    fn pull_outcome(&self) -> Option<&'static str> {
        match self {
            Self::WrongDataset { .. } => Some("wrong_dataset"),
            Self::NotProvider { .. } => Some("not_provider"),
            Self::Pull { outcome, .. } => Some(outcome),
            Self::Unreachable { .. } | Self::Refused { .. } | Self::Stream { .. } => None,
        }
    }
}

/// What a subscription's task knows now, for `ferry status` and the metrics.
#[derive(Debug, Clone, Default)]
pub struct FollowStatus {
    pub held: Option<VersionNo>,
    /// The latest version announced, with its commit time at the source (Unix ms).
    pub announced: Option<(VersionNo, u64)>,
    pub state: SubscriptionState,
    pub last_error: Option<String>,
    pub pulls: u64,
}

impl FollowStatus {
    /// Versions announced and not held, and seconds since the announced one was committed.
    pub fn lag(&self, now_ms: u64) -> (u64, f64) {
        let Some((announced, committed_ms)) = self.announced else { return (0, 0.0) };
        let held = self.held.map_or(0, VersionNo::get);
        if held >= announced.get() {
            return (0, 0.0);
        }
        (announced.get() - held, now_ms.saturating_sub(committed_ms) as f64 / 1000.0)
    }
}

/// One subscription's task (see the module doc).
#[derive(Debug, Clone)]
pub struct Follower {
    pub spec: SubscriptionSpec,
    pub service: Arc<DataService>,
    pub metrics: Arc<Metrics>,
    pub replica: Option<Arc<PolicyReplica>>,
    pub status: Arc<Mutex<FollowStatus>>,
}

impl Follower {
    /// Follows until `stop` turns true (the subscription removed, the node draining).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let refresh = async {
            loop {
                self.publish_lag();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            () = self.attempts() => {}
            () = refresh => {}
        }
        self.metrics.subscriptions.subscription_gone(&self.source_label());
    }

    async fn attempts(&self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.update(|s| s.state = SubscriptionState::Connecting);
            let started = Instant::now();
            let result = self.follow_once().await;
            if started.elapsed() >= HEALTHY {
                backoff = FIRST_BACKOFF;
            }
            let error = match result {
                Ok(()) => "the source ended the stream".to_string(),
                Err(e) => {
                    if let Some(outcome) = e.pull_outcome() {
                        self.count_pull(outcome);
                    }
                    e.to_string()
                }
            };
            tracing::warn!(dataset = %self.spec.dataset, from = %self.spec.from, error, retry_in = ?backoff, "subscription interrupted");
            self.update(|s| {
                s.state = SubscriptionState::Retrying;
                s.last_error = Some(error);
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One stream: subscribe with what is held, then pull each announced version.
    async fn follow_once(&self) -> Result<(), FollowError> {
        let peer = self.spec.from.clone();
        let unreachable = |message: String| FollowError::Unreachable { peer: peer.clone(), message };
        let connector = self.service.connector_to(&peer).map_err(|r| unreachable(r.message))?;
        let session = connector.connect().await.map_err(|e| unreachable(e.to_string()))?;
        let held = self.held();
        self.update(|s| s.held = held);
        let subscribe = Message::Subscribe { dataset: self.spec.dataset.clone(), have: held };
        let (mut writer, mut reader) = session.open(&subscribe).await.map_err(|e| self.stream_error(e))?;
        tracing::info!(dataset = %self.spec.dataset, from = %peer, have = ?held, "subscribed");
        loop {
            let frame = reader.next().await.map_err(|e| self.stream_error(ClientError::Wire(e)))?;
            let (dataset, version, publisher, committed_ms) = match frame {
                None => return Ok(()),
                Some(Message::Announce { dataset, version, publisher, committed_ms }) => {
                    (dataset, version, publisher, committed_ms)
                }
                Some(Message::Error { code, message }) => {
                    return Err(self.stream_error(ClientError::Remote { code, message }));
                }
                Some(other) => {
                    let message =
                        format!("{} on a subscription stream", ferry_proto::exchange::message_name(&other));
                    return Err(FollowError::Stream { peer, message });
                }
            };
            if dataset != self.spec.dataset {
                let (dataset, announced) = (self.spec.dataset.clone(), dataset);
                return Err(FollowError::WrongDataset { peer, dataset, announced });
            }
            self.check_publisher(version, &publisher)?;
            // Only an announcement that passed its checks clears the last error.
            self.update(|s| {
                s.state = SubscriptionState::Following;
                s.last_error = None;
            });
            self.update(|s| s.announced = Some((version, committed_ms)));
            if self.held().is_none_or(|h| h < version) {
                self.update(|s| s.state = SubscriptionState::Pulling);
                let pulled = self.pull(version).await?;
                self.count_pull("ok");
                tracing::info!(dataset = %dataset, version = %pulled.version, bytes = pulled.bytes_fetched, from = %peer, "subscription pulled an announced version");
            }
            let held = self.held();
            self.update(|s| {
                s.held = held;
                s.state = SubscriptionState::Following;
            });
            self.publish_lag();
            let holding = Message::Holding { dataset: dataset.clone(), version: held };
            writer.send(&holding).await.map_err(|e| self.stream_error(ClientError::Wire(e)))?;
        }
    }

    /// With a policy replica: the announced publisher must be the dataset's provider.
    fn check_publisher(&self, version: VersionNo, publisher: &DeptId) -> Result<(), FollowError> {
        let Some(replica) = &self.replica else { return Ok(()) };
        let checked = match replica.current(SystemTime::now()) {
            Ok(policy) => {
                policy.check_publisher(&self.spec.dataset, publisher, None).map_err(|e| e.to_string())
            }
            Err(denial) => Err(denial.message),
        };
        checked.map_err(|why| FollowError::NotProvider {
            peer: self.spec.from.clone(),
            dataset: self.spec.dataset.clone(),
            version,
            publisher: publisher.clone(),
            why,
        })
    }

    async fn pull(&self, version: VersionNo) -> Result<Replicated, FollowError> {
        let (from, dataset, method) = (&self.spec.from, &self.spec.dataset, ServiceMethod::Subscription);
        let pull = async {
            match &self.spec.target {
                SubscriptionTarget::Store => {
                    self.service.replicate_as(from, dataset, Some(version), method).await
                }
                SubscriptionTarget::Directory(dir) => {
                    self.service.sync_directory(from, dataset, Some(version), dir, method).await
                }
            }
        };
        // The subscription's class for its pulls, at the node's pull limiter and to the peer.
        let result = crate::data::bandwidth::as_job(self.spec.priority, pull).await;
        result.map_err(|refusal| FollowError::Pull {
            dataset: dataset.clone(),
            version,
            outcome: outcome_of(&refusal),
            // This node's own operator reads the cause of a failure on its side.
            message: refusal.for_operator().to_owned(),
        })
    }

    /// The version the target holds now.
    fn held(&self) -> Option<VersionNo> {
        match &self.spec.target {
            SubscriptionTarget::Store => {
                self.service.store().version(&self.spec.dataset, None).ok().map(|v| v.manifest.version)
            }
            SubscriptionTarget::Directory(dir) => held_in_directory(dir, &self.spec.dataset),
        }
    }

    fn stream_error(&self, e: ClientError) -> FollowError {
        let peer = self.spec.from.clone();
        match e {
            ClientError::Remote { code, message } => {
                let reason =
                    ferry_proto::authz::reason_of(&message).map_or_else(|| code_name(code), str::to_owned);
                FollowError::Refused { peer, reason, message }
            }
            other => FollowError::Stream { peer, message: other.to_string() },
        }
    }

    fn update(&self, change: impl FnOnce(&mut FollowStatus)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn source_label(&self) -> SourceLabel {
        SourceLabel { dataset: self.spec.dataset.to_string(), source: self.spec.from.clone() }
    }

    fn publish_lag(&self) {
        let (versions, seconds) = self.status.lock().unwrap_or_else(PoisonError::into_inner).lag(now_ms());
        self.metrics.subscriptions.subscription(&self.source_label(), versions, seconds);
    }

    fn count_pull(&self, outcome: &'static str) {
        if outcome == "ok" {
            self.update(|s| s.pulls += 1);
        }
        let label = PullOutcomeLabel { dataset: self.spec.dataset.to_string(), outcome };
        self.metrics.subscriptions.pulls.get_or_create(&label).inc();
    }
}

/// The newest complete version under `dir/<dataset>/v<N>` (its manifest is written last).
fn held_in_directory(dir: &std::path::Path, dataset: &DatasetId) -> Option<VersionNo> {
    std::fs::read_dir(dir.join(dataset.as_str()))
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let number = entry.file_name().to_str()?.strip_prefix('v')?.parse::<u64>().ok()?;
            entry.path().join("manifest.signed").exists().then_some(number)
        })
        .max()
        .and_then(|n| VersionNo::new(n).ok())
}

/// How a failed pull is counted.
fn outcome_of(refusal: &Refusal) -> &'static str {
    match refusal.code {
        ErrorCode::PermissionDenied
            if ferry_proto::authz::reason_of(&refusal.message) == Some("not_provider") =>
        {
            "not_provider"
        }
        ErrorCode::PermissionDenied => "refused",
        ErrorCode::InvalidData => "invalid",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::NotFound => "not_found",
        ErrorCode::OutOfSpace => "out_of_space",
        _ => "failed",
    }
}

fn code_name(code: ErrorCode) -> String {
    format!("{code:?}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_announced_versions_not_held() {
        let v = |n| VersionNo::new(n).unwrap();
        let mut status =
            FollowStatus { announced: Some((v(5), 10_000)), held: Some(v(3)), ..Default::default() };
        assert_eq!(status.lag(12_500), (2, 2.5));
        status.held = Some(v(5));
        assert_eq!(status.lag(12_500), (0, 0.0));
        status.announced = None;
        assert_eq!(status.lag(12_500), (0, 0.0));
    }

    #[test]
    fn a_directory_holds_its_newest_version_with_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let cars = DatasetId::new("cars").unwrap();
        assert_eq!(held_in_directory(dir.path(), &cars), None);
        for (n, complete) in [(1, true), (2, true), (3, false)] {
            let v = dir.path().join("cars").join(format!("v{n}"));
            std::fs::create_dir_all(&v).unwrap();
            if complete {
                std::fs::write(v.join("manifest.signed"), b"m").unwrap();
            }
        }
        assert_eq!(held_in_directory(dir.path(), &cars), VersionNo::new(2).ok());
    }
}
