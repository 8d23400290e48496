//! Reused chunk buffers for serving.
//!
//! Every chunk the node serves is read into memory and handed to QUIC, which keeps it until the
//! peer has acknowledged it. Allocating a fresh 1 MiB buffer per chunk made glibc carve the
//! buffers from the arenas of whichever threads read them; what those arenas once held stayed
//! resident, so `ferryd`'s peak RSS grew with the bytes it served. A [`BufferPool`] hands out
//! buffers and takes them back when the last reference (QUIC's) is dropped, keeping up to a fixed
//! number of idle bytes: serving allocates nothing once warm, and what stays resident is bounded.
//!
//! The pool grows to the most chunks a node has had in flight at once (read, or handed to QUIC
//! and not yet acknowledged), and no further: one puller on loopback with four streams kept 9–11
//! out in `ferry-bench memory`, from a 1 GiB pull to two 20 GiB pulls in a row. A moment with
//! one more chunk out than ever before adds one buffer, which stays for reuse: a step of one
//! chunk in the node's RSS. [`BufferPool::with_gauge`] reports the bytes the pool holds, so
//! such a step can be told from a leak.

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
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
    /// Bytes (by capacity) of every buffer the pool made that still exists: in use or idle.
    allocated: Gauge,
}

impl BufferPool {
    /// A pool keeping at most `max_idle_bytes` of idle buffers (by capacity).
    pub fn new(max_idle_bytes: usize) -> Self {
        Self::with_gauge(max_idle_bytes, Gauge::default())
    }

    /// A pool that keeps `allocated` at the bytes of the buffers it made and has not freed, in
    /// use and idle (the gauge starts from its current value).
    pub fn with_gauge(max_idle_bytes: usize, allocated: Gauge) -> Self {
        Self(Arc::new(Inner { free: Mutex::new(Vec::new()), max_idle_bytes, allocated }))
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
            self.0.allocated.inc_by(bytes_i64(buf.capacity()));
        }
        // Resizing within the capacity writes only bytes that were never part of `buf`.
        buf.resize(len, 0);
        PooledBuf { buf, pool: Some(self.0.clone()) }
    }

    /// Bytes of idle buffers held now (by capacity).
    pub fn idle_bytes(&self) -> usize {
        self.0.free.lock().unwrap_or_else(PoisonError::into_inner).iter().map(Vec::capacity).sum()
    }

    /// Bytes of the buffers the pool made and has not freed, in use and idle (by capacity).
    pub fn allocated_bytes(&self) -> usize {
        usize::try_from(self.0.allocated.get()).unwrap_or(0)
    }
}

fn bytes_i64(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl Drop for Inner {
    fn drop(&mut self) {
        let free = self.free.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.allocated.dec_by(bytes_i64(free.iter().map(Vec::capacity).sum()));
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
        } else {
            pool.allocated.dec_by(bytes_i64(buf.capacity()));
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
    fn the_gauge_counts_buffers_in_use_and_idle_until_freed() {
        let gauge = Gauge::default();
        let pool = BufferPool::with_gauge(2 << 20, gauge.clone());
        let held: Vec<Bytes> = (0..3).map(|_| pool.take(1 << 20).freeze()).collect();
        assert_eq!(gauge.get(), 3 << 20, "three buffers in use");
        assert_eq!(pool.allocated_bytes(), 3 << 20);
        drop(held);
        assert_eq!(gauge.get(), 2 << 20, "two stay idle, the third is freed");
        let again: Vec<PooledBuf> = (0..2).map(|_| pool.take(1 << 20)).collect();
        assert_eq!(gauge.get(), 2 << 20, "reuse allocates nothing");
        drop(again);
        drop(pool);
        assert_eq!(gauge.get(), 0, "a dropped pool frees its idle buffers");
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
