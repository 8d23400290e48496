use super::*;
use crate::definition::SecurityLevel;
use crate::synth;

/// A passing conditional entry; tests edit its text to break one rule at a time.
const GOOD: &str = r#"
id = "road-freight-permits"
name = "道路货运许可 Road freight permits"
provider = "zhejiang"
share-type = "conditional"
update-cycle = "daily"
security-level = "internal"
source-system = "道路运政管理系统 Road transport administration system"

[[columns]]
name = "permit_no"
type = "utf8"
key = true
description = "许可证号 Permit number"

[[columns]]
name = "company"
type = "utf8"

[catalog]
classification = "operations/freight"
format = "parquet"
stage = "formal"
share-scope = "省级交通运输主管部门 provincial transport departments"
share-conditions = "仅用于执法核查 enforcement checks only"
methods = ["download", "online-query"]
"#;

fn offline() -> CheckContext {
    CheckContext::default()
}

fn dept(id: &str) -> DeptId {
    DeptId::new(id).expect("dept")
}

fn edited(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "test edit {from:?} does not apply");
    GOOD.replacen(from, to, 1)
}

fn rules_of(report: &ComplianceReport) -> Vec<RuleCode> {
    report.violations.iter().map(|v| v.rule).collect()
}

/// The document fails exactly `rule`, and the violation names `field`.
fn fails_alone(text: &str, rule: RuleCode, field: &str) {
    let report = check_document(text, &offline());
    assert_eq!(rules_of(&report), vec![rule], "{report}");
    assert_eq!(report.violations[0].field, field, "{report}");
}

#[test]
fn a_good_entry_passes_and_round_trips() {
    let entry = CatalogEntry::parse_toml(GOOD).expect("parse");
    assert!(check(&entry, &offline()).passed());
    assert!(check(&entry, &CheckContext { registrant: Some(dept("zhejiang")) }).passed());
    assert!(check_document(GOOD, &offline()).passed());
    assert_eq!(entry.methods, vec![ServiceMethod::OnlineQuery, ServiceMethod::Download], "sorted by code");
    assert_eq!(entry.stage, Stage::Formal);
    let again = CatalogEntry::parse_toml(&entry.to_toml()).expect("reparse");
    assert_eq!(again, entry);
}

#[test]
fn classification_paths_and_base_categories() {
    let base = Classification::new("base/enforcement-results").expect("base");
    assert_eq!(base.base_category(), Some(BaseCategory::EnforcementResults));
    assert_eq!(Classification::new("operations/base").expect("path").base_category(), None);
    assert!(matches!(Classification::new("base/weather"), Err(ClassificationError::UnknownBaseCategory(..))));
    assert!(matches!(Classification::new("base"), Err(ClassificationError::UnknownBaseCategory(..))));
    for bad in ["", "Base/vehicles", "a//b", "a/b/c/d/e", "a b"] {
        assert!(matches!(Classification::new(bad), Err(ClassificationError::Malformed(_))), "{bad:?}");
    }
}

#[test]
fn c001_mandatory_fields() {
    fails_alone(
        &edited("source-system = \"道路运政管理系统 Road transport administration system\"\n", ""),
        RuleCode::MandatoryField,
        "source-system",
    );
    fails_alone(
        &edited("share-scope = \"省级交通运输主管部门 provincial transport departments\"\n", ""),
        RuleCode::MandatoryField,
        "catalog.share-scope",
    );
    fails_alone(&edited("stage = \"formal\"\n", ""), RuleCode::MandatoryField, "catalog.stage");
    fails_alone(
        &edited("name = \"道路货运许可 Road freight permits\"", "name = \"  \""),
        RuleCode::MandatoryField,
        "name",
    );
    fails_alone(&edited("security-level = \"internal\"\n", ""), RuleCode::MandatoryField, "security-level");
}

#[test]
fn c001_a_missing_catalog_table_is_one_violation() {
    let text = &GOOD[..GOOD.find("[catalog]").expect("catalog table")];
    let report = check_document(text, &offline());
    assert_eq!(rules_of(&report), vec![RuleCode::MandatoryField], "{report}");
    assert_eq!(report.violations[0].field, "catalog");
}

