//! Reading key-sorted Parquet files as one stream: [`SortedFilesReader`] yields bounded batches
//! of a list of files in order and proves, while it reads, that the key is strictly increasing
//! across rows, batches and files, and that every file has the same schema.
//!
//! It also refuses a file whose footer misstates its row count ([`TableError::RowCountMismatch`]):
//! on opening a file, each row group's count must match the value count of each of its
//! non-repeated column chunks and the file's count the sum of its row groups
//! (`declared_rows`); at the end of the file, the rows decoded must match the file's count
//! (`check_rows_decoded`). The Parquet decoder itself ignores these counts (it decodes what the
//! pages hold), so without the checks such a file would be read as if it were fine.
//!
//! Neighbours: [`crate::delta`] merges these streams; [`crate::canonical`] writes the files.
//!
//! Keys are compared as arrow [`Rows`] (the row format of [`RowConverter`]): byte-comparable
//! encodings whose order is the ascending, nulls-first lexicographic order of arrow's
//! `lexsort`, which [`crate::source`] sorts by. Two streams whose key columns have the same types
//! encode keys identically, so keys of different readers compare by their bytes.
//!
//! Memory: one decoded batch of at most `batch_rows` rows and its encoded keys, plus the Parquet
//! reader's current page of each column and the file footer; a [`PrefetchedReader`] adds its
//! queue of at most `depth` such batches.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;

use crate::canonical::schema_difference;
use crate::error::TableError;

/// One batch of a sorted stream with its encoded keys.
#[derive(Debug)]
pub struct KeyedBatch {
    pub batch: RecordBatch,
    /// The key columns of `batch` in row format; `keys.row(i)` is the key of row `i`.
    pub keys: Rows,
    /// Index into the reader's file list of the file the batch comes from.
    pub file: usize,
    /// Row number (0-based, within that file) of the batch's first row.
    pub first_row: u64,
    /// The row prints of its rows, when its stream has them ([`crate::delta::prints`]).
    pub prints: Option<Vec<u64>>,
}

/// Iterates the batches of key-sorted Parquet files, checking order and schema (module doc).
pub struct SortedFilesReader {
    paths: Vec<PathBuf>,
    /// The files' schema.
    file_schema: SchemaRef,
    /// The columns read (all, or the key columns only), and their schema.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    key_indices: Vec<usize>,
    converter: RowConverter,
    batch_rows: usize,
    /// The file being read.
    current: Option<OpenFile>,
    next_file: usize,
    last_key: Option<OwnedRow>,
    failed: bool,
}

impl std::fmt::Debug for SortedFilesReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedFilesReader")
            .field("paths", &self.paths)
            .field("key_indices", &self.key_indices)
            .field("next_file", &self.next_file)
            .finish_non_exhaustive()
    }
}

/// A file of a [`SortedFilesReader`] being read.
struct OpenFile {
    /// Index into the reader's file list.
    index: usize,
    reader: ParquetRecordBatchReader,
    /// Rows decoded so far.
    rows_read: u64,
    /// Rows its footer declares (checked by [`declared_rows`]).
    declared: i64,
}

/// Opens `path` and checks its footer's row counts; returns the builder and the declared rows.
fn open_builder(path: &PathBuf) -> Result<(ParquetRecordBatchReaderBuilder<File>, i64), TableError> {
    let file = File::open(path).map_err(TableError::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(TableError::parquet(path))?;
    let declared = declared_rows(builder.metadata(), path)?;
    Ok((builder, declared))
}

fn row_count_mismatch(file: &Path, part: String, declared: i64, found: i64, counted: String) -> TableError {
    TableError::RowCountMismatch { file: file.to_path_buf(), part, declared, found, counted }
}

/// Checks that the footer of `file` agrees with itself about the row count and returns the rows
/// it declares for the file: each row group declares as many rows as each of its non-repeated
/// column chunks has values (one per row, nulls included), and the file the sum of its row
/// groups. Reads only the footer; [`check_rows_decoded`] compares the result with the data.
pub(crate) fn declared_rows(metadata: &ParquetMetaData, file: &Path) -> Result<i64, TableError> {
    let mut sum = 0i64;
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let declared = group.num_rows();
        for column in group.columns() {
            if column.column_descr().max_rep_level() == 0 && column.num_values() != declared {
                let counted = format!("values in column `{}`", column.column_path().string());
                let part = format!("row group {index}");
                return Err(row_count_mismatch(file, part, declared, column.num_values(), counted));
            }
        }
        sum = sum.saturating_add(declared);
    }
    let declared = metadata.file_metadata().num_rows();
    if declared != sum {
        let counted = "rows in its row groups".to_owned();
        return Err(row_count_mismatch(file, "the file".to_owned(), declared, sum, counted));
    }
    Ok(declared)
}

