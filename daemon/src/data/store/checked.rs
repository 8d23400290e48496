//! Checking a local file against its manifest entry before the store takes it: by reading it
//! ([`write_chunk_hashes`]) or by the chunk hashes taken as it was written
//! ([`write_known_hashes`]); both write the chunk-hash file stored beside it.

use crate::data::version::{Reading, hash_chunks};
use ferry_proto::{FileEntry, Hash32, PageHasher};
use std::path::Path;

/// Why a local file could not be committed.
pub(super) enum Checked {
    Io(std::io::Error),
    Differs(String),
}

/// Reads `file` once, writing the BLAKE3 of each `chunk_size` piece to `out`, and checks the
/// size, the page hashes and the whole-file hash against `entry`.
pub(super) fn write_chunk_hashes(
    file: &Path,
    out: &Path,
    chunk_size: u32,
    entry: &FileEntry,
    reading: Reading,
) -> Result<(), Checked> {
    use std::io::Write;
    let mut output = std::io::BufWriter::new(std::fs::File::create(out).map_err(Checked::Io)?);
    let found =
        hash_chunks(file, chunk_size, reading, |chunk| output.write_all(&chunk.0)).map_err(Checked::Io)?;
    output.flush().map_err(Checked::Io)?;
    if found.size != entry.size {
        return Err(Checked::Differs(format!("{} bytes, the manifest says {}", found.size, entry.size)));
    }
    if found.chunk_pages != entry.chunk_pages {
        return Err(Checked::Differs("its chunk hashes differ".into()));
    }
    if found.blake3 != entry.blake3 {
        return Err(Checked::Differs("its BLAKE3 differs".into()));
    }
    Ok(())
}

/// What [`write_known_hashes`] says of hashes the manifest refuses: the file is then read.
pub(super) const UNTRUSTED: &str = "the known chunk hashes do not match the manifest";

/// Checks `file`'s size and `hashes` (one per chunk, taken as it was written: by a pull, which
/// hashed each chunk in memory before writing it, or by a publish's writer) against `entry`'s
/// page hashes, and writes them to `out`, without reading the file. Hashes the manifest refuses are `Differs(UNTRUSTED)`.
pub(super) fn write_known_hashes(
    file: &Path,
    out: &Path,
    chunk_size: u32,
    entry: &FileEntry,
    hashes: &[Hash32],
) -> Result<(), Checked> {
    let meta = std::fs::symlink_metadata(file).map_err(Checked::Io)?;
    if !meta.is_file() {
        return Err(Checked::Io(std::io::Error::other("not a regular file")));
    }
    if meta.len() != entry.size {
        return Err(Checked::Differs(format!("{} bytes, the manifest says {}", meta.len(), entry.size)));
    }
    let chunks = entry.size.div_ceil(u64::from(chunk_size.max(1)));
    let mut pages = PageHasher::default();
    hashes.iter().for_each(|h| pages.push(h));
    if hashes.len() as u64 != chunks || pages.finish() != entry.chunk_pages {
        return Err(Checked::Differs(UNTRUSTED.into()));
    }
    let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
    std::fs::write(out, bytes).map_err(Checked::Io)
}
