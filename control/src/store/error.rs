//! What can go wrong in the control store, typed by what the caller must decide.
//!
//! A database error is sorted here once ([`StoreError::from_sqlx`]): unreachable, read-only,
//! a conflicting concurrent write, or something else. Neighbours: every store operation returns
//! it; the daemon maps it to a wire error code.

use ferry_proto::{DatasetId, DeptId, Role};
use ferry_tables::catalog::ComplianceReport;
use time::OffsetDateTime;

use crate::roles::Action;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened (down, wrong URL, no such directory).
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// The database refuses writes (read-only file or replica).
    #[error("control store is read-only: {0}")]
    ReadOnly(String),
    /// A concurrent or duplicate write collided with this one; nothing was written.
    #[error("conflicting write, nothing was changed: {0}")]
    Conflict(String),
    /// No such dataset, version or row (or one the caller may not see).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{dept} ({role}) may not {}", action.as_str())]
    Forbidden { action: Action, dept: DeptId, role: Role },
    /// The entry failed the compliance check; the refusal was recorded.
    #[error("catalog entry failed the compliance check:\n{0}")]
    ComplianceFailed(ComplianceReport),
    /// The dataset id is bound to another provider (Art. 8; one id, one provider, forever).
    #[error("dataset {dataset} is provided by {provider}; its id cannot be registered by another department")]
    ProviderBound { dataset: DatasetId, provider: DeptId },
    /// The effective date is too early (Art. 9 change control, or before now / the previous version).
    #[error("effective date too early ({reason}); the earliest allowed is {earliest}")]
    TooEarly { earliest: OffsetDateTime, reason: String },
    /// The request is malformed or names something impossible (a quality grade of 9, an empty
    /// reason, a finding code that does not exist); nothing was written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The operation does not exist for this backend.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A stored row no longer parses (edited by hand, or written by a newer ferry).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other database failure (a migration included).
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// Sorts a sqlx error by what the caller can do about it.
    pub fn from_sqlx(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let message = db.message().to_owned();
                if db.is_unique_violation() || db.is_foreign_key_violation() || db.is_check_violation() {
                    Self::Conflict(message)
                } else if is_read_only(&code, &message) {
                    Self::ReadOnly(message)
                } else if is_unopenable(&code) {
                    Self::Unavailable(message)
                } else {
                    Self::Database(format!("{message} (code {code})"))
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Configuration(_) => Self::Unavailable(error.to_string()),
            sqlx::Error::RowNotFound => Self::NotFound(error.to_string()),
            other => Self::Database(other.to_string()),
        }
    }
}

/// SQLite's SQLITE_READONLY (8) and its extended codes; PostgreSQL's 25006.
fn is_read_only(code: &str, message: &str) -> bool {
    code == "25006"
        || code.parse::<u32>().is_ok_and(|c| c & 0xff == 8)
        || message.contains("readonly database")
}

/// SQLite's SQLITE_CANTOPEN (14) and PostgreSQL's connection failures (08xxx).
fn is_unopenable(code: &str) -> bool {
    code.starts_with("08") || code.parse::<u32>().is_ok_and(|c| c & 0xff == 14)
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::from_sqlx(error)
    }
}
