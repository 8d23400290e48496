//! Unit tests of publishing: CSV and Parquet sources, sorting, splitting, and every refusal.

use std::collections::HashMap;
use std::fs;

use crate::synth;
use arrow::array::{AsArray, UInt32Array};
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::basic::Compression;
use parquet::file::metadata::PageIndexPolicy;
use tempfile::TempDir;

use super::*;
use crate::definition::ColumnProblem;
use crate::lying_footer::{LIES, THREE_GROUPS, lie_about_rows};
use arrow::compute::{concat_batches, take_record_batch};

const SMALL: &str = r#"
id = "scores"
name = "Scores"
provider = "zhejiang"
share-type = "conditional"
update-cycle = "daily"
[[columns]]
name = "id"
type = "int64"
key = true
[[columns]]
name = "name"
type = "utf8"
nullable = false
[[columns]]
name = "score"
type = "float64"
[[columns]]
name = "day"
type = "date32"
"#;

fn small() -> DatasetDefinition {
    DatasetDefinition::parse_toml(SMALL).expect("SMALL parses")
}

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("out")).expect("out dir");
        Self { dir }
    }

    fn source(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, bytes).expect("write source");
        path
    }

    fn publish(
        &self,
        def: &DatasetDefinition,
        format: SourceFormat,
        source: &Path,
        opts: &PublishOptions,
    ) -> Result<Vec<WrittenFile>, PublishError> {
        write_sorted_parquet(def, format, source, &self.dir.path().join("out"), opts)
    }

    fn publish_csv(&self, def: &DatasetDefinition, text: &[u8]) -> Result<Vec<WrittenFile>, PublishError> {
        let source = self.source("source.csv", text);
        self.publish(def, SourceFormat::Csv, &source, &PublishOptions::default())
    }
}

fn read_back(files: &[WrittenFile]) -> RecordBatch {
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let batches = read_parquet_files(&paths).expect("read back");
    let schema = batches.first().map(|b| b.schema()).expect("at least one batch");
    concat_batches(&schema, &batches).expect("concat")
}

#[test]
fn csv_is_sorted_split_and_written_atomically() {
    let fx = Fixture::new();
    let mut csv = String::from("\u{feff}day,score,name,id\n");
    for id in [9, 3, 7, 1, 10, 5, 2, 8, 4, 6] {
        csv.push_str(&format!("2025-01-{id:02},{}.5,name {id},{id}\n", id * 10));
    }
    let opts = PublishOptions { rows_per_file: 4, row_group_rows: 2, zstd_level: 5, chunk_hashes: None };
    let source = fx.source("scores.csv", csv.as_bytes());
    let files = fx.publish(&small(), SourceFormat::Csv, &source, &opts).expect("published");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]);
    assert_eq!(files.iter().map(|f| f.rows).collect::<Vec<_>>(), [4, 4, 2]);
    for file in &files {
        assert_eq!(fs::metadata(&file.path).expect("exists").len(), file.size);
    }
    let leftovers = fs::read_dir(fx.dir.path().join("out")).expect("list").count();
    assert_eq!(leftovers, 3, "no .tmp files remain");
    let table = read_back(&files);
    assert_eq!(table.schema(), small().arrow_schema());
    let ids = table.column(0).as_primitive::<Int64Type>();
    assert_eq!(ids.values().to_vec(), (1..=10).collect::<Vec<i64>>());
    assert_eq!(table.column(1).as_string::<i32>().value(0), "name 1");
}

