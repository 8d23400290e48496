//! Metrics and the admin HTTP port. One typed registry; names `ferry_<area>_<name>_<unit>`;
//! labels are bounded enums (never a path, dataset or peer id). `/metrics` serves the Prometheus
//! text format, `/healthz` answers 200 while the node serves, and 503 while it drains or while its
//! policy is stale (it then refuses every request that needs a policy decision).

use ferry_net::tls::{HandshakeObserver, HandshakeRefusal};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which side of a transfer a figure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Direction {
    /// This node served chunks to a peer.
    Serve,
    /// This node pulled from a peer.
    Pull,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// How a publish's diff compared the rows of keys in both versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DiffLabel {
    /// `prints` (the head's row prints) or `values` (the head read whole).
    pub by: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabel {
    pub request: &'static str,
}

/// Every metric of the node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
    pub chunks_verified: Counter,
    pub verify_failures: Counter,
    pub retries: Counter,
    pub snapshot_fallbacks: Counter,
    pub active_transfers: Family<DirectionLabel, Gauge>,
    pub transfer_duration: Family<DirectionLabel, Histogram>,
    /// The node-wide budget of served chunk bytes QUIC may hold (see `net::budget`).
    pub serve_budget: Gauge,
    /// Served chunk bytes QUIC holds now (reserved, not yet acknowledged).
    pub serve_held: Gauge,
    /// Chunks that waited for room in the budget.
    pub serve_budget_waits: Counter,
    /// Bytes of the serving pool's chunk buffers, in use and idle (see `data::pool`).
    pub serve_buffers: Gauge,
    pub handshake_failures: Family<ReasonLabel, Counter>,
    pub connections: Counter,
    pub requests: Family<RequestLabel, Counter>,
    pub denials: Family<ReasonLabel, Counter>,
    pub published_versions: Counter,
    pub published_rows: Counter,
    /// Head tables rebuilt from the store before a publish diffed against them, by reason
    /// (`missing`, or `corrupt`: its BLAKE3 did not match the manifest).
    pub head_rebuilds: Family<ReasonLabel, Counter>,
    /// Publishes diffed against a head, by how matched rows were compared (`prints`: the head
    /// kept its row prints; `values`: it had none usable, so it was read whole).
    pub publish_diffs: Family<DiffLabel, Counter>,
    /// Restricted versions built for conditional grants, and how long each build took.
    pub restricted_builds: Counter,
    pub restricted_build_seconds: Histogram,
    /// The hub's fetches of restricted versions from a provider's node for a conditional
    /// grantee, by outcome (`fetched`, `unreachable`, `refused`, `invalid`, `out_of_space`, `failed`).
    pub hub_fetches: Family<ReasonLabel, Counter>,
    pub gc_deleted_versions: Counter,
    pub gc_deleted_bytes: Counter,
    /// Stored versions set aside at start-up: held, not served, numbers kept (see `data::store`).
    pub set_aside_versions: Gauge,
    /// Times the node took up a new certificate of its own without a restart.
    pub certificate_rotations: Counter,
    /// Serial of the policy snapshot the node enforces (0: none).
    pub policy_serial: Gauge,
    /// Seconds since the policy copy was last confirmed fresh (-1: none).
    pub policy_age_seconds: Gauge,
    /// 1 while the node has no fresh policy and refuses policy decisions.
    pub policy_stale: Gauge,
    /// At the ministry: grants by state (active, revoked) and quality issues (open, overdue).
    pub control_grants: Family<StateLabel, Gauge>,
    pub control_quality_issues: Family<StateLabel, Gauge>,
    /// At the ministry: applications by state, and pending reviews due within 1 working day or overdue.
    pub control_applications: Family<StateLabel, Gauge>,
    pub control_reviews: Family<StateLabel, Gauge>,
    /// Policy snapshots offered to this node, by outcome (installed, or the refusal reason).
    pub policy_snapshots: Family<ReasonLabel, Counter>,
    /// Catalog registrations refused by the compliance check, by rule.
    pub compliance_failures: Family<ReasonLabel, Counter>,
    /// Audit entries lost because the audit writer could not keep up or failed.
    pub audit_dropped: Counter,
    /// What the store's scrub checked and found (see `data::scrub`).
    pub scrub: crate::data::scrub::ScrubMetrics,
    /// Bandwidth limits in effect and bytes they delayed (see `data::bandwidth`).
    pub bandwidth: crate::data::bandwidth::BandwidthMetrics,
    /// Subscribers' and subscriptions' lag and pulls (see `subscribe::metrics`).
    pub subscriptions: crate::subscribe::SubscriptionMetrics,
    /// Scheduled download runs, missed runs and next runs (see `schedule::metrics`).
    pub schedule: crate::schedule::ScheduleMetrics,
    /// At the ministry: how far behind each province is (see `policy::holdings`).
    pub fleet: crate::policy::holdings::FleetMetrics,
    /// Online queries: outcomes, rows, seconds, pruning (see `data::query`).
    pub query: crate::data::query::QueryMetrics,
    draining: AtomicBool,
    /// What `/healthz` says about the policy, when the node enforces one.
    policy_health: std::sync::RwLock<Option<String>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let m = Metrics {
            sent_bytes: Counter::default(),
            received_bytes: Counter::default(),
            chunks_verified: Counter::default(),
            verify_failures: Counter::default(),
            retries: Counter::default(),
            snapshot_fallbacks: Counter::default(),
            active_transfers: Family::default(),
            transfer_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 16))
            }),
            serve_budget: Gauge::default(),
            serve_held: Gauge::default(),
            serve_budget_waits: Counter::default(),
            serve_buffers: Gauge::default(),
            handshake_failures: Family::default(),
            connections: Counter::default(),
            requests: Family::default(),
            denials: Family::default(),
            published_versions: Counter::default(),
            published_rows: Counter::default(),
            head_rebuilds: Family::default(),
            publish_diffs: Family::default(),
            restricted_builds: Counter::default(),
            restricted_build_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            hub_fetches: Family::default(),
            gc_deleted_versions: Counter::default(),
            gc_deleted_bytes: Counter::default(),
            set_aside_versions: Gauge::default(),
            certificate_rotations: Counter::default(),
            policy_serial: Gauge::default(),
            policy_age_seconds: Gauge::default(),
            policy_stale: Gauge::default(),
            control_grants: Family::default(),
            control_quality_issues: Family::default(),
            control_applications: Family::default(),
            control_reviews: Family::default(),
            policy_snapshots: Family::default(),
            compliance_failures: Family::default(),
            audit_dropped: Counter::default(),
            scrub: Default::default(),
            bandwidth: Default::default(),
            subscriptions: Default::default(),
            schedule: Default::default(),
            fleet: Default::default(),
            query: Default::default(),
            draining: AtomicBool::new(false),
            policy_health: std::sync::RwLock::new(None),
            registry: Registry::default(),
        };
        registry.register_with_unit(
            "ferry_transfer_sent",
            "Chunk payload bytes sent to peers",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        registry.register_with_unit(
            "ferry_transfer_received",
            "Chunk payload bytes received from peers (node-to-node pulls and uploads)",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        registry.register(
            "ferry_transfer_chunks_verified",
            "Chunks verified against their manifest hash",
            m.chunks_verified.clone(),
        );
        registry.register(
            "ferry_transfer_verify_failures",
            "Chunks or files that failed verification",
            m.verify_failures.clone(),
        );
        registry.register(
            "ferry_transfer_retries",
            "Reconnects during node-to-node pulls",
            m.retries.clone(),
        );
        registry.register(
            "ferry_transfer_snapshot_fallbacks",
            "Pulls that restarted from a snapshot because the deltas after the local version were collected",
            m.snapshot_fallbacks.clone(),
        );
        registry.register(
            "ferry_transfer_active_transfers",
            "Transfers in progress",
            m.active_transfers.clone(),
        );
        registry.register_with_unit(
            "ferry_transfer_duration",
            "Duration of finished transfers (a served GetChunks answer, or a whole pull)",
            Unit::Seconds,
            m.transfer_duration.clone(),
        );
        registry.register_with_unit(
            "ferry_transfer_serve_budget",
            "Most served chunk bytes the node lets QUIC hold unacknowledged, over all connections",
            Unit::Bytes,
            m.serve_budget.clone(),
        );
        registry.register_with_unit(
            "ferry_transfer_serve_held",
            "Served chunk bytes QUIC holds now, waiting for the peers' acknowledgements",
            Unit::Bytes,
            m.serve_held.clone(),
        );
        registry.register(
            "ferry_transfer_serve_budget_waits",
            "Served chunks that waited for room in the serve budget (many: raise transfer.serve-buffer)",
            m.serve_budget_waits.clone(),
        );
        registry.register_with_unit(
            "ferry_transfer_serve_buffers",
            "Chunk buffers the node holds for serving, in use and idle for reuse: they grow to the most chunks \
             ever in flight at once, then are reused",
            Unit::Bytes,
            m.serve_buffers.clone(),
        );
        registry.register(
            "ferry_net_handshake_failures",
            "Refused TLS handshakes, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "ferry_net_connections",
            "Authenticated connections accepted",
            m.connections.clone(),
        );
        registry.register("ferry_net_requests", "Requests handled, by kind", m.requests.clone());
        registry.register(
            "ferry_authz_denials",
            "Requests refused by the authorizer, by reason",
            m.denials.clone(),
        );
        registry.register(
            "ferry_publish_versions",
            "Dataset versions published on this node",
            m.published_versions.clone(),
        );
        registry.register("ferry_publish_rows", "Rows in published versions", m.published_rows.clone());
        registry.register(
            "ferry_publish_head_rebuilds",
            "Head tables rebuilt from the store before a publish, by reason (missing, corrupt)",
            m.head_rebuilds.clone(),
        );
        registry.register(
            "ferry_publish_diffs",
            "Publishes diffed against a head, by how rows were compared (prints: the head's row prints; values: the head read whole)",
            m.publish_diffs.clone(),
        );
        registry.register(
            "ferry_restricted_builds",
            "Restricted versions built for conditional grants (only the permitted columns and rows)",
            m.restricted_builds.clone(),
        );
        registry.register_with_unit(
            "ferry_restricted_build",
            "Time to build one restricted version",
            Unit::Seconds,
            m.restricted_build_seconds.clone(),
        );
        registry.register(
            "ferry_hub_fetches",
            "Restricted versions the hub fetched from a provider's node for a conditional grantee, by outcome",
            m.hub_fetches.clone(),
        );
        registry.register(
            "ferry_gc_deleted_versions",
            "Dataset versions deleted by retention",
            m.gc_deleted_versions.clone(),
        );
        registry.register_with_unit(
            "ferry_gc_deleted",
            "Bytes of stored objects deleted by garbage collection (versions and unreferenced files)",
            Unit::Bytes,
            m.gc_deleted_bytes.clone(),
        );
        registry.register(
            "ferry_store_set_aside_versions",
            "Stored versions set aside at start-up (manifest or files fail their checks): not served, never \
             overwritten, their numbers not reused; each is logged as an ERROR",
            m.set_aside_versions.clone(),
        );
        registry.register(
            "ferry_tls_certificate_rotations",
            "New certificates of this node taken up while it runs (new manifests are signed with the new key)",
            m.certificate_rotations.clone(),
        );
        registry.register(
            "ferry_policy_serial",
            "Serial of the policy snapshot this node enforces",
            m.policy_serial.clone(),
        );
        registry.register_with_unit(
            "ferry_policy_age",
            "Time since this node's policy copy was last confirmed fresh by the ministry (-1: no policy)",
            Unit::Seconds,
            m.policy_age_seconds.clone(),
        );
        registry.register(
            "ferry_policy_stale",
            "1 while the node has no fresh policy and refuses every request that needs a policy decision",
            m.policy_stale.clone(),
        );
        registry.register(
            "ferry_policy_snapshots",
            "Policy snapshots offered to this node, by outcome (installed or the refusal reason)",
            m.policy_snapshots.clone(),
        );
        registry.register(
            "ferry_control_compliance_failures",
            "Catalog registrations refused by the compliance check, by rule",
            m.compliance_failures.clone(),
        );
        registry.register(
            "ferry_control_grants",
            "At the ministry: grants by state (active, revoked)",
            m.control_grants.clone(),
        );
        registry.register(
            "ferry_control_applications",
            "At the ministry: applications by state",
            m.control_applications.clone(),
        );
        registry.register(
            "ferry_control_reviews",
            "At the ministry: pending review steps due within 1 working day (due-within-1-day) and past their deadline (overdue)",
            m.control_reviews.clone(),
        );
        registry.register(
            "ferry_control_quality_issues",
            "At the ministry: unanswered quality issues, on time (open) and past their deadline (overdue)",
            m.control_quality_issues.clone(),
        );
        registry.register(
            "ferry_audit_dropped_entries",
            "Audit entries lost because the audit writer could not keep up or failed (an operator must act)",
            m.audit_dropped.clone(),
        );
        m.scrub.register(&mut registry);
        m.bandwidth.register(&mut registry);
        m.subscriptions.register(&mut registry);
        m.schedule.register(&mut registry);
        m.query.register(&mut registry);
        m.fleet.register(&mut registry);
        Arc::new(Metrics { registry, ..m })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records the policy's state for `/healthz`: `None` while it is fresh (or the node
    /// enforces none), or why policy decisions are refused.
    pub fn set_policy_problem(&self, problem: Option<String>) {
        *self.policy_health.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = problem;
    }

    fn policy_problem(&self) -> Option<String> {
        self.policy_health.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn request(&self, request: &'static str) {
        self.requests.get_or_create(&RequestLabel { request }).inc();
    }
}

impl HandshakeObserver for Metrics {
    fn refused(&self, reason: HandshakeRefusal) {
        tracing::warn!(reason = reason.as_str(), "refused a TLS handshake");
        self.handshake_failures.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
    }
}

/// Serves `/metrics`, `/healthz` and the `routes` of other parts of the node (the scrub's) on an
/// already-bound listener until `shutdown` fires.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    routes: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let metrics_for_scrape = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics_for_scrape.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.is_draining() {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
                    } else if let Some(problem) = m.policy_problem() {
                        (StatusCode::SERVICE_UNAVAILABLE, format!("policy stale: {problem}\n"))
                    } else {
                        (StatusCode::OK, "ok\n".to_string())
                    }
                }
            }),
        )
        .merge(routes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Binds the admin listener.
pub async fn bind_admin(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
