//! The streamed diff against the diff of files: the same delta, byte for byte, however the rows
//! are batched; a restart, a cut stream, keys out of order and another schema.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;

use super::super::testgen::{self, EditPlan, hashes, paths, write_table};
use super::*;
use crate::delta::diff;

fn opts() -> WriteOptions {
    WriteOptions {
        rows_per_file: 40,
        row_group_rows: 16,
        batch_rows: 5,
        zstd_level: 1,
        ..WriteOptions::default()
    }
}

/// `table` cut into batches of the sizes in `cuts` (cycled), as a writer takes them.
fn batches(table: &RecordBatch, cuts: &[usize]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < table.num_rows() {
        let n = cuts[i % cuts.len()].max(1).min(table.num_rows() - at);
        out.push(table.slice(at, n));
        at += n;
        i += 1;
    }
    out
}

/// Runs `feed` with a tap sender on a thread of its own beside [`diff_stream`] against `old`;
/// the new rows' prints go beside `out` (`<out>.prints`).
fn stream_diff_with(
    old: &DiffBase,
    schema: SchemaRef,
    keys: &[String],
    out: &Path,
    feed: impl FnOnce(TapSender) + Send,
) -> Result<StreamDiff, StreamDiffError> {
    let (sender, receiver) = tap_channel(2);
    std::thread::scope(|scope| {
        scope.spawn(move || feed(sender));
        diff_stream(old, receiver, schema, keys, out, &opts(), &out.with_extension("prints"))
    })
}

/// [`stream_diff_with`] a head without prints (compared by value).
fn stream_diff(
    old: &[PathBuf],
    schema: SchemaRef,
    keys: &[String],
    out: &Path,
    feed: impl FnOnce(TapSender) + Send,
) -> Result<DeltaFiles, StreamDiffError> {
    let old = DiffBase { files: old.to_vec(), prints: None };
    stream_diff_with(&old, schema, keys, out, feed).map(|diffed| diffed.delta)
}

fn send_all(tap: &mut dyn RowTap, parts: &[RecordBatch]) {
    for part in parts {
        tap.write(part).expect("send");
    }
}

struct Case {
    dir: tempfile::TempDir,
    shape: testgen::Shape,
    old: Vec<PathBuf>,
    new_table: RecordBatch,
    new: Vec<PathBuf>,
}

fn case(shape_index: usize, seed: u64) -> Case {
    let shape = testgen::shape(shape_index);
    let mut rng = testgen::rng(seed);
    let old = testgen::sorted_unique(&shape, &testgen::random_rows(&mut rng, &shape, 200));
    let new_table = testgen::edit(&mut rng, &shape, &old, EditPlan { delete: 0.1, update: 0.2, insert: 30 });
    let dir = testgen::tempdir();
    let old = write_table(&dir.path().join("old"), &shape.keys, &old, &opts(), seed);
    let new = write_table(&dir.path().join("new"), &shape.keys, &new_table, &opts(), seed + 1);
    Case { dir, shape, old, new_table, new }
}

fn out_dir(case: &Case, name: &str) -> PathBuf {
    let dir = case.dir.path().join(name);
    std::fs::create_dir(&dir).expect("dir");
    dir
}

fn delta_hashes(files: &DeltaFiles) -> Vec<(String, blake3::Hash)> {
    [hashes(&paths(&files.upserts)), hashes(&paths(&files.deletes))].concat()
}

#[test]
fn the_streamed_diff_writes_the_delta_of_files_byte_for_byte() {
    for shape_index in 0..4 {
        let case = case(shape_index, 7 + shape_index as u64);
        let expected =
            diff(&case.old, &case.new, &case.shape.keys, &out_dir(&case, "files"), &opts()).expect("diff");
        assert!(!expected.stats.is_empty());
        for (i, cuts) in [[1usize, 7, 3], [64, 64, 64], [1000, 1, 1]].iter().enumerate() {
            let parts = batches(&case.new_table, cuts);
            let out = out_dir(&case, &format!("stream-{i}"));
            let streamed =
                stream_diff(&case.old, case.shape.schema.clone(), &case.shape.keys, &out, |sender| {
                    let mut tap = sender.tap();
                    send_all(tap.as_mut(), &parts);
                    tap.finish().expect("end");
                })
                .expect("streamed diff");
            assert_eq!(streamed.stats, expected.stats, "shape {shape_index}");
            assert_eq!(
                delta_hashes(&streamed),
                delta_hashes(&expected),
                "shape {shape_index}, cuts {cuts:?}"
            );
        }
    }
}

