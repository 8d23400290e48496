//! Publishing: turns an uploaded source file (CSV or Parquet) into the Parquet files of a dataset
//! version — checked against the [`DatasetDefinition`], sorted by its key, free of duplicate and
//! null keys, zstd-compressed with page statistics and page indexes.
//!
//! Neighbours: [`super::definition`] supplies the schema contract and the casts; the caller
//! (the publish request handler) hashes the written files into a manifest and commits them.
//!
//! ## Steps
//! 1. Read the source. CSV needs a header row; columns are matched by *name* (any order), a UTF-8
//!    BOM is ignored, an empty field is null, and `binary` columns are hex. Parquet columns are
//!    checked with [`check_schema`] and cast losslessly. A Parquet footer that misstates the row
//!    count (of a row group against its column chunks, of the file against its row groups, or of
//!    the file against the rows decoded) is refused as a [`PublishError::Source`] naming the file
//!    and both counts: the decoder would otherwise read whatever the pages hold without a word.
//! 2. Check that key and non-nullable columns have no nulls (the error names the column and the
//!    1-based data row of the source, header not counted — arrow's CSV "line").
//! 3. Sort by the key columns in declared order, ascending in arrow's row format (numbers by
//!    value, strings by UTF-8 bytes: the order of arrow's `lexsort`, nulls first), and refuse
//!    adjacent equal keys.
//! 4. Write `part-00000.parquet`, `part-00001.parquet`, … of at most `rows_per_file` rows each
//!    through [`CanonicalWriter`] (each through `<name>.tmp`, fsync, rename; then fsync the
//!    directory), so the bytes depend only on the rows and [`PublishOptions::write_options`]. A
//!    0-row table writes one 0-row file carrying the schema.
//!
//! ## Memory
//! A source already in strictly ascending key order is streamed (step 3 is a check, and memory
//! stays at a few batches of about 64 MiB). Any other source is sorted by `external` within
//! [`SortOptions::memory_budget`]: runs of at most half the budget are sorted and, unless the
//! whole source is one run, spilled as Arrow IPC files into a directory of their own under
//! [`SortOptions::spill_dir`] (removed when the sort ends, whatever happened), then merged
//! (`merge`) in as many passes as the budget needs. The bytes written do not depend on the
//! budget. Spilling needs about the source's decoded size of free disk.
//!
//! ## Limits
//! Files already written to `out_dir` are left there when a later step fails; `out_dir` is the
//! caller's staging directory. Sources are an operator's upload: their decompressed size is not
//! capped yet.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch};
use arrow::csv::ReaderBuilder;
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::row::{OwnedRow, RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use ferry_proto::SourceFormat;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;

pub use crate::canonical::WrittenFile;
use crate::canonical::{CanonicalWriter, RowTap, WriteOptions};
use crate::error::TableError;
use crate::sorted::{check_rows_decoded, declared_rows};

mod dictionary;
mod external;
mod gather;
mod keyorder;
mod merge;
mod spill;

pub use external::{DEFAULT_MEMORY_BUDGET, SortOptions};
use external::{ExternalSort, Plan, SortStats};

use super::definition::{
    ColumnType, ConformError, DatasetDefinition, SchemaMismatch, check_names, check_schema, conform_batch,
};

/// Most rows decoded per batch when reading a source.
const READ_BATCH_ROWS: usize = 65_536;

/// Bytes of values one batch aims at, far below the 2 GiB an Arrow array can hold.
const TARGET_BATCH_BYTES: usize = 64 << 20;

/// How published files are cut and compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Most rows in one Parquet file (at least 1).
    pub rows_per_file: usize,
    /// Most rows in one row group (at least 1).
    pub row_group_rows: usize,
    /// zstd level for data pages (1..=22).
    pub zstd_level: i32,
    /// Chunk size of the chunk hashes the table's writer takes as it writes each file
    /// ([`CanonicalWriter::with_chunk_hashes`]): a node's transfer chunk size, so that it need
    /// not read the table back to describe it. It does not change the bytes written.
    pub chunk_hashes: Option<u32>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self { rows_per_file: 262_144, row_group_rows: 65_536, zstd_level: 3, chunk_hashes: None }
    }
}

