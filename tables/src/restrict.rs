//! Restricted tables: the part of a canonical table that a conditional grant allows — only the
//! permitted columns (in the table's own order) and the rows a [`RowFilter`] passes — written by
//! the [`CanonicalWriter`], so the same table and restriction always give the same bytes.
//!
//! Neighbours: the node (`ferry-daemon`) builds one restricted version per (version,
//! restriction) with [`restrict`] and diffs two of them with [`crate::delta::diff`]; the filter
//! language is `ferry_proto::filter`.
//!
//! The restricted table keeps the source's key columns and key order (a filter drops rows, a
//! projection drops non-key columns), so its files are key-sorted canonical files like any
//! other; a restriction that omits a key column is refused ([`RestrictError::KeyOmitted`]).
//!
//! Memory: the Parquet reader decodes `batch_rows` rows at a time of only the columns the output
//! and the filter need; the writer holds what [`CanonicalWriter`] holds. Independent of the
//! table's size.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, RecordBatch, Scalar, StringArray,
};
use arrow::compute::kernels::{boolean, cmp};
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch, is_not_null, is_null};
use arrow::datatypes::{DataType, SchemaRef};
use ferry_proto::filter::{CmpOp, ColumnKind, FilterCheckError, Literal, RowFilter, Test};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::canonical::{CanonicalWriter, WriteOptions, WrittenFile};
use crate::error::TableError;

/// Why a restricted table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RestrictError {
    /// The restriction names a column the table does not have: it does not fit this version.
    #[error("the restriction names column {column:?}, which the table does not have")]
    UnknownColumn { column: String },
    /// The restriction leaves out a key column; a restricted version must keep the key.
    #[error("the restriction omits key column {column:?}; a restricted version keeps the key")]
    KeyOmitted { column: String },
    /// The row filter does not fit the table's columns.
    #[error(transparent)]
    Filter(#[from] FilterCheckError),
    /// Reading the source or writing the output failed.
    #[error(transparent)]
    Table(#[from] TableError),
}

/// What [`restrict`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    pub files: Vec<WrittenFile>,
    /// The output's schema (the permitted columns).
    pub schema: SchemaRef,
    pub rows_in: u64,
    pub rows_out: u64,
}

