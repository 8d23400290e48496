//! Low-cardinality text columns kept dictionary-encoded through the external sort
//! ([`super::external`]): a Parquet source whose text column stores a small dictionary in every
//! row group (a status, a fuel type, a province code) is read as keys into that dictionary
//! instead of one string a row, so the sort gathers, spills, reads back and merges 4-byte keys
//! where it copied (and, reading runs back, validated) strings at random places.
//!
//! Every dictionary of the source is interned into one dictionary a column for the whole sort
//! ([`Interners`]), only ever appended to, so a key means the same value in every run; a run
//! carries the dictionary as it stood when the run was closed, and the merge gives every batch
//! the final one. Keys are gathered as keys ([`interleave_column`]) where the batches share one
//! dictionary. The batches reach the canonical writer as plain `Utf8` again ([`to_plain`]), so
//! the bytes written are those of a sort of plain strings.
//!
//! Which columns ([`choose`]): text columns that are not key columns (the key's order is
//! compared in arrow's row format over plain strings), whose every row group holds a dictionary
//! page, the pages together at most 1/64 of the column's decoded bytes. A CSV source has none.
//!
//! Memory: the interned values, counted against the sort's budget ([`Interners::bytes`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::file::metadata::ParquetMetaData;

use crate::definition::{ColumnType, ConformError, DatasetDefinition};

/// The type a kept column has inside the sort.
pub(crate) fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Dictionary pages of at most this fraction (1/n) of their column's decoded bytes count as small.
const SMALL_DICTIONARY_SHARE: i64 = 64;

/// The definition's columns (indices) a Parquet source with `metadata` and arrow schema
/// `source` may keep dictionary-encoded through the sort.
pub(crate) fn choose(def: &DatasetDefinition, metadata: &ParquetMetaData, source: &Schema) -> Vec<usize> {
    let descr = metadata.file_metadata().schema_descr();
    let mut chosen = Vec::new();
    for (index, column) in def.columns.iter().enumerate() {
        if column.key || column.column_type != ColumnType::Utf8 {
            continue;
        }
        if source.field_with_name(&column.name).map(|f| f.data_type() != &DataType::Utf8).unwrap_or(true) {
            continue;
        }
        let Some(leaf) = (0..descr.num_columns()).find(|&i| descr.column(i).path().string() == column.name)
        else {
            continue;
        };
        let mut dictionary_bytes = 0i64;
        let mut chunk_bytes = 0i64;
        let every_group = metadata.row_groups().iter().all(|group| {
            let chunk = group.column(leaf);
            let Some(dictionary_at) = chunk.dictionary_page_offset() else { return false };
            dictionary_bytes += chunk.data_page_offset() - dictionary_at;
            chunk_bytes += chunk.uncompressed_size();
            true
        });
        let small = metadata.num_row_groups() > 0
            && every_group
            && dictionary_bytes > 0
            && dictionary_bytes.saturating_mul(SMALL_DICTIONARY_SHARE) <= chunk_bytes;
        if small {
            chosen.push(index);
        }
    }
    chosen
}

