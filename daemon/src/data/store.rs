//! The node's dataset store: versions kept in a [`BlobStore`] (local filesystem by default,
//! S3-compatible at scale, see [`crate::data::blob`]), indexed in memory.
//!
//! Layout, under the store's root:
//! ```text
//! datasets/<id>/definition.toml          the definition of a dataset this node provides
//! datasets/<id>/v<N>/part-00000.parquet  the files of version N
//! datasets/<id>/v<N>/.ferry/chunk-hashes/<i>  the BLAKE3 of each chunk of file number i, 32
//!                                        bytes each, in order (served a page at a time)
//! datasets/<id>/v<N>/manifest.signed     written last: a version exists once this exists
//! ```
//! The manifest holds one hash per page of chunk hashes, not the chunk hashes themselves, so
//! what the index keeps of a version does not grow with its size. A commit writes the chunk
//! hashes from the files it uploads and checks them against those page hashes first.
//! A commit is durable before it is indexed or acknowledged: the files and chunk hashes are
//! stored, then synced with their directories in one [`BlobStore::sync`], then the manifest is
//! written with [`BlobStore::put_durable`]. After a power loss a manifest is therefore never
//! found without its files.
//! A crash part-way through a commit leaves files without a manifest; such a version is not
//! indexed and its number is used again by the next commit, overwriting the leftovers (or
//! garbage collection removes them, see [`crate::data::gc`]). A version *with* a manifest is
//! never overwritten: one that fails its checks at start-up is set aside and keeps its number
//! ([`startup`]).
//!
//! Readers that go back to the blob store after looking a version up (serving chunks, rebuilding
//! a head) hold a [`Lease`] on it; garbage collection skips leased versions. Commits and GC's
//! deletions take the store's layout lock, so GC never removes the files of a commit in progress.

use crate::data::blob::{BlobError, BlobStore};
use crate::data::pool::BufferPool;
use crate::data::version::Reading;
use bytes::Bytes;
use checked::{Checked, UNTRUSTED, write_chunk_hashes, write_known_hashes};
use ferry_net::tls::Credentials;
use ferry_proto::Principal;
use ferry_proto::{
    CHUNK_HASH_LEN, ChunkPage, DatasetId, DatasetSummary, FileEntry, Hash32, Manifest, PageError, RelPath,
    SignedManifest, VersionNo,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use streamed::FileUpload;

mod checked;
#[cfg(test)]
mod import_tests;
mod startup;
#[cfg(test)]
mod stream_tests;
mod streamed;

pub use startup::SetAside;
pub use streamed::{ImportFeed, PARTS_IN_FLIGHT, Streamed, StreamedImport};

pub(crate) const MANIFEST_NAME: &str = "manifest.signed";
/// Files of one [`Store::commit_pulled`] stored at once (each S3 upload keeps its own parts in
/// flight, see [`crate::data::blob`]).
pub const IMPORTS_IN_FLIGHT: usize = 3;
pub(crate) const DEFINITION_NAME: &str = "definition.toml";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(#[from] BlobError),
    #[error("no dataset {0}")]
    NoDataset(DatasetId),
    #[error("dataset {0} has no version {1}")]
    NoVersion(DatasetId, VersionNo),
    #[error("file {file} of {dataset} {version} has no chunk {chunk}")]
    NoChunk { dataset: DatasetId, version: VersionNo, file: u32, chunk: u32 },
    #[error("version {version} of {dataset} already exists")]
    Exists { dataset: DatasetId, version: VersionNo },
    #[error("cannot open storage: {0}")]
    Open(String),
    #[error(
        "the stored manifest of {dataset} {version} changed since it was verified ({detail}); not serving it"
    )]
    ManifestChanged { dataset: DatasetId, version: VersionNo, detail: String },
    #[error("the stored chunk hashes of {dataset} {version} do not match its manifest: {source}")]
    ChunkHashes { dataset: DatasetId, version: VersionNo, source: PageError },
    #[error("file {name} of {dataset} {version} does not match its manifest ({detail}); not committed")]
    FileMismatch { dataset: DatasetId, version: VersionNo, name: String, detail: String },
    #[error("{path}: {source}")]
    Local { path: std::path::PathBuf, source: std::io::Error },
}

