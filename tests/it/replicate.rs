//! Node-to-node replication: the receiving node pulls into its state directory and moves the
//! verified files into its store, leaving no copy behind, an import cut short is pulled
//! afresh rather than committed from what is left, and a corrupted chunk is refused (the
//! import takes the hashes the pull verified, so the pull's check is the one that counts).

use super::pull::{SMALL_FILES, ministry_and_province, ministry_with_a_flipped_byte};
use ferry_client::conn::ClientError;
use ferry_client::transfer::version_dir;
use ferry_proto::{DatasetId, ErrorCode, Message, Role, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicles};
use std::os::unix::fs::MetadataExt;

fn dataset() -> DatasetId {
    DatasetId::new("vehicle-registry").unwrap()
}

fn replicate(version: Option<VersionNo>) -> Message {
    Message::Replicate { peer: "ministry".into(), dataset: dataset(), version }
}

/// Every file of `version` on `node` has the BLAKE3 of the same file on `ministry`.
fn assert_same_files(node: &TestNode, ministry: &TestNode, version: u64) {
    let theirs = ministry.version_dir("vehicle-registry", version);
    let ours = node.version_dir("vehicle-registry", version);
    let mut names = 0;
    for entry in std::fs::read_dir(&theirs).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().ends_with(".parquet") {
            assert_eq!(hash_file(&ours.join(&name)), hash_file(&theirs.join(&name)), "{name:?}");
            names += 1;
        }
    }
    assert!(names >= 2, "the version has several files ({names})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_moves_the_pulled_copy_into_the_store() {
    let pki = TestPki::new();
    let (ministry, province) = ministry_and_province(&pki).await;
    publish_vehicles(&ministry, "vehicle-registry", 25_000, 3).await;
    publish_vehicles(&ministry, "vehicle-registry", 25_000, 4).await;
    let incoming = province.config.state_dir.join("incoming");
    let ops = province.operator_session().await;

    let answer = ops.request(&replicate(Some(VersionNo::FIRST))).await.unwrap();
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");
    assert_same_files(&province, &ministry, 1);
    assert!(!version_dir(&incoming, &dataset(), VersionNo::FIRST).exists(), "no copy is left behind");
    // The store shares no file with the state directory: one name each.
    for entry in std::fs::read_dir(province.version_dir("vehicle-registry", 1)).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert!(!meta.is_file() || meta.nlink() == 1);
    }

    // What an import of v2 cut short leaves: its directory without the manifest (removed first)
    // and some of the files. The next replication pulls v2 afresh and commits it whole.
    let cut = version_dir(&incoming, &dataset(), VersionNo::new(2).unwrap());
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::write(cut.join("part-00001.parquet"), b"what an interrupted import left").unwrap();
    let answer = ops.request(&replicate(None)).await.unwrap();
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");
    assert_same_files(&province, &ministry, 2);
    assert!(!cut.exists(), "the leftover was removed and the new copy moved into the store");
    let left: Vec<_> = std::fs::read_dir(cut.parent().unwrap()).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "nothing is set aside in incoming/: {left:?}");
    let stored = province.running.as_ref().unwrap().store().versions(&dataset()).unwrap();
    assert_eq!(stored.iter().map(|v| v.manifest.version.get()).collect::<Vec<_>>(), [1, 2]);
}

/// A byte flipped in a file the peer serves: the replication is refused as invalid data, the
/// store gains nothing, and nothing of the bad copy is left under the version's final name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_refuses_a_corrupted_chunk_and_commits_nothing() {
    let pki = TestPki::new();
    let ministry = ministry_with_a_flipped_byte(&pki, "part-00001.parquet", 64 * 1024 + 100).await;
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.extra = SMALL_FILES;
    spec.peers = vec![("ministry", ministry.addr())];
    let province = TestNode::start(&pki, spec).await;
    let ops = province.operator_session().await;
    let refused = ops.request(&replicate(None)).await.expect_err("a corrupted chunk is refused");
    let ClientError::Remote { code, message } = refused else { panic!("{refused}") };
    assert_eq!(code, ErrorCode::InvalidData, "{message}");
    assert!(message.contains("part-00001.parquet") && message.contains("chunk 1"), "{message}");
    let store = province.running.as_ref().unwrap().store();
    assert!(store.version(&dataset(), None).is_err(), "nothing committed");
    let incoming = province.config.state_dir.join("incoming");
    assert!(!version_dir(&incoming, &dataset(), VersionNo::FIRST).exists(), "no finished copy");
    assert!(province.metric("ferry_transfer_verify_failures_total").await >= 1.0);
}
