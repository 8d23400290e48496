//! The live connections of the node, by the identity their certificate speaks for.
//!
//! The listener (`super::handle_connection`) registers each connection once its peer is
//! identified and holds the returned [`PeerGuard`] for the connection's life; dropping the guard
//! unregisters it. The registry answers how many connections an identity holds (the bound on
//! connections per identity asks it) and closes the connections matching a predicate — what the
//! CRL reload does with peers that are now revoked. A connection also ends at its peer's
//! certificate's `not_after` (the listener's timer, [`CloseReason::Expired`]).

use ferry_proto::{DeptId, Principal, Role};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

pub use ferry_net::tls::revocation::{CLOSE_EXPIRED, CLOSE_REVOKED};

/// Why the node closes a live connection of its own accord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The reloaded CRL lists the peer's certificate.
    Revoked,
    /// The peer's certificate is past its `not_after`.
    Expired,
}

impl CloseReason {
    /// The application close code the peer sees.
    pub fn code(self) -> u32 {
        match self {
            Self::Revoked => CLOSE_REVOKED,
            Self::Expired => CLOSE_EXPIRED,
        }
    }

    /// The close reason text the peer sees (and a CLI prints).
    pub fn text(self) -> &'static str {
        match self {
            Self::Revoked => "certificate revoked",
            Self::Expired => "certificate expired",
        }
    }

    /// Closes `conn` with this reason's code and text.
    pub fn close(self, conn: &quinn::Connection) {
        conn.close(quinn::VarInt::from_u32(self.code()), self.text().as_bytes());
    }
}

/// The identity a connection cap counts by: department, role and holder name. Certificates
/// renewed for the same holder count as one identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    pub dept: DeptId,
    pub role: Role,
    pub name: String,
}

impl IdentityKey {
    pub fn of(peer: &Principal) -> Self {
        Self { dept: peer.dept.clone(), role: peer.role, name: peer.name.clone() }
    }
}

/// What the registry knows of one live connection, as a predicate of
/// [`PeerRegistry::close_matching`] sees it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Who the peer is, serial and fingerprint of its certificate included.
    pub principal: Arc<Principal>,
    /// When the peer's certificate expires (`None` when it could not be read).
    pub not_after: Option<SystemTime>,
}

#[derive(Debug)]
struct Entry {
    info: PeerInfo,
    conn: quinn::Connection,
}

/// The connection cap of an identity is reached ([`PeerRegistry::try_register`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{identity} already holds {held} connections (at most {limit})")]
pub struct AtCapacity {
    pub identity: String,
    pub held: usize,
    pub limit: usize,
}

/// The node's live connections by identity. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct PeerRegistry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
}

/// Keeps a connection registered; dropping it unregisters the connection.
#[derive(Debug)]
pub struct PeerGuard {
    registry: Arc<PeerRegistry>,
    id: u64,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl PeerRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a live connection of `info.principal`.
    pub fn register(self: &Arc<Self>, conn: quinn::Connection, info: PeerInfo) -> PeerGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Entry { info, conn });
        PeerGuard { registry: self.clone(), id }
    }

    /// Registers a live connection unless its identity already holds `limit` connections;
    /// the count and the insert are one step, so concurrent handshakes cannot overshoot.
    pub fn try_register(
        self: &Arc<Self>,
        conn: quinn::Connection,
        info: PeerInfo,
        limit: usize,
    ) -> Result<PeerGuard, AtCapacity> {
        let key = IdentityKey::of(&info.principal);
        let mut entries = self.lock();
        let held = entries.values().filter(|e| IdentityKey::of(&e.info.principal) == key).count();
        if held >= limit {
            return Err(AtCapacity { identity: info.principal.to_string(), held, limit });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        entries.insert(id, Entry { info, conn });
        Ok(PeerGuard { registry: self.clone(), id })
    }

    /// How many live connections the identity `peer` speaks for holds.
    pub fn count(&self, peer: &Principal) -> usize {
        let key = IdentityKey::of(peer);
        self.lock().values().filter(|e| IdentityKey::of(&e.info.principal) == key).count()
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every live connection whose peer matches `pred`, with `reason`; returns how
    /// many. The connections unregister themselves when their tasks end.
    pub fn close_matching(&self, pred: impl Fn(&PeerInfo) -> bool, reason: CloseReason) -> usize {
        let matching: Vec<(PeerInfo, quinn::Connection)> = self
            .lock()
            .values()
            .filter(|e| pred(&e.info))
            .map(|e| (e.info.clone(), e.conn.clone()))
            .collect();
        for (info, conn) in &matching {
            tracing::warn!(peer = %info.principal, reason = reason.text(), "closing a live connection");
            reason.close(conn);
        }
        matching.len()
    }
}
