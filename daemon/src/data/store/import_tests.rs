//! Importing a pulled version with the chunk hashes its pull verified
//! ([`Store::commit_pulled`]), into a local directory: the files are moved without being read
//! again, the hashes are checked against the signed manifest first and stored as the version's
//! chunk hashes, and hashes the manifest refuses send the import back to reading the file.

use super::startup::tests::{Pki, dataset, now_ms};
use super::*;
use crate::data::blob::ObjectBlobStore;
use ferry_net::sign::ManifestSigner;
use ferry_proto::manifest::{MANIFEST_FORMAT, MIN_CHUNK_SIZE};
use ferry_proto::{DeptId, FileRole, PageHasher, ShareType, TableFile, TableLayout, VersionKind};
use std::os::unix::fs::MetadataExt;

pub(super) const NAME: &str = "part-00000.parquet";

/// A version of one file of three and a half chunks, as a pull leaves it in `dir`, and the
/// hash of each of its chunks.
struct Pulled {
    dir: tempfile::TempDir,
    version: NewVersion,
    bytes: Vec<u8>,
    hashes: Vec<Hash32>,
}

fn pulled(creds: &Credentials) -> Pulled {
    let chunk = MIN_CHUNK_SIZE as usize;
    let bytes: Vec<u8> = (0..chunk * 7 / 2).map(|i| (i * 31 % 251) as u8).collect();
    let (dir, version, hashes) = one_file_version(creds, &bytes, MIN_CHUNK_SIZE, 3);
    Pulled { dir, version, bytes, hashes }
}

/// A signed snapshot of one file `NAME` holding `bytes` (`rows` rows) in chunks of
/// `chunk_size`, the file written into a new directory as a pull leaves it: the directory, the
/// version and the hash of each chunk.
pub(super) fn one_file_version(
    creds: &Credentials,
    bytes: &[u8],
    chunk_size: u32,
    rows: u64,
) -> (tempfile::TempDir, NewVersion, Vec<Hash32>) {
    let hashes: Vec<Hash32> =
        bytes.chunks(chunk_size as usize).map(|c| Hash32(*blake3::hash(c).as_bytes())).collect();
    let mut pages = PageHasher::default();
    hashes.iter().for_each(|h| pages.push(h));
    let name = RelPath::parse(NAME).expect("name");
    let blake3 = Hash32(*blake3::hash(bytes).as_bytes());
    let size = bytes.len() as u64;
    let file = FileEntry {
        role: FileRole::Snapshot,
        name: name.clone(),
        size,
        rows,
        blake3,
        chunk_pages: pages.finish(),
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        dataset: dataset(),
        version: VersionNo::FIRST,
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
        row_count: rows,
        chunk_size,
        files: vec![file],
        table: vec![TableFile { name, size, rows, blake3, rows_blake3: None }],
        delta: None,
        derived_from: None,
        writer: None,
    };
    manifest.validate().expect("a valid manifest");
    let (signed, signer) = ManifestSigner::new(creds).expect("signer").sign_as(manifest.to_json());
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(NAME), bytes).expect("write");
    (dir, NewVersion { signed, manifest, signer }, hashes)
}

async fn local_store(creds: &Credentials) -> (tempfile::TempDir, Store) {
    let root = tempfile::tempdir().expect("temp dir");
    let blobs: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::local(root.path()).expect("local store"));
    (root, Store::open(blobs, creds).await.expect("open"))
}

fn stored_hashes(store: &Store) -> Vec<u8> {
    let key = chunk_hashes_key(&dataset(), VersionNo::FIRST, 0);
    let root = futures::executor::block_on(store.blobs().get(&key)).expect("chunk hashes stored");
    root.to_vec()
}

fn flat(hashes: &[Hash32]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// The import trusts what the pull verified: a file is moved (same inode) and not read, so
/// bytes changed on the disk after the pull are not seen here (scrub finds those).
#[tokio::test]
async fn a_pulled_file_is_moved_with_the_pull_hashes_and_not_read_again() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let (root, store) = local_store(&creds).await;
    let p = pulled(&creds);
    let local = p.dir.path().join(NAME);
    // Same size, other bytes: reading the file would refuse it.
    std::fs::write(&local, vec![0u8; p.bytes.len()]).expect("overwrite");
    let inode = std::fs::metadata(&local).expect("stat").ino();
    store.commit_pulled(p.dir.path(), p.version, &[Some(p.hashes.clone())]).await.expect("commit");
    assert!(!local.exists(), "moved out of the pull's directory");
    let stored = root.path().join("datasets/vehicle-registry/v1").join(NAME);
    assert_eq!(std::fs::metadata(&stored).expect("stored").ino(), inode, "renamed, not copied");
    assert_eq!(stored_hashes(&store), flat(&p.hashes));
    assert!(store.version(&dataset(), Some(VersionNo::FIRST)).is_ok(), "indexed");
}

/// Hashes that do not match the signed manifest are not trusted: the file is read and checked
/// as a commit without them checks it, and the manifest's hashes are what is stored.
#[tokio::test]
async fn pull_hashes_the_manifest_refuses_send_the_import_back_to_reading() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let (_root, store) = local_store(&creds).await;
    let p = pulled(&creds);
    let mut wrong = p.hashes.clone();
    wrong[1].0[0] ^= 1;
    store.commit_pulled(p.dir.path(), p.version, &[Some(wrong.clone())]).await.expect("good file");
    assert_eq!(stored_hashes(&store), flat(&p.hashes), "the hashes read from the file");

    let (_root, store) = local_store(&creds).await;
    let p = pulled(&creds);
    let mut bad = p.bytes.clone();
    bad[MIN_CHUNK_SIZE as usize + 9] ^= 1;
    std::fs::write(p.dir.path().join(NAME), bad).expect("damage");
    let missing_one = p.hashes[..2].to_vec();
    for hashes in [Some(wrong), Some(missing_one), None] {
        let copy = pulled(&creds);
        std::fs::copy(p.dir.path().join(NAME), copy.dir.path().join(NAME)).expect("copy");
        let err = store.commit_pulled(copy.dir.path(), copy.version, &[hashes]).await.expect_err("damaged");
        assert!(matches!(err, StoreError::FileMismatch { .. }), "{err}");
    }
    assert!(store.version(&dataset(), None).is_err(), "nothing indexed");
}

/// The size is checked without reading: a short copy is refused even with the right hashes.
#[tokio::test]
async fn a_pulled_file_of_another_size_is_refused() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let (_root, store) = local_store(&creds).await;
    let p = pulled(&creds);
    std::fs::write(p.dir.path().join(NAME), &p.bytes[..p.bytes.len() - 1]).expect("truncate");
    let err = store.commit_pulled(p.dir.path(), p.version, &[Some(p.hashes)]).await.expect_err("short");
    match err {
        StoreError::FileMismatch { detail, .. } => assert!(detail.contains("bytes"), "{detail}"),
        other => panic!("expected a size mismatch, got {other}"),
    }
    assert!(store.version(&dataset(), None).is_err(), "nothing indexed");
}
