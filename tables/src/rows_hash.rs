//! The logical hash of a table file: BLAKE3 over a canonical encoding of its rows, in order,
//! that depends on the values only, never on how a Parquet writer laid them out. A consumer
//! whose writer differs from the publisher's (another parquet-rs or ferry version, as in any
//! rolling upgrade) rebuilds a table from a delta with other bytes but the same rows; it proves
//! that table by this hash where the file hash cannot agree.
//!
//! Neighbours: [`crate::canonical::CanonicalWriter`] feeds every chunk it writes to a
//! [`RowsHasher`] and reports the result in [`crate::canonical::WrittenFile::rows_blake3`];
//! [`crate::proof`] decides, per table file, whether bytes or rows must match.
//!
//! ## Encoding (`ferry-rows/1`)
//! Per column two streams, each hashed on its own so that batch boundaries do not matter:
//! - validity: one byte per row, 1 for a value, 0 for a null;
//! - values, per row: fixed-width types (integers, floats by their bits, dates, timestamps,
//!   decimals) as their little-endian bytes, zeros for a null; booleans as one byte (0 for a
//!   null); strings and binaries as their length (u64, little-endian) and bytes, length 0 for a
//!   null.
//!
//! The file's hash is BLAKE3 in derive-key mode ([`CONTEXT`]) over the row count, the column
//! count and, per column, its name, a type descriptor of this module's own (not arrow's display
//! form, which may change between arrow versions), its nullability and the two stream hashes.
//! A column of another type (nested, dictionary, …) makes the file's hash `None`: such a table
//! is proven by its bytes only. So is every table on a big-endian host, whose native bytes are
//! not the encoding's.

use arrow::array::{Array, ArrayRef, AsArray, GenericByteArray, PrimitiveArray, RecordBatch};
use arrow::datatypes::{
    ArrowPrimitiveType, ByteArrayType, DataType, Date32Type, Decimal128Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, ToByteSlice, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};

/// Key-derivation context of the file hash: names the encoding, so another encoding can never
/// produce an equal hash.
pub const CONTEXT: &str = "ferry canonical rows hash, ferry-rows/1";

/// Bytes gathered before they are handed to a hasher.
const SCRATCH: usize = 64 * 1024;

/// Streaming logical hash of one file's rows (see the module doc).
#[derive(Debug)]
pub struct RowsHasher {
    columns: Option<Vec<ColumnHasher>>,
    rows: u64,
}

/// The two streams of one column; [`crate::canonical`] updates the columns of a file on several
/// threads ([`RowsHasher::into_columns`]), each column's rows still in order.
#[derive(Debug)]
pub(crate) struct ColumnHasher {
    name: String,
    descriptor: String,
    nullable: bool,
    validity: blake3::Hasher,
    values: blake3::Hasher,
}

impl RowsHasher {
    /// A hasher for rows of `schema`; it yields `None` if a column's type has no encoding.
    pub fn new(schema: &Schema) -> Self {
        let columns = if cfg!(target_endian = "little") {
            schema
                .fields()
                .iter()
                .map(|f| {
                    descriptor(f.data_type()).map(|descriptor| ColumnHasher {
                        name: f.name().clone(),
                        descriptor,
                        nullable: f.is_nullable(),
                        validity: blake3::Hasher::new(),
                        values: blake3::Hasher::new(),
                    })
                })
                .collect::<Option<Vec<_>>>()
        } else {
            None
        };
        Self { columns, rows: 0 }
    }

    /// Adds the next rows; `batch` has the schema the hasher was made for.
    pub fn update(&mut self, batch: &RecordBatch) {
        let Some(columns) = self.columns.as_mut() else { return };
        if batch.num_columns() != columns.len() {
            self.columns = None;
            return;
        }
        for (column, array) in columns.iter_mut().zip(batch.columns()) {
            column.update(array);
        }
        self.rows += batch.num_rows() as u64;
    }

    /// The per-column hashers, to be updated one column at a time ([`ColumnHasher::update`]);
    /// `None` when the schema has a column without encoding. [`Self::from_columns`] makes the
    /// file's hasher again.
    pub(crate) fn into_columns(self) -> Option<Vec<ColumnHasher>> {
        self.columns
    }

    /// The hasher of `rows` rows whose columns were updated apart (see [`Self::into_columns`]).
    pub(crate) fn from_columns(columns: Option<Vec<ColumnHasher>>, rows: u64) -> Self {
        Self { columns, rows }
    }

