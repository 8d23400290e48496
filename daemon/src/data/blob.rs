//! The node's storage seam: [`BlobStore`], the few whole-object operations the node needs, and
//! [`ObjectBlobStore`], its one real implementation over `object_store` (memory, local
//! filesystem, S3-compatible). [`crate::data::store`] keeps dataset versions on top of it;
//! [`faulty::FaultyStore`] wraps any store to crash it at a chosen step, [`io_faults::IoFaultStore`]
//! to fail chosen reads, writes or syncs with an I/O error (EIO, ENOSPC), and [`conformance`] is
//! the suite every backend must pass.
//!
//! Keys are `/`-separated relative names (`datasets/a/v1/part-0.parquet`). A key has no empty,
//! `.` or `..` segment, no control character, and its last segment does not end in `#<digits>`
//! (the local filesystem's name for an upload in progress). Every put replaces the whole object
//! atomically: a reader sees the old object or the new one, never a part. Nothing here relies on
//! create-if-absent puts, which S3-compatible servers such as Garage do not enforce.
//!
//! Durability is asked for, not implied: a put is visible when it returns but, on a local
//! directory, may still be only in the page cache. A commit makes its files durable with one
//! [`BlobStore::sync`] (each file's data, then the directories naming them) and then writes its
//! commit point with [`BlobStore::put_durable`] (staged, synced, renamed, its directory synced),
//! so after a power loss a version's manifest is never found without its files.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod faulty;
pub mod io_faults;
mod parts;
mod reader;

pub use faulty::FaultyStore;
pub use io_faults::{IoFault, IoFaultStore, IoOp};
pub use parts::PartsUpload;
use reader::PartReader;

use crate::config::{S3Config, StorageConfig};
use crate::data::pool::BufferPool;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use std::fmt::Debug;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files up to this size are uploaded with one put; larger ones in parts of this size.
pub const PART_SIZE: usize = 10 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PART_CONCURRENCY: usize = 4;

/// The error of a backend, a local file, or a fault injected by a test.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed, typed by what the caller must decide.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The key holds no object.
    #[error("no object at {key:?}")]
    NotFound { key: String },
    /// The backend failed or refused (I/O, network, permissions, a range past the end).
    #[error("storage backend, at {key:?}: {source}")]
    Backend { key: String, source: BoxError },
    /// A local file being uploaded could not be read.
    #[error("{path}: {source}")]
    Local { path: PathBuf, source: std::io::Error },
    /// The key is not a valid relative name.
    #[error("invalid storage key {key:?}")]
    InvalidKey { key: String },
}

impl BlobError {
    fn backend(key: &str, source: impl Into<BoxError>) -> Self {
        Self::Backend { key: key.to_owned(), source: source.into() }
    }

    pub(super) fn from_object_store(key: &str, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Self::NotFound { key: key.to_owned() },
            other => Self::backend(key, other),
        }
    }
}

/// A requested range does not lie within the object.
#[derive(Debug, thiserror::Error)]
#[error("range {start}..{end} is not within the object ({got} bytes readable from {start})")]
pub struct RangeError {
    pub start: u64,
    pub end: u64,
    pub got: u64,
}

type BlobResult<T> = Result<T, BlobError>;

/// Whole-object storage: exactly the operations the node needs. Usable as `Arc<dyn BlobStore>`.
pub trait BlobStore: Send + Sync + Debug {
    /// Stores `bytes` at `key`, atomically replacing any object there.
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>>;

    /// Streams a local file to `key` (in parts when large); readers never see a partial object.
    /// The local file is left as it was.
    fn put_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>>;

