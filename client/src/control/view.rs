//! The shapes of the control plane's answers, as the CLI reads them. The node serialises its
//! store types (`Registered`, `StoredEntry`, `VersionSummary`, `CatalogDiff`, `ListedEntry`,
//! `ChangeNotice`, `AuditEntry`, `VerifyReport`); these mirror the fields the CLI prints and
//! ignore the rest, so a node that adds a field does not break an older CLI. Enumerations
//! (stage, share type, kinds) stay strings: the CLI prints them, it does not decide on them.
//!
//! Neighbours: [`super::call`] gets the values, [`super::render`] prints these.

use super::ControlCallError;
use ferry_control::receipt::Receipt;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Reads an answer value as `T`; a mismatch is a malformed answer.
pub fn parse<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ControlCallError> {
    serde_json::from_value(value).map_err(|e| ControlCallError::Malformed(e.to_string()))
}

/// The answer to `catalog-register`.
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    pub registered: Registered,
    /// Receipts issued by this registration.
    #[serde(default)]
    pub receipts: Vec<ReceiptFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub dataset: String,
    pub catalog_version: u64,
    pub effective_from: String,
    #[serde(default)]
    pub receipt_kind: Option<String>,
    #[serde(default)]
    pub connection_deadline: Option<String>,
    #[serde(default)]
    pub items_changed: bool,
    #[serde(default)]
    pub notified: Vec<String>,
}

/// A receipt as the node sends it: what it says, and the signed file to hand out.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceiptFile {
    pub receipt: Receipt,
    /// The signed receipt file (JSON text); what `ferry receipt verify` checks.
    pub file: String,
}

/// The answer to `catalog-show`: one catalog version of an entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub dataset: String,
    pub catalog_version: u64,
    pub registered_by: String,
    pub registered_at: String,
    pub effective_from: String,
    #[serde(default)]
    pub items_changed: bool,
    #[serde(default)]
    pub connection_deadline: Option<String>,
    /// The entry's TOML document.
    pub document: String,
}

/// One line of `catalog-history`.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionLine {
    pub catalog_version: u64,
    pub registered_by: String,
    pub registered_at: String,
    pub effective_from: String,
    pub stage: String,
    pub share_type: String,
    pub items_fingerprint: String,
    #[serde(default)]
    pub items_changed: bool,
}

/// The answer to `catalog-diff`.
#[derive(Debug, Clone, Deserialize)]
pub struct Diff {
    pub dataset: String,
    pub from: u64,
    pub to: u64,
    #[serde(default)]
    pub fields: Vec<FieldChange>,
    #[serde(default)]
    pub items: Vec<ItemChange>,
    #[serde(default)]
    pub items_changed: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// An information item added, removed or changed (each side described as in the document).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum ItemChange {
    Added { name: String, after: String },
    Removed { name: String, before: String },
    Changed { name: String, before: String, after: String },
}

/// One line of `catalog-list`.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    pub dataset: String,
    pub provider: String,
    pub name: String,
    pub classification: String,
    pub share_type: String,
    pub stage: String,
    pub latest_version: u64,
    pub in_effect_version: Option<u64>,
}

/// One change notice (Art. 9) for the caller's department.
#[derive(Debug, Clone, Deserialize)]
pub struct Notice {
    pub dataset: String,
    pub catalog_version: u64,
    #[serde(default)]
    pub previous_version: Option<u64>,
    pub registered_at: String,
    pub effective_from: String,
}

/// One audit entry.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditLine {
    pub seq: u64,
    pub time_ms: i64,
    pub kind: String,
    pub actor: Actor,
    pub dataset: Option<String>,
    pub outcome: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub detail: serde_json::Value,
    #[serde(default)]
    pub hash: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Actor {
    pub department: String,
    pub role: String,
    pub name: String,
    #[serde(default)]
    pub cert_serial: String,
}

/// The result of verifying an audit log (on line at the ministry, or a file off line).
#[derive(Debug, Clone, Deserialize)]
pub struct Verification {
    pub entries: u64,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    pub checkpoints: u64,
    pub checkpoints_valid: u64,
    #[serde(default)]
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One finding: the entry (seq) and what is wrong there (`problem` plus its facts).
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    pub seq: u64,
    pub problem: String,
    #[serde(flatten)]
    pub facts: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A fact of the problem as a number (`found`, `checkpoint_seq`, …).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.facts.get(key).and_then(serde_json::Value::as_u64)
    }

    /// A fact of the problem as text (`what`, `reason`).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.facts.get(key).and_then(serde_json::Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_verify_report_reads_with_its_problem_facts() {
        let value = json!({
            "entries": 7, "last_seq": 7, "last_hash": "ab", "checkpoints": 2, "checkpoints_valid": 1,
            "problems": [{"seq": 4, "problem": "missing", "found": 6}],
        });
        let report: Verification = parse(value).expect("parses");
        assert!(!report.is_intact());
        assert_eq!(report.problems[0].problem, "missing");
        assert_eq!(report.problems[0].number("found"), Some(6));
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_are_malformed() {
        let value = json!({"dataset": "v", "catalog_version": 2, "registered_at": "t", "effective_from": "t",
            "previous_version": 1, "new-field": true});
        let notice: Notice = parse(value).expect("parses");
        assert_eq!(notice.catalog_version, 2);
        let missing = parse::<Notice>(json!({"dataset": "v"})).unwrap_err();
        assert!(matches!(missing, ControlCallError::Malformed(_)));
    }

    #[test]
    fn item_changes_read_by_their_tag() {
        let value = json!([{"change": "added", "name": "colour", "after": "utf8"},
            {"change": "changed", "name": "plate", "before": "utf8", "after": "utf8 key"}]);
        let items: Vec<ItemChange> = parse(value).expect("parses");
        assert!(matches!(&items[0], ItemChange::Added { name, .. } if name == "colour"));
        assert!(matches!(&items[1], ItemChange::Changed { after, .. } if after == "utf8 key"));
    }
}