/// What [`Store::commit_version`] does with the local files it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFiles {
    /// They stay as they are (a publisher keeps its new table as the head to diff against).
    Keep,
    /// They are moved into the store and are gone after (a node importing a version it pulled):
    /// into a local store on the same filesystem, one `rename` per file and no copy, so the
    /// import needs neither memory nor disk in proportion to the version. If the commit fails
    /// part-way, the files already moved are gone from `local_dir` ([`Store::take_back_moved`]
    /// brings them back for another try). A pull writes its files
    /// around the page cache, so the check reads them back the same way ([`Reading::Direct`]).
    Move,
}

/// A verified version to commit: its signed manifest, parsed, and who signed it.
#[derive(Debug)]
pub struct NewVersion {
    pub signed: SignedManifest,
    pub manifest: Manifest,
    pub signer: Principal,
}

/// One committed version, as the node serves it. The signed manifest stays in storage: it is
/// read back for each `GetManifest` and checked against [`StoredVersion::signed`], so the
/// node's memory holds the parsed manifest of each version, not two forms of it.
#[derive(Debug)]
pub struct StoredVersion {
    pub manifest: Manifest,
    pub signer: Principal,
    pub signed: SignedDigest,
}

/// Length and BLAKE3 of a stored `manifest.signed`, as verified when it was loaded or
/// committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDigest {
    pub len: u64,
    pub blake3: [u8; 32],
}

impl SignedDigest {
    pub fn of(stored: &[u8]) -> Self {
        Self { len: stored.len() as u64, blake3: *blake3::hash(stored).as_bytes() }
    }
}

#[derive(Debug, Default)]
struct DatasetIndex {
    name: Option<String>,
    versions: BTreeMap<VersionNo, Arc<StoredVersion>>,
    /// Versions held but not served; their numbers stay taken ([`startup`]).
    set_aside: BTreeMap<VersionNo, SetAside>,
}

/// How many readers hold each version.
type LeaseCounts = Mutex<HashMap<(DatasetId, VersionNo), usize>>;

