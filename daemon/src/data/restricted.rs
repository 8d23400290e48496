//! Where restricted versions live: one [`Store`] per restriction, over the node's own blob
//! store under the key prefix `derived/<restriction-id>/`, so a restricted version of
//! `dataset` at `N` is `derived/<restriction-id>/datasets/<dataset>/vN/…` with its own
//! `manifest.signed` and chunk hashes, committed, verified at start-up, leased and served exactly
//! like a published version. The node's main store lists only `datasets/`, so it never sees
//! them.
//!
//! Neighbours: `crate::data::service::restricted` builds the versions (one build per version and
//! restriction at a time, [`RestrictedViews::flight`]) and serves them; garbage collection prunes
//! a restricted version once its source version is gone ([`RestrictedViews::prune`]).

use crate::data::blob::{BlobError, BlobStore};
use crate::data::pool::BufferPool;
use crate::data::store::{MANIFEST_NAME, Store, StoreError, Unindexed, version_prefix};
use bytes::Bytes;
use ferry_net::tls::Credentials;
use ferry_proto::policy::RestrictionId;
use ferry_proto::{DatasetId, VersionNo};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The key prefix of every restricted version.
pub const DERIVED_PREFIX: &str = "derived";

/// A [`BlobStore`] seen under a key prefix of another.
#[derive(Debug)]
pub struct Prefixed {
    inner: Arc<dyn BlobStore>,
    /// Ends with `/`.
    prefix: String,
}

impl Prefixed {
    pub fn new(inner: Arc<dyn BlobStore>, prefix: &str) -> Self {
        Self { inner, prefix: format!("{}/", prefix.trim_end_matches('/')) }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, keys: Vec<String>) -> Vec<String> {
        keys.into_iter().filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)).collect()
    }

    fn dir(&self, prefix: &str) -> String {
        if prefix.is_empty() { self.prefix.trim_end_matches('/').to_owned() } else { self.key(prefix) }
    }
}

type BlobResult<T> = Result<T, BlobError>;

impl BlobStore for Prefixed {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move { self.inner.put(&self.key(key), bytes).await }.boxed()
    }

    fn put_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move { self.inner.put_file(&self.key(key), local).await }.boxed()
    }

    fn move_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move { self.inner.move_file(&self.key(key), local).await }.boxed()
    }

    fn moves_by_rename(&self, local: &Path) -> bool {
        self.inner.moves_by_rename(local)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move { self.inner.get(&self.key(key)).await }.boxed()
    }

    fn get_range<'a>(&'a self, key: &'a str, range: Range<u64>) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move { self.inner.get_range(&self.key(key), range).await }.boxed()
    }

    fn get_range_pooled<'a>(
        &'a self,
        key: &'a str,
        range: Range<u64>,
        pool: &'a BufferPool,
    ) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move { self.inner.get_range_pooled(&self.key(key), range, pool).await }.boxed()
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<u64>> {
        async move { self.inner.size(&self.key(key)).await }.boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>> {
        async move { Ok(self.strip(self.inner.list(&self.dir(prefix)).await?)) }.boxed()
    }

    fn list_dirs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>> {
        async move { Ok(self.strip(self.inner.list_dirs(&self.dir(prefix)).await?)) }.boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<()>> {
        async move { self.inner.delete(&self.key(key)).await }.boxed()
    }

    fn sync<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
            self.inner.sync(&keys).await
        }
        .boxed()
    }

    fn put_durable<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move { self.inner.put_durable(&self.key(key), bytes).await }.boxed()
    }
}

/// One build in flight per (dataset, version, restriction).
type FlightKey = (DatasetId, VersionNo, RestrictionId);

