//! Row-level deltas between two versions of a key-sorted table: [`diff`] finds, by key, the
//! rows inserted, updated and deleted; [`apply`] rebuilds the new version from the old one and a
//! delta; [`append`] merges new rows of append-only event data into a base.
//!
//! Neighbours: inputs are canonical snapshots ([`crate::canonical`] files, e.g. from
//! [`crate::source::write_sorted_parquet`]), read through [`crate::sorted::SortedFilesReader`],
//! which proves key order; outputs go through [`CanonicalWriter`], so `apply(old, diff(old,
//! new))` writes files byte-identical to `new`'s when both sides use the same [`WriteOptions`]
//! (the provider's manifest hashes then prove the consumer holds the provider's table).
//!
//! ## A delta
//! - `upserts-NNNNN.parquet`: full rows (the new schema) whose key is new, or whose non-key
//!   values differ, in key order.
//! - `deletes-NNNNN.parquet`: the key columns of rows whose key is gone, in key order.
//!
//! ## Equality of rows
//! Two rows with equal keys are equal when every non-key column is equal, null being equal to
//! null and never to a value (arrow's `not_distinct`; nested columns compare by their row-format
//! encoding). Floats compare by IEEE 754 totalOrder, that is by bit pattern: `-0.0` differs from
//! `0.0` and NaN equals only a NaN with the same bits. This is stricter than `==` on purpose: a
//! value whose bits change must reach the consumer, or its rebuilt file would hash differently.
//!
//! ## Streaming and memory
//! All three functions are merges over key-sorted streams. [`diff_stream`] is [`diff`] with its
//! new side taken from the rows a table writer is writing (`stream`: a publish's sort taps its
//! writer), so the table just written is not read back; its delta is the same, byte for byte.
//! Each input read from files is decoded on a thread of
//! its own ([`crate::sorted::PrefetchedReader`]) and holds its current batch plus at most
//! [`PREFETCH_BATCHES`] decoded ahead, each of at most `batch_rows` rows (plus their encoded
//! keys and the Parquet reader's current pages); each
//! writer holds at most `batch_rows` pending rows referencing at most
//! [`crate::canonical::MAX_LOOSE_PARTS`] input batches, plus its current row group encoded
//! (≈ `row_group_rows` × the compressed row width). [`diff`] also keeps, per input, the indices
//! of the selected rows of its current batch. So memory is
//! O((inputs × (2 + PREFETCH_BATCHES) + MAX_LOOSE_PARTS) × batch_rows × row width + writers ×
//! row_group_rows × compressed row width), independent of the table size.
//!
//! ## Failures
//! An error leaves the inputs untouched and no `.tmp` file in `out_dir`, but output files
//! finished before it stay there (`out_dir` is the caller's staging directory). Input files are
//! checked as they are read, so a file is refused when its turn comes: a footer that contradicts
//! itself about the row count when the file is opened, rows decoded that differ from the footer's
//! count at the file's end ([`TableError::RowCountMismatch`], see [`crate::sorted`]).

mod apply;
pub mod prints;
mod stream;

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::not_distinct;
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{Row, RowConverter, SortField};

pub use apply::{append, apply};
pub use stream::{DiffBase, StreamDiff, StreamDiffError, TapReceiver, TapSender, diff_stream, tap_channel};

use crate::canonical::{CanonicalWriter, WriteOptions, WrittenFile, schema_difference};
use crate::error::TableError;
use crate::sorted::{KeyedBatch, SortedFilesReader, format_key};

/// Batches each input decodes ahead of the merge, on its own thread.
pub const PREFETCH_BATCHES: usize = 2;

/// Row counts of a delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    pub old_rows: u64,
    pub new_rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

impl DeltaStats {
    /// True when the two versions hold the same rows.
    pub fn is_empty(&self) -> bool {
        self.inserted == 0 && self.updated == 0 && self.deleted == 0
    }
}

/// The files of a delta written by [`diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaFiles {
    pub upserts: Vec<WrittenFile>,
    pub deletes: Vec<WrittenFile>,
    pub stats: DeltaStats,
}

/// Key-sorted batches, proven in order, as a [`Cursor`] reads them.
pub(crate) type KeyedBatches = Box<dyn Iterator<Item = Result<KeyedBatch, TableError>>>;

/// A position in a sorted stream: the current batch and row.
pub(crate) struct Cursor {
    reader: KeyedBatches,
    schema: SchemaRef,
    key_indices: Vec<usize>,
    /// The stream's first file, or what stands for it in messages.
    first_path: PathBuf,
    current: Option<KeyedBatch>,
    pos: usize,
    rows: u64,
}

