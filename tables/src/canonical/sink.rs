//! The file a [`super::CanonicalWriter`] writes into, hashed as it is written: its size, its
//! whole-file BLAKE3 and, when asked, the BLAKE3 of each fixed-size chunk — what a manifest
//! describes a file by. A publish then need not read back a table it has just written (the
//! node's `describe_files` and the store's commit each read every byte of it again before).
//!
//! The hashes are of the bytes handed to the file, in order; `closer` checks that the file
//! holds that many bytes once it is synced. Writes are gathered into [`BLOCK`]-byte blocks
//! before they are hashed and written: the Parquet writer hands over pages and headers of a few
//! bytes to some KiB, and BLAKE3 hashes only whole runs of 1 KiB chunks on all its SIMD lanes
//! (the rest one block at a time, several times slower).

use std::fs::File;
use std::io::Write;

/// What hashing a file as it was written found: the same values as reading it back chunk by
/// chunk would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenHashes {
    /// Bytes written.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub blake3: blake3::Hash,
    /// `Some` when chunk hashes were asked for: the size of the chunks and the BLAKE3 of each,
    /// in order; the last chunk may be short, and an empty file has none.
    pub chunks: Option<(u32, Vec<blake3::Hash>)>,
}

/// Bytes gathered before they are hashed and written.
const BLOCK: usize = 1 << 20;

/// A [`File`] that hashes what is written to it.
pub(super) struct HashingFile {
    file: File,
    /// Written, not yet hashed nor handed to the file (less than [`BLOCK`] bytes).
    pending: Vec<u8>,
    whole: blake3::Hasher,
    size: u64,
    chunks: Option<ChunkHashes>,
}

/// The chunk being hashed and the hashes of the chunks before it.
struct ChunkHashes {
    size: u32,
    current: blake3::Hasher,
    in_current: u64,
    done: Vec<blake3::Hash>,
}

impl HashingFile {
    /// `file`, with the hashes of its chunks of `chunk_size` bytes too when one is given (a size
    /// of 0 is taken as 1).
    pub(super) fn new(file: File, chunk_size: Option<u32>) -> Self {
        let chunks = chunk_size.map(|size| ChunkHashes {
            size: size.max(1),
            current: blake3::Hasher::new(),
            in_current: 0,
            done: Vec::new(),
        });
        Self { file, pending: Vec::with_capacity(BLOCK), whole: blake3::Hasher::new(), size: 0, chunks }
    }

    /// Writes what is pending, then returns the file and the hashes of everything written to it.
    pub(super) fn finish(mut self) -> std::io::Result<(File, WrittenHashes)> {
        self.write_pending()?;
        let chunks = self.chunks.map(|mut c| {
            if c.in_current > 0 {
                c.done.push(c.current.finalize());
            }
            (c.size, c.done)
        });
        let hashes = WrittenHashes { size: self.size, blake3: self.whole.finalize(), chunks };
        Ok((self.file, hashes))
    }

    /// Hashes the pending bytes and writes them.
    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let written = self.file.write_all(&pending);
        if written.is_ok() {
            self.hash(&pending);
        }
        self.pending = pending;
        self.pending.clear();
        written
    }

    fn hash(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
        self.size += bytes.len() as u64;
        let Some(chunks) = self.chunks.as_mut() else { return };
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = u64::from(chunks.size) - chunks.in_current;
            let take = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            chunks.current.update(&rest[..take]);
            chunks.in_current += take as u64;
            rest = &rest[take..];
            if chunks.in_current == u64::from(chunks.size) {
                chunks.done.push(chunks.current.finalize());
                chunks.current.reset();
                chunks.in_current = 0;
            }
        }
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.pending.len() + buf.len() > BLOCK {
            self.write_pending()?;
        }
        if buf.len() >= BLOCK {
            self.file.write_all(buf)?;
            self.hash(buf);
        } else {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes of `data` written in pieces of `piece` bytes, chunked by `chunk`.
    fn written(data: &[u8], piece: usize, chunk: Option<u32>) -> (Vec<u8>, WrittenHashes) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let mut file = HashingFile::new(File::create(&path).expect("create"), chunk);
        for part in data.chunks(piece.max(1)) {
            file.write_all(part).expect("write");
        }
        let (file, hashes) = file.finish().expect("finish");
        drop(file);
        (std::fs::read(&path).expect("read"), hashes)
    }

    /// Whatever the pieces the bytes come in, the hashes are those of the file read back: the
    /// whole file's, and each chunk's with the last one short.
    #[test]
    fn hashes_are_those_of_the_bytes_read_back_whatever_the_writes() {
        // More than two of the blocks writes are gathered into, so pieces of every size cross them.
        let data: Vec<u8> =
            (0..(2 * BLOCK as u32 + 200_003)).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
        let chunk = 64 * 1024;
        let expected: Vec<blake3::Hash> = data.chunks(chunk).map(blake3::hash).collect();
        assert_eq!(expected.len(), 36);
        for piece in [1, 7, 4096, 65_536, 65_537, 200_003, BLOCK - 1, BLOCK, BLOCK + 1, data.len()] {
            let (read, hashes) = written(&data, piece, Some(chunk as u32));
            assert_eq!(read, data, "pieces of {piece}");
            assert_eq!(hashes.size, data.len() as u64);
            assert_eq!(hashes.blake3, blake3::hash(&data));
            assert_eq!(hashes.chunks, Some((chunk as u32, expected.clone())), "pieces of {piece}");
        }
    }

    /// A file of whole chunks ends with no empty chunk; an empty file has no chunks; without a
    /// chunk size only the whole file is hashed.
    #[test]
    fn whole_chunks_empty_files_and_no_chunks() {
        let data = vec![9u8; 3 * 1024];
        let (_, hashes) = written(&data, 1000, Some(1024));
        let one = blake3::hash(&data[..1024]);
        assert_eq!(hashes.chunks, Some((1024, vec![one, one, one])));
        let (_, empty) = written(&[], 1, Some(1024));
        assert_eq!((empty.size, empty.blake3, empty.chunks), (0, blake3::hash(b""), Some((1024, vec![]))));
        let (_, whole) = written(&data, 500, None);
        assert_eq!((whole.size, whole.blake3, whole.chunks), (3 * 1024, blake3::hash(&data), None));
    }
}
