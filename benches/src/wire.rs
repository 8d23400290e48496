//! How many bytes ferry needs to bring a consumer from snapshot N to N+1.
//!
//! Measured as the total size of the delta's files (`upserts-*.parquet` and `deletes-*.parquet`
//! as `ferry_tables::delta::diff` writes them): that is what a node serves for a delta version,
//! without the signed manifest and the framing of the chunks (a few hundred bytes per MiB
//! chunk). It is not yet a node-to-node pull counted on the socket: nodes serving delta versions
//! are being built, and this module is where that measurement goes.

use std::path::Path;

use anyhow::Result;

/// What the benchmark's ferry byte count is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FerryBytes {
    /// The delta files' total size.
    DeltaFiles,
}

impl FerryBytes {
    /// The value printed as `ferry_bytes_measured_as=…` on the summary line.
    pub fn key(self) -> &'static str {
        match self {
            Self::DeltaFiles => "delta_files",
        }
    }
}

/// How this build measures ferry's bytes.
pub const MEASURE: FerryBytes = FerryBytes::DeltaFiles;

/// Ferry's bytes for the delta in `delta_dir`, whose files total `delta_bytes`.
pub fn ferry_bytes(_delta_dir: &Path, delta_bytes: u64) -> Result<u64> {
    Ok(delta_bytes)
}

/// One line for the report saying what was measured.
pub fn describe() -> String {
    "ferry bytes = total size of the delta files (upserts + deletes) that diff wrote; not a \
     node-to-node pull counted on the wire (manifest and chunk framing not included)"
        .to_owned()
}