impl PublishOptions {
    /// The [`WriteOptions`] published files are written with (`batch_rows` is the canonical
    /// default). A consumer rebuilding a version from a delta must use the same options to get
    /// byte-identical files.
    pub fn write_options(&self) -> WriteOptions {
        WriteOptions {
            rows_per_file: self.rows_per_file,
            row_group_rows: self.row_group_rows,
            zstd_level: self.zstd_level,
            ..WriteOptions::default()
        }
    }
}

/// Why a publish failed. Every variant but `Io`, `Parquet` and `Table` is the source's fault and
/// is reported to the uploader as is.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The source is not readable as the declared format (bad CSV, bad UTF-8, bad value, not
    /// Parquet, truncated, a Parquet footer that misstates its row count). The message names
    /// the problem and, for CSV, the line and column; for a wrong row count, the file, the part
    /// (file or row group) and both counts.
    #[error("source file: {message}")]
    Source { message: String },
    #[error("{0}")]
    Schema(SchemaMismatch),
    /// `row` is the 1-based data row of the source (CSV header not counted).
    #[error("key column `{column}` is empty in row {row} of the source")]
    NullKey { column: String, row: u64 },
    #[error("column `{column}` must have a value but is empty in row {row} of the source")]
    NullInNonNullable { column: String, row: u64 },
    /// Two rows share this key, shown as `(name=value, …)`.
    #[error("duplicate key {key}")]
    DuplicateKey { key: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
    /// Concatenating or sorting the table in memory failed (e.g. a string column over 2 GiB).
    #[error("processing the table: {0}")]
    Table(#[from] ArrowError),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> PublishError {
    let context = context.into();
    move |source| PublishError::Io { context, source }
}

fn source_error(message: impl Into<String>) -> PublishError {
    PublishError::Source { message: message.into() }
}

/// Reads `source`, checks it against `def`, sorts it by key and writes Parquet files into
/// `out_dir` (which must exist), sorting within the default [`SortOptions`] (spilling into
/// `out_dir`). Returns the files in name order. See [`write_sorted_parquet_with`].
pub fn write_sorted_parquet(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
) -> Result<Vec<WrittenFile>, PublishError> {
    write_sorted_parquet_with(def, format, source, out_dir, opts, &SortOptions::default())
}

/// [`write_sorted_parquet`] within `sort`'s memory budget, spilling where it says.
///
/// A source already in strictly ascending key order (what a database export ordered by its key
/// gives) is written through as it is read, in memory bounded by a few batches. Any other
/// source is sorted by `external`: the first pass stops at the first row out of order, removes
/// what it wrote and starts again from the file; the bytes written do not depend on `sort`.
pub fn write_sorted_parquet_with(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
    sort: &SortOptions,
) -> Result<Vec<WrittenFile>, PublishError> {
    write_sorted_parquet_tapped(def, format, source, out_dir, opts, sort, &|| None)
}

/// Makes the [`RowTap`] of each table writer a sort starts (`None`: no tap). A sort may start
/// two: the first abandoned (its tap told so) when the source turns out not to be in key order.
pub type TapFactory<'a> = dyn Fn() -> Option<Box<dyn RowTap>> + 'a;

/// [`write_sorted_parquet_with`], showing the rows of the table, in key order as they are
/// written, to the taps `tap` makes (a publish diffs them against its head as they come).
pub fn write_sorted_parquet_tapped(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
    sort: &SortOptions,
    tap: &TapFactory<'_>,
) -> Result<Vec<WrittenFile>, PublishError> {
    let spill_parent = sort.spill_dir.clone().unwrap_or_else(|| out_dir.to_owned());
    let plan = Plan::for_budget(sort.memory_budget);
    let sizes = (READ_BATCH_ROWS, plan);
    write_tapped_in_batches(def, format, source, out_dir, opts, sizes, spill_parent, tap)
        .map(|(files, _)| files)
}

/// [`write_sorted_parquet_with`] reading at most `max_batch_rows` rows per batch and sorting by
/// `plan`; also says how the sort went.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn write_sorted_parquet_in_batches(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
    max_batch_rows: usize,
    plan: Plan,
    spill_parent: PathBuf,
) -> Result<(Vec<WrittenFile>, SortStats), PublishError> {
    let sizes = (max_batch_rows, plan);
    write_tapped_in_batches(def, format, source, out_dir, opts, sizes, spill_parent, &|| None)
}

