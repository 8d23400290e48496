//! Re-hashing stored objects against a version's signed manifest: a part file chunk by chunk
//! (its size, page hashes and whole-file BLAKE3), its chunk-hash file page by page. Reads go
//! through the [`BlobStore`] one chunk at a time (memory: one chunk, whatever the file's size)
//! and are paced by [`Pace`]. The chunk hashes of a part file found good are written to a local
//! scratch file on the way, so [`super::repair`] can put back a damaged chunk-hash file without
//! reading the part file again.

use crate::data::blob::{BlobError, BlobStore};
use ferry_proto::{CHUNK_HASH_LEN, ChunkPage, FileEntry, Hash32, Manifest, PageHasher};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What is wrong with a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// No object where the version needs one.
    Missing,
    /// The object has another size than the manifest says (truncated, or grown).
    Size { found: u64, expected: u64 },
    /// Its bytes do not hash as the manifest says.
    Content { detail: String },
    /// The store could not read it (an I/O error): nothing is moved; the next run checks it again.
    Unreadable { error: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::Size { found, expected } => write!(f, "{found} bytes, the manifest says {expected}"),
            Self::Content { detail } => write!(f, "{detail}"),
            Self::Unreadable { error } => write!(f, "unreadable: {error}"),
        }
    }
}

/// The scrub was stopped (the node drains) before the object was fully read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Keeps reading at or under a number of bytes per second, averaged from the start of a run.
#[derive(Debug)]
pub struct Pace {
    /// Becomes `true` when the node drains: a check in progress stops.
    stop: watch::Receiver<bool>,
    rate: u64,
    started: Instant,
    bytes: u64,
}

impl Pace {
    pub fn new(rate: u64, stop: watch::Receiver<bool>) -> Self {
        Self { stop, rate: rate.max(1), started: Instant::now(), bytes: 0 }
    }

    /// Counts `n` bytes read and sleeps until reading them was due.
    pub async fn take(&mut self, n: u64) {
        self.bytes = self.bytes.saturating_add(n);
        let due = self.started + Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        tokio::time::sleep_until(due).await;
    }
}

/// What one check read, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub bytes: u64,
}

/// The chunks of a part file, checked. `Ok(None)`: the file matches its manifest entry, and its
/// chunk hashes are in `hashes_out`.
pub async fn check_part(
    blobs: &dyn BlobStore,
    key: &str,
    m: &Manifest,
    entry: &FileEntry,
    hashes_out: &Path,
    pace: &mut Pace,
    read: &mut Read,
) -> Result<Option<Problem>, Stopped> {
    if let Some(problem) = check_size(blobs, key, entry.size).await {
        return Ok(Some(problem));
    }
    let mut out = match std::fs::File::create(hashes_out) {
        Ok(file) => std::io::BufWriter::new(file),
        Err(e) => return Ok(Some(local_error(hashes_out, &e))),
    };
    let mut whole = blake3::Hasher::new();
    let mut pages = PageHasher::default();
    for index in 0..m.chunk_count(entry.size) {
        if *pace.stop.borrow() {
            return Err(Stopped);
        }
        // `index` < chunk_count, which a validated manifest keeps within u32.
        let Some((offset, len)) = u32::try_from(index).ok().and_then(|i| m.chunk_span(entry, i)) else {
            return Ok(Some(Problem::Content { detail: "the manifest names a chunk past u32".into() }));
        };
        let bytes = match blobs.get_range(key, offset..offset + u64::from(len)).await {
            Ok(bytes) => bytes,
            Err(e) => return Ok(Some(read_error(e))),
        };
        read.bytes += bytes.len() as u64;
        pace.take(bytes.len() as u64).await;
        let (chunk, bytes) = tokio::task::spawn_blocking(move || {
            let chunk = Hash32(*blake3::hash(&bytes).as_bytes());
            (chunk, bytes)
        })
        .await
        .map_err(|_| Stopped)?;
        whole.update(&bytes);
        pages.push(&chunk);
        if let Err(e) = out.write_all(&chunk.0) {
            return Ok(Some(local_error(hashes_out, &e)));
        }
    }
    if let Err(e) = out.flush() {
        return Ok(Some(local_error(hashes_out, &e)));
    }
    if pages.finish() != entry.chunk_pages {
        return Ok(Some(Problem::Content { detail: "its chunks do not hash as the manifest says".into() }));
    }
    if Hash32(*whole.finalize().as_bytes()) != entry.blake3 {
        return Ok(Some(Problem::Content { detail: "its BLAKE3 differs from the manifest's".into() }));
    }
    Ok(None)
}