#[test]
fn files_carry_zstd_page_indexes_and_sort_order() {
    let fx = Fixture::new();
    let csv: String = std::iter::once("id,name,score,day\n".to_owned())
        .chain((0..100).rev().map(|i| format!("{i},n{i},{i}.0,2024-02-29\n")))
        .collect();
    let source = fx.source("s.csv", csv.as_bytes());
    let opts = PublishOptions { rows_per_file: 1_000, row_group_rows: 30, zstd_level: 3, chunk_hashes: None };
    let files = fx.publish(&small(), SourceFormat::Csv, &source, &opts).expect("published");
    let file = File::open(&files[0].path).expect("open");
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).expect("reader");
    let meta = builder.metadata();
    assert!(meta.file_metadata().created_by().is_some_and(|c| c.starts_with("ferry")));
    assert_eq!(meta.num_row_groups(), 4);
    let group = meta.row_group(0);
    assert_eq!(group.num_rows(), 30);
    assert!(matches!(group.column(0).compression(), Compression::ZSTD(_)));
    assert!(group.column(0).statistics().is_some());
    assert_eq!(group.sorting_columns().map(|s| s.len()), Some(1));
    let index = meta.page_index_for_row_group(0);
    assert!(index.column_index(0).is_some() && index.offset_index(0).is_some());
}

#[test]
fn duplicate_and_null_keys_are_refused() {
    let fx = Fixture::new();
    let err = fx.publish_csv(&small(), b"id,name,score,day\n2,a,,\n1,b,,\n2,c,,\n").expect_err("dup");
    assert!(matches!(&err, PublishError::DuplicateKey { key } if key == "(id=2)"), "{err}");
    let err = fx.publish_csv(&small(), b"id,name,score,day\n2,a,,\n1,b,,\n,c,,\n").expect_err("null key");
    assert!(matches!(&err, PublishError::NullKey { column, row: 3 } if column == "id"), "{err}");
    let err = fx.publish_csv(&small(), b"id,name,score,day\n2,a,,\n1,,,\n").expect_err("null name");
    assert!(matches!(&err, PublishError::NullInNonNullable { column, row: 2 } if column == "name"), "{err}");
}

#[test]
fn composite_duplicate_key_shows_every_value() {
    let fx = Fixture::new();
    let def =
        DatasetDefinition::parse_toml(&synth::gps_positions_definition("gps", "zhejiang")).expect("def");
    let batch = synth::gps_positions(1, 50, 5).next().expect("batch");
    let source = fx.dir.path().join("gps.parquet");
    synth::write_parquet(&source, synth::gps_positions_schema(), [batch.clone(), batch.slice(7, 1)])
        .expect("written");
    let err = fx.publish(&def, SourceFormat::Parquet, &source, &PublishOptions::default()).expect_err("dup");
    let PublishError::DuplicateKey { key } = &err else { panic!("{err}") };
    let vin = batch.column(0).as_string::<i32>().value(7);
    assert!(key.starts_with(&format!("(vin={vin}, ts=2025-06-01T")) && key.ends_with("+08:00)"), "{key}");
}

#[test]
fn malformed_csv_names_line_and_column() {
    let fx = Fixture::new();
    let err = fx.publish_csv(&small(), b"id,name,score,day\n1,a,1.0,\n2,b,high,\n").expect_err("bad float");
    let message = err.to_string();
    assert!(matches!(err, PublishError::Source { .. }), "{message}");
    assert!(message.contains("line 2") && message.contains("`score`"), "{message}");
    let err = fx.publish_csv(&small(), b"id,name,score,day\n1,a\n").expect_err("short row");
    assert!(matches!(err, PublishError::Source { .. }), "{err}");
    let err = fx.publish_csv(&small(), b"id,name,day,colour\n").expect_err("columns");
    let PublishError::Schema(mismatch) = &err else { panic!("{err}") };
    assert_eq!(
        mismatch.problems,
        [ColumnProblem::Missing { column: "score".into() }, ColumnProblem::Extra { column: "colour".into() }]
    );
    let err = fx.publish_csv(&small(), b"").expect_err("empty file");
    assert!(err.to_string().contains("header"), "{err}");
}

#[test]
fn non_utf8_csv_is_a_source_error() {
    let fx = Fixture::new();
    let err = fx.publish_csv(&small(), b"id,name,score,day\n1,\xd5\xc5\xc8\xfd,,\n").expect_err("gbk");
    let message = err.to_string();
    assert!(matches!(err, PublishError::Source { .. }) && message.contains("UTF-8"), "{message}");
    assert!(message.contains("`name`"), "{message}");
    let err = fx.publish_csv(&small(), b"id,\xc3\xfb\xb3\xc6,score,day\n").expect_err("gbk header");
    assert!(matches!(err, PublishError::Source { .. }), "{err}");
}