    /// The hash of every row added, or `None` when the schema has a column without encoding.
    pub fn finish(self) -> Option<blake3::Hash> {
        let columns = self.columns?;
        let mut out = blake3::Hasher::new_derive_key(CONTEXT);
        out.update(&self.rows.to_le_bytes());
        out.update(&(columns.len() as u64).to_le_bytes());
        for c in columns {
            for text in [&c.name, &c.descriptor] {
                out.update(&(text.len() as u64).to_le_bytes());
                out.update(text.as_bytes());
            }
            out.update(&[u8::from(c.nullable)]);
            out.update(c.validity.finalize().as_bytes());
            out.update(c.values.finalize().as_bytes());
        }
        Some(out.finalize())
    }
}

/// This module's name for a column type, or `None` if the type has no encoding here.
fn descriptor(data_type: &DataType) -> Option<String> {
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    Some(match data_type {
        DataType::Boolean => "bool".to_owned(),
        DataType::Int8 => "i8".to_owned(),
        DataType::Int16 => "i16".to_owned(),
        DataType::Int32 => "i32".to_owned(),
        DataType::Int64 => "i64".to_owned(),
        DataType::UInt8 => "u8".to_owned(),
        DataType::UInt16 => "u16".to_owned(),
        DataType::UInt32 => "u32".to_owned(),
        DataType::UInt64 => "u64".to_owned(),
        DataType::Float32 => "f32".to_owned(),
        DataType::Float64 => "f64".to_owned(),
        DataType::Date32 => "date32".to_owned(),
        DataType::Decimal128(p, s) => format!("decimal128/{p}/{s}"),
        DataType::Timestamp(u, tz) => format!("timestamp/{}/{}", unit(u), tz.as_deref().unwrap_or("")),
        DataType::Utf8 => "utf8".to_owned(),
        DataType::LargeUtf8 => "large-utf8".to_owned(),
        DataType::Binary => "binary".to_owned(),
        DataType::LargeBinary => "large-binary".to_owned(),
        _ => return None,
    })
}

impl ColumnHasher {
    /// Adds the next values of this column.
    pub(crate) fn update(&mut self, array: &ArrayRef) {
        self.update_validity(array.as_ref());
        let values = &mut self.values;
        match array.data_type() {
            DataType::Boolean => {
                let a = array.as_boolean();
                let bytes: Vec<u8> = (0..a.len()).map(|i| u8::from(a.is_valid(i) && a.value(i))).collect();
                values.update(&bytes);
            }
            DataType::Int8 => primitive::<Int8Type>(array, values),
            DataType::Int16 => primitive::<Int16Type>(array, values),
            DataType::Int32 => primitive::<Int32Type>(array, values),
            DataType::Int64 => primitive::<Int64Type>(array, values),
            DataType::UInt8 => primitive::<UInt8Type>(array, values),
            DataType::UInt16 => primitive::<UInt16Type>(array, values),
            DataType::UInt32 => primitive::<UInt32Type>(array, values),
            DataType::UInt64 => primitive::<UInt64Type>(array, values),
            DataType::Float32 => primitive::<Float32Type>(array, values),
            DataType::Float64 => primitive::<Float64Type>(array, values),
            DataType::Date32 => primitive::<Date32Type>(array, values),
            DataType::Decimal128(..) => primitive::<Decimal128Type>(array, values),
            DataType::Timestamp(TimeUnit::Second, _) => primitive::<TimestampSecondType>(array, values),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                primitive::<TimestampMillisecondType>(array, values)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                primitive::<TimestampMicrosecondType>(array, values)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                primitive::<TimestampNanosecondType>(array, values)
            }
            DataType::Utf8 => bytes(array.as_string::<i32>(), values),
            DataType::LargeUtf8 => bytes(array.as_string::<i64>(), values),
            DataType::Binary => bytes(array.as_binary::<i32>(), values),
            DataType::LargeBinary => bytes(array.as_binary::<i64>(), values),
            // `descriptor` admits only the types above.
            _ => {}
        }
    }

    fn update_validity(&mut self, array: &dyn Array) {
        match array.logical_nulls() {
            None => {
                let ones = [1u8; 4096];
                let mut left = array.len();
                while left > 0 {
                    let n = left.min(ones.len());
                    self.validity.update(&ones[..n]);
                    left -= n;
                }
            }
            Some(nulls) => {
                let flags: Vec<u8> = nulls.iter().map(u8::from).collect();
                self.validity.update(&flags);
            }
        }
    }
}

/// Fixed-width values as their little-endian bytes (the host's, see [`RowsHasher::new`]),
/// zeros under nulls.
fn primitive<T: ArrowPrimitiveType>(array: &ArrayRef, out: &mut blake3::Hasher) {
    let a: &PrimitiveArray<T> = array.as_primitive::<T>();
    match a.logical_nulls() {
        None => {
            out.update(a.values().to_byte_slice());
        }
        Some(nulls) => {
            let masked: Vec<T::Native> = a
                .values()
                .iter()
                .zip(nulls.iter())
                .map(|(v, valid)| if valid { *v } else { T::Native::default() })
                .collect();
            out.update(masked.as_slice().to_byte_slice());
        }
    }
}