    /// Moves a local file to `key`: on success the object holds the file's bytes and the local
    /// file is gone; readers never see a partial object. A local directory on the same
    /// filesystem takes the file with one `rename`, no byte copied; elsewhere it is
    /// [`put_file`](Self::put_file) and then removed. On an error the local file may remain.
    fn move_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.put_file(key, local).await?;
            remove_local(local).await
        }
        .boxed()
    }

    /// Whether [`move_file`](Self::move_file) takes the local file `local` by `rename`, without
    /// copying its bytes: a store in a local directory on `local`'s filesystem. A caller that
    /// keeps a copy of a file it stores then copies it aside and moves the original in, rather
    /// than have the store copy it and sync the copy.
    fn moves_by_rename(&self, _local: &Path) -> bool {
        false
    }

    /// The whole object at `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Bytes>>;

    /// Bytes `range` of the object at `key`; a range not within the object is an error.
    fn get_range<'a>(&'a self, key: &'a str, range: Range<u64>) -> BoxFuture<'a, BlobResult<Bytes>>;

    /// [`get_range`](Self::get_range), read into a buffer from `pool` where the backend reads into
    /// memory it is given (a local directory: serving then allocates nothing per chunk); other
    /// backends answer with buffers of their own. Same bytes and same errors either way.
    fn get_range_pooled<'a>(
        &'a self,
        key: &'a str,
        range: Range<u64>,
        pool: &'a BufferPool,
    ) -> BoxFuture<'a, BlobResult<Bytes>> {
        let _ = pool;
        self.get_range(key, range)
    }

    /// The size in bytes of the object at `key`.
    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<u64>>;

    /// Every key under the directory `prefix` (`""` for all), recursively, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>>;

    /// The directories directly under `prefix`, as full keys (`datasets/a`), sorted.
    fn list_dirs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>>;

    /// Removes the object at `key`; removing a missing object succeeds.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<()>>;

    /// Makes the objects at `keys`, already stored, durable: once this returns each survives a
    /// power loss with its bytes and under its name. A commit calls it once for all the files
    /// of a version, before its manifest ([`put_durable`](Self::put_durable)). A local directory
    /// fsyncs each file, then every directory from the files' up to the store's root (a new name
    /// is durable only once the directory holding it is); an S3-compatible store has nothing to
    /// do, since it acknowledges a put only once the object is durable, and memory cannot be.
    /// An invalid key is refused; a missing object may be `NotFound`.
    fn sync<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, BlobResult<()>>;

    /// Starts an upload to `key` sent in parts, in order, while the caller still writes the
    /// local file they come from: nothing is visible at `key` until [`PartsUpload::complete`].
    /// `None` where parts bring nothing (a local directory takes a pulled file by one rename;
    /// wrappers that inject faults go through [`move_file`](Self::move_file)).
    fn upload_in_parts<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Option<PartsUpload>>> {
        let _ = key;
        async { Ok(None) }.boxed()
    }

    /// [`put`](Self::put), durable when it returns: a version's commit point. A local directory
    /// writes the bytes under a staging name, fsyncs them, renames them over `key` and fsyncs
    /// the directories, so the object is either absent or whole after a power loss. Elsewhere
    /// a put followed by [`sync`](Self::sync).
    fn put_durable<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            self.put(key, bytes).await?;
            self.sync(&[key.to_owned()]).await
        }
        .boxed()
    }
}

/// Removes a local file that was stored (the second half of a [`BlobStore::move_file`]).
async fn remove_local(local: &Path) -> BlobResult<()> {
    tokio::fs::remove_file(local).await.map_err(|source| BlobError::Local { path: local.to_owned(), source })
}

/// Checks a key and converts it to an `object_store` path.
pub fn parse_key(key: &str) -> BlobResult<ObjectPath> {
    let invalid = || BlobError::InvalidKey { key: key.to_owned() };
    if key.is_empty() {
        return Err(invalid());
    }
    let segments_ok =
        key.split('/').all(|s| !s.is_empty() && s != "." && s != "..") && !key.chars().any(char::is_control);
    if !segments_ok || is_staging_name(key.rsplit('/').next().unwrap_or(key)) {
        return Err(invalid());
    }
    ObjectPath::parse(key).map_err(|_| invalid())
}

/// A prefix is a key, or `""` for the root.
fn parse_prefix(prefix: &str) -> BlobResult<Option<ObjectPath>> {
    if prefix.is_empty() { Ok(None) } else { parse_key(prefix).map(Some) }
}

