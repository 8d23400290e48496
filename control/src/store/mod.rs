//! The control store: one `sqlx::Any` pool over SQLite (a file, the default) or PostgreSQL (by
//! URL), opened and migrated by [`crate::db`], with the roles it checks and the audit hook it
//! calls inside its transactions.
//!
//! Why `Any` and not an enum of two pools: every statement of the catalog is portable SQL
//! (`$n` placeholders, BIGINT and TEXT columns, `ON CONFLICT`), so one code path serves both
//! backends; only the online backup differs ([`ControlStore::backup`]).
//!
//! Times are stored as BIGINT unix seconds (UTC). Writes that belong together (a catalog
//! version, its notices, its receipt facts, the policy serial, the audit entry) happen in one
//! transaction; an error anywhere rolls all of it back. Neighbours: [`crate::catalog`]
//! implements the catalog operations on this store; [`crate::roles`] says who may call them.

mod error;

pub use error::StoreError;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool};
use time::OffsetDateTime;

use crate::db::DbError;
use crate::roles::{Action, Roles};

/// A control decision the store makes, handed to the [`AuditHook`] inside its transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlEvent {
    pub kind: ControlEventKind,
    pub dataset: DatasetId,
    /// The department that asked.
    pub dept: DeptId,
    /// Who asked: the principal of the caller's certificate (department, role, name, serial).
    #[serde(skip)]
    pub actor: ferry_proto::Principal,
    pub catalog_version: Option<u64>,
    /// Unix seconds, UTC.
    pub at: i64,
    /// Facts of the decision (the compliance report of a refusal, the effective date, …).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlEventKind {
    Registered,
    RegistrationRefused,
    Published,
}

/// Writes [`ControlEvent`]s into a log in the caller's transaction (the audit log implements
/// it); an error aborts the whole write.
pub trait AuditHook: Send + Sync {
    fn append<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        event: &'c ControlEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

    /// Writes an entry built by the caller (decisions that concern a department or a grant
    /// rather than one catalog event: revocations, feedback, quality issues, notices).
    fn append_entry<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        entry: &'c crate::audit::NewEntry,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The ministry's control store.
#[derive(Clone)]
pub struct ControlStore {
    pool: AnyPool,
    backend: Backend,
    pub(crate) roles: Roles,
    audit: Option<Arc<dyn AuditHook>>,
    /// Working days for review deadlines (the shipped years unless [`Self::with_calendar`]).
    calendar: Arc<crate::calendar::Calendar>,
}

impl std::fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlStore").field("backend", &self.backend).field("roles", &self.roles).finish()
    }
}

impl ControlStore {
    /// Opens and migrates the store at `url` (`postgres://…`, `sqlite://…` or a file path).
    pub async fn open(url: &str, roles: Roles) -> Result<Self, StoreError> {
        let backend = if url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
        let pool = crate::db::open(url).await.map_err(from_db_error)?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it persists in the file. A read-only
            // file keeps its mode, which is fine for reading.
            match sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.map_err(StoreError::from) {
                Ok(_) | Err(StoreError::ReadOnly(_)) => {}
                Err(other) => return Err(other),
            }
        }
        // The shipped files are parsed by a unit test; an empty calendar refuses every deadline.
        let calendar = Arc::new(crate::calendar::Calendar::shipped().unwrap_or_default());
        Ok(Self { pool, backend, roles, audit: None, calendar })
    }

    /// Opens a SQLite file, created (with its directory's permission) if missing.
    pub async fn open_sqlite(path: &Path, roles: Roles) -> Result<Self, StoreError> {
        Self::open(&crate::db::sqlite_url(path), roles).await
    }

    /// Counts review deadlines on `calendar` (the shipped years plus an operator's directory).
    pub fn with_calendar(mut self, calendar: crate::calendar::Calendar) -> Self {
        self.calendar = Arc::new(calendar);
        self
    }

    pub fn calendar(&self) -> &crate::calendar::Calendar {
        &self.calendar
    }

    /// Calls `hook` with every decision, inside the decision's transaction.
    pub fn with_audit(mut self, hook: Arc<dyn AuditHook>) -> Self {
        self.audit = Some(hook);
        self
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Opens a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes fails with `SQLITE_BUSY`
    /// when another writer (the audit log's) got there first, rather than waiting.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// Online backup into `dest` (must not exist). SQLite: `VACUUM INTO`, a consistent copy
    /// while the store keeps serving. PostgreSQL: [`StoreError::Unsupported`] — `pg_dump` is the
    /// tool, run by the database's operator against the same URL.
    pub async fn backup(&self, caller: &Principal, dest: &Path) -> Result<(), StoreError> {
        self.roles.authorize(caller, Action::Backup, None)?;
        if self.backend == Backend::Postgres {
            return Err(StoreError::Unsupported(
                "online backup of PostgreSQL: use pg_dump on the store's URL".into(),
            ));
        }
        if dest.exists() {
            return Err(StoreError::Conflict(format!("backup destination {} exists", dest.display())));
        }
        let dest = dest.to_str().ok_or_else(|| StoreError::Unsupported("backup path is not UTF-8".into()))?;
        sqlx::query("VACUUM INTO $1").bind(dest.to_owned()).execute(&self.pool).await?;
        Ok(())
    }

    /// Appends `entry` in the caller's transaction (see [`AuditHook::append_entry`]).
    pub(crate) async fn audit_entry(
        &self,
        conn: &mut AnyConnection,
        entry: &crate::audit::NewEntry,
    ) -> Result<(), StoreError> {
        match &self.audit {
            Some(hook) => hook.append_entry(conn, entry).await.map_err(StoreError::from),
            None => Ok(()),
        }
    }

    pub(crate) async fn audit(
        &self,
        conn: &mut AnyConnection,
        event: ControlEvent,
    ) -> Result<(), StoreError> {
        match &self.audit {
            Some(hook) => hook.append(conn, &event).await.map_err(StoreError::from),
            None => Ok(()),
        }
    }
}

/// Bumps the policy serial; every change of catalog state calls it in its transaction.
pub(crate) async fn bump_policy_serial(conn: &mut AnyConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE policy_serial SET serial = serial + 1 WHERE id = 1").execute(conn).await?;
    Ok(())
}

pub(crate) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

pub(crate) fn from_unix(seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {seconds}: {e}")))
}

fn from_db_error(error: DbError) -> StoreError {
    match error {
        DbError::Connect { url, source } => match StoreError::from_sqlx(source) {
            StoreError::Database(message) => StoreError::Unavailable(format!("{url}: {message}")),
            typed => typed,
        },
        DbError::Migrate { url, source } => match source {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from_sqlx(e),
            other => StoreError::Database(format!("migrating {url}: {other}")),
        },
    }
}