/// The chunk-hash file of a part file, checked page by page against the manifest's page hashes.
pub async fn check_hashes(
    blobs: &dyn BlobStore,
    key: &str,
    m: &Manifest,
    entry: &FileEntry,
    pace: &mut Pace,
    read: &mut Read,
) -> Option<Problem> {
    let expected = m.chunk_count(entry.size) * CHUNK_HASH_LEN as u64;
    if let Some(problem) = check_size(blobs, key, expected).await {
        return Some(problem);
    }
    for page in 0..m.page_count(entry.size) {
        let Some((first, count)) = u32::try_from(page).ok().and_then(|p| m.page_span(entry, p)) else {
            return Some(Problem::Content { detail: "the manifest names a page past u32".into() });
        };
        let start = u64::from(first) * CHUNK_HASH_LEN as u64;
        let end = start + u64::from(count) * CHUNK_HASH_LEN as u64;
        let hashes = match blobs.get_range(key, start..end).await {
            Ok(bytes) => bytes,
            Err(e) => return Some(read_error(e)),
        };
        read.bytes += hashes.len() as u64;
        pace.take(hashes.len() as u64).await;
        // `page` fits in u32: checked above.
        let page = page as u32;
        if let Err(e) = (ChunkPage { page, hashes: &hashes }).verify(m, entry) {
            return Some(Problem::Content { detail: e.to_string() });
        }
    }
    None
}

/// `None` when the object is there with `expected` bytes.
async fn check_size(blobs: &dyn BlobStore, key: &str, expected: u64) -> Option<Problem> {
    match blobs.size(key).await {
        Ok(found) if found == expected => None,
        Ok(found) => Some(Problem::Size { found, expected }),
        Err(e) => Some(read_error(e)),
    }
}

fn read_error(e: BlobError) -> Problem {
    match e {
        BlobError::NotFound { .. } => Problem::Missing,
        other => Problem::Unreadable { error: other.to_string() },
    }
}

