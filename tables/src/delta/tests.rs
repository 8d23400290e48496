//! Hand-made cases of diff, apply and append: exact counts, nulls, refusals of bad files and
//! inconsistent deltas, and agreement of the publish path with the materialize path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use ferry_proto::SourceFormat;
use rand::seq::SliceRandom;

use super::testgen::{hashes, paths, tempdir, write_table};
use super::*;
use crate::definition::DatasetDefinition;
use crate::error::DeltaProblem;
use crate::lying_footer::{LIES, THREE_GROUPS, lie_about_rows};
use crate::source::{PublishOptions, read_parquet_files, write_sorted_parquet};
use crate::synth;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]))
}

fn keys() -> Vec<String> {
    vec!["id".to_owned()]
}

fn table(rows: &[(i64, Option<&str>, Option<f64>)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch")
}

fn opts() -> WriteOptions {
    WriteOptions {
        rows_per_file: 4,
        row_group_rows: 3,
        batch_rows: 2,
        zstd_level: 1,
        ..WriteOptions::default()
    }
}

fn subdir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn ids(files: &[PathBuf]) -> Vec<i64> {
    let batches = read_parquet_files(files).expect("read");
    batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
}

#[test]
fn diff_counts_every_kind_of_change_exactly() {
    let dir = tempdir();
    let nan = f64::NAN;
    let old = table(&[
        (1, Some("a"), Some(1.0)),
        (2, Some("b"), None),
        (3, Some("c"), Some(3.0)),
        (4, None, Some(4.0)),
        (5, Some("e"), Some(5.0)),
        (6, Some("f"), Some(6.0)),
        (7, Some("g"), Some(0.0)),
        (8, Some("h"), Some(nan)),
        (9, None, None),
        (10, Some("j"), Some(10.0)),
    ]);
    let new = table(&[
        (0, Some("new"), None),      // inserted
        (1, Some("a"), Some(1.0)),   // same
        (3, Some("C"), Some(3.0)),   // value changed
        (4, Some("d"), Some(4.0)),   // null -> value
        (6, Some("f"), None),        // value -> null
        (7, Some("g"), Some(-0.0)),  // 0.0 -> -0.0: other bits
        (8, Some("h"), Some(nan)),   // NaN -> same NaN: same
        (9, Some(""), None),         // null -> empty string
        (10, Some("j"), Some(10.0)), // same
        (11, None, None),            // inserted
        (12, Some("l"), Some(12.0)), // inserted
    ]);
    let old_files = write_table(&dir.path().join("old"), &keys(), &old, &opts(), 1);
    let new_files = write_table(&dir.path().join("new"), &keys(), &new, &opts(), 2);
    let delta = diff(&old_files, &new_files, &keys(), &subdir(dir.path(), "delta"), &opts()).expect("diff");
    let expected = DeltaStats { old_rows: 10, new_rows: 11, inserted: 3, updated: 5, deleted: 2 };
    assert_eq!(delta.stats, expected);
    assert!(!delta.stats.is_empty());
    assert_eq!(ids(&paths(&delta.upserts)), [0, 3, 4, 6, 7, 9, 11, 12]);
    assert_eq!(ids(&paths(&delta.deletes)), [2, 5]);
    let names: Vec<&str> = delta.upserts.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["upserts-00000.parquet", "upserts-00001.parquet"]);
    let deletes = read_parquet_files(&paths(&delta.deletes)).expect("read");
    assert_eq!(deletes[0].schema().fields().len(), 1, "deletes carry only the key");
    let out = subdir(dir.path(), "out");
    let rebuilt = apply(&old_files, &paths(&delta.upserts), &paths(&delta.deletes), &keys(), &out, &opts())
        .expect("apply");
    assert_eq!(hashes(&paths(&rebuilt)), hashes(&new_files));
}

#[test]
fn apply_without_delta_files_rewrites_the_base() {
    let dir = tempdir();
    let base = table(&[(1, Some("a"), None), (2, None, Some(2.0))]);
    let base_files = write_table(&dir.path().join("base"), &keys(), &base, &opts(), 3);
    let out = subdir(dir.path(), "out");
    let rebuilt = apply(&base_files, &[], &[], &keys(), &out, &opts()).expect("apply");
    assert_eq!(hashes(&paths(&rebuilt)), hashes(&base_files));
}

