//! The data service: what a node does for a request once it has been identified, decoded and
//! authorized — serve a dataset (listings, versions, manifests, chunks), publish a version,
//! replicate one from a peer node — and garbage collection of its store.
//!
//! `crate::net` hands it requests; it never asks who the peer is or whether it may: that was
//! decided before (the authorizer of `ferry_proto::authz`). It holds only what those jobs need:
//! the store and the publish head tables, the publish and replication locks, the serve budget,
//! the manifest signer and the credentials and endpoint of outgoing pulls, and the metrics.

mod budget;
mod publish;
mod query_head;
mod refusal;
mod relay;
mod replicate;
mod restricted;
mod serve;

pub use budget::{Borrower, Reservation, ServeBudget};
pub use publish::Upload;
pub use refusal::{Refusal, is_out_of_space};
pub use replicate::{DatasetLocks, Replicated};
pub use restricted::GrantRead;
pub use serve::{ChunksWanted, summary};

use crate::config::{LimitsConfig, PublishPolicy, RetentionConfig, TransferConfig};
use crate::data::bandwidth::{self, ServeLimits};
use crate::data::gc::GcReport;
use crate::data::head::Heads;
use crate::data::restricted::RestrictedViews;
use crate::data::store::{Store, StoreError};
use crate::subscribe::announce::{Announced, Announcements};
use crate::telemetry::{Direction, DirectionLabel, Metrics};
use ferry_client::transfer::PullOptions;
use ferry_net::bandwidth::RateLimiter;
use ferry_net::conn::NodeAddr;
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::Credentials;
use ferry_proto::ServiceMethod;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The settings of the node config the service works by.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Scratch space of uploads and pulls, and the head tables.
    pub state_dir: PathBuf,
    pub transfer: TransferConfig,
    pub publish: PublishPolicy,
    pub retention: RetentionConfig,
    /// The nodes this one may replicate from, by name.
    pub peers: BTreeMap<String, NodeAddr>,
    /// What one peer may hold of the node; the service keeps the replication lock's timeout.
    pub limits: LimitsConfig,
}

/// What a node gives its data service when it starts.
#[derive(Debug)]
pub struct ServiceParts {
    pub store: Arc<Store>,
    pub settings: ServiceSettings,
    /// The node's own credentials: they sign manifests and open outgoing pulls.
    pub creds: Credentials,
    /// The node's endpoint, the client side of outgoing pulls.
    pub endpoint: quinn::Endpoint,
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the node starts draining.
    pub draining: watch::Receiver<bool>,
    /// Checks that a version pulled from a peer was published by its dataset's provider.
    pub provenance: Option<Arc<dyn ferry_client::transfer::Provenance>>,
}

/// Serving, publishing and replicating datasets (see the module doc).
#[derive(Debug)]
pub struct DataService {
    store: Arc<Store>,
    settings: ServiceSettings,
    creds: Credentials,
    signer: ManifestSigner,
    endpoint: quinn::Endpoint,
    metrics: Arc<Metrics>,
    draining: watch::Receiver<bool>,
    /// Tables at the latest version of the datasets this node publishes.
    heads: Heads,
    /// Publishes run one at a time: each diffs against the head the previous one left.
    publish_lock: tokio::sync::Mutex<()>,
    /// Replications of one dataset run one at a time.
    replicate_locks: DatasetLocks,
    /// Bounds the served chunk bytes QUIC holds over all connections.
    serve_budget: ServeBudget,
    /// Bandwidth limits of served chunks, per peer and node-wide; `None` without any.
    serve_limits: Option<Arc<ServeLimits>>,
    /// The bandwidth limit all of the node's own pulls share; `None` without one.
    pull_limiter: Option<Arc<RateLimiter>>,
    /// The limits of the node's own pulls from each limited peer (`bandwidth::pull_peer_key`).
    pull_peer_limiters: std::collections::HashMap<String, Arc<RateLimiter>>,
    provenance: Option<Arc<dyn ferry_client::transfer::Provenance>>,
    /// The restricted versions served to conditional grants.
    restricted: RestrictedViews,
    /// Each version committed here, for the node's subscribers (`crate::subscribe`).
    announcements: Arc<Announcements>,
}

