//! [`TableError`]: why a row-level kernel ([`crate::canonical`], [`crate::sorted`],
//! [`crate::delta`]) failed, typed by what the caller decides.
//!
//! - `Io`: the local disk failed (retry, alert an operator).
//! - `Parquet`, `SchemaMismatch`, `KeysOutOfOrder`, `RowCountMismatch`: an input file is not what
//!   a ferry snapshot or delta must be (corrupt, truncated, wrong columns, unsorted, a footer that
//!   misstates its row count): refuse the version, fetch again.
//! - `InconsistentDelta`, `DuplicateKey`: the files are well-formed but do not fit together; the
//!   peer that produced them is wrong, so the result would be a different table.
//! - `InvalidArgument`: the caller's own mistake (no key columns, no files).
//! - `Arrow`: an in-memory kernel failed (e.g. a batch over arrow's 2 GiB offset limit).

use std::io;
use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// Why a delta or a canonical write failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `path` is not readable (or writable) as Parquet: not Parquet at all, truncated, corrupt
    /// pages, or invalid writer settings (then `path` is the output directory).
    #[error("Parquet file {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("processing batches: {0}")]
    Arrow(#[from] ArrowError),
    /// `file` has other columns (names, types, nullability or metadata) than the others of the
    /// same operation; `difference` names the first difference.
    #[error("schema of {} differs: {difference}", file.display())]
    SchemaMismatch { file: PathBuf, difference: String },
    /// Row `row` (0-based, counted within `file`) has a key not greater than the row before it
    /// (which may be the last row of the previous file): duplicate or unsorted keys.
    #[error("keys out of order (or duplicate) in {} at row {row}", file.display())]
    KeysOutOfOrder { file: PathBuf, row: u64 },
    /// The footer of `file` misstates its row count: it declares `declared` rows for `part`
    /// (`the file` or `row group N`, 0-based) where a count that does not trust that claim finds
    /// `found` (`counted` says which: the values of a column chunk, the rows of the row groups,
    /// or the rows decoded).
    #[error(
        "{}: the Parquet footer declares {declared} rows for {part}, but there are {found} {counted}",
        file.display()
    )]
    RowCountMismatch { file: PathBuf, part: String, declared: i64, found: i64, counted: String },
    /// A delta does not fit its base; `key` is shown as `(name=value, …)`.
    #[error("delta does not fit the base at key {key}: {problem}")]
    InconsistentDelta { key: String, problem: DeltaProblem },
    /// Appended rows repeat a key of the base; `key` is shown as `(name=value, …)`.
    #[error("appended row repeats key {key} of the base")]
    DuplicateKey { key: String },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
}

/// How a delta contradicts its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeltaProblem {
    #[error("deletes a key the base does not have")]
    DeleteOfMissingKey,
    #[error("both upserts and deletes the key")]
    UpsertAndDelete,
}

impl TableError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>) -> impl FnOnce(ParquetError) -> Self {
        let path = path.into();
        move |source| Self::Parquet { path, source }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidArgument { reason: reason.into() }
    }
}