#[test]
fn c002_base_data_must_be_unconditional() {
    let text = edited("operations/freight", "base/licences");
    fails_alone(&text, RuleCode::BaseDataUnconditional, "share-type");
    let unconditional = text.replace("share-type = \"conditional\"", "share-type = \"unconditional\"");
    assert!(check_document(&unconditional, &offline()).passed());
}

#[test]
fn c003_conditional_entries_state_conditions() {
    fails_alone(
        &edited("share-conditions = \"仅用于执法核查 enforcement checks only\"\n", ""),
        RuleCode::ConditionsStated,
        "catalog.share-conditions",
    );
}

#[test]
fn c004_not_shared_entries_cite_a_basis() {
    let text = edited("share-type = \"conditional\"", "share-type = \"not-shared\"")
        .replace("methods = [\"download\", \"online-query\"]\n", "");
    fails_alone(&text, RuleCode::LegalBasisCited, "catalog.legal-basis");
    let with_basis = format!("{text}legal-basis = \"《数据安全法》第二十一条 Data Security Law Art. 21\"\n");
    assert!(check_document(&with_basis, &offline()).passed(), "{}", check_document(&with_basis, &offline()));
}

#[test]
fn c005_information_items_need_a_key() {
    fails_alone(&edited("key = true\n", ""), RuleCode::InformationItems, "columns");
    let start = GOOD.find("[[columns]]").expect("columns");
    let end = GOOD.find("[catalog]").expect("catalog");
    let no_items = format!("{}{}", &GOOD[..start], &GOOD[end..]);
    fails_alone(&no_items, RuleCode::InformationItems, "columns");
}

#[test]
fn c006_methods_match_the_share_type() {
    fails_alone(
        &edited("methods = [\"download\", \"online-query\"]", "methods = []"),
        RuleCode::MethodsMatchShareType,
        "catalog.methods",
    );
    let not_shared = edited("share-type = \"conditional\"", "share-type = \"not-shared\"")
        .replace("stage = \"formal\"", "stage = \"formal\"\nlegal-basis = \"basis\"");
    fails_alone(&not_shared, RuleCode::MethodsMatchShareType, "catalog.methods");
}

#[test]
fn c007_security_level_matches_the_share_type() {
    fails_alone(
        &edited("security-level = \"internal\"", "security-level = \"secret\""),
        RuleCode::SecurityMatchesShareType,
        "security-level",
    );
    let unconditional_sensitive = edited("share-type = \"conditional\"", "share-type = \"unconditional\"")
        .replace("security-level = \"internal\"", "security-level = \"sensitive\"");
    fails_alone(&unconditional_sensitive, RuleCode::SecurityMatchesShareType, "security-level");
    let conditional_sensitive = edited("security-level = \"internal\"", "security-level = \"sensitive\"");
    assert!(check_document(&conditional_sensitive, &offline()).passed());
}

#[test]
fn c008_a_department_registers_only_its_own_entries() {
    let entry = CatalogEntry::parse_toml(GOOD).expect("parse");
    let report = check(&entry, &CheckContext { registrant: Some(dept("guangdong")) });
    assert_eq!(rules_of(&report), vec![RuleCode::OwnDepartment]);
    assert_eq!(report.violations[0].field, "provider");
}

#[test]
fn document_problems_are_violations_too() {
    fails_alone("id = ", RuleCode::Syntax, "");
    fails_alone(
        &edited("format = \"parquet\"", "format = \"parquet\"\ncolour = \"red\""),
        RuleCode::UnknownField,
        "catalog.colour",
    );
    fails_alone(
        &edited("type = \"utf8\"\nkey = true", "type = \"utf9\"\nkey = true"),
        RuleCode::BadValue,
        "columns[0].type",
    );
    fails_alone(&edited("format = \"parquet\"", "format = \"csv\""), RuleCode::BadValue, "catalog.format");
    fails_alone(
        &edited("\"download\", \"online-query\"", "\"download\", \"fax\""),
        RuleCode::BadValue,
        "catalog.methods[1]",
    );
    fails_alone(&edited("name = \"company\"", "name = \"permit_no\""), RuleCode::BadItem, "columns[1].name");
    fails_alone(
        &edited("key = true", "key = true\nnullable = true"),
        RuleCode::BadItem,
        "columns[0].nullable",
    );
    fails_alone(
        &edited("provider = \"zhejiang\"", "provider = \"Zhe Jiang\""),
        RuleCode::BadValue,
        "provider",
    );
}

