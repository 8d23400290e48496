//! Start-up loading over a memory store holding real signed manifests: versions signed before
//! a certificate rotation stay served, versions that truly fail are set aside, and no number is
//! used twice.

use super::*;
use crate::data::blob::{BlobStore, ObjectBlobStore};
use crate::data::store::{LocalFiles, NewVersion};
use ferry_client::pki::{self, IssueRequest, RevocationReason};
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::TlsPaths;
use ferry_proto::manifest::{MANIFEST_FORMAT, MIN_CHUNK_SIZE};
use ferry_proto::{
    ChunkPage, DeptId, FileEntry, FileRole, Hash32, RelPath, Role, ShareType, TableFile, TableLayout,
    VersionKind,
};
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};

pub(crate) fn dataset() -> DatasetId {
    DatasetId::new("vehicle-registry").expect("id")
}

fn v(n: u64) -> VersionNo {
    VersionNo::new(n).expect("version")
}

/// A CA with a CRL and the node certificates it issued.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    files: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        pki::init(dir.path(), "start-up test CA", Duration::days(2)).expect("CA");
        Self { dir, files: tempfile::tempdir().expect("temp dir") }
    }

    /// A ministry node certificate called `name`.
    pub(crate) fn node(&self, name: &str) -> Credentials {
        let now = OffsetDateTime::now_utc();
        let request = IssueRequest {
            dept: DeptId::new("ministry").expect("dept"),
            role: Role::Ministry,
            name: "ministry".into(),
            dns_names: vec!["ministry".into()],
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(1),
        };
        let (cert, key) =
            (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}.key")));
        pki::issue(self.dir.path(), &request, &cert, &key).expect("issue");
        let crl = Some(self.dir.path().join("crl.pem"));
        Credentials::load(&TlsPaths { ca: self.dir.path().join("ca.pem"), cert, key, crl })
            .expect("credentials")
    }

    fn revoke(&self, creds: &Credentials, reason: RevocationReason, at: OffsetDateTime) {
        let serial = pki::serial_of_cert_file(&creds.paths().cert).expect("serial");
        pki::revoke(self.dir.path(), &serial, reason, at).expect("revoke");
    }

    /// Version `n`: one table file, signed by `creds`, its file under a directory of its own.
    fn version(&self, creds: &Credentials, n: u64) -> (PathBuf, NewVersion) {
        let bytes = format!("table of version {n}\n").repeat(20).into_bytes();
        let hash = Hash32(*blake3::hash(&bytes).as_bytes());
        let name = RelPath::parse("part-00000.parquet").expect("name");
        let file = FileEntry {
            role: FileRole::Snapshot,
            name: name.clone(),
            size: bytes.len() as u64,
            rows: 3,
            blake3: hash,
            chunk_pages: vec![ChunkPage::digest(&hash.0)],
        };
        let dir = self.files.path().join(format!("v{n}-{}", creds.principal().serial));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(name.as_str()), &bytes).expect("write");
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataset: dataset(),
            version: v(n),
            kind: VersionKind::Snapshot,
            parent: None,
            publisher: DeptId::new("ministry").expect("dept"),
            created_unix_ms: now_ms(),
            schema_fingerprint: "00".repeat(32),
            definition_version: 1,
            share_type: ShareType::Unconditional,
            catalog_version: None,
            key_columns: vec!["vin".into()],
            layout: TableLayout::default(),
            row_count: 3,
            chunk_size: MIN_CHUNK_SIZE,
            files: vec![file.clone()],
            table: vec![TableFile { name, size: file.size, rows: 3, blake3: hash, rows_blake3: None }],
            delta: None,
            derived_from: None,
            writer: None,
        };
        manifest.validate().expect("a valid manifest");
        let (signed, signer) = ManifestSigner::new(creds).expect("signer").sign_as(manifest.to_json());
        (dir, NewVersion { signed, manifest, signer })
    }

    /// Commits versions `numbers` signed by `creds` into `blobs`.
    async fn commit(
        &self,
        blobs: &Arc<dyn BlobStore>,
        creds: &Credentials,
        numbers: std::ops::RangeInclusive<u64>,
    ) {
        let store = Store::open(blobs.clone(), creds).await.expect("open");
        for n in numbers {
            let (dir, version) = self.version(creds, n);
            store.commit_version(&dir, version, LocalFiles::Keep).await.expect("commit");
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_millis()).expect("ms")
}

fn numbers(store: &Store) -> Vec<u64> {
    store.versions(&dataset()).expect("dataset").iter().map(|s| s.manifest.version.get()).collect()
}

fn aside(store: &Store) -> Vec<u64> {
    store.set_aside().iter().map(|s| s.version.get()).collect()
}

fn key(n: u64, name: &str) -> String {
    format!("datasets/vehicle-registry/v{n}/{name}")
}

