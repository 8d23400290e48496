//! Random key-sorted tables and edits for the delta property tests: several schemas covering
//! every column type a dataset definition allows (keys of 1–3 columns of different types, a
//! key-only table), nullable values, floats with NaN, ±0.0 and infinities.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A table shape: schema and key column names.
pub(super) struct Shape {
    pub schema: SchemaRef,
    pub keys: Vec<String>,
}

fn ts(unit: TimeUnit, tz: Option<&str>) -> DataType {
    DataType::Timestamp(unit, tz.map(Arc::from))
}

/// The shapes the property test draws from.
pub(super) fn shape(index: usize) -> Shape {
    let value = |name: &str, data_type: DataType| Field::new(name, data_type, true);
    let key = |name: &str, data_type: DataType| Field::new(name, data_type, false);
    let (fields, keys): (Vec<Field>, &[&str]) = match index % 4 {
        0 => (
            vec![
                key("id", DataType::Int64),
                value("i8", DataType::Int8),
                value("i16", DataType::Int16),
                value("i32", DataType::Int32),
                value("u8", DataType::UInt8),
                value("u16", DataType::UInt16),
                value("u32", DataType::UInt32),
                value("u64", DataType::UInt64),
                value("f32", DataType::Float32),
                value("f64", DataType::Float64),
                value("amount", DataType::Decimal128(12, 3)),
                value("text", DataType::Utf8),
                Field::new("label", DataType::Utf8, false),
                value("blob", DataType::Binary),
                value("flag", DataType::Boolean),
                value("day", DataType::Date32),
                value("at", ts(TimeUnit::Millisecond, Some("+08:00"))),
            ],
            &["id"],
        ),
        1 => (
            vec![
                value("reading", DataType::Float64),
                key("region", DataType::Utf8),
                key("day", DataType::Date32),
                value("note", DataType::Utf8),
                key("seq", DataType::UInt16),
                value("seen", ts(TimeUnit::Microsecond, None)),
                value("price", DataType::Decimal128(38, 10)),
            ],
            &["region", "day", "seq"],
        ),
        2 => (
            vec![
                key("amount", DataType::Decimal128(10, 2)),
                key("at", ts(TimeUnit::Nanosecond, Some("+08:00"))),
                value("payload", DataType::Binary),
                value("ok", DataType::Boolean),
                Field::new("small", DataType::Int8, false),
            ],
            &["amount", "at"],
        ),
        _ => (vec![key("code", DataType::Int16), key("name", DataType::Utf8)], &["code", "name"]),
    };
    Shape { schema: Arc::new(Schema::new(fields)), keys: keys.iter().map(|k| (*k).to_owned()).collect() }
}

const FLOATS: [f64; 7] = [0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5, -2.25];

fn text(rng: &mut ChaCha8Rng, alphabet: &[&str], max_len: usize) -> String {
    let len = rng.random_range(0..=max_len);
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect()
}

