//! The catalog document: TOML in, typed [`CatalogEntry`] or every problem at once out.
//!
//! The document is read as a TOML table and walked key by key, so that one pass reports every
//! unknown key, missing field, wrong value and bad information item as a [`Violation`] (codes
//! `D0xx` and `C001`, see [`RuleCode`]). Only when the walk is clean is the definition part
//! handed to [`DatasetDefinition::parse_toml`], which stays the single authority on what a
//! schema contract is. Sizes are bounded before anything is allocated per column.
//! Neighbours: [`super::compliance`] runs the rules on what the walk found.

use std::collections::HashSet;
use std::str::FromStr;

use ferry_proto::{DatasetId, DeptId, ServiceMethod, ShareType};
use serde::Serialize;
use toml::{Table, Value};

use super::compliance::{ComplianceReport, Facts, ItemFacts, RuleCode, Violation, rules};
use super::{CatalogEntry, Classification, DataFormat, Stage, normalize_methods};
use crate::definition::{ColumnType, DatasetDefinition, SecurityLevel, UpdateCycle};

/// Largest catalog document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most information items (columns) one entry may have.
pub const MAX_COLUMNS: usize = 1000;
/// Longest free-text value (name, description, conditions, scope, basis), in bytes.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// Why a catalog document did not become a [`CatalogEntry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogDocumentError {
    #[error("catalog document is {bytes} bytes; the limit is {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("catalog document has {items} information items; the limit is {max}")]
    TooManyItems { items: usize, max: usize },
    /// Everything wrong with it, all at once.
    #[error("catalog document refused:\n{0}")]
    Invalid(ComplianceReport),
}

impl CatalogDocumentError {
    /// The error as a report, for callers that print every problem the same way.
    pub fn into_report(self) -> ComplianceReport {
        let violation = |rule, message: String| ComplianceReport {
            violations: vec![Violation { rule, field: String::new(), message }],
        };
        match self {
            Self::TooLarge { .. } => violation(RuleCode::DocumentTooLarge, self.to_string()),
            Self::TooManyItems { .. } => violation(RuleCode::TooManyItems, self.to_string()),
            Self::Invalid(report) => report,
        }
    }
}

/// What one read of a document found.
pub(crate) struct Draft {
    pub violations: Vec<Violation>,
    /// `None` when the text is not TOML: there is nothing to judge.
    pub facts: Option<Facts>,
    pub entry: Option<CatalogEntry>,
}

const TOP_KEYS: &[&str] = &[
    "id",
    "name",
    "provider",
    "description",
    "definition-version",
    "share-type",
    "update-cycle",
    "security-level",
    "source-system",
    "columns",
    "catalog",
];
const CATALOG_KEYS: &[&str] =
    &["classification", "format", "stage", "share-conditions", "share-scope", "methods", "legal-basis"];
const COLUMN_KEYS: &[&str] = &["name", "type", "key", "nullable", "description"];

pub(crate) fn parse(text: &str) -> Result<CatalogEntry, CatalogDocumentError> {
    let draft = read(text)?;
    match draft.entry {
        Some(entry) => Ok(entry),
        None => {
            let mut violations = draft.violations;
            if let Some(facts) = &draft.facts {
                violations.extend(rules(facts, None));
            }
            Err(CatalogDocumentError::Invalid(ComplianceReport { violations }))
        }
    }
}

/// Walks the document; the entry is built only when nothing is wrong with its structure.
pub(crate) fn read(text: &str) -> Result<Draft, CatalogDocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(CatalogDocumentError::TooLarge { bytes: text.len(), max: MAX_DOCUMENT_BYTES });
    }
    let table: Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            let violation = Violation::new(RuleCode::Syntax, "", e.to_string());
            return Ok(Draft { violations: vec![violation], facts: None, entry: None });
        }
    };
    if let Some(Value::Array(columns)) = table.get("columns")
        && columns.len() > MAX_COLUMNS
    {
        return Err(CatalogDocumentError::TooManyItems { items: columns.len(), max: MAX_COLUMNS });
    }
    let mut walk = Walk::default();
    let draft = walk.document(&table);
    Ok(draft)
}

