//! Row prints: one 64-bit digest per row of its non-key values, kept beside a publisher's head
//! table, so that the next publish's diff ([`super::diff_stream`]) can tell whether the row of
//! a key found in both versions changed without decoding the head's values: it reads the head's
//! key columns and its prints, and compares each matched row's print with the new row's. The
//! new rows' prints are computed as the new table is written, and kept as the next head's.
//!
//! ## The digest
//! Equal rows (as [`super`] defines row equality: null equal to null, floats by bit pattern,
//! nested values by their row-format encoding) have equal prints: a value's hash depends only
//! on its logical value (a dictionary's entries hash as the plain values do; `Utf8`,
//! `LargeUtf8` and `Utf8View` alike), a null hashes to a constant of its own, and the print
//! folds the non-key columns' hashes in schema order by a step that is a bijection of each
//! column's hash, so two rows that differ in one column have different prints whenever that
//! column's hashes differ. Fixed-width values of at most 8 bytes hash by a bijection (the
//! finalizer of MurmurHash3), so they never collide; longer and variable-width values by XXH3-64.
//! Rows that differ may still share a print, with a probability of about 2^-64 per matched row:
//! that row's update would be missing from the delta. A consumer applying that delta would
//! notice (its rebuilt file would not hash as the manifest says) and fetch the table instead;
//! the publisher's own table and manifest come from the sort, never from the delta.
//!
//! ## The file
//! The prints, one little-endian `u64` per row in the table's order, then a trailer of
//! [`TRAILER`] bytes: the magic `FERRYRP1`, the format ([`PRINTS_FORMAT`], u32) and a zero u32,
//! the row count (u64), the binding to the table ([`binding`]: a BLAKE3 of the table files'
//! BLAKE3 hashes), the BLAKE3 of the prints before the trailer, and the magic again. The diff
//! writes the prints ([`PrintsWriter`]); the publisher seals them once the table's hashes are
//! known ([`seal`]); the next publish checks the whole file against the head's manifest before
//! it trusts a print ([`check`]), and diffs by values when the check fails.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, GenericByteArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{ArrowNativeType, ByteArrayType, DataType, Schema};
use arrow::row::{RowConverter, SortField};
use twox_hash::XxHash3_64;

use crate::error::TableError;

/// Version of the digest and of the file; raise it when either changes, so that the prints an
/// older node kept are refused (and the diff compares values) rather than misread.
pub const PRINTS_FORMAT: u32 = 1;

/// Bytes of the file's trailer.
pub const TRAILER: usize = 96;

const MAGIC: &[u8; 8] = b"FERRYRP1";

/// The print of a row before its first column.
const START: u64 = 0x9E37_79B9_7F4A_7C15;
/// The fold's multiplier (odd, so multiplying by it is a bijection).
const STEP: u64 = 0xD6E8_FEB8_6659_FD93;
/// The hash of a null.
const NULL: u64 = 0x2545_F491_4F6C_DD1D;

/// MurmurHash3's 64-bit finalizer: a bijection that mixes every bit into every other.
fn mix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// One column's step of a print: for a fixed `print`, a bijection of `hash`.
fn fold(print: u64, hash: u64) -> u64 {
    (print.rotate_left(23) ^ hash).wrapping_mul(STEP)
}

fn bytes_hash(bytes: &[u8]) -> u64 {
    XxHash3_64::oneshot(bytes)
}

/// How one non-key column is hashed.
enum PrintedColumn {
    /// By its values' hashes ([`value_hashes`]).
    Values(usize),
    /// By the XXH3 of each value's row-format encoding (types [`value_hashes`] does not know).
    Encoded(usize, RowConverter),
}

/// Computes the prints of rows of one schema.
pub struct RowPrinter {
    columns: Vec<PrintedColumn>,
    hashes: Vec<u64>,
}

impl std::fmt::Debug for RowPrinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowPrinter").field("columns", &self.columns.len()).finish_non_exhaustive()
    }
}

/// Whether [`value_hashes`] hashes values of `data_type` itself.
fn hashed_directly(data_type: &DataType) -> bool {
    match data_type {
        DataType::Null
        | DataType::Boolean
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => true,
        DataType::Dictionary(_, values) => hashed_directly(values),
        other => other.primitive_width().is_some(),
    }
}