impl Cursor {
    pub(crate) fn open(
        paths: &[PathBuf],
        key_columns: &[String],
        batch_rows: usize,
    ) -> Result<Self, TableError> {
        let reader = SortedFilesReader::open(paths, key_columns, batch_rows)?.prefetch(PREFETCH_BATCHES)?;
        let (schema, key_indices) = (reader.schema().clone(), reader.key_indices().to_vec());
        let first_path = reader.paths().first().cloned().unwrap_or_default();
        Self::of(Box::new(reader), schema, key_indices, first_path)
    }

    /// A cursor over `reader`'s batches, which have `schema` and their keys at `key_indices`.
    pub(crate) fn of(
        reader: KeyedBatches,
        schema: SchemaRef,
        key_indices: Vec<usize>,
        first_path: PathBuf,
    ) -> Result<Self, TableError> {
        let mut cursor = Self { reader, schema, key_indices, first_path, current: None, pos: 0, rows: 0 };
        cursor.load_next()?;
        Ok(cursor)
    }

    /// Opens a stream only if there are files.
    pub(crate) fn open_optional(
        paths: &[PathBuf],
        key_columns: &[String],
        batch_rows: usize,
    ) -> Result<Option<Self>, TableError> {
        if paths.is_empty() { Ok(None) } else { Self::open(paths, key_columns, batch_rows).map(Some) }
    }

    fn load_next(&mut self) -> Result<(), TableError> {
        self.current = self.reader.next().transpose()?;
        self.pos = 0;
        if let Some(keyed) = &self.current {
            self.rows += keyed.batch.num_rows() as u64;
        }
        Ok(())
    }

    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub(crate) fn key_indices(&self) -> &[usize] {
        &self.key_indices
    }

    pub(crate) fn first_path(&self) -> PathBuf {
        self.first_path.clone()
    }

    /// The key of the current row, `None` at the end.
    pub(crate) fn key(&self) -> Option<Row<'_>> {
        self.current.as_ref().map(|keyed| keyed.keys.row(self.pos))
    }

    /// The row prints of the current batch, when the stream has them.
    pub(crate) fn prints(&self) -> Option<&[u64]> {
        self.current.as_ref().and_then(|keyed| keyed.prints.as_deref())
    }

    /// The current batch (`None` at the end) and the current row in it.
    pub(crate) fn batch(&self) -> Option<(&RecordBatch, usize)> {
        self.current.as_ref().map(|keyed| (&keyed.batch, self.pos))
    }

    /// Rows from the current one to the end of the current batch whose key is below `bound`
    /// (all of them when `bound` is `None`).
    pub(crate) fn run_below(&self, bound: Option<Row<'_>>) -> usize {
        let Some(keyed) = &self.current else { return 0 };
        let len = keyed.batch.num_rows();
        let Some(bound) = bound else { return len - self.pos };
        let mut low = self.pos;
        let mut high = len;
        while low < high {
            let mid = low + (high - low) / 2;
            if keyed.keys.row(mid) < bound { low = mid + 1 } else { high = mid }
        }
        low - self.pos
    }

    /// The next `n` rows of the current batch (`n` must not pass its end).
    pub(crate) fn slice(&self, n: usize) -> Option<RecordBatch> {
        self.current.as_ref().map(|keyed| keyed.batch.slice(self.pos, n))
    }

    /// Moves `n` rows on within the current batch; returns the batch when it is used up.
    pub(crate) fn advance(&mut self, n: usize) -> Result<Option<KeyedBatch>, TableError> {
        self.pos += n;
        let used_up = self.current.as_ref().is_some_and(|keyed| self.pos >= keyed.batch.num_rows());
        if !used_up {
            return Ok(None);
        }
        let retired = self.current.take();
        self.load_next()?;
        Ok(retired)
    }

    /// The current key as `(name=value, …)`.
    pub(crate) fn describe_key(&self) -> String {
        match &self.current {
            Some(keyed) => format_key(&keyed.batch, self.key_indices(), self.pos),
            None => "(end)".to_owned(),
        }
    }
}

/// Checks that `other`'s schema equals `expected`.
pub(crate) fn same_schema(expected: &SchemaRef, other: &Cursor) -> Result<(), TableError> {
    match schema_difference(expected, other.schema()) {
        None => Ok(()),
        Some(difference) => Err(TableError::SchemaMismatch { file: other.first_path(), difference }),
    }
}

/// How one non-key column is compared.
enum ColumnEq {
    /// arrow's `not_distinct` kernel (flat types).
    Kernel(usize),
    /// Row-format encodings (nested types the kernel refuses).
    Encoded(usize, RowConverter),
}

/// How a diff tells whether the rows of a key found on both sides are equal.
pub(crate) enum Compare {
    /// By their non-key values: both sides read whole.
    Values,
    /// By their row prints ([`prints`]): the old side reads only its key columns (and its
    /// files have `file_schema`); both sides' batches carry their prints.
    Prints { file_schema: SchemaRef },
}

