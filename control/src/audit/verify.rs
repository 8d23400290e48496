//! Verifying an audit log: the chain, entry by entry, and every signed checkpoint.
//!
//! [`ChainVerifier`] is pure: it is fed stored rows in sequence order and the stored
//! checkpoints, and reports the first bad entry. [`verify_pool`] and [`verify_file`] drive it
//! over a database (the node's own, on line; a copied file, off line and read-only).
//!
//! What it detects, and where it points:
//! - a modified entry: its recomputed hash differs ([`ProblemKind::HashMismatch`] at that seq);
//! - a deleted entry: a gap ([`ProblemKind::Missing`] at the first missing seq);
//! - an inserted entry: an unexpected or repeated seq, or the next entry's `prev_hash` no longer
//!   names its predecessor ([`ProblemKind::UnexpectedSeq`], [`ProblemKind::PrevHashMismatch`]);
//! - reordered entries: hashes cover the seq, so the first moved entry mismatches;
//! - truncation: the log ends before a signed checkpoint's seq ([`ProblemKind::Truncated`] at
//!   the first missing seq);
//! - a rewritten chain (every hash recomputed from some point on): the next checkpoint no longer
//!   matches ([`ProblemKind::CheckpointMismatch`], naming the range since the last good one);
//! - a forged or altered checkpoint: its signature or body ([`ProblemKind::CheckpointSignature`],
//!   [`ProblemKind::CheckpointBody`]).
//!
//! Entries appended after the last checkpoint, or a truncation that also removes the checkpoints
//! behind it, are only caught against a checkpoint kept elsewhere: that is what checkpoints are
//! for, and why a node exports them ([`crate::audit::AuditLog::checkpoints`]; shipping a
//! province's checkpoints to the ministry is not built yet).

use super::AuditError;
use super::checkpoint::{Checkpoint, checkpoint_body};
use super::entry::{EntryHash, GENESIS_HASH, RawEntry, entry_hash};
use super::store::{self, StoredCheckpoint};
use crate::signing::{BlobVerifier, SignedBlob};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::AnyPool;
use std::collections::BTreeMap;
use std::path::Path;

/// What is wrong at a place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "problem")]
pub enum ProblemKind {
    /// The entry's stored hash is not the hash of its fields: it was modified.
    HashMismatch,
    /// The entry's `prev_hash` is not its predecessor's hash: something was inserted or removed.
    PrevHashMismatch,
    /// The entry is missing; the next stored one has seq `found`.
    Missing { found: u64 },
    /// A stored entry repeats or goes back to this seq (`previous` came before it).
    UnexpectedSeq { previous: u64 },
    /// A stored field cannot be read (not a hash, negative seq).
    Malformed { what: String },
    /// The log ends here, before the signed checkpoint at `checkpoint_seq`.
    Truncated { checkpoint_seq: u64 },
    /// The entry's hash differs from the signed checkpoint at this seq: some entry from
    /// `since_seq` up to here was changed and the chain recomputed.
    CheckpointMismatch { since_seq: u64 },
    /// The checkpoint at this seq is not validly signed by a trusted key.
    CheckpointSignature { reason: String },
    /// The checkpoint's signed body does not say what its row says.
    CheckpointBody,
}

/// One finding: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub seq: u64,
    #[serde(flatten)]
    pub kind: ProblemKind,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// The last stored entry's seq and hash.
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// Checkpoints read, and how many of them verified.
    pub checkpoints: u64,
    pub checkpoints_valid: u64,
    /// Every finding, by seq: the first chain break, and every checkpoint problem.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first bad place in the log.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

/// Checks a log fed in seq order; see the module doc.
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: EntryHash,
    entries: u64,
    last_seq: Option<u64>,
    chain_problem: Option<Problem>,
    checkpoint_problems: Vec<Problem>,
    /// Checkpoints whose signature verified, by seq, with their hash.
    checkpoints: BTreeMap<u64, EntryHash>,
    checkpoints_read: u64,
    last_good_checkpoint: u64,
}