impl RowPrinter {
    /// A printer of rows of `schema` whose key columns are at `key_indices`.
    pub fn new(schema: &Schema, key_indices: &[usize]) -> Result<Self, TableError> {
        let mut columns = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if key_indices.contains(&i) {
                continue;
            }
            if hashed_directly(field.data_type()) {
                columns.push(PrintedColumn::Values(i));
            } else {
                let converter = RowConverter::new(vec![SortField::new(field.data_type().clone())])?;
                columns.push(PrintedColumn::Encoded(i, converter));
            }
        }
        Ok(Self { columns, hashes: Vec::new() })
    }

    /// Appends the print of each row of `batch` to `out`.
    pub fn print(&mut self, batch: &RecordBatch, out: &mut Vec<u64>) -> Result<(), TableError> {
        let start = out.len();
        out.resize(start + batch.num_rows(), START);
        let prints = &mut out[start..];
        for column in &self.columns {
            self.hashes.clear();
            match column {
                PrintedColumn::Values(i) => value_hashes(batch.column(*i).as_ref(), &mut self.hashes)?,
                PrintedColumn::Encoded(i, converter) => {
                    let rows = converter.convert_columns(std::slice::from_ref(batch.column(*i)))?;
                    self.hashes.extend(rows.iter().map(|row| bytes_hash(row.as_ref())));
                }
            }
            for (print, &hash) in prints.iter_mut().zip(&self.hashes) {
                *print = fold(*print, hash);
            }
        }
        Ok(())
    }
}

/// Appends the hash of each value of `array` (of a type [`hashed_directly`] accepts) to `out`.
fn value_hashes(array: &dyn Array, out: &mut Vec<u64>) -> Result<(), TableError> {
    let len = array.len();
    let nulls = array.nulls();
    let valid = |i: usize| nulls.is_none_or(|n| n.is_valid(i));
    match array.data_type() {
        DataType::Null => out.extend(std::iter::repeat_n(NULL, len)),
        DataType::Boolean => {
            let a = array.as_boolean();
            out.extend((0..len).map(|i| if valid(i) { mix(1 + u64::from(a.value(i))) } else { NULL }));
        }
        DataType::Utf8 => byte_array_hashes(array.as_string::<i32>(), out)?,
        DataType::LargeUtf8 => byte_array_hashes(array.as_string::<i64>(), out)?,
        DataType::Utf8View => {
            let a = array.as_string_view();
            out.extend((0..len).map(|i| if valid(i) { bytes_hash(a.value(i).as_bytes()) } else { NULL }));
        }
        DataType::Binary => byte_array_hashes(array.as_binary::<i32>(), out)?,
        DataType::LargeBinary => byte_array_hashes(array.as_binary::<i64>(), out)?,
        DataType::BinaryView => {
            let a = array.as_binary_view();
            out.extend((0..len).map(|i| if valid(i) { bytes_hash(a.value(i)) } else { NULL }));
        }
        DataType::FixedSizeBinary(_) => {
            let a = array.as_fixed_size_binary();
            out.extend((0..len).map(|i| if valid(i) { bytes_hash(a.value(i)) } else { NULL }));
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let mut entries = Vec::with_capacity(dictionary.values().len());
            value_hashes(dictionary.values().as_ref(), &mut entries)?;
            let keys = dictionary.keys();
            for (i, key) in dictionary.normalized_keys().into_iter().enumerate() {
                let hash = if keys.is_valid(i) { entries.get(key).copied() } else { Some(NULL) };
                out.push(hash.ok_or_else(|| TableError::invalid("a dictionary key past its values"))?);
            }
        }
        other => {
            let width = other
                .primitive_width()
                .ok_or_else(|| TableError::invalid(format!("row prints cannot hash {other} values")))?;
            let data = array.to_data();
            let Some(buffer) = data.buffers().first() else {
                return Err(TableError::invalid(format!("a {other} array without values")));
            };
            let at = data.offset();
            let Some(values) = buffer.as_slice().get(at * width..(at + len) * width) else {
                return Err(TableError::invalid(format!("a {other} array shorter than its length")));
            };
            match width {
                1 => fixed_hashes::<1>(values, nulls, out),
                2 => fixed_hashes::<2>(values, nulls, out),
                4 => fixed_hashes::<4>(values, nulls, out),
                8 => fixed_hashes::<8>(values, nulls, out),
                _ => out.extend(
                    values
                        .chunks_exact(width)
                        .enumerate()
                        .map(|(i, value)| if valid(i) { bytes_hash(value) } else { NULL }),
                ),
            }
        }
    }
    Ok(())
}

