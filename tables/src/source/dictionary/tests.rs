//! Tests of the kept dictionaries: a source whose text columns are read as dictionaries (row
//! groups with dictionaries of their own, nulls among the values) sorts into the bytes of the same
//! rows stored without dictionaries, in memory and spilled over several merge passes; a null in a
//! column that forbids it is still named with its source row.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use ferry_proto::SourceFormat;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::canonical::WrittenFile;
use crate::definition::DatasetDefinition;
use crate::source::external::{DEFAULT_MEMORY_BUDGET, Plan};
use crate::source::{PublishError, PublishOptions, kept_dictionaries, write_sorted_parquet_in_batches};

const KINDS: &str = r#"
id = "kinds"
name = "Kinds"
provider = "zhejiang"
share-type = "conditional"
update-cycle = "daily"
[[columns]]
name = "id"
type = "int64"
key = true
[[columns]]
name = "kind"
type = "utf8"
nullable = false
[[columns]]
name = "note"
type = "utf8"
"#;

const ROWS: usize = 60_000;
const GROUP_ROWS: usize = 30_000;

/// `ROWS` rows in random key order: `kind` one of five values (six in the second half), `note`
/// one of seven or null.
fn rows(seed: u64) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids: Vec<i64> = (0..ROWS as i64).collect();
    ids.shuffle(&mut rng);
    // The second row group brings a value the first has not: runs closed before it carry a
    // smaller dictionary than the merge's.
    let kinds = ["在用", "注销", "reported stolen", "", "x", "only later"];
    let kind: Vec<&str> =
        (0..ROWS).map(|i| kinds[rng.random_range(0..if i < GROUP_ROWS { 5 } else { 6 })]).collect();
    let note: Vec<Option<String>> =
        (0..ROWS).map(|_| rng.random_bool(0.8).then(|| format!("note {}", rng.random_range(0..7)))).collect();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("kind", Arc::new(StringArray::from(kind)) as ArrayRef),
        ("note", Arc::new(StringArray::from(note)) as ArrayRef),
    ])
    .expect("batch")
}

/// Writes `table` in row groups of `GROUP_ROWS`, with or without dictionary pages.
fn write(path: &Path, table: &RecordBatch, dictionaries: bool) {
    let props = WriterProperties::builder()
        .set_dictionary_enabled(dictionaries)
        .set_max_row_group_row_count(Some(GROUP_ROWS))
        .build();
    let schema: SchemaRef = table.schema();
    let mut writer =
        ArrowWriter::try_new(File::create(path).expect("create"), schema, Some(props)).expect("writer");
    writer.write(table).expect("write");
    writer.close().expect("close");
}

fn bytes(files: &[WrittenFile]) -> Vec<(String, Vec<u8>)> {
    files.iter().map(|f| (f.name.as_str().to_owned(), fs::read(&f.path).expect("read"))).collect()
}

fn sort(
    def: &DatasetDefinition,
    source: &Path,
    out: &Path,
    plan: Plan,
) -> Result<Vec<WrittenFile>, PublishError> {
    fs::create_dir_all(out).expect("out");
    let opts =
        PublishOptions { rows_per_file: 25_000, row_group_rows: 7_000, zstd_level: 3, chunk_hashes: None };
    write_sorted_parquet_in_batches(
        def,
        SourceFormat::Parquet,
        source,
        out,
        &opts,
        4_000,
        plan,
        out.join("spill"),
    )
    .map(|(files, _)| files)
}

#[test]
fn kept_dictionaries_sort_into_the_bytes_of_plain_strings() {
    let def = DatasetDefinition::parse_toml(KINDS).expect("def");
    let dir = tempfile::tempdir().expect("dir");
    let table = rows(5);
    let (with, without) = (dir.path().join("with.parquet"), dir.path().join("without.parquet"));
    write(&with, &table, true);
    write(&without, &table, false);
    assert_eq!(kept_dictionaries(&def, SourceFormat::Parquet, &with), [1, 2], "kind and note are kept");
    assert!(kept_dictionaries(&def, SourceFormat::Parquet, &without).is_empty());
    assert!(kept_dictionaries(&def, SourceFormat::Csv, &with).is_empty());
    let in_memory = Plan::for_budget(DEFAULT_MEMORY_BUDGET);
    let expected = sort(&def, &without, &dir.path().join("plain"), in_memory).expect("plain");
    assert_eq!(expected.iter().map(|f| f.rows).sum::<u64>(), ROWS as u64);
    let plans = [
        ("memory", in_memory),
        ("spilled", Plan { run_bytes: 200 << 10, spill_batch_bytes: 8 << 10, fan_in: 2 }),
        ("spilled-wide", Plan { run_bytes: 100 << 10, spill_batch_bytes: 16 << 10, fan_in: 64 }),
    ];
    for (name, plan) in plans {
        let files = sort(&def, &with, &dir.path().join(name), plan).expect(name);
        assert!(bytes(&files) == bytes(&expected), "{name}: the bytes differ");
    }
}

#[test]
fn a_null_in_a_kept_column_that_forbids_it_names_its_row() {
    let def = DatasetDefinition::parse_toml(KINDS).expect("def");
    let dir = tempfile::tempdir().expect("dir");
    let table = rows(6);
    let mut kind: Vec<Option<&str>> =
        table.column(1).as_any().downcast_ref::<StringArray>().expect("text").iter().collect();
    kind[GROUP_ROWS + 1_234] = None;
    let mut columns = table.columns().to_vec();
    columns[1] = Arc::new(StringArray::from(kind));
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        table.schema().field(0).clone(),
        table.schema().field(1).clone().with_nullable(true),
        table.schema().field(2).clone(),
    ]));
    let table = RecordBatch::try_new(schema, columns).expect("batch");
    let source = dir.path().join("null.parquet");
    write(&source, &table, true);
    assert_eq!(kept_dictionaries(&def, SourceFormat::Parquet, &source), [1, 2]);
    let plan = Plan { run_bytes: 200 << 10, spill_batch_bytes: 8 << 10, fan_in: 2 };
    let result = sort(&def, &source, &dir.path().join("out"), plan);
    let row = (GROUP_ROWS + 1_235) as u64;
    assert!(
        matches!(&result, Err(PublishError::NullInNonNullable { column, row: r }) if column == "kind" && *r == row),
        "{result:?}"
    );
}
