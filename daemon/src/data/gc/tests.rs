//! Garbage collection over a memory store holding real signed manifests of small synthetic
//! versions, with crashes injected by a `FaultyStore` at every step.

use super::*;
use crate::data::blob::{BlobStore, FaultyStore, ObjectBlobStore};
use crate::data::store::{LocalFiles, NewVersion};
use bytes::Bytes;
use ferry_client::pki::{self, IssueRequest};
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::manifest::{MANIFEST_FORMAT, MIN_CHUNK_SIZE};
use ferry_proto::{
    ChunkPage, DeltaCounts, DeptId, FileEntry, FileRole, Hash32, Manifest, RelPath, Role, ShareType,
    TableFile, TableLayout,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const S: VersionKind = VersionKind::Snapshot;
const D: VersionKind = VersionKind::Delta;
/// Versions 1..=7, snapshots at 1 and 5.
const SEVEN: [VersionKind; 7] = [S, D, D, D, S, D, D];

fn dataset() -> DatasetId {
    DatasetId::new("vehicle-registry").expect("id")
}

fn v(n: u64) -> VersionNo {
    VersionNo::new(n).expect("version")
}

fn facts(kinds: &[VersionKind]) -> Vec<VersionFacts> {
    (1..)
        .zip(kinds)
        .map(|(n, kind)| VersionFacts { version: v(n), kind: *kind, created_unix_ms: n as i64 * DAY_MS })
        .collect()
}

fn numbers(list: &[VersionNo]) -> Vec<u64> {
    list.iter().map(|n| n.get()).collect()
}

fn keep_last(n: u64) -> RetentionPolicy {
    RetentionPolicy { keep_last: Some(n), max_age: None }
}

fn max_age(age: Duration) -> RetentionPolicy {
    RetentionPolicy { keep_last: None, max_age: Some(age) }
}

fn retention(policy: RetentionPolicy) -> RetentionConfig {
    RetentionConfig { default: policy, ..RetentionConfig::default() }
}

/// `days` after the epoch: versions are created at day N.
fn day(days: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis((days * DAY_MS) as u64)
}

#[test]
fn gc_keep_last_keeps_the_snapshot_chain() {
    assert_eq!(numbers(&removable(&facts(&SEVEN), &keep_last(2), 0)), [1, 2, 3, 4]);
    assert_eq!(numbers(&removable(&facts(&SEVEN), &keep_last(3), 0)), [1, 2, 3, 4]);
    assert_eq!(numbers(&removable(&facts(&SEVEN), &keep_last(4), 0)), [] as [u64; 0], "4 needs snapshot 1");
    assert_eq!(numbers(&removable(&facts(&[S, D, S, S]), &keep_last(2), 0)), [1, 2]);
    assert_eq!(numbers(&removable(&facts(&[S, D, S, S]), &keep_last(1), 0)), [1, 2, 3]);
    assert!(removable(&facts(&SEVEN), &keep_last(30), 0).is_empty());
    assert!(removable(&facts(&SEVEN), &RetentionPolicy::default(), i64::MAX).is_empty());
    assert!(removable(&[], &keep_last(1), 0).is_empty());
}

#[test]
fn gc_without_a_snapshot_to_rebuild_from_keeps_everything() {
    // A mirror that holds only deltas (its snapshot went elsewhere): nothing is safe to drop.
    assert!(removable(&facts(&[D, D, D]), &keep_last(1), 0).is_empty());
}

#[test]
fn gc_max_age_removes_old_versions_but_never_the_latest() {
    let week = Duration::from_millis(7 * DAY_MS as u64);
    // At day 10, versions of day 3 and later are young: 3..=7 by policy, snapshot 1 needed for them.
    assert!(removable(&facts(&SEVEN), &max_age(week), 10 * DAY_MS).is_empty());
    // At day 12, 5..=7 are young and 5 is a snapshot.
    assert_eq!(numbers(&removable(&facts(&SEVEN), &max_age(week), 12 * DAY_MS)), [1, 2, 3, 4]);
    // Everything expired: the latest stays, with its chain.
    assert_eq!(numbers(&removable(&facts(&SEVEN), &max_age(week), 1000 * DAY_MS)), [1, 2, 3, 4]);
    assert_eq!(numbers(&removable(&facts(&[S, S, S]), &max_age(week), 1000 * DAY_MS)), [1, 2]);
    assert!(removable(&facts(&[S]), &max_age(Duration::from_millis(1)), 1000 * DAY_MS).is_empty());
    // Both limits: the stricter wins.
    let both = RetentionPolicy { keep_last: Some(6), max_age: Some(week) };
    assert_eq!(numbers(&removable(&facts(&[S, S, S, S, S, S, S]), &both, 12 * DAY_MS)), [1, 2, 3, 4]);
}

/// A CA, a node certificate that signs manifests, and the local files of the versions it makes.
struct Fixture {
    _pki: tempfile::TempDir,
    files: tempfile::TempDir,
    creds: Credentials,
    signer: ManifestSigner,
}

fn entry(role: FileRole, name: &str, bytes: &[u8]) -> FileEntry {
    let hash = Hash32(*blake3::hash(bytes).as_bytes());
    FileEntry {
        role,
        name: RelPath::parse(name).expect("name"),
        size: bytes.len() as u64,
        rows: 3,
        blake3: hash,
        // One chunk (the test files are smaller than a chunk), so one page of one hash.
        chunk_pages: if bytes.is_empty() { vec![] } else { vec![ChunkPage::digest(&hash.0)] },
    }
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        pki::init(dir.path(), "gc test CA", time::Duration::days(1)).expect("CA");
        let now = time::OffsetDateTime::now_utc();
        let request = IssueRequest {
            dept: DeptId::new("ministry").expect("dept"),
            role: Role::Ministry,
            name: "ministry".into(),
            dns_names: vec!["ministry".into()],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(1),
        };
        let (cert, key) = (dir.path().join("node.pem"), dir.path().join("node.key"));
        pki::issue(dir.path(), &request, &cert, &key).expect("issue");
        let creds = Credentials::load(&TlsPaths { ca: dir.path().join("ca.pem"), cert, key, crl: None })
            .expect("credentials");
        let signer = ManifestSigner::new(&creds).expect("signer");
        Self { _pki: dir, files: tempfile::tempdir().expect("temp dir"), creds, signer }
    }

    fn dir(&self, n: u64) -> PathBuf {
        self.files.path().join(format!("v{n}"))
    }

    /// Version `n` created at day `n`: its table file when it is a snapshot, its delta when it
    /// has a parent. Writes the files under [`Fixture::dir`].
    fn version(&self, n: u64, kind: VersionKind) -> NewVersion {
        let table_bytes = format!("table of version {n}\n").repeat(20).into_bytes();
        let table = entry(FileRole::Snapshot, "part-00000.parquet", &table_bytes);
        let mut files = Vec::new();
        let mut contents = Vec::new();
        if kind == VersionKind::Snapshot {
            files.push(table.clone());
            contents.push(table_bytes.clone());
        }
        if n > 1 {
            for (role, name) in
                [(FileRole::Upserts, "upserts-00000.parquet"), (FileRole::Deletes, "deletes-00000.parquet")]
            {
                let bytes = format!("{name} of version {n}\n").repeat(10).into_bytes();
                files.push(entry(role, name, &bytes));
                contents.push(bytes);
            }
        }
        let dir = self.dir(n);
        std::fs::create_dir_all(&dir).expect("dir");
        for (file, bytes) in files.iter().zip(&contents) {
            std::fs::write(dir.join(file.name.as_str()), bytes).expect("write");
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataset: dataset(),
            version: v(n),
            kind,
            parent: (n > 1).then(|| v(n - 1)),
            publisher: DeptId::new("ministry").expect("dept"),
            created_unix_ms: n as i64 * DAY_MS,
            schema_fingerprint: "00".repeat(32),
            definition_version: 1,
            share_type: ShareType::Unconditional,
            catalog_version: None,
            key_columns: vec!["vin".into()],
            layout: TableLayout::default(),
            writer: None,
            row_count: table.rows,
            chunk_size: MIN_CHUNK_SIZE,
            files,
            table: vec![TableFile {
                name: table.name,
                size: table.size,
                rows: table.rows,
                blake3: table.blake3,
                rows_blake3: None,
            }],
            delta: (n > 1).then_some(DeltaCounts { inserted: 1, updated: 1, deleted: 1 }),
            derived_from: None,
        };
        manifest.validate().expect("a valid manifest");
        let signed = self.signer.sign(manifest.to_json());
        NewVersion { signed, manifest, signer: self.creds.principal().clone() }
    }

    /// A memory store holding `kinds` as versions 1.., and the dataset's definition.
    async fn populated(&self, kinds: &[VersionKind]) -> Arc<dyn BlobStore> {
        let inner: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
        let store = Store::open(inner.clone(), &self.creds).await.expect("open");
        store.put_definition(&dataset(), "Vehicles", "name = \"Vehicles\"\n").await.expect("definition");
        for (n, kind) in (1..).zip(kinds) {
            store
                .commit_version(&self.dir(n), self.version(n, *kind), LocalFiles::Keep)
                .await
                .expect("commit");
        }
        inner
    }

    async fn open(&self, blobs: Arc<dyn BlobStore>) -> Store {
        Store::open(blobs, &self.creds).await.expect("open")
    }
}

