//! Aligned, reused byte buffers for received chunk payloads.
//!
//! Direct I/O (`O_DIRECT`) needs the buffer's address, the file offset and the length aligned to
//! [`ALIGN`]. [`crate::wire::FrameReader::next_incoming`] copies a chunk's payload, piece by piece
//! as the transport delivers it, into a [`Lease`]: the puller (the client's transfer engine)
//! hashes it there and writes it from there without a page-cache copy, and the node reads
//! stored files through an [`AlignedBuf`].
//!
//! The buffers are shared by the process, not kept per thread: the runtime's blocking threads come
//! and go over a long pull, and a buffer per thread that ever wrote (13 in one 4 GiB pull) left
//! freed megabytes in as many allocator arenas, so the puller's RSS grew with the size pulled.
//! At most as many buffers exist as chunks are received at once, and [`IDLE_BUFFERS`] stay.

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
/// Most bytes the idle buffers may hold together: a peer announcing frames of the largest size
/// the protocol allows (8 MiB) does not leave sixteen of them behind.
pub const IDLE_BYTES: usize = 32 << 20;

static IDLE: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

/// An aligned buffer of a fixed length, taken from the process's idle list (or new) and given
/// back to it when dropped, up to [`IDLE_BUFFERS`] and [`IDLE_BYTES`] kept.
pub struct Lease {
    buf: AlignedBuf,
    len: usize,
}

impl Lease {
    /// `len` bytes, aligned; the contents are whatever a previous user left.
    pub fn take(len: usize) -> Self {
        let reused = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buf = reused.unwrap_or_default();
        buf.get(len);
        Self { buf, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf.raw[self.buf.start..self.buf.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.get(self.len)
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = idle.iter().map(|b| b.raw.len()).sum();
        if idle.len() < IDLE_BUFFERS && held + self.buf.raw.len() <= IDLE_BYTES {
            idle.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn leases_are_shared_across_threads() {
        let first = Lease::take(1 << 20).as_slice().as_ptr() as usize;
        let again =
            std::thread::spawn(|| Lease::take(1 << 20).as_slice().as_ptr() as usize).join().expect("thread");
        // Another test may hold the idle buffer meanwhile; then a second one exists, never more.
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert!(first == again || idle >= 2, "a new thread reuses the idle buffer");
        assert!(idle <= IDLE_BUFFERS);
        // Oversized buffers (a peer announcing 8 MiB frames) are not all kept.
        drop((0..8).map(|_| Lease::take(8 << 20)).collect::<Vec<_>>());
        let held: usize =
            IDLE.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|b| b.raw.len()).sum();
        assert!(held <= IDLE_BYTES, "{held} idle bytes");
        // Two held at once (two chunks in flight) are distinct, aligned and of the asked length.
        let (mut a, b) = (Lease::take(ALIGN + 1), Lease::take(ALIGN));
        assert_ne!(a.as_slice().as_ptr(), b.as_slice().as_ptr());
        assert_eq!((a.len(), b.len()), (ALIGN + 1, ALIGN));
        assert_eq!(a.as_slice().as_ptr() as usize % ALIGN, 0);
        a.as_mut_slice().fill(7);
        assert!(a.as_slice().iter().all(|&x| x == 7));
    }
}