/// The restricted stores of a node, opened on first use (see the module doc).
#[derive(Debug)]
pub struct RestrictedViews {
    blobs: Arc<dyn BlobStore>,
    creds: Credentials,
    stores: tokio::sync::Mutex<HashMap<RestrictionId, Arc<Store>>>,
    flights: Mutex<HashMap<FlightKey, Arc<tokio::sync::Mutex<()>>>>,
    /// At the ministry's hub: the peer each relayed dataset is followed from (the provider's
    /// node), where its restricted versions are fetched.
    sources: Mutex<HashMap<DatasetId, String>>,
}

impl RestrictedViews {
    pub fn new(blobs: Arc<dyn BlobStore>, creds: Credentials) -> Self {
        Self {
            blobs,
            creds,
            stores: tokio::sync::Mutex::default(),
            flights: Mutex::default(),
            sources: Mutex::default(),
        }
    }

    /// Records that `dataset` is followed from the peer `peer` (see [`Self::source`]).
    pub fn set_source(&self, dataset: &DatasetId, peer: &str) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.insert(dataset.clone(), peer.to_owned());
    }

    /// The peer `dataset` is followed from, if the node follows it.
    pub fn source(&self, dataset: &DatasetId) -> Option<String> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).get(dataset).cloned()
    }

    /// The store of restriction `id`, opened (and its versions verified) on first use.
    pub async fn store(&self, id: &RestrictionId) -> Result<Arc<Store>, StoreError> {
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(id) {
            return Ok(store.clone());
        }
        let prefix = format!("{DERIVED_PREFIX}/{id}");
        let blobs: Arc<dyn BlobStore> = Arc::new(Prefixed::new(self.blobs.clone(), &prefix));
        let store = Arc::new(Store::open(blobs, &self.creds).await?);
        stores.insert(id.clone(), store.clone());
        Ok(store)
    }

    /// The lock one build of `dataset` `version` under restriction `id` holds: a second request
    /// for the same waits for the first build and then finds it done.
    pub fn flight(
        &self,
        dataset: &DatasetId,
        version: VersionNo,
        id: &RestrictionId,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.retain(|_, lock| Arc::strong_count(lock) > 1);
        flights.entry((dataset.clone(), version, id.clone())).or_default().clone()
    }

    /// Every restricted store under the node's blobs (opening those not opened yet).
    async fn all(&self) -> Result<Vec<Arc<Store>>, StoreError> {
        let mut found = Vec::new();
        for dir in self.blobs.list_dirs(DERIVED_PREFIX).await? {
            let name = dir.rsplit('/').next().unwrap_or_default();
            if let Some(id) = RestrictionId::parse(name) {
                found.push(self.store(&id).await?);
            }
        }
        Ok(found)
    }

    /// Removes every restricted version whose source version `main` no longer holds (a
    /// restricted version is kept exactly as long as its source). Versions a reader leases
    /// are left for a later run. Returns how many were removed.
    pub async fn prune(&self, main: &Store) -> Result<u64, StoreError> {
        let mut removed = 0;
        for store in self.all().await? {
            for summary in store.list() {
                for version in store.versions(&summary.id)? {
                    let (dataset, number) = (&version.manifest.dataset, version.manifest.version);
                    if main.version(dataset, Some(number)).is_ok() {
                        continue;
                    }
                    removed += u64::from(remove_version(&store, dataset, number).await?);
                }
            }
        }
        Ok(removed)
    }
}

/// Removes one version as garbage collection does: out of the index, then its manifest, then
/// its files. `false` when a reader leases it.
async fn remove_version(store: &Store, dataset: &DatasetId, version: VersionNo) -> Result<bool, StoreError> {
    let _layout = store.lock_layout().await;
    match store.unindex_unless_leased(dataset, version)? {
        Unindexed::Leased => return Ok(false),
        Unindexed::Absent | Unindexed::Removed(_) => {}
    }
    let prefix = version_prefix(dataset, version);
    store.blobs().delete(&format!("{prefix}/{MANIFEST_NAME}")).await?;
    for key in store.blobs().list(&prefix).await? {
        store.blobs().delete(&key).await?;
    }
    Ok(true)
}