fn local_error(path: &Path, e: &std::io::Error) -> Problem {
    Problem::Unreadable { error: format!("scratch file {}: {e}", path.display()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::blob::ObjectBlobStore;
    use crate::data::version::{Reading, hash_chunks};
    use bytes::Bytes;
    use ferry_proto::RelPath;

    const CHUNK: u32 = 64 * 1024;

    /// A manifest of one file of `data`, in chunks of 64 KiB, and the file's chunk hashes.
    fn manifest_of(data: &[u8]) -> (Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data).unwrap();
        let mut hashes = Vec::new();
        let found = hash_chunks(&path, CHUNK, Reading::Cached, |h| {
            hashes.extend_from_slice(&h.0);
            Ok(())
        })
        .unwrap();
        let entry = FileEntry {
            role: ferry_proto::FileRole::Snapshot,
            name: RelPath::parse("part-00000.parquet").unwrap(),
            size: found.size,
            rows: 1,
            blake3: found.blake3,
            chunk_pages: found.chunk_pages,
        };
        let m = Manifest {
            format: ferry_proto::manifest::MANIFEST_FORMAT,
            dataset: ferry_proto::DatasetId::new("d").unwrap(),
            version: ferry_proto::VersionNo::FIRST,
            kind: ferry_proto::VersionKind::Snapshot,
            parent: None,
            publisher: ferry_proto::DeptId::new("interior").unwrap(),
            created_unix_ms: 0,
            schema_fingerprint: "ab".repeat(32),
            definition_version: 1,
            share_type: ferry_proto::ShareType::Unconditional,
            catalog_version: None,
            key_columns: vec!["vin".into()],
            layout: ferry_proto::manifest::TableLayout::default(),
            row_count: 1,
            chunk_size: CHUNK,
            table: Vec::new(),
            files: vec![entry],
            delta: None,
            derived_from: None,
            writer: None,
        };
        (m, hashes)
    }

    async fn store_with(data: &[u8], hashes: &[u8]) -> ObjectBlobStore {
        let blobs = ObjectBlobStore::memory();
        blobs.put("v/part", Bytes::copy_from_slice(data)).await.unwrap();
        blobs.put("v/hashes", Bytes::copy_from_slice(hashes)).await.unwrap();
        blobs
    }

    fn unpaced() -> Pace {
        Pace::new(u64::MAX, watch::channel(false).1)
    }

    fn data() -> Vec<u8> {
        (0..(600 * 1024 + 17)).map(|i| (i % 251) as u8).collect()
    }

    async fn part(blobs: &ObjectBlobStore, m: &Manifest) -> (Option<Problem>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hashes");
        let mut pace = unpaced();
        let mut read = Read::default();
        let found = check_part(blobs, "v/part", m, &m.files[0], &out, &mut pace, &mut read).await.unwrap();
        (found, std::fs::read(&out).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_good_file_passes_and_yields_its_chunk_hashes() {
        let data = data();
        let (m, hashes) = manifest_of(&data);
        let blobs = store_with(&data, &hashes).await;
        assert_eq!(part(&blobs, &m).await, (None, hashes.clone()));
        let mut read = Read::default();
        let found = check_hashes(&blobs, "v/hashes", &m, &m.files[0], &mut unpaced(), &mut read).await;
        assert_eq!(found, None);
        assert_eq!(read.bytes, hashes.len() as u64);
    }

    #[tokio::test]
    async fn a_flipped_bit_a_short_file_and_a_missing_one_are_found() {
        let data = data();
        let (m, hashes) = manifest_of(&data);
        let mut flipped = data.clone();
        flipped[300 * 1024] ^= 0x01;
        let blobs = store_with(&flipped, &hashes).await;
        assert!(matches!(part(&blobs, &m).await.0, Some(Problem::Content { .. })));
        let blobs = store_with(&data[..data.len() - 1], &hashes).await;
        let expected = data.len() as u64;
        assert_eq!(part(&blobs, &m).await.0, Some(Problem::Size { found: expected - 1, expected }));
        blobs.delete("v/part").await.unwrap();
        assert_eq!(part(&blobs, &m).await.0, Some(Problem::Missing));
    }

    #[tokio::test]
    async fn a_truncated_or_altered_chunk_hash_file_is_found() {
        let data = data();
        let (m, hashes) = manifest_of(&data);
        let check = |blobs: ObjectBlobStore, m: Manifest| async move {
            let mut read = Read::default();
            check_hashes(&blobs, "v/hashes", &m, &m.files[0], &mut unpaced(), &mut read).await
        };
        let truncated = store_with(&data, &hashes[..hashes.len() - 5]).await;
        let expected = hashes.len() as u64;
        assert_eq!(check(truncated, m.clone()).await, Some(Problem::Size { found: expected - 5, expected }));
        let mut altered = hashes.clone();
        altered[40] ^= 0x80;
        let altered = store_with(&data, &altered).await;
        assert!(matches!(check(altered, m.clone()).await, Some(Problem::Content { .. })));
    }

    #[tokio::test]
    async fn pace_keeps_to_the_rate() {
        let started = Instant::now();
        let mut pace = Pace::new(4 << 20, watch::channel(false).1);
        for _ in 0..8 {
            pace.take(256 * 1024).await;
        }
        // 2 MiB at 4 MiB/s: half a second, not less.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(495) && took < Duration::from_secs(3), "{took:?}");
    }
}