#[tokio::test]
async fn versions_signed_before_a_superseded_revocation_stay_and_the_next_number_follows() {
    let pki = Pki::new();
    let old = pki.node("ministry-old");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    pki.commit(&blobs, &old, 1..=3).await;
    // The node gets a new certificate; the old one is revoked as superseded (the CRL has whole
    // seconds, so the revocation is dated after the signatures).
    pki.revoke(&old, RevocationReason::Superseded, OffsetDateTime::now_utc() + Duration::seconds(2));
    let new = pki.node("ministry-new");
    let store = Store::open(blobs.clone(), &new).await.expect("open");
    assert!(!new.crls().is_empty());
    assert_eq!(numbers(&store), [1, 2, 3]);
    assert!(aside(&store).is_empty());
    assert_eq!(store.next_version(&dataset()), v(4));
}

#[tokio::test]
async fn versions_of_a_compromised_key_are_set_aside_and_their_numbers_stay_taken() {
    let pki = Pki::new();
    let old = pki.node("ministry-old");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    pki.commit(&blobs, &old, 1..=2).await;
    pki.revoke(&old, RevocationReason::KeyCompromise, OffsetDateTime::now_utc() + Duration::seconds(2));
    let new = pki.node("ministry-new");
    let store = Store::open(blobs.clone(), &new).await.expect("open");
    assert!(store.versions(&dataset()).expect("dataset").is_empty());
    assert_eq!(aside(&store), [1, 2]);
    assert_eq!(store.next_version(&dataset()), v(3));
    let note = blobs.get(&set_aside_note_key(&dataset(), v(2))).await.expect("a note beside the files");
    assert!(String::from_utf8_lossy(&note).contains("revoked"), "{note:?}");
    // A commit of a set-aside number is refused; its files are untouched.
    let before = blobs.get(&key(2, MANIFEST_NAME)).await.expect("manifest");
    let (dir, version) = pki.version(&new, 2);
    let err = store.commit_version(&dir, version, LocalFiles::Keep).await.expect_err("number taken");
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    assert_eq!(blobs.get(&key(2, MANIFEST_NAME)).await.expect("manifest"), before);
}

#[tokio::test]
async fn a_tampered_manifest_is_set_aside_and_the_next_publish_does_not_take_its_number() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    pki.commit(&blobs, &creds, 1..=3).await;
    let mut manifest = blobs.get(&key(3, MANIFEST_NAME)).await.expect("manifest").to_vec();
    let last = manifest.len() - 1;
    manifest[last] ^= 1;
    blobs.put(&key(3, MANIFEST_NAME), Bytes::from(manifest)).await.expect("tamper");
    let store = Store::open(blobs.clone(), &creds).await.expect("open");
    assert_eq!(numbers(&store), [1, 2]);
    assert_eq!(aside(&store), [3]);
    assert_eq!(store.next_version(&dataset()), v(4));
    let (dir, version) = pki.version(&creds, 4);
    store.commit_version(&dir, version, LocalFiles::Keep).await.expect("v4 commits");
    assert_eq!(numbers(&store), [1, 2, 4]);
}

#[tokio::test]
async fn a_version_missing_a_file_or_with_a_wrong_size_is_set_aside_until_it_is_whole_again() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    pki.commit(&blobs, &creds, 1..=3).await;
    let part = blobs.get(&key(1, "part-00000.parquet")).await.expect("part");
    blobs.delete(&key(1, "part-00000.parquet")).await.expect("lose a file");
    blobs.put(&key(2, "part-00000.parquet"), part.slice(..10)).await.expect("truncate a file");
    blobs.delete(&key(3, ".ferry/chunk-hashes/0")).await.expect("lose chunk hashes");
    let store = Store::open(blobs.clone(), &creds).await.expect("open");
    assert!(store.versions(&dataset()).expect("dataset").is_empty());
    let reasons: Vec<String> = store.set_aside().into_iter().map(|s| s.reason).collect();
    assert!(reasons[0].contains("part-00000.parquet is missing"), "{reasons:?}");
    assert!(reasons[1].contains("is 10 bytes"), "{reasons:?}");
    assert!(reasons[2].contains("chunk hashes of part-00000.parquet is missing"), "{reasons:?}");
    assert_eq!(store.next_version(&dataset()), v(4));
    drop(store);

    // Put back, v1 passes again and its note goes.
    blobs.put(&key(1, "part-00000.parquet"), part).await.expect("restore");
    let store = Store::open(blobs.clone(), &creds).await.expect("open");
    assert_eq!(numbers(&store), [1]);
    assert_eq!(aside(&store), [2, 3]);
    assert!(blobs.get(&set_aside_note_key(&dataset(), v(1))).await.is_err(), "note removed");
}

#[tokio::test]
async fn an_interrupted_commit_is_not_a_version_and_its_number_is_taken_again() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    pki.commit(&blobs, &creds, 1..=2).await;
    blobs.delete(&key(2, MANIFEST_NAME)).await.expect("as if the commit stopped before its manifest");
    let store = Store::open(blobs, &creds).await.expect("open");
    assert_eq!(numbers(&store), [1]);
    assert!(aside(&store).is_empty());
    assert_eq!(store.next_version(&dataset()), v(2));
}