/// The versions a store shows, checking each is complete: every file is there and hashes to
/// its manifest.
async fn visible_complete(store: &Store) -> Vec<u64> {
    let Ok(versions) = store.versions(&dataset()) else { return Vec::new() };
    for stored in &versions {
        let m = &stored.manifest;
        for file in &m.files {
            let key = format!("{}/{}", version_prefix(&m.dataset, m.version), file.name);
            let bytes = store.blobs().get(&key).await.unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(blake3::hash(&bytes).as_bytes(), &file.blake3.0, "{key} matches its manifest");
        }
    }
    versions.iter().map(|s| s.manifest.version.get()).collect()
}

async fn keys(blobs: &Arc<dyn BlobStore>) -> Vec<String> {
    blobs.list("datasets").await.expect("list")
}

fn has_files_of(keys: &[String], n: u64) -> bool {
    keys.iter().any(|k| k.starts_with(&format!("datasets/vehicle-registry/v{n}/")))
}

#[tokio::test]
async fn gc_keep_last_deletes_old_versions_and_keeps_the_definition() {
    let fixture = Fixture::new();
    let inner = fixture.populated(&SEVEN).await;
    let store = fixture.open(inner.clone()).await;
    let report = store.collect(&retention(keep_last(2)), day(100)).await.expect("gc");
    assert_eq!(report.deleted_versions, (1..=4).map(|n| (dataset(), v(n))).collect::<Vec<_>>());
    assert!(report.skipped_leased.is_empty());
    assert_eq!(report.deleted_orphan_files, 0);
    assert!(report.deleted_bytes > 0);
    assert_eq!(visible_complete(&store).await, [5, 6, 7]);
    assert_eq!(visible_complete(&fixture.open(inner.clone()).await).await, [5, 6, 7]);
    let left = keys(&inner).await;
    assert!((1..=4).all(|n| !has_files_of(&left, n)), "{left:?}");
    assert!(left.contains(&"datasets/vehicle-registry/definition.toml".to_owned()));
    assert_eq!(store.list()[0].name, "Vehicles");
    // A second run has nothing to do.
    assert_eq!(store.collect(&retention(keep_last(2)), day(100)).await.expect("gc"), GcReport::default());
}

