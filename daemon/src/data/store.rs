//! The node's dataset store: versions kept in an `object_store` (local filesystem by default,
//! S3-compatible at scale), indexed in memory.
//!
//! Layout, under the store's root:
//! ```text
//! datasets/<id>/definition.toml          the definition of a dataset this node provides
//! datasets/<id>/v<N>/part-00000.parquet  the files of version N
//! datasets/<id>/v<N>/manifest.signed     written last: a version exists once this exists
//! ```
//! A crash part-way through a commit leaves files without a manifest; such a version is not
//! indexed and its number is used again by the next commit, overwriting the leftovers.

use crate::config::StorageConfig;
use bytes::Bytes;
use ferry_client::identity::PeerIdentity;
use ferry_client::sign;
use ferry_client::tls::Credentials;
use ferry_proto::{
    DatasetId, DatasetSummary, DeptId, Manifest, RelPath, ShareType, SignedManifest, VersionNo,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use tokio::io::AsyncWriteExt;

const MANIFEST_NAME: &str = "manifest.signed";
const DEFINITION_NAME: &str = "definition.toml";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(#[from] object_store::Error),
    #[error("no dataset {0}")]
    NoDataset(DatasetId),
    #[error("dataset {0} has no version {1}")]
    NoVersion(DatasetId, VersionNo),
    #[error("file {file} of {dataset} {version} has no chunk {chunk}")]
    NoChunk { dataset: DatasetId, version: VersionNo, file: u32, chunk: u32 },
    #[error("{path}: {source}")]
    Local { path: std::path::PathBuf, source: std::io::Error },
    #[error("version {version} of {dataset} already exists")]
    Exists { dataset: DatasetId, version: VersionNo },
    #[error("cannot open storage: {0}")]
    Open(String),
}

/// One committed version, as the node serves it.
#[derive(Debug)]
pub struct StoredVersion {
    pub signed: SignedManifest,
    pub manifest: Manifest,
    pub signer: PeerIdentity,
}

#[derive(Debug, Default)]
struct DatasetIndex {
    name: Option<String>,
    versions: BTreeMap<VersionNo, Arc<StoredVersion>>,
}

/// Versions in an object store plus their in-memory index.
#[derive(Debug)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    index: RwLock<BTreeMap<DatasetId, DatasetIndex>>,
}

/// Builds the object store a config names.
pub fn object_store_for(config: &StorageConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    match config {
        StorageConfig::Local(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Local { path: dir.clone(), source })?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
            Ok(Arc::new(fs))
        }
        StorageConfig::S3(s3) => {
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
            let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
            if s3.prefix.is_empty() {
                Ok(store)
            } else {
                Ok(Arc::new(object_store::prefix::PrefixStore::new(store, s3.prefix.as_str())))
            }
        }
    }
}

fn version_prefix(dataset: &DatasetId, version: VersionNo) -> ObjectPath {
    ObjectPath::from(format!("datasets/{dataset}/v{}", version.get()))
}

fn file_path(dataset: &DatasetId, version: VersionNo, name: &RelPath) -> ObjectPath {
    ObjectPath::from(format!("datasets/{dataset}/v{}/{name}", version.get()))
}

impl Store {
    /// Opens the store and indexes every committed version whose manifest verifies.
    pub async fn open(objects: Arc<dyn ObjectStore>, creds: &Credentials) -> Result<Self, StoreError> {
        let store = Self { objects, index: RwLock::new(BTreeMap::new()) };
        store.load_index(creds).await?;
        Ok(store)
    }