/// Appends the hash of each `W`-byte little-endian value of `values` (at most 8 bytes: the
/// value zero-extended to 64 bits, mixed by a bijection).
fn fixed_hashes<const W: usize>(values: &[u8], nulls: Option<&NullBuffer>, out: &mut Vec<u64>) {
    let hash = |value: &[u8]| {
        let mut word = [0u8; 8];
        word[..W].copy_from_slice(value);
        mix(u64::from_le_bytes(word))
    };
    match nulls {
        None => out.extend(values.chunks_exact(W).map(hash)),
        Some(nulls) => out.extend(
            values
                .chunks_exact(W)
                .zip(nulls.iter())
                .map(|(value, valid)| if valid { hash(value) } else { NULL }),
        ),
    }
}

/// Appends the hash of each value of a string or binary array, read through its offsets.
fn byte_array_hashes<T: ByteArrayType>(
    array: &GenericByteArray<T>,
    out: &mut Vec<u64>,
) -> Result<(), TableError> {
    let (offsets, data, nulls) = (array.value_offsets(), array.value_data(), array.nulls());
    let bad = || TableError::invalid("a byte array whose offsets pass its data");
    for (i, pair) in offsets.windows(2).enumerate() {
        if nulls.is_some_and(|n| n.is_null(i)) {
            out.push(NULL);
            continue;
        }
        let (start, end) = (pair[0].as_usize(), pair[1].as_usize());
        out.push(bytes_hash(data.get(start..end).ok_or_else(bad)?));
    }
    Ok(())
}

/// The binding of prints to the table they describe: a BLAKE3 (keyed by context) of the table
/// files' BLAKE3 hashes, in the manifest's order.
pub fn binding<'a>(table_hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("ferry row prints binding 2026-12 v1");
    for hash in table_hashes {
        hasher.update(hash);
    }
    *hasher.finalize().as_bytes()
}

/// Writes the prints of a table as its rows come, without the trailer ([`seal`] adds it).
pub struct PrintsWriter {
    path: PathBuf,
    file: BufWriter<File>,
    hasher: blake3::Hasher,
    rows: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PrintsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrintsWriter").field("path", &self.path).field("rows", &self.rows).finish()
    }
}

/// Prints written whole, not yet sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintsBody {
    pub path: PathBuf,
    pub rows: u64,
    blake3: [u8; 32],
}

impl PrintsWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, TableError> {
        let file = File::create(path).map_err(TableError::io(path))?;
        Ok(Self {
            path: path.to_owned(),
            file: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            rows: 0,
            bytes: Vec::new(),
        })
    }

    /// Appends the prints of the next rows.
    pub fn append(&mut self, prints: &[u64]) -> Result<(), TableError> {
        self.bytes.clear();
        self.bytes.extend(prints.iter().flat_map(|p| p.to_le_bytes()));
        self.hasher.update(&self.bytes);
        self.file.write_all(&self.bytes).map_err(TableError::io(&self.path))?;
        self.rows += prints.len() as u64;
        Ok(())
    }

    /// Flushes the prints (not synced: prints are checked before each use).
    pub fn finish(self) -> Result<PrintsBody, TableError> {
        let Self { path, file, hasher, rows, .. } = self;
        file.into_inner().map_err(|e| TableError::io(&path)(e.into_error()))?;
        Ok(PrintsBody { blake3: *hasher.finalize().as_bytes(), path, rows })
    }
}

fn trailer(rows: u64, binding: &[u8; 32], body: &[u8; 32]) -> [u8; TRAILER] {
    let mut t = [0u8; TRAILER];
    t[..8].copy_from_slice(MAGIC);
    t[8..12].copy_from_slice(&PRINTS_FORMAT.to_le_bytes());
    t[16..24].copy_from_slice(&rows.to_le_bytes());
    t[24..56].copy_from_slice(binding);
    t[56..88].copy_from_slice(body);
    t[88..].copy_from_slice(MAGIC);
    t
}

/// Appends the trailer that binds `body` to the table whose [`binding`] is `binding`.
pub fn seal(body: &PrintsBody, binding: &[u8; 32]) -> Result<(), TableError> {
    let path = &body.path;
    let mut file = OpenOptions::new().append(true).open(path).map_err(TableError::io(path))?;
    let expected = body.rows.checked_mul(8).ok_or_else(|| TableError::invalid("too many prints"))?;
    let len = file.metadata().map_err(TableError::io(path))?.len();
    if len != expected {
        return Err(TableError::invalid(format!(
            "{}: {len} bytes where {} prints were written",
            path.display(),
            body.rows
        )));
    }
    file.write_all(&trailer(body.rows, binding, &body.blake3)).map_err(TableError::io(path))
}