#[test]
fn broken_parquet_is_a_source_error() {
    let fx = Fixture::new();
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let tiny = fx.source("tiny.parquet", b"PAR1\0\0PAR1");
    let err = fx.publish(&def, SourceFormat::Parquet, &tiny, &PublishOptions::default()).expect_err("tiny");
    assert!(matches!(err, PublishError::Source { .. }), "{err}");
    let whole = fx.dir.path().join("whole.parquet");
    synth::write_parquet(&whole, synth::vehicle_registry_schema(), synth::vehicle_registry(1, 500))
        .expect("written");
    let bytes = fs::read(&whole).expect("read");
    for cut in [bytes.len() - 5, bytes.len() - 200, bytes.len() / 2] {
        let truncated = fx.source("cut.parquet", &bytes[..cut]);
        let err = fx.publish(&def, SourceFormat::Parquet, &truncated, &PublishOptions::default());
        assert!(matches!(err, Err(PublishError::Source { .. })), "cut at {cut}: {err:?}");
    }
    let csv_as_parquet = fx.source("x.parquet", b"id,name\n1,a\n");
    let err = fx.publish(&def, SourceFormat::Parquet, &csv_as_parquet, &PublishOptions::default());
    assert!(matches!(err, Err(PublishError::Source { .. })), "{err:?}");
}

/// Reorders `source` rows to match `published` by `vin` and compares the tables.
fn assert_same_rows_by_vin(source: &RecordBatch, published: &RecordBatch) {
    let position: HashMap<&str, u32> = source
        .column(0)
        .as_string::<i32>()
        .iter()
        .enumerate()
        .map(|(i, v)| (v.unwrap_or(""), i as u32))
        .collect();
    let order: UInt32Array = published
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|v| position.get(v.unwrap_or("")).copied())
        .collect();
    assert_eq!(order.null_count(), 0, "published vins all come from the source");
    assert_eq!(&take_record_batch(source, &order).expect("take"), published);
}

#[test]
fn synthetic_parquet_with_many_row_groups_is_published() {
    let fx = Fixture::new();
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let batches: Vec<RecordBatch> = synth::vehicle_registry(11, 5_000).collect();
    let source_table = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let chunks: Vec<RecordBatch> = (0..5).map(|i| source_table.slice(i * 1_000, 1_000)).collect();
    let source = fx.dir.path().join("export.parquet");
    synth::write_parquet(&source, synth::vehicle_registry_schema(), chunks).expect("written");
    let opts =
        PublishOptions { rows_per_file: 2_000, row_group_rows: 512, zstd_level: 3, chunk_hashes: None };
    let files = fx.publish(&def, SourceFormat::Parquet, &source, &opts).expect("published");
    assert_eq!(files.iter().map(|f| f.rows).collect::<Vec<_>>(), [2_000, 2_000, 1_000]);
    let table = read_back(&files);
    let vins: Vec<&str> = table.column(0).as_string::<i32>().iter().flatten().collect();
    assert!(vins.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert_same_rows_by_vin(&source_table, &table);
}

#[test]
fn synthetic_csv_round_trips() {
    let fx = Fixture::new();
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let source_table = concat_batches(
        &synth::vehicle_registry_schema(),
        &synth::vehicle_registry(4, 3_000).collect::<Vec<_>>(),
    )
    .expect("concat");
    let source = fx.dir.path().join("export.csv");
    synth::write_csv(&source, [source_table.clone()]).expect("written");
    let files = fx.publish(&def, SourceFormat::Csv, &source, &PublishOptions::default()).expect("published");
    assert_eq!(files.len(), 1);
    assert_same_rows_by_vin(&source_table, &read_back(&files));
}

#[test]
fn empty_table_writes_one_empty_file() {
    let fx = Fixture::new();
    let files = fx.publish_csv(&small(), b"id,name,score,day\n").expect("published");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 0);
    let paths = [files[0].path.clone()];
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(&paths[0]).expect("open")).expect("reader");
    assert_eq!(builder.schema(), &small().arrow_schema());
    assert_eq!(builder.metadata().file_metadata().num_rows(), 0);
}