/// `name#123`: how the local filesystem backend names an upload in progress.
fn is_staging_name(segment: &str) -> bool {
    match segment.rsplit_once('#') {
        Some((_, digits)) => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// [`BlobStore`] over any `object_store` backend; for a local directory, also that backend as
/// itself, so ranges can be read into pooled buffers ([`BlobStore::get_range_pooled`]).
#[derive(Debug, Clone)]
pub struct ObjectBlobStore(Arc<dyn ObjectStore>, Option<Arc<LocalFileSystem>>);

impl ObjectBlobStore {
    /// Wraps an existing object store.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self(store, None)
    }

    /// A store in memory, empty, gone when dropped.
    pub fn memory() -> Self {
        Self::new(Arc::new(object_store::memory::InMemory::new()))
    }

    /// A directory on the local filesystem, created if missing.
    pub fn local(dir: &Path) -> BlobResult<Self> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::Local { path: dir.to_owned(), source })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| BlobError::backend("", e))?
            .with_automatic_cleanup(true);
        let fs = Arc::new(fs);
        Ok(Self(fs.clone(), Some(fs)))
    }

    /// An S3-compatible bucket (path-style requests when an endpoint is given).
    pub fn s3(s3: &S3Config) -> BlobResult<Self> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_allow_http(s3.allow_http);
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|e| BlobError::backend("", e))?);
        if s3.prefix.is_empty() {
            Ok(Self::new(store))
        } else {
            Ok(Self::new(Arc::new(object_store::prefix::PrefixStore::new(store, s3.prefix.as_str()))))
        }
    }

    /// The store a node's config names.
    pub fn from_config(config: &StorageConfig) -> BlobResult<Arc<dyn BlobStore>> {
        Ok(Arc::new(match config {
            StorageConfig::Local(dir) => Self::local(dir)?,
            StorageConfig::S3(s3) => Self::s3(s3)?,
        }))
    }

    /// Uploads a local file in [`PART_SIZE`] parts, [`PART_CONCURRENCY`] in flight, each read
    /// while the ones before it are sent. `around_cache`: the file was written around the page
    /// cache (a pull's copy) and is read the same way, where the file system allows.
    async fn upload_file(
        &self,
        key: &str,
        path: ObjectPath,
        local: &Path,
        around_cache: bool,
    ) -> BlobResult<()> {
        let local_err = |source| BlobError::Local { path: local.to_owned(), source };
        let opened = {
            let local = local.to_owned();
            tokio::task::spawn_blocking(move || PartReader::open(&local, around_cache)).await
        };
        let reader = opened.map_err(|e| local_err(std::io::Error::other(e)))?.map_err(local_err)?;
        let (mut reader, first) = reader.next_part().await.map_err(local_err)?;
        if first.len() < PART_SIZE {
            // The whole file fits in one part: one put, atomic on every backend.
            return self.put_path(key, &path, first).await;
        }
        let upload = self.0.put_multipart(&path).await.map_err(|e| BlobError::from_object_store(key, e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut next = first;
        let failed = loop {
            if next.is_empty() {
                break None;
            }
            if let Err(e) = parts.wait_for_capacity(PART_CONCURRENCY).await {
                break Some(BlobError::from_object_store(key, e));
            }
            parts.put(next);
            match reader.next_part().await {
                Ok((back, bytes)) => (reader, next) = (back, bytes),
                Err(source) => break Some(local_err(source)),
            }
        };
        match failed {
            None => parts.finish().await.map(drop).map_err(|e| BlobError::from_object_store(key, e)),
            Some(error) => {
                // Best effort: an abandoned upload is invisible to readers either way.
                let _ = parts.abort().await;
                Err(error)
            }
        }
    }

    /// [`BlobStore::put_file`] and [`BlobStore::move_file`] into a local directory, without
    /// passing the bytes through this process: a `rename` when moving a plain file within one
    /// filesystem, otherwise a kernel-side copy (`copy_file_range`, a reflink where the
    /// filesystem has them) into `<object>#<n>` beside the object, renamed over it when complete.
    /// The staging name is the one `object_store` gives its own uploads, which listings skip.
    async fn local_file(
        &self,
        fs: &LocalFileSystem,
        key: &str,
        path: &ObjectPath,
        local: &Path,
        how: Transfer,
    ) -> BlobResult<()> {
        let dest = fs.path_to_filesystem(path).map_err(|e| BlobError::from_object_store(key, e))?;
        let (owned, local) = (key.to_owned(), local.to_owned());
        let done = tokio::task::spawn_blocking(move || local_transfer(&owned, &local, &dest, how));
        done.await.map_err(|e| BlobError::backend(key, e))?
    }

    async fn put_path(&self, key: &str, path: &ObjectPath, bytes: Bytes) -> BlobResult<()> {
        self.0
            .put(path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| BlobError::from_object_store(key, e))
    }

    async fn range(&self, key: &str, range: Range<u64>) -> BlobResult<Bytes> {
        let path = parse_key(key)?;
        let bad_range =
            |got: u64| BlobError::backend(key, RangeError { start: range.start, end: range.end, got });
        if range.start > range.end {
            return Err(bad_range(0));
        }
        if range.is_empty() {
            // Backends refuse empty ranges; check the object exists and is long enough.
            let size = self.0.head(&path).await.map_err(|e| BlobError::from_object_store(key, e))?.size;
            return if range.start <= size { Ok(Bytes::new()) } else { Err(bad_range(0)) };
        }
        let bytes =
            self.0.get_range(&path, range.clone()).await.map_err(|e| BlobError::from_object_store(key, e))?;
        // Backends shorten a range that runs past the end; the node asked for exact bytes.
        if bytes.len() as u64 != range.end - range.start {
            return Err(bad_range(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// [`Self::range`] of a local directory, read with `pread` into a buffer from `pool`.
    async fn local_range(
        &self,
        fs: &LocalFileSystem,
        key: &str,
        range: Range<u64>,
        pool: &BufferPool,
    ) -> BlobResult<Bytes> {
        if range.start >= range.end {
            // Empty and inverted ranges: the general path's answers.
            return self.range(key, range).await;
        }
        let file =
            fs.path_to_filesystem(&parse_key(key)?).map_err(|e| BlobError::from_object_store(key, e))?;
        let bad_range = move |got: u64| RangeError { start: range.start, end: range.end, got };
        let len =
            usize::try_from(range.end - range.start).map_err(|_| BlobError::backend(key, bad_range(0)))?;
        let mut buf = pool.take(len);
        let owned = key.to_owned();
        let read = tokio::task::spawn_blocking(move || -> BlobResult<Bytes> {
            let key = owned.as_str();
            let not_found = || BlobError::NotFound { key: key.to_owned() };
            let opened = std::fs::File::open(&file);
            let f = opened.map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => not_found(),
                _ => BlobError::backend(key, e),
            })?;
            let meta = f.metadata().map_err(|e| BlobError::backend(key, e))?;
            if !meta.is_file() {
                return Err(not_found());
            }
            if range.end > meta.len() {
                return Err(BlobError::backend(key, bad_range(meta.len().saturating_sub(range.start))));
            }
            std::os::unix::fs::FileExt::read_exact_at(&f, buf.as_mut(), range.start).map_err(|e| match e
                .kind()
            {
                // Shortened under us: objects are replaced whole, never truncated, but say so.
                std::io::ErrorKind::UnexpectedEof => BlobError::backend(key, bad_range(0)),
                _ => BlobError::backend(key, e),
            })?;
            Ok(buf.freeze())
        });
        read.await.map_err(|e| BlobError::backend(key, e))?
    }

    async fn list_keys(&self, prefix: &str) -> BlobResult<Vec<String>> {
        let path = parse_prefix(prefix)?;
        let mut keys: Vec<String> = self
            .0
            .list(path.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| BlobError::from_object_store(prefix, e))?;
        keys.sort_unstable();
        Ok(keys)
    }

    async fn list_dir_keys(&self, prefix: &str) -> BlobResult<Vec<String>> {
        let path = parse_prefix(prefix)?;
        let listed = self
            .0
            .list_with_delimiter(path.as_ref())
            .await
            .map_err(|e| BlobError::from_object_store(prefix, e))?;
        let mut dirs: Vec<String> = listed.common_prefixes.iter().map(ToString::to_string).collect();
        dirs.sort_unstable();
        Ok(dirs)
    }
}

/// Whether a local file is copied into a local store or moved there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    Copy,
    Move,
}

/// The blocking half of [`ObjectBlobStore::local_file`].
fn local_transfer(key: &str, local: &Path, dest: &Path, how: Transfer) -> BlobResult<()> {
    let local_err = |source| BlobError::Local { path: local.to_owned(), source };
    let backend = |e: std::io::Error| BlobError::backend(key, e);
    let parent = dest.parent().ok_or_else(|| BlobError::InvalidKey { key: key.to_owned() })?;
    std::fs::create_dir_all(parent).map_err(backend)?;
    if how == Transfer::Move {
        // Only a plain file with no other name is renamed: a symlink would put a link into the
        // store, and a second hard link would leave the object writable from outside it.
        let meta = std::fs::symlink_metadata(local).map_err(local_err)?;
        if meta.is_file() && std::os::unix::fs::MetadataExt::nlink(&meta) == 1 {
            match std::fs::rename(local, dest) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
                Err(e) => return Err(backend(e)),
            }
        }
    }
    let mut source = std::fs::File::open(local).map_err(local_err)?;
    if !source.metadata().map_err(local_err)?.is_file() {
        return Err(local_err(std::io::Error::other("not a regular file")));
    }
    let (mut staged, staging) = new_staging_file(dest).map_err(backend)?;
    let copied = std::io::copy(&mut source, &mut staged).and_then(|_| std::fs::rename(&staging, dest));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&staging);
        return Err(backend(e));
    }
    if how == Transfer::Move {
        std::fs::remove_file(local).map_err(local_err)?;
    }
    Ok(())
}

