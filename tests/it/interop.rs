//! Interop with the Python Parquet ecosystem: files ferry publishes are read correctly by pyarrow
//! and DuckDB, and ferry publishes Parquet written by pyarrow with its defaults (snappy,
//! dictionary-encoded columns) in several row groups with nullable columns. Nested columns (a nullable struct with nullable children, a
//! list) are not part of ferry's definitions, so ferry must refuse them naming the column.
//!
//! The Python side is `it/py/interop.py`; it prints JSON that these tests compare with what they
//! know. It needs `python3` with `pyarrow` and `duckdb` (installed by `.ci/run`); without them
//! these tests fail, unless `FERRY_SKIP_PYTHON=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType,
};
use ferry_proto::SourceFormat;
use ferry_tables::definition::{ColumnProblem, ColumnType, DatasetDefinition, TimestampUnit};
use ferry_tables::source::{PublishError, PublishOptions, read_parquet_files, write_sorted_parquet};
use ferry_tables::synth;
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/it/py/interop.py");
const INSTALL_HINT: &str = "run `.ci/run`, or install them with \
     `python3 -m pip install pyarrow duckdb`; FERRY_SKIP_PYTHON=1 skips these tests";

/// Whether the Python side can run; panics with an install hint when it cannot, unless skipped.
fn python_available() -> bool {
    if std::env::var("FERRY_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("FERRY_SKIP_PYTHON=1: skipping the pyarrow/DuckDB interop test");
        return false;
    }
    match Command::new("python3").arg(SCRIPT).arg("check-modules").output() {
        Err(e) => panic!(
            "python3 is not runnable ({e}); the interop tests need python3 with pyarrow and duckdb: {INSTALL_HINT}"
        ),
        Ok(out) if !out.status.success() => panic!(
            "python3 lacks pyarrow or duckdb: {INSTALL_HINT}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => true,
    }
}

/// Runs `interop.py COMMAND ARGS…` and parses its JSON output.
fn python(command: &str, args: &[&Path]) -> Value {
    let out = Command::new("python3").arg(SCRIPT).arg(command).args(args).output().expect("run python3");
    assert!(out.status.success(), "interop.py {command} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("interop.py prints JSON")
}

/// The type name pyarrow prints for a column of this type.
fn pyarrow_type(column_type: &ColumnType) -> String {
    match column_type {
        ColumnType::Float32 => "float".to_owned(),
        ColumnType::Float64 => "double".to_owned(),
        ColumnType::Utf8 => "string".to_owned(),
        ColumnType::Date32 => "date32[day]".to_owned(),
        ColumnType::Decimal { precision, scale } => format!("decimal128({precision}, {scale})"),
        ColumnType::Timestamp { unit, timezone } => {
            let unit = match unit {
                TimestampUnit::Millisecond => "ms",
                TimestampUnit::Microsecond => "us",
                TimestampUnit::Nanosecond => "ns",
            };
            match timezone {
                Some(tz) => format!("timestamp[{unit}, tz={tz}]"),
                None => format!("timestamp[{unit}]"),
            }
        }
        // bool, int8..uint64 and binary print as in the definition.
        other => other.to_string(),
    }
}

/// One value as `interop.py` writes it: dates as days, timestamps as epoch ms, decimals as text.
fn json_value(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int16 => json!(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => json!(array.as_primitive::<arrow::datatypes::Float64Type>().value(row)),
        DataType::Date32 => json!(array.as_primitive::<Date32Type>().value(row)),
        DataType::Decimal128(..) => json!(array.as_primitive::<Decimal128Type>().value_as_string(row)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            json!(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        other => panic!("the interop test does not convert {other} yet"),
    }
}

fn json_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(Value::Array(batch.columns().iter().map(|c| json_value(c.as_ref(), row)).collect()));
        }
    }
    rows
}

fn file_paths(files: &[ferry_tables::source::WrittenFile]) -> Vec<PathBuf> {
    files.iter().map(|f| f.path.clone()).collect()
}

fn refs(paths: &[PathBuf]) -> Vec<&Path> {
    paths.iter().map(PathBuf::as_path).collect()
}

const VEHICLE_ROWS: usize = 5_000;
const VEHICLE_SEED: u64 = 42;

/// What the generator made, sorted by VIN: (vin, plate, owner_name, status, updated_at ms).
fn expected_vehicles() -> Vec<(String, String, String, String, i64)> {
    let mut rows = Vec::with_capacity(VEHICLE_ROWS);
    for batch in synth::vehicle_registry(VEHICLE_SEED, VEHICLE_ROWS) {
        let text = |name: &str| batch.column_by_name(name).expect("synth column").as_string::<i32>().clone();
        let (vin, plate, owner, status) = (text("vin"), text("plate"), text("owner_name"), text("status"));
        let updated = batch.column_by_name("updated_at").expect("synth column");
        let updated = updated.as_primitive::<TimestampMillisecondType>();
        for i in 0..batch.num_rows() {
            rows.push((
                vin.value(i).to_owned(),
                plate.value(i).to_owned(),
                owner.value(i).to_owned(),
                status.value(i).to_owned(),
                updated.value(i),
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn ferry_files_are_read_by_pyarrow_and_duckdb() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let export = dir.path().join("export.parquet");
    synth::write_parquet(
        &export,
        synth::vehicle_registry_schema(),
        synth::vehicle_registry(VEHICLE_SEED, VEHICLE_ROWS),
    )
    .expect("write export");
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("vehicle-registry", "gongan"))
            .expect("synth definition parses");
    let out = dir.path().join("v1");
    std::fs::create_dir(&out).expect("mkdir");
    let opts =
        PublishOptions { rows_per_file: 1_500, row_group_rows: 512, zstd_level: 3, chunk_hashes: None };
    let files = write_sorted_parquet(&def, SourceFormat::Parquet, &export, &out, &opts).expect("publish");
    assert_eq!(files.len(), 4, "5000 rows at 1500 per file");
    let paths = file_paths(&files);
    let seen = python("read", &refs(&paths));
    let expected = expected_vehicles();
    let first = &expected[0];

    let pa = &seen["pyarrow"];
    assert_eq!(pa["rows"], json!(VEHICLE_ROWS));
    let schema: Vec<Value> =
        def.columns.iter().map(|c| json!([c.name, pyarrow_type(&c.column_type), c.nullable])).collect();
    assert_eq!(pa["schema"], Value::Array(schema), "pyarrow sees the definition's schema");
    assert_eq!(pa["strictly_increasing_vin"], json!(true), "rows are in key order within and across files");
    assert_eq!(pa["first_vin"], json!(first.0));
    assert_eq!(pa["first_plate"], json!(first.1), "Chinese plate text survives");
    assert_eq!(pa["first_owner_name"], json!(first.2), "Chinese owner name survives");
    assert_eq!(pa["first_status"], json!(first.3));
    assert_eq!(pa["first_updated_at_ms"], json!(first.4));
    assert_eq!(pa["updated_at_tz"], json!(synth::TIMEZONE));
    let file_meta = pa["files"].as_array().expect("files");
    for (meta, file) in file_meta.iter().zip(&files) {
        assert_eq!(meta["rows"], json!(file.rows));
        assert_eq!(meta["row_groups"], json!((file.rows as usize).div_ceil(opts.row_group_rows)));
        assert_eq!(meta["compression"], json!(["ZSTD"]));
        assert_eq!(meta["sorting_columns"], json!([[0, false, true]]), "sorted by vin, declared");
        assert_eq!(meta["created_by"], json!(format!("ferry version {}", env!("CARGO_PKG_VERSION"))));
        for flag in [
            "statistics_in_every_chunk",
            "null_counts_in_every_chunk",
            "column_index_in_every_chunk",
            "offset_index_in_every_chunk",
        ] {
            assert_eq!(meta[flag], json!(true), "{flag} in {}", file.name);
        }
    }

    let duck = &seen["duckdb"];
    assert_eq!(duck["count"], json!(VEHICLE_ROWS));
    assert_eq!(duck["min_vin"], json!(first.0));
    assert_eq!(duck["max_vin"], json!(expected[VEHICLE_ROWS - 1].0));
    let prefix: String = first.1.chars().take(2).collect();
    assert_eq!(duck["plate_prefix"], json!(prefix));
    let with_prefix = expected.iter().filter(|row| row.1.starts_with(&prefix)).count();
    assert!(with_prefix >= 1);
    assert_eq!(duck["plate_prefix_count"], json!(with_prefix), "DuckDB filters on Chinese text");
    assert_eq!(duck["updated_at_type"], json!("TIMESTAMP WITH TIME ZONE"));
    assert_eq!(duck["first_updated_at_ms"], json!(first.4));
}

/// The dataset `interop.py write-sources` writes (its flat file), as a ferry definition.
const STATIONS: &str = r#"
id = "stations"
name = "站点 Stations"
provider = "jiaotong"
share-type = "unconditional"
update-cycle = "daily"

[[columns]]
name = "region"
type = "utf8"
key = true

[[columns]]
name = "seq"
type = "int64"
key = true

[[columns]]
name = "name"
type = "utf8"

[[columns]]
name = "capacity"
type = "int32"

[[columns]]
name = "score"
type = "float64"

[[columns]]
name = "active"
type = "bool"

[[columns]]
name = "amount"
type = "decimal(12,2)"

[[columns]]
name = "opened_on"
type = "date32"

[[columns]]
name = "seen_at"
type = "timestamp(ms, +08:00)"
"#;

#[test]
fn ferry_publishes_parquet_written_by_pyarrow() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = python("write-sources", &[dir.path()]);
    let flat = &sources["flat"];
    // The source really has what this test claims to cover.
    assert!(flat["row_groups"].as_u64().expect("row groups") >= 2, "several row groups: {flat}");
    for column in ["region", "name"] {
        let dictionary = flat["dictionary_columns"].as_array().expect("dictionary columns");
        assert!(dictionary.contains(&json!(column)), "{column} is dictionary-encoded: {flat}");
    }
    assert!(flat["null_counts"]["name"].as_u64().expect("null count") > 0);
    assert_eq!(flat["compression"], json!(["SNAPPY"]), "pyarrow's default codec");
    let expected = flat["rows_by_key"].as_array().expect("rows").clone();

    let def = DatasetDefinition::parse_toml(STATIONS).expect("definition parses");
    let out = dir.path().join("v1");
    std::fs::create_dir(&out).expect("mkdir");
    let opts =
        PublishOptions { rows_per_file: 1_000, row_group_rows: 256, zstd_level: 3, chunk_hashes: None };
    let source = PathBuf::from(flat["path"].as_str().expect("path"));
    let files = write_sorted_parquet(&def, SourceFormat::Parquet, &source, &out, &opts).expect("publish");
    assert_eq!(files.len(), expected.len().div_ceil(1_000));

    let batches = read_parquet_files(&file_paths(&files)).expect("read back");
    assert!(batches.iter().all(|b| b.schema() == def.arrow_schema()), "published schema is the definition's");
    let rows = json_rows(&batches);
    assert_eq!(rows.len(), expected.len());
    for (i, (row, want)) in rows.iter().zip(&expected).enumerate() {
        assert_eq!(row, want, "row {i} in key order");
    }
    let dumped = python("dump", &refs(&file_paths(&files)));
    assert_eq!(dumped["rows"], Value::Array(expected), "pyarrow reads back what it wrote, in key order");
}

#[test]
fn ferry_refuses_nested_columns_naming_them() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = python("write-sources", &[dir.path()]);
    let nested = &sources["nested"];
    let levels = &nested["max_definition_levels"];
    assert_eq!(levels["contact.phone"], json!(2), "nullable child of a nullable struct: {nested}");
    assert_eq!(levels["tags.list.element"], json!(3), "nullable element of a nullable list: {nested}");
    let source = PathBuf::from(nested["path"].as_str().expect("path"));
    let out = dir.path().join("v1");
    std::fs::create_dir(&out).expect("mkdir");
    let opts = PublishOptions::default();

    // Not declared: refused as extra columns.
    let def = DatasetDefinition::parse_toml(STATIONS).expect("definition parses");
    let err = write_sorted_parquet(&def, SourceFormat::Parquet, &source, &out, &opts).expect_err("refused");
    let PublishError::Schema(mismatch) = &err else { panic!("expected a schema mismatch, got {err}") };
    for column in ["contact", "tags"] {
        assert!(mismatch.problems.contains(&ColumnProblem::Extra { column: column.to_owned() }), "{err}");
        assert!(err.to_string().contains(&format!("`{column}`")), "{err}");
    }

    // Declared as a flat type: refused as a type that does not convert, naming the column.
    let declared = format!(
        "{STATIONS}\n[[columns]]\nname = \"contact\"\ntype = \"utf8\"\n\n[[columns]]\nname = \"tags\"\ntype = \"utf8\"\n"
    );
    let def = DatasetDefinition::parse_toml(&declared).expect("definition parses");
    let err = write_sorted_parquet(&def, SourceFormat::Parquet, &source, &out, &opts).expect_err("refused");
    let PublishError::Schema(mismatch) = &err else { panic!("expected a schema mismatch, got {err}") };
    let wrong: Vec<(&str, &str)> = mismatch
        .problems
        .iter()
        .filter_map(|p| match p {
            ColumnProblem::WrongType { column, found, .. } => Some((column.as_str(), found.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(wrong.len(), 2, "{err}");
    assert!(wrong[0].0 == "contact" && wrong[0].1.starts_with("Struct"), "{err}");
    assert!(wrong[1].0 == "tags" && wrong[1].1.starts_with("List"), "{err}");
    assert!(std::fs::read_dir(&out).expect("read dir").next().is_none(), "nothing written");
}
