//! Signed checkpoints of the audit chain: when to take one, and the bytes that are signed.
//!
//! A checkpoint says "entry `seq` of this log had hash `hash` at `time_ms`", signed by the
//! node's key (the ministry's control-plane key, a province's node key). Verification compares
//! it with the stored chain: a log rewritten or truncated behind a checkpoint no longer matches.
//!
//! Neighbours: [`crate::audit::AuditLog`] takes checkpoints as it appends;
//! [`crate::audit::verify`] checks them.

use super::entry::EntryHash;
use crate::signing::SignedBlob;
use std::time::Duration;

/// Domain tag that opens a checkpoint's signed body.
pub const CHECKPOINT_DOMAIN: &str = "ferry/audit-checkpoint/v1";

/// When the log signs a checkpoint on its own (also on demand: [`crate::audit::AuditLog::checkpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many entries since the last checkpoint (at least 1).
    pub every_entries: u64,
    /// Or when an entry comes this long (by entry times) after the last checkpoint.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self { every_entries: 1000, every: Duration::from_secs(600) }
    }
}

impl CheckpointPolicy {
    /// Whether the entry at `seq`, written at `time_ms`, is due a checkpoint after the last one
    /// (`None` when there is none yet: the clock starts at the first entry).
    pub fn due(&self, seq: u64, time_ms: i64, last: Option<(u64, i64)>) -> bool {
        let (last_seq, last_time) = last.unwrap_or((0, time_ms));
        let every_ms = i64::try_from(self.every.as_millis()).unwrap_or(i64::MAX);
        seq.saturating_sub(last_seq) >= self.every_entries.max(1)
            || time_ms.saturating_sub(last_time) >= every_ms && seq > last_seq
    }
}

/// A checkpoint as stored: its fields and the signed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: EntryHash,
    pub time_ms: i64,
    pub signed: SignedBlob,
}

/// The exact bytes a checkpoint's signature covers:
/// `u32be(len(tag)) || tag || u64be(seq) || hash (32 bytes) || i64be(time_ms)`.
pub fn checkpoint_body(seq: u64, hash: EntryHash, time_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + CHECKPOINT_DOMAIN.len() + 48);
    // Invariant: the tag is a short constant.
    out.extend_from_slice(&(CHECKPOINT_DOMAIN.len() as u32).to_be_bytes());
    out.extend_from_slice(CHECKPOINT_DOMAIN.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_by_count_or_by_time() {
        let policy = CheckpointPolicy { every_entries: 3, every: Duration::from_secs(10) };
        assert!(!policy.due(2, 0, None));
        assert!(policy.due(3, 0, None));
        assert!(!policy.due(5, 9_999, Some((3, 0))));
        assert!(policy.due(5, 10_000, Some((3, 0))));
        assert!(policy.due(6, 1, Some((3, 0))));
    }

    #[test]
    fn body_is_pinned() {
        let body = checkpoint_body(7, EntryHash([0xaa; 32]), 5);
        assert_eq!(&body[..4], &25u32.to_be_bytes());
        assert_eq!(&body[4..29], b"ferry/audit-checkpoint/v1");
        assert_eq!(&body[29..37], &7u64.to_be_bytes());
        assert_eq!(&body[37..69], &[0xaa; 32]);
        assert_eq!(&body[69..], &5i64.to_be_bytes());
    }
}
