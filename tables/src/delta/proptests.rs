//! Property: for random tables of every supported column type and random edits,
//! `apply(old, diff(old, new))` writes files byte-identical to `new`'s, the stats add up, and
//! the diff of a table with itself is empty; the diff fed by the sorted stream
//! ([`super::diff_stream`]) writes the same delta, byte for byte, however the stream is batched,
//! whether it compares the head's rows by value or by their row prints, and writes the new
//! table's prints.

use proptest::prelude::*;

use super::testgen::{self, EditPlan, hashes, paths, write_table};
use super::{DeltaFiles, DiffBase, StreamDiff, apply, diff, diff_stream, tap_channel};
use crate::canonical::WriteOptions;

#[derive(Debug, Clone, Copy)]
enum Mode {
    Random,
    AllDeleted,
    EmptyOld,
    EmptyNew,
    Unchanged,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        6 => Just(Mode::Random),
        1 => Just(Mode::AllDeleted),
        1 => Just(Mode::EmptyOld),
        1 => Just(Mode::EmptyNew),
        1 => Just(Mode::Unchanged),
    ]
}

fn options() -> impl Strategy<Value = WriteOptions> {
    (1usize..60, 1usize..40, 1usize..16).prop_map(|(rows_per_file, row_group_rows, batch_rows)| {
        WriteOptions { rows_per_file, row_group_rows, batch_rows, zstd_level: 1, ..WriteOptions::default() }
    })
}

fn plan() -> impl Strategy<Value = EditPlan> {
    (0.0..0.5f64, 0.0..1.0f64, 0usize..60).prop_map(|(delete, update, insert)| EditPlan {
        delete,
        update,
        insert,
    })
}

