//! Times a publish's sort and diff against a head, the two ways a node can run them: `files`
//! (sort into the stage, then `delta::diff` of the head's files against the written table's)
//! and `stream` (the sort's writer taps its rows into `delta::diff_stream`, which never reads
//! the new table back). Prints wall and CPU seconds of each step and the delta files' BLAKE3,
//! which must be the same both ways.
//!
//! `cargo run --release -p ferry-tables --example publish_diff -- HEAD_EXPORT NEW_EXPORT OUT_DIR
//! BUDGET_MIB files|stream` (vehicle exports, e.g. `ferry-bench publish --keep-exports`'s). The
//! head's table is sorted once into `OUT_DIR/head` and kept; each run writes `OUT_DIR/<mode>`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferry_proto::SourceFormat;
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::delta::{DeltaFiles, DiffBase, diff, diff_stream, tap_channel};
use ferry_tables::source::{
    PublishOptions, SortOptions, TapFactory, WrittenFile, write_sorted_parquet_tapped,
};
use ferry_tables::synth;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// CPU seconds (user + system) of this process so far, all threads.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the man page (utime, stime), 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn paths(files: &[WrittenFile]) -> Vec<PathBuf> {
    files.iter().map(|f| f.path.clone()).collect()
}

fn fresh(dir: &Path) -> Result<(), Error> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [head_export, new_export, out, budget, mode] = args.as_slice() else {
        return Err("usage: publish_diff HEAD_EXPORT NEW_EXPORT OUT_DIR BUDGET_MIB files|stream".into());
    };
    let out = PathBuf::from(out);
    let def = DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("vehicles", "ministry"))?;
    let keys: Vec<String> = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let publish = PublishOptions::default();
    let opts = publish.write_options();
    // Sorts `source` into `dir`, spilling under `out/<spill>`, showing the rows to `tap`'s taps.
    let sort_into = |source: &Path, dir: &Path, spill: &str, tap: &TapFactory<'_>| {
        let sort = SortOptions {
            memory_budget: budget.parse::<usize>().unwrap_or(256) << 20,
            spill_dir: Some(out.join(spill)),
        };
        write_sorted_parquet_tapped(&def, SourceFormat::Parquet, source, dir, &publish, &sort, tap)
    };
    let head_dir = out.join("head");
    if !head_dir.join("part-00000.parquet").exists() {
        fresh(&head_dir)?;
        sort_into(head_export.as_ref(), &head_dir, "spill-head", &|| None)?;
    }
    let mut head: Vec<PathBuf> =
        std::fs::read_dir(&head_dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    head.sort();
    let stage = out.join(mode);
    fresh(&stage)?;
    let source = Path::new(new_export);
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let delta: DeltaFiles = match mode.as_str() {
        "files" => {
            let table = sort_into(source, &stage, "spill", &|| None)?;
            println!("sort: {:.2} s, {:.2} CPU s", wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            let (wall, cpu) = (Instant::now(), cpu_seconds());
            let delta = diff(&head, &paths(&table), &keys, &stage, &opts)?;
            println!(
                "diff of the files: {:.2} s, {:.2} CPU s",
                wall.elapsed().as_secs_f64(),
                cpu_seconds() - cpu
            );
            delta
        }
        "stream" => {
            let (sender, receiver) = tap_channel(4);
            let (base, prints) = (DiffBase { files: head.clone(), prints: None }, out.join("stream.prints"));
            std::thread::scope(|scope| -> Result<DeltaFiles, Error> {
                let differ = scope.spawn(|| {
                    diff_stream(&base, receiver, def.arrow_schema(), &keys, &stage, &opts, &prints)
                });
                let tap = || Some(sender.tap());
                let table = sort_into(source, &stage, "spill", &tap);
                drop(sender);
                let diffed = differ.join().map_err(|_| "the diff panicked")??;
                table?;
                Ok(diffed.delta)
            })?
        }
        _ => return Err("mode is files or stream".into()),
    };
    println!(
        "{mode}: {:.2} s, {:.2} CPU s (sort and diff), stats {:?}",
        wall.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        delta.stats
    );
    for file in delta.upserts.iter().chain(&delta.deletes) {
        println!("{} {}", file.name, blake3::hash(&std::fs::read(&file.path)?));
    }
    Ok(())
}