/// Checks that `decoded`, the rows read from the whole of `file`, are the `declared` ones.
pub(crate) fn check_rows_decoded(file: &Path, declared: i64, decoded: u64) -> Result<(), TableError> {
    let found = i64::try_from(decoded).unwrap_or(i64::MAX);
    if found == declared {
        return Ok(());
    }
    Err(row_count_mismatch(file, "the file".to_owned(), declared, found, "rows decoded".to_owned()))
}

/// The reader of a file: `projection` (root columns) or every column, in batches of `batch_rows`.
fn build_reader(
    builder: ParquetRecordBatchReaderBuilder<File>,
    projection: Option<&[usize]>,
    batch_rows: usize,
    path: &Path,
) -> Result<ParquetRecordBatchReader, TableError> {
    let builder = match projection {
        Some(columns) => {
            let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
            builder.with_projection(mask)
        }
        None => builder,
    };
    builder.with_batch_size(batch_rows).build().map_err(TableError::parquet(path))
}

/// Positions of `key_columns` in `schema`; a missing one is a schema mismatch of `file`.
pub(crate) fn key_positions(
    schema: &SchemaRef,
    key_columns: &[String],
    file: &Path,
) -> Result<Vec<usize>, TableError> {
    if key_columns.is_empty() {
        return Err(TableError::invalid("no key columns given"));
    }
    let mut positions = Vec::with_capacity(key_columns.len());
    for name in key_columns {
        let index = schema.index_of(name).map_err(|_| TableError::SchemaMismatch {
            file: file.to_path_buf(),
            difference: format!("no key column `{name}`"),
        })?;
        if positions.contains(&index) {
            return Err(TableError::invalid(format!("key column `{name}` is named twice")));
        }
        positions.push(index);
    }
    Ok(positions)
}

impl SortedFilesReader {
    /// Opens the first of `paths` (which must not be empty) to learn the schema; batches hold at
    /// most `batch_rows` rows.
    pub fn open(paths: &[PathBuf], key_columns: &[String], batch_rows: usize) -> Result<Self, TableError> {
        Self::open_with(paths, key_columns, batch_rows, false)
    }

    /// As [`Self::open`], reading only the key columns: [`Self::schema`] is theirs (in the
    /// files' column order), [`Self::file_schema`] the files' (which every file must have).
    pub fn open_keys(
        paths: &[PathBuf],
        key_columns: &[String],
        batch_rows: usize,
    ) -> Result<Self, TableError> {
        Self::open_with(paths, key_columns, batch_rows, true)
    }

