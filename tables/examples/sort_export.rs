//! Sorts an unordered vehicle-registry export (Parquet) into canonical files within a memory
//! budget, as a node's publish does before it diffs, and prints what it took; run it under
//! `/usr/bin/time -v` for the peak RSS, or `perf record -g` for where the time goes.
//!
//! `cargo run --release -p ferry-tables --example sort_export -- EXPORT OUT_DIR BUDGET_MIB [gps]`
//! (`gps`: the export is GPS positions). The spill directory is `OUT_DIR/spill`.
//!
//! `… sort_export -- --generate DIR ROWS` writes the two days' vehicle exports `ferry-bench
//! publish --dir DIR --keep-exports` reuses (same seed and share of changed rows as its defaults).

use std::path::PathBuf;
use std::time::Instant;

use ferry_proto::SourceFormat;
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::source::{PublishOptions, SortOptions, write_sorted_parquet_with};
use ferry_tables::synth;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir, rows] = args.as_slice()
        && flag == "--generate"
    {
        return generate(dir.as_ref(), rows.parse()?);
    }
    let [source, out, budget, rest @ ..] = args.as_slice() else {
        return Err("usage: sort_export EXPORT OUT_DIR BUDGET_MIB [gps]".into());
    };
    let text = match rest.first().map(String::as_str) {
        Some("gps") => synth::gps_positions_definition("gps", "ministry"),
        _ => synth::vehicle_registry_definition("vehicle-registry", "ministry"),
    };
    let def = DatasetDefinition::parse_toml(&text)?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let sort =
        SortOptions { memory_budget: budget.parse::<usize>()? << 20, spill_dir: Some(out.join("spill")) };
    let started = Instant::now();
    let files = write_sorted_parquet_with(
        &def,
        SourceFormat::Parquet,
        source.as_ref(),
        &out,
        &PublishOptions::default(),
        &sort,
    )?;
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "sort_export rows={rows} files={} bytes={bytes} seconds={seconds:.2} budget_mib={budget}",
        files.len()
    );
    Ok(())
}

/// Writes `vehicles-day-n.parquet` and `vehicles-day-n1.parquet` (1% of the rows changed) into `dir`.
fn generate(dir: &std::path::Path, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    const SEED: u64 = 20_261_206;
    std::fs::create_dir_all(dir)?;
    let day_n: Vec<_> = synth::vehicle_registry(SEED, rows).collect();
    let edit = synth::edit_vehicle_registry(&day_n, SEED.wrapping_add(1), 0.01)?;
    let schema = synth::vehicle_registry_schema();
    synth::write_parquet(&dir.join("vehicles-day-n.parquet"), schema.clone(), day_n)?;
    synth::write_parquet(&dir.join("vehicles-day-n1.parquet"), schema, edit.batches)?;
    Ok(())
}
