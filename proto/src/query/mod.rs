//! Online queries (联机查询): the typed form of what a `Message::Query` asks — a predicate, a
//! projection, a limit and the result's format — and its canonical JSON, which is what the
//! message carries. Pure: text in, a typed [`QuerySpec`] or a typed error out.
//!
//! The predicate is a [`RowFilter`] (the language of a grant's row filter: `=`, `!=`, `<`,
//! `>`, `<=`, `>=`, `BETWEEN`, `IN (...)`, `IS [NOT] NULL`, joined by `AND`), so a query and
//! the row filter of the grant it runs under are one type and the node ANDs them
//! ([`RowFilter::and`]). In the JSON the predicate is its canonical text.
//!
//! [`QuerySpec::check_against`] checks a query against the columns the asker may see (name and
//! [`ColumnKind`]) before any file is read: an unknown column — in the projection or the
//! predicate — or a literal of the wrong type is refused naming it and its position in the
//! canonical predicate text (characters from 1). A column outside a restricted grant is not
//! among the columns checked against, so it reads as unknown, telling nothing of the table.
//!
//! Neighbours: the node's query engine (`ferry-daemon`, `data/query/`) runs a checked query;
//! `ferry_client::query` and `ferry query` build one.

use crate::filter::{ColumnKind, FilterError, Literal, MAX_COLUMN_LEN, Predicate, RowFilter, Test};
use serde::{Deserialize, Serialize};

/// Most columns a projection may name.
pub const MAX_PROJECTION: usize = 1024;

/// The format a query's result is streamed in (`QueryData` frames, concatenated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryFormat {
    /// An Arrow IPC stream (schema, then record batches).
    #[default]
    ArrowIpc,
    /// CSV with a header line.
    Csv,
    /// JSON lines: one object per row.
    Json,
}

impl QueryFormat {
    /// The name used on the command line and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ArrowIpc => "arrow-ipc",
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

/// One online query: the rows `predicate` passes (all rows without one), the `columns` named
/// (all the asker may see without them, in the table's order), at most `limit` rows, in `format`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuerySpec {
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub predicate: Option<RowFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default)]
    pub format: QueryFormat,
}

/// Why a query was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The message's query is not a query document.
    #[error("the query is not a valid query document: {0}")]
    Malformed(String),
    /// The predicate does not parse (the error names the token and its position).
    #[error(transparent)]
    Predicate(#[from] FilterError),
    #[error("the projection names no column")]
    NoColumns,
    #[error("the projection names more than {max} columns")]
    TooManyColumns { max: usize },
    #[error("the projection names column {column:?} twice")]
    DuplicateColumn { column: String },
    #[error("the projection names {column:?}, which is not a column name")]
    BadColumnName { column: String },
    #[error("the limit must be at least 1")]
    ZeroLimit,
    /// A column the asker cannot see: `position` is where it stands in the canonical predicate
    /// (`None` when only the projection names it).
    #[error("unknown column {column:?}{}", at(*position, predicate))]
    UnknownColumn { column: String, position: Option<usize>, predicate: String },
    /// A literal that is not a value of its column's type.
    #[error(
        "bad literal {literal} for column {column:?} ({kind}){}: a value of another type or out of range",
        at(Some(*position), predicate)
    )]
    BadLiteral { column: String, kind: String, literal: String, position: usize, predicate: String },
}

fn at(position: Option<usize>, predicate: &str) -> String {
    match position {
        Some(p) => format!(" at position {p} of the predicate `{predicate}`"),
        None => " in the projection".to_owned(),
    }
}

impl QuerySpec {
    /// A query from its parts as a user types them: `predicate` in the row filter language,
    /// `columns` names. Checks what can be checked without the table.
    pub fn new(
        predicate: Option<&str>,
        columns: Option<Vec<String>>,
        limit: Option<u64>,
        format: QueryFormat,
    ) -> Result<Self, QueryError> {
        let predicate = predicate.map(RowFilter::parse).transpose()?;
        let spec = Self { predicate, columns, limit, format };
        spec.validate()?;
        Ok(spec)
    }