/// Creates `<dest>#<n>` for the first `n` not taken.
fn new_staging_file(dest: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    for n in 1u32.. {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let path = PathBuf::from(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free staging name"))
}

/// The blocking half of [`BlobStore::sync`] on a local directory: `files` are `(key, path)`.
/// Each file's data first, then each directory from the files' up to the store's root, deepest
/// first, each once.
fn sync_local(files: &[(String, PathBuf)]) -> BlobResult<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for (key, path) in files {
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BlobError::NotFound { key: key.clone() },
            _ => BlobError::backend(key, e),
        })?;
        file.sync_all().map_err(|e| BlobError::backend(key, e))?;
        // `a/b/c` lies three directories below the root: `a/b`, `a` and the root itself.
        let depth = key.split('/').count();
        dirs.extend(path.ancestors().skip(1).take(depth).map(|d| (key.clone(), d.to_path_buf())));
    }
    sync_dirs(dirs.into_iter().collect())
}

/// Fsyncs each directory (named with a key under it, for errors) once, deepest first.
fn sync_dirs(mut dirs: Vec<(String, PathBuf)>) -> BlobResult<()> {
    dirs.sort_by(|(_, a), (_, b)| b.components().count().cmp(&a.components().count()).then(a.cmp(b)));
    dirs.dedup_by(|a, b| a.1 == b.1);
    for (key, dir) in dirs {
        let synced = std::fs::File::open(&dir).and_then(|d| d.sync_all());
        synced.map_err(|e| BlobError::backend(&key, e))?;
    }
    Ok(())
}

