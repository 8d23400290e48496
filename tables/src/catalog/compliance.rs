//! The automatic compliance check of Art. 9: named rules, each with a stable code, all failures
//! reported at once.
//!
//! Codes `D0xx` are about the document itself (it is not TOML, has an unknown key, a value of
//! the wrong kind, a bad information item); codes `C0xx` are the regulation's rules:
//!
//! | code | name | rule |
//! |---|---|---|
//! | C001 | mandatory-field | every Art. 8 field is present and not blank: id, name, provider, share type, update cycle, security level, source system, classification, format, stage; share scope unless not-shared |
//! | C002 | base-data-unconditional | a `base/<category>` entry is unconditional (Art. 7) |
//! | C003 | conditions-stated | a conditional entry states its share conditions (Art. 6) |
//! | C004 | legal-basis-cited | a not-shared entry cites a legal or policy basis (Art. 6) |
//! | C005 | information-items | at least one information item, and at least one of them a key |
//! | C006 | methods-match-share-type | not-shared offers no method; the others at least one (Art. 10) |
//! | C007 | security-matches-share-type | `secret` data is not shared; `sensitive` data is not unconditional |
//! | C008 | own-department | a department registers only entries it provides |
//!
//! Codes are never reused or renumbered; a new rule gets the next number. Neighbours:
//! [`super::document`] finds the facts these rules judge in a file; the control store runs
//! [`check`] before registering.

use std::fmt;

use ferry_proto::{DeptId, ServiceMethod, ShareType};
use serde::{Deserialize, Serialize};

use super::document;
use super::{CatalogEntry, Classification};
use crate::definition::SecurityLevel;

/// A named rule of the check; serialized as its stable code (`"C002"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleCode {
    #[serde(rename = "D001")]
    DocumentTooLarge,
    #[serde(rename = "D002")]
    TooManyItems,
    #[serde(rename = "D003")]
    Syntax,
    #[serde(rename = "D004")]
    UnknownField,
    #[serde(rename = "D005")]
    BadValue,
    #[serde(rename = "D006")]
    BadItem,
    #[serde(rename = "C001")]
    MandatoryField,
    #[serde(rename = "C002")]
    BaseDataUnconditional,
    #[serde(rename = "C003")]
    ConditionsStated,
    #[serde(rename = "C004")]
    LegalBasisCited,
    #[serde(rename = "C005")]
    InformationItems,
    #[serde(rename = "C006")]
    MethodsMatchShareType,
    #[serde(rename = "C007")]
    SecurityMatchesShareType,
    #[serde(rename = "C008")]
    OwnDepartment,
}

impl RuleCode {
    /// Every rule, in code order.
    pub const ALL: [RuleCode; 14] = [
        Self::DocumentTooLarge,
        Self::TooManyItems,
        Self::Syntax,
        Self::UnknownField,
        Self::BadValue,
        Self::BadItem,
        Self::MandatoryField,
        Self::BaseDataUnconditional,
        Self::ConditionsStated,
        Self::LegalBasisCited,
        Self::InformationItems,
        Self::MethodsMatchShareType,
        Self::SecurityMatchesShareType,
        Self::OwnDepartment,
    ];

    /// The stable code, e.g. `C002`.
    pub fn code(self) -> &'static str {
        match self {
            Self::DocumentTooLarge => "D001",
            Self::TooManyItems => "D002",
            Self::Syntax => "D003",
            Self::UnknownField => "D004",
            Self::BadValue => "D005",
            Self::BadItem => "D006",
            Self::MandatoryField => "C001",
            Self::BaseDataUnconditional => "C002",
            Self::ConditionsStated => "C003",
            Self::LegalBasisCited => "C004",
            Self::InformationItems => "C005",
            Self::MethodsMatchShareType => "C006",
            Self::SecurityMatchesShareType => "C007",
            Self::OwnDepartment => "C008",
        }
    }

    /// The rule's name, e.g. `base-data-unconditional` (a bounded metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Self::DocumentTooLarge => "document-too-large",
            Self::TooManyItems => "too-many-items",
            Self::Syntax => "syntax",
            Self::UnknownField => "unknown-field",
            Self::BadValue => "bad-value",
            Self::BadItem => "bad-item",
            Self::MandatoryField => "mandatory-field",
            Self::BaseDataUnconditional => "base-data-unconditional",
            Self::ConditionsStated => "conditions-stated",
            Self::LegalBasisCited => "legal-basis-cited",
            Self::InformationItems => "information-items",
            Self::MethodsMatchShareType => "methods-match-share-type",
            Self::SecurityMatchesShareType => "security-matches-share-type",
            Self::OwnDepartment => "own-department",
        }
    }
}