fn round_trip(shape_index: usize, rows: usize, seed: u64, mode: Mode, plan: EditPlan, opts: &WriteOptions) {
    let shape = testgen::shape(shape_index);
    let mut rng = testgen::rng(seed);
    let rows = if matches!(mode, Mode::EmptyOld) { 0 } else { rows };
    let old = testgen::sorted_unique(&shape, &testgen::random_rows(&mut rng, &shape, rows));
    let new = match mode {
        Mode::Random | Mode::EmptyOld => testgen::edit(&mut rng, &shape, &old, plan),
        Mode::AllDeleted => {
            testgen::edit(&mut rng, &shape, &old, EditPlan { delete: 1.0, update: 0.0, insert: 0 })
        }
        Mode::EmptyNew => old.slice(0, 0),
        Mode::Unchanged => old.clone(),
    };
    let dir = testgen::tempdir();
    let old_files = write_table(&dir.path().join("old"), &shape.keys, &old, opts, seed ^ 1);
    let new_files = write_table(&dir.path().join("new"), &shape.keys, &new, opts, seed ^ 2);
    let delta_dir = dir.path().join("delta");
    std::fs::create_dir(&delta_dir).expect("dir");
    let delta = diff(&old_files, &new_files, &shape.keys, &delta_dir, opts).expect("diff");
    let stats = delta.stats;
    assert_eq!((stats.old_rows, stats.new_rows), (old.num_rows() as u64, new.num_rows() as u64));
    assert_eq!(stats.new_rows + stats.deleted, stats.old_rows + stats.inserted, "{stats:?}");
    assert_eq!(delta.upserts.iter().map(|f| f.rows).sum::<u64>(), stats.inserted + stats.updated);
    assert_eq!(delta.deletes.iter().map(|f| f.rows).sum::<u64>(), stats.deleted);
    let by_value = DiffBase { files: old_files.clone(), prints: None };
    let streamed = streamed_diff(&by_value, &shape, &new, seed, &dir.path().join("streamed"), opts);
    assert_eq!(streamed.delta.stats, stats);
    assert_eq!(
        delta_hashes(&streamed.delta),
        delta_hashes(&delta),
        "the streamed diff differs from the diff of files"
    );
    let old_prints = testgen::sealed_prints(&old, &shape.keys, &old_files, &dir.path().join("old.prints"));
    let by_prints = DiffBase { files: old_files.clone(), prints: Some(old_prints) };
    let printed = streamed_diff(&by_prints, &shape, &new, seed, &dir.path().join("printed"), opts);
    assert_eq!(printed.delta.stats, stats);
    assert_eq!(
        delta_hashes(&printed.delta),
        delta_hashes(&delta),
        "the diff by prints differs from the diff by value"
    );
    for diffed in [&streamed, &printed] {
        let body = diffed.prints.as_ref().expect("the new table's prints");
        assert_eq!(body.rows, new.num_rows() as u64);
        let written: Vec<u64> = std::fs::read(&body.path)
            .expect("read prints")
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(written, testgen::prints_of(&new, &shape.keys), "the stream's prints are the new table's");
    }
    if matches!(mode, Mode::Unchanged) {
        assert!(stats.is_empty(), "{stats:?}");
    }
    if matches!(mode, Mode::AllDeleted | Mode::EmptyNew) {
        assert_eq!((stats.deleted, stats.inserted, stats.updated), (stats.old_rows, 0, 0));
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("dir");
    let rebuilt = apply(&old_files, &paths(&delta.upserts), &paths(&delta.deletes), &shape.keys, &out, opts)
        .expect("apply");
    assert_eq!(hashes(&paths(&rebuilt)), hashes(&new_files), "rebuilt files differ from new's");
    let same_dir = dir.path().join("same");
    std::fs::create_dir(&same_dir).expect("dir");
    let same = diff(&new_files, &new_files, &shape.keys, &same_dir, opts).expect("diff of equal tables");
    assert!(same.stats.is_empty(), "{:?}", same.stats);
}

fn delta_hashes(delta: &DeltaFiles) -> Vec<(String, blake3::Hash)> {
    [hashes(&paths(&delta.upserts)), hashes(&paths(&delta.deletes))].concat()
}

/// [`diff_stream`] of `old` against `new`'s rows sent in batches of sizes drawn from `seed`,
/// into `out` (the new prints beside it).
fn streamed_diff(
    old: &DiffBase,
    shape: &testgen::Shape,
    new: &arrow::array::RecordBatch,
    seed: u64,
    out: &std::path::Path,
    opts: &WriteOptions,
) -> StreamDiff {
    std::fs::create_dir(out).expect("dir");
    let (sender, receiver) = tap_channel(2);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut tap = sender.tap();
            let (mut at, mut size) = (0, (seed % 23) as usize + 1);
            while at < new.num_rows() {
                let n = size.min(new.num_rows() - at);
                tap.write(&new.slice(at, n)).expect("send");
                at += n;
                size = size * 7 % 31 + 1;
            }
            tap.finish().expect("end");
        });
        diff_stream(
            old,
            receiver,
            shape.schema.clone(),
            &shape.keys,
            out,
            opts,
            &out.with_extension("prints"),
        )
        .expect("streamed diff")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn apply_of_diff_rebuilds_the_new_files_byte_for_byte(
        shape_index in 0usize..4,
        rows in 0usize..300,
        seed in any::<u64>(),
        mode in mode(),
        plan in plan(),
        opts in options(),
    ) {
        round_trip(shape_index, rows, seed, mode, plan, &opts);
    }
}

/// Every shape once with fixed settings, so a failure points at a type, not a seed.
#[test]
fn every_shape_round_trips() {
    let opts = WriteOptions {
        rows_per_file: 50,
        row_group_rows: 20,
        batch_rows: 7,
        zstd_level: 1,
        ..WriteOptions::default()
    };
    for shape_index in 0..4 {
        let plan = EditPlan { delete: 0.1, update: 0.3, insert: 25 };
        round_trip(shape_index, 280, 42 + shape_index as u64, Mode::Random, plan, &opts);
    }
}