/// The filter's view of an Arrow column type.
pub fn column_kind(data_type: &DataType) -> ColumnKind {
    let int = |min: i128, max: i128| ColumnKind::Integer { min, max };
    match data_type {
        DataType::Int8 => int(i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => int(i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => int(i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => int(i64::MIN.into(), i64::MAX.into()),
        DataType::UInt8 => int(0, u8::MAX.into()),
        DataType::UInt16 => int(0, u16::MAX.into()),
        DataType::UInt32 => int(0, u32::MAX.into()),
        DataType::UInt64 => int(0, u64::MAX.into()),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnKind::Float,
        DataType::Decimal128(precision, scale) => {
            ColumnKind::Decimal { precision: *precision, scale: *scale }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::Text,
        DataType::Boolean => ColumnKind::Bool,
        DataType::Date32 => ColumnKind::Date,
        _ => ColumnKind::Other,
    }
}

/// Writes the rows of `input` (canonical files of one table, in order) that pass `rows`,
/// projected to `columns` (`None`: all), as `<prefix>-NNNNN.parquet` into `out_dir` (which must
/// exist). Key order is kept.
pub fn restrict(
    input: &[PathBuf],
    key_columns: &[String],
    columns: Option<&[String]>,
    rows: Option<&RowFilter>,
    out_dir: &Path,
    prefix: &str,
    opts: &WriteOptions,
) -> Result<Restricted, RestrictError> {
    let Some(first) = input.first() else {
        return Err(TableError::invalid("a restricted table needs at least one source file").into());
    };
    let schema = file_schema(first)?;
    let plan = Plan::new(&schema, key_columns, columns, rows)?;
    let mut writer = CanonicalWriter::new(out_dir, prefix, Arc::clone(&plan.output), key_columns, opts)?;
    let (mut rows_in, mut rows_out) = (0u64, 0u64);
    for path in input {
        let file = File::open(path).map_err(TableError::io(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(TableError::parquet(path))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), plan.read.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(opts.batch_rows.max(1))
            .build()
            .map_err(TableError::parquet(path))?;
        for batch in reader {
            let batch = batch.map_err(TableError::Arrow)?;
            rows_in += batch.num_rows() as u64;
            let kept = plan.apply(rows, &batch)?;
            rows_out += kept.num_rows() as u64;
            writer.write(&kept)?;
        }
    }
    let files = writer.finish()?;
    Ok(Restricted { files, schema: plan.output, rows_in, rows_out })
}

fn file_schema(path: &Path) -> Result<SchemaRef, TableError> {
    let file = File::open(path).map_err(TableError::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(TableError::parquet(path))?;
    Ok(Arc::clone(builder.schema()))
}

/// Which columns to read, and how to turn a read batch into an output batch.
struct Plan {
    /// Indices into the file schema of the columns read (output ∪ filter), ascending.
    read: Vec<usize>,
    /// Positions, within a read batch, of the output columns.
    keep: Vec<usize>,
    output: SchemaRef,
}

impl Plan {
    fn new(
        schema: &SchemaRef,
        key_columns: &[String],
        columns: Option<&[String]>,
        rows: Option<&RowFilter>,
    ) -> Result<Self, RestrictError> {
        let index = |name: &str| {
            schema.index_of(name).map_err(|_| RestrictError::UnknownColumn { column: name.to_owned() })
        };
        let mut out: Vec<usize> = match columns {
            None => (0..schema.fields().len()).collect(),
            Some(names) => names.iter().map(|n| index(n)).collect::<Result<_, _>>()?,
        };
        out.sort_unstable();
        out.dedup();
        for key in key_columns {
            if !out.contains(&index(key)?) {
                return Err(RestrictError::KeyOmitted { column: key.clone() });
            }
        }
        let mut read = out.clone();
        if let Some(filter) = rows {
            let kinds = schema.fields().iter().map(|f| (f.name().as_str(), column_kind(f.data_type())));
            filter.check_against(kinds)?;
            for name in filter.columns() {
                read.push(index(name)?);
            }
        }
        read.sort_unstable();
        read.dedup();
        let keep = out.iter().filter_map(|i| read.iter().position(|r| r == i)).collect();
        let output = Arc::new(schema.project(&out).map_err(TableError::Arrow)?);
        Ok(Self { read, keep, output })
    }

    /// The output rows and columns of one read batch.
    fn apply(&self, rows: Option<&RowFilter>, batch: &RecordBatch) -> Result<RecordBatch, TableError> {
        let filtered = match rows {
            Some(filter) => filter_record_batch(batch, &evaluate(filter, batch)?)?,
            None => batch.clone(),
        };
        let projected = filtered.project(&self.keep)?;
        Ok(RecordBatch::try_new(Arc::clone(&self.output), projected.columns().to_vec())?)
    }
}

/// The rows of `batch` that pass `filter`: true where every predicate is true (a null result,
/// from a null value, counts as false).
pub fn evaluate(filter: &RowFilter, batch: &RecordBatch) -> Result<BooleanArray, TableError> {
    let mut all: Option<BooleanArray> = None;
    for predicate in filter.predicates() {
        let column = batch.column_by_name(&predicate.column).ok_or_else(|| {
            TableError::invalid(format!("row filter column `{}` was not read", predicate.column))
        })?;
        let mask = test(column, &predicate.test)?;
        all = Some(match all {
            None => mask,
            Some(acc) => boolean::and(&acc, &mask)?,
        });
    }
    Ok(all.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])))
}

fn test(column: &ArrayRef, test: &Test) -> Result<BooleanArray, TableError> {
    let data_type = column.data_type();
    Ok(match test {
        Test::IsNull => is_null(column.as_ref())?,
        Test::IsNotNull => is_not_null(column.as_ref())?,
        Test::Compare { op, value } => compare(column, *op, &scalar(value, data_type)?)?,
        Test::Between { low, high } => {
            let low = compare(column, CmpOp::Ge, &scalar(low, data_type)?)?;
            boolean::and(&low, &compare(column, CmpOp::Le, &scalar(high, data_type)?)?)?
        }
        Test::In(values) => {
            let mut any: Option<BooleanArray> = None;
            for value in values {
                let hit = compare(column, CmpOp::Eq, &scalar(value, data_type)?)?;
                any = Some(match any {
                    None => hit,
                    Some(acc) => boolean::or(&acc, &hit)?,
                });
            }
            any.unwrap_or_else(|| BooleanArray::from(vec![false; column.len()]))
        }
    })
}

fn compare(column: &ArrayRef, op: CmpOp, value: &Scalar<ArrayRef>) -> Result<BooleanArray, TableError> {
    let column = column.as_ref();
    Ok(match op {
        CmpOp::Eq => cmp::eq(&column, value)?,
        CmpOp::Ne => cmp::neq(&column, value)?,
        CmpOp::Lt => cmp::lt(&column, value)?,
        CmpOp::Le => cmp::lt_eq(&column, value)?,
        CmpOp::Gt => cmp::gt(&column, value)?,
        CmpOp::Ge => cmp::gt_eq(&column, value)?,
    })
}

/// `literal` as a one-value array of the column's type (exact: a value the type cannot hold is
/// an error, never a silent null).
pub(crate) fn scalar(literal: &Literal, data_type: &DataType) -> Result<Scalar<ArrayRef>, TableError> {
    let raw: ArrayRef = match literal {
        Literal::Integer(v) => Arc::new(Decimal128Array::from(vec![*v]).with_precision_and_scale(38, 0)?),
        Literal::Decimal(d) => {
            Arc::new(Decimal128Array::from(vec![d.mantissa]).with_precision_and_scale(38, d.scale as i8)?)
        }
        Literal::Text(s) => Arc::new(StringArray::from(vec![s.as_str()])),
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
        Literal::Date(d) => Arc::new(Date32Array::from(vec![d.days_since_epoch()])),
    };
    let options = CastOptions { safe: false, ..CastOptions::default() };
    let typed = cast_with_options(&raw, data_type, &options)?;
    if typed.null_count() > 0 {
        return Err(TableError::invalid(format!("literal {literal} does not fit a {data_type} column")));
    }
    Ok(Scalar::new(typed))
}

#[cfg(test)]
mod tests;
