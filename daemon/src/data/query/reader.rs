//! Reading a stored Parquet file for a query: an [`AsyncFileReader`] over the node's store that
//! fetches whole chunks and checks each against the chunk hashes of the signed manifest before
//! handing any byte of it to the Parquet decoder (the rule for every file a node parses), with
//! a node-wide cache of verified chunks and parsed footers (page index included), so repeated
//! key lookups read and hash one or two chunks.
//!
//! Neighbours: [`super::QueryEngine`] opens one [`VerifiedFile`] per table file it reads; the
//! chunk and hash reads are [`Store::read_chunk`] and [`Store::read_chunk_hashes`].

use super::head::HeadFile;
use crate::data::store::{Store, StoredVersion};
use bytes::{Bytes, BytesMut};
use ferry_proto::{CHUNK_HASH_LEN, CHUNKS_PER_PAGE, Hash32};
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a cache entry holds: a verified chunk, a verified page of chunk hashes, or a footer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A file's chunk by the file's BLAKE3, its chunk size and the chunk's index.
    Chunk(Hash32, u64, u32),
    Hashes(Hash32, u32),
}

/// Verified chunks and chunk-hash pages (by the file's BLAKE3, so the same file in two versions
/// is one entry) and parsed footers, within a byte budget; the least recently used go first.
#[derive(Debug)]
pub struct ChunkCache {
    budget: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<Key, (Bytes, u64)>,
    footers: HashMap<Hash32, (Arc<ParquetMetaData>, u64)>,
    bytes: u64,
    tick: u64,
}

/// Footers count this much against the budget each (their parsed size is not known exactly).
const FOOTER_COST: u64 = 256 * 1024;

impl ChunkCache {
    pub fn new(budget: u64) -> Self {
        Self { budget, inner: Mutex::new(CacheInner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A poisoned cache only means a panic elsewhere; its entries are still verified bytes.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &Key) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (bytes, used) = inner.entries.get_mut(key)?;
        *used = tick;
        Some(bytes.clone())
    }

    fn put(&self, key: Key, bytes: Bytes) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += bytes.len() as u64;
        if let Some((old, _)) = inner.entries.insert(key, (bytes, tick)) {
            inner.bytes -= old.len() as u64;
        }
        inner.evict(self.budget);
    }

    fn footer(&self, file: &Hash32) -> Option<Arc<ParquetMetaData>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (metadata, used) = inner.footers.get_mut(file)?;
        *used = tick;
        Some(Arc::clone(metadata))
    }

    fn put_footer(&self, file: Hash32, metadata: Arc<ParquetMetaData>) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if inner.footers.insert(file, (metadata, tick)).is_none() {
            inner.bytes += FOOTER_COST;
        }
        inner.evict(self.budget);
    }
}

impl CacheInner {
    fn evict(&mut self, budget: u64) {
        while self.bytes > budget {
            let chunk =
                self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, (_, u))| (k.clone(), *u));
            let footer = self.footers.iter().min_by_key(|(_, (_, used))| *used).map(|(k, (_, u))| (*k, *u));
            match (chunk, footer) {
                (Some((key, a)), Some((_, b))) if a <= b => self.remove_chunk(&key),
                (_, Some((file, _))) => {
                    self.footers.remove(&file);
                    self.bytes -= FOOTER_COST;
                }
                (Some((key, _)), None) => self.remove_chunk(&key),
                (None, None) => return,
            }
        }
    }

    fn remove_chunk(&mut self, key: &Key) {
        if let Some((bytes, _)) = self.entries.remove(key) {
            self.bytes -= bytes.len() as u64;
        }
    }
}

/// Bytes a query read from the store (cache misses), for its metrics.
#[derive(Debug, Default)]
pub struct ReadCount {
    pub bytes: AtomicU64,
}

/// One table file of a stored version, read through verified chunks.
#[derive(Debug, Clone)]
pub struct VerifiedFile {
    source: Source,
    cache: Arc<ChunkCache>,
    read: Arc<ReadCount>,
}

/// Where a table file's chunks come from.
#[derive(Debug, Clone)]
enum Source {
    /// The store, each chunk checked against the version's stored chunk hashes.
    Stored {
        store: Arc<Store>,
        version: Arc<StoredVersion>,
        /// Index of the file in the manifest's `files`.
        file: u32,
    },
    /// The head table, each chunk checked against the hashes taken when it was verified.
    Head(Arc<HeadFile>),
}

