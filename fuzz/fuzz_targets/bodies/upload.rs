//! Body of the `parquet_upload` fuzz target: an operator's upload as the node reads it before
//! any hash protects it. The first byte picks the format (even: Parquet, odd: CSV), the rest is
//! the file; it goes through [`write_sorted_parquet`], the function the node's publish runs on
//! an upload (read, check against the definition, cast, sort, refuse null or duplicate keys,
//! write canonical Parquet). Whatever it accepts must read back with the rows it reported.
//!
//! Shared by the fuzz target and its corpus replay (`tests/it/faults.rs` of the testkit).

use ferry_proto::SourceFormat;
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::source::{PublishOptions, read_parquet_files, write_sorted_parquet};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The vehicle registry's definition: strings, numbers, dates, a string key.
fn definition() -> &'static DatasetDefinition {
    static DEF: OnceLock<DatasetDefinition> = OnceLock::new();
    DEF.get_or_init(|| {
        let text = ferry_tables::synth::vehicle_registry_definition("vehicle-registry", "ministry");
        DatasetDefinition::parse_toml(&text).expect("the synthetic definition parses")
    })
}

/// A directory of this process for the upload and the files written from it.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-upload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

pub fn upload(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let format = if selector & 1 == 0 { SourceFormat::Parquet } else { SourceFormat::Csv };
    let source = scratch().join("upload");
    std::fs::write(&source, bytes).expect("writing the upload");
    let out = scratch().join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("the output directory");
    let opts = PublishOptions { rows_per_file: 64, row_group_rows: 16, zstd_level: 1, chunk_hashes: None };
    if let Ok(files) = write_sorted_parquet(definition(), format, &source, &out, &opts) {
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let back = read_parquet_files(&paths).expect("the node's own files read back");
        let read: usize = back.iter().map(|b| b.num_rows()).sum();
        assert_eq!(read as u64, rows, "rows written and read back differ");
    }
}
