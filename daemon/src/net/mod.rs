//! The QUIC side of the node: the accept loop, peer identity, one task per request stream,
//! CRL reloads, and draining on shutdown.
//!
//! A connection is only handed to the application once its TLS handshake, including the
//! client certificate check against the CA and CRL, has completed; nothing is read or sent on
//! it before. The peer's identity is read once, from its certificate, and travels with every
//! request of that connection.

pub mod budget;
mod handler;
mod publish;
pub(crate) mod replicate;

use crate::node::NodeState;
use ferry_net::identity::principal_from_cert;
use ferry_net::tls::{self, HandshakeObserver, HandshakeRefusal};
use ferry_proto::Principal;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::task::JoinSet;

/// Application close code: the certificate verified but carries no usable identity.
pub const CLOSE_BAD_IDENTITY: u32 = 0x10;
/// Application close code: the node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x11;

/// Accepts connections until the node drains, then waits (bounded) for in-flight requests.
pub async fn serve(state: Arc<NodeState>) {
    let mut draining = state.draining.clone();
    let mut connections = JoinSet::new();
    let crl_task = tokio::spawn(reload_crl_loop(state.clone()));
    loop {
        tokio::select! {
            _ = draining.wait_for(|d| *d) => break,
            incoming = state.endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                connections.spawn(handle_connection(state.clone(), incoming));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    crl_task.abort();
    tracing::info!(in_flight = connections.len(), "draining");
    let timeout = state.config.transfer.drain_timeout;
    let drained =
        tokio::time::timeout(timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(?timeout, "drain timeout passed; closing remaining connections");
    }
    state.endpoint.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"node shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), state.endpoint.wait_idle()).await;
    tracing::info!("stopped");
}

fn peer_identity(conn: &quinn::Connection) -> Result<Principal, String> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no peer certificate")?;
    let leaf = certs.first().ok_or("empty certificate chain")?;
    principal_from_cert(leaf).map_err(|e| e.to_string())
}

async fn handle_connection(state: Arc<NodeState>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let accepted = if tls::is_loopback(remote) {
        // A client on this host: full-size datagrams from the first packet (no probing).
        let mut config = state.server_config.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        config.transport_config(Arc::new(tls::loopback_transport_config()));
        incoming.accept_with(Arc::new(config))
    } else {
        incoming.accept()
    };
    let handshake = async move { accepted?.await };
    let conn = match handshake.await {
        Ok(conn) => conn,
        Err(e) => {
            // The certificate verifier has already counted the refusals it saw itself.
            tls::observe_failed_handshake(&e, state.metrics.as_ref());
            tracing::debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let peer = match peer_identity(&conn) {
        Ok(peer) => Arc::new(peer),
        Err(reason) => {
            state.metrics.refused(HandshakeRefusal::BadCertificate);
            tracing::warn!(%remote, %reason, "refusing a certificate without a ferry identity");
            conn.close(quinn::VarInt::from_u32(CLOSE_BAD_IDENTITY), reason.as_bytes());
            return;
        }
    };
    state.metrics.connections.inc();
    let span = tracing::info_span!("conn", peer = %peer.dept, role = %peer.role, %remote);
    let _enter = span.enter();
    tracing::debug!("connection accepted");
    drop(_enter);
    let mut streams = JoinSet::new();
    let mut draining = state.draining.clone();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(handler::handle_stream(state.clone(), peer.clone(), send, recv));
                }
                Err(_) => break,
            },
            _ = draining.wait_for(|d| *d) => break,
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Let running answers reach a chunk boundary (they watch the drain signal themselves).
    while streams.join_next().await.is_some() {}
    let _enter = span.enter();
    ferry_net::conn::log_path_stats(&conn, "connection ended");
}

/// Rebuilds the server TLS config when the CRL file changes, so a revocation takes effect
/// without a restart.
async fn reload_crl_loop(state: Arc<NodeState>) {
    let Some(crl_path) = state.config.tls.crl.clone() else { return };
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = modified(&crl_path);
    let mut tick = tokio::time::interval(state.config.crl_reload);
    loop {
        tick.tick().await;
        let now = modified(&crl_path);
        if now == seen {
            continue;
        }
        seen = now;
        let rebuilt = tls::Credentials::load(&state.config.tls)
            .and_then(|creds| tls::server_config(&creds, state.metrics.clone()));
        match rebuilt {
            Ok(config) => {
                // Loopback connections are accepted with this copy: it must follow every reload.
                *state.server_config.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    config.clone();
                state.endpoint.set_server_config(Some(config));
                tracing::info!(path = %crl_path.display(), "reloaded the certificate revocation list");
            }
            Err(e) => tracing::error!(error = %e, "cannot reload the CRL; the previous one stays in force"),
        }
    }
}
