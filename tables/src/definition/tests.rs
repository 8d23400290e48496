//! Unit tests of definition parsing, validation, fingerprints and schema checks.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Int16Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};

use super::*;

const GOOD: &str = r#"
id = "vehicle-registry"
name = "Vehicle registry"
provider = "ministry"
description = "机动车登记 / vehicle registrations"
share-type = "unconditional"
update-cycle = "daily"
source-system = "vehicle-admin"

[[columns]]
name = "vin"
type = "utf8"
key = true
description = "车辆识别代号"

[[columns]]
name = "seats"
type = "int32"

[[columns]]
name = "updated_at"
type = "timestamp(ms, +08:00)"
nullable = false
"#;

fn good() -> DatasetDefinition {
    DatasetDefinition::parse_toml(GOOD).expect("GOOD parses")
}

/// GOOD with `from` replaced by `to` (must occur).
fn edited(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    GOOD.replacen(from, to, 1)
}

fn invalid_key(text: &str) -> (String, DefinitionProblem) {
    match DatasetDefinition::parse_toml(text) {
        Err(DefinitionError::Invalid { key, problem }) => (key, problem),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn syntax_message(text: &str) -> String {
    match DatasetDefinition::parse_toml(text) {
        Err(DefinitionError::Syntax(message)) => message,
        other => panic!("expected Syntax, got {other:?}"),
    }
}

#[test]
fn parses_with_defaults() {
    let def = good();
    assert_eq!(def.id.as_str(), "vehicle-registry");
    assert_eq!(def.provider.as_str(), "ministry");
    assert_eq!(def.definition_version, 1);
    assert_eq!(def.security_level, SecurityLevel::Internal);
    assert_eq!(def.update_cycle, UpdateCycle::Daily);
    assert_eq!(def.share_type, ShareType::Unconditional);
    let vin = &def.columns[0];
    assert!(vin.key && !vin.nullable, "key columns default to non-nullable");
    assert!(def.columns[1].nullable, "other columns default to nullable");
    assert_eq!(def.key_columns().len(), 1);
    let schema = def.arrow_schema();
    assert_eq!(schema.field(0), &Field::new("vin", DataType::Utf8, false));
    assert_eq!(
        schema.field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("+08:00".into()))
    );
}

#[test]
fn column_types_round_trip_through_text() {
    for text in [
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float32",
        "float64",
        "decimal(12,2)",
        "utf8",
        "binary",
        "date32",
        "timestamp(ms)",
        "timestamp(us, +08:00)",
        "timestamp(ns, -05:30)",
    ] {
        let parsed: ColumnType = text.parse().expect(text);
        assert_eq!(parsed.to_string(), text);
    }
    assert_eq!(
        "decimal( 10 , 0 )".parse::<ColumnType>(),
        Ok(ColumnType::Decimal { precision: 10, scale: 0 })
    );
    for bad in [
        "int",
        "decimal(0,0)",
        "decimal(5,6)",
        "decimal(39,1)",
        "timestamp(s)",
        "timestamp(ms, Mars/Base)",
        "utf8()",
    ] {
        assert!(bad.parse::<ColumnType>().is_err(), "{bad} should not parse");
    }
}

#[test]
fn to_toml_round_trips() {
    let def = good();
    let again = DatasetDefinition::parse_toml(&def.to_toml()).expect("to_toml parses");
    assert_eq!(again, def);
}

#[test]
fn fingerprint_ignores_descriptions_but_not_the_contract() {
    let base = good().fingerprint();
    assert_eq!(base.len(), 64);
    let mut renamed = good();
    renamed.description = None;
    renamed.columns[0].description = Some("other".into());
    renamed.name = "Other name".into();
    assert_eq!(renamed.fingerprint(), base);
    let changed = [
        edited("type = \"int32\"", "type = \"int64\""),
        edited("name = \"seats\"", "name = \"seat_count\""),
        edited("name = \"seats\"\ntype = \"int32\"", "name = \"seats\"\ntype = \"int32\"\nnullable = false"),
    ];
    for text in changed {
        let def = DatasetDefinition::parse_toml(&text).expect("edited parses");
        assert_ne!(def.fingerprint(), base, "{text}");
    }
}

#[test]
fn unknown_and_missing_keys_are_named() {
    let message =
        syntax_message(&edited("update-cycle = \"daily\"", "update-cycle = \"daily\"\nowner = \"x\""));
    assert!(message.contains("owner"), "{message}");
    let message = syntax_message(&edited("key = true", "key = true\nindexed = true"));
    assert!(message.contains("indexed"), "{message}");
    let message = syntax_message(&edited("share-type = \"unconditional\"\n", ""));
    assert!(message.contains("share-type"), "{message}");
    let message = syntax_message(&edited("\"daily\"", "\"fortnightly\""));
    assert!(message.contains("fortnightly") && message.contains("update-cycle"), "{message}");
    assert!(!syntax_message("id = ").is_empty());
}

/// A definition text, the key its error must name, and a check of the problem.
type Case = (String, &'static str, fn(&DefinitionProblem) -> bool);

#[test]
fn every_validation_error_names_its_key() {
    let cases: Vec<Case> = vec![
        (edited("\"vehicle-registry\"", "\"Vehicle Registry\""), "id", |p| {
            matches!(p, DefinitionProblem::BadIdentifier(_))
        }),
        (edited("\"ministry\"", "\"\""), "provider", |p| matches!(p, DefinitionProblem::BadIdentifier(_))),
        (edited("name = \"Vehicle registry\"", "name = \"  \""), "name", |p| *p == DefinitionProblem::Empty),
        (edited("share-type", "definition-version = 0\nshare-type"), "definition-version", |p| {
            *p == DefinitionProblem::ZeroVersion
        }),
        (GOOD.split("[[columns]]").next().unwrap_or_default().to_owned(), "columns", |p| {
            *p == DefinitionProblem::NoColumns
        }),
        (edited("key = true\n", ""), "columns", |p| *p == DefinitionProblem::NoKeyColumn),
        (
            edited("name = \"seats\"", "name = \"vin\""),
            "columns[1].name",
            |p| matches!(p, DefinitionProblem::DuplicateColumn(n) if n == "vin"),
        ),
        (edited("name = \"seats\"", "name = \"座位数\""), "columns[1].name", |p| {
            matches!(p, DefinitionProblem::BadColumnName(_))
        }),
        (edited("name = \"seats\"", "name = \"2seats\""), "columns[1].name", |p| {
            matches!(p, DefinitionProblem::BadColumnName(_))
        }),
        (edited("type = \"int32\"", "type = \"int\""), "columns[1].type", |p| {
            matches!(p, DefinitionProblem::BadType(_))
        }),
        (
            edited("key = true", "key = true\nnullable = true"),
            "columns[0].nullable",
            |p| matches!(p, DefinitionProblem::NullableKey(n) if n == "vin"),
        ),
        (edited("type = \"int32\"", "type = \"float64\"\nkey = true"), "columns[1].key", |p| {
            matches!(p, DefinitionProblem::UnkeyableType { .. })
        }),
        (edited("type = \"utf8\"", "type = \"binary\""), "columns[0].key", |p| {
            matches!(p, DefinitionProblem::UnkeyableType { .. })
        }),
    ];
    for (text, want_key, check) in cases {
        let (key, problem) = invalid_key(&text);
        assert_eq!(key, want_key, "{problem}");
        assert!(check(&problem), "{key}: unexpected {problem:?}");
        let shown = DefinitionError::Invalid { key: key.clone(), problem }.to_string();
        assert!(shown.contains(&format!("`{key}`")), "{shown}");
    }
}

#[test]
fn synthetic_definitions_parse() {
    let vehicles = crate::synth::vehicle_registry_definition("vehicle-registry", "ministry");
    let def = DatasetDefinition::parse_toml(&vehicles).expect("vehicle registry definition parses");
    assert_eq!(def.arrow_schema(), crate::synth::vehicle_registry_schema());
    assert_eq!(def.key_columns().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["vin"]);
    let gps = crate::synth::gps_positions_definition("gps-positions", "zhejiang");
    let def = DatasetDefinition::parse_toml(&gps).expect("gps definition parses");
    assert_eq!(def.arrow_schema(), crate::synth::gps_positions_schema());
    assert_eq!(def.key_columns().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["vin", "ts"]);
}

#[test]
fn check_schema_lists_every_problem() {
    let def = good();
    let actual = Schema::new(vec![
        Field::new("vin", DataType::Int64, true),
        Field::new("colour", DataType::Utf8, true),
        Field::new("updated_at", DataType::Utf8, true),
        Field::new("colour", DataType::Utf8, true),
    ]);
    let mismatch = check_schema(&def, &actual).expect_err("mismatch");
    assert_eq!(
        mismatch.problems,
        vec![
            ColumnProblem::Missing { column: "seats".into() },
            ColumnProblem::Extra { column: "colour".into() },
            ColumnProblem::Duplicate { column: "colour".into() },
            ColumnProblem::WrongType { column: "vin".into(), expected: "utf8".into(), found: "Int64".into() },
            ColumnProblem::WrongType {
                column: "updated_at".into(),
                expected: "timestamp(ms, +08:00)".into(),
                found: "Utf8".into()
            },
        ]
    );
    let shown = mismatch.to_string();
    assert_eq!(shown.lines().count(), 6, "{shown}");
    for name in ["seats", "colour", "vin", "updated_at"] {
        assert!(shown.contains(&format!("`{name}`")), "{shown}");
    }
}

#[test]
fn lossless_variants_are_accepted_and_conformed() {
    let def = good();
    let keys = DictionaryArray::<Int32Type>::from_iter(["b", "a"]);
    let ts = TimestampMillisecondArray::from(vec![1_000, 2_000]).with_timezone("UTC");
    let batch = RecordBatch::try_from_iter(vec![
        ("updated_at", Arc::new(ts) as ArrayRef),
        ("seats", Arc::new(Int16Array::from(vec![Some(5), None])) as ArrayRef),
        ("vin", Arc::new(keys) as ArrayRef),
    ])
    .expect("batch");
    let conformed = conform_batch(&def, &batch).expect("conforms");
    assert_eq!(conformed.schema(), def.arrow_schema());
    let vins = conformed.column(0).as_any().downcast_ref::<StringArray>().expect("utf8");
    assert_eq!(vins.value(0), "b");
    let seats = conformed.column(1).as_any().downcast_ref::<Int32Array>().expect("int32");
    assert_eq!(seats.value(0), 5);
    assert!(seats.is_null(1));
    let wide = Schema::new(vec![
        Field::new("vin", DataType::LargeUtf8, true),
        Field::new("seats", DataType::UInt16, true),
        Field::new("updated_at", DataType::Timestamp(TimeUnit::Second, None), true),
    ]);
    assert_eq!(check_schema(&def, &wide), Ok(()));
}

#[test]
fn lossy_types_are_refused_and_nulls_reported() {
    let def = good();
    let narrow = Schema::new(vec![
        Field::new("vin", DataType::Utf8, false),
        Field::new("seats", DataType::Int64, true),
        Field::new("updated_at", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]);
    let problems = check_schema(&def, &narrow).expect_err("lossy").problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    let batch = RecordBatch::try_from_iter(vec![
        ("vin", Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef),
        ("seats", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
        (
            "updated_at",
            Arc::new(TimestampMillisecondArray::from(vec![1, 2]).with_timezone("+08:00")) as ArrayRef,
        ),
    ])
    .expect("batch");
    assert_eq!(conform_batch(&def, &batch), Err(ConformError::Null { column: "vin".into(), row: 1 }));
}