/// A random column; key columns draw from small domains so keys collide and are deduplicated.
fn column(rng: &mut ChaCha8Rng, field: &Field, is_key: bool, len: usize) -> ArrayRef {
    let nulls = field.is_nullable() && !is_key;
    let null = |rng: &mut ChaCha8Rng| nulls && rng.random_bool(0.15);
    macro_rules! gen_col {
        ($array:ty, $value:expr) => {{
            let values: Vec<_> =
                (0..len).map(|_| if null(rng) { None } else { Some($value(&mut *rng)) }).collect();
            Arc::new(<$array>::from(values)) as ArrayRef
        }};
    }
    match field.data_type() {
        DataType::Int8 => gen_col!(Int8Array, |r: &mut ChaCha8Rng| r.random::<i8>()),
        DataType::Int16 if is_key => gen_col!(Int16Array, |r: &mut ChaCha8Rng| r.random_range(-200..200i16)),
        DataType::Int16 => gen_col!(Int16Array, |r: &mut ChaCha8Rng| r.random::<i16>()),
        DataType::Int32 => gen_col!(Int32Array, |r: &mut ChaCha8Rng| r.random::<i32>()),
        DataType::Int64 if is_key => gen_col!(Int64Array, |r: &mut ChaCha8Rng| r.random_range(-500..500i64)),
        DataType::Int64 => gen_col!(Int64Array, |r: &mut ChaCha8Rng| r.random::<i64>()),
        DataType::UInt8 => gen_col!(UInt8Array, |r: &mut ChaCha8Rng| r.random::<u8>()),
        DataType::UInt16 if is_key => gen_col!(UInt16Array, |r: &mut ChaCha8Rng| r.random_range(0..12u16)),
        DataType::UInt16 => gen_col!(UInt16Array, |r: &mut ChaCha8Rng| r.random::<u16>()),
        DataType::UInt32 => gen_col!(UInt32Array, |r: &mut ChaCha8Rng| r.random::<u32>()),
        DataType::UInt64 => gen_col!(UInt64Array, |r: &mut ChaCha8Rng| r.random::<u64>()),
        DataType::Float32 => {
            gen_col!(Float32Array, |r: &mut ChaCha8Rng| FLOATS[r.random_range(0..FLOATS.len())] as f32 * 0.5)
        }
        DataType::Float64 => gen_col!(Float64Array, |r: &mut ChaCha8Rng| if r.random_bool(0.5) {
            FLOATS[r.random_range(0..FLOATS.len())]
        } else {
            r.random::<f64>() * 1e6
        }),
        DataType::Decimal128(precision, scale) => {
            let max = if is_key { 300 } else { 10i128.pow(u32::from(*precision)) - 1 };
            let values: Vec<Option<i128>> =
                (0..len).map(|_| if null(rng) { None } else { Some(rng.random_range(-max..=max)) }).collect();
            Arc::new(
                Decimal128Array::from(values).with_precision_and_scale(*precision, *scale).expect("valid"),
            )
        }
        DataType::Utf8 => {
            let alphabet: &[&str] =
                if is_key { &["a", "b", "é"] } else { &["x", "y", "京", "粤", " ", "0"] };
            let max_len = if is_key { 2 } else { 6 };
            let values: Vec<Option<String>> =
                (0..len).map(|_| if null(rng) { None } else { Some(text(rng, alphabet, max_len)) }).collect();
            Arc::new(StringArray::from(values))
        }
        DataType::Binary => {
            let values: Vec<Option<Vec<u8>>> = (0..len)
                .map(|_| {
                    if null(rng) {
                        return None;
                    }
                    let n = rng.random_range(0..5);
                    Some((0..n).map(|_| rng.random::<u8>()).collect())
                })
                .collect();
            Arc::new(BinaryArray::from_iter(values))
        }
        DataType::Boolean => gen_col!(BooleanArray, |r: &mut ChaCha8Rng| r.random_bool(0.5)),
        DataType::Date32 if is_key => {
            gen_col!(Date32Array, |r: &mut ChaCha8Rng| r.random_range(19_000..19_008))
        }
        DataType::Date32 => gen_col!(Date32Array, |r: &mut ChaCha8Rng| r.random_range(-100_000..100_000)),
        DataType::Timestamp(unit, tz) => {
            let values: Vec<Option<i64>> = (0..len)
                .map(|_| {
                    if null(rng) {
                        None
                    } else if is_key {
                        Some(rng.random_range(0..6) * 1_000)
                    } else {
                        Some(rng.random_range(-4_000_000_000_000..4_000_000_000_000))
                    }
                })
                .collect();
            let tz = tz.clone();
            match unit {
                TimeUnit::Millisecond => {
                    Arc::new(TimestampMillisecondArray::from(values).with_timezone_opt(tz))
                }
                TimeUnit::Microsecond => {
                    Arc::new(TimestampMicrosecondArray::from(values).with_timezone_opt(tz))
                }
                _ => Arc::new(TimestampNanosecondArray::from(values).with_timezone_opt(tz)),
            }
        }
        other => panic!("testgen has no generator for {other}"),
    }
}

fn key_indices(shape: &Shape) -> Vec<usize> {
    shape.keys.iter().map(|k| shape.schema.index_of(k).expect("key column")).collect()
}

/// `len` random rows (unsorted, keys may repeat).
pub(super) fn random_rows(rng: &mut ChaCha8Rng, shape: &Shape, len: usize) -> RecordBatch {
    let keys = key_indices(shape);
    let columns: Vec<ArrayRef> = shape
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| column(rng, f, keys.contains(&i), len))
        .collect();
    RecordBatch::try_new(shape.schema.clone(), columns).expect("columns match the schema")
}

/// Sorts by key (ascending, as `source` does) and keeps one row per key.
pub(super) fn sorted_unique(shape: &Shape, batch: &RecordBatch) -> RecordBatch {
    if batch.num_rows() < 2 {
        return batch.clone();
    }
    let keys = key_indices(shape);
    let sort: Vec<SortColumn> = keys
        .iter()
        .map(|&i| SortColumn {
            values: batch.column(i).clone(),
            options: Some(SortOptions { descending: false, nulls_first: true }),
        })
        .collect();
    let sorted = take_record_batch(batch, &lexsort_to_indices(&sort, None).expect("sort")).expect("take");
    let fields = keys.iter().map(|&i| SortField::new(shape.schema.field(i).data_type().clone())).collect();
    let converter = RowConverter::new(fields).expect("converter");
    let columns: Vec<ArrayRef> = keys.iter().map(|&i| sorted.column(i).clone()).collect();
    let rows = converter.convert_columns(&columns).expect("rows");
    let keep: BooleanArray =
        (0..rows.num_rows()).map(|i| Some(i == 0 || rows.row(i - 1) != rows.row(i))).collect();
    filter_record_batch(&sorted, &keep).expect("filter")
}