    async fn load_index(&self, creds: &Credentials) -> Result<(), StoreError> {
        let datasets = self.objects.list_with_delimiter(Some(&ObjectPath::from("datasets"))).await?;
        for prefix in datasets.common_prefixes {
            let Some(Ok(id)) = prefix.filename().map(DatasetId::new) else { continue };
            let mut entry = DatasetIndex::default();
            if let Ok(def) = self.objects.get(&prefix.child(DEFINITION_NAME)).await {
                let text = def.bytes().await?;
                entry.name = definition_name(&text);
            }
            let versions = self.objects.list_with_delimiter(Some(&prefix)).await?;
            for vprefix in versions.common_prefixes {
                let Some(number) = vprefix.filename().and_then(|n| n.strip_prefix('v')?.parse().ok()) else {
                    continue;
                };
                let Ok(number) = VersionNo::new(number) else { continue };
                let bytes = match self.objects.get(&vprefix.child(MANIFEST_NAME)).await {
                    Ok(got) => got.bytes().await?,
                    Err(object_store::Error::NotFound { .. }) => {
                        tracing::warn!(dataset = %id, version = %number, "ignoring a version without a manifest (interrupted commit)");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match load_version(&bytes, creds, &id, number) {
                    Ok(v) => {
                        entry.versions.insert(number, Arc::new(v));
                    }
                    Err(reason) => {
                        tracing::error!(dataset = %id, version = %number, %reason, "stored manifest fails verification; not serving it");
                    }
                }
            }
            self.index.write().map_err(poisoned)?.insert(id, entry);
        }
        Ok(())
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

    /// The number the next version of `dataset` gets.
    pub fn next_version(&self, dataset: &DatasetId) -> VersionNo {
        let latest = self
            .index
            .read()
            .ok()
            .and_then(|i| i.get(dataset).and_then(|e| e.versions.keys().next_back().copied()));
        latest.and_then(VersionNo::next).unwrap_or(VersionNo::FIRST)
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
        Ok(self.objects.get_range(&path, offset..offset + u64::from(len)).await?)
    }

    /// Stores a dataset's definition document (for providers).
    pub async fn put_definition(
        &self,
        dataset: &DatasetId,
        name: &str,
        toml_text: &str,
    ) -> Result<(), StoreError> {
        let path = ObjectPath::from(format!("datasets/{dataset}/{DEFINITION_NAME}"));
        self.objects.put(&path, PutPayload::from(toml_text.as_bytes().to_vec())).await?;
        let mut index = self.index.write().map_err(poisoned)?;
        index.entry(dataset.clone()).or_default().name = Some(name.to_owned());
        Ok(())
    }

    /// Uploads the files of a version from a local directory, then its manifest (the commit
    /// point), then indexes it. The files must already match the manifest.
    pub async fn commit_version(&self, local_dir: &Path, version: StoredVersion) -> Result<(), StoreError> {
        let m = &version.manifest;
        if self.version(&m.dataset, Some(m.version)).is_ok() {
            return Err(StoreError::Exists { dataset: m.dataset.clone(), version: m.version });
        }
        for entry in &m.files {
            let local = entry.name.components().fold(local_dir.to_path_buf(), |p, c| p.join(c));
            self.upload(&local, &file_path(&m.dataset, m.version, &entry.name)).await?;
        }
        let manifest_path = version_prefix(&m.dataset, m.version).child(MANIFEST_NAME);
        self.objects.put(&manifest_path, PutPayload::from(version.signed.encode())).await?;
        let mut index = self.index.write().map_err(poisoned)?;
        let dataset = m.dataset.clone();
        let number = m.version;
        index.entry(dataset).or_default().versions.insert(number, Arc::new(version));
        Ok(())
    }

    async fn upload(&self, local: &Path, to: &ObjectPath) -> Result<(), StoreError> {
        let local_err = |source| StoreError::Local { path: local.to_owned(), source };
        let mut file = tokio::fs::File::open(local).await.map_err(local_err)?;
        let mut writer = object_store::buffered::BufWriter::new(self.objects.clone(), to.clone());
        tokio::io::copy(&mut file, &mut writer).await.map_err(local_err)?;
        writer.shutdown().await.map_err(local_err)?;
        Ok(())
    }

    /// The underlying object store (for tests and maintenance).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Open("index lock poisoned by a panicked task".into())
}

fn definition_name(text: &[u8]) -> Option<String> {
    let doc: toml::Table = std::str::from_utf8(text).ok()?.parse().ok()?;
    doc.get("name")?.as_str().map(str::to_owned)
}

fn load_version(
    bytes: &[u8],
    creds: &Credentials,
    id: &DatasetId,
    number: VersionNo,
) -> Result<StoredVersion, String> {
    let signed = SignedManifest::decode(bytes).map_err(|e| e.to_string())?;
    let (manifest, signer) = sign::verify_signed_manifest(&signed, creds, rustls::pki_types::UnixTime::now())
        .map_err(|e| e.to_string())?;
    if &manifest.dataset != id || manifest.version != number {
        return Err(format!("manifest is for {} {}", manifest.dataset, manifest.version));
    }
    Ok(StoredVersion { signed, manifest, signer })
}

/// A dataset's share type and publisher, for the authorizer.
pub fn access_facts(version: &StoredVersion) -> (ShareType, &DeptId) {
    (version.manifest.share_type, &version.manifest.publisher)
}
