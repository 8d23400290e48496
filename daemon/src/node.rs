//! A running node: binds the QUIC endpoint and the admin port, opens the store, and serves until
//! told to drain. Servers take already-bound sockets so tests can use port 0.

use crate::authz::{Authorizer, InterimAuthorizer};
use crate::config::Config;
use crate::data::blob::ObjectBlobStore;
use crate::data::gc::GcReport;
use crate::data::store::{Store, StoreError};
use crate::net;
use crate::telemetry::{self, Metrics};
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::{self, Credentials, TlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("state directory {path}: {source}")]
    StateDir { path: std::path::PathBuf, source: std::io::Error },
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct NodeState {
    pub config: Config,
    pub creds: Credentials,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub authz: Arc<dyn Authorizer>,
    pub signer: ManifestSigner,
    /// Becomes `true` when the node starts draining.
    pub draining: watch::Receiver<bool>,
    /// The node's endpoint, also used as the client side of node-to-node pulls.
    pub endpoint: quinn::Endpoint,
    /// The server config in force (rebuilt when the CRL changes); connections from this host
    /// are accepted with it and the loopback transport settings.
    pub server_config: std::sync::RwLock<quinn::ServerConfig>,
    /// Tables at the latest version of the datasets this node publishes.
    pub heads: crate::data::head::Heads,
    /// Publishes run one at a time: each diffs against the head the previous one left.
    pub publish_lock: tokio::sync::Mutex<()>,
    /// Replications of one dataset run one at a time.
    pub replicate_locks: crate::net::replicate::DatasetLocks,
    /// Bounds the served chunk bytes QUIC holds over all connections.
    pub serve_budget: crate::net::budget::ServeBudget,
}

/// Handle to a node started with [`start`].
#[derive(Debug)]
pub struct RunningNode {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<NodeState>,
    drain: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Loads credentials, opens storage, binds and starts serving.
pub async fn start(config: Config) -> Result<RunningNode, StartError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| StartError::StateDir { path: config.state_dir.clone(), source })?;
    let creds = Credentials::load(&config.tls)?;
    let metrics = Metrics::new();
    let blobs = ObjectBlobStore::from_config(&config.storage).map_err(StoreError::from)?;
    let mut store = Store::open(blobs, &creds).await?;
    store.report_chunk_buffers(metrics.serve_buffers.clone());
    let server_config = tls::server_config(&creds, metrics.clone())?;
    let mut endpoint = tls::endpoint(config.listen, Some(server_config.clone()))
        .map_err(|source| StartError::Bind { what: "QUIC endpoint", addr: config.listen, source })?;
    endpoint.set_default_client_config(tls::client_config(&creds)?);
    let addr = endpoint.local_addr().map_err(|source| StartError::Bind {
        what: "QUIC endpoint",
        addr: config.listen,
        source,
    })?;
    let admin = match config.admin_listen {
        Some(a) => Some(telemetry::bind_admin(a).await.map_err(|source| StartError::Bind {
            what: "admin HTTP",
            addr: a,
            source,
        })?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let (drain, draining) = watch::channel(false);
    let node_dept = creds.principal().dept.clone();
    let signer = ManifestSigner::new(&creds)?;
    let heads = crate::data::head::Heads::new(&config.state_dir);
    let serve_budget = crate::net::budget::ServeBudget::new(config.transfer.serve_buffer, &metrics);
    let state = Arc::new(NodeState {
        authz: Arc::new(InterimAuthorizer { node_dept }),
        config,
        creds,
        store,
        metrics: metrics.clone(),
        signer,
        draining: draining.clone(),
        heads,
        publish_lock: tokio::sync::Mutex::new(()),
        replicate_locks: Default::default(),
        serve_budget,
        endpoint,
        server_config: std::sync::RwLock::new(server_config),
    });
    let (stopped, stopped_rx) = watch::channel(false);
    if let Some(listener) = admin {
        let mut rx = stopped_rx;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|d| *d).await;
            };
            if let Err(e) = telemetry::serve_admin(listener, metrics, stop).await {
                tracing::error!(error = %e, "admin HTTP server failed");
            }
        });
    }
    tracing::info!(%addr, ?admin_addr, node = %state.config.node_name, dept = %state.creds.principal().dept, "node listening");
    tokio::spawn(collect_garbage_periodically(state.clone()));
    let task = tokio::spawn(net::serve(state.clone()));
    Ok(RunningNode { addr, admin_addr, state, drain, stopped, task })
}

impl NodeState {
    /// Runs garbage collection once with the configured retention, now, and counts what it
    /// deleted.
    pub async fn collect_garbage(&self) -> Result<GcReport, StoreError> {
        let result = self.store.collect(&self.config.retention, std::time::SystemTime::now()).await;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection stopped; the next run continues");
                return Err(e);
            }
        };
        self.metrics.gc_deleted_versions.inc_by(report.deleted_versions.len() as u64);
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
}

/// Runs garbage collection every `retention.gc-interval` (the first run one interval after
/// start) until the node drains.
async fn collect_garbage_periodically(state: Arc<NodeState>) {
    let period = state.config.retention.gc_interval;
    let mut draining = state.draining.clone();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            _ = ticks.tick() => {}
        }
        let _ = state.collect_garbage().await;
    }
}

impl RunningNode {
    /// Drains: stops accepting, lets in-flight answers stop at a chunk boundary, then closes.
    pub async fn shutdown(self) {
        self.state.metrics.set_draining();
        let _ = self.drain.send(true);
        let _ = self.task.await;
        let _ = self.stopped.send(true);
    }
}