/// Strings and binaries as length and bytes, length 0 under nulls.
fn bytes<T: ByteArrayType>(array: &GenericByteArray<T>, out: &mut blake3::Hasher) {
    let mut scratch = Vec::with_capacity(SCRATCH);
    for i in 0..array.len() {
        let value: &[u8] = if array.is_valid(i) { array.value(i).as_ref() } else { &[] };
        scratch.extend_from_slice(&(value.len() as u64).to_le_bytes());
        if scratch.len() + value.len() > SCRATCH {
            out.update(&scratch);
            scratch.clear();
            out.update(value);
        } else {
            scratch.extend_from_slice(value);
        }
    }
    out.update(&scratch);
}

/// The logical hash of a Parquet file's rows, read back from the file.
pub fn hash_parquet_file(path: &std::path::Path) -> Result<Option<blake3::Hash>, crate::error::TableError> {
    use arrow::record_batch::RecordBatchReader;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).map_err(crate::error::TableError::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(crate::error::TableError::parquet(path))?;
    let mut hasher = RowsHasher::new(&reader.schema());
    for batch in reader {
        hasher.update(&batch?);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::{Field, Int32Type};

    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
        ]))
    }

    fn batch(ids: Vec<i64>, names: Vec<Option<&str>>, xs: Vec<Option<f64>>) -> RecordBatch {
        let oks: Vec<Option<bool>> = ids.iter().map(|i| (i % 3 != 0).then_some(i % 2 == 0)).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from(xs)),
                Arc::new(BooleanArray::from(oks)),
            ],
        )
        .expect("batch")
    }

    fn hash_of(batches: &[RecordBatch]) -> Option<blake3::Hash> {
        let mut h = RowsHasher::new(&schema());
        batches.iter().for_each(|b| h.update(b));
        h.finish()
    }

    fn sample() -> RecordBatch {
        batch(
            vec![1, 2, 3, 4],
            vec![Some("a"), None, Some(""), Some("dd")],
            vec![Some(1.5), Some(-0.0), None, Some(f64::NAN)],
        )
    }

    #[test]
    fn hash_depends_on_rows_not_on_batching() {
        let whole = sample();
        let parts = [whole.slice(0, 1), whole.slice(1, 2), whole.slice(3, 1)];
        assert_eq!(hash_of(&[whole]), hash_of(&parts));
        assert!(hash_of(&[]).is_some());
    }

    #[test]
    fn every_value_change_changes_the_hash() {
        let base = hash_of(&[sample()]);
        let variants = [
            batch(
                vec![1, 2, 3, 5],
                vec![Some("a"), None, Some(""), Some("dd")],
                vec![Some(1.5), Some(-0.0), None, Some(f64::NAN)],
            ),
            // A null and an empty string differ; so do "a","" and "","a" spread over rows.
            batch(
                vec![1, 2, 3, 4],
                vec![Some("a"), Some(""), Some(""), Some("dd")],
                vec![Some(1.5), Some(-0.0), None, Some(f64::NAN)],
            ),
            batch(
                vec![1, 2, 3, 4],
                vec![Some(""), None, Some("a"), Some("dd")],
                vec![Some(1.5), Some(-0.0), None, Some(f64::NAN)],
            ),
            // -0.0 and 0.0 differ by their bits, as the delta's equality says.
            batch(
                vec![1, 2, 3, 4],
                vec![Some("a"), None, Some(""), Some("dd")],
                vec![Some(1.5), Some(0.0), None, Some(f64::NAN)],
            ),
            batch(
                vec![1, 2, 3, 4],
                vec![Some("a"), None, Some(""), Some("dd")],
                vec![Some(1.5), Some(-0.0), Some(0.0), Some(f64::NAN)],
            ),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(hash_of(std::slice::from_ref(v)), base, "variant {i}");
        }
    }

    #[test]
    fn values_under_nulls_do_not_count() {
        let clean = Int64Array::from(vec![Some(7), None]);
        let dirty = Int64Array::new(vec![7, 99].into(), clean.nulls().cloned());
        let one = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let hash = |a: Int64Array| {
            let mut h = RowsHasher::new(&one);
            h.update(&RecordBatch::try_new(Arc::clone(&one), vec![Arc::new(a)]).expect("batch"));
            h.finish()
        };
        assert_eq!(hash(clean), hash(dirty));
    }

    #[test]
    fn a_type_without_encoding_gives_no_hash() {
        let field = Field::new_list("l", Field::new_list_field(DataType::Int32, true), true);
        let schema = Arc::new(Schema::new(vec![field]));
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        let mut h = RowsHasher::new(&schema);
        h.update(&RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(list)]).expect("batch"));
        assert_eq!(h.finish(), None);
    }
}