/// [`write_sorted_parquet_in_batches`] with the table writers' taps; `sizes` are the most rows
/// read per batch and the sort's plan.
#[allow(clippy::too_many_arguments)]
fn write_tapped_in_batches(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
    (max_batch_rows, plan): (usize, Plan),
    spill_parent: PathBuf,
    tap: &TapFactory<'_>,
) -> Result<(Vec<WrittenFile>, SortStats), PublishError> {
    if let Some(files) = write_if_sorted(def, format, source, out_dir, opts, max_batch_rows, tap)? {
        return Ok((files, SortStats::default()));
    }
    let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let write_options = opts.write_options();
    let writer =
        tapped(CanonicalWriter::new(out_dir, "part", def.arrow_schema(), &keys, &write_options)?, opts, tap);
    let dictionaries = kept_dictionaries(def, format, source);
    let sort = ExternalSort {
        def,
        key_columns: key_indices(def),
        converter: key_converter(def)?,
        plan,
        spill_parent,
        out_rows: write_options.batch_rows.max(1),
        dictionaries: dictionaries.clone(),
    };
    let read = |each: &mut dyn FnMut(RecordBatch) -> Result<bool, PublishError>| {
        for_each_source_batch(def, format, source, max_batch_rows, &dictionaries, each)
    };
    sort.run(read, writer)
}

/// The text columns of a Parquet source the sort keeps dictionary-encoded (see
/// [`dictionary::choose`]); none when the source is CSV or its footer cannot be read (the
/// reading then says why).
fn kept_dictionaries(def: &DatasetDefinition, format: SourceFormat, source: &Path) -> Vec<usize> {
    if format != SourceFormat::Parquet {
        return Vec::new();
    }
    let Ok(file) = File::open(source) else { return Vec::new() };
    match ParquetRecordBatchReaderBuilder::try_new(file) {
        Ok(builder) => dictionary::choose(def, builder.metadata(), builder.schema()),
        Err(_) => Vec::new(),
    }
}

/// `writer` taking the chunk hashes `opts` asks for, with the tap `tap` makes, if any.
fn tapped(writer: CanonicalWriter, opts: &PublishOptions, tap: &TapFactory<'_>) -> CanonicalWriter {
    let writer = writer.with_chunk_hashes(opts.chunk_hashes);
    match tap() {
        Some(tap) => writer.with_tap(tap),
        None => writer,
    }
}

/// Encodes the key columns of the definition's rows in arrow's row format.
fn key_converter(def: &DatasetDefinition) -> Result<RowConverter, PublishError> {
    let schema = def.arrow_schema();
    let fields =
        key_indices(def).iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
    Ok(RowConverter::new(fields)?)
}

/// The streaming pass: `None` (and nothing left in `out_dir`) once a row is out of key order.
fn write_if_sorted(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
    max_batch_rows: usize,
    tap: &TapFactory<'_>,
) -> Result<Option<Vec<WrittenFile>>, PublishError> {
    let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let key_columns = key_indices(def);
    let schema = def.arrow_schema();
    let fields: Vec<SortField> =
        key_columns.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
    let converter = RowConverter::new(fields)?;
    let mut writer =
        tapped(CanonicalWriter::new(out_dir, "part", schema, &keys, &opts.write_options())?, opts, tap);
    let mut last: Option<OwnedRow> = None;
    let mut failure = None;
    let sorted = for_each_source_batch(def, format, source, max_batch_rows, &[], |batch| {
        let columns: Vec<ArrayRef> = key_columns.iter().map(|&i| Arc::clone(batch.column(i))).collect();
        let rows = converter.convert_columns(&columns)?;
        for row in 0..rows.num_rows() {
            let current = rows.row(row);
            let order = match &last {
                Some(previous) if row == 0 => previous.row().cmp(&current),
                _ if row > 0 => rows.row(row - 1).cmp(&current),
                _ => std::cmp::Ordering::Less,
            };
            match order {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    let key = format_key(def, &batch, &key_columns, row)?;
                    failure = Some(PublishError::DuplicateKey { key });
                    return Ok(false);
                }
                std::cmp::Ordering::Greater => return Ok(false),
            }
        }
        if rows.num_rows() > 0 {
            last = Some(rows.row(rows.num_rows() - 1).owned());
        }
        writer.write(&batch)?;
        Ok(true)
    })?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if sorted {
        return Ok(Some(writer.finish()?));
    }
    let abandoned = writer.abandon();
    for path in abandoned {
        std::fs::remove_file(&path).map_err(io_error(format!("removing {}", path.display())))?;
    }
    Ok(None)
}