/// How the new version is made from the old one.
#[derive(Debug, Clone, Copy)]
pub(super) struct EditPlan {
    pub delete: f64,
    pub update: f64,
    pub insert: usize,
}

/// Deletes, updates (each non-key value redrawn with probability 1/2) and inserts rows.
pub(super) fn edit(rng: &mut ChaCha8Rng, shape: &Shape, old: &RecordBatch, plan: EditPlan) -> RecordBatch {
    let keys = key_indices(shape);
    let keep: BooleanArray = (0..old.num_rows()).map(|_| Some(!rng.random_bool(plan.delete))).collect();
    let kept = filter_record_batch(old, &keep).expect("filter");
    let fresh = random_rows(rng, shape, kept.num_rows());
    let columns: Vec<ArrayRef> = (0..kept.num_columns())
        .map(|c| {
            if keys.contains(&c) {
                return kept.column(c).clone();
            }
            let mask: BooleanArray = (0..kept.num_rows())
                .map(|_| Some(rng.random_bool(plan.update) && rng.random_bool(0.5)))
                .collect();
            zip(&mask, fresh.column(c), kept.column(c)).expect("zip")
        })
        .collect();
    let updated = RecordBatch::try_new(shape.schema.clone(), columns).expect("same schema");
    let inserted = random_rows(rng, shape, plan.insert);
    let both = concat_batches(&shape.schema, &[updated, inserted]).expect("concat");
    sorted_unique(shape, &both)
}

pub(super) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Writes `table` (key-sorted) through a [`CanonicalWriter`] into `dir`, handing it over in
/// slices of pseudo-random sizes drawn from `seed` (the output must not depend on them).
pub(super) fn write_table(
    dir: &std::path::Path,
    keys: &[String],
    table: &RecordBatch,
    opts: &crate::canonical::WriteOptions,
    seed: u64,
) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).expect("dir");
    let mut rng = rng(seed);
    let mut writer =
        crate::canonical::CanonicalWriter::new(dir, "part", table.schema(), keys, opts).expect("writer");
    let mut offset = 0;
    while offset < table.num_rows() {
        let len = rng.random_range(1..=23).min(table.num_rows() - offset);
        writer.write(&table.slice(offset, len)).expect("write");
        offset += len;
    }
    writer.finish().expect("finish").into_iter().map(|f| f.path).collect()
}

/// File names and BLAKE3 hashes of `paths`.
pub(super) fn hashes(paths: &[std::path::PathBuf]) -> Vec<(String, blake3::Hash)> {
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, blake3::hash(&std::fs::read(p).expect("read")))
        })
        .collect()
}

/// Paths of written files.
pub(super) fn paths(files: &[crate::canonical::WrittenFile]) -> Vec<std::path::PathBuf> {
    files.iter().map(|f| f.path.clone()).collect()
}

/// A temporary directory, in RAM (`/dev/shm`) where there is one: the kernels fsync every file,
/// which on a disk would dominate the property test's time.
pub(super) fn tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

/// The prints of `table`'s rows (keys `keys`), as [`super::prints::RowPrinter`] gives them.
pub(super) fn prints_of(table: &RecordBatch, keys: &[String]) -> Vec<u64> {
    let schema = table.schema();
    let key_indices: Vec<usize> = keys.iter().map(|k| schema.index_of(k).expect("key")).collect();
    let mut printer = super::prints::RowPrinter::new(&schema, &key_indices).expect("printer");
    let mut prints = Vec::new();
    printer.print(table, &mut prints).expect("print");
    prints
}

/// Sealed prints of `table` at `path`, bound to its written `files`, as a publish keeps them
/// with its head; returns what [`super::DiffBase::prints`] takes.
pub(super) fn sealed_prints(
    table: &RecordBatch,
    keys: &[String],
    files: &[std::path::PathBuf],
    path: &std::path::Path,
) -> (std::path::PathBuf, u64) {
    use super::prints::{PrintsWriter, binding, check, seal};
    let mut writer = PrintsWriter::create(path).expect("create prints");
    writer.append(&prints_of(table, keys)).expect("append prints");
    let body = writer.finish().expect("finish prints");
    let file_hashes: Vec<[u8; 32]> = hashes(files).into_iter().map(|(_, hash)| *hash.as_bytes()).collect();
    let binding = binding(&file_hashes);
    seal(&body, &binding).expect("seal prints");
    let rows = table.num_rows() as u64;
    check(path, rows, &binding).expect("sealed prints check");
    (path.to_owned(), rows)
}
