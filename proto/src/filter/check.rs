//! Checking a [`RowFilter`] against a table's columns: every column it names exists and every
//! literal fits the column's type. The column types come as [`ColumnKind`]s, which the catalog's
//! type names (`int32`, `decimal(12,2)`, `timestamp(ms, +08:00)`, …) map to through
//! [`ColumnKind::from_type_name`].

use super::{Literal, Predicate, RowFilter, Test};
use std::fmt;

/// What a filter needs to know of a column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    /// An integer column holding `min..=max`.
    Integer {
        min: i128,
        max: i128,
    },
    Float,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Bool,
    Date,
    /// Timestamps and binary columns: only `IS [NOT] NULL` applies (no literal of their type).
    Other,
}

impl ColumnKind {
    /// The kind of a catalog type name (see `ferry-tables`' `ColumnType`), `None` if unknown.
    pub fn from_type_name(name: &str) -> Option<Self> {
        let int = |bits: u32, signed: bool| {
            let (min, max) = if signed {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            } else {
                (0, (1i128 << bits) - 1)
            };
            Some(Self::Integer { min, max })
        };
        let name = name.trim();
        match name {
            "int8" => int(8, true),
            "int16" => int(16, true),
            "int32" => int(32, true),
            "int64" => int(64, true),
            "uint8" => int(8, false),
            "uint16" => int(16, false),
            "uint32" => int(32, false),
            "uint64" => int(64, false),
            "float32" | "float64" => Some(Self::Float),
            "utf8" => Some(Self::Text),
            "bool" => Some(Self::Bool),
            "date32" => Some(Self::Date),
            "binary" => Some(Self::Other),
            _ if name.starts_with("timestamp(") && name.ends_with(')') => Some(Self::Other),
            _ => {
                let inner = name.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                let precision: u8 = p.trim().parse().ok()?;
                let scale: i8 = s.trim().parse().ok()?;
                (1..=38).contains(&precision).then_some(Self::Decimal { precision, scale })
            }
        }
    }

    /// Whether `literal` is a value of this kind.
    pub fn accepts(self, literal: &Literal) -> bool {
        match (self, literal) {
            (Self::Integer { min, max }, Literal::Integer(v)) => (min..=max).contains(v),
            (Self::Float, Literal::Integer(_) | Literal::Decimal(_)) => true,
            (Self::Decimal { precision, scale }, Literal::Integer(v)) => {
                fits_decimal(*v, 0, precision, scale)
            }
            (Self::Decimal { precision, scale }, Literal::Decimal(d)) => {
                fits_decimal(d.mantissa, d.scale, precision, scale)
            }
            (Self::Text, Literal::Text(_)) | (Self::Bool, Literal::Bool(_)) => true,
            (Self::Date, Literal::Date(_)) => true,
            _ => false,
        }
    }
}

/// Whether `mantissa / 10^lit_scale` is exactly a `decimal(precision, scale)` value.
fn fits_decimal(mantissa: i128, lit_scale: u8, precision: u8, scale: i8) -> bool {
    let Ok(scale) = u8::try_from(scale) else { return false };
    if lit_scale > scale {
        return false;
    }
    let Some(factor) = 10i128.checked_pow(u32::from(scale - lit_scale)) else { return false };
    let Some(scaled) = mantissa.checked_mul(factor) else { return false };
    scaled.unsigned_abs().to_string().len() <= usize::from(precision)
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer { min, max } => write!(f, "integer {min}..={max}"),
            Self::Float => f.write_str("floating point"),
            Self::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            Self::Text => f.write_str("text"),
            Self::Bool => f.write_str("boolean"),
            Self::Date => f.write_str("date"),
            Self::Other => f.write_str("a type without literals (only IS [NOT] NULL)"),
        }
    }
}

/// Why a filter does not fit a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterCheckError {
    #[error("row filter names unknown column {column:?}")]
    UnknownColumn { column: String },
    #[error(
        "row filter compares column {column:?} ({kind}) with {literal}, a value of another type or out of range"
    )]
    WrongType { column: String, kind: String, literal: String },
}

impl RowFilter {
    /// Checks every column and literal against the table's columns (name, kind).
    pub fn check_against<'a, I>(&self, schema: I) -> Result<(), FilterCheckError>
    where
        I: IntoIterator<Item = (&'a str, ColumnKind)>,
    {
        let schema: Vec<(&str, ColumnKind)> = schema.into_iter().collect();
        for predicate in &self.predicates {
            let Some(&(_, kind)) = schema.iter().find(|(name, _)| *name == predicate.column) else {
                return Err(FilterCheckError::UnknownColumn { column: predicate.column.clone() });
            };
            check_predicate(predicate, kind)?;
        }
        Ok(())
    }
}

fn check_predicate(predicate: &Predicate, kind: ColumnKind) -> Result<(), FilterCheckError> {
    let literals: Vec<&Literal> = match &predicate.test {
        Test::Compare { value, .. } => vec![value],
        Test::Between { low, high } => vec![low, high],
        Test::In(values) => values.iter().collect(),
        Test::IsNull | Test::IsNotNull => Vec::new(),
    };
    match literals.into_iter().find(|l| !kind.accepts(l)) {
        None => Ok(()),
        Some(literal) => Err(FilterCheckError::WrongType {
            column: predicate.column.clone(),
            kind: kind.to_string(),
            literal: literal.to_string(),
        }),
    }
}
