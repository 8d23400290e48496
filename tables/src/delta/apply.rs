//! The consumer's side of a delta: [`apply`] rebuilds a snapshot from a base and a delta, and
//! [`append`] merges new rows of append-only data into a base. Both are streaming merges that
//! hand runs of rows (zero-copy slices) to one [`CanonicalWriter`]; runs are found by binary
//! search of the other streams' current keys in the current batch, so unchanged stretches of
//! the base cost no per-row work beyond the order check of [`crate::sorted`].

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use arrow::row::Row;

use super::{Cursor, same_schema};
use crate::canonical::{CanonicalWriter, WriteOptions, WrittenFile, schema_difference};
use crate::error::{DeltaProblem, TableError};

/// The smaller of two optional keys (`None` is the end of a stream, above every key).
fn min_key<'a>(a: Option<Row<'a>>, b: Option<Row<'a>>) -> Option<Row<'a>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn key_of(cursor: Option<&Cursor>) -> Option<Row<'_>> {
    cursor.and_then(Cursor::key)
}

/// Writes the next `n` rows of `cursor` and moves past them.
fn copy_run(cursor: &mut Cursor, n: usize, writer: &mut CanonicalWriter) -> Result<(), TableError> {
    if let Some(rows) = cursor.slice(n) {
        writer.write(&rows)?;
    }
    cursor.advance(n)?;
    Ok(())
}

fn inconsistent(cursor: &Cursor, problem: DeltaProblem) -> TableError {
    TableError::InconsistentDelta { key: cursor.describe_key(), problem }
}

/// Checks that the key columns of the deletes stream are those of the base.
fn check_delete_keys(base: &Cursor, deletes: &Cursor) -> Result<(), TableError> {
    let expected = std::sync::Arc::new(base.schema().project(base.key_indices())?);
    let actual = std::sync::Arc::new(deletes.schema().project(deletes.key_indices())?);
    let fields_differ =
        expected.fields() != actual.fields() || deletes.schema().fields().len() != expected.fields().len();
    if fields_differ {
        let difference =
            schema_difference(&expected, deletes.schema()).unwrap_or_else(|| "extra columns".to_owned());
        return Err(TableError::SchemaMismatch { file: deletes.first_path(), difference });
    }
    Ok(())
}

/// Which stream holds the smallest current key in [`apply`].
enum Next {
    Done,
    Delete,
    Upsert { replaces_base: bool },
    Base,
}

fn next_step(base: &Cursor, upserts: Option<&Cursor>, deletes: Option<&Cursor>) -> Result<Next, TableError> {
    let (b, u, d) = (base.key(), key_of(upserts), key_of(deletes));
    let Some(min) = min_key(min_key(b, u), d) else { return Ok(Next::Done) };
    if d == Some(min) {
        let Some(deletes) = deletes else { return Ok(Next::Done) };
        if u == Some(min) {
            return Err(inconsistent(deletes, DeltaProblem::UpsertAndDelete));
        }
        if b != Some(min) {
            return Err(inconsistent(deletes, DeltaProblem::DeleteOfMissingKey));
        }
        return Ok(Next::Delete);
    }
    if u == Some(min) {
        return Ok(Next::Upsert { replaces_base: b == Some(min) });
    }
    Ok(Next::Base)
}

/// Rebuilds a snapshot from `base` (at least one file) and a delta ([`super::diff`]'s `upserts` and `deletes`; either
/// list may be empty) into `part-NNNNN.parquet` files in `out_dir` (which must exist).
///
/// A delete of a key the base lacks, or a key both upserted and deleted, is
/// [`TableError::InconsistentDelta`]: a delta that does not fit its base is refused rather than
/// turned into some other table.
pub fn apply(
    base: &[PathBuf],
    upserts: &[PathBuf],
    deletes: &[PathBuf],
    key_columns: &[String],
    out_dir: &Path,
    opts: &WriteOptions,
) -> Result<Vec<WrittenFile>, TableError> {
    let mut base = Cursor::open(base, key_columns, opts.batch_rows)?;
    let mut upserts = Cursor::open_optional(upserts, key_columns, opts.batch_rows)?;
    let mut deletes = Cursor::open_optional(deletes, key_columns, opts.batch_rows)?;
    let schema = base.schema().clone();
    if let Some(upserts) = &upserts {
        same_schema(&schema, upserts)?;
    }
    if let Some(deletes) = &deletes {
        check_delete_keys(&base, deletes)?;
    }
    let mut writer = CanonicalWriter::new(out_dir, "part", schema, key_columns, opts)?;
    loop {
        match next_step(&base, upserts.as_ref(), deletes.as_ref())? {
            Next::Done => break,
            Next::Delete => {
                base.advance(1)?;
                if let Some(deletes) = deletes.as_mut() {
                    deletes.advance(1)?;
                }
            }
            Next::Upsert { replaces_base } => {
                let Some(ups) = upserts.as_mut() else { break };
                let n = if replaces_base {
                    1
                } else {
                    ups.run_below(min_key(base.key(), key_of(deletes.as_ref())))
                };
                copy_run(ups, n, &mut writer)?;
                if replaces_base {
                    base.advance(1)?;
                }
            }
            Next::Base => {
                let n = base.run_below(min_key(key_of(upserts.as_ref()), key_of(deletes.as_ref())));
                copy_run(&mut base, n, &mut writer)?;
            }
        }
    }
    writer.finish()
}

/// Merges `new_rows` (key-sorted, the base's schema; may be empty) into `base` for append-only
/// data, writing `part-NNNNN.parquet` files into `out_dir`. A new row whose key the base already
/// has is [`TableError::DuplicateKey`].
pub fn append(
    base: &[PathBuf],
    new_rows: &[PathBuf],
    key_columns: &[String],
    out_dir: &Path,
    opts: &WriteOptions,
) -> Result<Vec<WrittenFile>, TableError> {
    let mut base = Cursor::open(base, key_columns, opts.batch_rows)?;
    let mut new = Cursor::open_optional(new_rows, key_columns, opts.batch_rows)?;
    let schema = base.schema().clone();
    if let Some(new) = &new {
        same_schema(&schema, new)?;
    }
    let mut writer = CanonicalWriter::new(out_dir, "part", schema, key_columns, opts)?;
    loop {
        let (b, n) = (base.key(), key_of(new.as_ref()));
        let order = match (b, n) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(b), Some(n)) => b.cmp(&n),
        };
        match order {
            Ordering::Less => {
                let run = base.run_below(key_of(new.as_ref()));
                copy_run(&mut base, run, &mut writer)?;
            }
            Ordering::Greater => {
                let Some(new) = new.as_mut() else { break };
                let run = new.run_below(base.key());
                copy_run(new, run, &mut writer)?;
            }
            Ordering::Equal => {
                let key = new.as_ref().map_or_else(|| base.describe_key(), Cursor::describe_key);
                return Err(TableError::DuplicateKey { key });
            }
        }
    }
    writer.finish()
}