/// Rows per batch (at most `max_rows`) so that one batch holds about [`TARGET_BATCH_BYTES`] of
/// `bytes` over `rows`.
fn output_batch_rows(bytes: usize, rows: usize, max_rows: usize) -> usize {
    let per_row = (bytes / rows.max(1)).max(1);
    (TARGET_BATCH_BYTES / per_row).clamp(1, max_rows.max(1))
}

/// Calls `each` with every batch of the source, checked and cast to the definition, until it
/// returns `false`. Returns whether every batch was seen. The columns `dictionaries` names (of a
/// Parquet source) come as the source's dictionaries ([`dictionary::sort_schema`]).
fn for_each_source_batch(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    max_batch_rows: usize,
    dictionaries: &[usize],
    each: impl FnMut(RecordBatch) -> Result<bool, PublishError>,
) -> Result<bool, PublishError> {
    match format {
        SourceFormat::Csv => read_csv(def, source, max_batch_rows, each),
        SourceFormat::Parquet => read_parquet_source(def, source, max_batch_rows, dictionaries, each),
    }
}

/// Reads whole Parquet files into batches (for tests and tools).
pub fn read_parquet_files(paths: &[PathBuf]) -> Result<Vec<RecordBatch>, PublishError> {
    let mut batches = Vec::new();
    for path in paths {
        let file = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        for batch in reader {
            batches.push(batch?);
        }
    }
    Ok(batches)
}

/// Casts a source batch to the definition; `rows_before` counts the source rows already read.
fn conform(
    def: &DatasetDefinition,
    batch: &RecordBatch,
    rows_before: u64,
) -> Result<RecordBatch, PublishError> {
    conform_with(def, batch, rows_before, None)
}

/// [`conform`], keeping the dictionary columns `kept` names (with the schema of the sort's
/// batches) as they are.
fn conform_with(
    def: &DatasetDefinition,
    batch: &RecordBatch,
    rows_before: u64,
    kept: Option<(&[usize], &arrow::datatypes::SchemaRef)>,
) -> Result<RecordBatch, PublishError> {
    let conformed = match kept {
        Some((columns, schema)) => dictionary::conform(def, batch, columns, schema),
        None => conform_batch(def, batch),
    };
    conformed.map_err(|e| match e {
        ConformError::Schema(mismatch) => PublishError::Schema(mismatch),
        ConformError::Cast { column, message } => source_error(format!("column `{column}`: {message}")),
        ConformError::Null { column, row } => {
            let row = rows_before + row as u64 + 1;
            if def.column(&column).is_some_and(|c| c.key) {
                PublishError::NullKey { column, row }
            } else {
                PublishError::NullInNonNullable { column, row }
            }
        }
    })
}

fn open_source(source: &Path) -> Result<File, PublishError> {
    File::open(source).map_err(io_error(format!("opening source {}", source.display())))
}

/// The header names of a CSV file, without a UTF-8 BOM.
fn read_csv_header(source: &Path) -> Result<Vec<String>, PublishError> {
    let file = open_source(source)?;
    let (schema, _) = Format::default()
        .with_header(true)
        .infer_schema(BufReader::new(file), Some(0))
        .map_err(|e| source_error(format!("reading the CSV header: {e}{UTF8_HINT}")))?;
    let mut names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if let Some(first) = names.first_mut()
        && let Some(stripped) = first.strip_prefix('\u{feff}')
    {
        *first = stripped.to_owned();
    }
    if names.iter().all(|n| n.is_empty()) {
        return Err(source_error("the CSV file is empty; a header row naming the columns is required"));
    }
    Ok(names)
}

