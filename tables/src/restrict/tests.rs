//! The restriction applier against rows selected by hand: columns, rows, nulls, determinism of
//! the bytes, and refusals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, Date32Array, Decimal128Array, Int16Array, Int64Array, StringArray};
use arrow::datatypes::{Decimal128Type, Field, Int16Type, Int64Type, Schema};

use super::*;
use crate::source::read_parquet_files;

/// One source row: id, city, seats, price (cents), day, secret.
type Row = (i64, Option<String>, Option<i16>, i128, i32, String);

fn source_rows(n: i64) -> Vec<Row> {
    let cities = ["gz", "sz", "fs", "it's"];
    (0..n)
        .map(|i| {
            let city = (i % 7 != 3).then(|| cities[(i % 4) as usize].to_owned());
            let seats = (i % 5 != 0).then_some((i % 9) as i16);
            (i * 3, city, seats, i128::from(i) * 125, 18_000 + i as i32, format!("secret-{i}"))
        })
        .collect()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("seats", DataType::Int16, true),
        Field::new("price", DataType::Decimal128(10, 2), false),
        Field::new("day", DataType::Date32, false),
        Field::new("secret", DataType::Utf8, false),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.as_deref()))),
            Arc::new(Int16Array::from_iter(rows.iter().map(|r| r.2))),
            Arc::new(
                Decimal128Array::from_iter_values(rows.iter().map(|r| r.3))
                    .with_precision_and_scale(10, 2)
                    .expect("decimal"),
            ),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.4))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.5.as_str()))),
        ],
    )
    .expect("batch")
}

fn opts() -> WriteOptions {
    WriteOptions {
        rows_per_file: 40,
        row_group_rows: 16,
        batch_rows: 8,
        zstd_level: 1,
        ..WriteOptions::default()
    }
}

fn keys() -> Vec<String> {
    vec!["id".to_owned()]
}

fn write_source(dir: &Path, rows: &[Row], per_batch: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("dir");
    let mut writer = CanonicalWriter::new(dir, "part", schema(), &keys(), &opts()).expect("writer");
    for part in rows.chunks(per_batch) {
        writer.write(&batch(part)).expect("write");
    }
    writer.finish().expect("finish").into_iter().map(|f| f.path).collect()
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn only_the_permitted_columns_and_matching_rows_are_written_in_key_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rows = source_rows(150);
    let input = write_source(&tmp.path().join("src"), &rows, 13);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let filter = RowFilter::parse(
        "city IN ('gz', 'it''s') AND seats >= 2 AND price < 150.00 AND day >= DATE '2019-04-20'",
    )
    .expect("filter");
    // "day" is read for the filter but not served; "secret" is neither.
    let permitted = columns(&["seats", "id", "city", "price"]);
    let done =
        restrict(&input, &keys(), Some(&permitted), Some(&filter), &out, "part", &opts()).expect("restrict");

    let day0 = 18_006; // 2019-04-20
    let expected: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.1.as_deref(), Some("gz" | "it's")))
        .filter(|r| r.2.is_some_and(|s| s >= 2))
        .filter(|r| r.3 < 15_000 && r.4 >= day0)
        .collect();
    assert!(
        expected.len() > 5 && expected.len() < rows.len() / 2,
        "a filter that selects some: {}",
        expected.len()
    );
    assert_eq!((done.rows_in, done.rows_out), (150, expected.len() as u64));
    let names: Vec<&str> = done.schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "city", "seats", "price"], "catalog order, permitted columns only");

    let paths: Vec<PathBuf> = done.files.iter().map(|f| f.path.clone()).collect();
    let read = read_parquet_files(&paths).expect("read");
    let mut got = Vec::new();
    for b in &read {
        assert_eq!(b.schema().fields().len(), 4);
        let (id, city) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_string::<i32>());
        let (seats, price) =
            (b.column(2).as_primitive::<Int16Type>(), b.column(3).as_primitive::<Decimal128Type>());
        for i in 0..b.num_rows() {
            got.push((
                id.value(i),
                city.is_valid(i).then(|| city.value(i).to_owned()),
                seats.value(i),
                price.value(i),
            ));
        }
    }
    let want: Vec<_> = expected.iter().map(|r| (r.0, r.1.clone(), r.2.unwrap_or(0), r.3)).collect();
    assert_eq!(got, want);
}

#[test]
fn the_same_rows_give_the_same_bytes_however_the_source_was_batched() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rows = source_rows(120);
    let filter = RowFilter::parse("seats BETWEEN 1 AND 6").expect("filter");
    let mut hashes = Vec::new();
    for (n, per_batch) in [(0, 7), (1, 120)] {
        let input = write_source(&tmp.path().join(format!("src{n}")), &rows, per_batch);
        let out = tmp.path().join(format!("out{n}"));
        std::fs::create_dir_all(&out).expect("out");
        let done = restrict(&input, &keys(), None, Some(&filter), &out, "part", &opts()).expect("restrict");
        hashes.push(done.files.iter().map(|f| std::fs::read(&f.path).expect("read")).collect::<Vec<_>>());
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[test]
fn no_matching_row_still_writes_one_file_with_the_schema() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = write_source(&tmp.path().join("src"), &source_rows(30), 30);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let filter = RowFilter::parse("city = 'nowhere'").expect("filter");
    let done = restrict(&input, &keys(), Some(&columns(&["id"])), Some(&filter), &out, "part", &opts())
        .expect("restrict");
    assert_eq!(done.rows_out, 0);
    assert_eq!(done.files.len(), 1);
    assert_eq!(done.files[0].rows, 0);
}

#[test]
fn restrictions_that_do_not_fit_the_table_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = write_source(&tmp.path().join("src"), &source_rows(10), 10);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let run = |cols: Option<&[String]>, filter: &str| {
        let filter = RowFilter::parse(filter).expect("filter");
        restrict(&input, &keys(), cols, Some(&filter), &out, "part", &opts()).unwrap_err()
    };
    assert!(
        matches!(run(Some(&columns(&["city"])), "id > 1"), RestrictError::KeyOmitted { ref column } if column == "id")
    );
    assert!(
        matches!(run(Some(&columns(&["id", "colour"])), "id > 1"), RestrictError::UnknownColumn { ref column } if column == "colour")
    );
    assert!(matches!(
        run(None, "colour = 'red'"),
        RestrictError::Filter(FilterCheckError::UnknownColumn { .. })
    ));
    assert!(matches!(run(None, "seats = 'x'"), RestrictError::Filter(FilterCheckError::WrongType { .. })));
    assert!(matches!(run(None, "price = 1.001"), RestrictError::Filter(FilterCheckError::WrongType { .. })));
}
