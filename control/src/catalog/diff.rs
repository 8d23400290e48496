//! Differences between two catalog versions of an entry: field by field, and per information
//! item (added, removed, changed). Pure; [`super::read`] loads the versions.

use ferry_proto::DatasetId;
use ferry_tables::catalog::CatalogEntry;
use ferry_tables::definition::ColumnDef;
use serde::Serialize;

/// One metadata field that differs (`None` = not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The document key, e.g. `share-type`, `catalog.methods`.
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One information item that was added, removed or changed, described as in the document
/// (`utf8 key`, `int32 nullable`, and its description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum ItemChange {
    Added { name: String, after: String },
    Removed { name: String, before: String },
    Changed { name: String, before: String, after: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogDiff {
    pub dataset: DatasetId,
    pub from: u64,
    pub to: u64,
    pub fields: Vec<FieldChange>,
    pub items: Vec<ItemChange>,
    /// Whether the schema fingerprint differs (a change of the data, Art. 9); a reorder of
    /// items changes it without any item changing.
    pub items_changed: bool,
}

fn fields_of(entry: &CatalogEntry) -> Vec<(&'static str, Option<String>)> {
    let d = &entry.definition;
    let methods: Vec<&str> = entry.methods.iter().map(|m| m.as_str()).collect();
    vec![
        ("name", Some(d.name.clone())),
        ("provider", Some(d.provider.to_string())),
        ("description", d.description.clone()),
        ("definition-version", Some(d.definition_version.to_string())),
        ("share-type", Some(d.share_type.to_string())),
        ("update-cycle", Some(kebab(&d.update_cycle))),
        ("security-level", Some(kebab(&d.security_level))),
        ("source-system", d.source_system.clone()),
        ("catalog.classification", Some(entry.classification.to_string())),
        ("catalog.format", Some(entry.format.as_str().to_owned())),
        ("catalog.stage", Some(entry.stage.as_str().to_owned())),
        ("catalog.share-scope", entry.share_scope.clone()),
        ("catalog.share-conditions", entry.share_conditions.clone()),
        ("catalog.legal-basis", entry.legal_basis.clone()),
        ("catalog.methods", Some(methods.join(", "))),
    ]
}

/// A unit enum's name as the document writes it (`on-change`).
fn kebab<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn describe(column: &ColumnDef) -> String {
    let mut text = column.column_type.to_string();
    if column.key {
        text.push_str(" key");
    }
    if column.nullable {
        text.push_str(" nullable");
    }
    if let Some(description) = &column.description {
        text.push_str(&format!(" — {description}"));
    }
    text
}

/// Compares version `from` with version `to`.
pub fn diff_entries(dataset: DatasetId, from: (u64, &CatalogEntry), to: (u64, &CatalogEntry)) -> CatalogDiff {
    let (before, after) = (from.1, to.1);
    let fields = fields_of(before)
        .into_iter()
        .zip(fields_of(after))
        .filter(|((_, b), (_, a))| b != a)
        .map(|((field, before), (_, after))| FieldChange { field: field.to_owned(), before, after })
        .collect();
    let mut items = Vec::new();
    for old in &before.definition.columns {
        match after.definition.column(&old.name) {
            None => items.push(ItemChange::Removed { name: old.name.clone(), before: describe(old) }),
            Some(new) if new != old => items.push(ItemChange::Changed {
                name: old.name.clone(),
                before: describe(old),
                after: describe(new),
            }),
            Some(_) => {}
        }
    }
    for new in after.definition.columns.iter().filter(|c| before.definition.column(&c.name).is_none()) {
        items.push(ItemChange::Added { name: new.name.clone(), after: describe(new) });
    }
    CatalogDiff {
        dataset,
        from: from.0,
        to: to.0,
        fields,
        items,
        items_changed: before.items_fingerprint() != after.items_fingerprint(),
    }
}