impl ChainVerifier {
    /// Starts with the stored checkpoints, checking each one's signature and body.
    pub fn new(checkpoints: &[StoredCheckpoint], verifier: &dyn BlobVerifier) -> Self {
        let mut this = Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH,
            entries: 0,
            last_seq: None,
            chain_problem: None,
            checkpoint_problems: Vec::new(),
            checkpoints: BTreeMap::new(),
            checkpoints_read: 0,
            last_good_checkpoint: 0,
        };
        for stored in checkpoints {
            this.checkpoints_read += 1;
            match check_checkpoint(stored, verifier) {
                Ok(checkpoint) => {
                    this.checkpoints.insert(checkpoint.seq, checkpoint.hash);
                }
                Err(problem) => this.checkpoint_problems.push(problem),
            }
        }
        this
    }

    fn chain_break(&mut self, seq: u64, kind: ProblemKind) {
        if self.chain_problem.is_none() {
            self.chain_problem = Some(Problem { seq, kind });
        }
    }

    /// Checks the next stored row.
    pub fn push(&mut self, raw: &RawEntry) {
        self.entries += 1;
        let Ok(seq) = u64::try_from(raw.seq) else {
            let what = format!("sequence number {}", raw.seq);
            return self.chain_break(self.next_seq, ProblemKind::Malformed { what });
        };
        if seq < self.next_seq {
            let previous = self.next_seq - 1;
            return self.chain_break(seq, ProblemKind::UnexpectedSeq { previous });
        }
        if seq > self.next_seq {
            self.chain_break(self.next_seq, ProblemKind::Missing { found: seq });
        }
        self.last_seq = Some(seq);
        self.next_seq = seq.saturating_add(1);
        let (Some(prev), Some(stored)) =
            (EntryHash::from_hex(&raw.prev_hash), EntryHash::from_hex(&raw.hash))
        else {
            self.chain_break(
                seq,
                ProblemKind::Malformed { what: "a hash field is not 64 hex digits".into() },
            );
            self.prev_hash = EntryHash([0xff; 32]);
            return;
        };
        if prev != self.prev_hash {
            self.chain_break(seq, ProblemKind::PrevHashMismatch);
        }
        if entry_hash(raw, prev) != stored {
            self.chain_break(seq, ProblemKind::HashMismatch);
        }
        self.prev_hash = stored;
        if let Some(signed) = self.checkpoints.get(&seq).copied() {
            if signed == stored {
                self.last_good_checkpoint = seq;
            } else {
                let since_seq = self.last_good_checkpoint + 1;
                self.checkpoint_problems
                    .push(Problem { seq, kind: ProblemKind::CheckpointMismatch { since_seq } });
            }
        }
    }

    /// Ends the log: checkpoints beyond its end mean it was truncated.
    pub fn finish(mut self) -> VerifyReport {
        if let Some((&checkpoint_seq, _)) = self.checkpoints.range(self.next_seq..).next() {
            let seq = self.next_seq;
            self.chain_break(seq, ProblemKind::Truncated { checkpoint_seq });
        }
        let mut problems: Vec<Problem> = self.chain_problem.into_iter().collect();
        problems.extend(self.checkpoint_problems);
        // Stable: at one seq, the chain break comes before checkpoint findings.
        problems.sort_by_key(|p| p.seq);
        VerifyReport {
            entries: self.entries,
            last_seq: self.last_seq,
            last_hash: self.last_seq.map(|_| self.prev_hash.to_hex()),
            checkpoints: self.checkpoints_read,
            checkpoints_valid: self.checkpoints.len() as u64,
            problems,
        }
    }
}

fn check_checkpoint(stored: &StoredCheckpoint, verifier: &dyn BlobVerifier) -> Result<Checkpoint, Problem> {
    let seq = u64::try_from(stored.seq).unwrap_or(0);
    let problem = |kind| Problem { seq, kind };
    let malformed = |what: &str| problem(ProblemKind::Malformed { what: format!("checkpoint {what}") });
    let hash = EntryHash::from_hex(&stored.hash).ok_or_else(|| malformed("hash is not 64 hex digits"))?;
    let signed: SignedBlob =
        serde_json::from_str(&stored.signed).map_err(|e| malformed(&format!("signature: {e}")))?;
    // Judged at the checkpoint's time; a stored time other than the signed one fails the body
    // check below.
    let signed_at = u64::try_from(stored.time_ms)
        .ok()
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms)))
        .ok_or_else(|| malformed("time is before 1970"))?;
    verifier
        .verify_signed_at(&signed, signed_at)
        .map_err(|e| problem(ProblemKind::CheckpointSignature { reason: e.to_string() }))?;
    if seq == 0 || signed.body != checkpoint_body(seq, hash, stored.time_ms) {
        return Err(problem(ProblemKind::CheckpointBody));
    }
    Ok(Checkpoint { seq, hash, time_ms: stored.time_ms, signed })
}

