//! Storage against a real S3-compatible server, a Garage started for the test (see
//! `ferry_testkit::garage`): the blob conformance suite (memory and the local filesystem run it
//! in the daemon's unit tests), a node keeping its versions in Garage, and commits crashed at
//! every step by a `FaultyStore`.

use ferry_daemon::data::blob::{BlobStore, FaultyStore, ObjectBlobStore, conformance};
use ferry_daemon::data::store::{LocalFiles, NewVersion, Store, StoreError};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Role, SignedManifest, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, garage, publish_vehicles};
use std::sync::Arc;

/// Three files per version, so a commit has several steps to crash at.
const SMALL_FILES: &str = "[transfer]\nrows-per-file = 10000\nchunk-size = \"64KiB\"\n";

async fn start_garage(test: &str) -> Option<garage::Garage> {
    let test = test.to_owned();
    tokio::task::spawn_blocking(move || garage::start_or_skip(&test)).await.expect("garage start task")
}

fn s3(garage: &garage::Garage, prefix: &str) -> Arc<dyn BlobStore> {
    Arc::new(ObjectBlobStore::s3(&garage.s3_config(prefix)).expect("S3 store"))
}

#[tokio::test]
async fn storage_conformance_garage() {
    let Some(garage) = start_garage("storage_conformance_garage").await else { return };
    conformance::run_all(s3(&garage, "")).await;
}

/// A node's `prefix` confines it to part of a shared bucket.
#[tokio::test]
async fn storage_conformance_garage_under_a_prefix() {
    let Some(garage) = start_garage("storage_conformance_garage_under_a_prefix").await else { return };
    conformance::run_all(s3(&garage, "nodes/province-a")).await;
    let keys = s3(&garage, "").list("").await.expect("list the bucket");
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("nodes/province-a/conformance/")), "{keys:?}");
}

