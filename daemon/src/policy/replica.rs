//! The node's copy of the policy snapshot: verified, persisted, never rolled back, and judged
//! fresh or stale.
//!
//! A snapshot reaches the replica as the signed bytes the control plane produced (over the
//! network at a province, in-process at the ministry). [`PolicyReplica::offer`] checks the
//! signature (the ministry's control-plane key, through a [`SnapshotVerifier`]), parses the body,
//! asks [`PolicySnapshot::accept`] whether it may replace the one held, writes it to
//! `policy.signed` in the state directory (temp file, fsync, rename, directory fsync) and only then
//! installs it. Nothing half-written is ever installed or left as the persisted copy.
//!
//! Freshness: the copy is fresh for `max-staleness` after it was last accepted (a newer serial or
//! a refresh of the same one). After a restart the persisted copy counts from the time the
//! ministry issued it, so a node that was down for long starts stale rather than trusting an old
//! copy. A clock that runs behind the ministry's makes a just-issued copy look younger than it
//! is, never older than zero. A stale or missing copy makes [`PolicyReplica::current`] fail:
//! the node refuses every request that needs a policy decision until a fresh snapshot arrives.

use ferry_proto::authz::Denial;
use ferry_proto::policy::{Acceptance, PolicyError, PolicySnapshot};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Name of the persisted snapshot in the state directory.
pub const POLICY_FILE: &str = "policy.signed";

/// Checks a signed snapshot's signature and signer, and returns its body.
pub trait SnapshotVerifier: Send + Sync + std::fmt::Debug {
    fn verify(&self, signed: &[u8], now: SystemTime) -> Result<Vec<u8>, String>;

    /// [`verify`](Self::verify) judged at the time the snapshot was issued, as its signed body
    /// states, rather than at `now`: for the persisted copy at start-up, whose signer may have
    /// expired or been superseded since (a receipt and an audit checkpoint are judged the same
    /// way). Whether the copy is still fresh is the replica's own check. Defaults to `verify`.
    fn verify_issued(&self, signed: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        self.verify(signed, now)
    }
}

/// Why a snapshot was not installed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("policy snapshot signature refused: {0}")]
    Signature(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot persist the policy snapshot to {path}: {source}")]
    Persist { path: PathBuf, source: std::io::Error },
}

impl ReplicaError {
    /// A bounded label for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Signature(_) => "bad_signature",
            Self::Policy(PolicyError::Rollback { .. } | PolicyError::StaleRefresh { .. }) => "rollback",
            Self::Policy(PolicyError::Conflict { .. }) => "conflict",
            Self::Policy(_) => "malformed",
            Self::Persist { .. } => "persist_failed",
        }
    }
}

/// What the replica holds, for `/healthz`, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Serial of the snapshot held, if any.
    pub serial: Option<u64>,
    /// Time since the copy was last confirmed fresh.
    pub age: Option<Duration>,
    /// Past `max-staleness`, or no snapshot at all.
    pub stale: bool,
    pub max_staleness: Duration,
}

#[derive(Debug)]
struct Held {
    snapshot: Arc<PolicySnapshot>,
    fresh_at: SystemTime,
}

/// The node's verified copy of the policy snapshot (see the module doc).
#[derive(Debug)]
pub struct PolicyReplica {
    path: PathBuf,
    verifier: Arc<dyn SnapshotVerifier>,
    max_staleness: Duration,
    held: RwLock<Option<Held>>,
    /// Serializes offers so the persisted file and the installed copy agree.
    offering: std::sync::Mutex<()>,
    signed: watch::Sender<Option<bytes::Bytes>>,
}

