//! Tests of the external sort: runs spilled under a tiny budget and merged in several passes give
//! the bytes of the in-memory sort; duplicate keys across runs, null keys and lying footers are
//! refused as before; the spill directory goes in every case.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use ferry_proto::SourceFormat;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{DEFAULT_MEMORY_BUDGET, Plan, SortOptions, SortStats};
use crate::canonical::WrittenFile;
use crate::definition::DatasetDefinition;
use crate::lying_footer::{LIES, THREE_GROUPS, lie_about_rows};
use crate::source::{
    PublishError, PublishOptions, write_sorted_parquet_in_batches, write_sorted_parquet_with,
};
use crate::synth;

const IDS: &str = r#"
id = "ids"
name = "Ids"
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
"#;

/// Each source batch a run of its own, merged two at a time.
const EVERY_BATCH_A_RUN: Plan = Plan { run_bytes: 1, spill_batch_bytes: 1 << 10, fan_in: 2 };

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn out(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        fs::create_dir_all(&out).expect("out dir");
        out
    }

    fn spill(&self) -> PathBuf {
        self.dir.path().join("spill")
    }

    fn publish(
        &self,
        def: &DatasetDefinition,
        format: SourceFormat,
        source: &Path,
        out: &str,
        opts: &PublishOptions,
        (batch_rows, plan): (usize, Plan),
    ) -> Result<(Vec<WrittenFile>, SortStats), PublishError> {
        let out = self.out(out);
        write_sorted_parquet_in_batches(def, format, source, &out, opts, batch_rows, plan, self.spill())
    }

    /// Nothing is left in the spill directory (it may never have been made).
    fn assert_spill_gone(&self, what: &str) {
        let left: Vec<_> =
            fs::read_dir(self.spill()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{what}: spill files remain: {left:?}");
    }
}

fn bytes(files: &[WrittenFile]) -> Vec<(String, Vec<u8>)> {
    files.iter().map(|f| (f.name.as_str().to_owned(), fs::read(&f.path).expect("read"))).collect()
}