#[tokio::test]
async fn gc_max_age_keeps_the_latest_version() {
    let fixture = Fixture::new();
    let inner = fixture.populated(&[S, S, S]).await;
    let store = fixture.open(inner).await;
    let policy = max_age(Duration::from_secs(86_400));
    let report = store.collect(&retention(policy), day(1000)).await.expect("gc");
    assert_eq!(report.deleted_versions.len(), 2);
    assert_eq!(visible_complete(&store).await, [3]);
    // Per-dataset overrides take precedence over the default.
    let mut config = retention(keep_last(1));
    config.datasets.insert(dataset(), RetentionPolicy::default());
    assert_eq!(config.policy(&dataset()), RetentionPolicy::default());
}

#[tokio::test]
async fn gc_skips_a_leased_version_and_collects_it_after_the_lease_drops() {
    let fixture = Fixture::new();
    let store = fixture.open(fixture.populated(&[S, S, S]).await).await;
    let lease = store.lease(&dataset(), v(1)).expect("lease v1");
    let second = store.lease(&dataset(), v(1)).expect("leases count");
    let report = store.collect(&retention(keep_last(1)), day(100)).await.expect("gc");
    assert_eq!(report.deleted_versions, [(dataset(), v(2))]);
    assert_eq!(report.skipped_leased, [(dataset(), v(1))]);
    assert_eq!(visible_complete(&store).await, [1, 3]);
    assert!(store.lease(&dataset(), v(2)).is_err(), "a collected version cannot be leased");
    drop(lease);
    let report = store.collect(&retention(keep_last(1)), day(100)).await.expect("gc");
    assert_eq!(report.skipped_leased, [(dataset(), v(1))], "one reader still holds it");
    drop(second);
    let report = store.collect(&retention(keep_last(1)), day(100)).await.expect("gc");
    assert_eq!(report.deleted_versions, [(dataset(), v(1))]);
    assert_eq!(visible_complete(&store).await, [3]);
}