/// Checks that `path` holds sealed prints of `rows` rows bound to `binding`, their BLAKE3
/// included (the whole file is read). An error says why they may not be used.
pub fn check(path: &Path, rows: u64, binding: &[u8; 32]) -> Result<(), TableError> {
    let refused = |why: &str| TableError::invalid(format!("{}: {why}", path.display()));
    let mut file = File::open(path).map_err(TableError::io(path))?;
    let len = file.metadata().map_err(TableError::io(path))?.len();
    let body = rows.checked_mul(8).ok_or_else(|| refused("too many rows"))?;
    if len != body.saturating_add(TRAILER as u64) {
        return Err(refused(&format!("{len} bytes, not the {rows} prints and trailer of the table")));
    }
    let mut t = [0u8; TRAILER];
    file.seek(SeekFrom::Start(body)).map_err(TableError::io(path))?;
    file.read_exact(&mut t).map_err(TableError::io(path))?;
    if &t[..8] != MAGIC || &t[88..] != MAGIC {
        return Err(refused("not sealed row prints"));
    }
    let format = u32::from_le_bytes(t[8..12].try_into().unwrap_or_default());
    if format != PRINTS_FORMAT {
        return Err(refused(&format!("format {format}, this node reads {PRINTS_FORMAT}")));
    }
    if u64::from_le_bytes(t[16..24].try_into().unwrap_or_default()) != rows {
        return Err(refused("prints of another row count"));
    }
    if &t[24..56] != binding {
        return Err(refused("prints of another table"));
    }
    file.seek(SeekFrom::Start(0)).map_err(TableError::io(path))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader((&mut file).take(body)).map_err(TableError::io(path))?;
    if hasher.finalize().as_bytes()[..] != t[56..88] {
        return Err(refused("the prints do not match their BLAKE3 (damaged)"));
    }
    Ok(())
}

/// Reads checked prints in order, as many as each batch of the table has rows.
pub(crate) struct PrintsReader {
    path: PathBuf,
    file: BufReader<File>,
    left: u64,
    bytes: Vec<u8>,
}

impl PrintsReader {
    /// Opens prints of `rows` rows ([`check`] them first).
    pub(crate) fn open(path: &Path, rows: u64) -> Result<Self, TableError> {
        let file = File::open(path).map_err(TableError::io(path))?;
        Ok(Self {
            path: path.to_owned(),
            file: BufReader::with_capacity(1 << 20, file),
            left: rows,
            bytes: Vec::new(),
        })
    }

    /// The next `n` prints.
    pub(crate) fn read(&mut self, n: usize) -> Result<Vec<u64>, TableError> {
        if n as u64 > self.left {
            return Err(TableError::invalid(format!(
                "{}: the table has more rows than its prints",
                self.path.display()
            )));
        }
        self.bytes.resize(n * 8, 0);
        self.file.read_exact(&mut self.bytes).map_err(TableError::io(&self.path))?;
        self.left -= n as u64;
        Ok(self.bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())).collect())
    }

    /// Checks that every print was read.
    pub(crate) fn finish(&self) -> Result<(), TableError> {
        if self.left == 0 {
            return Ok(());
        }
        Err(TableError::invalid(format!("{}: the table has fewer rows than its prints", self.path.display())))
    }
}

/// The old side of a printed diff: the head's key columns, each batch with its prints.
pub(crate) struct PrintedBatches {
    pub(crate) batches: super::KeyedBatches,
    pub(crate) prints: PrintsReader,
    pub(crate) done: bool,
}

impl Iterator for PrintedBatches {
    type Item = Result<crate::sorted::KeyedBatch, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.batches.next() {
            Some(Ok(mut keyed)) => self.prints.read(keyed.batch.num_rows()).map(|prints| {
                keyed.prints = Some(prints);
                keyed
            }),
            Some(Err(e)) => Err(e),
            None => match self.prints.finish() {
                Ok(()) => {
                    self.done = true;
                    return None;
                }
                Err(e) => Err(e),
            },
        };
        self.done = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests;