/// A reader's hold on one version: while it lives, garbage collection leaves the version alone.
#[derive(Debug)]
#[must_use = "the version is protected only while the lease is held"]
pub struct Lease {
    counts: Arc<LeaseCounts>,
    key: (DatasetId, VersionNo),
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A poisoned map only means a panic elsewhere; keep the counts right regardless.
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What [`Store::unindex_unless_leased`] did.
#[derive(Debug)]
pub(crate) enum Unindexed {
    /// The version is out of the index; no new reader can lease it.
    Removed(Arc<StoredVersion>),
    /// A reader holds it; it stays.
    Leased,
    /// It was not indexed (already removed).
    Absent,
}

/// Versions in a blob store plus their in-memory index.
#[derive(Debug)]
pub struct Store {
    blobs: Arc<dyn BlobStore>,
    /// Buffers of the chunks being served, reused (see [`crate::data::pool`]).
    chunk_buffers: BufferPool,
    index: RwLock<BTreeMap<DatasetId, DatasetIndex>>,
    /// Lock order: `leases` before `index`.
    leases: Arc<LeaseCounts>,
    /// Held by a commit for its whole duration and by GC while it deletes, so GC never removes
    /// the files of a commit in progress.
    layout: tokio::sync::Mutex<()>,
}

pub(crate) fn version_prefix(dataset: &DatasetId, version: VersionNo) -> String {
    format!("datasets/{dataset}/v{}", version.get())
}

/// Key of a version's `manifest.signed`: its commit point.
fn manifest_key(dataset: &DatasetId, version: VersionNo) -> String {
    format!("{}/{MANIFEST_NAME}", version_prefix(dataset, version))
}

fn file_path(dataset: &DatasetId, version: VersionNo, name: &RelPath) -> String {
    format!("datasets/{dataset}/v{}/{name}", version.get())
}

/// Key of the chunk hashes of file number `file` of a version. `.ferry` is a reserved name
/// ([`ferry_proto::RESERVED_NAMES`]), so no file of a manifest can be stored there.
pub(crate) fn chunk_hashes_key(dataset: &DatasetId, version: VersionNo, file: usize) -> String {
    format!("{}/.ferry/chunk-hashes/{file}", version_prefix(dataset, version))
}

/// The last segment of a key.
pub(crate) fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl Store {
    /// Opens the store and indexes every committed version that passes its checks, setting the
    /// others aside ([`startup`]).
    pub async fn open(blobs: Arc<dyn BlobStore>, creds: &Credentials) -> Result<Self, StoreError> {
        let store = Self {
            blobs,
            chunk_buffers: BufferPool::default(),
            index: RwLock::new(BTreeMap::new()),
            leases: Arc::default(),
            layout: tokio::sync::Mutex::new(()),
        };
        store.load_index(creds).await?;
        Ok(store)
    }

    /// Reports the bytes of the serving pool's chunk buffers (in use and idle) in `gauge` from
    /// now on. Call it before serving: the pool is replaced by an empty one.
    pub fn report_chunk_buffers(&mut self, gauge: prometheus_client::metrics::gauge::Gauge) {
        self.chunk_buffers = BufferPool::with_gauge(crate::data::pool::IDLE_BYTES, gauge);
    }

    /// What this node holds, for `ListDatasets`.
    pub fn list(&self) -> Vec<DatasetSummary> {
        let Ok(index) = self.index.read() else { return Vec::new() };
        index
            .iter()
            .filter_map(|(id, entry)| {
                let (version, latest) = entry.versions.last_key_value()?;
                Some(DatasetSummary {
                    id: id.clone(),
                    name: entry.name.clone().unwrap_or_else(|| id.to_string()),
                    publisher: latest.manifest.publisher.clone(),
                    share_type: latest.manifest.share_type,
                    latest: Some(*version),
                })
            })
            .collect()
    }

    /// A committed version; `None` asks for the latest.
    pub fn version(
        &self,
        dataset: &DatasetId,
        version: Option<VersionNo>,
    ) -> Result<Arc<StoredVersion>, StoreError> {
        let index = self.index.read().map_err(poisoned)?;
        let entry = index.get(dataset).ok_or_else(|| StoreError::NoDataset(dataset.clone()))?;
        let found = match version {
            Some(v) => entry.versions.get(&v),
            None => entry.versions.values().next_back(),
        };
        found.cloned().ok_or_else(|| match version {
            Some(v) => StoreError::NoVersion(dataset.clone(), v),
            None => StoreError::NoDataset(dataset.clone()),
        })
    }

    /// Reads one chunk of a stored file.
    pub async fn read_chunk(
        &self,
        version: &StoredVersion,
        file: u32,
        chunk: u32,
    ) -> Result<Bytes, StoreError> {
        let m = &version.manifest;
        let no_chunk = || StoreError::NoChunk { dataset: m.dataset.clone(), version: m.version, file, chunk };
        let entry = m.files.get(file as usize).ok_or_else(no_chunk)?;
        let (offset, len) = m.chunk_span(entry, chunk).ok_or_else(no_chunk)?;
        let path = file_path(&m.dataset, m.version, &entry.name);
        Ok(self.blobs.get_range_pooled(&path, offset..offset + u64::from(len), &self.chunk_buffers).await?)
    }

    /// Page `page` of the chunk hashes of file number `file`, read back and checked against the
    /// page hash in the manifest.
    pub async fn read_chunk_hashes(
        &self,
        version: &StoredVersion,
        file: u32,
        page: u32,
    ) -> Result<Bytes, StoreError> {
        let m = &version.manifest;
        let chunk = page.saturating_mul(ferry_proto::CHUNKS_PER_PAGE);
        let no_chunk = || StoreError::NoChunk { dataset: m.dataset.clone(), version: m.version, file, chunk };
        let entry = m.files.get(file as usize).ok_or_else(no_chunk)?;
        let (first, count) = m.page_span(entry, page).ok_or_else(no_chunk)?;
        let start = u64::from(first) * CHUNK_HASH_LEN as u64;
        let end = start + u64::from(count) * CHUNK_HASH_LEN as u64;
        let key = chunk_hashes_key(&m.dataset, m.version, file as usize);
        let hashes = self.blobs.get_range(&key, start..end).await?;
        ChunkPage { page, hashes: &hashes }.verify(m, entry).map_err(|source| StoreError::ChunkHashes {
            dataset: m.dataset.clone(),
            version: m.version,
            source,
        })?;
        Ok(hashes)
    }

    /// The stored form of `version`'s signed manifest (the body of a `ManifestData` frame), read
    /// back and checked against the digest taken when it was verified.
    pub async fn signed_manifest(&self, version: &StoredVersion) -> Result<Bytes, StoreError> {
        let m = &version.manifest;
        let bytes = self.blobs.get(&manifest_key(&m.dataset, m.version)).await?;
        let found = SignedDigest::of(&bytes);
        if found != version.signed {
            let hex = |d: &SignedDigest| blake3::Hash::from_bytes(d.blake3).to_hex()[..16].to_owned();
            let detail = format!(
                "now {} bytes with BLAKE3 {}…, verified as {} bytes with {}…",
                found.len,
                hex(&found),
                version.signed.len,
                hex(&version.signed)
            );
            return Err(StoreError::ManifestChanged {
                dataset: m.dataset.clone(),
                version: m.version,
                detail,
            });
        }
        Ok(bytes)
    }

    /// Stores a dataset's definition document (for providers).
    pub async fn put_definition(
        &self,
        dataset: &DatasetId,
        name: &str,
        toml_text: &str,
    ) -> Result<(), StoreError> {
        let key = format!("datasets/{dataset}/{DEFINITION_NAME}");
        self.blobs.put_durable(&key, Bytes::copy_from_slice(toml_text.as_bytes())).await?;
        let mut index = self.index.write().map_err(poisoned)?;
        index.entry(dataset.clone()).or_default().name = Some(name.to_owned());
        Ok(())
    }

    /// Uploads the files of a version from a local directory with their chunk hashes, makes them
    /// durable, then writes its manifest durably (the commit point), then indexes it. Each file
    /// is checked against the manifest (size, every page of chunk hashes, whole-file BLAKE3)
    /// before anything of it is uploaded.
    /// `files` says whether the local files stay or are moved into the store.
    pub async fn commit_version(
        &self,
        local_dir: &Path,
        version: NewVersion,
        files: LocalFiles,
    ) -> Result<(), StoreError> {
        self.commit(local_dir, version, files, &[], None).await
    }

    /// Commits a version whose files this node wrote into `local_dir`, copying them into the
    /// store or moving them there (`files`). `chunk_hashes` holds, by manifest file, the chunk
    /// hashes taken as the file was written (or read for the manifest); a file with them is
    /// checked by its size and by those against the manifest's page hashes instead of being
    /// read again, as [`Store::commit_pulled`] does with a pull's.
    pub async fn commit_written(
        &self,
        local_dir: &Path,
        version: NewVersion,
        files: LocalFiles,
        chunk_hashes: &[Option<Vec<Hash32>>],
    ) -> Result<(), StoreError> {
        self.commit(local_dir, version, files, chunk_hashes, None).await
    }

    /// Whether the store takes the local file `local`, moved, by `rename`
    /// ([`BlobStore::moves_by_rename`]).
    pub fn moves_by_rename(&self, local: &Path) -> bool {
        self.blobs.moves_by_rename(local)
    }

    /// Commits a version a pull brought into `local_dir`, moving its files into the store
    /// ([`LocalFiles::Move`]). `verified` holds, by manifest file, the chunk hashes the pull
    /// verified as it wrote the file (each chunk hashed in memory and matched against a page
    /// of hashes checked against the signed manifest): such a file is not read again. Its size
    /// is checked, its hashes against the manifest's page hashes, and they are stored as its
    /// chunk hashes. A file without them (`None`, or hashes the manifest refuses) is read and
    /// checked as [`Store::commit_version`] does. Into S3, several files are uploaded at once.
    pub async fn commit_pulled(
        &self,
        local_dir: &Path,
        version: NewVersion,
        verified: &[Option<Vec<Hash32>>],
    ) -> Result<(), StoreError> {
        self.commit(local_dir, version, LocalFiles::Move, verified, None).await
    }

    /// Starts uploading, while the pull runs, the files of `dataset` `version` that a pull
    /// writes into `staging` (its staging directory), for
    /// [`commit_pulled_streamed`](Self::commit_pulled_streamed) to complete; see [`streamed`].
    pub fn stream_import(&self, staging: &Path, dataset: &DatasetId, version: VersionNo) -> StreamedImport {
        StreamedImport::start(self.blobs.clone(), staging.to_owned(), dataset.clone(), version)
    }

    /// [`commit_pulled`](Self::commit_pulled), completing the uploads `streamed` sent while
    /// the pull ran: a file with `verified` hashes whose every part was sent and acknowledged
    /// is not uploaded again; the others are, as `commit_pulled` does.
    pub async fn commit_pulled_streamed(
        &self,
        local_dir: &Path,
        version: NewVersion,
        verified: &[Option<Vec<Hash32>>],
        streamed: Option<Streamed>,
    ) -> Result<(), StoreError> {
        self.commit(local_dir, version, LocalFiles::Move, verified, streamed).await
    }

    async fn commit(
        &self,
        local_dir: &Path,
        version: NewVersion,
        files: LocalFiles,
        verified: &[Option<Vec<Hash32>>],
        streamed: Option<Streamed>,
    ) -> Result<(), StoreError> {
        let _layout = self.layout.lock().await;
        let NewVersion { signed, manifest, signer } = version;
        let m = &manifest;
        if self.number_taken(&m.dataset, m.version) {
            return Err(StoreError::Exists { dataset: m.dataset.clone(), version: m.version });
        }
        // Uploads sent while the pull ran, for this very manifest; the rest are aborted.
        let sent: Vec<Option<FileUpload>> =
            (0..m.files.len()).map(|i| streamed.as_ref().and_then(|s| s.take(i, &signed))).collect();
        drop(streamed);
        // Beside the files, under the name no file of a manifest can take, in a directory of
        // this commit's own.
        let reserved = local_dir.join(".ferry");
        std::fs::create_dir_all(&reserved)
            .map_err(|source| StoreError::Local { path: reserved.clone(), source })?;
        let scratch = tempfile::Builder::new()
            .prefix("commit-")
            .tempdir_in(&reserved)
            .map_err(|source| StoreError::Local { path: reserved.clone(), source })?;
        let uploaded = self.upload_files(local_dir, m, scratch.path(), files, verified, sent).await;
        drop(scratch);
        // Left in place when something else is in it.
        let _ = std::fs::remove_dir(&reserved);
        // Every file's data, then the directory entries naming them, before the manifest.
        self.blobs.sync(&uploaded?).await?;
        let stored = Bytes::from(signed.encode());
        drop(signed);
        let digest = SignedDigest::of(&stored);
        self.blobs.put_durable(&manifest_key(&m.dataset, m.version), stored).await?;
        let mut index = self.index.write().map_err(poisoned)?;
        let dataset = m.dataset.clone();
        let number = m.version;
        let version = StoredVersion { manifest, signer, signed: digest };
        index.entry(dataset).or_default().versions.insert(number, Arc::new(version));
        Ok(())
    }

    /// Checks each file of `m` under `local_dir` and uploads it with its chunk hashes (written
    /// into `scratch` on the way); returns the keys stored. Files whose hashes the pull verified
    /// (`verified`) are not read here, so several go at once ([`IMPORTS_IN_FLIGHT`]): into S3
    /// that keeps more parts in flight; into a local directory each is a rename anyway.
    async fn upload_files(
        &self,
        local_dir: &Path,
        m: &Manifest,
        scratch: &Path,
        files: LocalFiles,
        verified: &[Option<Vec<Hash32>>],
        sent: Vec<Option<FileUpload>>,
    ) -> Result<Vec<String>, StoreError> {
        use futures::StreamExt;
        let in_flight = if verified.iter().any(Option::is_some) { IMPORTS_IN_FLIGHT } else { 1 };
        // A file read or uploaded here takes one of `in_flight` places, which bound the memory;
        // one sent while the pull ran only waits for its last parts and is completed, holding
        // no buffer, so those all go at once: the commit's tail is one round trip, not one per
        // three files.
        let places = tokio::sync::Semaphore::new(in_flight);
        let streamed = sent.iter().filter(|s| s.is_some()).count();
        // Made first, run as they are polled (a stream mapping a closure here would not be
        // `Send` for every lifetime, as the node's tasks need).
        let mut each = Vec::with_capacity(m.files.len());
        let mut sent = sent.into_iter();
        for (index, entry) in m.files.iter().enumerate() {
            let known = verified.get(index).and_then(Option::as_deref);
            let known = Known { hashes: known, sent: sent.next().flatten() };
            each.push(self.upload_file(local_dir, m, scratch, files, (index, entry), known, &places));
        }
        let mut stored = Vec::with_capacity(2 * m.files.len());
        let mut uploads = futures::stream::iter(each).buffered(in_flight + streamed);
        while let Some(keys) = uploads.next().await {
            stored.extend(keys?);
        }
        Ok(stored)
    }

    /// [`Store::upload_files`] for file number `index`: checked (from `known` hashes, or by
    /// reading it), then stored with its chunk hashes: by completing the upload sent while the
    /// pull ran where the pull's hashes are trusted and it is whole (its chunk hashes stored
    /// meanwhile), else from the local file, in one of `places`. Returns the two keys.
    #[allow(clippy::too_many_arguments)]
    async fn upload_file(
        &self,
        local_dir: &Path,
        m: &Manifest,
        scratch: &Path,
        files: LocalFiles,
        (index, entry): (usize, &FileEntry),
        known: Known<'_>,
        places: &tokio::sync::Semaphore,
    ) -> Result<[String; 2], StoreError> {
        let mut place = match known.sent {
            Some(_) => None,
            None => places.acquire().await.ok(),
        };
        let local = entry.name.components().fold(local_dir.to_path_buf(), |p, c| p.join(c));
        let hashes = scratch.join(index.to_string());
        let (from, to) = (local.clone(), hashes.clone());
        let (chunk_size, expected) = (m.chunk_size, entry.clone());
        let Known { hashes: known, mut sent } = known;
        let known = known.map(<[Hash32]>::to_vec);
        let reading = match files {
            LocalFiles::Keep => Reading::Cached,
            LocalFiles::Move => Reading::Direct,
        };
        let checked = tokio::task::spawn_blocking(move || {
            if let Some(known) = known {
                match write_known_hashes(&from, &to, chunk_size, &expected, &known) {
                    Err(Checked::Differs(detail)) if detail == UNTRUSTED => {
                        tracing::warn!(file = %expected.name, "the chunk hashes taken as the file was written do not match the manifest; reading the file");
                    }
                    done => return done.map(|()| Trust::KnownHashes),
                }
            }
            write_chunk_hashes(&from, &to, chunk_size, &expected, reading).map(|()| Trust::ReadBack)
        })
        .await
        .map_err(|e| StoreError::Local { path: local.clone(), source: std::io::Error::other(e) });
        let checked = match checked {
            Ok(checked) => checked,
            Err(e) => {
                abort_sent(sent).await;
                return Err(e);
            }
        };
        if !matches!(checked, Ok(Trust::KnownHashes)) {
            abort_sent(sent.take()).await;
        }
        if let Err(mismatch) = checked {
            return Err(match mismatch {
                Checked::Io(source) => StoreError::Local { path: local, source },
                Checked::Differs(detail) => StoreError::FileMismatch {
                    dataset: m.dataset.clone(),
                    version: m.version,
                    name: entry.name.to_string(),
                    detail,
                },
            });
        }
        let key = file_path(&m.dataset, m.version, &entry.name);
        let hashes_key = chunk_hashes_key(&m.dataset, m.version, index);
        let mut hashes_stored = false;
        let completed = match sent {
            Some(upload) => {
                // The chunk hashes go while the last parts do: neither is seen before the
                // manifest, which is stored after both.
                let (completed, stored) =
                    futures::join!(upload.complete(), self.blobs.move_file(&hashes_key, &hashes));
                stored?;
                hashes_stored = true;
                match completed {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::info!(file = %entry.name, %why, "the upload sent while pulling is not complete; uploading the file");
                        false
                    }
                }
            }
            None => false,
        };
        if !completed && place.is_none() {
            place = places.acquire().await.ok();
        }
        match (completed, files) {
            (true, LocalFiles::Keep) => {}
            (true, LocalFiles::Move) => {
                tokio::fs::remove_file(&local)
                    .await
                    .map_err(|source| StoreError::Local { path: local, source })?;
            }
            (false, LocalFiles::Keep) => self.blobs.put_file(&key, &local).await?,
            (false, LocalFiles::Move) => self.blobs.move_file(&key, &local).await?,
        }
        drop(place);
        if !hashes_stored {
            self.blobs.move_file(&hashes_key, &hashes).await?;
        }
        Ok([key, hashes_key])
    }