impl PolicyReplica {
    /// Opens the replica of `state_dir`, loading the persisted snapshot if it verifies at the time
    /// it was issued ([`SnapshotVerifier::verify_issued`]); it counts as fresh from that time.
    /// A persisted copy that does not verify is logged and ignored: the node starts without a
    /// policy (and refuses policy decisions) until the ministry sends one.
    pub fn open(
        state_dir: &Path,
        verifier: Arc<dyn SnapshotVerifier>,
        max_staleness: Duration,
        now: SystemTime,
    ) -> Self {
        let path = state_dir.join(POLICY_FILE);
        let (signed, _) = watch::channel(None);
        let replica = Self {
            path,
            verifier,
            max_staleness,
            held: RwLock::new(None),
            offering: std::sync::Mutex::new(()),
            signed,
        };
        match std::fs::read(&replica.path) {
            Ok(bytes) => match replica.verifier.verify_issued(&bytes, now).map_err(ReplicaError::Signature) {
                Ok(body) => {
                    let snapshot = match PolicySnapshot::parse(&body) {
                        Ok(snapshot) => snapshot,
                        Err(e) => {
                            tracing::error!(path = %replica.path.display(), error = %e, "the persisted policy snapshot is malformed");
                            return replica;
                        }
                    };
                    let issued = UNIX_EPOCH + Duration::from_millis(snapshot.issued_at_ms.max(0) as u64);
                    tracing::info!(serial = snapshot.serial, "loaded the persisted policy snapshot");
                    replica.install(snapshot, issued.min(now), bytes);
                }
                Err(e) => tracing::error!(
                    path = %replica.path.display(), error = %e,
                    "the persisted policy snapshot does not verify; waiting for a fresh one from the ministry"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!("no policy snapshot yet; waiting for one from the ministry")
            }
            Err(e) => {
                tracing::error!(path = %replica.path.display(), error = %e, "cannot read the policy snapshot")
            }
        }
        replica
    }

    /// Verifies, checks against the held copy, persists and installs `signed`.
    pub fn offer(&self, signed: &[u8], now: SystemTime) -> Result<Acceptance, ReplicaError> {
        let _one_at_a_time = self.offering.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = self.verified(signed, now)?;
        let acceptance = {
            let held = self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            snapshot.accept(held.as_ref().map(|h| h.snapshot.as_ref()))?
        };
        self.persist(signed)?;
        self.install(snapshot, now, signed.to_vec());
        Ok(acceptance)
    }

    /// The snapshot to decide by, or the denial every policy decision gets while there is no
    /// fresh one.
    pub fn current(&self, now: SystemTime) -> Result<Arc<PolicySnapshot>, Denial> {
        let held = self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(held) = held.as_ref() else {
            return Err(Denial::unavailable(
                "no_policy",
                "this node has no policy snapshot from the ministry yet; it refuses requests that need a policy decision",
            ));
        };
        let age = now.duration_since(held.fresh_at).unwrap_or_default();
        if age > self.max_staleness {
            return Err(Denial::unavailable(
                "policy_stale",
                format!(
                    "this node's policy snapshot (serial {}) is {}s old, past its max-staleness of {}s: \
                     the ministry has not been reachable; requests that need a policy decision are refused until it is",
                    held.snapshot.serial,
                    age.as_secs(),
                    self.max_staleness.as_secs()
                ),
            ));
        }
        Ok(held.snapshot.clone())
    }

    /// The snapshot held, fresh or not (for a node that re-serves it, and for status).
    pub fn held(&self) -> Option<Arc<PolicySnapshot>> {
        self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().map(|h| h.snapshot.clone())
    }

    /// Follows the signed bytes of the snapshot held, as installed.
    pub fn subscribe(&self) -> watch::Receiver<Option<bytes::Bytes>> {
        self.signed.subscribe()
    }

    pub fn status(&self, now: SystemTime) -> PolicyStatus {
        let held = self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let age = held.as_ref().map(|h| now.duration_since(h.fresh_at).unwrap_or_default());
        PolicyStatus {
            serial: held.as_ref().map(|h| h.snapshot.serial),
            age,
            stale: age.is_none_or(|a| a > self.max_staleness),
            max_staleness: self.max_staleness,
        }
    }

    fn verified(&self, signed: &[u8], now: SystemTime) -> Result<PolicySnapshot, ReplicaError> {
        let body = self.verifier.verify(signed, now).map_err(ReplicaError::Signature)?;
        Ok(PolicySnapshot::parse(&body)?)
    }

    fn install(&self, snapshot: PolicySnapshot, fresh_at: SystemTime, signed: Vec<u8>) {
        let serial = snapshot.serial;
        *self.held.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(Held { snapshot: Arc::new(snapshot), fresh_at });
        self.signed.send_replace(Some(bytes::Bytes::from(signed)));
        tracing::debug!(serial, "policy snapshot installed");
    }

    fn persist(&self, signed: &[u8]) -> Result<(), ReplicaError> {
        let failed = |source| ReplicaError::Persist { path: self.path.clone(), source };
        let temp = self.path.with_extension("signed.partial");
        let mut file = std::fs::File::create(&temp).map_err(failed)?;
        file.write_all(signed).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(failed)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