/// [`Compare`] ready for the merge.
enum RowsEqual {
    Values(ValueEq),
    Prints,
}

/// Compares the non-key columns of aligned runs of two batches.
struct ValueEq {
    columns: Vec<ColumnEq>,
}

impl ValueEq {
    fn new(schema: &SchemaRef, key_indices: &[usize]) -> Result<Self, TableError> {
        let mut columns = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if key_indices.contains(&i) {
                continue;
            }
            if field.data_type().is_nested() {
                let converter = RowConverter::new(vec![SortField::new(field.data_type().clone())])?;
                columns.push(ColumnEq::Encoded(i, converter));
            } else {
                columns.push(ColumnEq::Kernel(i));
            }
        }
        Ok(Self { columns })
    }

    /// Bit `i` is set when row `old_at + i` of `old` equals row `new_at + i` of `new`.
    fn equal_rows(
        &self,
        old: &RecordBatch,
        old_at: usize,
        new: &RecordBatch,
        new_at: usize,
        len: usize,
    ) -> Result<BooleanBuffer, TableError> {
        let mut all = BooleanBuffer::new_set(len);
        for column in &self.columns {
            let equal = match column {
                ColumnEq::Kernel(i) => {
                    let a = old.column(*i).slice(old_at, len);
                    let b = new.column(*i).slice(new_at, len);
                    not_distinct(&a, &b)?.values().clone()
                }
                ColumnEq::Encoded(i, converter) => {
                    let a: ArrayRef = old.column(*i).slice(old_at, len);
                    let b: ArrayRef = new.column(*i).slice(new_at, len);
                    let (a, b) = (converter.convert_columns(&[a])?, converter.convert_columns(&[b])?);
                    BooleanBuffer::collect_bool(len, |r| a.row(r) == b.row(r))
                }
            };
            all = &all & &equal;
        }
        Ok(all)
    }
}

/// Writes the selected rows (ascending indices) of `batch`, projected to `columns` if given.
fn write_selected(
    writer: &mut CanonicalWriter,
    batch: &RecordBatch,
    columns: Option<&[usize]>,
    selected: &mut Vec<u32>,
) -> Result<(), TableError> {
    let (Some(&first), Some(&last)) = (selected.first(), selected.last()) else { return Ok(()) };
    let projected;
    let batch = match columns {
        Some(columns) => {
            projected = batch.project(columns)?;
            &projected
        }
        None => batch,
    };
    let contiguous = (last - first) as usize + 1 == selected.len();
    let rows = if contiguous {
        batch.slice(first as usize, selected.len())
    } else {
        take_record_batch(batch, &UInt32Array::from(std::mem::take(selected)))?
    };
    selected.clear();
    writer.write(&rows)
}

/// One side of the diff merge: its cursor and the rows of its current batch selected for output.
struct Side {
    cursor: Cursor,
    selected: Vec<u32>,
}

impl Side {
    fn select(&mut self, n: usize) {
        let pos = self.cursor.pos as u32;
        self.selected.extend(pos..pos + n as u32);
    }

    /// Moves on `n` rows, writing the selection of a batch that is used up.
    fn advance(
        &mut self,
        n: usize,
        writer: &mut CanonicalWriter,
        columns: Option<&[usize]>,
    ) -> Result<(), TableError> {
        if let Some(retired) = self.cursor.advance(n)? {
            write_selected(writer, &retired.batch, columns, &mut self.selected)?;
        }
        Ok(())
    }
}

/// Compares `old` and `new` (key-sorted snapshots with equal schemas, at least one file each)
/// by `key_columns` and writes the delta into `out_dir` (which must exist). Stats count rows;
/// `updated` counts rows whose key is in both versions and whose values differ (module doc).
pub fn diff(
    old: &[PathBuf],
    new: &[PathBuf],
    key_columns: &[String],
    out_dir: &Path,
    opts: &WriteOptions,
) -> Result<DeltaFiles, TableError> {
    let old = Cursor::open(old, key_columns, opts.batch_rows)?;
    let new = Cursor::open(new, key_columns, opts.batch_rows)?;
    let mut writers = DeltaWriters::new(old.schema(), old.key_indices(), key_columns, out_dir, opts)?;
    let stats = diff_cursors(old, new, &mut writers, Compare::Values)?;
    writers.finish(stats)
}

/// The two writers of a delta.
pub(crate) struct DeltaWriters {
    upserts: CanonicalWriter,
    deletes: CanonicalWriter,
}