#[test]
fn lossless_parquet_variants_are_conformed() {
    let fx = Fixture::new();
    let ids = arrow::array::Int16Array::from(vec![3, 1]);
    let names = arrow::array::DictionaryArray::<arrow::datatypes::Int8Type>::from_iter(["c", "a"]);
    let batch = RecordBatch::try_from_iter(vec![
        ("name", Arc::new(names) as ArrayRef),
        ("id", Arc::new(ids) as ArrayRef),
        ("day", Arc::new(arrow::array::Date32Array::from(vec![Some(1), None])) as ArrayRef),
        ("score", Arc::new(arrow::array::Float32Array::from(vec![0.5, 1.5])) as ArrayRef),
    ])
    .expect("batch");
    let source = fx.dir.path().join("variant.parquet");
    synth::write_parquet(&source, batch.schema(), [batch]).expect("written");
    let files = fx.publish(&small(), SourceFormat::Parquet, &source, &PublishOptions::default()).expect("ok");
    let table = read_back(&files);
    assert_eq!(table.schema(), small().arrow_schema());
    assert_eq!(table.column(0).as_primitive::<Int64Type>().values().to_vec(), [1, 3]);
    assert_eq!(table.column(1).as_string::<i32>().value(0), "a");
}

#[test]
fn bad_zstd_level_is_refused() {
    let fx = Fixture::new();
    let source = fx.source("s.csv", b"id,name,score,day\n1,a,,\n");
    let opts = PublishOptions { zstd_level: 99, ..PublishOptions::default() };
    let err = fx.publish(&small(), SourceFormat::Csv, &source, &opts).expect_err("level");
    assert!(matches!(err, PublishError::Parquet(_)), "{err}");
}

#[test]
fn parquet_footer_that_lies_about_its_row_count_is_a_source_error() {
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let (group_rows, groups) = THREE_GROUPS;
    let table = concat_batches(
        &synth::vehicle_registry_schema(),
        &synth::vehicle_registry(21, group_rows * groups).collect::<Vec<_>>(),
    )
    .expect("concat");
    let chunks: Vec<RecordBatch> = (0..groups).map(|g| table.slice(g * group_rows, group_rows)).collect();
    for (lie, part, declared, found, counted) in LIES {
        let fx = Fixture::new();
        let source = fx.dir.path().join("export.parquet");
        synth::write_parquet(&source, synth::vehicle_registry_schema(), chunks.clone()).expect("written");
        lie_about_rows(&source, lie);
        let lying_bytes = fs::read(&source).expect("read");
        let err = fx.publish(&def, SourceFormat::Parquet, &source, &PublishOptions::default());
        let Err(PublishError::Source { message }) = &err else { panic!("{lie:?}: {err:?}") };
        let expected = format!(
            "{}: the Parquet footer declares {declared} rows for {part}, but there are {found} {counted}",
            source.display()
        );
        assert!(message.starts_with(&expected), "{lie:?}: {message}");
        let out: Vec<_> = fs::read_dir(fx.dir.path().join("out")).expect("list").collect();
        assert!(out.is_empty(), "{lie:?}: nothing is written: {out:?}");
        assert_eq!(fs::read(&source).expect("read"), lying_bytes, "the source is left as it was");
    }
    let fx = Fixture::new();
    let honest = fx.dir.path().join("honest.parquet");
    synth::write_parquet(&honest, synth::vehicle_registry_schema(), chunks).expect("written");
    let files = fx.publish(&def, SourceFormat::Parquet, &honest, &PublishOptions::default()).expect("ok");
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), (group_rows * groups) as u64);
}

