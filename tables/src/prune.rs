//! Pruning a [`RowFilter`] over a Parquet file's metadata: which row groups, and which pages
//! of them, may hold a row the filter passes — from the row groups' statistics, the page index
//! (per-page min, max and null counts) and the key columns' bloom filters. Conservative: a
//! container is skipped only when its statistics prove no row in it can pass; missing
//! statistics keep it.
//!
//! Neighbours: the node's online query engine (`ferry-daemon`, `data/query/`) reads the
//! metadata and the bloom filters and asks this module what to skip; the rows that remain are
//! tested row by row with [`crate::restrict::evaluate`].

use arrow::array::{Array, ArrayRef, BooleanArray, Scalar, UInt64Array};
use arrow::compute::kernels::{boolean, cmp};
use arrow::datatypes::{DataType, Schema};
use ferry_proto::filter::{CmpOp, Literal, Predicate, RowFilter, Test};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::ParquetMetaData;

use crate::error::TableError;
use crate::restrict::scalar;

/// What statistics tell of some containers (row groups, or pages) of one column.
struct Stats {
    mins: ArrayRef,
    maxes: ArrayRef,
    nulls: UInt64Array,
    rows: Option<UInt64Array>,
}

/// The row groups of `metadata` whose statistics do not rule `filter` out, ascending.
pub fn row_groups(
    filter: &RowFilter,
    metadata: &ParquetMetaData,
    schema: &Schema,
) -> Result<Vec<usize>, TableError> {
    let groups = metadata.row_groups();
    let mut keep = vec![true; groups.len()];
    for predicate in filter.predicates() {
        let converter = converter(predicate, metadata, schema)?;
        let stats = Stats {
            mins: converter.row_group_mins(groups.iter()).map_err(stats_error)?,
            maxes: converter.row_group_maxes(groups.iter()).map_err(stats_error)?,
            nulls: converter.row_group_null_counts(groups.iter()).map_err(stats_error)?,
            rows: converter.row_group_row_counts(groups.iter()).map_err(stats_error)?,
        };
        for (k, may) in keep.iter_mut().zip(may_match(predicate, &stats)?) {
            *k &= may;
        }
    }
    Ok(keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect())
}

/// The rows of row group `group` whose pages the page index does not rule out, as a selection
/// local to the row group; `None` when every page may match or there is no page index.
pub fn page_selection(
    filter: &RowFilter,
    metadata: &ParquetMetaData,
    schema: &Schema,
    group: usize,
) -> Result<Option<RowSelection>, TableError> {
    let Some(index) = metadata.page_index() else { return Ok(None) };
    let total = metadata.row_group(group).num_rows().max(0) as usize;
    let mut selection: Option<RowSelection> = None;
    for predicate in filter.predicates() {
        let converter = converter(predicate, metadata, schema)?;
        let groups = [group];
        let Some(rows) = converter
            .data_page_row_counts(index.as_ref(), metadata.row_groups(), &groups)
            .map_err(stats_error)?
        else {
            continue;
        };
        let stats = Stats {
            mins: converter.data_page_mins(index.as_ref(), &groups).map_err(stats_error)?,
            maxes: converter.data_page_maxes(index.as_ref(), &groups).map_err(stats_error)?,
            nulls: converter.data_page_null_counts(index.as_ref(), &groups).map_err(stats_error)?,
            rows: Some(rows.clone()),
        };
        if stats.mins.len() != rows.len() || rows.values().iter().sum::<u64>() != total as u64 {
            continue; // The page index does not describe this column chunk whole: keep it all.
        }
        let may = may_match(predicate, &stats)?;
        let selectors: Vec<RowSelector> = rows
            .values()
            .iter()
            .zip(may)
            .map(
                |(n, keep)| {
                    if keep { RowSelector::select(*n as usize) } else { RowSelector::skip(*n as usize) }
                },
            )
            .collect();
        let this = RowSelection::from(selectors);
        selection = Some(match selection {
            None => this,
            Some(previous) => previous.intersection(&this),
        });
    }
    Ok(selection.filter(|s| s.row_count() < total))
}

/// Whether the bloom filter of `predicate`'s column in one row group allows a row that passes
/// it: `false` only for an `=` or `IN` whose every value the filter has never seen.
pub fn bloom_may_match(predicate: &Predicate, data_type: &DataType, bloom: &Sbbf) -> bool {
    let values: Vec<&Literal> = match &predicate.test {
        Test::Compare { op: CmpOp::Eq, value } => vec![value],
        Test::In(values) => values.iter().collect(),
        _ => return true,
    };
    values.into_iter().any(|value| bloom_may_contain(bloom, data_type, value))
}

