//! Format 3's choice, per column of each row group, between dictionary and plain encoding.
//!
//! parquet-rs interns every value of a column into its dictionary until the dictionary page
//! reaches its limit (1 MiB) and only then falls back to plain encoding. For a column whose
//! values hardly repeat (a VIN, a plate, a timestamp, a position) that is all cost: the row
//! group's values are hashed and interned, the dictionary page and its indices are written,
//! and the file comes out larger than plain values under zstd. Format 3 looks first: it samples
//! the row group's values of the column and keeps the dictionary only where they repeat.
//!
//! The choice depends on the row group's rows only (the sample is taken at fixed row numbers
//! of the row group, whatever the chunks it came in), so the bytes stay a function of the rows.
//!
//! ## The rule
//! Up to [`SAMPLE`] values at evenly spaced rows (every row of a row group of at most
//! 2 × [`SAMPLE`] rows); nulls are not values. With `k` sampled values, `d` of them distinct,
//! and `n` values in the row group:
//! - all rows sampled: plain when more than half the values are distinct (`2d > k`);
//! - otherwise: for `N` distinct values spread over the row group, a sample of `k` holds about
//!   `k(k-1)/2N` pairs of equal values, so the row group's values repeat on average less than
//!   twice (`N > n/2`) when the sample's repeats `k - d` are fewer than `k(k-1)/n`: plain then.
//!
//! Only columns parquet-rs would dictionary-encode and whose values the sample can compare are
//! judged (strings, binaries, numbers, dates and times, decimals); nested, boolean and
//! dictionary-typed columns keep the writer's default.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};

/// Most values sampled from one column of one row group.
pub const SAMPLE: usize = 1_024;

