//! The one Parquet writer every snapshot and delta file goes through, so that the bytes of a
//! file depend only on its rows (and the [`WriteOptions`]), never on how the caller happened to
//! batch them. That is what lets a consumer that rebuilt a snapshot from a delta
//! ([`crate::delta::apply`]) prove it has the provider's table: its files hash to the
//! provider's manifest entries.
//!
//! Neighbours: [`crate::source`] writes published versions through it; [`crate::delta`] writes
//! upserts, deletes and materialized snapshots through it.
//!
//! ## How output is made canonical
//! - Rows are re-chunked into batches of exactly `batch_rows` rows (the last of a file may be
//!   shorter) before the encoder sees them, so page and row-group boundaries are functions of
//!   the row sequence only.
//! - A new file starts every `rows_per_file` rows; files are `<prefix>-00000.parquet`, …
//! - Fixed writer properties: zstd at `zstd_level`, page statistics, `row_group_rows` rows per
//!   row group, at most [`PAGE_ROWS`] rows per data page, sorting-column metadata for the key
//!   columns, a bloom filter per row group of each key column (sized for the row group, 1% false
//!   positives; online key lookups skip row groups by it), `created_by = "ferry version …"`
//!   (no timestamps, no host names).
//! - Format 3: in each row group, a flat column whose sampled values hardly repeat is written
//!   without a dictionary ([`dictionary`]); a function of the row group's rows. Format 2 (every
//!   column with parquet-rs's dictionary fallback) is still written for manifests that name it.
//! - Bytes also depend on the writer: another parquet-rs encodes the same rows differently. The
//!   writer's name ([`WriteOptions::writer`]) goes into the manifest, and each file's logical hash
//!   ([`crate::rows_hash`], computed here from the chunks as they are written) beside its file
//!   hash, so that a consumer whose writer differs can still prove the rows ([`crate::proof`]).
//! - Each file is written as `<name>.tmp`, fsynced, renamed (on a thread of its own while the
//!   next file is written, [`closer`]); the directory is fsynced by [`CanonicalWriter::finish`]
//!   once every file is. Zero rows still produce one 0-row file carrying the schema.
//!
//! - Columns are encoded on a pool of threads ([`encode`]), with the bytes parquet-rs's
//!   single-threaded `ArrowWriter` writes for the same chunks and properties.
//!
//! ## Memory
//! At most `batch_rows` pending rows, referencing at most [`MAX_LOOSE_PARTS`] caller batches
//! (slices keep their parent batch alive; beyond that the slices are copied into one batch), plus
//! per open file two row groups of chunks (the one gathering and the one encoding, each at most
//! `row_group_rows` rows of Arrow data) and the encoded pages of the one encoding (about
//! `row_group_rows` × the compressed row width); see [`encode`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use ferry_proto::RelPath;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::TableError;

mod closer;
mod dictionary;
mod encode;
mod sink;

use closer::{Closer, Closing};
use encode::{FileEncoder, Pool};
use sink::HashingFile;
pub use sink::WrittenHashes;

/// Version of the canonical writer's rules (chunking, properties, rows hash encoding) that new
/// tables are written with; part of [`WriteOptions::writer`]. Raise it whenever a change makes
/// the same rows come out as other bytes, and keep writing the formats of [`WRITABLE_FORMATS`]
/// so that tables published before still rebuild to their manifests' hashes.
/// Format 2: bloom filters on key columns and at most [`PAGE_ROWS`] rows per page.
/// Format 3: as 2, and each column of each row group is dictionary-encoded only where a sample
/// of its values repeats (`dictionary`): columns of unique values are written plain.
pub const CANONICAL_FORMAT: u32 = 3;

/// What a canonical writer's name starts with, its format number after it.
const WRITER_PREFIX: &str = "ferry-canonical/";

/// The formats this writer still writes, byte for byte: a consumer rebuilding a table from a
/// delta writes in the format its manifest names ([`WriteOptions::for_manifest`]).
pub const WRITABLE_FORMATS: [u32; 2] = [2, 3];

/// Most rows in one data page: a key lookup decodes at most this many rows of each column it
/// reads (the page index tells which page holds the key).
pub const PAGE_ROWS: usize = 8_192;

/// False-positive probability of the key columns' bloom filters.
pub const BLOOM_FPP: f64 = 0.01;

/// Pending slices of caller batches kept before they are copied into one batch.
pub const MAX_LOOSE_PARTS: usize = 16;