/// The blocking half of [`BlobStore::put_durable`] on a local directory: `bytes` into a staging
/// file beside `dest`, fsynced, renamed over `dest`, then its directories fsynced.
fn put_local_durable(key: &str, dest: &Path, bytes: &[u8]) -> BlobResult<()> {
    use std::io::Write;
    let backend = |e: std::io::Error| BlobError::backend(key, e);
    let parent = dest.parent().ok_or_else(|| BlobError::InvalidKey { key: key.to_owned() })?;
    std::fs::create_dir_all(parent).map_err(backend)?;
    let (mut staged, staging) = new_staging_file(dest).map_err(backend)?;
    let written = staged.write_all(bytes).and_then(|()| staged.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&staging, dest)) {
        let _ = std::fs::remove_file(&staging);
        return Err(backend(e));
    }
    let depth = key.split('/').count();
    sync_dirs(dest.ancestors().skip(1).take(depth).map(|d| (key.to_owned(), d.to_path_buf())).collect())
}

impl BlobStore for ObjectBlobStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move { self.put_path(key, &parse_key(key)?, bytes).await }.boxed()
    }

    fn put_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            let path = parse_key(key)?;
            match &self.1 {
                Some(fs) => self.local_file(fs, key, &path, local, Transfer::Copy).await,
                None => self.upload_file(key, path, local, false).await,
            }
        }
        .boxed()
    }

    fn move_file<'a>(&'a self, key: &'a str, local: &'a Path) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            let path = parse_key(key)?;
            match &self.1 {
                Some(fs) => self.local_file(fs, key, &path, local, Transfer::Move).await,
                None => {
                    self.upload_file(key, path, local, true).await?;
                    remove_local(local).await
                }
            }
        }
        .boxed()
    }

    fn moves_by_rename(&self, local: &Path) -> bool {
        // The directory a top-level key lands in: the store's root.
        let top = self.1.as_ref().and_then(|fs| fs.path_to_filesystem(&ObjectPath::from("x")).ok());
        let Some(root) = top.as_deref().and_then(Path::parent).map(Path::to_path_buf) else {
            return false;
        };
        let device = |path: &Path| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        matches!((device(local), device(&root)), (Ok(a), Ok(b)) if a == b)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Bytes>> {
        async move {
            let path = parse_key(key)?;
            let got = self.0.get(&path).await.map_err(|e| BlobError::from_object_store(key, e))?;
            got.bytes().await.map_err(|e| BlobError::from_object_store(key, e))
        }
        .boxed()
    }

    fn get_range<'a>(&'a self, key: &'a str, range: Range<u64>) -> BoxFuture<'a, BlobResult<Bytes>> {
        self.range(key, range).boxed()
    }

    fn get_range_pooled<'a>(
        &'a self,
        key: &'a str,
        range: Range<u64>,
        pool: &'a BufferPool,
    ) -> BoxFuture<'a, BlobResult<Bytes>> {
        match &self.1 {
            Some(fs) => self.local_range(fs, key, range, pool).boxed(),
            None => self.range(key, range).boxed(),
        }
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<u64>> {
        async move {
            let path = parse_key(key)?;
            Ok(self.0.head(&path).await.map_err(|e| BlobError::from_object_store(key, e))?.size)
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>> {
        self.list_keys(prefix).boxed()
    }

    fn list_dirs<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, BlobResult<Vec<String>>> {
        self.list_dir_keys(prefix).boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            let path = parse_key(key)?;
            match self.0.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(BlobError::backend(key, e)),
            }
        }
        .boxed()
    }

    fn sync<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            let paths = keys.iter().map(|key| parse_key(key)).collect::<BlobResult<Vec<_>>>()?;
            // S3-compatible stores acknowledge a put once the object is durable; memory never is.
            let Some(fs) = &self.1 else { return Ok(()) };
            let files = keys
                .iter()
                .zip(&paths)
                .map(|(key, path)| {
                    let file =
                        fs.path_to_filesystem(path).map_err(|e| BlobError::from_object_store(key, e))?;
                    Ok((key.clone(), file))
                })
                .collect::<BlobResult<Vec<_>>>()?;
            let synced = tokio::task::spawn_blocking(move || sync_local(&files)).await;
            synced.map_err(|e| BlobError::backend(keys.first().map_or("", String::as_str), e))?
        }
        .boxed()
    }

    fn upload_in_parts<'a>(&'a self, key: &'a str) -> BoxFuture<'a, BlobResult<Option<PartsUpload>>> {
        async move {
            let path = parse_key(key)?;
            if self.1.is_some() {
                return Ok(None);
            }
            let upload =
                self.0.put_multipart(&path).await.map_err(|e| BlobError::from_object_store(key, e))?;
            Ok(Some(PartsUpload::new(key, upload)))
        }
        .boxed()
    }

    fn put_durable<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, BlobResult<()>> {
        async move {
            let path = parse_key(key)?;
            let Some(fs) = &self.1 else {
                // Durable when acknowledged (S3-compatible stores), or never (memory).
                return self.put_path(key, &path, bytes).await;
            };
            let dest = fs.path_to_filesystem(&path).map_err(|e| BlobError::from_object_store(key, e))?;
            let owned = key.to_owned();
            let done = tokio::task::spawn_blocking(move || put_local_durable(&owned, &dest, &bytes));
            done.await.map_err(|e| BlobError::backend(key, e))?
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["a", "datasets/x/v1/part-00000.parquet", "dir/with space/é.txt", "a#b", "a#1/b", "x#"] {
            assert!(parse_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/../b", "./a", "a/.", "a\nb", "part#1", "d/x#42"] {
            assert!(matches!(parse_key(bad), Err(BlobError::InvalidKey { .. })), "{bad:?}");
        }
    }

    /// A local directory takes files of its own filesystem by rename, and says so; one on
    /// another filesystem (here tmpfs, where the machine has one) it would copy, and memory
    /// takes nothing by rename.
    #[test]
    fn a_local_store_moves_by_rename_only_files_of_its_filesystem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ObjectBlobStore::local(&dir.path().join("store")).expect("store");
        let beside = dir.path().join("beside");
        std::fs::write(&beside, b"x").expect("write");
        assert!(store.moves_by_rename(&beside));
        assert!(!store.moves_by_rename(&dir.path().join("missing")));
        assert!(!ObjectBlobStore::memory().moves_by_rename(&beside));
        let device = |p: &Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).expect("metadata"));
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            let elsewhere = shm.path().join("f");
            std::fs::write(&elsewhere, b"x").expect("write");
            if device(&elsewhere) != device(dir.path()) {
                assert!(!store.moves_by_rename(&elsewhere));
            }
        }
    }

    #[tokio::test]
    async fn blob_conformance_memory() {
        conformance::run_all(Arc::new(ObjectBlobStore::memory())).await;
    }

    #[tokio::test]
    async fn blob_conformance_local() {
        let dir = tempfile::tempdir().expect("temp dir");
        conformance::run_all(Arc::new(ObjectBlobStore::local(dir.path()).expect("local store"))).await;
    }

    /// Moving from another filesystem (where `rename` fails with `EXDEV`) copies and removes.
    /// Needs a second filesystem: `/dev/shm` where it is one, else the test says so and passes.
    #[tokio::test]
    async fn move_file_across_filesystems_copies() {
        use std::os::unix::fs::MetadataExt;
        let store_dir = tempfile::tempdir().expect("temp dir");
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm: the cross-filesystem move is not exercised");
            return;
        };
        let dev = |p: &Path| std::fs::metadata(p).expect("stat").dev();
        if dev(other.path()) == dev(store_dir.path()) {
            eprintln!("/dev/shm is on the store's filesystem: the cross-filesystem move is not exercised");
            return;
        }
        let store = ObjectBlobStore::local(store_dir.path()).expect("local store");
        let local = other.path().join("file");
        let data: Vec<u8> = (0..3 * PART_SIZE).map(|i| (i % 251) as u8).collect();
        std::fs::write(&local, &data).expect("write");
        store.move_file("moved/file", &local).await.expect("move across filesystems");
        assert!(!local.exists());
        assert_eq!(store.get("moved/file").await.expect("get"), data);
        let names: Vec<_> = std::fs::read_dir(store_dir.path().join("moved")).expect("dir").collect();
        assert_eq!(names.len(), 1, "no staging file is left: {names:?}");
    }

    #[tokio::test]
    async fn blob_conformance_faulty_store_without_faults() {
        let faulty = Arc::new(FaultyStore::counting(Arc::new(ObjectBlobStore::memory())));
        conformance::run_all(faulty.clone()).await;
        assert!(faulty.mutations() > 0);
    }
}