#[tokio::test]
async fn gc_removes_files_no_manifest_refers_to() {
    let fixture = Fixture::new();
    let inner = fixture.populated(&[S, D]).await;
    let put = |key: &'static str| {
        let inner = inner.clone();
        async move { inner.put(key, Bytes::from_static(b"leftover")).await.expect("put") }
    };
    put("datasets/vehicle-registry/v3/part-00000.parquet").await; // an interrupted commit
    put("datasets/vehicle-registry/v1/part-00001.parquet").await; // not in v1's manifest
    put("datasets/vehicle-registry/notes.txt").await; // not in a version directory
    put("datasets/other/v1/part-00000.parquet").await; // a dataset with no version at all
    let before = keys(&inner).await;
    let store = fixture.open(inner.clone()).await;
    let report = store.collect(&retention(RetentionPolicy::default()), day(100)).await.expect("gc");
    assert!(report.deleted_versions.is_empty());
    assert_eq!(report.deleted_orphan_files, 3);
    assert_eq!(report.deleted_bytes, 3 * 8);
    let after = keys(&inner).await;
    let removed: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
    assert_eq!(
        removed,
        [
            "datasets/other/v1/part-00000.parquet",
            "datasets/vehicle-registry/v1/part-00001.parquet",
            "datasets/vehicle-registry/v3/part-00000.parquet",
        ]
    );
    assert_eq!(visible_complete(&store).await, [1, 2]);
}

/// Crashes a GC run at each of its deletions in turn: reopened, the store shows only complete
/// versions, between the old set and the new; a run without faults then converges.
#[tokio::test]
async fn gc_crashed_at_every_step_leaves_old_or_new_versions() {
    let fixture = Fixture::new();
    let old = [1, 2, 3, 4, 5, 6, 7];
    let new = [5, 6, 7];
    let config = retention(keep_last(2));
    let inner = fixture.populated(&SEVEN).await;
    inner
        .put("datasets/vehicle-registry/v8/part-00000.parquet", Bytes::from_static(b"x"))
        .await
        .expect("put");
    let counting = Arc::new(FaultyStore::counting(inner.clone()));
    fixture.open(counting.clone()).await.collect(&config, day(100)).await.expect("gc without faults");
    let total = counting.mutations();
    let converged = keys(&inner).await;
    // v1: its manifest, one file and its chunk hashes; v2..v4: a manifest, two delta files and
    // their chunk hashes; then the orphan.
    assert_eq!(total, (1 + 2) + 3 * (1 + 2 * 2) + 1, "each version's objects, and the orphan");

    for step in 0..total {
        let inner = fixture.populated(&SEVEN).await;
        inner
            .put("datasets/vehicle-registry/v8/part-00000.parquet", Bytes::from_static(b"x"))
            .await
            .expect("put");
        let faulty = Arc::new(FaultyStore::failing_at(inner.clone(), step));
        match fixture.open(faulty).await.collect(&config, day(100)).await {
            Err(StoreError::Backend(e)) if FaultyStore::is_injected(&e) => {}
            other => panic!("step {step}: gc gave {other:?}"),
        }
        let shown = visible_complete(&fixture.open(inner.clone()).await).await;
        assert!(shown.iter().all(|n| old.contains(n)), "step {step}: {shown:?}");
        assert!(new.iter().all(|n| shown.contains(n)), "step {step}: {shown:?}");
        let store = fixture.open(inner.clone()).await;
        store.collect(&config, day(100)).await.expect("gc after the crash");
        assert_eq!(visible_complete(&store).await, new, "step {step}");
        assert_eq!(keys(&inner).await, converged, "step {step}: nothing left behind");
    }
}

