//! A head table file read by a query: the table of the latest version when that version is
//! stored as a delta only. Opening one hashes the whole file through its open handle against
//! the signed manifest's table BLAKE3 and keeps the hash of each chunk it read on the way;
//! every later read of a chunk is hashed again against that list before the Parquet decoder
//! sees it — the same per-chunk check a stored file gets from its stored chunk hashes, with the
//! list itself vouched for by the whole-file hash.
//!
//! Neighbours: `DataService::open_latest_head` opens the files; [`super::reader::VerifiedFile`]
//! reads them through [`HeadFile::chunk`].

use bytes::Bytes;
use ferry_proto::{Hash32, TableFile};
use parquet::errors::ParquetError;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// One verified head file, open.
#[derive(Debug)]
pub struct HeadFile {
    file: std::fs::File,
    name: String,
    pub size: u64,
    pub blake3: Hash32,
    pub chunk_size: u64,
    /// BLAKE3 of each chunk, taken while the whole file was checked.
    chunks: Vec<[u8; 32]>,
}

impl HeadFile {
    /// Checks `file` against `entry` (blocking: it reads the whole file once).
    pub fn verify(mut file: std::fs::File, entry: &TableFile, chunk_size: u32) -> Result<Self, String> {
        let chunk_size = u64::from(chunk_size.max(1));
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut buffer = vec![0u8; chunk_size as usize];
        let mut size = 0u64;
        loop {
            let n = read_full(&mut file, &mut buffer).map_err(|e| format!("{}: {e}", entry.name))?;
            if n == 0 {
                break;
            }
            whole.update(&buffer[..n]);
            chunks.push(*blake3::hash(&buffer[..n]).as_bytes());
            size += n as u64;
        }
        if size != entry.size || whole.finalize().as_bytes() != &entry.blake3.0 {
            return Err(format!("the head file {} does not match the signed manifest", entry.name));
        }
        let name = entry.name.as_str().to_owned();
        Ok(Self { file, name, size, blake3: entry.blake3, chunk_size, chunks })
    }

    /// Chunk `index`, read from the open file and checked against its hash.
    pub async fn chunk(self: &Arc<Self>, index: u32) -> Result<Bytes, ParquetError> {
        let expected = *self
            .chunks
            .get(index as usize)
            .ok_or_else(|| ParquetError::General(format!("no chunk {index} in {}", self.name)))?;
        let start = u64::from(index) * self.chunk_size;
        let len = self.chunk_size.min(self.size - start) as usize;
        let this = Arc::clone(self);
        let bytes = tokio::task::spawn_blocking(move || {
            let mut bytes = vec![0u8; len];
            this.file.read_exact_at(&mut bytes, start).map(|()| bytes)
        })
        .await
        .map_err(|e| ParquetError::External(Box::new(e)))?
        .map_err(|e| ParquetError::External(Box::new(e)))?;
        if blake3::hash(&bytes).as_bytes() != &expected {
            return Err(ParquetError::General(format!(
                "chunk {index} of the head file {} changed since it was checked; not reading it",
                self.name
            )));
        }
        Ok(Bytes::from(bytes))
    }
}

/// Fills `buffer` unless the file ends first; returns the bytes read.
fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::RelPath;
    use std::io::Write;

    #[tokio::test]
    async fn chunks_are_checked_at_open_and_again_at_each_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("part-00000.parquet");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let entry = TableFile {
            name: RelPath::parse("part-00000.parquet").expect("name"),
            size: bytes.len() as u64,
            rows: 1,
            blake3: Hash32(*blake3::hash(&bytes).as_bytes()),
            rows_blake3: None,
        };
        let head = Arc::new(HeadFile::verify(std::fs::File::open(&path).unwrap(), &entry, 4096).unwrap());
        assert_eq!(head.chunk(2).await.unwrap(), &bytes[8192..]);
        // Damaged after the check, in place: the read of that chunk is refused.
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"x", 5000).unwrap();
        file.flush().unwrap();
        assert!(head.chunk(1).await.is_err());
        assert!(head.chunk(0).await.is_ok());
        // Damaged before the check: not opened.
        assert!(HeadFile::verify(std::fs::File::open(&path).unwrap(), &entry, 4096).is_err());
    }
}
