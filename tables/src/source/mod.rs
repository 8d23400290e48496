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
//! 3. Sort by the key columns in declared order, ascending in arrow's order (numbers by value,
//!    strings by UTF-8 bytes), and refuse adjacent equal keys.
//! 4. Write `part-00000.parquet`, `part-00001.parquet`, … of at most `rows_per_file` rows each
//!    through [`CanonicalWriter`] (each through `<name>.tmp`, fsync, rename; then fsync the
//!    directory), so the bytes depend only on the rows and [`PublishOptions::write_options`]. A
//!    0-row table writes one 0-row file carrying the schema.
//!
//! ## Limits
//! This first version loads the whole table in memory (about twice its Arrow size while sorting);
//! a later change makes it a streaming external sort. A table is capped by Arrow's 32-bit string
//! offsets per column (2 GiB of text) since it is concatenated into one batch. Files already
//! written to `out_dir` are left there when a later step fails; `out_dir` is the caller's staging
//! directory. Sources are an operator's upload: their decompressed size is not capped yet.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch};
use arrow::compute::kernels::{boolean, cmp};
use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::csv::ReaderBuilder;
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use ferry_proto::SourceFormat;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::errors::ParquetError;

pub use crate::canonical::WrittenFile;
use crate::canonical::{CanonicalWriter, WriteOptions};
use crate::error::TableError;
use crate::sorted::{check_rows_decoded, declared_rows};

use super::definition::{
    ColumnType, ConformError, DatasetDefinition, SchemaMismatch, check_names, check_schema, conform_batch,
};

/// Rows decoded per batch when reading a source.
const READ_BATCH_ROWS: usize = 65_536;

/// How published files are cut and compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Most rows in one Parquet file (at least 1).
    pub rows_per_file: usize,
    /// Most rows in one row group (at least 1).
    pub row_group_rows: usize,
    /// zstd level for data pages (1..=22).
    pub zstd_level: i32,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self { rows_per_file: 262_144, row_group_rows: 65_536, zstd_level: 3 }
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
/// `out_dir` (which must exist). Returns the files in name order.
pub fn write_sorted_parquet(
    def: &DatasetDefinition,
    format: SourceFormat,
    source: &Path,
    out_dir: &Path,
    opts: &PublishOptions,
) -> Result<Vec<WrittenFile>, PublishError> {
    let batches = match format {
        SourceFormat::Csv => read_csv(def, source)?,
        SourceFormat::Parquet => read_parquet_source(def, source)?,
    };
    let table = concat_batches(&def.arrow_schema(), &batches)?;
    drop(batches);
    let sorted = sort_by_key(def, &table)?;
    drop(table);
    check_unique_keys(def, &sorted)?;
    write_files(def, &sorted, out_dir, opts)
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
    conform_batch(def, batch).map_err(|e| match e {
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

fn read_csv(def: &DatasetDefinition, source: &Path) -> Result<Vec<RecordBatch>, PublishError> {
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
        .with_batch_size(READ_BATCH_ROWS)
        .build(BufReader::new(open_source(source)?))
        .map_err(|e| source_error(e.to_string()))?;
    let mut batches = Vec::new();
    let mut rows_before = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| source_error(name_csv_columns(&e.to_string(), &header)))?;
        let batch = decode_hex_columns(def, batch, rows_before)?;
        batches.push(conform(def, &batch, rows_before)?);
        rows_before += batch.num_rows() as u64;
    }
    Ok(batches)
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

fn read_parquet_source(def: &DatasetDefinition, source: &Path) -> Result<Vec<RecordBatch>, PublishError> {
    let not_parquet = |e: ParquetError| source_error(format!("not a readable Parquet file: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(open_source(source)?).map_err(not_parquet)?;
    let declared = declared_rows(builder.metadata(), source).map_err(|e| source_error(e.to_string()))?;
    check_schema(def, builder.schema()).map_err(PublishError::Schema)?;
    let reader = builder.with_batch_size(READ_BATCH_ROWS).build().map_err(not_parquet)?;
    let mut batches = Vec::new();
    let mut rows_before = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| source_error(format!("reading Parquet data: {e}")))?;
        batches.push(conform(def, &batch, rows_before)?);
        rows_before += batch.num_rows() as u64;
    }
    check_rows_decoded(source, declared, rows_before).map_err(|e| source_error(e.to_string()))?;
    Ok(batches)
}

fn key_indices(def: &DatasetDefinition) -> Vec<usize> {
    def.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect()
}

fn sort_by_key(def: &DatasetDefinition, table: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    if table.num_rows() <= 1 {
        return Ok(table.clone());
    }
    let columns: Vec<SortColumn> = key_indices(def)
        .into_iter()
        .map(|i| SortColumn {
            values: Arc::clone(table.column(i)),
            options: Some(SortOptions { descending: false, nulls_first: true }),
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(table, &indices)
}

/// Fails on the first pair of adjacent rows of `sorted` with equal keys.
fn check_unique_keys(def: &DatasetDefinition, sorted: &RecordBatch) -> Result<(), PublishError> {
    let rows = sorted.num_rows();
    if rows < 2 {
        return Ok(());
    }
    let keys = key_indices(def);
    let mut same: Option<BooleanArray> = None;
    for &i in &keys {
        let column = sorted.column(i);
        let equal = cmp::eq(&column.slice(1, rows - 1), &column.slice(0, rows - 1))?;
        same = Some(match same {
            None => equal,
            Some(previous) => boolean::and(&previous, &equal)?,
        });
    }
    let Some(same) = same else { return Ok(()) };
    if same.true_count() == 0 {
        return Ok(());
    }
    let Some(first) = same.iter().position(|v| v == Some(true)) else {
        return Ok(());
    };
    Err(PublishError::DuplicateKey { key: format_key(def, sorted, &keys, first + 1)? })
}

fn format_key(
    def: &DatasetDefinition,
    batch: &RecordBatch,
    keys: &[usize],
    row: usize,
) -> Result<String, ArrowError> {
    let options = FormatOptions::default();
    let mut parts = Vec::with_capacity(keys.len());
    for &i in keys {
        let formatter = ArrayFormatter::try_new(batch.column(i).as_ref(), &options)?;
        parts.push(format!("{}={}", def.columns[i].name, formatter.value(row)));
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

fn write_files(
    def: &DatasetDefinition,
    sorted: &RecordBatch,
    out_dir: &Path,
    opts: &PublishOptions,
) -> Result<Vec<WrittenFile>, PublishError> {
    let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let mut writer = CanonicalWriter::new(out_dir, "part", def.arrow_schema(), &keys, &opts.write_options())?;
    writer.write(sorted)?;
    Ok(writer.finish()?)
}

#[cfg(test)]
mod tests;
