//! [`IoFaultStore`]: a [`BlobStore`] wrapper that answers chosen operations with an I/O error
//! (EIO by default, any errno on request), as a failing disk or controller would, while every
//! other operation passes through. Where [`super::FaultyStore`] simulates a crash (everything
//! after a step fails), this one simulates a device that fails some reads, writes or syncs and
//! keeps working: a test checks that the node answers with a typed error, publishes or commits
//! nothing partial, and succeeds on the next request.
//!
//! Faults are planned as [`IoFault`]s, each for one kind of operation ([`IoOp`]) on keys
//! containing a given text; it fails the `nth` matching operation (0-based) and the `times - 1`
//! after it. Plans can be added and cleared while a node runs on the store.
//!
//! ```ignore
//! let store = Arc::new(IoFaultStore::new(inner));
//! store.plan(IoFault::eio(IoOp::Read, "/v1/part-00000.parquet").nth(2));
//! ```
//!
//! The injected error is a [`BlobError::Backend`] whose source is an [`InjectedIo`] carrying the
//! `std::io::Error` of the errno, so code that looks for an I/O error kind in an error's chain
//! (out of space, say) sees it as it would see the real one.

use super::{BlobError, BlobResult, BlobStore};
use crate::data::pool::BufferPool;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Linux's errno of an I/O error (`EIO`).
pub const EIO: i32 = 5;
/// Linux's errno of a full device (`ENOSPC`).
pub const ENOSPC: i32 = 28;

/// The kinds of operation a fault can be planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// `get`, `get_range`, `get_range_pooled`.
    Read,
    /// `put`, `put_file`, `move_file`, `put_durable`.
    Write,
    /// `sync`.
    Sync,
}

/// One planned fault: see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFault {
    pub op: IoOp,
    /// A key matches when it contains this text (`""`: every key).
    pub key_contains: String,
    /// The first matching operation that fails, 0-based.
    pub nth: usize,
    /// How many matching operations fail from the `nth` on (`usize::MAX`: all of them).
    pub times: usize,
    /// The errno of the error ([`EIO`] unless changed).
    pub errno: i32,
}

impl IoFault {
    /// EIO on the first `op` on a key containing `key_contains`, once.
    pub fn eio(op: IoOp, key_contains: &str) -> Self {
        Self { op, key_contains: key_contains.to_owned(), nth: 0, times: 1, errno: EIO }
    }

    /// Fails the `nth` matching operation (0-based) instead of the first.
    pub fn nth(self, nth: usize) -> Self {
        Self { nth, ..self }
    }

    /// Fails `times` matching operations in a row.
    pub fn times(self, times: usize) -> Self {
        Self { times, ..self }
    }

    /// Fails every matching operation from the `nth` on.
    pub fn always(self) -> Self {
        self.times(usize::MAX)
    }

    /// Answers with this errno instead of EIO ([`ENOSPC`], …).
    pub fn errno(self, errno: i32) -> Self {
        Self { errno, ..self }
    }
}

/// The source of an injected [`BlobError::Backend`]: the operation and its I/O error.
#[derive(Debug, thiserror::Error)]
#[error("injected {op:?} fault: {source}")]
pub struct InjectedIo {
    pub op: IoOp,
    #[source]
    pub source: std::io::Error,
}

/// A planned fault and the matching operations it has seen.
#[derive(Debug)]
struct Planned {
    fault: IoFault,
    seen: usize,
}

/// Wraps a store and fails the operations its plans name. See the module doc.
#[derive(Debug)]
pub struct IoFaultStore {
    inner: Arc<dyn BlobStore>,
    plans: Mutex<Vec<Planned>>,
    injected: AtomicUsize,
}

impl IoFaultStore {
    /// Passes everything through until a fault is planned.
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self { inner, plans: Mutex::new(Vec::new()), injected: AtomicUsize::new(0) }
    }

    /// Adds a fault; it counts matching operations from now on.
    pub fn plan(&self, fault: IoFault) {
        self.plans.lock().unwrap_or_else(PoisonError::into_inner).push(Planned { fault, seen: 0 });
    }

    /// Drops every planned fault: the device works again.
    pub fn clear(&self) {
        self.plans.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// How many errors were injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped store, to inspect what the faults left behind.
    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// Whether an error was injected by an `IoFaultStore`.
    pub fn is_injected(error: &BlobError) -> bool {
        matches!(error, BlobError::Backend { source, .. } if source.is::<InjectedIo>())
    }

    /// Counts `op` on `key` against every plan; the error of the first plan it falls in.
    fn check(&self, op: IoOp, key: &str) -> BlobResult<()> {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut errno = None;
        for planned in plans.iter_mut().filter(|p| p.fault.op == op && key.contains(&p.fault.key_contains)) {
            let index = planned.seen;
            planned.seen += 1;
            let fault = &planned.fault;
            if errno.is_none() && index >= fault.nth && index - fault.nth < fault.times {
                errno = Some(fault.errno);
            }
        }
        match errno {
            None => Ok(()),
            Some(errno) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                let source = InjectedIo { op, source: std::io::Error::from_raw_os_error(errno) };
                Err(BlobError::Backend { key: key.to_owned(), source: Box::new(source) })
            }
        }
    }

    /// Checks every key of a sync; the first planned one fails it.
    fn check_all(&self, op: IoOp, keys: &[String]) -> BlobResult<()> {
        keys.iter().try_for_each(|key| self.check(op, key))
    }
}

