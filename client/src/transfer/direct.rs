//! Chunk writes that bypass the page cache.
//!
//! A buffered write copies every byte into the page cache and the commit's fsync then writes it
//! out; on a 2-core machine that copy was the largest single cost of a pull (a third to half of
//! the puller's CPU). A verified chunk is instead gathered once into a reused, aligned buffer,
//! hashed there, and written with `O_DIRECT`: the disk reads it from that buffer. Where the file
//! system refuses direct I/O (tmpfs, some network file systems) the buffered write is used.
//!
//! The buffers are shared by the process, not kept per thread: the runtime's blocking threads come
//! and go over a long pull, and a buffer per thread that ever wrote (13 in one 4 GiB pull) left
//! freed megabytes in as many allocator arenas, so the puller's RSS grew with the size pulled.
//! At most as many buffers exist as chunks are verified at once, and [`IDLE_BUFFERS`] stay.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// Alignment of buffer address, file offset and length that direct I/O needs (the page size;
/// every block size Linux file systems use divides it).
pub const ALIGN: usize = 4096;

/// A growable byte buffer whose usable part starts at an [`ALIGN`]-aligned address.
#[derive(Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    /// `len` bytes starting at an aligned address; the contents are whatever was there before.
    pub fn get(&mut self, len: usize) -> &mut [u8] {
        if self.raw.len() < len + ALIGN {
            self.raw = vec![0; len + ALIGN];
            let misalign = self.raw.as_ptr() as usize % ALIGN;
            self.start = if misalign == 0 { 0 } else { ALIGN - misalign };
        }
        &mut self.raw[self.start..self.start + len]
    }
}

/// Idle buffers kept for the next chunks: the most streams a pull runs, with room to spare.
pub const IDLE_BUFFERS: usize = 16;

static IDLE: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

/// Runs `f` with an aligned buffer of `len` bytes: an idle one, or a new one; it is kept for the
/// next chunk afterwards (up to [`IDLE_BUFFERS`]).
pub fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let reused = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut buf = reused.unwrap_or_default();
    let result = f(buf.get(len));
    let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if idle.len() < IDLE_BUFFERS {
        idle.push(buf);
    }
    result
}

/// Opens `path` (already created) for direct writes; `None` where the file system refuses.
pub fn open(path: &Path) -> Option<File> {
    let flags = nix::fcntl::OFlag::O_DIRECT.bits();
    OpenOptions::new().write(true).custom_flags(flags).open(path).ok()
}

/// How many leading bytes of `data`, to be written at `offset`, can go through direct I/O: a
/// multiple of [`ALIGN`], or none when the address or offset is not aligned.
pub fn direct_len(data: &[u8], offset: u64) -> usize {
    let aligned = (data.as_ptr() as usize).is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64);
    if aligned { data.len() / ALIGN * ALIGN } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn buffer_is_aligned_and_reused() {
        let mut buf = AlignedBuf::default();
        for len in [1, ALIGN, 1 << 20, 4 << 20, 100] {
            let slice = buf.get(len);
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr() as usize % ALIGN, 0);
        }
        let before = buf.get(1 << 20).as_ptr();
        assert_eq!(buf.get(1 << 19).as_ptr(), before, "a smaller request reuses the allocation");
    }

    #[test]
    fn buffers_are_shared_across_threads() {
        let first = with_buffer(1 << 20, |b| b.as_ptr() as usize);
        let again =
            std::thread::spawn(|| with_buffer(1 << 20, |b| b.as_ptr() as usize)).join().expect("thread");
        // Another test may hold the idle buffer meanwhile; then a second one exists, never more.
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert!(first == again || idle >= 2, "a new thread reuses the idle buffer");
        assert!(idle <= IDLE_BUFFERS);
        // Nested use (two chunks at once) gets two distinct buffers.
        with_buffer(ALIGN, |a| with_buffer(ALIGN, |b| assert_ne!(a.as_ptr(), b.as_ptr())));
    }

    #[test]
    fn direct_len_is_aligned_prefix_or_nothing() {
        let mut buf = AlignedBuf::default();
        let data = buf.get(3 * ALIGN + 100);
        assert_eq!(direct_len(data, 0), 3 * ALIGN);
        assert_eq!(direct_len(data, ALIGN as u64 * 7), 3 * ALIGN);
        assert_eq!(direct_len(data, 512), 0);
        assert_eq!(direct_len(&data[1..], 0), 0);
        assert_eq!(direct_len(&data[..100], 0), 0);
    }

    #[test]
    fn direct_write_lands_where_asked_or_is_refused_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::File::create(&path).and_then(|f| f.set_len(3 * ALIGN as u64)).expect("create");
        let Some(file) = open(&path) else { return }; // a file system without direct I/O
        let mut buf = AlignedBuf::default();
        let data = buf.get(2 * ALIGN);
        data.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        match file.write_all_at(data, ALIGN as u64) {
            Ok(()) => {
                let back = std::fs::read(&path).expect("read");
                assert_eq!(&back[ALIGN..3 * ALIGN], &data[..]);
                assert!(back[..ALIGN].iter().all(|&b| b == 0));
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL), "{e}"),
        }
    }
}