/// Crashes a commit at each of its writes: the store shows the old versions, GC removes what
/// the commit left, and committing again works.
#[tokio::test]
async fn gc_cleans_up_after_a_commit_crashed_at_every_step() {
    let fixture = Fixture::new();
    let before = keys(&fixture.populated(&[S, D, D]).await).await;
    let counting = Arc::new(FaultyStore::counting(fixture.populated(&[S, D, D]).await));
    let store = fixture.open(counting.clone()).await;
    store
        .commit_version(&fixture.dir(4), fixture.version(4, D), LocalFiles::Keep)
        .await
        .expect("commit without faults");
    let total = counting.mutations();
    assert_eq!(total, 5, "two delta files each with its chunk hashes, then the manifest");

    for step in 0..total {
        let inner = fixture.populated(&[S, D, D]).await;
        let faulty = Arc::new(FaultyStore::failing_at(inner.clone(), step));
        let crashed = fixture
            .open(faulty)
            .await
            .commit_version(&fixture.dir(4), fixture.version(4, D), LocalFiles::Keep)
            .await;
        assert!(
            matches!(crashed, Err(StoreError::Backend(e)) if FaultyStore::is_injected(&e)),
            "step {step}"
        );
        let store = fixture.open(inner.clone()).await;
        assert_eq!(visible_complete(&store).await, [1, 2, 3], "step {step}");
        let report = store.collect(&retention(keep_last(1)), day(100)).await.expect("gc");
        assert_eq!(report.deleted_orphan_files, step as u64, "step {step}");
        assert!(report.deleted_versions.is_empty(), "v3 needs snapshot 1: {report:?}");
        assert_eq!(keys(&inner).await, before, "step {step}");
        store
            .commit_version(&fixture.dir(4), fixture.version(4, D), LocalFiles::Keep)
            .await
            .expect("commit again");
        assert_eq!(visible_complete(&fixture.open(inner).await).await, [1, 2, 3, 4]);
    }
}

/// A commit checks every file against the manifest before uploading it: a file that changed
/// after it was described is refused, naming it, and the store is left as it was.
#[tokio::test]
async fn a_commit_refuses_a_file_that_does_not_match_its_manifest() {
    let fixture = Fixture::new();
    let inner = fixture.populated(&[S]).await;
    let before = keys(&inner).await;
    let store = fixture.open(inner.clone()).await;
    let version = fixture.version(2, D);
    let victim = fixture.dir(2).join("upserts-00000.parquet");
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes[0] ^= 1;
    std::fs::write(&victim, bytes).expect("write");
    match store.commit_version(&fixture.dir(2), version, LocalFiles::Keep).await {
        Err(StoreError::FileMismatch { name, .. }) => assert_eq!(name, "upserts-00000.parquet"),
        other => panic!("expected a file mismatch, got {other:?}"),
    }
    assert_eq!(keys(&inner).await, before, "nothing of the refused file was uploaded");
    assert_eq!(visible_complete(&fixture.open(inner).await).await, [1]);
    assert!(!fixture.dir(2).join(".ferry").exists(), "the commit's scratch directory is gone");
}