impl fmt::Display for RuleCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// One failed rule: which, at which key of the document (empty for the whole document), why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: RuleCode,
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(rule: RuleCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { rule, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.rule, self.message)
        } else {
            write!(f, "{} `{}`: {}", self.rule, self.field, self.message)
        }
    }
}

/// Every rule that failed; empty when the entry passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceReport {
    pub violations: Vec<Violation>,
}

impl ComplianceReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether some violation is of `rule`.
    pub fn fails(&self, rule: RuleCode) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
}

impl fmt::Display for ComplianceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return f.write_str("compliance check passed");
        }
        for violation in &self.violations {
            writeln!(f, "  {violation}")?;
        }
        Ok(())
    }
}

/// Who asks: the department registering the entry, or `None` for an offline check of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckContext {
    pub registrant: Option<DeptId>,
}

/// Counts of the information items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemFacts {
    pub count: usize,
    pub keys: usize,
}

/// What the rules judge; `None` where the value is missing or was already reported as bad.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub provider: Option<DeptId>,
    pub share_type: Option<ShareType>,
    pub security_level: Option<SecurityLevel>,
    pub classification: Option<Classification>,
    pub source_system: Option<String>,
    pub share_conditions: Option<String>,
    pub share_scope: Option<String>,
    pub legal_basis: Option<String>,
    pub methods: Option<Vec<ServiceMethod>>,
    pub items: Option<ItemFacts>,
    /// Keys the document walk already reported; rules say nothing more about them.
    pub reported: Vec<String>,
}

impl Facts {
    fn is_reported(&self, field: &str) -> bool {
        self.reported
            .iter()
            .any(|r| field == r || field.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with('.')))
    }
}

impl Facts {
    fn of(entry: &CatalogEntry) -> Self {
        let definition = &entry.definition;
        let present = |text: &Option<String>| text.clone().filter(|t| !t.trim().is_empty());
        Self {
            provider: Some(definition.provider.clone()),
            share_type: Some(definition.share_type),
            security_level: Some(definition.security_level),
            classification: Some(entry.classification.clone()),
            source_system: present(&definition.source_system),
            share_conditions: present(&entry.share_conditions),
            share_scope: present(&entry.share_scope),
            legal_basis: present(&entry.legal_basis),
            methods: Some(entry.methods.clone()),
            items: Some(ItemFacts {
                count: definition.columns.len(),
                keys: definition.columns.iter().filter(|c| c.key).count(),
            }),
            reported: Vec::new(),
        }
    }
}

/// Runs every rule on a typed entry.
pub fn check(entry: &CatalogEntry, context: &CheckContext) -> ComplianceReport {
    ComplianceReport { violations: rules(&Facts::of(entry), context.registrant.as_ref()) }
}

/// Reads a document and runs every rule: document problems and rule failures in one report.
pub fn check_document(text: &str, context: &CheckContext) -> ComplianceReport {
    match document::read(text) {
        Err(e) => e.into_report(),
        Ok(draft) => {
            let mut violations = draft.violations;
            if let Some(facts) = &draft.facts {
                violations.extend(rules(facts, context.registrant.as_ref()));
            }
            ComplianceReport { violations }
        }
    }
}