#[derive(Default)]
struct Walk {
    violations: Vec<Violation>,
}

/// The catalog table's values as the walk found them.
struct CatalogPart {
    classification: Option<Classification>,
    format: Option<DataFormat>,
    stage: Option<Stage>,
}

impl Walk {
    fn document(&mut self, table: &Table) -> Draft {
        self.unknown_keys(table, TOP_KEYS, "");
        self.parsed(table, "id", "id", true, |t| DatasetId::new(t).map_err(|e| e.to_string()));
        self.text(table, "name", "name", true);
        self.text(table, "description", "description", false);
        self.text(table, "update-cycle", "update-cycle", true)
            .and_then(|t| self.enumerated::<UpdateCycle>(&t, "update-cycle"));
        if let Some(v) = table.get("definition-version")
            && !v.as_integer().is_some_and(|n| n >= 1 && n <= i64::from(u32::MAX))
        {
            self.bad_value("definition-version", "must be an integer of at least 1");
        }
        let provider =
            self.parsed(table, "provider", "provider", true, |t| DeptId::new(t).map_err(|e| e.to_string()));
        let share_type = self.parsed(table, "share-type", "share-type", true, |t| {
            t.parse::<ShareType>().map_err(|e| e.to_string())
        });
        let security_level = self
            .text(table, "security-level", "security-level", true)
            .and_then(|t| self.enumerated::<SecurityLevel>(&t, "security-level"));
        let source_system = self.text(table, "source-system", "source-system", false);
        let items = self.columns(table.get("columns"));
        let catalog = self.catalog_table(table.get("catalog"));
        let empty = Table::new();
        let catalog_table =
            table.get("catalog").and_then(Value::as_table).filter(|_| catalog).unwrap_or(&empty);
        let part = if catalog {
            self.catalog_part(catalog_table)
        } else {
            CatalogPart { classification: None, format: None, stage: None }
        };
        let share_conditions =
            self.text(catalog_table, "share-conditions", "catalog.share-conditions", false);
        let share_scope = self.text(catalog_table, "share-scope", "catalog.share-scope", false);
        let legal_basis = self.text(catalog_table, "legal-basis", "catalog.legal-basis", false);
        let methods = if catalog { self.methods(catalog_table) } else { None };
        let facts = Facts {
            provider,
            share_type,
            security_level,
            classification: part.classification.clone(),
            source_system,
            share_conditions,
            share_scope,
            legal_basis,
            methods,
            items,
            reported: Vec::new(),
        };
        let entry =
            if catalog && self.violations.is_empty() { self.build(table, &facts, part) } else { None };
        let reported = self.violations.iter().map(|v| v.field.clone()).collect();
        let facts = Facts { reported, ..facts };
        Draft { violations: std::mem::take(&mut self.violations), facts: Some(facts), entry }
    }

    fn build(&mut self, table: &Table, facts: &Facts, part: CatalogPart) -> Option<CatalogEntry> {
        if facts.items.is_none_or(|items| items.count == 0 || items.keys == 0) {
            return None; // the information-items rule says why
        }
        let mut definition_table = table.clone();
        definition_table.remove("catalog");
        let definition_text = toml::to_string(&definition_table).ok()?;
        let definition = match DatasetDefinition::parse_toml(&definition_text) {
            Ok(definition) => definition,
            Err(e) => {
                self.violations.push(Violation::new(RuleCode::BadItem, "", e.to_string()));
                return None;
            }
        };
        let mut methods = facts.methods.clone().unwrap_or_default();
        normalize_methods(&mut methods);
        Some(CatalogEntry {
            definition,
            classification: part.classification?,
            format: part.format?,
            stage: part.stage?,
            share_conditions: facts.share_conditions.clone(),
            share_scope: facts.share_scope.clone(),
            methods,
            legal_basis: facts.legal_basis.clone(),
        })
    }