    /// After a commit of `m` from `local_dir` with [`LocalFiles::Move`] stopped part-way, copies
    /// back into `local_dir` each file it had already moved into the store, so that the version
    /// can be committed again without being pulled afresh. Returns the bytes taken back, or
    /// `None` when some file is neither in `local_dir` nor in the store at its size (the copy
    /// cannot be completed). Nothing is trusted for it: the next commit reads every file taken
    /// back and checks it against the manifest.
    pub async fn take_back_moved(&self, local_dir: &Path, m: &Manifest) -> Result<Option<u64>, StoreError> {
        let _layout = self.layout.lock().await;
        let mut taken = 0;
        for entry in &m.files {
            let local = entry.name.components().fold(local_dir.to_path_buf(), |p, c| p.join(c));
            if tokio::fs::symlink_metadata(&local).await.is_ok() {
                continue;
            }
            let key = file_path(&m.dataset, m.version, &entry.name);
            match self.blobs.size(&key).await {
                Ok(size) if size == entry.size => {}
                Ok(_) | Err(BlobError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            self.copy_out(&key, entry.size, local_dir, &local).await?;
            taken += entry.size;
        }
        Ok(Some(taken))
    }

    /// Copies the object at `key` (`size` bytes) to `local`, staged in `local_dir`'s reserved
    /// `.ferry` directory, synced, then renamed into place.
    async fn copy_out(&self, key: &str, size: u64, local_dir: &Path, local: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        const WINDOW: u64 = 8 << 20;
        let staging = local_dir.join(".ferry").join("taken-back");
        let at = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Local { path, source }
        };
        for dir in [staging.parent(), local.parent()].into_iter().flatten() {
            tokio::fs::create_dir_all(dir).await.map_err(at(dir))?;
        }
        let mut file = tokio::fs::File::create(&staging).await.map_err(at(&staging))?;
        let mut offset = 0;
        while offset < size {
            let end = (offset + WINDOW).min(size);
            let bytes = self.blobs.get_range(key, offset..end).await?;
            file.write_all(&bytes).await.map_err(at(&staging))?;
            offset = end;
        }
        file.sync_all().await.map_err(at(&staging))?;
        drop(file);
        tokio::fs::rename(&staging, local).await.map_err(at(local))
    }

    /// Every version of a dataset this node holds, oldest first, for `ListVersions`.
    pub fn versions(&self, dataset: &DatasetId) -> Result<Vec<Arc<StoredVersion>>, StoreError> {
        let index = self.index.read().map_err(poisoned)?;
        let entry = index.get(dataset).ok_or_else(|| StoreError::NoDataset(dataset.clone()))?;
        Ok(entry.versions.values().cloned().collect())
    }

    /// Holds `version` of `dataset` against garbage collection until the lease is dropped.
    /// Fails if the version is not (or no longer) indexed.
    pub fn lease(&self, dataset: &DatasetId, version: VersionNo) -> Result<Lease, StoreError> {
        let mut counts = self.leases.lock().map_err(poisoned)?;
        let indexed = self
            .index
            .read()
            .map_err(poisoned)?
            .get(dataset)
            .is_some_and(|entry| entry.versions.contains_key(&version));
        if !indexed {
            return Err(StoreError::NoVersion(dataset.clone(), version));
        }
        let key = (dataset.clone(), version);
        *counts.entry(key.clone()).or_default() += 1;
        Ok(Lease { counts: self.leases.clone(), key })
    }

    /// Takes the store's layout lock (see [`Store`]); GC holds it while it deletes.
    pub(crate) async fn lock_layout(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.layout.lock().await
    }

    /// Removes a version from the index unless a reader leases it; checked and done under the
    /// lease lock, so no lease can be taken in between.
    pub(crate) fn unindex_unless_leased(
        &self,
        dataset: &DatasetId,
        version: VersionNo,
    ) -> Result<Unindexed, StoreError> {
        let counts = self.leases.lock().map_err(poisoned)?;
        if counts.contains_key(&(dataset.clone(), version)) {
            return Ok(Unindexed::Leased);
        }
        let mut index = self.index.write().map_err(poisoned)?;
        let removed = index.get_mut(dataset).and_then(|entry| entry.versions.remove(&version));
        Ok(removed.map_or(Unindexed::Absent, Unindexed::Removed))
    }

    /// Puts back a version [`Store::unindex_unless_leased`] took out (its removal failed).
    pub(crate) fn reindex(&self, version: Arc<StoredVersion>) -> Result<(), StoreError> {
        let mut index = self.index.write().map_err(poisoned)?;
        let m = &version.manifest;
        index.entry(m.dataset.clone()).or_default().versions.insert(m.version, version.clone());
        Ok(())
    }

    /// The underlying blob store (for tests and maintenance).
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }
}

/// What [`Store::upload_file`] knows of a file before reading it: its chunk hashes, taken as it
/// was written (a pull's, verified as each chunk came; a publish's writer's), and the upload a
/// pull sent while pulling.
struct Known<'a> {
    hashes: Option<&'a [Hash32]>,
    sent: Option<FileUpload>,
}

/// How a file was checked against its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// By the chunk hashes taken as it was written (the bytes a pull sent while pulling are those).
    KnownHashes,
    /// By reading it again.
    ReadBack,
}

async fn abort_sent(sent: Option<FileUpload>) {
    if let Some(upload) = sent {
        upload.abort().await;
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Open("index lock poisoned by a panicked task".into())
}

fn definition_name(text: &[u8]) -> Option<String> {
    let doc: toml::Table = std::str::from_utf8(text).ok()?.parse().ok()?;
    doc.get("name")?.as_str().map(str::to_owned)
}
