//! Comparing a source's Arrow schema with a [`DatasetDefinition`] ([`check_schema`]) and casting
//! its batches to the definition's exact schema ([`conform_batch`]). Used by
//! [`crate::source`] for CSV headers and Parquet sources.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, TimeUnit};

use super::DatasetDefinition;

/// One difference between a source schema and the definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnProblem {
    Missing {
        column: String,
    },
    Extra {
        column: String,
    },
    /// The source names this column more than once.
    Duplicate {
        column: String,
    },
    WrongType {
        column: String,
        expected: String,
        found: String,
    },
}

impl fmt::Display for ColumnProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { column } => write!(f, "column `{column}` is missing from the source"),
            Self::Extra { column } => {
                write!(f, "column `{column}` is not in the dataset definition")
            }
            Self::Duplicate { column } => write!(f, "column `{column}` appears more than once"),
            Self::WrongType { column, expected, found } => write!(
                f,
                "column `{column}` has type {found}, which does not convert losslessly to {expected}"
            ),
        }
    }
}

/// Every difference between a source schema and the definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    pub problems: Vec<ColumnProblem>,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "source does not match the dataset definition:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaMismatch {}

/// Missing, extra and duplicate names of a source, in definition order then source order.
pub(crate) fn check_names<'a>(
    def: &DatasetDefinition,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<ColumnProblem> {
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for name in names {
        if !seen.insert(name) {
            problems.push(ColumnProblem::Duplicate { column: name.to_owned() });
        } else if def.column(name).is_none() {
            problems.push(ColumnProblem::Extra { column: name.to_owned() });
        }
    }
    let missing = def.columns.iter().filter(|c| !seen.contains(c.name.as_str()));
    let missing: Vec<ColumnProblem> =
        missing.map(|c| ColumnProblem::Missing { column: c.name.clone() }).collect();
    [missing, problems].concat()
}

/// Checks that every column is present once, no other column exists, and each type converts
/// losslessly. Nullability is checked on the data, not here. Accepted source types:
/// - `utf8` ← `LargeUtf8`, `Utf8View`; `binary` ← `LargeBinary`, `BinaryView`, `FixedSizeBinary`.
/// - Any type ← a dictionary whose values are accepted, and ← `Null` (an all-null column; a
///   non-nullable column then fails the null check).
/// - Integers ← narrower integers whose whole range fits (e.g. `int32` ← `int16`, `uint8`).
/// - `float64` ← `float16`, `float32`, 8/16/32-bit integers; `float32` ← `float16`, 8/16-bit
///   integers.
/// - `decimal(P,S)` ← any decimal with the same scale and precision ≤ P.
/// - `timestamp(U, TZ)` ← a timestamp of unit U or coarser with any zone (same instant); a
///   timestamp *without* zone is read as wall-clock time in TZ. `timestamp(U)` (no zone) accepts
///   only timestamps without zone.
pub fn check_schema(def: &DatasetDefinition, actual: &Schema) -> Result<(), SchemaMismatch> {
    let mut problems = check_names(def, actual.fields().iter().map(|f| f.name().as_str()));
    for column in &def.columns {
        let Ok(field) = actual.field_with_name(&column.name) else {
            continue;
        };
        if !converts_losslessly(field.data_type(), &column.column_type.to_arrow()) {
            problems.push(ColumnProblem::WrongType {
                column: column.name.clone(),
                expected: column.column_type.to_string(),
                found: field.data_type().to_string(),
            });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(SchemaMismatch { problems }) }
}

fn unit_rank(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

/// Whether `from` casts to `to` without losing information (see [`check_schema`]).
fn converts_losslessly(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || *from == Null {
        return true;
    }
    if let Dictionary(_, values) = from {
        return converts_losslessly(values, to);
    }
    match to {
        Utf8 => matches!(from, LargeUtf8 | Utf8View),
        Binary => matches!(from, LargeBinary | BinaryView | FixedSizeBinary(_)),
        Int16 => matches!(from, Int8 | UInt8),
        Int32 => matches!(from, Int8 | Int16 | UInt8 | UInt16),
        Int64 => matches!(from, Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32),
        UInt16 => matches!(from, UInt8),
        UInt32 => matches!(from, UInt8 | UInt16),
        UInt64 => matches!(from, UInt8 | UInt16 | UInt32),
        Float32 => matches!(from, Float16 | Int8 | Int16 | UInt8 | UInt16),
        Float64 => matches!(from, Float16 | Float32 | Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32),
        Decimal128(p, s) => match from {
            Decimal32(fp, fs) | Decimal64(fp, fs) | Decimal128(fp, fs) => fp <= p && fs == s,
            _ => false,
        },
        Timestamp(unit, tz) => match from {
            Timestamp(from_unit, from_tz) => {
                unit_rank(from_unit) <= unit_rank(unit) && (tz.is_some() || from_tz.is_none())
            }
            _ => false,
        },
        _ => false,
    }
}

/// Why a batch could not be brought to the definition's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConformError {
    #[error("{0}")]
    Schema(SchemaMismatch),
    /// A value did not survive the cast (e.g. a timestamp out of range for nanoseconds).
    #[error("column `{column}`: {message}")]
    Cast { column: String, message: String },
    /// A non-nullable column has a null at this row of the batch (0-based).
    #[error("column `{column}` must not be null but row {row} of the batch is")]
    Null { column: String, row: usize },
}

/// Casts `batch` to the definition's exact schema and column order, checking non-nullable
/// columns for nulls. Casts never turn a value into null: a value that does not convert fails.
pub fn conform_batch(def: &DatasetDefinition, batch: &RecordBatch) -> Result<RecordBatch, ConformError> {
    check_schema(def, &batch.schema()).map_err(ConformError::Schema)?;
    let options = CastOptions { safe: false, ..Default::default() };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(def.columns.len());
    for column in &def.columns {
        let cast_error = |message: String| ConformError::Cast { column: column.name.clone(), message };
        let index = batch.schema().index_of(&column.name).map_err(|e| cast_error(e.to_string()))?;
        let source = batch.column(index);
        let target = column.column_type.to_arrow();
        let array = if source.data_type() == &target {
            Arc::clone(source)
        } else {
            cast_with_options(source, &target, &options).map_err(|e| cast_error(e.to_string()))?
        };
        if !column.nullable
            && let Some(row) = first_null(array.as_ref())
        {
            return Err(ConformError::Null { column: column.name.clone(), row });
        }
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(def.arrow_schema(), arrays, &options)
        .map_err(|e| ConformError::Cast { column: String::from("(batch)"), message: e.to_string() })
}

/// Index of the first null (logical, so an all-null `Null` array counts), if any.
fn first_null(array: &dyn Array) -> Option<usize> {
    let nulls = array.logical_nulls()?;
    (0..array.len()).find(|&i| nulls.is_null(i))
}