impl DeltaWriters {
    /// Writers of `upserts-*` (rows of `schema`) and `deletes-*` (its key columns, at
    /// `key_indices`) into `out_dir`.
    pub(crate) fn new(
        schema: &SchemaRef,
        key_indices: &[usize],
        key_columns: &[String],
        out_dir: &Path,
        opts: &WriteOptions,
    ) -> Result<Self, TableError> {
        let upserts = CanonicalWriter::new(out_dir, "upserts", schema.clone(), key_columns, opts)?;
        let key_schema = std::sync::Arc::new(schema.project(key_indices)?);
        let deletes = CanonicalWriter::new(out_dir, "deletes", key_schema, key_columns, opts)?;
        Ok(Self { upserts, deletes })
    }

    pub(crate) fn finish(self, stats: DeltaStats) -> Result<DeltaFiles, TableError> {
        Ok(DeltaFiles { upserts: self.upserts.finish()?, deletes: self.deletes.finish()?, stats })
    }

    /// Stops writing and removes every file written (best effort: they are the caller's
    /// staging directory's).
    pub(crate) fn discard(self) {
        for path in self.upserts.abandon().into_iter().chain(self.deletes.abandon()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The merge of [`diff`]: `old` against `new` (checked to have the schema of `old`'s files)
/// into `writers`, matched rows compared as `compare` says.
pub(crate) fn diff_cursors(
    old: Cursor,
    new: Cursor,
    writers: &mut DeltaWriters,
    compare: Compare,
) -> Result<DeltaStats, TableError> {
    let mut old = Side { cursor: old, selected: Vec::new() };
    let mut new = Side { cursor: new, selected: Vec::new() };
    let keys = old.cursor.key_indices().to_vec();
    let values = match compare {
        Compare::Values => {
            let schema = old.cursor.schema().clone();
            same_schema(&schema, &new.cursor)?;
            RowsEqual::Values(ValueEq::new(&schema, &keys)?)
        }
        Compare::Prints { file_schema } => {
            same_schema(&file_schema, &new.cursor)?;
            RowsEqual::Prints
        }
    };
    let DeltaWriters { upserts, deletes } = writers;
    let mut stats = DeltaStats::default();
    loop {
        let order = match (old.cursor.key(), new.cursor.key()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(n)) => o.cmp(&n),
        };
        match order {
            Ordering::Less => {
                let n = old.cursor.run_below(new.cursor.key());
                old.select(n);
                stats.deleted += n as u64;
                old.advance(n, deletes, Some(&keys))?;
            }
            Ordering::Greater => {
                let n = new.cursor.run_below(old.cursor.key());
                new.select(n);
                stats.inserted += n as u64;
                new.advance(n, upserts, None)?;
            }
            Ordering::Equal => {
                let n = matched_run(&old.cursor, &new.cursor);
                stats.updated += select_updates(&values, &old.cursor, &mut new, n)?;
                old.advance(n, deletes, Some(&keys))?;
                new.advance(n, upserts, None)?;
            }
        }
    }
    stats.old_rows = old.cursor.rows;
    stats.new_rows = new.cursor.rows;
    Ok(stats)
}

/// Selects the rows of a matched run of `n` rows whose values changed; returns how many.
fn select_updates(values: &RowsEqual, old: &Cursor, new: &mut Side, n: usize) -> Result<u64, TableError> {
    let (Some((old_batch, old_at)), Some((new_batch, new_at))) = (old.batch(), new.cursor.batch()) else {
        return Ok(0);
    };
    let changed = match values {
        RowsEqual::Values(values) => !&values.equal_rows(old_batch, old_at, new_batch, new_at, n)?,
        RowsEqual::Prints => {
            let (Some(a), Some(b)) = (old.prints(), new.cursor.prints()) else {
                return Err(TableError::invalid("a batch of a diff by row prints came without its prints"));
            };
            if a.len() != old_batch.num_rows() || b.len() != new_batch.num_rows() {
                return Err(TableError::invalid("a batch of a diff by row prints has prints of other rows"));
            }
            let (a, b) = (&a[old_at..old_at + n], &b[new_at..new_at + n]);
            BooleanBuffer::collect_bool(n, |i| a[i] != b[i])
        }
    };
    let before = new.selected.len();
    new.selected.extend(changed.set_indices().map(|i| (new_at + i) as u32));
    Ok((new.selected.len() - before) as u64)
}

/// Rows, from the current ones, whose keys are pairwise equal in both current batches.
fn matched_run(old: &Cursor, new: &Cursor) -> usize {
    let (Some(o), Some(n)) = (&old.current, &new.current) else { return 0 };
    let limit = (o.batch.num_rows() - old.pos).min(n.batch.num_rows() - new.pos);
    (0..limit).take_while(|&i| o.keys.row(old.pos + i) == n.keys.row(new.pos + i)).count()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testgen;
#[cfg(test)]
mod tests;