impl BlobStore for IoFaultStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(IoOp::Write, key)?;
            self.inner.put(key, bytes).await
        }
        .boxed()
    }

    fn put_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(IoOp::Write, key)?;
            self.inner.put_file(key, local).await
        }
        .boxed()
    }

    fn move_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(IoOp::Write, key)?;
            self.inner.move_file(key, local).await
        }
        .boxed()
    }

    fn moves_by_rename(&self, local: &Path) -> bool {
        self.inner.moves_by_rename(local)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move {
            self.check(IoOp::Read, key)?;
            self.inner.get(key).await
        }
        .boxed()
    }

    fn get_range<'a>(&'a self, key: &'a str, range: Range<u64>) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move {
            self.check(IoOp::Read, key)?;
            self.inner.get_range(key, range).await
        }
        .boxed()
    }

    fn get_range_pooled<'a>(
        &'a self,
        key: &'a str,
        range: Range<u64>,
        pool: &'a BufferPool,
    ) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move {
            self.check(IoOp::Read, key)?;
            self.inner.get_range_pooled(key, range, pool).await
        }
        .boxed()
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<u64>> {
        self.inner.size(key)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>> {
        self.inner.list(prefix)
    }

    fn list_dirs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>> {
        self.inner.list_dirs(prefix)
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<()>> {
        self.inner.delete(key)
    }

    fn sync<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check_all(IoOp::Sync, keys)?;
            self.inner.sync(keys).await
        }
        .boxed()
    }

    fn put_durable<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(IoOp::Write, key)?;
            self.inner.put_durable(key, bytes).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::blob::ObjectBlobStore;

    fn store() -> IoFaultStore {
        IoFaultStore::new(Arc::new(ObjectBlobStore::memory()))
    }

    fn errno(error: &BlobError) -> Option<i32> {
        match error {
            BlobError::Backend { source, .. } => source.downcast_ref::<InjectedIo>()?.source.raw_os_error(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn blob_io_faults_fail_the_nth_matching_operation_only() {
        let store = store();
        store.put("d/a", Bytes::from_static(b"a")).await.expect("no plan yet");
        store.put("d/b", Bytes::from_static(b"b")).await.expect("no plan yet");
        store.plan(IoFault::eio(IoOp::Read, "/b").nth(1));
        store.get("d/b").await.expect("the 0th read of d/b passes");
        store.get("d/a").await.expect("another key does not count");
        let err = store.get_range("d/b", 0..1).await.expect_err("the 1st read of d/b fails");
        assert!(IoFaultStore::is_injected(&err), "{err}");
        assert_eq!(errno(&err), Some(EIO));
        assert_eq!(store.get("d/b").await.expect("once only"), "b");
        assert_eq!(store.injected(), 1);
    }

    #[tokio::test]
    async fn blob_io_faults_write_and_sync_faults_leave_nothing_and_clear() {
        let store = store();
        store.plan(IoFault::eio(IoOp::Write, "v1/").always().errno(ENOSPC));
        store.plan(IoFault::eio(IoOp::Sync, "").always());
        let err = store.put("v1/x", Bytes::from_static(b"x")).await.expect_err("write fails");
        assert_eq!(errno(&err), Some(ENOSPC));
        let err = store.put_durable("v1/y", Bytes::from_static(b"y")).await.expect_err("again");
        assert!(IoFaultStore::is_injected(&err));
        assert!(store.inner().list("v1").await.expect("list").is_empty(), "nothing was written");
        store.put("v2/x", Bytes::from_static(b"x")).await.expect("other keys pass");
        assert!(store.sync(&["v2/x".to_owned()]).await.is_err(), "sync fails");
        store.clear();
        store.sync(&["v2/x".to_owned()]).await.expect("the device works again");
        store.put("v1/x", Bytes::from_static(b"x")).await.expect("the device works again");
    }

    #[tokio::test]
    async fn blob_conformance_io_fault_store_without_faults() {
        crate::data::blob::conformance::run_all(Arc::new(store())).await;
    }
}
