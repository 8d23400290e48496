//! The QUIC side of the node: the accept loop, peer identity, one task per request stream,
//! CRL reloads, and draining on shutdown. It accepts, identifies, decodes and dispatches
//! ([`dispatch`]); what a request does is the data service's (`crate::data::service`).
//!
//! A connection is only handed to the application once its TLS handshake, including the
//! client certificate check against the CA and CRL, has completed; nothing is read or sent on
//! it before. The peer's identity is read once, from its certificate, and travels with every
//! request of that connection.

pub mod certs;
mod dispatch;
pub mod limits;
pub mod peers;

pub use dispatch::Dispatcher;
pub use limits::{CLOSE_IDLE, CLOSE_TOO_MANY_CONNECTIONS};
pub use peers::{CLOSE_EXPIRED, CLOSE_REVOKED, CloseReason, PeerRegistry};

use crate::config::LimitsConfig;
use crate::telemetry::Metrics;
use ferry_net::identity::principal_from_cert;
use ferry_net::tls::revocation::{self, RevokedSerials};
use ferry_net::tls::{self, HandshakeObserver, HandshakeRefusal, TlsPaths};
use peers::PeerInfo;
use rustls::pki_types::CertificateDer;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Application close code: the certificate verified but carries no usable identity.
pub const CLOSE_BAD_IDENTITY: u32 = 0x10;
/// Application close code: the node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x11;

/// The bound endpoint and what accepting on it needs.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    /// The server config in force (rebuilt when the CRL changes); connections from this host
    /// are accepted with it and the loopback transport settings.
    server_config: RwLock<quinn::ServerConfig>,
    /// Where the node's certificates and CRL are, to rebuild the config from.
    tls: TlsPaths,
    crl_reload: Duration,
    drain_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Becomes `true` when the node starts draining.
    draining: watch::Receiver<bool>,
    /// The live connections by identity (closed on revocation and expiry).
    peers: Arc<PeerRegistry>,
    /// What one peer may hold: streams, connections, idle time.
    limits: LimitsConfig,
    /// Open request streams per identity.
    streams: Arc<limits::StreamCounts>,
}

/// How a [`Listener`] accepts and drains.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub tls: TlsPaths,
    pub crl_reload: Duration,
    pub drain_timeout: Duration,
    pub limits: LimitsConfig,
}

impl Listener {
    pub fn new(
        endpoint: quinn::Endpoint,
        server_config: quinn::ServerConfig,
        settings: ListenerSettings,
        metrics: Arc<Metrics>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        let ListenerSettings { tls, crl_reload, drain_timeout, limits } = settings;
        let server_config = RwLock::new(server_config);
        let peers = PeerRegistry::new();
        let streams = limits::StreamCounts::new(limits.streams_per_peer);
        Self {
            endpoint,
            server_config,
            tls,
            crl_reload,
            drain_timeout,
            metrics,
            draining,
            peers,
            limits,
            streams,
        }
    }

    /// The node's live connections by identity.
    pub fn peers(&self) -> &Arc<PeerRegistry> {
        &self.peers
    }
}

/// Accepts connections until the node drains, then waits (bounded) for in-flight requests.
pub async fn serve(listener: Arc<Listener>, dispatcher: Arc<Dispatcher>) {
    let mut draining = listener.draining.clone();
    let mut connections = JoinSet::new();
    let crl_task = tokio::spawn(reload_crl_loop(listener.clone()));
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => break,
            incoming = listener.endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                connections.spawn(handle_connection(listener.clone(), dispatcher.clone(), incoming));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    crl_task.abort();
    tracing::info!(in_flight = connections.len(), "draining");
    let timeout = listener.drain_timeout;
    let drained =
        tokio::time::timeout(timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(?timeout, "drain timeout passed; closing remaining connections");
    }
    listener.endpoint.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"node shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), listener.endpoint.wait_idle()).await;
    tracing::info!("stopped");
}

/// The peer's identity and when its certificate expires.
fn peer_identity(conn: &quinn::Connection) -> Result<PeerInfo, String> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no peer certificate")?;
    let leaf = certs.first().ok_or("empty certificate chain")?;
    let principal = Arc::new(principal_from_cert(leaf).map_err(|e| e.to_string())?);
    Ok(PeerInfo { principal, not_after: revocation::not_after(leaf) })
}

