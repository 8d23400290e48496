//! `ferry gen`: write a synthetic transport dataset (and its definition) to files, for trying
//! ferry out and for benchmarks.

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_client::synth;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Vehicle registry (one row per vehicle, key = VIN).
    Vehicles,
    /// Append-only GPS positions (key = VIN + timestamp).
    Gps,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    /// Rows to generate.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Seed: the same seed and row count give the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file; .csv writes CSV, anything else Parquet.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the dataset definition (TOML) here.
    #[arg(long)]
    pub definition: Option<PathBuf>,
    /// Dataset id used in the definition.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Providing department used in the definition.
    #[arg(long, default_value = "ministry")]
    pub provider: String,
    /// Vehicles the GPS positions are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub vehicles: usize,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let csv = args.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (definition, rows) = match args.kind {
        Kind::Vehicles => {
            let id = args.dataset.as_deref().unwrap_or("vehicle-registry");
            let batches = synth::vehicle_registry(args.seed, args.rows);
            let rows = if csv {
                synth::write_csv(&args.out, batches)?
            } else {
                synth::write_parquet(&args.out, synth::vehicle_registry_schema(), batches)?
            };
            (synth::vehicle_registry_definition(id, &args.provider), rows)
        }
        Kind::Gps => {
            let id = args.dataset.as_deref().unwrap_or("vehicle-gps");
            let batches = synth::gps_positions(args.seed, args.rows, args.vehicles);
            let rows = if csv {
                synth::write_csv(&args.out, batches)?
            } else {
                synth::write_parquet(&args.out, synth::gps_positions_schema(), batches)?
            };
            (synth::gps_positions_definition(id, &args.provider), rows)
        }
    };
    if let Some(path) = &args.definition {
        std::fs::write(path, definition).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("wrote {rows} rows to {}", args.out.display());
    Ok(())
}