/// `table`'s rows in a random order.
fn shuffled(table: &RecordBatch, seed: u64) -> RecordBatch {
    let mut order: Vec<u32> = (0..table.num_rows() as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    take_record_batch(table, &UInt32Array::from(order)).expect("take")
}

/// GPS positions (key `(vin, ts)`: every vehicle's positions share their `vin`, so runs tie on
/// the first key column across their boundaries) in random order, sorted in memory and under a
/// tiny budget: many runs, several merge passes, the same bytes.
#[test]
fn spilled_runs_merged_in_passes_give_the_in_memory_bytes() {
    let def =
        DatasetDefinition::parse_toml(&synth::gps_positions_definition("gps", "zhejiang")).expect("def");
    let batches: Vec<RecordBatch> = synth::gps_positions(3, 6_000, 37).collect();
    let table = shuffled(&concat_batches(&synth::gps_positions_schema(), &batches).expect("concat"), 9);
    let fx = Fixture::new();
    let source = fx.dir.path().join("gps.parquet");
    let chunks: Vec<RecordBatch> = (0..6).map(|i| table.slice(i * 1_000, 1_000)).collect();
    synth::write_parquet(&source, synth::gps_positions_schema(), chunks).expect("written");
    let opts =
        PublishOptions { rows_per_file: 2_500, row_group_rows: 700, zstd_level: 3, chunk_hashes: None };
    let in_memory = (500, Plan::for_budget(DEFAULT_MEMORY_BUDGET));
    let (expected, stats) =
        fx.publish(&def, SourceFormat::Parquet, &source, "memory", &opts, in_memory).expect("in memory");
    assert_eq!(stats, SortStats::default(), "fits in memory");
    assert_eq!(expected.iter().map(|f| f.rows).collect::<Vec<_>>(), [2_500, 2_500, 1_000]);
    for (i, fan_in) in [2, 3, 5].into_iter().enumerate() {
        let plan = Plan { run_bytes: 40 << 10, spill_batch_bytes: 2 << 10, fan_in };
        let out = format!("spilled-{i}");
        let (files, stats) =
            fx.publish(&def, SourceFormat::Parquet, &source, &out, &opts, (300, plan)).expect("spilled");
        assert!(stats.runs >= 10, "fan-in {fan_in}: {stats:?}");
        assert!(stats.passes >= 2, "fan-in {fan_in}: merged in passes: {stats:?}");
        assert!(bytes(&files) == bytes(&expected), "fan-in {fan_in}: the bytes differ");
        fx.assert_spill_gone(&out);
        assert_eq!(fs::read_dir(fx.out(&out)).expect("list").count(), files.len(), "only the files");
    }
}

/// Through the public API: a budget a few times smaller than the table spills, merges and
/// writes what the default budget writes in memory.
#[test]
fn a_small_budget_writes_what_the_default_writes() {
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let fx = Fixture::new();
    let source = fx.dir.path().join("vehicles.parquet");
    synth::write_parquet(&source, synth::vehicle_registry_schema(), synth::vehicle_registry(8, 150_000))
        .expect("written");
    let opts = PublishOptions::default();
    let default = write_sorted_parquet_with(
        &def,
        SourceFormat::Parquet,
        &source,
        &fx.out("a"),
        &opts,
        &SortOptions::default(),
    )
    .expect("default");
    let small = SortOptions { memory_budget: 8 << 20, spill_dir: Some(fx.spill()) };
    let spilled =
        write_sorted_parquet_with(&def, SourceFormat::Parquet, &source, &fx.out("b"), &opts, &small)
            .expect("small");
    assert!(bytes(&spilled) == bytes(&default), "the bytes differ");
    assert!(fx.spill().is_dir(), "the spill directory's parent stays");
    fx.assert_spill_gone("small budget");
}

fn ids_csv(ids: &[Option<i64>]) -> String {
    let mut csv = String::from("id,name\n");
    for id in ids {
        match id {
            Some(id) => csv.push_str(&format!("{id},n{id}\n")),
            None => csv.push_str(",nobody\n"),
        }
    }
    csv
}

fn shuffled_ids(count: i64, seed: u64) -> Vec<Option<i64>> {
    let mut ids: Vec<Option<i64>> = (0..count).map(Some).collect();
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    ids
}

#[test]
fn a_duplicate_key_in_two_runs_is_refused_naming_it() {
    let def = DatasetDefinition::parse_toml(IDS).expect("def");
    let fx = Fixture::new();
    // Far apart (different runs, met by the merge), then next to each other (one run, met by
    // its sort on the spill thread while the main thread reads on).
    let mut far = shuffled_ids(300, 1);
    far.push(Some(17));
    let mut near = shuffled_ids(300, 2);
    near.insert(150, Some(42));
    near.insert(150, Some(42));
    for (name, ids, key) in [("far", far, "(id=17)"), ("near", near, "(id=42)")] {
        let source = fx.dir.path().join(format!("{name}.csv"));
        fs::write(&source, ids_csv(&ids)).expect("source");
        let result = fx.publish(
            &def,
            SourceFormat::Csv,
            &source,
            name,
            &PublishOptions::default(),
            (20, EVERY_BATCH_A_RUN),
        );
        match result {
            Err(PublishError::DuplicateKey { key: found }) => assert_eq!(found, key, "{name}"),
            other => panic!("{name}: expected a duplicate key, got {other:?}"),
        }
        fx.assert_spill_gone(name);
    }
}

#[test]
fn a_null_key_after_spilled_runs_names_its_source_row() {
    let def = DatasetDefinition::parse_toml(IDS).expect("def");
    let fx = Fixture::new();
    let mut ids = shuffled_ids(300, 3);
    ids[249] = None;
    let source = fx.dir.path().join("nulls.csv");
    fs::write(&source, ids_csv(&ids)).expect("source");
    let result = fx.publish(
        &def,
        SourceFormat::Csv,
        &source,
        "out",
        &PublishOptions::default(),
        (20, EVERY_BATCH_A_RUN),
    );
    assert!(
        matches!(&result, Err(PublishError::NullKey { column, row: 250 }) if column == "id"),
        "{result:?}"
    );
    fx.assert_spill_gone("null key");
}

#[test]
fn a_lying_footer_is_refused_after_spilling_and_leaves_nothing() {
    let def =
        DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "ministry")).expect("def");
    let (group_rows, groups) = THREE_GROUPS;
    let rows = group_rows * groups;
    let table = shuffled(
        &concat_batches(
            &synth::vehicle_registry_schema(),
            &synth::vehicle_registry(21, rows).collect::<Vec<_>>(),
        )
        .expect("concat"),
        4,
    );
    for (i, (lie, part, declared, found, _)) in LIES.into_iter().enumerate() {
        let fx = Fixture::new();
        let source = fx.dir.path().join("export.parquet");
        let chunks = (0..groups).map(|g| table.slice(g * group_rows, group_rows));
        synth::write_parquet(&source, synth::vehicle_registry_schema(), chunks).expect("written");
        lie_about_rows(&source, lie);
        let result = fx.publish(
            &def,
            SourceFormat::Parquet,
            &source,
            "out",
            &PublishOptions::default(),
            (30, EVERY_BATCH_A_RUN),
        );
        let Err(PublishError::Source { message }) = &result else { panic!("{lie:?}: {result:?}") };
        let expected =
            format!("the Parquet footer declares {declared} rows for {part}, but there are {found}");
        assert!(message.contains(&expected), "{lie:?}: {message}");
        fx.assert_spill_gone(&format!("lie {i}"));
        assert_eq!(fs::read_dir(fx.out("out")).expect("list").count(), 0, "{lie:?}: nothing written");
    }
}

#[test]
fn plans_keep_within_their_budget() {
    for budget in [1usize, 64 << 10, 8 << 20, DEFAULT_MEMORY_BUDGET, 8 << 30] {
        let plan = Plan::for_budget(budget);
        assert!(plan.fan_in >= 2, "{budget}: {plan:?}");
        assert!(plan.run_bytes >= 1 && plan.run_bytes <= budget.max(1), "{budget}: {plan:?}");
        if budget >= 8 << 20 {
            assert!(plan.fan_in * 2 * plan.spill_batch_bytes <= budget, "{budget}: {plan:?}");
        }
    }
    let default = Plan::for_budget(DEFAULT_MEMORY_BUDGET);
    assert_eq!((default.run_bytes, default.spill_batch_bytes, default.fan_in), (128 << 20, 512 << 10, 204));
}
