//! The audit log: append-only, hash-chained, with periodic signed checkpoints.
//!
//! Every control decision (registration, compliance result, catalog change, publish accepted or
//! refused, read allowed or denied, policy snapshot installed or refused, receipt issued) and
//! every completed transfer is appended as an entry. The ministry keeps its log in the control
//! database, so a catalog change and its entry commit in one transaction
//! ([`AuditLog::append_in`]); a province node, which has no control plane, keeps its own log in
//! a SQLite file of its state directory ([`AuditLog::open`] with a path).
//!
//! # The chain
//!
//! Entries are numbered 1, 2, 3, … (`seq`). Each stores `prev_hash`, the `hash` of the entry
//! before it (32 zero bytes for entry 1), and its own
//! `hash = BLAKE3(canonical encoding)`, where the canonical encoding is, in this order:
//!
//! ```text
//! lp("ferry/audit-entry/v1")          domain tag
//! prev_hash                           32 bytes
//! seq                                 8 bytes, big-endian (signed 64-bit, >= 1)
//! time_ms                             8 bytes, big-endian signed (unix milliseconds)
//! lp(kind)                            stable string, e.g. "publish-refused"
//! lp(actor department) lp(actor role) lp(actor name) lp(actor certificate serial)
//! 0x00 | 0x01 lp(dataset)             absent | present
//! lp(outcome)                         "accepted" | "refused"
//! lp(reason)                          UTF-8, may be empty
//! lp(detail)                          compact JSON text of an object, exactly as stored
//!
//! lp(x) = u32 big-endian byte length of x, then the UTF-8 bytes of x
//! ```
//!
//! Lengths prefix every variable field, so no two different entries encode alike. The hash
//! covers the stored text of each field (not a re-serialization), so any tool holding the
//! database can recompute it; a new entry kind adds a string and changes nothing else.
//!
//! # Writers
//!
//! Appends are serialized: one writer at a time per [`AuditLog`] (a mutex), and each append
//! one transaction that holds the database's write lock before it reads the head: on SQLite
//! `BEGIN IMMEDIATE`, on PostgreSQL a transaction-scoped advisory lock, which also orders
//! several processes and caller transactions on one database. `seq` is the table's primary
//! key besides, so a writer that skipped the lock cannot fork the chain: it gets
//! [`AuditError::Conflict`] and [`AuditLog::append`] retries. A caller that brings its own
//! transaction ([`AuditLog::append_in`]) should open it with [`AuditLog::begin`] on SQLite and
//! retry its whole transaction on `Conflict`; on PostgreSQL the lock is held to its commit.
//!
//! # Checkpoints
//!
//! After every `every_entries` entries, or when an entry comes `every` after the last
//! checkpoint (by entry times), and on demand ([`AuditLog::checkpoint`]), the log signs
//! `{seq, hash, time}` of its head with the [`BlobSigner`] it was given (the ministry's
//! control-plane key, a province's node key). [`verify`] checks the chain and every checkpoint
//! and names the first bad entry.
//!
//! Neighbours: [`crate::db`] opens and migrates the database; [`crate::signing`] defines the
//! signer seam; the catalog writes its entries through [`AuditLog::append_in`]; the daemon
//! reports data-plane outcomes through [`AuditLog::append`].

mod checkpoint;
mod entry;
mod hook;
mod show;
mod store;
pub mod verify;

#[cfg(test)]
mod tests;

pub use checkpoint::{CHECKPOINT_DOMAIN, Checkpoint, CheckpointPolicy, checkpoint_body};
pub use entry::{
    Actor, AuditEntry, CorruptEntry, ENTRY_DOMAIN, EntryError, EntryHash, EntryKind, GENESIS_HASH,
    MAX_DETAIL_LEN, MAX_NAME_LEN, MAX_REASON_LEN, MAX_SERIAL_LEN, NewEntry, Outcome, RawEntry,
    bounded_detail, canonical_encoding, entry_hash,
};
pub use hook::entry_for;
pub use show::{DEFAULT_LIMIT, MAX_LIMIT, ShowFilter, show_pool};
pub use store::StoredCheckpoint;
pub use verify::{ChainVerifier, Problem, ProblemKind, VerifyReport, verify_file, verify_pool};

use crate::db::{self, DbError};
use crate::signing::{BlobSigner, BlobVerifier, SigningError};
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use std::sync::Arc;

/// How many times [`AuditLog::append`] retries after losing a race to another process.
const APPEND_ATTEMPTS: usize = 5;