impl VerifiedFile {
    pub fn new(
        store: Arc<Store>,
        version: Arc<StoredVersion>,
        file: u32,
        cache: Arc<ChunkCache>,
        read: Arc<ReadCount>,
    ) -> Self {
        Self { source: Source::Stored { store, version, file }, cache, read }
    }

    /// A head table file (see [`HeadFile`]).
    pub fn head(file: Arc<HeadFile>, cache: Arc<ChunkCache>, read: Arc<ReadCount>) -> Self {
        Self { source: Source::Head(file), cache, read }
    }

    /// The file's BLAKE3, size and chunk size.
    fn shape(&self) -> (Hash32, u64, u64) {
        match &self.source {
            Source::Stored { version, file, .. } => {
                // `file` was taken from this manifest's `files` by the engine.
                let entry = &version.manifest.files[*file as usize];
                (entry.blake3, entry.size, u64::from(version.manifest.chunk_size))
            }
            Source::Head(head) => (head.blake3, head.size, head.chunk_size),
        }
    }

    /// The file's footer with its page index, parsed once and cached.
    pub async fn metadata(&mut self) -> Result<Arc<ParquetMetaData>, ParquetError> {
        let (blake3, size, _) = self.shape();
        if let Some(metadata) = self.cache.footer(&blake3) {
            return Ok(metadata);
        }
        let reader = ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = Arc::new(reader.load_and_finish(&mut *self, size).await?);
        self.cache.put_footer(blake3, Arc::clone(&metadata));
        Ok(metadata)
    }

    /// Chunk `index`, verified against its hash.
    async fn chunk(&self, index: u32) -> Result<Bytes, ParquetError> {
        let (blake3, _, chunk_size) = self.shape();
        let key = Key::Chunk(blake3, chunk_size, index);
        if let Some(bytes) = self.cache.get(&key) {
            return Ok(bytes);
        }
        let bytes = match &self.source {
            Source::Stored { store, version, file } => {
                let expected = chunk_hash(&self.cache, store, version, *file, index).await?;
                let bytes = store.read_chunk(version, *file, index).await.map_err(external)?;
                if blake3::hash(&bytes).as_bytes() != &expected {
                    let m = &version.manifest;
                    return Err(ParquetError::General(format!(
                        "chunk {index} of {} in {} {} does not match its signed hash; not reading it",
                        m.files[*file as usize].name, m.dataset, m.version
                    )));
                }
                bytes
            }
            Source::Head(head) => head.chunk(index).await?,
        };
        self.read.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.cache.put(key, bytes.clone());
        Ok(bytes)
    }

    async fn range(&self, range: Range<u64>) -> Result<Bytes, ParquetError> {
        let (_, size, chunk_size) = self.shape();
        if range.start > range.end || range.end > size {
            return Err(ParquetError::EOF(format!("range {range:?} outside a file of {size} bytes")));
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let (first, last) = (range.start / chunk_size, (range.end - 1) / chunk_size);
        if first == last {
            let chunk = self.chunk(first as u32).await?;
            let from = (range.start - first * chunk_size) as usize;
            return Ok(chunk.slice(from..from + (range.end - range.start) as usize));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for index in first..=last {
            let chunk = self.chunk(index as u32).await?;
            let start = index * chunk_size;
            let from = range.start.saturating_sub(start) as usize;
            let to = (range.end.min(start + chunk.len() as u64) - start) as usize;
            out.extend_from_slice(&chunk[from..to]);
        }
        Ok(out.freeze())
    }
}

/// The hash of chunk `index` of a stored file, from its page of chunk hashes (checked against
/// the manifest by the store).
async fn chunk_hash(
    cache: &ChunkCache,
    store: &Store,
    version: &StoredVersion,
    file: u32,
    index: u32,
) -> Result<[u8; 32], ParquetError> {
    let page = index / CHUNKS_PER_PAGE;
    let key = Key::Hashes(version.manifest.files[file as usize].blake3, page);
    let hashes = match cache.get(&key) {
        Some(hashes) => hashes,
        None => {
            let hashes = store.read_chunk_hashes(version, file, page).await.map_err(external)?;
            cache.put(key, hashes.clone());
            hashes
        }
    };
    let at = (index % CHUNKS_PER_PAGE) as usize * CHUNK_HASH_LEN;
    hashes
        .get(at..at + CHUNK_HASH_LEN)
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| ParquetError::General(format!("no hash for chunk {index}")))
}

fn external(e: crate::data::store::StoreError) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for VerifiedFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.range(range).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move { self.metadata().await }.boxed()
    }
}