/// How canonical files are cut and compressed. Both ends of a delta must use the same options,
/// or the rebuilt files will not hash like the provider's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Most rows in one Parquet file (at least 1).
    pub rows_per_file: usize,
    /// Most rows in one row group (at least 1).
    pub row_group_rows: usize,
    /// Rows per batch handed to the Parquet encoder, and per batch read by the merge kernels
    /// (at least 1).
    pub batch_rows: usize,
    /// zstd level for data pages (1..=22).
    pub zstd_level: i32,
    /// The canonical format written, one of [`WRITABLE_FORMATS`]; [`CANONICAL_FORMAT`] for new
    /// tables.
    pub format: u32,
    /// Test hook: write as another writer would, with this string as the footer's `created_by`
    /// and as [`WriteOptions::writer`], to play a node whose Parquet writer differs. `None`
    /// (the canonical writer) in every real use.
    pub foreign_writer: Option<String>,
}

impl From<ferry_proto::TableLayout> for WriteOptions {
    /// The options a manifest's layout records: what a consumer must write with to reproduce
    /// the publisher's files.
    fn from(l: ferry_proto::TableLayout) -> Self {
        Self {
            rows_per_file: l.rows_per_file as usize,
            row_group_rows: l.row_group_rows as usize,
            batch_rows: l.batch_rows as usize,
            zstd_level: l.zstd_level,
            format: CANONICAL_FORMAT,
            foreign_writer: None,
        }
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            rows_per_file: 262_144,
            row_group_rows: 65_536,
            batch_rows: 8_192,
            zstd_level: 3,
            format: CANONICAL_FORMAT,
            foreign_writer: None,
        }
    }
}

impl WriteOptions {
    /// The options with every count at least 1.
    fn clamped(&self) -> Self {
        Self {
            rows_per_file: self.rows_per_file.max(1),
            row_group_rows: self.row_group_rows.max(1),
            batch_rows: self.batch_rows.max(1),
            zstd_level: self.zstd_level,
            format: self.format,
            foreign_writer: self.foreign_writer.clone(),
        }
    }

    /// The options that rebuild a table a manifest describes: its layout, in the canonical
    /// format its writer names when this writer still writes that format (else the current
    /// one: the bytes will differ and the rows hash proves the table, [`crate::proof`]).
    pub fn for_manifest(layout: ferry_proto::TableLayout, writer: Option<&str>) -> Self {
        let named = writer
            .and_then(|w| w.strip_prefix(WRITER_PREFIX))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|format| format.parse::<u32>().ok())
            .filter(|format| WRITABLE_FORMATS.contains(format));
        Self { format: named.unwrap_or(CANONICAL_FORMAT), ..Self::from(layout) }
    }

    /// The name of the writer these options write with, recorded in manifests:
    /// `ferry-canonical/<format> parquet-rs/<version>`. Two writers with the same name
    /// write the same bytes for the same rows and layout.
    pub fn writer(&self) -> String {
        match &self.foreign_writer {
            Some(name) => name.clone(),
            None => {
                let created_by = parquet::file::properties::DEFAULT_CREATED_BY;
                let parquet = created_by.strip_prefix("parquet-rs version ").unwrap_or(created_by);
                format!("{WRITER_PREFIX}{} parquet-rs/{parquet}", self.format)
            }
        }
    }
}

/// Sees every row a [`CanonicalWriter`] takes, in order, as the writer takes it (a publish's
/// diff computed from the sorted stream instead of reading the table back, `crate::delta`).
pub trait RowTap: Send {
    /// Rows the writer accepted, after every row before them.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), TableError>;
    /// The writer finished its files: every row was seen.
    fn finish(&mut self) -> Result<(), TableError>;
    /// The writer was abandoned: the rows seen are void (a tap dropped without either call saw
    /// a writer that failed).
    fn abandon(&mut self);
}

/// One Parquet file written by a [`CanonicalWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Name relative to the output directory, e.g. `part-00000.parquet`.
    pub name: RelPath,
    pub path: PathBuf,
    pub rows: u64,
    pub size: u64,
    /// The logical hash of the file's rows ([`crate::rows_hash`]); `None` when the schema has a
    /// column type that hash does not cover.
    pub rows_blake3: Option<blake3::Hash>,
    /// The hashes of the file's bytes, taken as they were written: its whole-file BLAKE3 and,
    /// from a writer asked for them ([`CanonicalWriter::with_chunk_hashes`]), its chunks'.
    pub hashes: WrittenHashes,
}

/// Writes key-ordered rows into canonical Parquet files (see the module doc).
pub struct CanonicalWriter {
    dir: PathBuf,
    prefix: String,
    schema: SchemaRef,
    props: WriterProperties,
    opts: WriteOptions,
    current: Option<OpenFile>,
    pending: Pending,
    written: Vec<WrittenFile>,
    pool: Pool,
    /// Syncs and renames the files written, in order.
    closer: Closer,
    tap: Option<Box<dyn RowTap>>,
    /// Chunk size of the chunk hashes taken as each file is written, if asked for.
    chunk_hashes: Option<u32>,
}

impl std::fmt::Debug for CanonicalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanonicalWriter")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("opts", &self.opts)
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}