/// Reads every chunk of every file of a version back through the store and checks its BLAKE3.
async fn assert_reads_back(store: &Store, dataset: &DatasetId, version: VersionNo) {
    let stored = store.version(dataset, Some(version)).expect("version is indexed");
    for (index, file) in stored.manifest.files.iter().enumerate() {
        let mut hasher = blake3::Hasher::new();
        let index = u32::try_from(index).expect("few files");
        let mut hashes = Vec::new();
        for page in 0..u32::try_from(file.chunk_pages.len()).expect("few pages") {
            hashes.extend_from_slice(
                &store.read_chunk_hashes(&stored, index, page).await.expect("read hashes"),
            );
        }
        let chunks = u32::try_from(stored.manifest.chunk_count(file.size)).expect("few chunks");
        assert_eq!(hashes.len(), chunks as usize * 32, "one hash per chunk of {}", file.name);
        for chunk in 0..chunks {
            let bytes = store.read_chunk(&stored, index, chunk).await.expect("read chunk");
            let at = chunk as usize * 32;
            assert_eq!(
                blake3::hash(&bytes).as_bytes(),
                &hashes[at..at + 32],
                "chunk {chunk} of {}",
                file.name
            );
            hasher.update(&bytes);
        }
        assert_eq!(hasher.finalize().as_bytes(), &file.blake3.0, "{} reads back as published", file.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_keeps_versions_in_garage_across_restart() {
    let Some(garage) = start_garage("node_keeps_versions_in_garage_across_restart").await else { return };
    let pki = TestPki::new();
    let storage = garage.storage_toml("ministry");
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    spec.storage = Some(&storage);
    let mut ministry = TestNode::start(&pki, spec).await;
    let published = publish_vehicles(&ministry, "vehicle-registry", 25_000, 7).await;
    assert!(!ministry.dir.path().join("data").exists(), "nothing kept on local disk");

    let keys = s3(&garage, "").list("ministry/datasets/vehicle-registry").await.expect("list bucket");
    let manifest = format!("ministry/datasets/vehicle-registry/v{}/manifest.signed", published.version.get());
    assert!(keys.contains(&manifest), "{keys:?}");
    assert!(keys.iter().filter(|k| k.ends_with(".parquet")).count() >= 3, "{keys:?}");

    let addr = ministry.addr();
    ministry.stop().await;
    ministry.restart(addr).await;
    let store = ministry.running.as_ref().expect("running").store();
    let dataset = DatasetId::new("vehicle-registry").expect("id");
    assert_eq!(store.list().len(), 1, "the index is rebuilt from Garage");
    assert_reads_back(store, &dataset, published.version).await;
}

/// A published version, its files on local disk, and credentials that verify it.
struct Source {
    _pki: TestPki,
    node: TestNode,
    version: NewVersion,
    creds: Credentials,
}

impl Source {
    async fn publish() -> Self {
        let pki = TestPki::new();
        let mut spec = NodeSpec::new("ministry", Role::Ministry);
        spec.extra = SMALL_FILES;
        let node = TestNode::start(&pki, spec).await;
        let published = publish_vehicles(&node, "vehicle-registry", 25_000, 11).await;
        let store = node.running.as_ref().expect("running").store();
        let stored = store.version(&dataset(), None).expect("v");
        assert_eq!(stored.manifest.version, published.version);
        let signed = store.signed_manifest(&stored).await.expect("stored manifest reads back");
        let signed = SignedManifest::decode(&signed).expect("stored manifest decodes");
        let version = NewVersion { signed, manifest: stored.manifest.clone(), signer: stored.signer.clone() };
        let creds = Credentials::load(&node.config.tls).expect("credentials");
        Self { _pki: pki, node, version, creds }
    }

    fn version(&self) -> NewVersion {
        copy(&self.version)
    }

    fn files(&self) -> std::path::PathBuf {
        self.node.version_dir("vehicle-registry", self.version.manifest.version.get())
    }
}

fn copy(v: &NewVersion) -> NewVersion {
    NewVersion { signed: v.signed.clone(), manifest: v.manifest.clone(), signer: v.signer.clone() }
}

fn dataset() -> DatasetId {
    DatasetId::new("vehicle-registry").expect("id")
}

/// Crashes `commit_version` at each of its writes in turn: the store, reopened, never shows the
/// half-written version, and committing it again overwrites the leftovers.
async fn commit_crashed_at_every_step(fresh: impl Fn(&str) -> Arc<dyn BlobStore>) {
    let source = Source::publish().await;
    let number = source.version.manifest.version;
    let counting = Arc::new(FaultyStore::counting(fresh("count")));
    let store = Store::open(counting.clone(), &source.creds).await.expect("open");
    store
        .commit_version(&source.files(), source.version(), LocalFiles::Keep)
        .await
        .expect("commit without faults");
    let total = counting.mutations();
    let files = source.version.manifest.files.len();
    assert_eq!(total, 2 * files + 1, "a put per file and one for its chunk hashes, then the manifest");

    for step in 0..total {
        let inner = fresh(&format!("step-{step}"));
        let faulty = Arc::new(FaultyStore::failing_at(inner.clone(), step));
        let store = Store::open(faulty, &source.creds).await.expect("open");
        match store.commit_version(&source.files(), source.version(), LocalFiles::Keep).await {
            Err(StoreError::Backend(e)) if FaultyStore::is_injected(&e) => {}
            other => panic!("step {step}: commit gave {other:?}"),
        }
        let reopened = Store::open(inner.clone(), &source.creds).await.expect("reopen after crash");
        assert!(
            reopened.version(&dataset(), Some(number)).is_err(),
            "step {step}: half a version is visible"
        );
        assert!(reopened.list().is_empty(), "step {step}");
        reopened
            .commit_version(&source.files(), source.version(), LocalFiles::Keep)
            .await
            .expect("commit again");
        let recovered = Store::open(inner, &source.creds).await.expect("reopen after retry");
        assert_reads_back(&recovered, &dataset(), number).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_crashed_at_every_step_in_memory() {
    commit_crashed_at_every_step(|_| Arc::new(ObjectBlobStore::memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_crashed_at_every_step_in_garage() {
    let Some(garage) = start_garage("commit_crashed_at_every_step_in_garage").await else { return };
    commit_crashed_at_every_step(|prefix| s3(&garage, prefix)).await;
}

/// Copies the version's files out of the publishing node, as a pull would leave them.
fn pulled_copy(source: &Source, into: &std::path::Path) -> Vec<std::path::PathBuf> {
    source
        .version
        .manifest
        .files
        .iter()
        .map(|entry| {
            let (from, to) = (source.files().join(entry.name.as_str()), into.join(entry.name.as_str()));
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&from, &to).expect("copy a file of the version");
            to
        })
        .collect()
}

/// A node importing a version it pulled moves the files: into a local store on the same
/// filesystem each is renamed (the object is the pulled file's inode, nothing is copied), and
/// the pulled directory keeps none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_moving_renames_into_a_local_store() {
    use std::os::unix::fs::MetadataExt;
    let source = Source::publish().await;
    let number = source.version.manifest.version;
    let work = tempfile::tempdir().expect("temp dir");
    let pulled = work.path().join("pulled");
    let files = pulled_copy(&source, &pulled);
    let inodes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).expect("stat").ino()).collect();
    let store_dir = work.path().join("store");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::local(&store_dir).expect("local store"));
    let store = Store::open(blobs.clone(), &source.creds).await.expect("open");
    store.commit_version(&pulled, source.version(), LocalFiles::Move).await.expect("commit moving");

    for ((file, inode), entry) in files.iter().zip(&inodes).zip(&source.version.manifest.files) {
        assert!(!file.exists(), "{} is still in the pulled directory", entry.name);
        let stored = store_dir.join(format!("datasets/vehicle-registry/v{}/{}", number.get(), entry.name));
        assert_eq!(
            std::fs::metadata(&stored).expect("stored file").ino(),
            *inode,
            "{} was renamed",
            entry.name
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&pulled).expect("read pulled dir").collect();
    assert!(leftovers.is_empty(), "nothing of the commit is left: {leftovers:?}");
    let reopened = Store::open(blobs, &source.creds).await.expect("reopen");
    assert_reads_back(&reopened, &dataset(), number).await;
}

/// Moving into S3 uploads each file and then removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_moving_uploads_to_garage() {
    let Some(garage) = start_garage("commit_moving_uploads_to_garage").await else { return };
    let source = Source::publish().await;
    let work = tempfile::tempdir().expect("temp dir");
    let files = pulled_copy(&source, work.path());
    let store = Store::open(s3(&garage, "moved"), &source.creds).await.expect("open");
    store.commit_version(work.path(), source.version(), LocalFiles::Move).await.expect("commit moving");
    assert!(files.iter().all(|f| !f.exists()), "every file was moved");
    let reopened = Store::open(s3(&garage, "moved"), &source.creds).await.expect("reopen");
    assert_reads_back(&reopened, &dataset(), source.version.manifest.version).await;
}

/// The node keeps a digest of each stored signed manifest, not the manifest: `GetManifest` reads
/// it back, and a stored form that changed since it was verified is refused, not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_manifest_is_served_only_as_verified() {
    let source = Source::publish().await;
    let number = source.version.manifest.version;
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let store = Store::open(blobs.clone(), &source.creds).await.expect("open");
    store.commit_version(&source.files(), source.version(), LocalFiles::Keep).await.expect("commit");
    let stored = store.version(&dataset(), Some(number)).expect("indexed");
    let read = store.signed_manifest(&stored).await.expect("reads back");
    assert_eq!(&read[..], &source.version.signed.encode()[..], "the stored form, byte for byte");
    assert_eq!(stored.signed.len, read.len() as u64);

    // Something else put in its place after the node verified it: the body with a byte more.
    let key = format!("datasets/vehicle-registry/v{}/manifest.signed", number.get());
    let mut other = source.version.signed.clone();
    other.body.extend_from_slice(b"\n");
    blobs.put(&key, bytes::Bytes::from(other.encode())).await.expect("overwrite");
    match store.signed_manifest(&stored).await {
        Err(StoreError::ManifestChanged { dataset: id, version, .. }) => {
            assert_eq!((id, version), (dataset(), number));
        }
        other => panic!("a changed manifest gave {other:?}"),
    }
}