const UTF8_HINT: &str = " (CSV must be UTF-8; re-encode GBK exports)";

fn read_csv(
    def: &DatasetDefinition,
    source: &Path,
    max_batch_rows: usize,
    mut each: impl FnMut(RecordBatch) -> Result<bool, PublishError>,
) -> Result<bool, PublishError> {
    let header = read_csv_header(source)?;
    let problems = check_names(def, header.iter().map(String::as_str));
    if !problems.is_empty() {
        return Err(PublishError::Schema(SchemaMismatch { problems }));
    }
    let fields: Vec<Field> = header
        .iter()
        .filter_map(|name| def.column(name))
        .map(|c| match c.column_type {
            ColumnType::Binary => Field::new(&c.name, DataType::Utf8, true),
            _ => Field::new(&c.name, c.column_type.to_arrow(), true),
        })
        .collect();
    let reader = ReaderBuilder::new(Arc::new(Schema::new(fields)))
        .with_header(true)
        .with_batch_size(max_batch_rows.max(1))
        .build(BufReader::new(open_source(source)?))
        .map_err(|e| source_error(e.to_string()))?;
    let mut rows_before = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| source_error(name_csv_columns(&e.to_string(), &header)))?;
        check_csv_text(&batch)?;
        let batch = decode_hex_columns(def, batch, rows_before)?;
        let rows = batch.num_rows() as u64;
        if !each(conform(def, &batch, rows_before)?)? {
            return Ok(false);
        }
        rows_before += rows;
    }
    Ok(true)
}

/// Refuses text that is not UTF-8. arrow's CSV reader builds its string columns without checking
/// them, and the Parquet written from such a column does not read back: a version its consumers
/// could not read. Checking each text column in full is one pass over bytes already in memory.
fn check_csv_text(batch: &RecordBatch) -> Result<(), PublishError> {
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8)
            && let Err(e) = column.to_data().validate_full()
        {
            return Err(source_error(format!("column {} is not valid UTF-8 text: {e}", field.name())));
        }
    }
    Ok(())
}

/// Adds the column name to arrow's CSV messages, which number columns (`column 3` is 0-based,
/// `field 4` is 1-based), and the UTF-8 hint to encoding errors.
fn name_csv_columns(message: &str, header: &[String]) -> String {
    let mut out = message.to_owned();
    for (marker, base) in [("column ", 0usize), ("field ", 1usize)] {
        let Some(at) = out.find(marker) else { continue };
        let digits_start = at + marker.len();
        let digits: String = out[digits_start..].chars().take_while(char::is_ascii_digit).collect();
        let name = digits.parse::<usize>().ok().and_then(|n| n.checked_sub(base)).and_then(|i| header.get(i));
        if let Some(name) = name {
            out.insert_str(digits_start + digits.len(), &format!(" (`{name}`)"));
        }
    }
    if message.contains("UTF-8") {
        out.push_str(UTF8_HINT);
    }
    out
}