struct OpenFile {
    encoder: FileEncoder,
    name: RelPath,
    tmp: PathBuf,
    rows: usize,
}

/// Rows waiting to fill a `batch_rows` chunk.
#[derive(Default)]
struct Pending {
    parts: Vec<RecordBatch>,
    rows: usize,
    /// Trailing entries of `parts` that are slices of caller batches (not yet copied).
    loose: usize,
}

impl Pending {
    fn push(&mut self, schema: &SchemaRef, part: RecordBatch) -> Result<(), TableError> {
        self.rows += part.num_rows();
        self.parts.push(part);
        self.loose += 1;
        if self.loose > MAX_LOOSE_PARTS {
            let tail = self.parts.split_off(self.parts.len() - self.loose);
            self.parts.push(concat_batches(schema, &tail)?);
            self.loose = 0;
        }
        Ok(())
    }

    /// All pending rows as one batch of `schema`.
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch, TableError> {
        let chunk = match self.parts.len() {
            1 => self.parts.pop().unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))),
            _ => concat_batches(schema, &self.parts)?,
        };
        *self = Self::default();
        Ok(RecordBatch::try_new(Arc::clone(schema), chunk.columns().to_vec())?)
    }
}

/// Writer properties shared by every canonical file.
fn writer_properties(
    dir: &Path,
    schema: &SchemaRef,
    key_columns: &[String],
    opts: &WriteOptions,
) -> Result<WriterProperties, TableError> {
    let mut sorting = Vec::with_capacity(key_columns.len());
    for name in key_columns {
        let index = schema
            .index_of(name)
            .map_err(|_| TableError::invalid(format!("key column `{name}` is not in the schema")))?;
        sorting.push(SortingColumn { column_idx: index as i32, descending: false, nulls_first: true });
    }
    let level = ZstdLevel::try_new(opts.zstd_level).map_err(TableError::parquet(dir))?;
    let created_by = match &opts.foreign_writer {
        Some(name) => name.clone(),
        None => format!("ferry version {}", env!("CARGO_PKG_VERSION")),
    };
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_created_by(created_by)
        .set_sorting_columns(Some(sorting));
    for name in key_columns {
        let path = ColumnPath::from(name.as_str());
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(path, opts.row_group_rows as u64);
    }
    Ok(builder.build())
}

/// Describes the first difference between two schemas, or `None` if they are equal.
pub(crate) fn schema_difference(expected: &SchemaRef, actual: &SchemaRef) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a) = (expected.fields(), actual.fields());
    for (i, (ef, af)) in e.iter().zip(a.iter()).enumerate() {
        if ef != af {
            return Some(format!(
                "column {i}: expected `{}` {}{}, found `{}` {}{}",
                ef.name(),
                ef.data_type(),
                if ef.is_nullable() { " (nullable)" } else { "" },
                af.name(),
                af.data_type(),
                if af.is_nullable() { " (nullable)" } else { "" },
            ));
        }
    }
    if e.len() != a.len() {
        return Some(format!("expected {} columns, found {}", e.len(), a.len()));
    }
    Some("schema metadata differs".to_owned())
}

impl CanonicalWriter {
    /// A writer of `<prefix>-NNNNN.parquet` files into `dir` (which must exist). `key_columns`
    /// name the sort order recorded in the files' metadata.
    pub fn new(
        dir: &Path,
        prefix: &str,
        schema: SchemaRef,
        key_columns: &[String],
        opts: &WriteOptions,
    ) -> Result<Self, TableError> {
        let opts = opts.clamped();
        if !WRITABLE_FORMATS.contains(&opts.format) {
            return Err(TableError::invalid(format!(
                "canonical format {} cannot be written (this writer writes {WRITABLE_FORMATS:?})",
                opts.format
            )));
        }
        let props = writer_properties(dir, &schema, key_columns, &opts)?;
        let writer = Self {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
            schema,
            props,
            opts,
            current: None,
            pending: Pending::default(),
            written: Vec::new(),
            pool: Pool::default(),
            closer: Closer::default(),
            tap: None,
            chunk_hashes: None,
        };
        writer.file_name(0)?;
        Ok(writer)
    }