    fn open_with(
        paths: &[PathBuf],
        key_columns: &[String],
        batch_rows: usize,
        keys_only: bool,
    ) -> Result<Self, TableError> {
        let Some(first) = paths.first() else {
            return Err(TableError::invalid("a sorted stream needs at least one file"));
        };
        let batch_rows = batch_rows.max(1);
        let (builder, declared) = open_builder(first)?;
        let file_schema = builder.schema().clone();
        let (schema, projection) = if keys_only {
            let mut columns = key_positions(&file_schema, key_columns, first)?;
            columns.sort_unstable();
            (std::sync::Arc::new(file_schema.project(&columns)?), Some(columns))
        } else {
            (file_schema.clone(), None)
        };
        let key_indices = key_positions(&schema, key_columns, first)?;
        let fields =
            key_indices.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        let reader = build_reader(builder, projection.as_deref(), batch_rows, first)?;
        Ok(Self {
            paths: paths.to_vec(),
            file_schema,
            projection,
            schema,
            key_indices,
            converter,
            batch_rows,
            current: Some(OpenFile { index: 0, reader, rows_read: 0, declared }),
            next_file: 1,
            last_key: None,
            failed: false,
        })
    }

    /// The schema of the batches read.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The schema shared by every file.
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// Positions of the key columns in [`Self::schema`], in key order.
    pub fn key_indices(&self) -> &[usize] {
        &self.key_indices
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn open_next_file(&mut self) -> Result<bool, TableError> {
        let index = self.next_file;
        let Some(path) = self.paths.get(index) else { return Ok(false) };
        let (builder, declared) = open_builder(path)?;
        if let Some(difference) = schema_difference(&self.file_schema, builder.schema()) {
            return Err(TableError::SchemaMismatch { file: path.clone(), difference });
        }
        let reader = build_reader(builder, self.projection.as_deref(), self.batch_rows, path)?;
        self.current = Some(OpenFile { index, reader, rows_read: 0, declared });
        self.next_file += 1;
        Ok(true)
    }

    fn next_batch(&mut self) -> Result<Option<KeyedBatch>, TableError> {
        loop {
            let Some(open) = self.current.as_mut() else {
                if self.open_next_file()? {
                    continue;
                }
                return Ok(None);
            };
            let (file, first_row) = (open.index, open.rows_read);
            let batch = match open.reader.next() {
                None => {
                    check_rows_decoded(&self.paths[file], open.declared, open.rows_read)?;
                    self.current = None;
                    continue;
                }
                Some(Err(e)) => {
                    let source = ParquetError::External(Box::new(e));
                    return Err(TableError::Parquet { path: self.paths[file].clone(), source });
                }
                Some(Ok(batch)) => batch,
            };
            open.rows_read += batch.num_rows() as u64;
            if batch.num_rows() == 0 {
                continue;
            }
            let columns: Vec<_> = self.key_indices.iter().map(|&i| batch.column(i).clone()).collect();
            let keys = self.converter.convert_columns(&columns)?;
            self.check_order(&keys, file, first_row)?;
            return Ok(Some(KeyedBatch { batch, keys, file, first_row, prints: None }));
        }
    }

    /// Checks that `keys` increase strictly, starting above the previous batch's last key.
    fn check_order(&mut self, keys: &Rows, file: usize, first_row: u64) -> Result<(), TableError> {
        let out_of_order = |offset: usize| TableError::KeysOutOfOrder {
            file: self.paths[file].clone(),
            row: first_row + offset as u64,
        };
        if let Some(last) = &self.last_key
            && last.row() >= keys.row(0)
        {
            return Err(out_of_order(0));
        }
        let mut previous = keys.row(0);
        for i in 1..keys.num_rows() {
            let key = keys.row(i);
            if previous >= key {
                return Err(out_of_order(i));
            }
            previous = key;
        }
        self.last_key = Some(previous.owned());
        Ok(())
    }
}

impl Iterator for SortedFilesReader {
    type Item = Result<KeyedBatch, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.next_batch().transpose();
        if matches!(result, Some(Err(_))) {
            self.failed = true;
        }
        result
    }
}

/// A [`SortedFilesReader`] decoding on a thread of its own, at most `depth` batches ahead of
/// its consumer, so that a merge decodes its inputs in parallel. Dropping it stops the thread
/// (after the batch it is decoding) and joins it.
pub struct PrefetchedReader {
    file_schema: SchemaRef,
    schema: SchemaRef,
    key_indices: Vec<usize>,
    paths: Vec<PathBuf>,
    receiver: Option<Receiver<Result<KeyedBatch, TableError>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PrefetchedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefetchedReader").field("paths", &self.paths).finish_non_exhaustive()
    }
}