/// Verifies the log in `pool`, streaming its entries (memory stays bounded), against its own
/// checkpoints and `anchors`: checkpoints of this log kept elsewhere (exported earlier with
/// [`crate::audit::AuditLog::checkpoints`]), which still catch a log truncated together with
/// its checkpoints.
pub async fn verify_pool(
    pool: &AnyPool,
    verifier: &dyn BlobVerifier,
    anchors: &[StoredCheckpoint],
) -> Result<VerifyReport, AuditError> {
    let mut checkpoints = store::checkpoints(pool).await?;
    checkpoints.extend_from_slice(anchors);
    let mut chain = ChainVerifier::new(&checkpoints, verifier);
    let mut rows = store::stream_raw(pool);
    while let Some(raw) = rows.try_next().await? {
        chain.push(&raw);
    }
    Ok(chain.finish())
}

/// Verifies the log in a SQLite file without writing to it (opened read-only, no migration);
/// `anchors` as for [`verify_pool`]. A copy of a live WAL-mode file must include its `-wal`.
pub async fn verify_file(
    path: &Path,
    verifier: &dyn BlobVerifier,
    anchors: &[StoredCheckpoint],
) -> Result<VerifyReport, AuditError> {
    let pool = crate::db::open_read_only(path).await?;
    let report = verify_pool(&pool, verifier, anchors).await;
    pool.close().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::tests::sample;
    use crate::signing::{BlobSigner, KeyPairSigner};

    fn chain(n: u64) -> Vec<RawEntry> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let raw = sample(seq as i64, Some("bus-routes")).to_raw(seq, prev).expect("raw");
                prev = EntryHash::from_hex(&raw.hash).expect("hash");
                raw
            })
            .collect()
    }

    fn checkpoint(signer: &KeyPairSigner, raw: &RawEntry) -> StoredCheckpoint {
        let hash = EntryHash::from_hex(&raw.hash).expect("hash");
        let body = checkpoint_body(raw.seq as u64, hash, 0);
        let signed = signer.sign(&body).expect("sign");
        StoredCheckpoint {
            seq: raw.seq,
            hash: raw.hash.clone(),
            time_ms: 0,
            signed: serde_json::to_string(&signed).expect("json"),
        }
    }

    fn run(rows: &[RawEntry], checkpoints: &[StoredCheckpoint], signer: &KeyPairSigner) -> VerifyReport {
        let mut verifier = ChainVerifier::new(checkpoints, &signer.verifier());
        rows.iter().for_each(|r| verifier.push(r));
        verifier.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let signer = KeyPairSigner::generate().expect("key");
        let rows = chain(5);
        let report = run(&rows, &[checkpoint(&signer, &rows[2])], &signer);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.entries, report.last_seq, report.checkpoints_valid), (5, Some(5), 1));
    }

    #[test]
    fn duplicate_seq_is_named() {
        let signer = KeyPairSigner::generate().expect("key");
        let mut rows = chain(5);
        rows.insert(3, rows[2].clone());
        let report = run(&rows, &[], &signer);
        assert_eq!(
            report.first_problem(),
            Some(&Problem { seq: 3, kind: ProblemKind::UnexpectedSeq { previous: 3 } })
        );
    }

    #[test]
    fn checkpoint_signed_by_another_key_is_named() {
        let signer = KeyPairSigner::generate().expect("key");
        let other = KeyPairSigner::generate().expect("key");
        let rows = chain(4);
        let report = run(&rows, &[checkpoint(&other, &rows[1])], &signer);
        let first = report.first_problem().expect("problem");
        assert_eq!(first.seq, 2);
        assert!(matches!(first.kind, ProblemKind::CheckpointSignature { .. }), "{first:?}");
    }

    #[test]
    fn checkpoint_whose_row_was_edited_is_named() {
        let signer = KeyPairSigner::generate().expect("key");
        let rows = chain(4);
        let mut stored = checkpoint(&signer, &rows[1]);
        stored.time_ms = 99;
        let report = run(&rows, &[stored], &signer);
        assert_eq!(report.first_problem(), Some(&Problem { seq: 2, kind: ProblemKind::CheckpointBody }));
    }

    #[test]
    fn malformed_hash_is_named() {
        let signer = KeyPairSigner::generate().expect("key");
        let mut rows = chain(3);
        rows[1].prev_hash = "zz".into();
        let report = run(&rows, &[], &signer);
        assert_eq!(report.first_problem().map(|p| p.seq), Some(2));
    }
}