#[test]
fn append_merges_new_rows_and_refuses_repeated_keys() {
    let dir = tempdir();
    let base = table(&[(1, Some("a"), None), (4, Some("d"), None), (9, Some("i"), None)]);
    let more = table(&[(0, Some("z"), None), (5, Some("e"), Some(0.5)), (6, None, None), (12, None, None)]);
    let all = concat_batches(&schema(), &[base.clone(), more.clone()]).expect("concat");
    let order = UInt32Array::from(vec![3, 0, 1, 4, 5, 2, 6]);
    let expected = take_record_batch(&all, &order).expect("take");
    let base_files = write_table(&dir.path().join("base"), &keys(), &base, &opts(), 4);
    let more_files = write_table(&dir.path().join("more"), &keys(), &more, &opts(), 5);
    let expected_files = write_table(&dir.path().join("expected"), &keys(), &expected, &opts(), 6);
    let out = subdir(dir.path(), "out");
    let merged = append(&base_files, &more_files, &keys(), &out, &opts()).expect("append");
    assert_eq!(hashes(&paths(&merged)), hashes(&expected_files));
    let repeat = table(&[(2, None, None), (4, Some("again"), None)]);
    let repeat_files = write_table(&dir.path().join("repeat"), &keys(), &repeat, &opts(), 7);
    let err =
        append(&base_files, &repeat_files, &keys(), &subdir(dir.path(), "bad"), &opts()).expect_err("dup");
    assert!(matches!(&err, TableError::DuplicateKey { key } if key == "(id=4)"), "{err}");
}

/// Writes `batch` as one plain Parquet file, bypassing every check.
fn write_raw(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

#[test]
fn unsorted_delta_file_is_refused_naming_it() {
    let dir = tempdir();
    let base = table(&[(1, Some("a"), None), (2, Some("b"), None), (3, Some("c"), None)]);
    let base_files = write_table(&dir.path().join("base"), &keys(), &base, &opts(), 8);
    let upserts = dir.path().join("upserts-00000.parquet");
    write_raw(&upserts, &table(&[(5, None, None), (4, None, None)]));
    let err =
        apply(&base_files, std::slice::from_ref(&upserts), &[], &keys(), &subdir(dir.path(), "out"), &opts())
            .expect_err("unsorted");
    assert!(matches!(&err, TableError::KeysOutOfOrder { file, row: 1 } if file == &upserts), "{err}");
}

#[test]
fn truncated_or_foreign_files_are_errors() {
    let dir = tempdir();
    let rows: Vec<(i64, Option<&str>, Option<f64>)> =
        (0..200).map(|i| (i, Some("x"), Some(i as f64))).collect();
    let files = write_table(&dir.path().join("v1"), &keys(), &table(&rows), &WriteOptions::default(), 9);
    let bytes = std::fs::read(&files[0]).expect("read");
    for cut in [bytes.len() - 3, bytes.len() / 2, 4, 0] {
        let cut_path = dir.path().join(format!("cut-{cut}.parquet"));
        std::fs::write(&cut_path, &bytes[..cut]).expect("write");
        let err = diff(&files, std::slice::from_ref(&cut_path), &keys(), &subdir(dir.path(), "d"), &opts())
            .expect_err("cut");
        assert!(matches!(&err, TableError::Parquet { path, .. } if path == &cut_path), "cut {cut}: {err}");
    }
    let text = dir.path().join("text.parquet");
    std::fs::write(&text, b"id,name\n1,a\n").expect("write");
    let err = apply(std::slice::from_ref(&text), &[], &[], &keys(), &subdir(dir.path(), "o"), &opts())
        .expect_err("text");
    assert!(matches!(&err, TableError::Parquet { path, .. } if path == &text), "{err}");
    let missing = dir.path().join("missing.parquet");
    let err = apply(&[missing], &[], &[], &keys(), &subdir(dir.path(), "o"), &opts()).expect_err("missing");
    assert!(matches!(err, TableError::Io { .. }), "{err}");
}

#[test]
fn corrupt_page_inside_a_valid_footer_is_an_error() {
    let dir = tempdir();
    let rows: Vec<(i64, Option<&str>, Option<f64>)> = (0..500).map(|i| (i, Some("name"), None)).collect();
    let files = write_table(&dir.path().join("v1"), &keys(), &table(&rows), &WriteOptions::default(), 10);
    let mut bytes = std::fs::read(&files[0]).expect("read");
    for byte in &mut bytes[8..40] {
        *byte ^= 0x5A;
    }
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, &bytes).expect("write");
    let err = diff(std::slice::from_ref(&bad), &files, &keys(), &subdir(dir.path(), "d"), &opts())
        .expect_err("corrupt");
    assert!(matches!(&err, TableError::Parquet { path, .. } if path == &bad), "{err}");
}