/// Replaces the hex text of `binary` columns by bytes.
fn decode_hex_columns(
    def: &DatasetDefinition,
    batch: RecordBatch,
    rows_before: u64,
) -> Result<RecordBatch, PublishError> {
    let binary: Vec<&str> =
        def.columns.iter().filter(|c| c.column_type == ColumnType::Binary).map(|c| c.name.as_str()).collect();
    if binary.is_empty() {
        return Ok(batch);
    }
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        if !binary.contains(&field.name().as_str()) {
            fields.push(Field::clone(field));
            arrays.push(Arc::clone(array));
            continue;
        }
        let mut builder = BinaryBuilder::with_capacity(array.len(), 0);
        for (row, text) in array.as_string::<i32>().iter().enumerate() {
            match text.map(hex::decode).transpose() {
                Ok(value) => builder.append_option(value),
                Err(e) => {
                    let row = rows_before + row as u64 + 1;
                    let message = format!("column `{}` row {row}: not hex: {e}", field.name());
                    return Err(source_error(message));
                }
            }
        }
        fields.push(Field::new(field.name(), DataType::Binary, true));
        arrays.push(Arc::new(builder.finish()));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

fn read_parquet_source(
    def: &DatasetDefinition,
    source: &Path,
    max_batch_rows: usize,
    dictionaries: &[usize],
    mut each: impl FnMut(RecordBatch) -> Result<bool, PublishError>,
) -> Result<bool, PublishError> {
    let not_parquet = |e: ParquetError| source_error(format!("not a readable Parquet file: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(open_source(source)?).map_err(not_parquet)?;
    let declared = declared_rows(builder.metadata(), source).map_err(|e| source_error(e.to_string()))?;
    check_schema(def, builder.schema()).map_err(PublishError::Schema)?;
    // Rows of large values (documents, images) come in smaller batches: one array holds at most
    // 2 GiB of values.
    let metadata = builder.metadata();
    let bytes: i64 = metadata.row_groups().iter().map(|g| g.total_byte_size()).sum();
    let batch_rows = output_batch_rows(bytes.max(0) as usize, declared.max(0) as usize, max_batch_rows);
    let sort_schema = dictionary::sort_schema(def, dictionaries);
    let kept = (!dictionaries.is_empty()).then_some((dictionaries, &sort_schema));
    let mut rows_before = 0u64;
    let mut read = |reader: ParquetRecordBatchReader| -> Result<bool, PublishError> {
        for batch in reader {
            let batch = batch.map_err(|e| source_error(format!("reading Parquet data: {e}")))?;
            let rows = batch.num_rows() as u64;
            if !each(conform_with(def, &batch, rows_before, kept)?)? {
                return Ok(false);
            }
            rows_before += rows;
        }
        Ok(true)
    };
    if kept.is_none() {
        if !read(builder.with_batch_size(batch_rows).build().map_err(not_parquet)?)? {
            return Ok(false);
        }
    } else {
        let hint = dictionary::with_dictionaries(builder.schema(), def, dictionaries);
        let options = ArrowReaderOptions::new().with_schema(hint);
        let metadata =
            ArrowReaderMetadata::try_new(Arc::clone(builder.metadata()), options).map_err(not_parquet)?;
        // A reader a row group: a batch across two row groups would hold two dictionaries, which
        // the reader makes one of by expanding and hashing every value.
        for group in 0..metadata.metadata().num_row_groups() {
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(open_source(source)?, metadata.clone())
                    .with_row_groups(vec![group])
                    .with_batch_size(batch_rows)
                    .build()
                    .map_err(not_parquet)?;
            if !read(reader)? {
                return Ok(false);
            }
        }
    }
    check_rows_decoded(source, declared, rows_before).map_err(|e| source_error(e.to_string()))?;
    Ok(true)
}

fn key_indices(def: &DatasetDefinition) -> Vec<usize> {
    def.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect()
}

fn format_key(
    def: &DatasetDefinition,
    batch: &RecordBatch,
    keys: &[usize],
    row: usize,
) -> Result<String, ArrowError> {
    let names = keys.iter().map(|&i| def.columns[i].name.as_str());
    let arrays: Vec<&dyn Array> = keys.iter().map(|&i| batch.column(i).as_ref()).collect();
    format_values(names, &arrays, row)
}

/// `(name=value, …)` of `row` of `arrays`.
fn format_values<'a>(
    names: impl Iterator<Item = &'a str>,
    arrays: &[&dyn Array],
    row: usize,
) -> Result<String, ArrowError> {
    let options = FormatOptions::default();
    let mut parts = Vec::with_capacity(arrays.len());
    for (name, array) in names.zip(arrays) {
        let formatter = ArrayFormatter::try_new(*array, &options)?;
        parts.push(format!("{name}={}", formatter.value(row)));
    }
    Ok(format!("({})", parts.join(", ")))
}

impl From<TableError> for PublishError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Io { path, source } => {
                Self::Io { context: format!("writing {}", path.display()), source }
            }
            TableError::Parquet { source, .. } => Self::Parquet(source),
            TableError::Arrow(e) => Self::Table(e),
            other => Self::Table(ArrowError::ExternalError(Box::new(other))),
        }
    }
}

#[cfg(test)]
mod tests;
