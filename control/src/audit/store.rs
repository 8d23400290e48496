//! The audit log's SQL: one code path for SQLite and PostgreSQL through `sqlx::Any`
//! (`$n` placeholders, BIGINT and TEXT columns only). Tables: `audit_entries`,
//! `audit_checkpoints` (migration `0100_audit.sql`).
//!
//! Neighbours: [`crate::audit::AuditLog`] calls these inside its transactions;
//! [`crate::audit::verify`] streams rows; [`crate::audit::show`] filters them.

use super::AuditError;
use super::entry::{EntryHash, GENESIS_HASH, RawEntry};
use futures::{Stream, StreamExt};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

/// A checkpoint row as stored (and as exported, in JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StoredCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub time_ms: i64,
    /// The [`crate::signing::SignedBlob`] as JSON.
    pub signed: String,
}

/// The entry columns, in the order [`raw_from_row`] reads them, as a literal for `concat!`.
macro_rules! entry_columns {
    () => {
        "seq, time_ms, kind, actor_dept, actor_role, actor_name, actor_serial, dataset, outcome, reason, \
         detail, prev_hash, hash"
    };
}
pub(crate) use entry_columns;

pub(crate) fn raw_from_row(row: &AnyRow) -> Result<RawEntry, sqlx::Error> {
    Ok(RawEntry {
        seq: row.try_get("seq")?,
        time_ms: row.try_get("time_ms")?,
        kind: row.try_get("kind")?,
        actor_dept: row.try_get("actor_dept")?,
        actor_role: row.try_get("actor_role")?,
        actor_name: row.try_get("actor_name")?,
        actor_serial: row.try_get("actor_serial")?,
        dataset: row.try_get("dataset")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// The PostgreSQL advisory lock that orders appenders ("ferry" + 0x0a: the audit log).
const WRITER_LOCK: i64 = 0x6665_7272_7900_000a;

/// PostgreSQL: waits for, and holds until the transaction ends, the audit writers' lock.
pub(crate) async fn lock_writers(conn: &mut AnyConnection) -> Result<(), AuditError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITER_LOCK).execute(&mut *conn).await?;
    Ok(())
}

/// The last entry's seq and hash (`0` and the genesis hash for an empty log).
pub(crate) async fn head(conn: &mut AnyConnection) -> Result<(u64, EntryHash), AuditError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok((0, GENESIS_HASH)) };
    let seq: i64 = row.try_get("seq")?;
    let hash: String = row.try_get("hash")?;
    let corrupt = || AuditError::CorruptHead { seq };
    let hash = EntryHash::from_hex(&hash).ok_or_else(corrupt)?;
    Ok((u64::try_from(seq).map_err(|_| corrupt())?, hash))
}

pub(crate) async fn insert_entry(conn: &mut AnyConnection, raw: &RawEntry) -> Result<(), AuditError> {
    sqlx::query(
        "INSERT INTO audit_entries (seq, time_ms, kind, actor_dept, actor_role, actor_name, actor_serial, \
         dataset, outcome, reason, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(raw.seq)
    .bind(raw.time_ms)
    .bind(&raw.kind)
    .bind(&raw.actor_dept)
    .bind(&raw.actor_role)
    .bind(&raw.actor_name)
    .bind(&raw.actor_serial)
    .bind(raw.dataset.clone())
    .bind(&raw.outcome)
    .bind(&raw.reason)
    .bind(&raw.detail)
    .bind(&raw.prev_hash)
    .bind(&raw.hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The last checkpoint's seq and time.
pub(crate) async fn last_checkpoint(conn: &mut AnyConnection) -> Result<Option<(u64, i64)>, AuditError> {
    let row = sqlx::query("SELECT seq, time_ms FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let seq: i64 = row.try_get("seq")?;
    Ok(Some((u64::try_from(seq).unwrap_or(0), row.try_get("time_ms")?)))
}

pub(crate) async fn insert_checkpoint(
    conn: &mut AnyConnection,
    stored: &StoredCheckpoint,
) -> Result<(), AuditError> {
    sqlx::query("INSERT INTO audit_checkpoints (seq, hash, time_ms, signed) VALUES ($1, $2, $3, $4)")
        .bind(stored.seq)
        .bind(&stored.hash)
        .bind(stored.time_ms)
        .bind(&stored.signed)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every checkpoint, by seq.
pub async fn checkpoints(pool: &AnyPool) -> Result<Vec<StoredCheckpoint>, AuditError> {
    let rows = sqlx::query("SELECT seq, hash, time_ms, signed FROM audit_checkpoints ORDER BY seq")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredCheckpoint {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                time_ms: row.try_get("time_ms")?,
                signed: row.try_get("signed")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(AuditError::from)
}

/// Every entry row, by seq, streamed.
pub(crate) fn stream_raw(pool: &AnyPool) -> impl Stream<Item = Result<RawEntry, AuditError>> + '_ {
    sqlx::query(concat!("SELECT ", entry_columns!(), " FROM audit_entries ORDER BY seq"))
        .fetch(pool)
        .map(|row| Ok(raw_from_row(&row?)?))
}