#[test]
fn several_failures_are_reported_at_once() {
    let text = edited("operations/freight", "base/credit")
        .replace("share-conditions = \"仅用于执法核查 enforcement checks only\"\n", "")
        .replace("methods = [\"download\", \"online-query\"]", "methods = []")
        .replace("format = \"parquet\"", "format = \"parquet\"\nextra = 1")
        .replace("security-level = \"internal\"", "security-level = \"secret\"");
    let report = check_document(&text, &CheckContext { registrant: Some(dept("hunan")) });
    let mut rules: Vec<&str> = rules_of(&report).iter().map(|r| r.code()).collect();
    rules.sort();
    assert_eq!(rules, vec!["C002", "C003", "C006", "C007", "C008", "D004"], "{report}");
    let error = CatalogEntry::parse_toml(&text).expect_err("unknown key");
    assert!(matches!(error, CatalogDocumentError::Invalid(ref r) if r.fails(RuleCode::UnknownField)));
}

#[test]
fn oversized_documents_are_refused_with_a_typed_error() {
    let big = format!("{GOOD}\n# {}\n", "x".repeat(MAX_DOCUMENT_BYTES));
    assert!(matches!(CatalogEntry::parse_toml(&big), Err(CatalogDocumentError::TooLarge { .. })));
    assert_eq!(rules_of(&check_document(&big, &offline())), vec![RuleCode::DocumentTooLarge]);
    let column = "[[columns]]\nname = \"c\"\ntype = \"utf8\"\n";
    let many =
        format!("{}{}", &GOOD[..GOOD.find("[catalog]").expect("catalog")], column.repeat(MAX_COLUMNS + 1));
    assert!(matches!(CatalogEntry::parse_toml(&many), Err(CatalogDocumentError::TooManyItems { .. })));
    let long = edited("仅用于执法核查 enforcement checks only", &"x".repeat(MAX_TEXT_BYTES + 1));
    fails_alone(&long, RuleCode::BadValue, "catalog.share-conditions");
}

#[test]
fn rule_codes_serialize_as_their_stable_code() {
    let violation = Violation::new(RuleCode::BaseDataUnconditional, "share-type", "m");
    let json = serde_json_like(&violation);
    assert!(json.contains("C002"), "{json}");
    assert_eq!(RuleCode::BaseDataUnconditional.to_string(), "C002 base-data-unconditional");
    let codes: std::collections::HashSet<&str> = RuleCode::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), RuleCode::ALL.len(), "codes are unique");
}

/// TOML stands in for JSON here: the crate does not depend on serde_json.
fn serde_json_like(violation: &Violation) -> String {
    toml::to_string(violation).expect("serialize")
}

fn deploy_entry(name: &str) -> CatalogEntry {
    let path = format!("{}/../deploy/catalog/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read deploy catalog entry");
    let report = check_document(&text, &offline());
    assert!(report.passed(), "{path}:\n{report}");
    CatalogEntry::parse_toml(&text).expect("parse")
}

#[test]
fn deploy_catalog_entries_pass_and_match_the_demo_datasets() {
    let vehicles = deploy_entry("vehicle-registry");
    let demo =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("vehicle-registry", "ministry"))
            .expect("synth definition");
    assert_eq!(vehicles.definition, demo, "the demo publishes exactly what the catalog says");
    assert_eq!(vehicles.classification.base_category(), Some(BaseCategory::Vehicles));

    let gps = deploy_entry("vehicle-gps");
    let province = DatasetDefinition::parse_toml(&synth::gps_positions_definition("vehicle-gps", "zhejiang"))
        .expect("synth definition");
    assert_eq!(gps.definition.columns, province.columns);
    assert_eq!(gps.items_fingerprint(), province.fingerprint());
    assert_eq!(gps.share_type(), ShareType::Conditional);
    assert_eq!(gps.definition.security_level, SecurityLevel::Internal);
}