/// A writer abandoned half-way (a source found out of order) is followed by the sort's writer:
/// the diff starts again and its first attempt's files are gone.
#[test]
fn an_abandoned_writer_restarts_the_diff() {
    let case = case(0, 11);
    let expected =
        diff(&case.old, &case.new, &case.shape.keys, &out_dir(&case, "files"), &opts()).expect("diff");
    let parts = batches(&case.new_table, &[9]);
    let out = out_dir(&case, "stream");
    let streamed = stream_diff(&case.old, case.shape.schema.clone(), &case.shape.keys, &out, |sender| {
        let mut first = sender.tap();
        send_all(first.as_mut(), &parts[..parts.len() / 2]);
        first.abandon();
        let mut second = sender.tap();
        second.abandon(); // nothing sent: no restart
        let mut third = sender.tap();
        send_all(third.as_mut(), &parts);
        third.finish().expect("end");
    })
    .expect("streamed diff");
    assert_eq!(delta_hashes(&streamed), delta_hashes(&expected));
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    left.sort();
    let mut written: Vec<String> = delta_hashes(&streamed).into_iter().map(|(name, _)| name).collect();
    written.sort();
    assert_eq!(left, written, "only the last attempt's files are left");
}

#[test]
fn a_writer_that_fails_cuts_the_diff_and_leaves_no_delta() {
    let case = case(1, 13);
    let parts = batches(&case.new_table, &[4]);
    let out = out_dir(&case, "stream");
    let result = stream_diff(&case.old, case.shape.schema.clone(), &case.shape.keys, &out, |sender| {
        let mut tap = sender.tap();
        send_all(tap.as_mut(), &parts[..parts.len() - 1]);
    });
    assert!(matches!(result, Err(StreamDiffError::Cut)), "{result:?}");
    assert_eq!(std::fs::read_dir(&out).expect("list").count(), 0, "nothing of the delta is left");
}