/// `schema` with the fields named by `columns` of `def` read as dictionaries.
pub(crate) fn with_dictionaries(schema: &Schema, def: &DatasetDefinition, columns: &[usize]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if columns.iter().any(|&c| def.columns[c].name == *field.name()) {
                Field::clone(field).with_data_type(dictionary_type())
            } else {
                Field::clone(field)
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// [`crate::definition::conform_batch`] for a batch whose `columns` (of `def`) are dictionaries:
/// those are kept as they are (checked for nulls where the definition forbids them), the others
/// cast to the definition's types. The batch has the schema [`with_dictionaries`] gives.
pub(crate) fn conform(
    def: &DatasetDefinition,
    batch: &RecordBatch,
    columns: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch, ConformError> {
    let options = arrow::compute::CastOptions { safe: false, ..Default::default() };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(def.columns.len());
    for (index, column) in def.columns.iter().enumerate() {
        let cast_error = |message: String| ConformError::Cast { column: column.name.clone(), message };
        let position = batch.schema().index_of(&column.name).map_err(|e| cast_error(e.to_string()))?;
        let source = batch.column(position);
        let target = if columns.contains(&index) { dictionary_type() } else { column.column_type.to_arrow() };
        let array = if source.data_type() == &target {
            Arc::clone(source)
        } else {
            arrow::compute::cast_with_options(source, &target, &options)
                .map_err(|e| cast_error(e.to_string()))?
        };
        if !column.nullable
            && let Some(nulls) = array.logical_nulls()
            && let Some(row) = (0..array.len()).find(|&i| nulls.is_null(i))
        {
            return Err(ConformError::Null { column: column.name.clone(), row });
        }
        arrays.push(array);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), arrays, &options)
        .map_err(|e| ConformError::Cast { column: String::from("(batch)"), message: e.to_string() })
}

/// The values of one column seen so far, each once, numbered in the order first seen.
#[derive(Default)]
struct Interner {
    keys: HashMap<String, i32>,
    values: Vec<String>,
    bytes: usize,
    /// The values as an array, made again only after a new value came.
    snapshot: Option<ArrayRef>,
}

impl Interner {
    fn intern(&mut self, value: &str) -> Result<i32, ArrowError> {
        if let Some(&key) = self.keys.get(value) {
            return Ok(key);
        }
        let key = i32::try_from(self.values.len())
            .map_err(|_| ArrowError::ComputeError("a dictionary of more than 2^31 values".to_owned()))?;
        // Each value is held twice (map and list) with their headers.
        self.bytes += 2 * value.len() + 80;
        self.keys.insert(value.to_owned(), key);
        self.values.push(value.to_owned());
        self.snapshot = None;
        Ok(key)
    }

    fn snapshot(&mut self) -> ArrayRef {
        let values = &self.values;
        Arc::clone(
            self.snapshot
                .get_or_insert_with(|| Arc::new(StringArray::from_iter_values(values.iter())) as ArrayRef),
        )
    }
}

/// The sort-wide dictionaries of the kept columns (indices into the batches' columns).
pub(crate) struct Interners {
    columns: Vec<usize>,
    each: Vec<Interner>,
}

impl Interners {
    pub(crate) fn new(columns: &[usize]) -> Self {
        Self { columns: columns.to_vec(), each: columns.iter().map(|_| Interner::default()).collect() }
    }

    /// Whether there is any kept column.
    pub(crate) fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// `batch` with its kept columns' keys moved into the sort-wide dictionaries (their values
    /// the dictionaries as they now stand).
    pub(crate) fn intern(&mut self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        if self.columns.is_empty() {
            return Ok(batch);
        }
        let mut arrays = batch.columns().to_vec();
        for (&c, interner) in self.columns.iter().zip(&mut self.each) {
            let dictionary = as_dictionary(&arrays[c])?;
            let values = dictionary.values().as_string_opt::<i32>().ok_or_else(not_text)?;
            let mapping = (0..values.len())
                .map(
                    |i| if values.is_null(i) { Ok(None) } else { interner.intern(values.value(i)).map(Some) },
                )
                .collect::<Result<Vec<Option<i32>>, ArrowError>>()?;
            let keys: Int32Array = if values.null_count() == 0 {
                // Slots under a null key hold any number: map them to 0, they stay null.
                dictionary.keys().unary(|k| mapping.get(k as usize).copied().flatten().unwrap_or(0))
            } else {
                dictionary
                    .keys()
                    .iter()
                    .map(|k| k.and_then(|k| mapping.get(k as usize).copied().flatten()))
                    .collect()
            };
            arrays[c] = Arc::new(DictionaryArray::try_new(keys, interner.snapshot())?);
        }
        RecordBatch::try_new(batch.schema(), arrays)
    }

    /// The dictionaries as they now stand, one a kept column.
    pub(crate) fn snapshots(&mut self) -> Vec<ArrayRef> {
        self.each.iter_mut().map(Interner::snapshot).collect()
    }

    /// Bytes the dictionaries hold.
    pub(crate) fn bytes(&self) -> usize {
        self.each.iter().map(|i| i.bytes).sum()
    }
}

fn as_dictionary(array: &ArrayRef) -> Result<&DictionaryArray<Int32Type>, ArrowError> {
    array
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| ArrowError::SchemaError(format!("expected a dictionary, found {}", array.data_type())))
}

fn not_text() -> ArrowError {
    ArrowError::SchemaError("a kept dictionary's values are not text".to_owned())
}

/// `batch` with the values of its kept `columns` replaced by `values` (one a column), which hold
/// every value the keys were given (a later snapshot of the same [`Interners`]).
pub(crate) fn with_values(
    batch: RecordBatch,
    columns: &[usize],
    values: &[ArrayRef],
) -> Result<RecordBatch, ArrowError> {
    if columns.is_empty() {
        return Ok(batch);
    }
    let mut arrays = batch.columns().to_vec();
    for (&c, values) in columns.iter().zip(values) {
        let dictionary = as_dictionary(&arrays[c])?;
        if !Arc::ptr_eq(dictionary.values(), values) {
            arrays[c] = Arc::new(DictionaryArray::try_new(dictionary.keys().clone(), Arc::clone(values))?);
        }
    }
    RecordBatch::try_new(batch.schema(), arrays)
}

/// `arrays` at `picks` (array, row), like [`arrow::compute::interleave`]; dictionaries that share
/// their values are gathered by their keys alone, keeping the values.
pub(crate) fn interleave_column(
    arrays: &[&dyn Array],
    picks: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    let dictionaries: Option<Vec<&DictionaryArray<Int32Type>>> =
        arrays.iter().map(|a| a.as_dictionary_opt::<Int32Type>()).collect();
    if let Some(dictionaries) = dictionaries
        && let Some(first) = dictionaries.first()
        && dictionaries.iter().all(|d| Arc::ptr_eq(d.values(), first.values()))
    {
        let keys: Vec<&Int32Array> = dictionaries.iter().map(|d| d.keys()).collect();
        let keys = super::gather::interleave_primitive(&keys, picks)?;
        let keys = keys.as_primitive::<Int32Type>().clone();
        return Ok(Arc::new(DictionaryArray::try_new(keys, Arc::clone(first.values()))?));
    }
    let texts: Option<Vec<&StringArray>> = arrays.iter().map(|a| a.as_string_opt::<i32>()).collect();
    if let Some(texts) = texts
        && !texts.is_empty()
    {
        return super::gather::interleave_text(&texts, picks);
    }
    if let Some(gathered) = super::gather::interleave_fixed(arrays, picks) {
        return gathered;
    }
    arrow::compute::interleave(arrays, picks)
}

/// `batch` with its dictionary columns decoded to the plain types of `schema` (the definition's).
pub(crate) fn to_plain(
    batch: RecordBatch,
    columns: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    if columns.is_empty() {
        return Ok(batch);
    }
    let mut arrays = batch.columns().to_vec();
    for &c in columns {
        arrays[c] = arrow::compute::cast(&arrays[c], schema.field(c).data_type())?;
    }
    RecordBatch::try_new(Arc::clone(schema), arrays)
}

/// The definition's schema with `columns` as dictionaries: the schema of the batches inside a sort.
pub(crate) fn sort_schema(def: &DatasetDefinition, columns: &[usize]) -> SchemaRef {
    let schema = def.arrow_schema();
    if columns.is_empty() {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if columns.contains(&i) {
                Field::clone(f).with_data_type(dictionary_type())
            } else {
                Field::clone(f)
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests;