/// Whether column `column` of the row group made of `batches` is worth a dictionary (format 3);
/// `true` for columns the rule does not judge.
pub fn pays(batches: &[RecordBatch], column: usize) -> bool {
    let arrays: Vec<&ArrayRef> = batches.iter().filter_map(|b| b.columns().get(column)).collect();
    let Some(first) = arrays.first() else { return true };
    if !judged(first.data_type()) {
        return true;
    }
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    let values = rows - arrays.iter().map(|a| a.null_count()).sum::<usize>();
    let all = rows <= 2 * SAMPLE;
    let picks = if all { rows } else { SAMPLE };
    let stride = if all { 1 } else { rows / SAMPLE };
    let mut indices = Vec::with_capacity(picks);
    let (mut batch, mut start) = (0, 0);
    for pick in 0..picks {
        let row = pick * stride;
        while row >= start + arrays[batch].len() {
            start += arrays[batch].len();
            batch += 1;
        }
        indices.push((batch, row - start));
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    let Ok(sample) = interleave(&refs, &indices) else { return true };
    let Ok(converter) = RowConverter::new(vec![SortField::new(sample.data_type().clone())]) else {
        return true;
    };
    let Ok(encoded) = converter.convert_columns(&[Arc::clone(&sample)]) else { return true };
    let mut distinct = HashSet::with_capacity(picks);
    let mut sampled = 0u64;
    for (i, row) in encoded.iter().enumerate() {
        if sample.is_valid(i) {
            sampled += 1;
            distinct.insert(row);
        }
    }
    let (k, d, n) = (sampled, distinct.len() as u64, values as u64);
    if k < 2 {
        return true;
    }
    if all {
        return 2 * d <= k;
    }
    (k - d) * n >= k * (k - 1)
}

/// Types whose columns the rule judges: those parquet-rs may dictionary-encode, flat.
fn judged(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Utf8 | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | FixedSizeBinary(_)
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float16
            | Float32
            | Float64
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Duration(_)
            | Decimal32(_, _)
            | Decimal64(_, _)
            | Decimal128(_, _)
            | Decimal256(_, _)
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Float64Array, Int32Array, ListArray, StringArray};
    use arrow::datatypes::{Field, Int32Type, Schema};

    use super::*;

    fn one(array: ArrayRef) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("c", array.data_type().clone(), true)]));
        RecordBatch::try_new(schema, vec![array]).expect("batch")
    }

    /// The row group cut into chunks of `chunk` rows, as the writer hands them over.
    fn chunked(array: ArrayRef, chunk: usize) -> Vec<RecordBatch> {
        let whole = one(array);
        (0..whole.num_rows())
            .step_by(chunk)
            .map(|s| whole.slice(s, chunk.min(whole.num_rows() - s)))
            .collect()
    }

    /// `rows` values drawn from `distinct` ones by a fixed pseudo-random sequence (a multiplier
    /// alone would give the evenly spaced sample a period to alias with).
    fn strings(rows: usize, distinct: usize) -> ArrayRef {
        let draw = |i: usize| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (x ^ (x >> 29)) as usize % distinct
        };
        Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("value-{:08}", draw(i)))))
    }

    /// `rows` distinct values in a shuffled order.
    fn unique(rows: usize) -> ArrayRef {
        Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("value-{:08}", (i * 7_919) % rows))))
    }

    #[test]
    fn values_that_hardly_repeat_are_written_plain() {
        for rows in [65_536, 30_000, 2_049, 2_048, 100, 2] {
            assert!(!pays(&chunked(unique(rows), 8_192), 0), "{rows} unique");
        }
        // Drawn from more values than rows: about 0.6 of the rows distinct, or more.
        for (rows, distinct) in [(65_536, 1 << 20), (65_536, 120_000), (30_000, 60_000), (1_000, 4_000)] {
            assert!(!pays(&chunked(strings(rows, distinct), 8_192), 0), "{rows} drawn from {distinct}");
        }
        let unique: ArrayRef =
            Arc::new(Float64Array::from_iter_values((0..65_536).map(|i| 120.0 + i as f64 * 1e-6)));
        assert!(!pays(&chunked(unique, 8_192), 0));
    }

    #[test]
    fn values_that_repeat_keep_their_dictionary() {
        for (rows, distinct) in
            [(65_536, 5), (65_536, 7_000), (65_536, 16_000), (100, 10), (2_048, 500), (7, 1)]
        {
            assert!(pays(&chunked(strings(rows, distinct), 8_192), 0), "{distinct} of {rows}");
        }
        let few: ArrayRef = Arc::new(Int32Array::from_iter_values((0..65_536).map(|i| i % 181)));
        assert!(pays(&chunked(few, 8_192), 0));
    }

    /// Nulls are not values: a sparse column of repeated values keeps its dictionary, a sparse
    /// column of unique ones does not, an all-null column keeps the default.
    #[test]
    fn nulls_are_not_counted_as_values() {
        let sparse = |distinct: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter(
                (0..65_536).map(|i| (i % 4 == 0).then(|| format!("company-{}", (i * 7_919) % distinct))),
            ))
        };
        assert!(pays(&chunked(sparse(2_000), 8_192), 0));
        assert!(!pays(&chunked(sparse(1 << 20), 8_192), 0));
        let none: ArrayRef = Arc::new(StringArray::from_iter((0..65_536).map(|_| None::<String>)));
        assert!(pays(&chunked(none, 8_192), 0));
    }

    /// The choice depends on the rows, not on how they were cut into chunks.
    #[test]
    fn the_choice_does_not_depend_on_the_chunks() {
        for (rows, distinct) in
            [(65_536, 1_000), (65_536, 30_000), (65_536, 33_000), (65_536, 65_536), (3_000, 2_000)]
        {
            let array = strings(rows, distinct);
            let whole = pays(&chunked(Arc::clone(&array), rows), 0);
            let chunks: &[usize] = if rows <= 3_000 { &[1, 7, 1_000] } else { &[777, 8_192, 21_845] };
            for &chunk in chunks {
                assert_eq!(
                    pays(&chunked(Arc::clone(&array), chunk), 0),
                    whole,
                    "{distinct} of {rows} in chunks of {chunk}"
                );
            }
        }
    }

    /// Nested columns keep the writer's default however unique their values (their leaves'
    /// dictionaries are the writer's business), and so do booleans and an empty row group.
    #[test]
    fn columns_the_rule_does_not_judge_keep_the_default() {
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..65_536).map(|i| Some(vec![Some(i), Some(i * 3)])),
        ));
        assert!(pays(&chunked(lists, 8_192), 0));
        let flags: ArrayRef = Arc::new(BooleanArray::from_iter((0..10_000).map(|i| Some(i % 2 == 0))));
        assert!(pays(&chunked(flags, 8_192), 0));
        assert!(pays(&[], 0));
    }
}