#[test]
fn a_stream_out_of_key_order_is_refused() {
    let case = case(0, 17);
    let parts = batches(&case.new_table, &[6]);
    let out = out_dir(&case, "stream");
    let result = stream_diff(&case.old, case.shape.schema.clone(), &case.shape.keys, &out, |sender| {
        let mut tap = sender.tap();
        let _ = tap.write(&parts[1]);
        let _ = tap.write(&parts[0]);
        let _ = tap.finish();
    });
    match result {
        Err(StreamDiffError::Table(TableError::KeysOutOfOrder { row, .. })) => assert_eq!(row, 6),
        other => panic!("expected keys out of order, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&out).expect("list").count(), 0);
}

#[test]
fn a_stream_whose_schema_is_not_the_heads_is_refused() {
    let case = case(0, 19);
    let other = testgen::shape(1);
    let mut rng = testgen::rng(3);
    let rows = testgen::sorted_unique(&other, &testgen::random_rows(&mut rng, &other, 20));
    let out = out_dir(&case, "stream");
    let result = stream_diff(&case.old, other.schema.clone(), &other.keys, &out, |sender| {
        let mut tap = sender.tap();
        let _ = tap.write(&rows);
        let _ = tap.finish();
    });
    assert!(matches!(result, Err(StreamDiffError::Table(TableError::SchemaMismatch { .. }))), "{result:?}");
}

mod publish_path {
    //! The hook as a publish uses it: `write_sorted_parquet_tapped` shows the table's rows to
    //! the streamed diff, whichever way the sort goes (in memory, spilled and merged, a source
    //! already sorted, one that turns out unsorted after a whole batch was written).

    use std::sync::Arc;

    use arrow::array::UInt32Array;
    use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
    use ferry_proto::SourceFormat;
    use rand::seq::SliceRandom;

    use super::*;
    use crate::definition::DatasetDefinition;
    use crate::source::{
        PublishOptions, SortOptions, write_sorted_parquet_tapped, write_sorted_parquet_with,
    };
    use crate::synth;

    enum Order {
        Shuffled,
        Sorted,
        /// Sorted for the first this many rows, shuffled after.
        SortedFor(usize),
    }

    fn export(path: &Path, batches: &[RecordBatch], order: Order, seed: u64) {
        let schema = synth::vehicle_registry_schema();
        let table = concat_batches(&schema, batches).expect("concat");
        let sort = SortColumn { values: Arc::clone(table.column(0)), options: None };
        let sorted: Vec<u32> = lexsort_to_indices(&[sort], None).expect("sort").values().to_vec();
        let mut rng = testgen::rng(seed);
        let rows = match order {
            Order::Sorted => sorted,
            Order::Shuffled => {
                let mut rows = sorted;
                rows.shuffle(&mut rng);
                rows
            }
            Order::SortedFor(n) => {
                let mut rows = sorted;
                rows[n..].shuffle(&mut rng);
                rows
            }
        };
        let table = take_record_batch(&table, &UInt32Array::from(rows)).expect("take");
        let chunks =
            (0..table.num_rows()).step_by(10_000).map(|s| table.slice(s, 10_000.min(table.num_rows() - s)));
        synth::write_parquet(path, schema, chunks).expect("export");
    }

    #[test]
    fn the_sorts_taps_feed_the_same_delta_as_the_written_table() {
        let dir = testgen::tempdir();
        let def =
            DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("v", "zhejiang")).expect("def");
        assert_eq!(def.key_columns()[0].name, "vin", "the export sorts by column 0");
        let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
        let day1: Vec<RecordBatch> = synth::vehicle_registry(31, 100_000).collect();
        let edit = synth::edit_vehicle_registry(&day1, 32, 0.02).expect("edit");
        let publish = PublishOptions {
            rows_per_file: 40_000,
            row_group_rows: 20_000,
            zstd_level: 3,
            chunk_hashes: None,
        };
        let opts = publish.write_options();
        let sub = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).expect("dir");
            path
        };
        let head_export = sub("exports").join("day1.parquet");
        export(&head_export, &day1, Order::Shuffled, 1);
        let head = write_sorted_parquet_with(
            &def,
            SourceFormat::Parquet,
            &head_export,
            &sub("head"),
            &publish,
            &SortOptions::default(),
        )
        .expect("head");
        let head = DiffBase { files: paths(&head), prints: None };
        let cases = [
            ("in-memory", Order::Shuffled, SortOptions::default()),
            (
                "spilled",
                Order::Shuffled,
                SortOptions { memory_budget: 4 << 20, spill_dir: Some(sub("spill")) },
            ),
            ("sorted", Order::Sorted, SortOptions::default()),
            ("restarted", Order::SortedFor(80_000), SortOptions::default()),
        ];
        for (i, (name, order, sort)) in cases.into_iter().enumerate() {
            let source = sub("exports").join(format!("day2-{name}.parquet"));
            export(&source, &edit.batches, order, 10 + i as u64);
            let stage = sub(&format!("stage-{name}"));
            let (sender, receiver) = tap_channel(2);
            let (table, delta) = std::thread::scope(|scope| {
                let differ = scope.spawn(|| {
                    let prints = stage.with_extension("prints");
                    diff_stream(&head, receiver, def.arrow_schema(), &keys, &stage, &opts, &prints)
                });
                let table = write_sorted_parquet_tapped(
                    &def,
                    SourceFormat::Parquet,
                    &source,
                    &stage,
                    &publish,
                    &sort,
                    &|| Some(sender.tap()),
                );
                drop(sender);
                (table.expect("sorted"), differ.join().expect("diff thread").expect("streamed diff").delta)
            });
            let expected = diff(&head.files, &paths(&table), &keys, &sub(&format!("files-{name}")), &opts)
                .expect("diff");
            assert_eq!(delta.stats, expected.stats, "{name}");
            assert_eq!(delta_hashes(&delta), delta_hashes(&expected), "{name}");
            let stats = delta.stats;
            assert_eq!(
                (stats.inserted, stats.updated, stats.deleted),
                (edit.inserted as u64, edit.updated as u64, edit.deleted as u64)
            );
        }
    }
}