impl SortedFilesReader {
    /// Moves the reader onto its own thread, keeping at most `depth` (at least 1) decoded
    /// batches queued.
    pub fn prefetch(self, depth: usize) -> Result<PrefetchedReader, TableError> {
        let (file_schema, schema, key_indices, paths) =
            (self.file_schema.clone(), self.schema.clone(), self.key_indices.clone(), self.paths.clone());
        let (sender, receiver) = sync_channel(depth.max(1));
        let thread = std::thread::Builder::new()
            .name("ferry-sorted-read".to_owned())
            .spawn(move || {
                for item in self {
                    if sender.send(item).is_err() {
                        return;
                    }
                }
            })
            .map_err(TableError::io(paths.first().cloned().unwrap_or_default()))?;
        Ok(PrefetchedReader {
            file_schema,
            schema,
            key_indices,
            paths,
            receiver: Some(receiver),
            thread: Some(thread),
        })
    }
}

impl PrefetchedReader {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    pub fn key_indices(&self) -> &[usize] {
        &self.key_indices
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl Iterator for PrefetchedReader {
    type Item = Result<KeyedBatch, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        // A closed channel is the end: the reader thread stops after its first error.
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for PrefetchedReader {
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Some(thread) = self.thread.take() {
            // The thread only decodes and sends; a panic in the decoder is not ours to re-raise.
            let _ = thread.join();
        }
    }
}

/// The key of `row` of `batch` as `(name=value, …)`, for error messages.
pub(crate) fn format_key(batch: &RecordBatch, key_indices: &[usize], row: usize) -> String {
    let options = FormatOptions::default();
    let schema = batch.schema();
    let parts: Vec<String> = key_indices
        .iter()
        .map(|&i| {
            let column = batch.column(i);
            let value = if column.is_null(row) {
                "null".to_owned()
            } else {
                match ArrayFormatter::try_new(column.as_ref(), &options) {
                    Ok(formatter) => formatter.value(row).to_string(),
                    Err(_) => "?".to_owned(),
                }
            };
            format!("{}={value}", schema.field(i).name())
        })
        .collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::canonical::{CanonicalWriter, WriteOptions};

    fn batch(ids: &[i32], names: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int32Array::from(ids.to_vec())) as ArrayRef),
            ("name", Arc::new(StringArray::from(names.to_vec())) as ArrayRef),
        ])
        .expect("batch")
    }

    fn write_raw(path: &PathBuf, batches: &[RecordBatch]) {
        let file = File::create(path).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).expect("writer");
        for b in batches {
            writer.write(b).expect("write");
        }
        writer.close().expect("close");
    }

    fn keys() -> Vec<String> {
        vec!["id".to_owned()]
    }

    #[test]
    fn reads_across_files_in_bounded_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WriteOptions {
            rows_per_file: 10,
            row_group_rows: 4,
            batch_rows: 3,
            zstd_level: 1,
            ..WriteOptions::default()
        };
        let mut writer = CanonicalWriter::new(dir.path(), "part", batch(&[], &[]).schema(), &keys(), &opts)
            .expect("writer");
        let ids: Vec<i32> = (0..25).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        writer.write(&batch(&ids, &names)).expect("write");
        let files = writer.finish().expect("finish");
        assert_eq!(files.iter().map(|f| f.rows).collect::<Vec<_>>(), [10, 10, 5]);
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let reader = SortedFilesReader::open(&paths, &keys(), 4).expect("open");
        let batches: Vec<KeyedBatch> = reader.collect::<Result<_, _>>().expect("read");
        assert!(batches.iter().all(|b| b.batch.num_rows() <= 4));
        assert_eq!(batches.iter().map(|b| b.batch.num_rows()).sum::<usize>(), 25);
        assert_eq!(batches.last().map(|b| (b.file, b.first_row)), Some((2, 4)));
    }

    #[test]
    fn unsorted_duplicate_and_boundary_keys_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_raw(&a, &[batch(&[1, 2], &["x", "y"]), batch(&[3, 3], &["z", "w"])]);
        let err = SortedFilesReader::open(std::slice::from_ref(&a), &keys(), 2)
            .expect("open")
            .collect::<Result<Vec<_>, _>>()
            .expect_err("duplicate");
        assert!(matches!(&err, TableError::KeysOutOfOrder { file, row: 3 } if file == &a), "{err}");
        write_raw(&a, &[batch(&[1, 5], &["x", "y"])]);
        write_raw(&b, &[batch(&[5, 6], &["x", "y"])]);
        let err = SortedFilesReader::open(&[a, b.clone()], &keys(), 8)
            .expect("open")
            .collect::<Result<Vec<_>, _>>()
            .expect_err("boundary");
        assert!(matches!(&err, TableError::KeysOutOfOrder { file, row: 0 } if file == &b), "{err}");
    }

    #[test]
    fn schema_differences_and_bad_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_raw(&a, &[batch(&[1], &["x"])]);
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(arrow::array::Int64Array::from(vec![7]))],
        )
        .expect("batch");
        write_raw(&b, &[other]);
        let err = SortedFilesReader::open(&[a.clone(), b.clone()], &keys(), 8)
            .expect("open")
            .collect::<Result<Vec<_>, _>>()
            .expect_err("schema");
        assert!(matches!(&err, TableError::SchemaMismatch { file, .. } if file == &b), "{err}");
        let err =
            SortedFilesReader::open(std::slice::from_ref(&a), &["nope".to_owned()], 8).expect_err("key");
        assert!(matches!(err, TableError::SchemaMismatch { .. }), "{err}");
        let err = SortedFilesReader::open(&[a], &[], 8).expect_err("no keys");
        assert!(matches!(err, TableError::InvalidArgument { .. }), "{err}");
    }

    #[test]
    fn footer_row_count_lies_are_refused_naming_the_file() {
        let (group_rows, groups) = crate::lying_footer::THREE_GROUPS;
        let rows = (group_rows * groups) as i32;
        let names: Vec<String> = (0..rows * 2).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let ids: Vec<i32> = (0..rows * 2).collect();
        let first = batch(&ids[..rows as usize], &names[..rows as usize]);
        let second = batch(&ids[rows as usize..], &names[rows as usize..]);
        for (lie, part, declared, found, counted) in crate::lying_footer::LIES {
            let dir = tempfile::tempdir().expect("tempdir");
            let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
            for (path, rows) in [(&a, &first), (&b, &second)] {
                let chunks = (0..groups).map(|g| rows.slice(g * group_rows, group_rows));
                crate::synth::write_parquet(path, rows.schema(), chunks).expect("one row group a chunk");
            }
            crate::lying_footer::lie_about_rows(&b, lie);
            for batch_rows in [7, group_rows, 1_000] {
                let result = SortedFilesReader::open(&[a.clone(), b.clone()], &keys(), batch_rows)
                    .and_then(|reader| reader.collect::<Result<Vec<_>, _>>());
                let err = result.expect_err("lying footer");
                let matches = matches!(
                    &err,
                    TableError::RowCountMismatch { file, part: p, declared: d, found: f, counted: c }
                        if file == &b && p == part && *d == declared && *f == found && c.starts_with(counted)
                );
                assert!(matches, "{lie:?} in batches of {batch_rows}: {err}");
            }
            crate::lying_footer::lie_about_rows(&a, lie);
            let err = SortedFilesReader::open(std::slice::from_ref(&a), &keys(), 8)
                .and_then(|reader| reader.collect::<Result<Vec<_>, _>>())
                .expect_err("lying first file");
            assert!(matches!(&err, TableError::RowCountMismatch { file, .. } if file == &a), "{err}");
        }
    }
}