    /// The writer, with `tap` shown every row it takes.
    pub fn with_tap(mut self, tap: Box<dyn RowTap>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// The writer, taking the BLAKE3 of every `chunk_size`-byte chunk of each file as it writes
    /// it ([`WrittenFile::hashes`]), as a manifest lists them; `None`: the whole file's only.
    pub fn with_chunk_hashes(mut self, chunk_size: Option<u32>) -> Self {
        self.chunk_hashes = chunk_size;
        self
    }

    /// The schema every written batch must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends rows, which must come in key order after every row written before.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), TableError> {
        let batch_schema = batch.schema();
        if !Arc::ptr_eq(&batch_schema, &self.schema) && batch_schema.fields() != self.schema.fields() {
            let difference =
                schema_difference(&self.schema, &batch_schema).unwrap_or_else(|| "fields differ".to_owned());
            return Err(TableError::SchemaMismatch { file: self.dir.join(&self.prefix), difference });
        }
        if let Some(tap) = self.tap.as_mut() {
            tap.write(batch)?;
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let limit = self.chunk_limit();
            let take = (limit - self.pending.rows).min(batch.num_rows() - offset);
            self.pending.push(&self.schema, batch.slice(offset, take))?;
            offset += take;
            if self.pending.rows == limit {
                self.emit_chunk()?;
            }
        }
        Ok(())
    }

    /// Writes the last rows, closes the last file, waits until every file is synced and renamed,
    /// and fsyncs the directory. Returns the files in name order.
    pub fn finish(mut self) -> Result<Vec<WrittenFile>, TableError> {
        if self.pending.rows > 0 {
            self.emit_chunk()?;
        }
        if self.written.is_empty() && self.current.is_none() {
            self.open_file()?;
        }
        if self.current.is_some() {
            self.close_file()?;
        }
        self.closer.finish()?;
        sync_dir(&self.dir)?;
        if let Some(tap) = self.tap.as_mut() {
            tap.finish()?;
        }
        Ok(std::mem::take(&mut self.written))
    }

    /// Stops writing: removes the open temporary file and returns the paths of the files already
    /// completed (synced and renamed), which the caller removes.
    pub fn abandon(mut self) -> Vec<PathBuf> {
        if let Some(tap) = self.tap.as_mut() {
            tap.abandon();
        }
        if let Some(open) = self.current.take() {
            drop(open.encoder);
            let _ = std::fs::remove_file(&open.tmp);
        }
        // Files after a failure to close one were not renamed (their temporary files are gone).
        let renamed = self.closer.renamed();
        self.written.truncate(renamed);
        std::mem::take(&mut self.written).into_iter().map(|w| w.path).collect()
    }

    /// Rows the pending chunk must reach before it is written.
    fn chunk_limit(&self) -> usize {
        let in_file = self.current.as_ref().map_or(0, |f| f.rows);
        self.opts.batch_rows.min(self.opts.rows_per_file - in_file)
    }

    fn file_name(&self, index: usize) -> Result<RelPath, TableError> {
        let name = format!("{}-{index:05}.parquet", self.prefix);
        RelPath::parse(name.as_str()).map_err(|e| TableError::invalid(format!("file name prefix: {e}")))
    }

    fn emit_chunk(&mut self) -> Result<(), TableError> {
        let chunk = self.pending.take(&self.schema)?;
        if self.current.is_none() {
            self.open_file()?;
        }
        let Some(file) = self.current.as_mut() else {
            return Err(TableError::invalid("no open file"));
        };
        file.encoder.write(&chunk, &mut self.pool).map_err(TableError::parquet(&file.tmp))?;
        file.rows += chunk.num_rows();
        if file.rows >= self.opts.rows_per_file {
            self.close_file()?;
        }
        Ok(())
    }

    fn open_file(&mut self) -> Result<(), TableError> {
        let name = self.file_name(self.written.len())?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = HashingFile::new(File::create(&tmp).map_err(TableError::io(&tmp))?, self.chunk_hashes);
        let encoder = FileEncoder::new(file, &self.schema, self.props.clone(), self.opts.format >= 3)
            .map_err(TableError::parquet(&tmp))?;
        self.current = Some(OpenFile { encoder, name, tmp, rows: 0 });
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), TableError> {
        let Some(open) = self.current.take() else { return Ok(()) };
        let OpenFile { encoder, name, tmp, rows } = open;
        let (file, hashes, rows_blake3) = match encoder.finish(&mut self.pool) {
            Ok(done) => done,
            Err(e) => {
                // Best effort: the error that matters is `e`.
                let _ = std::fs::remove_file(&tmp);
                return Err(TableError::parquet(&tmp)(e));
            }
        };
        let path = self.dir.join(name.as_str());
        let size = hashes.size;
        self.closer.close(Closing { file, tmp, path: path.clone(), size })?;
        self.written.push(WrittenFile { name, path, rows: rows as u64, size, rows_blake3, hashes });
        Ok(())
    }
}

impl Drop for CanonicalWriter {
    fn drop(&mut self) {
        if let Some(open) = self.current.take() {
            drop(open.encoder);
            // Best effort: an abandoned writer leaves no temporary file behind.
            let _ = std::fs::remove_file(&open.tmp);
        }
    }
}

/// Makes renames durable (directories cannot be opened for sync on Windows).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), TableError> {
    if cfg!(unix) {
        let handle = File::open(dir).map_err(TableError::io(dir))?;
        handle.sync_all().map_err(TableError::io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