/// Completes the handshake and reads the peer's identity; `None` when either fails.
async fn accept(listener: &Listener, incoming: quinn::Incoming) -> Option<(quinn::Connection, PeerInfo)> {
    let remote = incoming.remote_address();
    // A client on this host gets full-size datagrams from the first packet (no probing); every
    // client gets the configured stream credit and none for unidirectional streams.
    let mut config = listener.server_config.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    let streams = listener.limits.streams_per_connection;
    config.transport_config(Arc::new(tls::server_transport_config(tls::is_loopback(remote), streams)));
    let accepted = incoming.accept_with(Arc::new(config));
    let handshake = async move { accepted?.await };
    let conn = match handshake.await {
        Ok(conn) => conn,
        Err(e) => {
            // The certificate verifier has already counted the refusals it saw itself.
            tls::observe_failed_handshake(&e, listener.metrics.as_ref());
            tracing::debug!(%remote, error = %e, "handshake failed");
            return None;
        }
    };
    match peer_identity(&conn) {
        Ok(peer) => Some((conn, peer)),
        Err(reason) => {
            listener.metrics.refused(HandshakeRefusal::BadCertificate);
            tracing::warn!(%remote, %reason, "refusing a certificate without a ferry identity");
            conn.close(quinn::VarInt::from_u32(CLOSE_BAD_IDENTITY), reason.as_bytes());
            None
        }
    }
}

async fn handle_connection(listener: Arc<Listener>, dispatcher: Arc<Dispatcher>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let Some((conn, info)) = accept(&listener, incoming).await else { return };
    let peer = info.principal.clone();
    let expiry = info.not_after;
    let cap = listener.limits.connections_per_peer;
    let _registered = match listener.peers.try_register(conn.clone(), info, cap) {
        Ok(guard) => guard,
        Err(crowded) => {
            tracing::warn!(%peer, %remote, "refusing a connection: {crowded}");
            conn.close(quinn::VarInt::from_u32(CLOSE_TOO_MANY_CONNECTIONS), crowded.to_string().as_bytes());
            return;
        }
    };
    listener.metrics.connections.inc();
    let span = tracing::info_span!("conn", peer = %peer.dept, role = %peer.role, %remote);
    span.in_scope(|| tracing::debug!("connection accepted"));
    let mut streams = JoinSet::new();
    let mut draining = listener.draining.clone();
    loop {
        let idle = streams.is_empty();
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let (dispatcher, peer) = (dispatcher.clone(), peer.clone());
                    match listener.streams.try_open(&peer) {
                        Ok(slot) => streams.spawn(async move {
                            dispatcher.handle_stream(&peer, send, recv).await;
                            drop(slot);
                        }),
                        Err(crowded) => streams.spawn(async move {
                            dispatcher.refuse_stream(send, recv, crowded.to_string()).await;
                        }),
                    };
                }
                Err(_) => break,
            },
            _ = draining.wait_for(|d| *d) => break,
            () = tokio::time::sleep(listener.limits.idle_timeout), if idle => {
                span.in_scope(|| tracing::info!("closing a connection idle for {:?}", listener.limits.idle_timeout));
                conn.close(quinn::VarInt::from_u32(CLOSE_IDLE), b"idle: no request stream open");
                break;
            }
            () = until(expiry) => {
                span.in_scope(|| tracing::info!("peer certificate expired; closing the connection"));
                CloseReason::Expired.close(&conn);
                break;
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Let running answers reach a chunk boundary (they watch the drain signal themselves).
    while streams.join_next().await.is_some() {}
    span.in_scope(|| ferry_net::conn::log_path_stats(&conn, "connection ended"));
}

/// Sleeps until the wall-clock time `at` (forever when `None`).
async fn until(at: Option<SystemTime>) {
    let Some(at) = at else { return std::future::pending().await };
    let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    tokio::time::sleep(left).await;
}

/// Rebuilds the server TLS config when the CRL file changes, so a revocation takes effect
/// without a restart, or the node's certificate or key does, so a rotated certificate is
/// served without one ([`certs`]).
async fn reload_crl_loop(listener: Arc<Listener>) {
    let mut files = certs::NodeFiles::new(&listener.tls);
    let mut tick = tokio::time::interval(listener.crl_reload);
    loop {
        tick.tick().await;
        if !files.changed() {
            continue;
        }
        let rebuilt = tls::Credentials::load(&listener.tls).and_then(|creds| {
            let revoked = RevokedSerials::from_crls(&creds.crls());
            Ok((tls::server_config(&creds, listener.metrics.clone())?, revoked))
        });
        match rebuilt {
            Ok((config, revoked)) => {
                // Loopback connections are accepted with this copy: it must follow every reload.
                *listener.server_config.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    config.clone();
                listener.endpoint.set_server_config(Some(config));
                tracing::info!("reloaded the node's certificate, key and revocation list");
                // The handshake checked the CRL once; a peer revoked since must not keep its connection.
                let closed = listener
                    .peers
                    .close_matching(|peer| revoked.contains(&peer.principal.serial), CloseReason::Revoked);
                if closed > 0 {
                    tracing::warn!(closed, "closed the live connections of revoked peers");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot reload the CRL; the previous one stays in force"),
        }
    }
}