    /// Whether the `[catalog]` table is there and is a table.
    fn catalog_table(&mut self, value: Option<&Value>) -> bool {
        match value {
            None => {
                let message = "the [catalog] table is missing (classification, format, stage, methods, …)";
                self.violations.push(Violation::new(RuleCode::MandatoryField, "catalog", message));
                false
            }
            Some(Value::Table(catalog)) => {
                self.unknown_keys(catalog, CATALOG_KEYS, "catalog.");
                true
            }
            Some(_) => {
                self.bad_value("catalog", "must be a table ([catalog])");
                false
            }
        }
    }

    fn catalog_part(&mut self, catalog: &Table) -> CatalogPart {
        let parse_classification = |t: &str| Classification::new(t).map_err(|e| e.to_string());
        let classification =
            self.parsed(catalog, "classification", "catalog.classification", true, parse_classification);
        let format = self.parsed(catalog, "format", "catalog.format", true, DataFormat::from_str);
        let stage = self.parsed(catalog, "stage", "catalog.stage", true, Stage::from_str);
        CatalogPart { classification, format, stage }
    }

    fn methods(&mut self, catalog: &Table) -> Option<Vec<ServiceMethod>> {
        let Some(value) = catalog.get("methods") else {
            return Some(Vec::new()); // no methods; the share-type rule judges whether that is right
        };
        let Some(array) = value.as_array() else {
            self.bad_value("catalog.methods", "must be an array of strings");
            return None;
        };
        let mut methods = Vec::with_capacity(array.len().min(8));
        let mut ok = true;
        for (index, item) in array.iter().enumerate() {
            let field = format!("catalog.methods[{index}]");
            match item.as_str().map(str::parse::<ServiceMethod>) {
                Some(Ok(method)) => methods.push(method),
                Some(Err(e)) => {
                    ok = false;
                    self.bad_value(&field, &format!("{e}; expected online-query, subscription or download"));
                }
                None => {
                    ok = false;
                    self.bad_value(&field, "must be a string");
                }
            }
        }
        ok.then_some(methods)
    }

    /// Walks `[[columns]]`; returns their counts when the array itself is well formed.
    fn columns(&mut self, value: Option<&Value>) -> Option<ItemFacts> {
        let Some(value) = value else {
            return Some(ItemFacts { count: 0, keys: 0 });
        };
        let Some(array) = value.as_array() else {
            self.bad_value("columns", "must be an array of tables ([[columns]])");
            return None;
        };
        let mut seen = HashSet::new();
        let mut keys = 0;
        for (index, item) in array.iter().enumerate() {
            let prefix = format!("columns[{index}]");
            let Some(column) = item.as_table() else {
                self.bad_value(&prefix, "must be a table");
                continue;
            };
            let (name, key) = self.column(column, &prefix);
            keys += usize::from(key);
            if let Some(name) = name
                && !seen.insert(name.clone())
            {
                let message = format!("column name {name:?} appears more than once");
                self.violations.push(Violation::new(RuleCode::BadItem, format!("{prefix}.name"), message));
            }
        }
        Some(ItemFacts { count: array.len(), keys })
    }

    /// Checks one column; returns its name (when it has one) and whether it is a key.
    fn column(&mut self, column: &Table, prefix: &str) -> (Option<String>, bool) {
        self.unknown_keys(column, COLUMN_KEYS, &format!("{prefix}."));
        let field = |key: &str| format!("{prefix}.{key}");
        let name = self.text(column, "name", &field("name"), true);
        if let Some(name) = &name
            && !is_column_name(name)
        {
            let message = format!("{name:?} is not an identifier [A-Za-z_][A-Za-z0-9_]* of at most 64 bytes");
            self.violations.push(Violation::new(RuleCode::BadItem, field("name"), message));
        }
        self.text(column, "description", &field("description"), false);
        let column_type = self.parsed(column, "type", &field("type"), true, |t| {
            ColumnType::from_str(t).map_err(|e| e.to_string())
        });
        let key = self.flag(column, "key", &field("key")).unwrap_or(false);
        let nullable = self.flag(column, "nullable", &field("nullable"));
        if key && nullable == Some(true) {
            let message = "a key column cannot be nullable";
            self.violations.push(Violation::new(RuleCode::BadItem, field("nullable"), message));
        }
        if key && column_type.as_ref().is_some_and(|t| !t.is_keyable()) {
            let message = "floats, binary and bool cannot be (part of) the key";
            self.violations.push(Violation::new(RuleCode::BadItem, field("key"), message));
        }
        (name, key)
    }

