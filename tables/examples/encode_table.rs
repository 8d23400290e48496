//! Times the canonical writer alone: reads a key-sorted table (Parquet files, e.g. a node's head)
//! into memory, then writes it again with [`CanonicalWriter`] and the default layout, and prints
//! the seconds and bytes. For profiling the encoder (`perf record -g`) and for checking that a
//! change to the writer keeps its bytes (compare `sha256sum OUT_DIR/*.parquet` before and after).
//!
//! `cargo run --release -p ferry-tables --example encode_table -- [--format N] OUT_DIR KEY FILE…`
//! (`--format`: a canonical format this writer still writes; the current one by default).

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::RecordBatch;
use ferry_tables::canonical::{CanonicalWriter, WriteOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = WriteOptions::default();
    if args.first().is_some_and(|a| a == "--format") && args.len() > 1 {
        opts.format = args[1].parse()?;
        args.drain(..2);
    }
    let [out, key, files @ ..] = args.as_slice() else {
        return Err("usage: encode_table [--format N] OUT_DIR KEY FILE…".into());
    };
    let mut batches: Vec<RecordBatch> = Vec::new();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file)?)?
            .with_batch_size(8_192)
            .build()?;
        for batch in reader {
            batches.push(batch?);
        }
    }
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err("no rows".into());
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let started = Instant::now();
    let mut writer = CanonicalWriter::new(&out, "part", schema, std::slice::from_ref(key), &opts)?;
    for batch in &batches {
        writer.write(batch)?;
    }
    let written = writer.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let rows: u64 = written.iter().map(|f| f.rows).sum();
    let bytes: u64 = written.iter().map(|f| f.size).sum();
    println!(
        "encode_table format={} rows={rows} files={} bytes={bytes} seconds={seconds:.2}",
        opts.format,
        written.len()
    );
    Ok(())
}