pub(crate) fn rules(facts: &Facts, registrant: Option<&DeptId>) -> Vec<Violation> {
    let mut out = Vec::new();
    mandatory_fields(facts, &mut out);
    share_type_rules(facts, &mut out);
    information_items(facts, &mut out);
    methods_match(facts, &mut out);
    security_matches(facts, &mut out);
    if let (Some(registrant), Some(provider)) = (registrant, &facts.provider)
        && registrant != provider
    {
        let message = format!("department {registrant} cannot register an entry provided by {provider}");
        out.push(Violation::new(RuleCode::OwnDepartment, "provider", message));
    }
    out.retain(|violation| !facts.is_reported(&violation.field));
    out
}

fn mandatory_fields(facts: &Facts, out: &mut Vec<Violation>) {
    if facts.source_system.is_none() {
        out.push(Violation::new(RuleCode::MandatoryField, "source-system", "missing (Art. 8 来源系统)"));
    }
    let shared = facts.share_type.is_some_and(|t| t != ShareType::NotShared);
    if shared && facts.share_scope.is_none() {
        let message = "missing: a shared entry says who may use it (Art. 8 共享范围)";
        out.push(Violation::new(RuleCode::MandatoryField, "catalog.share-scope", message));
    }
}

fn share_type_rules(facts: &Facts, out: &mut Vec<Violation>) {
    let Some(share_type) = facts.share_type else { return };
    if let Some(category) = facts.classification.as_ref().and_then(Classification::base_category)
        && share_type != ShareType::Unconditional
    {
        let message = format!(
            "base data ({}) must be shared unconditionally (Art. 7), not {share_type}",
            category.as_str()
        );
        out.push(Violation::new(RuleCode::BaseDataUnconditional, "share-type", message));
    }
    if share_type == ShareType::Conditional && facts.share_conditions.is_none() {
        let message = "a conditional entry states its share conditions (Art. 6 共享条件)";
        out.push(Violation::new(RuleCode::ConditionsStated, "catalog.share-conditions", message));
    }
    if share_type == ShareType::NotShared && facts.legal_basis.is_none() {
        let message = "a not-shared entry cites the law or policy that keeps it from being shared (Art. 6)";
        out.push(Violation::new(RuleCode::LegalBasisCited, "catalog.legal-basis", message));
    }
}

fn information_items(facts: &Facts, out: &mut Vec<Violation>) {
    match facts.items {
        Some(ItemFacts { count: 0, .. }) => {
            let message = "an entry needs at least one information item ([[columns]])";
            out.push(Violation::new(RuleCode::InformationItems, "columns", message));
        }
        Some(ItemFacts { keys: 0, .. }) => {
            let message = "no information item has `key = true`; an entry needs a key";
            out.push(Violation::new(RuleCode::InformationItems, "columns", message));
        }
        _ => {}
    }
}

fn methods_match(facts: &Facts, out: &mut Vec<Violation>) {
    let (Some(share_type), Some(methods)) = (facts.share_type, &facts.methods) else { return };
    if share_type == ShareType::NotShared && !methods.is_empty() {
        let message = "a not-shared entry offers no service method";
        out.push(Violation::new(RuleCode::MethodsMatchShareType, "catalog.methods", message));
    }
    if share_type != ShareType::NotShared && methods.is_empty() {
        let message = format!(
            "a {share_type} entry offers at least one of online-query, subscription, download (Art. 10)"
        );
        out.push(Violation::new(RuleCode::MethodsMatchShareType, "catalog.methods", message));
    }
}

fn security_matches(facts: &Facts, out: &mut Vec<Violation>) {
    let (Some(share_type), Some(level)) = (facts.share_type, facts.security_level) else { return };
    let message = match (level, share_type) {
        (SecurityLevel::Secret, ShareType::Unconditional | ShareType::Conditional) => {
            "secret data is not shared on the platform: share-type must be not-shared"
        }
        (SecurityLevel::Sensitive, ShareType::Unconditional) => {
            "sensitive data cannot be unconditional: share it conditionally or lower its level"
        }
        _ => return,
    };
    out.push(Violation::new(RuleCode::SecurityMatchesShareType, "security-level", message));
}