/// Publishes the same rows from a key-ordered source (streamed) and from a shuffled one (loaded
/// and sorted); both give byte-identical files, and the shuffled one leaves nothing of its first
/// pass behind although its disorder only shows after several batches and files.
#[test]
fn sorted_and_shuffled_sources_give_identical_files() {
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let batches: Vec<RecordBatch> = synth::vehicle_registry(5, 6_000).collect();
    let table = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let sort = arrow::compute::SortColumn { values: Arc::clone(table.column(0)), options: None };
    let order = arrow::compute::lexsort_to_indices(&[sort], None).expect("sort");
    let sorted = take_record_batch(&table, &order).expect("take");
    // Shuffled only at the end: the first pass writes whole files before it sees the disorder.
    let mut tail: Vec<u32> = (0..6_000).collect();
    tail[5_000..].reverse();
    let late = take_record_batch(&sorted, &UInt32Array::from(tail)).expect("take");
    let opts =
        PublishOptions { rows_per_file: 1_500, row_group_rows: 500, zstd_level: 3, chunk_hashes: None };
    let mut outputs = Vec::new();
    // `random` is sorted in memory, `random-spilled` in runs of a few hundred rows spilled to
    // disk and merged in several passes.
    let in_memory = Plan::for_budget(DEFAULT_MEMORY_BUDGET);
    let spilled = Plan { run_bytes: 64 << 10, spill_batch_bytes: 4 << 10, fan_in: 3 };
    let cases = [("sorted", &sorted, in_memory), ("late", &late, in_memory), ("random", &table, in_memory)];
    for (name, source_table, plan) in cases.into_iter().chain([("random-spilled", &table, spilled)]) {
        let fx = Fixture::new();
        let chunks: Vec<RecordBatch> = (0..6).map(|i| source_table.slice(i * 1_000, 1_000)).collect();
        let source = fx.dir.path().join(format!("{name}.parquet"));
        synth::write_parquet(&source, synth::vehicle_registry_schema(), chunks).expect("written");
        let out = fx.dir.path().join("out");
        let spill = fx.dir.path().join("spill");
        let files = write_sorted_parquet_in_batches(
            &def,
            SourceFormat::Parquet,
            &source,
            &out,
            &opts,
            700,
            plan,
            spill.clone(),
        )
        .expect("published")
        .0;
        let spilled_left = fs::read_dir(&spill).map(|d| d.count()).unwrap_or(0);
        assert_eq!(spilled_left, 0, "{name}: no spill file remains");
        let on_disk = fs::read_dir(fx.dir.path().join("out")).expect("list").count();
        assert_eq!(on_disk, files.len(), "{name}: only the published files remain");
        let bytes: Vec<Vec<u8>> = files.iter().map(|f| fs::read(&f.path).expect("read")).collect();
        outputs.push((name, bytes));
    }
    assert_eq!(outputs[0].1.len(), 4);
    for (name, bytes) in &outputs[1..] {
        assert!(bytes == &outputs[0].1, "{name} differs from the key-ordered source");
    }
}

/// A key-ordered source with a repeated key is refused by the streaming pass, naming the key.
#[test]
fn duplicate_in_an_ordered_source_is_refused_with_its_key() {
    let fx = Fixture::new();
    let err = fx
        .publish_csv(&small(), b"id,name,score,day\n1,a,1,2025-01-01\n2,b,2,2025-01-02\n2,c,3,2025-01-03\n");
    match err {
        Err(PublishError::DuplicateKey { key }) => assert_eq!(key, "(id=2)"),
        other => panic!("expected a duplicate key, got {other:?}"),
    }
    assert_eq!(fs::read_dir(fx.dir.path().join("out")).expect("list").count(), 0, "nothing left behind");
}

/// A CSV upload whose text is not UTF-8 is refused with the column named; before, it was written
/// as Parquet that did not read back ("encountered non UTF-8 data").
#[test]
fn csv_text_that_is_not_utf8_is_refused() {
    let fx = Fixture::new();
    let mut csv = b"id,name,score,day\n1,ok,1.0,2024-02-29\n2,".to_vec();
    csv.extend_from_slice(&[0xff, 0xfe, b'x']);
    csv.extend_from_slice(b",2.0,2024-02-29\n");
    let err = fx.publish_csv(&small(), &csv).expect_err("invalid UTF-8 must be refused");
    let message = err.to_string();
    assert!(message.contains("UTF-8") && message.contains("name"), "{message}");
    assert!(!fx.dir.path().join("out").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false));
}
