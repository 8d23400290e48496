//! Describing files for a manifest: sizes, page hashes of the chunk hashes, whole-file BLAKE3.

use ferry_proto::{FileEntry, FileRole, Hash32, PageHasher, RelPath};
use std::io::Read;
use std::path::Path;

/// Reads `path` once and describes it as manifest file `name` with `rows` rows (role
/// `Snapshot`; callers set another role where it applies).
pub fn describe_file(path: &Path, name: RelPath, rows: u64, chunk_size: u32) -> std::io::Result<FileEntry> {
    let hashes = hash_chunks(path, chunk_size, |_| Ok(()))?;
    Ok(FileEntry {
        role: FileRole::Snapshot,
        name,
        size: hashes.size,
        rows,
        blake3: hashes.blake3,
        chunk_pages: hashes.chunk_pages,
    })
}

/// What reading a file chunk by chunk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    pub size: u64,
    pub blake3: Hash32,
    pub chunk_pages: Vec<Hash32>,
}

/// Reads `path` once in `chunk_size` pieces: its size, whole-file BLAKE3 and page hashes. Each
/// chunk's hash goes to `each_chunk` as it is made, in order.
pub fn hash_chunks(
    path: &Path,
    chunk_size: u32,
    mut each_chunk: impl FnMut(&Hash32) -> std::io::Result<()>,
) -> std::io::Result<FileHashes> {
    let mut file = std::fs::File::open(path)?;
    let mut whole = blake3::Hasher::new();
    let mut pages = PageHasher::default();
    let mut buf = vec![0u8; chunk_size as usize];
    let mut size = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        let chunk = Hash32(*blake3::hash(&buf[..n]).as_bytes());
        each_chunk(&chunk)?;
        pages.push(&chunk);
        size += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(FileHashes { size, blake3: Hash32(*whole.finalize().as_bytes()), chunk_pages: pages.finish() })
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_and_last_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(150 * 1024)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let entry = describe_file(&path, RelPath::parse("f").unwrap(), 3, 64 * 1024).unwrap();
        assert_eq!(entry.size, data.len() as u64);
        // Three chunks, the last short: one page holding their three hashes.
        let hashes: Vec<u8> = data.chunks(64 * 1024).flat_map(|c| *blake3::hash(c).as_bytes()).collect();
        assert_eq!(hashes.len(), 3 * 32);
        assert_eq!(entry.chunk_pages, vec![Hash32(*blake3::hash(&hashes).as_bytes())]);
        assert_eq!(entry.blake3.0, *blake3::hash(&data).as_bytes());
    }
}
