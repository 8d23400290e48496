//! What one peer may hold of the node's accept side: request streams per identity over all its
//! connections ([`StreamCounts`]), and the close codes of connections the node ends because of
//! a limit. The connection count per identity is the registry's (`super::peers`); the limits
//! themselves are the node config's `[limits]` (`crate::config::LimitsConfig`).

use ferry_proto::Principal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Application close code: the peer's identity already holds `[limits] connections-per-peer`
/// connections.
pub const CLOSE_TOO_MANY_CONNECTIONS: u32 = 0x14;
/// Application close code: the connection had no stream open for `[limits] idle-timeout`.
pub const CLOSE_IDLE: u32 = 0x15;

/// The identity streams are counted by: department, role and holder name (as connections are).
type Identity = (ferry_proto::DeptId, ferry_proto::Role, String);

fn identity(peer: &Principal) -> Identity {
    (peer.dept.clone(), peer.role, peer.name.clone())
}

/// Open request streams per identity, over all its connections.
#[derive(Debug)]
pub struct StreamCounts {
    open: Mutex<HashMap<Identity, usize>>,
    limit: usize,
}

/// The identity's streams are at the cap; the message is what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{identity} already has {open} streams open (at most {limit}); retry when one ends")]
pub struct TooManyStreams {
    pub identity: String,
    pub open: usize,
    pub limit: usize,
}

impl StreamCounts {
    /// At most `limit` open streams per identity.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { open: Mutex::new(HashMap::new()), limit })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, usize>> {
        // Every change is one step; a panic elsewhere leaves the map consistent.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more stream of `peer`, unless it is at the cap. The slot is given back when
    /// dropped.
    pub fn try_open(self: &Arc<Self>, peer: &Principal) -> Result<StreamSlot, TooManyStreams> {
        let key = identity(peer);
        let mut open = self.lock();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            return Err(TooManyStreams { identity: peer.to_string(), open: *count, limit: self.limit });
        }
        *count += 1;
        Ok(StreamSlot { counts: self.clone(), key })
    }

    /// Streams `peer`'s identity has open now.
    pub fn open(&self, peer: &Principal) -> usize {
        self.lock().get(&identity(peer)).copied().unwrap_or(0)
    }
}

/// One open stream of an identity; dropping it gives the place back.
#[derive(Debug)]
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    key: Identity,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{DeptId, Role};

    fn principal(dept: &str, name: &str) -> Principal {
        Principal {
            dept: DeptId::new(dept).unwrap(),
            role: Role::Operator,
            name: name.into(),
            serial: "01".into(),
            fingerprint: "00".into(),
        }
    }

    #[test]
    fn an_identity_gets_its_cap_and_its_places_back() {
        let counts = StreamCounts::new(2);
        let (mallory, alice) = (principal("hainan", "mallory"), principal("zhejiang", "alice"));
        let first = counts.try_open(&mallory).unwrap();
        let _second = counts.try_open(&mallory).unwrap();
        let refused = counts.try_open(&mallory).unwrap_err();
        assert!(refused.to_string().contains("2 streams open (at most 2)"), "{refused}");
        assert!(counts.try_open(&alice).is_ok(), "another identity is not counted with mallory");
        drop(first);
        assert_eq!(counts.open(&mallory), 1);
        assert!(counts.try_open(&mallory).is_ok());
    }
}