    fn flag(&mut self, table: &Table, key: &str, field: &str) -> Option<bool> {
        let value = table.get(key)?;
        let flag = value.as_bool();
        if flag.is_none() {
            self.bad_value(field, "must be true or false");
        }
        flag
    }

    fn unknown_keys(&mut self, table: &Table, known: &[&str], prefix: &str) {
        for key in table.keys().filter(|k| !known.contains(&k.as_str())) {
            let message = format!("unknown key; expected one of {}", known.join(", "));
            self.violations.push(Violation::new(RuleCode::UnknownField, format!("{prefix}{key}"), message));
        }
    }

    /// A string value: missing or blank is `None` (and a violation when `required`).
    fn text(&mut self, table: &Table, key: &str, field: &str, required: bool) -> Option<String> {
        let value = match table.get(key) {
            None => {
                if required {
                    self.violations.push(Violation::new(RuleCode::MandatoryField, field, "missing"));
                }
                return None;
            }
            Some(value) => value,
        };
        let Some(text) = value.as_str() else {
            self.bad_value(field, "must be a string");
            return None;
        };
        if text.len() > MAX_TEXT_BYTES {
            self.bad_value(field, &format!("is {} bytes; the limit is {MAX_TEXT_BYTES}", text.len()));
            return None;
        }
        if text.trim().is_empty() {
            if required {
                self.violations.push(Violation::new(RuleCode::MandatoryField, field, "must not be empty"));
            }
            return None;
        }
        Some(text.to_owned())
    }

    fn parsed<T>(
        &mut self,
        table: &Table,
        key: &str,
        field: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(table, key, field, required)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(message) => {
                self.bad_value(field, &message);
                None
            }
        }
    }

    /// A kebab-case enum of the definition (update cycle, security level).
    fn enumerated<T: serde::de::DeserializeOwned>(&mut self, text: &str, field: &str) -> Option<T> {
        match T::deserialize(Value::String(text.to_owned())) {
            Ok(value) => Some(value),
            Err(e) => {
                self.bad_value(field, &e.to_string());
                None
            }
        }
    }

    fn bad_value(&mut self, field: &str, message: &str) {
        self.violations.push(Violation::new(RuleCode::BadValue, field, message));
    }
}

fn is_column_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && name.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `[catalog]` table as written.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct RawCatalog<'a> {
    classification: &'a str,
    format: &'a str,
    stage: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    share_conditions: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    share_scope: Option<&'a str>,
    methods: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    legal_basis: Option<&'a str>,
}

#[derive(Serialize)]
struct CatalogTable<'a> {
    catalog: RawCatalog<'a>,
}

pub(crate) fn render(entry: &CatalogEntry) -> String {
    let catalog = CatalogTable {
        catalog: RawCatalog {
            classification: entry.classification.as_str(),
            format: entry.format.as_str(),
            stage: entry.stage.as_str(),
            share_conditions: entry.share_conditions.as_deref(),
            share_scope: entry.share_scope.as_deref(),
            methods: entry.methods.iter().map(|m| m.as_str()).collect(),
            legal_basis: entry.legal_basis.as_deref(),
        },
    };
    // Serializing strings and arrays of strings to TOML cannot fail.
    let catalog = toml::to_string(&catalog).unwrap_or_default();
    format!("{}\n{catalog}", entry.definition.to_toml())
}