    /// The canonical JSON carried by `Message::Query`.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON of a `Message::Query` and checks what can be checked without the table.
    pub fn from_json(text: &str) -> Result<Self, QueryError> {
        let spec: Self = serde_json::from_str(text).map_err(|e| QueryError::Malformed(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), QueryError> {
        if self.limit == Some(0) {
            return Err(QueryError::ZeroLimit);
        }
        let Some(columns) = &self.columns else { return Ok(()) };
        if columns.is_empty() {
            return Err(QueryError::NoColumns);
        }
        if columns.len() > MAX_PROJECTION {
            return Err(QueryError::TooManyColumns { max: MAX_PROJECTION });
        }
        for (i, column) in columns.iter().enumerate() {
            let valid =
                !column.is_empty() && column.len() <= MAX_COLUMN_LEN && !column.contains(char::is_control);
            if !valid {
                return Err(QueryError::BadColumnName { column: column.clone() });
            }
            if columns[..i].contains(column) {
                return Err(QueryError::DuplicateColumn { column: column.clone() });
            }
        }
        Ok(())
    }

    /// Checks the projection and the predicate against the columns the asker may see, in the
    /// table's order (see the module doc).
    pub fn check_against<'a, I>(&self, schema: I) -> Result<(), QueryError>
    where
        I: IntoIterator<Item = (&'a str, ColumnKind)>,
    {
        let schema: Vec<(&str, ColumnKind)> = schema.into_iter().collect();
        let kind_of = |name: &str| schema.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
        if let Some(filter) = &self.predicate {
            let text = filter.to_string();
            let mut position = 1;
            for predicate in filter.predicates() {
                let shown = predicate.to_string();
                let Some(kind) = kind_of(&predicate.column) else {
                    return Err(QueryError::UnknownColumn {
                        column: predicate.column.clone(),
                        position: Some(position),
                        predicate: text,
                    });
                };
                check_literals(predicate, kind, &shown, position, &text)?;
                position += shown.chars().count() + " AND ".len();
            }
        }
        for column in self.columns.iter().flatten() {
            if kind_of(column).is_none() {
                return Err(QueryError::UnknownColumn {
                    column: column.clone(),
                    position: None,
                    predicate: String::new(),
                });
            }
        }
        Ok(())
    }

    /// The projection resolved against the visible columns: the named ones in the asked order,
    /// or every visible one.
    pub fn projection<'a>(&'a self, visible: &'a [String]) -> Vec<&'a str> {
        match &self.columns {
            Some(columns) => columns.iter().map(String::as_str).collect(),
            None => visible.iter().map(String::as_str).collect(),
        }
    }
}

/// Refuses the first literal of `predicate` that `kind` does not accept, with its position
/// (`start` is the predicate's position in the canonical text).
fn check_literals(
    predicate: &Predicate,
    kind: ColumnKind,
    shown: &str,
    start: usize,
    text: &str,
) -> Result<(), QueryError> {
    let literals: Vec<&Literal> = match &predicate.test {
        Test::Compare { value, .. } => vec![value],
        Test::Between { low, high } => vec![low, high],
        Test::In(values) => values.iter().collect(),
        Test::IsNull | Test::IsNotNull => Vec::new(),
    };
    // Literals print after the column name, in order: search from there on.
    let mut from = crate::filter::display_column(&predicate.column).len();
    for literal in literals {
        let literal_text = literal.to_string();
        let offset = shown[from..].find(&literal_text).map_or(from, |i| from + i);
        if !kind.accepts(literal) {
            return Err(QueryError::BadLiteral {
                column: predicate.column.clone(),
                kind: kind.to_string(),
                literal: literal_text,
                position: start + shown[..offset].chars().count(),
                predicate: text.to_owned(),
            });
        }
        from = offset + literal_text.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