impl DataService {
    pub fn new(parts: ServiceParts, signer: ManifestSigner) -> Self {
        let ServiceParts { store, settings, creds, endpoint, metrics, draining, provenance } = parts;
        let heads = Heads::new(&settings.state_dir);
        let serve_budget = ServeBudget::new(settings.transfer.serve_buffer, &metrics);
        let serve_limits = ServeLimits::new(&settings.limits.bandwidth).map(Arc::new);
        let pull_limiter = bandwidth::pull_limiter(&settings.limits.bandwidth);
        let pull_peer_limiters = bandwidth::pull_peer_limiters(&settings.limits.bandwidth, &settings.peers);
        metrics.bandwidth.watch(serve_limits.clone(), pull_limiter.clone());
        let restricted = RestrictedViews::new(store.blobs().clone(), creds.clone());
        Self {
            restricted,
            store,
            creds,
            signer,
            endpoint,
            draining,
            heads,
            publish_lock: tokio::sync::Mutex::new(()),
            replicate_locks: DatasetLocks::default(),
            serve_budget,
            serve_limits,
            pull_limiter,
            pull_peer_limiters,
            metrics,
            settings,
            provenance,
            announcements: Arc::new(Announcements::default()),
        }
    }

    /// The latest version of each dataset, as the node's subscribers are told it.
    pub fn announcements(&self) -> &Arc<Announcements> {
        &self.announcements
    }

    /// Tells the node's subscribers that `version` of `dataset` was committed here.
    fn announce_commit(
        &self,
        dataset: &ferry_proto::DatasetId,
        version: ferry_proto::VersionNo,
        publisher: ferry_proto::DeptId,
    ) {
        let committed_ms = crate::subscribe::announce::now_ms();
        self.announcements.committed(dataset, Announced { version, publisher, committed_ms });
    }

    /// The options of a pull the node makes itself from `from`, under `method`: its streams,
    /// the provenance check, and the node's pull bandwidth limits (`[limits] pull-bwlimit`,
    /// shared by all its pulls, and `[limits.pull-bwlimit-by-peer]`, by all its pulls from that
    /// peer) at bulk priority, in the class of the job pulling (`bandwidth::as_job`), so an
    /// operator's interactive pull goes first.
    pub fn pull_options(&self, method: ServiceMethod, from: &ferry_net::conn::NodeAddr) -> PullOptions {
        PullOptions {
            streams: self.settings.transfer.streams,
            provenance: self.provenance.clone(),
            method,
            bandwidth: self.pull_limiter.clone(),
            peer_bandwidth: self.pull_peer_limiters.get(&bandwidth::pull_peer_key(from)).cloned(),
            priority: bandwidth::job_priority(),
            ..PullOptions::default()
        }
    }

    /// The versions this node holds.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs garbage collection once with the configured retention, now, and counts what it
    /// deleted.
    pub async fn collect_garbage(&self) -> Result<GcReport, StoreError> {
        let result = self.store.collect(&self.settings.retention, std::time::SystemTime::now()).await;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection stopped; the next run continues");
                return Err(e);
            }
        };
        self.metrics.gc_deleted_versions.inc_by(report.deleted_versions.len() as u64);
        // A restricted version is kept exactly as long as the version it was built from.
        match self.restricted.prune(&self.store).await {
            Ok(pruned) => {
                self.metrics.gc_deleted_versions.inc_by(pruned);
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning restricted versions stopped; the next run continues")
            }
        }
        self.metrics.gc_deleted_bytes.inc_by(report.deleted_bytes);
        tracing::info!(
            versions = report.deleted_versions.len(),
            orphan_files = report.deleted_orphan_files,
            bytes = report.deleted_bytes,
            leased = report.skipped_leased.len(),
            "garbage collection done"
        );
        Ok(report)
    }

    /// Runs garbage collection every `retention.gc-interval` (the first run one interval after
    /// the call) until the node drains.
    pub async fn collect_garbage_periodically(self: Arc<Self>) {
        let period = self.settings.retention.gc_interval;
        let mut draining = self.draining.clone();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = draining.wait_for(|d| *d) => return,
                _ = ticks.tick() => {}
            }
            let _ = self.collect_garbage().await;
        }
    }
}

/// Gauge guard: counts an active transfer while alive.
struct Active<'a>(&'a Metrics, Direction);

impl<'a> Active<'a> {
    fn new(metrics: &'a Metrics, direction: Direction) -> Self {
        metrics.active_transfers.get_or_create(&DirectionLabel { direction }).inc();
        Self(metrics, direction)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active_transfers.get_or_create(&DirectionLabel { direction: self.1 }).dec();
    }
}
