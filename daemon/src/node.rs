//! A running node: binds the QUIC endpoint and the admin port, opens the store, builds the data
//! service and the authorizer the config asks for, and serves until told to drain. Servers take
//! already-bound sockets so tests can use port 0.
//!
//! The wiring is one-way: this module builds [`crate::net`]'s listener and dispatcher around
//! [`crate::data::service::DataService`]; neither of those knows this module.

use crate::authz::{self, FactsView};
use crate::config::Config;
use crate::data::blob::{BlobStore, ObjectBlobStore};
use crate::data::gc::GcReport;
use crate::data::scrub::{ScrubParts, Scrubber};
use crate::data::service::{DataService, ServiceParts, ServiceSettings};
use crate::data::store::{Store, StoreError};
use crate::net::{self, Dispatcher, Listener, ListenerSettings};
use crate::node_calls::NodeCalls;
use crate::policy::Governance;
use crate::telemetry::{self, Metrics};
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::{self, Credentials, TlsError};
use ferry_proto::DeptId;
use ferry_proto::authz::Authorizer;
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
    #[error("{0}")]
    Governance(#[from] crate::policy::governance::GovernanceError),
    #[error("subscriptions: {0}")]
    Subscriptions(#[from] crate::subscribe::SubscriptionError),
}

/// Handle to a node started with [`start`].
#[derive(Debug)]
pub struct RunningNode {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    service: Arc<DataService>,
    metrics: Arc<Metrics>,
    drain: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Loads credentials, opens storage, binds and starts serving with the authorizer the config
/// asks for ([`authz::from_config`]).
pub async fn start(config: Config) -> Result<RunningNode, StartError> {
    start_with(config, authz::from_config).await
}

/// [`start`] with the authorizer `choose` makes from the config, the node's department and a
/// view of its datasets (tests run nodes with other authorizers).
pub async fn start_with(
    config: Config,
    choose: impl FnOnce(&Config, DeptId, Arc<dyn FactsView>, Option<&Governance>) -> Arc<dyn Authorizer>,
) -> Result<RunningNode, StartError> {
    start_with_store(config, choose, |blobs| blobs).await
}

/// [`start`] on `wrap` of the configured storage: tests put a fault-injecting store
/// ([`crate::data::blob::IoFaultStore`]) between the node and its files.
pub async fn start_wrapping_store(
    config: Config,
    wrap: impl FnOnce(Arc<dyn BlobStore>) -> Arc<dyn BlobStore>,
) -> Result<RunningNode, StartError> {
    start_with_store(config, authz::from_config, wrap).await
}

async fn start_with_store(
    config: Config,
    choose: impl FnOnce(&Config, DeptId, Arc<dyn FactsView>, Option<&Governance>) -> Arc<dyn Authorizer>,
    wrap: impl FnOnce(Arc<dyn BlobStore>) -> Arc<dyn BlobStore>,
) -> Result<RunningNode, StartError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| StartError::StateDir { path: config.state_dir.clone(), source })?;
    crate::data::service::Upload::remove_stale(&config.state_dir);
    let creds = Credentials::load(&config.tls)?;
    let metrics = Metrics::new();
    let blobs = wrap(ObjectBlobStore::from_config(&config.storage).map_err(StoreError::from)?);
    let mut store = Store::open(blobs, &creds).await?;
    metrics.set_aside_versions.set(store.set_aside().len() as i64);
    store.report_chunk_buffers(metrics.serve_buffers.clone());
    let store = Arc::new(store);
    let server_config = tls::server_config(&creds, metrics.clone())?;
    let bind_error = |source| StartError::Bind { what: "QUIC endpoint", addr: config.listen, source };
    let mut endpoint = tls::endpoint(config.listen, Some(server_config.clone())).map_err(bind_error)?;
    endpoint.set_default_client_config(tls::client_config(&creds)?);
    let addr = endpoint.local_addr().map_err(bind_error)?;
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
    let governance = Governance::start(&config, &creds, &endpoint, &metrics, draining.clone()).await?;
    let authz = choose(&config, node_dept.clone(), store.clone(), governance.as_ref());
    let signer = ManifestSigner::new(&creds)?;
    let follow = net::certs::follow_node_certificate(
        config.tls.clone(),
        config.crl_reload,
        signer.clone(),
        metrics.clone(),
        draining.clone(),
    );
    tokio::spawn(follow);
    let provenance = governance.as_ref().map(|g| {
        Arc::new(crate::policy::authorizer::PolicyProvenance::new(g.replica.clone()))
            as Arc<dyn ferry_client::transfer::Provenance>
    });
    let listener_settings = ListenerSettings {
        tls: config.tls.clone(),
        crl_reload: config.crl_reload,
        drain_timeout: config.transfer.drain_timeout,
        limits: config.limits.clone(),
    };
    let listener =
        Listener::new(endpoint.clone(), server_config, listener_settings, metrics.clone(), draining.clone());
    let settings = ServiceSettings {
        state_dir: config.state_dir.clone(),
        transfer: config.transfer.clone(),
        publish: config.publish.clone(),
        retention: config.retention.clone(),
        peers: config.peers.clone(),
        limits: config.limits.clone(),
    };
    let scrubber = Arc::new(Scrubber::new(ScrubParts {
        store: store.clone(),
        config: config.scrub,
        state_dir: config.state_dir.clone(),
        peers: config.peers.clone(),
        // Its own copy: the data service takes the node's.
        creds: Credentials::load(&config.tls)?,
        endpoint: endpoint.clone(),
        metrics: metrics.clone(),
        draining: draining.clone(),
    }));
    let (schedule_endpoint, schedule_provenance) = (endpoint.clone(), provenance.clone());
    let parts = ServiceParts {
        store,
        settings,
        creds,
        endpoint,
        metrics: metrics.clone(),
        draining: draining.clone(),
        provenance,
    };
    let service = Arc::new(DataService::new(parts, signer));
    let governance = governance.map(Arc::new);
    let subscriptions = crate::subscribe::Subscriptions::start(crate::subscribe::SubscriptionParts {
        service: service.clone(),
        metrics: metrics.clone(),
        replica: governance.as_ref().map(|g| g.replica.clone()),
        state_dir: config.state_dir.clone(),
        peers: config.peers.keys().cloned().collect(),
        configured: config.subscriptions.clone(),
        draining: draining.clone(),
    })?;
    let scheduler = crate::schedule::start_for_node(
        &config,
        schedule_endpoint,
        schedule_provenance,
        service.clone(),
        &metrics,
        draining.clone(),
    )?;
    if let Some(governance) = &governance {
        crate::policy::holdings::start(governance, &service, &metrics, draining.clone());
    }
    let node_calls = Arc::new(
        NodeCalls::new(
            config.node_name.clone(),
            node_dept.clone(),
            service.clone(),
            governance.clone(),
            metrics.clone(),
        )
        .with_schedules(scheduler)
        .with_subscriptions(subscriptions),
    );
    let dispatcher =
        Dispatcher::new(service.clone(), authz, metrics.clone(), config.node_name.clone(), node_dept.clone())
            .with_governance(governance, draining.clone())
            .with_limits(config.limits.clone())
            .with_node_calls(node_calls)
            .with_query(Arc::new(crate::data::query::QueryEngine::new(
                service.clone(),
                config.query,
                metrics.clone(),
            )));
    let (stopped, stopped_rx) = watch::channel(false);
    if let Some(listener) = admin {
        let routes = crate::data::scrub::admin::routes(scrubber.clone());
        spawn_admin(listener, metrics.clone(), routes, stopped_rx);
    }
    tracing::info!(%addr, ?admin_addr, node = %config.node_name, dept = %node_dept, "node listening");
    tokio::spawn(service.clone().collect_garbage_periodically());
    tokio::spawn(scrubber.run_periodically());
    let task = tokio::spawn(net::serve(Arc::new(listener), Arc::new(dispatcher)));
    Ok(RunningNode { addr, admin_addr, service, metrics, drain, stopped, task })
}

fn spawn_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    routes: axum::Router,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|d| *d).await;
        };
        if let Err(e) = telemetry::serve_admin(listener, metrics, routes, stop).await {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    });
}

impl RunningNode {
    /// The versions the node holds.
    pub fn store(&self) -> &Store {
        self.service.store()
    }

    /// Runs garbage collection once, now (see [`DataService::collect_garbage`]).
    pub async fn collect_garbage(&self) -> Result<GcReport, StoreError> {
        self.service.collect_garbage().await
    }

    /// Drains: stops accepting, lets in-flight answers stop at a chunk boundary, then closes.
    pub async fn shutdown(self) {
        self.metrics.set_draining();
        let _ = self.drain.send(true);
        let _ = self.task.await;
        let _ = self.stopped.send(true);
    }
}
