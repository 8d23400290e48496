//! Dataset definitions: the catalog core of regulation Art. 8 — who provides a dataset, how it is
//! shared and refreshed, and its *information items* (columns, types, keys) — as a versioned
//! schema contract written in TOML.
//!
//! A definition is parsed once into typed values ([`DatasetDefinition::parse_toml`]); every later
//! step trusts it. [`check_schema`] compares a source file's Arrow schema with the contract and
//! lists every difference; [`conform_batch`] casts a batch to the contract's exact schema.
//! Neighbours: [`crate::source`] turns an uploaded file into Parquet with these checks; the
//! catalog (control plane) stores definitions and their [`DatasetDefinition::fingerprint`];
//! `crate::synth` emits definitions for the synthetic datasets.
//!
//! Which source types convert losslessly is documented on [`check_schema`].
//!
//! ## Rules
//! - Column names are identifiers `[A-Za-z_][A-Za-z0-9_]*` of at most 64 bytes, unique; the
//!   human-readable (Chinese) name of an item goes into its `description`.
//! - `nullable` defaults to `true`, except for key columns, where it defaults to `false`; a key
//!   column declared `nullable = true` is refused.
//! - Key columns must have a type with exact equality and a total order: integers, `decimal`,
//!   `utf8`, `date32`, `timestamp`. Refused: `float32`/`float64` (NaN and −0.0 make equality
//!   ambiguous), `binary` (no readable form for lookups) and `bool` (at most two rows).
//! - Time zones are fixed offsets such as `+08:00` (arrow is built without `chrono-tz`).
//!
mod schema;

pub(crate) use schema::check_names;
pub use schema::{ColumnProblem, ConformError, SchemaMismatch, check_schema, conform_batch};

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ferry_proto::{DatasetId, DeptId, IdError, ShareType};
use serde::{Deserialize, Serialize};

/// How often the provider refreshes the data (Art. 8 更新周期).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateCycle {
    Realtime,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
    OnChange,
}

/// Security classification of the data (Art. 8 安全分级).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityLevel {
    Public,
    #[default]
    Internal,
    Sensitive,
    Secret,
}

/// Resolution of a timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampUnit {
    Millisecond,
    Microsecond,
    Nanosecond,
}

impl TimestampUnit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Millisecond => "ms",
            Self::Microsecond => "us",
            Self::Nanosecond => "ns",
        }
    }

    fn to_arrow(self) -> TimeUnit {
        match self {
            Self::Millisecond => TimeUnit::Millisecond,
            Self::Microsecond => TimeUnit::Microsecond,
            Self::Nanosecond => TimeUnit::Nanosecond,
        }
    }
}

/// The type of one information item, written as in the TOML (`int32`, `decimal(12,2)`,
/// `timestamp(ms, +08:00)`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    /// Decimal128; `1 <= precision <= 38`, `0 <= scale <= precision`.
    Decimal {
        precision: u8,
        scale: i8,
    },
    Utf8,
    Binary,
    Date32,
    /// `timezone` is a fixed offset such as `+08:00`, or `None` for wall-clock time.
    Timestamp {
        unit: TimestampUnit,
        timezone: Option<String>,
    },
}

/// Why a type string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown column type {text:?}: {reason}")]
pub struct ColumnTypeError {
    pub text: String,
    pub reason: String,
}

impl ColumnType {
    /// The Arrow type a published file stores for this column.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int8 => DataType::Int8,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::UInt8 => DataType::UInt8,
            Self::UInt16 => DataType::UInt16,
            Self::UInt32 => DataType::UInt32,
            Self::UInt64 => DataType::UInt64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::Utf8 => DataType::Utf8,
            Self::Binary => DataType::Binary,
            Self::Date32 => DataType::Date32,
            Self::Timestamp { unit, timezone } => {
                DataType::Timestamp(unit.to_arrow(), timezone.as_deref().map(Arc::from))
            }
        }
    }

    /// Whether a column of this type may be (part of) the dataset key; see the module doc.
    pub fn is_keyable(&self) -> bool {
        !matches!(self, Self::Bool | Self::Float32 | Self::Float64 | Self::Binary)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let simple = match self {
            Self::Bool => "bool",
            Self::Int8 => "int8",
            Self::Int16 => "int16",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::UInt8 => "uint8",
            Self::UInt16 => "uint16",
            Self::UInt32 => "uint32",
            Self::UInt64 => "uint64",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::Utf8 => "utf8",
            Self::Binary => "binary",
            Self::Date32 => "date32",
            Self::Decimal { precision, scale } => return write!(f, "decimal({precision},{scale})"),
            Self::Timestamp { unit, timezone: None } => {
                return write!(f, "timestamp({})", unit.as_str());
            }
            Self::Timestamp { unit, timezone: Some(tz) } => {
                return write!(f, "timestamp({}, {tz})", unit.as_str());
            }
        };
        f.write_str(simple)
    }
}

impl FromStr for ColumnType {
    type Err = ColumnTypeError;