#[test]
fn deltas_that_do_not_fit_the_base_are_refused() {
    let dir = tempdir();
    let base = table(&[(1, Some("a"), None), (3, Some("c"), None)]);
    let base_files = write_table(&dir.path().join("base"), &keys(), &base, &opts(), 11);
    let key_only = |ids: &[i64]| {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef])
            .expect("keys")
    };
    let deletes = dir.path().join("deletes.parquet");
    write_raw(&deletes, &key_only(&[2]));
    let err =
        apply(&base_files, &[], std::slice::from_ref(&deletes), &keys(), &subdir(dir.path(), "o1"), &opts())
            .expect_err("missing key");
    let expected = DeltaProblem::DeleteOfMissingKey;
    assert!(
        matches!(&err, TableError::InconsistentDelta { key, problem } if key == "(id=2)" && *problem == expected)
    );
    write_raw(&deletes, &key_only(&[3]));
    let upserts = dir.path().join("upserts.parquet");
    write_raw(&upserts, &table(&[(3, Some("again"), None)]));
    let err = apply(
        &base_files,
        &[upserts],
        std::slice::from_ref(&deletes),
        &keys(),
        &subdir(dir.path(), "o2"),
        &opts(),
    )
    .expect_err("both");
    let expected = DeltaProblem::UpsertAndDelete;
    assert!(matches!(&err, TableError::InconsistentDelta { problem, .. } if *problem == expected), "{err}");
    let wrong = dir.path().join("wrong.parquet");
    write_raw(&wrong, &table(&[(3, None, None)]));
    let err =
        apply(&base_files, &[], &[wrong], &keys(), &subdir(dir.path(), "o3"), &opts()).expect_err("schema");
    assert!(matches!(err, TableError::SchemaMismatch { .. }), "{err}");
}

#[test]
fn versions_with_different_schemas_are_refused() {
    let dir = tempdir();
    let old_files = write_table(&dir.path().join("old"), &keys(), &table(&[(1, None, None)]), &opts(), 12);
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ])),
        vec![Arc::new(Int64Array::from(vec![1])), Arc::new(StringArray::from(vec![Some("a")]))],
    )
    .expect("batch");
    let new_files = write_table(&dir.path().join("new"), &keys(), &other, &opts(), 13);
    let err = diff(&old_files, &new_files, &keys(), &subdir(dir.path(), "d"), &opts()).expect_err("schema");
    assert!(matches!(&err, TableError::SchemaMismatch { file, .. } if file == &new_files[0]), "{err}");
}

/// Writes `batches` in a shuffled row order as a province's Parquet export.
fn shuffled_export(path: &Path, batches: &[RecordBatch], seed: u64) {
    let table = concat_batches(&synth::vehicle_registry_schema(), batches).expect("concat");
    let mut order: Vec<u32> = (0..table.num_rows() as u32).collect();
    order.shuffle(&mut super::testgen::rng(seed));
    let shuffled = take_record_batch(&table, &UInt32Array::from(order)).expect("take");
    let chunks: Vec<RecordBatch> = (0..shuffled.num_rows())
        .step_by(9_000)
        .map(|s| shuffled.slice(s, 9_000.min(shuffled.num_rows() - s)))
        .collect();
    synth::write_parquet(path, synth::vehicle_registry_schema(), chunks).expect("export");
}

