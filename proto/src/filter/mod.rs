//! Row filters: the typed language in which a conditional grant names the rows it allows (and
//! that the online query reuses). Pure: text in, a typed [`RowFilter`] or a typed error out.
//!
//! A filter is a conjunction (`AND`) of conditions on one column each:
//!
//! ```text
//! filter    = group ( AND group )*
//! group     = condition | "(" filter ")"
//! condition = column op literal
//!           | column BETWEEN literal AND literal
//!           | column IN "(" literal ( "," literal )* ")"
//!           | column IS [NOT] NULL
//! op        = "=" | "!=" | "<>" | "<" | ">" | "<=" | ">="
//! column    = [A-Za-z_][A-Za-z0-9_]* (at most 64 bytes), or the same in double quotes
//! literal   = integer | decimal | 'string' ('' inside is one quote) | TRUE | FALSE
//!           | DATE 'YYYY-MM-DD'
//! ```
//!
//! Keywords are case-insensitive; a column whose name is a keyword is written in double quotes.
//! `OR` and `NOT` (other than in `IS NOT NULL`) are refused with a message saying so.
//!
//! [`RowFilter`]'s `Display` is canonical: conditions sorted and without duplicates, `IN` lists
//! sorted and without duplicates, keywords in upper case, decimals without trailing zeros, so
//! equal filters print the same text (grants store that text, and [`crate::policy::Restriction::id`]
//! hashes it). Parsing the canonical text gives the same filter back.
//!
//! [`RowFilter::check_against`] checks a filter against a table's columns ([`ColumnKind`]):
//! unknown columns and literals of the wrong type are refused. Neighbours: the control plane
//! validates `--rows` of applications with it; `ferry-tables` evaluates it over Arrow batches.

mod check;
mod parse;
#[cfg(test)]
mod tests;

pub use check::{ColumnKind, FilterCheckError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses accepted.
pub const MAX_NESTING: usize = 8;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 64;
/// Most values in one `IN` list.
pub const MAX_IN_VALUES: usize = 256;
/// Longest column name, in bytes.
pub const MAX_COLUMN_LEN: usize = 64;

/// Why a filter text was refused. Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("row filter is empty")]
    Empty,
    #[error("row filter is {len} bytes long, more than {max}")]
    TooLong { len: usize, max: usize },
    #[error("row filter: at position {position}: unexpected {found}, expected {expected}")]
    Unexpected { position: usize, found: String, expected: &'static str },
    #[error("row filter: at position {position}: bad literal {token}: {reason}")]
    BadLiteral { position: usize, token: String, reason: &'static str },
    #[error("row filter: at position {position}: {token} is not supported: {hint}")]
    Unsupported { position: usize, token: String, hint: &'static str },
    #[error("row filter: at position {position}: parentheses nested deeper than {max}")]
    TooDeep { position: usize, max: usize },
    #[error("row filter: at position {position}: more than {max} conditions")]
    TooManyConditions { position: usize, max: usize },
    #[error("row filter: at position {position}: IN list longer than {max} values")]
    TooManyValues { position: usize, max: usize },
}

/// A parsed row filter: a conjunction of [`Predicate`]s, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowFilter {
    predicates: Vec<Predicate>,
}

/// One condition on one column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Predicate {
    pub column: String,
    pub test: Test,
}

/// What a [`Predicate`] asks of its column's value. A comparison with a null value is false,
/// as in SQL (a row whose column is null passes only `IS NULL`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Test {
    Compare {
        op: CmpOp,
        value: Literal,
    },
    /// `low <= value <= high`.
    Between {
        low: Literal,
        high: Literal,
    },
    /// Sorted, without duplicates, not empty.
    In(Vec<Literal>),
    IsNull,
    IsNotNull,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// A typed literal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Literal {
    Integer(i128),
    Decimal(Decimal),
    Text(String),
    Bool(bool),
    Date(Date),
}

/// A decimal literal `mantissa / 10^scale`, normalized: `scale >= 1` and the last fractional
/// digit is not 0 unless `scale == 1` (`1.50` is `1.5`, `2.00` is `2.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal {
    pub mantissa: i128,
    pub scale: u8,
}

/// A calendar date (proleptic Gregorian), years 1 to 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Days since 1970-01-01 (Arrow's `Date32`).
    pub fn days_since_epoch(self) -> i32 {
        // Howard Hinnant's days_from_civil.
        let y = self.year - i32::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i32::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i32::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

impl RowFilter {
    /// Parses filter text; see the module doc for the grammar and the bounds.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let predicates = parse::parse(text)?;
        Ok(Self::from_predicates(predicates))
    }

    fn from_predicates(mut predicates: Vec<Predicate>) -> Self {
        for p in &mut predicates {
            if let Test::In(values) = &mut p.test {
                values.sort();
                values.dedup();
            }
        }
        predicates.sort();
        predicates.dedup();
        Self { predicates }
    }

    /// The conditions, in canonical order; a row passes when it passes all of them.
    pub fn predicates(&self) -> &[Predicate] {
        &self.predicates
    }

    /// The rows both filters pass: the conditions of both, in canonical order (a query's
    /// predicate ANDed with the row filter of the grant it runs under).
    pub fn and(&self, other: &RowFilter) -> RowFilter {
        Self::from_predicates(self.predicates.iter().chain(&other.predicates).cloned().collect())
    }

    /// The columns the filter reads, sorted, each once.
    pub fn columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = self.predicates.iter().map(|p| p.column.as_str()).collect();
        columns.dedup();
        columns
    }
}

fn is_keyword(word: &str) -> bool {
    const KEYWORDS: [&str; 10] = ["AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE", "DATE"];
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// A column name as the canonical text writes it (in double quotes when it is a keyword).
pub(crate) fn display_column(name: &str) -> String {
    if is_keyword(name) { format!("\"{name}\"") } else { name.to_owned() }
}

fn write_column(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if is_keyword(name) { write!(f, "\"{name}\"") } else { f.write_str(name) }
}

impl fmt::Display for RowFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.predicates.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_column(f, &self.column)?;
        match &self.test {
            Test::Compare { op, value } => write!(f, " {} {value}", op.as_str()),
            Test::Between { low, high } => write!(f, " BETWEEN {low} AND {high}"),
            Test::In(values) => {
                f.write_str(" IN (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            Test::IsNull => f.write_str(" IS NULL"),
            Test::IsNotNull => f.write_str(" IS NOT NULL"),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(v) => write!(f, "{v}"),
            Self::Decimal(d) => write!(f, "{d}"),
            Self::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Self::Bool(true) => f.write_str("TRUE"),
            Self::Bool(false) => f.write_str("FALSE"),
            Self::Date(d) => write!(f, "DATE '{d}'"),
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for RowFilter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RowFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}