fn bloom_may_contain(bloom: &Sbbf, data_type: &DataType, value: &Literal) -> bool {
    // Values as the Parquet writer hashed them: strings as their bytes, small integers and
    // dates as INT32, 64-bit integers as INT64.
    match (data_type, value) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Literal::Text(s)) => {
            bloom.check(s.as_str())
        }
        (DataType::Int8 | DataType::Int16 | DataType::Int32, Literal::Integer(v)) => {
            i32::try_from(*v).is_ok_and(|v| bloom.check(&v))
        }
        (DataType::Int64, Literal::Integer(v)) => i64::try_from(*v).is_ok_and(|v| bloom.check(&v)),
        (DataType::Date32, Literal::Date(d)) => bloom.check(&d.days_since_epoch()),
        _ => true,
    }
}

fn converter<'a>(
    predicate: &Predicate,
    metadata: &'a ParquetMetaData,
    schema: &'a Schema,
) -> Result<StatisticsConverter<'a>, TableError> {
    StatisticsConverter::try_new(&predicate.column, schema, metadata.file_metadata().schema_descr())
        .map_err(stats_error)
}

fn stats_error(e: parquet::errors::ParquetError) -> TableError {
    TableError::invalid(format!("reading a file's statistics: {e}"))
}

/// Per container: whether a row passing `predicate` may be in it (unknown statistics: yes).
fn may_match(predicate: &Predicate, stats: &Stats) -> Result<Vec<bool>, TableError> {
    let n = stats.mins.len();
    let data_type = stats.mins.data_type().clone();
    let lit = |value: &Literal| scalar(value, &data_type);
    let mask = match &predicate.test {
        Test::IsNull => {
            Some(BooleanArray::from_iter(stats.nulls.iter().map(|c| Some(c.is_none_or(|c| c > 0)))))
        }
        Test::IsNotNull => Some(BooleanArray::from_iter((0..n).map(|i| {
            let nulls = stats.nulls.is_valid(i).then(|| stats.nulls.value(i));
            let rows = stats.rows.as_ref().and_then(|r| r.is_valid(i).then(|| r.value(i)));
            Some(!matches!((nulls, rows), (Some(a), Some(b)) if a >= b))
        }))),
        Test::Compare { op, value } => compare_may(stats, *op, &lit(value)?)?,
        Test::Between { low, high } => {
            let above_low = compare_may(stats, CmpOp::Ge, &lit(low)?)?;
            let below_high = compare_may(stats, CmpOp::Le, &lit(high)?)?;
            and_kept(above_low, below_high)?
        }
        Test::In(values) => {
            let mut any: Option<BooleanArray> = None;
            for value in values {
                let hit = unknown_is_true(compare_may(stats, CmpOp::Eq, &lit(value)?)?, n);
                any = Some(match any {
                    None => hit,
                    Some(acc) => boolean::or(&acc, &hit)?,
                });
            }
            any
        }
    };
    let mask = unknown_is_true(mask, n);
    Ok((0..n).map(|i| mask.value(i)).collect())
}

/// Whether some value in `[min, max]` may stand in `op` to `value`.
fn compare_may(
    stats: &Stats,
    op: CmpOp,
    value: &Scalar<ArrayRef>,
) -> Result<Option<BooleanArray>, TableError> {
    let (min, max) = (stats.mins.as_ref(), stats.maxes.as_ref());
    Ok(Some(match op {
        CmpOp::Eq => boolean::and(&cmp::lt_eq(&min, value)?, &cmp::gt_eq(&max, value)?)?,
        CmpOp::Lt => cmp::lt(&min, value)?,
        CmpOp::Le => cmp::lt_eq(&min, value)?,
        CmpOp::Gt => cmp::gt(&max, value)?,
        CmpOp::Ge => cmp::gt_eq(&max, value)?,
        // Only a container whose every value equals `value` is ruled out.
        CmpOp::Ne => boolean::not(&boolean::and(&cmp::eq(&min, value)?, &cmp::eq(&max, value)?)?)?,
    }))
}

fn and_kept(a: Option<BooleanArray>, b: Option<BooleanArray>) -> Result<Option<BooleanArray>, TableError> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => {
            let n = a.len();
            Some(boolean::and(&unknown_is_true(Some(a), n), &unknown_is_true(Some(b), n))?)
        }
        (a, b) => a.or(b),
    })
}

/// A mask with every null (unknown statistics) made `true`.
fn unknown_is_true(mask: Option<BooleanArray>, n: usize) -> BooleanArray {
    match mask {
        None => BooleanArray::from(vec![true; n]),
        Some(m) => BooleanArray::from_iter((0..n).map(|i| Some(m.is_null(i) || m.value(i)))),
    }
}

#[cfg(test)]
mod tests;