    fn from_str(text: &str) -> Result<Self, ColumnTypeError> {
        let fail = |reason: &str| ColumnTypeError { text: text.to_owned(), reason: reason.to_owned() };
        let trimmed = text.trim();
        let simple = match trimmed {
            "bool" => Some(Self::Bool),
            "int8" => Some(Self::Int8),
            "int16" => Some(Self::Int16),
            "int32" => Some(Self::Int32),
            "int64" => Some(Self::Int64),
            "uint8" => Some(Self::UInt8),
            "uint16" => Some(Self::UInt16),
            "uint32" => Some(Self::UInt32),
            "uint64" => Some(Self::UInt64),
            "float32" => Some(Self::Float32),
            "float64" => Some(Self::Float64),
            "utf8" => Some(Self::Utf8),
            "binary" => Some(Self::Binary),
            "date32" => Some(Self::Date32),
            _ => None,
        };
        if let Some(simple) = simple {
            return Ok(simple);
        }
        let (head, args) =
            trimmed.strip_suffix(')').and_then(|t| t.split_once('(')).ok_or_else(|| fail(EXPECTED_TYPES))?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        match (head.trim(), args.as_slice()) {
            ("decimal", [p, s]) => {
                let precision: u8 = p.parse().map_err(|_| fail("precision is not a number"))?;
                let scale: i8 = s.parse().map_err(|_| fail("scale is not a number"))?;
                if !(1..=38).contains(&precision) {
                    return Err(fail("precision must be 1..=38"));
                }
                if scale < 0 || scale as u8 > precision {
                    return Err(fail("scale must be 0..=precision"));
                }
                Ok(Self::Decimal { precision, scale })
            }
            ("timestamp", [unit, rest @ ..]) if rest.len() <= 1 => {
                let unit = match *unit {
                    "ms" => TimestampUnit::Millisecond,
                    "us" => TimestampUnit::Microsecond,
                    "ns" => TimestampUnit::Nanosecond,
                    _ => return Err(fail("timestamp unit must be ms, us or ns")),
                };
                let timezone = match rest.first() {
                    None => None,
                    Some(tz) => {
                        arrow::array::timezone::Tz::from_str(tz)
                            .map_err(|_| fail("time zone must be a fixed offset like +08:00"))?;
                        Some((*tz).to_owned())
                    }
                };
                Ok(Self::Timestamp { unit, timezone })
            }
            _ => Err(fail(EXPECTED_TYPES)),
        }
    }
}

const EXPECTED_TYPES: &str = "expected bool, int8..int64, uint8..uint64, float32, float64, \
     decimal(P,S), utf8, binary, date32 or timestamp(ms|us|ns[, +HH:MM])";

/// One information item (column) of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub column_type: ColumnType,
    pub key: bool,
    pub nullable: bool,
    pub description: Option<String>,
}

/// A validated dataset definition (catalog entry core, Art. 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetDefinition {
    pub id: DatasetId,
    pub name: String,
    pub provider: DeptId,
    pub description: Option<String>,
    /// Version of this definition (schema contract); starts at 1.
    pub definition_version: u32,
    pub share_type: ShareType,
    pub update_cycle: UpdateCycle,
    pub security_level: SecurityLevel,
    pub source_system: Option<String>,
    /// Columns in their published order.
    pub columns: Vec<ColumnDef>,
}

/// What is wrong with a definition's value at some key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionProblem {
    #[error("{0}")]
    BadIdentifier(IdError),
    #[error("must not be empty")]
    Empty,
    #[error("must be at least 1")]
    ZeroVersion,
    #[error("a dataset needs at least one column")]
    NoColumns,
    #[error("no column has `key = true`; a dataset needs a key")]
    NoKeyColumn,
    #[error("column name {0:?} is not an identifier [A-Za-z_][A-Za-z0-9_]* of at most 64 bytes")]
    BadColumnName(String),
    #[error("column name {0:?} appears more than once")]
    DuplicateColumn(String),
    #[error("{0}")]
    BadType(ColumnTypeError),
    #[error("key column {0:?} cannot be nullable")]
    NullableKey(String),
    #[error(
        "column {name:?} of type {column_type} cannot be a key (floats, binary and bool are not keyable)"
    )]
    UnkeyableType { name: String, column_type: ColumnType },
}

/// Why a definition document was refused. Every variant names the TOML key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// Not TOML, an unknown key, a missing key or a value of the wrong kind; the message (from
    /// the TOML parser) names the key and shows the line.
    #[error("dataset definition: {0}")]
    Syntax(String),
    #[error("dataset definition: `{key}`: {problem}")]
    Invalid { key: String, problem: DefinitionProblem },
}

fn invalid(key: impl Into<String>, problem: DefinitionProblem) -> DefinitionError {
    DefinitionError::Invalid { key: key.into(), problem }
}

/// The TOML document as written; [`DatasetDefinition`] is its validated form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDefinition {
    id: String,
    name: String,
    provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default = "first_version")]
    definition_version: u32,
    share_type: ShareType,
    update_cycle: UpdateCycle,
    #[serde(default)]
    security_level: SecurityLevel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_system: Option<String>,
    #[serde(default)]
    columns: Vec<RawColumn>,
}

