//! Reused chunk buffers for serving.
//!
//! Every chunk the node serves is read into memory and handed to QUIC, which keeps it until the
//! peer has acknowledged it. Allocating a fresh 1 MiB buffer per chunk made glibc carve the
//! buffers from the arenas of whichever threads read them; what those arenas once held stayed
//! resident, so `ferryd`'s peak RSS grew with the bytes it served. A [`BufferPool`] hands out
//! buffers and takes them back when the last reference (QUIC's) is dropped, keeping up to a fixed
//! number of idle bytes: serving allocates nothing once warm, and what stays resident is bounded.

use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};

/// Idle bytes a node's pool keeps for reuse: a few connections' worth of chunks in flight.
pub const IDLE_BYTES: usize = 32 << 20;

/// A pool of byte buffers, cheap to clone (all clones share the free list).
#[derive(Debug, Clone)]
pub struct BufferPool(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    free: Mutex<Vec<Vec<u8>>>,
    max_idle_bytes: usize,
}

impl BufferPool {
    /// A pool keeping at most `max_idle_bytes` of idle buffers (by capacity).
    pub fn new(max_idle_bytes: usize) -> Self {
        Self(Arc::new(Inner { free: Mutex::new(Vec::new()), max_idle_bytes }))
    }

    /// A buffer of exactly `len` bytes (contents unspecified): an idle one large enough, or a new one.
    pub fn take(&self, len: usize) -> PooledBuf {
        let reused = {
            let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
            free.iter().rposition(|b| b.capacity() >= len).map(|i| free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_default();
        if buf.capacity() < len {
            // Zeroed memory straight from the allocator: fresh pages are not written twice.
            buf = vec![0; len];
        }
        // Resizing within the capacity writes only bytes that were never part of `buf`.
        buf.resize(len, 0);
        PooledBuf { buf, pool: Some(self.0.clone()) }
    }

    /// Bytes of idle buffers held now (by capacity).
    pub fn idle_bytes(&self) -> usize {
        self.0.free.lock().unwrap_or_else(PoisonError::into_inner).iter().map(Vec::capacity).sum()
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        Self::new(IDLE_BYTES)
    }
}

/// A buffer from a [`BufferPool`]; goes back to it when dropped (or when the [`Bytes`] made by
/// [`PooledBuf::freeze`] and all its clones are).
#[derive(Debug)]
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Option<Arc<Inner>>,
}

impl PooledBuf {
    /// Immutable bytes sharing this buffer; it returns to the pool with the last of them.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let (Some(pool), buf) = (self.pool.take(), std::mem::take(&mut self.buf)) else { return };
        let mut free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        let idle: usize = free.iter().map(Vec::capacity).sum();
        if idle + buf.capacity() <= pool.max_idle_bytes {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let pool = BufferPool::new(4 << 20);
        let mut a = pool.take(1 << 20);
        a.as_mut().fill(7);
        let ptr = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0, "a live clone keeps the buffer out of the pool");
        drop(clone);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        let b = pool.take(1000);
        assert_eq!(b.as_ref().len(), 1000, "exactly the length asked for");
        assert_eq!(b.as_ref().as_ptr(), ptr, "the idle buffer is reused");
        assert_eq!(pool.idle_bytes(), 0);
        drop(b);
        let c = pool.take(1 << 20);
        assert_eq!(c.as_ref().len(), 1 << 20, "a reused buffer grows back within its capacity");
        assert_eq!(c.as_ref().as_ptr(), ptr);
    }

    #[test]
    fn idle_bytes_are_bounded() {
        let pool = BufferPool::new(3 << 20);
        let held: Vec<PooledBuf> = (0..5).map(|_| pool.take(1 << 20)).collect();
        drop(held);
        assert_eq!(pool.idle_bytes(), 3 << 20, "buffers beyond the bound are freed");
    }

    #[test]
    fn a_buffer_too_small_is_not_handed_out() {
        let pool = BufferPool::new(8 << 20);
        drop(pool.take(64 << 10));
        let big = pool.take(4 << 20);
        assert_eq!(big.as_ref().len(), 4 << 20);
        assert_eq!(pool.idle_bytes(), 64 << 10, "the small buffer stays idle");
    }
}