/// Why an audit operation failed, by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The entry breaks a limit; nothing was written.
    #[error("audit entry refused: {0}")]
    Invalid(#[from] EntryError),
    /// Another writer took the same place in the chain or held the lock: retry the transaction.
    #[error("another writer appended to the audit log at the same time; retry ({0})")]
    Conflict(sqlx::Error),
    /// The database is down, read-only or broken: nothing was written; an operator must act.
    #[error("the audit database failed: {0}")]
    Unavailable(sqlx::Error),
    #[error(transparent)]
    Open(#[from] DbError),
    /// The checkpoint could not be signed: the append was rolled back.
    #[error("cannot sign an audit checkpoint: {0}")]
    Signing(#[from] SigningError),
    /// The log's last entry cannot be read, so nothing can be chained to it: run verify.
    #[error("the audit log's last entry ({seq}) is unreadable; run `ferry audit verify`")]
    CorruptHead { seq: i64 },
    /// A stored entry cannot be read back (see `ferry audit verify`).
    #[error(transparent)]
    Corrupt(#[from] CorruptEntry),
}

impl AuditError {
    /// The database error underneath, for a caller whose own error type sorts sqlx errors (the
    /// catalog store's audit hook); other failures become a protocol error with this message.
    pub fn into_sqlx(self) -> sqlx::Error {
        match self {
            AuditError::Conflict(e) | AuditError::Unavailable(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        if is_conflict(&e) { AuditError::Conflict(e) } else { AuditError::Unavailable(e) }
    }
}

/// A unique-key violation, SQLite busy/locked, or a PostgreSQL serialization failure.
fn is_conflict(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else { return false };
    if db.is_unique_violation() {
        return true;
    }
    // SQLite: 5 BUSY, 6 LOCKED, 517 BUSY_SNAPSHOT; PostgreSQL: 40001, 40P01.
    matches!(db.code().as_deref(), Some("5" | "6" | "517" | "40001" | "40P01"))
}

/// An audit log in one database.
pub struct AuditLog {
    pool: AnyPool,
    signer: Arc<dyn BlobSigner>,
    policy: CheckpointPolicy,
    writer: tokio::sync::Mutex<()>,
    sqlite: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("policy", &self.policy)
            .field("sqlite", &self.sqlite)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A log over an open, migrated pool (the control database).
    pub fn new(pool: AnyPool, signer: Arc<dyn BlobSigner>, policy: CheckpointPolicy) -> Self {
        let sqlite = pool.connect_options().database_url.scheme() == "sqlite";
        Self { pool, signer, policy, writer: tokio::sync::Mutex::new(()), sqlite }
    }

    /// Opens (creating and migrating) the database at `url` — a URL or a SQLite file path —
    /// for a node that keeps its own log.
    pub async fn open(
        url: &str,
        signer: Arc<dyn BlobSigner>,
        policy: CheckpointPolicy,
    ) -> Result<Self, AuditError> {
        Ok(Self::new(db::open(url).await?, signer, policy))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction: on SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so that reading the chain's head and appending cannot deadlock with
    /// another writer. Use it for transactions that call [`Self::append_in`].
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, AuditError> {
        let tx = if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        };
        Ok(tx)
    }

    /// Appends `entry` in its own transaction; retries when another process wins the race.
    pub async fn append(&self, entry: NewEntry) -> Result<AuditEntry, AuditError> {
        let mut appended = self.append_batch(std::slice::from_ref(&entry)).await?;
        // Invariant: a batch of one entry appends exactly one.
        Ok(appended.pop().expect("one entry appended"))
    }

    /// Appends `entries` in order in one transaction (all or none): a busy node drains its queue
    /// of outcomes into one commit instead of one per entry. An invalid entry refuses the whole
    /// batch before anything is written; [`NewEntry::validate`] checks one beforehand.
    pub async fn append_batch(&self, entries: &[NewEntry]) -> Result<Vec<AuditEntry>, AuditError> {
        for entry in entries {
            entry.validate()?;
        }
        let _writer = self.writer.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.append_once(entries).await {
                Err(AuditError::Conflict(_)) if attempt < APPEND_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
                }
                result => return result,
            }
        }
    }

    async fn append_once(&self, entries: &[NewEntry]) -> Result<Vec<AuditEntry>, AuditError> {
        let mut tx = self.begin().await?;
        let mut appended = Vec::with_capacity(entries.len());
        for entry in entries {
            appended.push(self.append_in(&mut tx, entry).await?);
        }
        tx.commit().await?;
        Ok(appended)
    }

    /// Appends `entry` inside the caller's transaction (e.g. with the catalog change it
    /// records): both commit or neither does. May take a checkpoint in the same transaction.
    /// Returns [`AuditError::Conflict`] if another writer raced it: retry the transaction.
    ///
    /// Takes the connection a transaction derefs to: pass `&mut tx` for a
    /// `sqlx::Transaction<'_, Any>`.
    pub async fn append_in(
        &self,
        conn: &mut AnyConnection,
        entry: &NewEntry,
    ) -> Result<AuditEntry, AuditError> {
        if !self.sqlite {
            store::lock_writers(conn).await?;
        }
        let (head_seq, head_hash) = store::head(conn).await?;
        let seq = head_seq + 1;
        let raw = entry.to_raw(seq, head_hash)?;
        store::insert_entry(conn, &raw).await?;
        let hash = EntryHash::from_hex(&raw.hash).ok_or(AuditError::CorruptHead { seq: raw.seq })?;
        if self.policy.due(seq, entry.time_ms, store::last_checkpoint(conn).await?) {
            self.write_checkpoint(conn, seq, hash, entry.time_ms).await?;
        }
        Ok(AuditEntry {
            seq,
            time_ms: entry.time_ms,
            kind: entry.kind,
            actor: entry.actor.clone(),
            dataset: entry.dataset.clone(),
            outcome: entry.outcome,
            reason: entry.reason.clone(),
            detail: entry.detail.clone(),
            prev_hash: head_hash,
            hash,
        })
    }

    async fn write_checkpoint(
        &self,
        conn: &mut AnyConnection,
        seq: u64,
        hash: EntryHash,
        time_ms: i64,
    ) -> Result<Checkpoint, AuditError> {
        let signed = self.signer.sign(&checkpoint_body(seq, hash, time_ms))?;
        let stored = StoredCheckpoint {
            seq: i64::try_from(seq).map_err(|_| AuditError::CorruptHead { seq: i64::MAX })?,
            hash: hash.to_hex(),
            time_ms,
            // Invariant: a SignedBlob is plain data; serializing it to JSON cannot fail.
            signed: serde_json::to_string(&signed).expect("SignedBlob serializes"),
        };
        store::insert_checkpoint(conn, &stored).await?;
        Ok(Checkpoint { seq, hash, time_ms, signed })
    }

    /// Signs a checkpoint of the current head now (e.g. on a timer, or before exporting the
    /// log). `None` when the log is empty or its head already has one.
    pub async fn checkpoint(&self, now_ms: i64) -> Result<Option<Checkpoint>, AuditError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let (seq, hash) = store::head(&mut tx).await?;
        let last = store::last_checkpoint(&mut tx).await?;
        if seq == 0 || last.is_some_and(|(last_seq, _)| last_seq >= seq) {
            return Ok(None);
        }
        let checkpoint = self.write_checkpoint(&mut tx, seq, hash, now_ms).await?;
        tx.commit().await?;
        Ok(Some(checkpoint))
    }

    /// The last entry's seq and hash (`0` and [`GENESIS_HASH`] when empty).
    pub async fn head(&self) -> Result<(u64, EntryHash), AuditError> {
        let mut conn = self.pool.acquire().await?;
        store::head(&mut conn).await
    }

    /// Verifies the whole log and every checkpoint; see [`verify`].
    pub async fn verify(&self, verifier: &dyn BlobVerifier) -> Result<VerifyReport, AuditError> {
        verify_pool(&self.pool, verifier, &[]).await
    }

    /// Every signed checkpoint, by seq: export them (to the ministry, to a file) as anchors for
    /// a later [`verify_pool`] or [`verify_file`].
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, AuditError> {
        store::checkpoints(&self.pool).await
    }

    /// Signs a checkpoint of the head every `every` (when the head has moved), so entries after
    /// the last count-based checkpoint are covered within `every` even if no more come. `now_ms`
    /// reads the clock. The task ends when the log is dropped or the handle is aborted; a failed
    /// checkpoint is logged and tried again at the next tick.
    pub fn spawn_checkpoint_timer(
        self: &Arc<Self>,
        every: std::time::Duration,
        now_ms: impl Fn() -> i64 + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let log = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(log) = log.upgrade() else { return };
                if let Err(error) = log.checkpoint(now_ms()).await {
                    tracing::warn!(%error, "audit checkpoint failed; retrying at the next tick");
                }
            }
        })
    }

    /// Entries matching `filter`, newest first.
    pub async fn show(&self, filter: &ShowFilter) -> Result<Vec<AuditEntry>, AuditError> {
        show_pool(&self.pool, filter).await
    }
}
