//! [`FaultyStore`]: a [`BlobStore`] wrapper that simulates a crash at a chosen step, so a test can
//! check that every interrupted sequence of writes leaves the store in a state the node recovers
//! from. Reads always pass through; the N-th mutating operation (put, put_file, move_file,
//! put_durable, delete) and every later one fail with [`InjectedFault`], as if the process had
//! died there. A [`BlobStore::sync`] changes nothing a reader sees, so it is not counted; it
//! fails once the crash has happened.
//!
//! ```ignore
//! let total = { let s = FaultyStore::counting(inner()); run(&s).await; s.mutations() };
//! for step in 0..total {
//!     let s = FaultyStore::failing_at(inner(), step);
//!     assert!(run(&s).await.is_err());
//!     check_recovery(s.inner()).await;
//! }
//! ```

use super::{BlobError, BlobResult, BlobStore};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The error a [`FaultyStore`] returns, as the source of a [`BlobError::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("injected fault: crash at mutating operation {step}")]
pub struct InjectedFault {
    /// The 0-based mutating operation that failed.
    pub step: usize,
}

/// Wraps a store and fails its mutating operations from a chosen step on.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn BlobStore>,
    fail_from: Option<usize>,
    mutations: AtomicUsize,
}

impl FaultyStore {
    /// Never fails; only counts mutating operations.
    pub fn counting(inner: Arc<dyn BlobStore>) -> Self {
        Self { inner, fail_from: None, mutations: AtomicUsize::new(0) }
    }

    /// Fails the `step`-th mutating operation (0-based) and every later one.
    pub fn failing_at(inner: Arc<dyn BlobStore>, step: usize) -> Self {
        Self { inner, fail_from: Some(step), mutations: AtomicUsize::new(0) }
    }

    /// How many mutating operations were attempted, the failed ones included.
    pub fn mutations(&self) -> usize {
        self.mutations.load(Ordering::SeqCst)
    }

    /// The wrapped store, to inspect what the "crash" left behind.
    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// Whether an error was injected by a `FaultyStore`.
    pub fn is_injected(error: &BlobError) -> bool {
        matches!(error, BlobError::Backend { source, .. } if source.is::<InjectedFault>())
    }

    /// Counts one mutating operation and decides whether it fails.
    fn check(&self, key: &str) -> BlobResult<()> {
        let step = self.mutations.fetch_add(1, Ordering::SeqCst);
        match self.fail_from {
            Some(from) if step >= from => {
                Err(BlobError::Backend { key: key.to_owned(), source: Box::new(InjectedFault { step }) })
            }
            _ => Ok(()),
        }
    }

    /// Fails, without counting, once a mutating operation has failed.
    fn check_crashed(&self, key: &str) -> BlobResult<()> {
        match self.fail_from {
            Some(step) if self.mutations() > step => {
                Err(BlobError::Backend { key: key.to_owned(), source: Box::new(InjectedFault { step }) })
            }
            _ => Ok(()),
        }
    }
}

impl BlobStore for FaultyStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(key)?;
            self.inner.put(key, bytes).await
        }
        .boxed()
    }

    fn put_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(key)?;
            self.inner.put_file(key, local).await
        }
        .boxed()
    }

    fn move_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(key)?;
            self.inner.move_file(key, local).await
        }
        .boxed()
    }

    fn moves_by_rename(&self, local: &Path) -> bool {
        self.inner.moves_by_rename(local)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Bytes>> {
        self.inner.get(key)
    }

    fn get_range<'a>(&'a self, key: &'a str, range: Range<u64>) -> BoxFuture<'a, BlobResult<Bytes>> {
        self.inner.get_range(key, range)
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
        async move {
            self.check(key)?;
            self.inner.delete(key).await
        }
        .boxed()
    }

    fn sync<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check_crashed(keys.first().map_or("", String::as_str))?;
            self.inner.sync(keys).await
        }
        .boxed()
    }

    fn put_durable<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.check(key)?;
            self.inner.put_durable(key, bytes).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::blob::ObjectBlobStore;

    #[tokio::test]
    async fn blob_faulty_fails_from_the_chosen_step_on() {
        let inner: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
        let store = FaultyStore::failing_at(inner.clone(), 1);
        store.put("a", Bytes::from_static(b"1")).await.expect("step 0 passes");
        let err = store.put("b", Bytes::from_static(b"2")).await.expect_err("step 1 fails");
        assert!(FaultyStore::is_injected(&err), "{err}");
        let err = store.delete("a").await.expect_err("later steps fail too");
        assert!(FaultyStore::is_injected(&err), "{err}");
        assert_eq!(store.mutations(), 3);
        assert_eq!(store.get("a").await.expect("reads pass through"), "1");
        assert!(matches!(inner.get("b").await, Err(BlobError::NotFound { .. })));
    }

    /// The loop a crash test runs: count the steps of a sequence, then crash at each in turn.
    #[tokio::test]
    async fn blob_faulty_crash_at_every_step() {
        async fn three_writes(store: &dyn BlobStore) -> BlobResult<()> {
            store.put("x/1", Bytes::from_static(b"one")).await?;
            store.put("x/2", Bytes::from_static(b"two")).await?;
            store.delete("x/1").await
        }
        let counting = FaultyStore::counting(Arc::new(ObjectBlobStore::memory()));
        three_writes(&counting).await.expect("no fault");
        let total = counting.mutations();
        assert_eq!(total, 3);
        for step in 0..total {
            let store = FaultyStore::failing_at(Arc::new(ObjectBlobStore::memory()), step);
            let err = three_writes(&store).await.expect_err("crashes");
            assert!(FaultyStore::is_injected(&err));
            assert_eq!(store.inner().list("x").await.expect("list").len(), step.min(2));
        }
    }
}
