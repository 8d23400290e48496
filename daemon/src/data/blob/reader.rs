//! A local file read for an upload in parts ([`super::ObjectBlobStore`]'s `upload_file`: a
//! publish's files, the files a replication could not stream, and every chunk-hash file): one
//! [`PART_SIZE`] part at a time, off the async threads, with one `read` per part where it can.
//!
//! Each part's buffer is sized to what is left of the file, not to a whole part: a direct read
//! (`O_DIRECT`) asked for more than the file holds has the kernel zero the rest of the buffer
//! (ext4 maps what lies past the end as a hole), which faults in every page of it. A chunk-hash
//! file of a few KiB read into a 10 MiB buffer so cost 10 MiB of resident memory and of zeroed
//! pages, and an import completes all its streamed files' chunk-hash files at once, on top of
//! its part buffers.

use super::PART_SIZE;
use bytes::Bytes;
use ferry_net::aligned::ALIGN;
use std::path::{Path, PathBuf};

/// A local file read one [`PART_SIZE`] part at a time: around the page cache (`O_DIRECT`) for
/// a file written that way, else through it. Each part is a buffer of its own, owned by the
/// upload from then on.
pub(super) struct PartReader {
    path: PathBuf,
    file: std::fs::File,
    direct: bool,
    done: bool,
    /// Bytes of the file not yet read, by its size when it was opened.
    left: u64,
}

impl PartReader {
    pub(super) fn open(local: &Path, around_cache: bool) -> std::io::Result<Self> {
        let direct = if around_cache { ferry_client::transfer::direct::open_read(local) } else { None };
        let (file, direct) = match direct {
            Some(file) => (file, true),
            None => (std::fs::File::open(local)?, false),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(Self { path: local.to_owned(), file, direct, done: false, left: meta.len() })
    }

    /// The next part: [`PART_SIZE`] bytes, fewer only at the end of the file (empty after it).
    pub(super) async fn next_part(self) -> std::io::Result<(Self, Bytes)> {
        let read = tokio::task::spawn_blocking(move || {
            let mut reader = self;
            let part = reader.read_part();
            part.map(|bytes| (reader, bytes))
        });
        read.await.map_err(std::io::Error::other)?
    }

    /// Reads into a fresh buffer handed over whole to the upload (no copy): a direct read
    /// needs an aligned address, so the part starts at the first aligned byte of the buffer.
    fn read_part(&mut self) -> std::io::Result<Bytes> {
        use std::io::Read;
        if self.done {
            return Ok(Bytes::new());
        }
        let capacity = part_capacity(self.left);
        let mut buf = vec![0u8; capacity + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let part = &mut buf[start..start + capacity];
        let mut filled = 0;
        while filled < part.len() {
            let n = match self.file.read(&mut part[filled..]) {
                Ok(n) => n,
                // Direct reads refused after all: the rest through the page cache.
                Err(e) if self.direct && e.kind() == std::io::ErrorKind::InvalidInput => {
                    self.direct = false;
                    let offset = std::io::Seek::stream_position(&mut self.file)?;
                    self.file = std::fs::File::open(&self.path)?;
                    std::io::Seek::seek(&mut self.file, std::io::SeekFrom::Start(offset))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            filled += n;
            // A direct read ending off an aligned boundary, or none at all: the end.
            if n == 0 || (self.direct && !filled.is_multiple_of(ALIGN)) {
                self.done = true;
                break;
            }
        }
        self.left = self.left.saturating_sub(filled as u64);
        buf.truncate(start + filled);
        Ok(Bytes::from(buf).slice(start..))
    }
}

/// The bytes a part's buffer takes with `left` bytes of the file still to read: a whole
/// [`PART_SIZE`] part, or what is left rounded up to whole [`ALIGN`] blocks (a direct read asks
/// for whole blocks), at least one, so that a file grown since it was opened is still read to
/// its end, in smaller parts.
fn part_capacity(left: u64) -> usize {
    let left = usize::try_from(left).unwrap_or(usize::MAX).clamp(1, PART_SIZE);
    left.next_multiple_of(ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_buffer_is_sized_to_what_is_left_of_the_file() {
        assert_eq!(part_capacity(8192), 8192, "a chunk-hash file of 256 chunks");
        assert_eq!(part_capacity(100), ALIGN);
        assert_eq!(part_capacity(0), ALIGN, "one block, to see the end of the file");
        assert_eq!(part_capacity(PART_SIZE as u64 - 1), PART_SIZE);
        assert_eq!(part_capacity(u64::MAX), PART_SIZE);
    }

    /// A chunk-hash file of 8 KiB takes a buffer of 8 KiB (and one block to align it), not of a
    /// whole part: read directly, a larger one was all zeroed by the kernel, so all resident.
    #[test]
    fn a_small_file_takes_a_buffer_of_its_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hashes");
        std::fs::write(&path, [7u8; 8192]).expect("write");
        for around_cache in [true, false] {
            let mut reader = PartReader::open(&path, around_cache).expect("open");
            let part = reader.read_part().expect("read");
            assert_eq!(part[..], [7u8; 8192][..]);
            let buffer = part.try_into_mut().expect("the part's buffer is its own");
            assert!(buffer.capacity() <= 8192 + ALIGN, "a buffer of {} bytes", buffer.capacity());
        }
    }

    fn read_all(path: &Path, around_cache: bool) -> Vec<Bytes> {
        let mut reader = PartReader::open(path, around_cache).expect("open");
        let mut parts = Vec::new();
        loop {
            let part = reader.read_part().expect("read");
            if part.is_empty() {
                return parts;
            }
            parts.push(part);
        }
    }

    /// Files of every shape come back whole, in whole parts but the last, read directly (where
    /// the file system allows) or through the page cache.
    #[test]
    fn every_file_is_read_whole_in_parts() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (i, len) in [0, 100, 8192, 8000, PART_SIZE, 2 * PART_SIZE + 12_345].into_iter().enumerate() {
            let path = dir.path().join(format!("file-{i}"));
            let data: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
            std::fs::write(&path, &data).expect("write");
            for around_cache in [true, false] {
                let parts = read_all(&path, around_cache);
                let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(whole, data, "{len} bytes, around the cache: {around_cache}");
                let (last, rest) = parts.split_last().map_or((None, &[][..]), |(l, r)| (Some(l), r));
                assert!(rest.iter().all(|p| p.len() == PART_SIZE), "{len} bytes");
                assert!(last.is_none_or(|p| !p.is_empty() && p.len() <= PART_SIZE));
            }
        }
    }

    /// A file that grew after it was opened is still read to its end.
    #[test]
    fn a_file_grown_since_it_was_opened_is_read_to_its_end() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("file");
        std::fs::write(&path, vec![1u8; 5000]).expect("write");
        let mut reader = PartReader::open(&path, false).expect("open");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[2u8; 3000]))
            .expect("grow");
        let mut whole = Vec::new();
        loop {
            let part = reader.read_part().expect("read");
            if part.is_empty() {
                break;
            }
            whole.extend_from_slice(&part);
        }
        assert_eq!(whole.len(), 8000);
        assert_eq!(&whole[5000..], &[2u8; 3000][..]);
    }
}
