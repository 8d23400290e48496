//! Uploading a pulled version's files while the pull runs ([`StreamedImport`]) and completing
//! those uploads at the commit ([`Store::commit_pulled_streamed`]), on a store in memory
//! (which takes uploads in parts as S3 does): nothing is visible before the commit, a whole
//! streamed file is not uploaded again, and a file the stream did not cover is uploaded after
//! the pull as before.

use super::import_tests::{NAME, one_file_version};
use super::startup::tests::{Pki, dataset};
use super::*;
use crate::data::blob::{ObjectBlobStore, PART_SIZE};
use ferry_proto::manifest::MAX_CHUNK_SIZE;

/// A pull's copy of a version of one file of two and a half parts and a few bytes, in `dir`
/// (as staging directory and as the finished copy), with its signed manifest beside it.
struct Copy {
    dir: tempfile::TempDir,
    version: NewVersion,
    bytes: Vec<u8>,
    hashes: Vec<Hash32>,
}

fn copy(creds: &Credentials) -> Copy {
    copy_of(creds, 7)
}

/// [`copy`], its bytes made with `seed`.
fn copy_of(creds: &Credentials, seed: usize) -> Copy {
    let bytes: Vec<u8> = (0..PART_SIZE * 5 / 2 + 12_345).map(|i| (i * seed % 253) as u8).collect();
    let (dir, version, hashes) = one_file_version(creds, &bytes, MAX_CHUNK_SIZE, 1);
    std::fs::write(dir.path().join(MANIFEST_NAME), version.signed.encode()).expect("manifest");
    Copy { dir, version, bytes, hashes }
}

async fn memory_store(creds: &Credentials) -> Store {
    Store::open(Arc::new(ObjectBlobStore::memory()), creds).await.expect("open")
}

fn stored(store: &Store) -> Vec<u8> {
    let key = file_path(&dataset(), VersionNo::FIRST, &RelPath::parse(NAME).expect("name"));
    futures::executor::block_on(store.blobs().get(&key)).expect("stored").to_vec()
}

/// Feeds `chunks` (in that order) to an import of `c` and finishes it.
async fn stream(store: &Store, c: &Copy, chunks: &[u32]) -> Option<Streamed> {
    let import = store.stream_import(c.dir.path(), &dataset(), VersionNo::FIRST);
    let feed = import.feed();
    feed.started(0);
    for &chunk in chunks {
        feed.chunk_written(0, chunk);
    }
    import.finish().await
}

/// The parts go while the pull runs (chunks announced in any order), nothing is listed until
/// the commit, and the commit completes the upload without reading the file: bytes changed on
/// the disk after the pull are not what is stored.
#[tokio::test]
async fn a_streamed_file_is_completed_at_the_commit_not_uploaded_again() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let store = memory_store(&creds).await;
    let c = copy(&creds);
    let all: Vec<u32> = (0..c.hashes.len() as u32).rev().collect();
    let streamed = stream(&store, &c, &all).await;
    assert!(streamed.is_some(), "parts were sent");
    assert!(store.blobs().list("").await.expect("list").is_empty(), "nothing visible before the commit");
    let local = c.dir.path().join(NAME);
    std::fs::write(&local, vec![0u8; c.bytes.len()]).expect("overwrite");
    let verified = [Some(c.hashes.clone())];
    store.commit_pulled_streamed(c.dir.path(), c.version, &verified, streamed).await.expect("commit");
    assert_eq!(stored(&store), c.bytes, "the bytes sent while pulling");
    assert!(!local.exists(), "the copy's file is gone, as after a move");
    assert!(store.version(&dataset(), Some(VersionNo::FIRST)).is_ok(), "indexed");
}

/// A file whose chunks were not all announced (an earlier run wrote the first) is uploaded
/// from the copy after the pull; so is one the pull's hashes do not vouch for.
#[tokio::test]
async fn a_file_the_stream_did_not_cover_is_uploaded_after_the_pull() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    for (announced, hashes_known) in [(false, true), (true, false)] {
        let store = memory_store(&creds).await;
        let c = copy(&creds);
        let first = if announced { 0 } else { 1 };
        let chunks: Vec<u32> = (first..c.hashes.len() as u32).collect();
        let streamed = stream(&store, &c, &chunks).await;
        let verified = [hashes_known.then(|| c.hashes.clone())];
        store.commit_pulled_streamed(c.dir.path(), c.version, &verified, streamed).await.expect("commit");
        assert_eq!(stored(&store), c.bytes, "announced {announced}, hashes known {hashes_known}");
    }
}

/// A pull that fails drops its import: nothing is listed, and a later commit of the copy
/// (without a stream) stores it whole.
#[tokio::test]
async fn an_abandoned_import_leaves_nothing_visible() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let store = memory_store(&creds).await;
    let c = copy(&creds);
    let import = store.stream_import(c.dir.path(), &dataset(), VersionNo::FIRST);
    let feed = import.feed();
    feed.started(0);
    (0..c.hashes.len() as u32).for_each(|chunk| feed.chunk_written(0, chunk));
    drop(import);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(store.blobs().list("").await.expect("list").is_empty(), "nothing visible");
    store.commit_pulled(c.dir.path(), c.version, &[Some(c.hashes.clone())]).await.expect("commit");
    assert_eq!(stored(&store), c.bytes);
}

/// Parts cut by another manifest than the one committed are not completed.
#[tokio::test]
async fn parts_cut_by_another_manifest_are_not_used() {
    let pki = Pki::new();
    let creds = pki.node("ministry");
    let store = memory_store(&creds).await;
    let c = copy(&creds);
    let streamed = stream(&store, &c, &(0..c.hashes.len() as u32).collect::<Vec<_>>()).await;
    // Another version 1 of the dataset, of other bytes, in the same place.
    let other = copy_of(&creds, 11);
    std::fs::write(c.dir.path().join(NAME), &other.bytes).expect("other bytes");
    let verified = [Some(other.hashes.clone())];
    let local = c.dir.path().join(NAME);
    store.commit_pulled_streamed(c.dir.path(), other.version, &verified, streamed).await.expect("commit");
    assert_eq!(stored(&store), other.bytes);
    assert!(!local.exists());
}