/// The publish path (`write_sorted_parquet` of each day's export) and the materialize path
/// (`apply` of the delta to yesterday's files) produce the same bytes. Large enough that pages
/// and dictionaries hit their size limits.
#[test]
fn publish_and_materialize_agree_byte_for_byte() {
    let dir = tempdir();
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "zhejiang")).expect("def");
    let day1: Vec<RecordBatch> = synth::vehicle_registry(21, 60_000).collect();
    let edit = synth::edit_vehicle_registry(&day1, 22, 0.02).expect("edit");
    let publish =
        PublishOptions { rows_per_file: 50_000, row_group_rows: 30_000, zstd_level: 3, chunk_hashes: None };
    let mut versions = Vec::new();
    for (day, batches) in [(1, &day1), (2, &edit.batches)] {
        let export = dir.path().join(format!("export-{day}.parquet"));
        shuffled_export(&export, batches, day);
        let out = subdir(dir.path(), &format!("v{day}"));
        let files =
            write_sorted_parquet(&def, SourceFormat::Parquet, &export, &out, &publish).expect("publish");
        versions.push(paths(&files));
    }
    let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let opts = publish.write_options();
    let delta = diff(&versions[0], &versions[1], &keys, &subdir(dir.path(), "delta"), &opts).expect("diff");
    let stats = delta.stats;
    let expected = (edit.inserted as u64, edit.updated as u64, edit.deleted as u64);
    assert_eq!((stats.inserted, stats.updated, stats.deleted), expected, "{stats:?}");
    assert!(stats.updated > 500 && stats.inserted > 50 && stats.deleted > 50, "{stats:?}");
    let out = subdir(dir.path(), "materialized");
    let rebuilt = apply(&versions[0], &paths(&delta.upserts), &paths(&delta.deletes), &keys, &out, &opts)
        .expect("apply");
    assert_eq!(hashes(&paths(&rebuilt)), hashes(&versions[1]));

    // The same days as a node wrote them before format 3: a consumer that takes the format from
    // the manifest's writer rebuilds them byte for byte, and the format changes the bytes.
    let layout = ferry_proto::TableLayout {
        rows_per_file: opts.rows_per_file as u64,
        row_group_rows: opts.row_group_rows as u64,
        batch_rows: opts.batch_rows as u64,
        zstd_level: opts.zstd_level,
    };
    let two = WriteOptions::for_manifest(layout, Some("ferry-canonical/2 parquet-rs/60.2.0"));
    assert_eq!(two.format, 2);
    let mut old_format = Vec::new();
    for (day, files) in versions.iter().enumerate() {
        let table =
            concat_batches(&synth::vehicle_registry_schema(), &read_parquet_files(files).expect("read"))
                .expect("concat");
        old_format.push(write_table(
            &dir.path().join(format!("two-v{day}")),
            &keys,
            &table,
            &two,
            day as u64,
        ));
    }
    assert_ne!(hashes(&old_format[1]), hashes(&versions[1]));
    let delta =
        diff(&old_format[0], &old_format[1], &keys, &subdir(dir.path(), "delta-2"), &two).expect("diff");
    let out = subdir(dir.path(), "materialized-2");
    let rebuilt = apply(&old_format[0], &paths(&delta.upserts), &paths(&delta.deletes), &keys, &out, &two)
        .expect("apply");
    assert_eq!(hashes(&paths(&rebuilt)), hashes(&old_format[1]));
}

#[test]
fn base_whose_footer_lies_about_its_row_count_is_refused() {
    let (group_rows, groups) = THREE_GROUPS;
    let rows: Vec<(i64, Option<&str>, Option<f64>)> =
        (0..(group_rows * groups) as i64).map(|i| (i * 2, Some("x"), None)).collect();
    // One file of three row groups, so that nothing is committed before the base is refused.
    let layout = WriteOptions {
        rows_per_file: 1_000,
        row_group_rows: group_rows,
        batch_rows: 50,
        zstd_level: 1,
        ..WriteOptions::default()
    };
    let new_rows = table(&[(1, Some("new"), None), (1_001, None, Some(1.0))]);
    for (lie, part, declared, found, counted) in LIES {
        let dir = tempdir();
        let base = write_table(&dir.path().join("base"), &keys(), &table(&rows), &layout, 12);
        assert_eq!(base.len(), 1);
        lie_about_rows(&base[0], lie);
        let stored = hashes(&base);
        let upserts = write_table(&dir.path().join("upserts"), &keys(), &new_rows, &layout, 13);
        let check = |what: &str, result: Result<(), TableError>, out: &Path| {
            let err = result.expect_err(what);
            let matches = matches!(
                &err,
                TableError::RowCountMismatch { file, part: p, declared: d, found: f, counted: c }
                    if file == &base[0] && p == part && *d == declared && *f == found && c.starts_with(counted)
            );
            assert!(matches, "{what} {lie:?}: {err}");
            let left: Vec<_> = std::fs::read_dir(out).expect("list").collect();
            assert!(left.is_empty(), "{what} {lie:?}: no part or .tmp file is left: {left:?}");
            assert_eq!(hashes(&base), stored, "{what} {lie:?}: the stored version is untouched");
        };
        let out = subdir(dir.path(), "apply");
        check("apply", apply(&base, &upserts, &[], &keys(), &out, &layout).map(drop), &out);
        let out = subdir(dir.path(), "append");
        check("append", append(&base, &upserts, &keys(), &out, &layout).map(drop), &out);
        let out = subdir(dir.path(), "diff");
        check("diff", diff(&base, &upserts, &keys(), &out, &layout).map(drop), &out);
    }
}