fn first_version() -> u32 {
    1
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    column_type: String,
    #[serde(default)]
    key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nullable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

fn is_column_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && name.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn non_empty(key: &str, text: String) -> Result<String, DefinitionError> {
    if text.trim().is_empty() { Err(invalid(key, DefinitionProblem::Empty)) } else { Ok(text) }
}

fn validate_column(index: usize, raw: RawColumn) -> Result<ColumnDef, DefinitionError> {
    let key_of = |field: &str| format!("columns[{index}].{field}");
    if !is_column_name(&raw.name) {
        return Err(invalid(key_of("name"), DefinitionProblem::BadColumnName(raw.name)));
    }
    let column_type: ColumnType =
        raw.column_type.parse().map_err(|e| invalid(key_of("type"), DefinitionProblem::BadType(e)))?;
    let nullable = raw.nullable.unwrap_or(!raw.key);
    if raw.key && nullable {
        return Err(invalid(key_of("nullable"), DefinitionProblem::NullableKey(raw.name)));
    }
    if raw.key && !column_type.is_keyable() {
        let problem = DefinitionProblem::UnkeyableType { name: raw.name, column_type };
        return Err(invalid(key_of("key"), problem));
    }
    Ok(ColumnDef { name: raw.name, column_type, key: raw.key, nullable, description: raw.description })
}

impl DatasetDefinition {
    /// Parses and validates a TOML definition.
    pub fn parse_toml(text: &str) -> Result<Self, DefinitionError> {
        let raw: RawDefinition = toml::from_str(text).map_err(|e| DefinitionError::Syntax(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawDefinition) -> Result<Self, DefinitionError> {
        let id = DatasetId::new(raw.id).map_err(|e| invalid("id", DefinitionProblem::BadIdentifier(e)))?;
        let provider = DeptId::new(raw.provider)
            .map_err(|e| invalid("provider", DefinitionProblem::BadIdentifier(e)))?;
        let name = non_empty("name", raw.name)?;
        if raw.definition_version == 0 {
            return Err(invalid("definition-version", DefinitionProblem::ZeroVersion));
        }
        if raw.columns.is_empty() {
            return Err(invalid("columns", DefinitionProblem::NoColumns));
        }
        let mut seen = HashSet::new();
        let mut columns = Vec::with_capacity(raw.columns.len());
        for (index, raw_column) in raw.columns.into_iter().enumerate() {
            let column = validate_column(index, raw_column)?;
            if !seen.insert(column.name.clone()) {
                let key = format!("columns[{index}].name");
                return Err(invalid(key, DefinitionProblem::DuplicateColumn(column.name)));
            }
            columns.push(column);
        }
        if !columns.iter().any(|c| c.key) {
            return Err(invalid("columns", DefinitionProblem::NoKeyColumn));
        }
        Ok(Self {
            id,
            name,
            provider,
            description: raw.description,
            definition_version: raw.definition_version,
            share_type: raw.share_type,
            update_cycle: raw.update_cycle,
            security_level: raw.security_level,
            source_system: raw.source_system,
            columns,
        })
    }

    /// The exact Arrow schema of published files: the columns in declared order, with the
    /// declared nullability and no metadata.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> =
            self.columns.iter().map(|c| Field::new(&c.name, c.column_type.to_arrow(), c.nullable)).collect();
        Arc::new(Schema::new(fields))
    }

    /// The key columns in declared order (the sort order of published files).
    pub fn key_columns(&self) -> Vec<&ColumnDef> {
        self.columns.iter().filter(|c| c.key).collect()
    }

    /// The column with this name, if any.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Hex BLAKE3 of the schema contract: for each column in order its name, type, nullability
    /// and key flag. Descriptions and catalog metadata do not change it.
    pub fn fingerprint(&self) -> String {
        let mut canonical = String::from("ferry-schema-v1\n");
        for c in &self.columns {
            let nullability = if c.nullable { "nullable" } else { "required" };
            let key = if c.key { "key" } else { "-" };
            canonical.push_str(&format!("{}\t{}\t{nullability}\t{key}\n", c.name, c.column_type));
        }
        blake3::hash(canonical.as_bytes()).to_hex().to_string()
    }

    /// The definition as TOML that [`Self::parse_toml`] reads back to an equal value.
    pub fn to_toml(&self) -> String {
        let raw = RawDefinition {
            id: self.id.to_string(),
            name: self.name.clone(),
            provider: self.provider.to_string(),
            description: self.description.clone(),
            definition_version: self.definition_version,
            share_type: self.share_type,
            update_cycle: self.update_cycle,
            security_level: self.security_level,
            source_system: self.source_system.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| RawColumn {
                    name: c.name.clone(),
                    column_type: c.column_type.to_string(),
                    key: c.key,
                    nullable: Some(c.nullable),
                    description: c.description.clone(),
                })
                .collect(),
        };
        // Serializing plain strings, integers and enums to TOML cannot fail.
        toml::to_string(&raw).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
