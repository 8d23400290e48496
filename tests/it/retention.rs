//! Retention on real nodes: garbage collection drops versions past `keep-last` but keeps the
//! snapshot their successors are built from, and a consumer holding a collected version falls
//! back to that snapshot by itself.

use super::pull::{SMALL_FILES, read_manifest};
use ferry_client::transfer::list_versions;
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Role, VersionKind, VersionNo};
use ferry_tables::synth;
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicle_batches};
use std::time::Duration;

fn dataset() -> DatasetId {
    DatasetId::new("vehicle-registry").unwrap()
}

async fn listed_versions(node: &TestNode) -> Vec<u64> {
    let session = node.operator_session().await;
    let versions = list_versions(&session, &dataset()).await.unwrap();
    session.close();
    versions.iter().map(|v| v.version.get()).collect()
}

/// Publishes the tables of `days`: day 0 a generated registry, each later day a small edit of
/// the day before (the same tables whichever days are published).
async fn publish_days(node: &TestNode, days: std::ops::Range<u64>) {
    let mut table: Vec<_> = synth::vehicle_registry(31, 12_000).collect();
    for day in 0..days.end {
        if day > 0 {
            table = synth::edit_vehicle_registry(&table, 300 + day, 0.01).unwrap().batches;
        }
        if days.contains(&day) {
            publish_vehicle_batches(node, "vehicle-registry", table.clone()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_snapshot_chain_and_consumers_fall_back_to_it() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    let extra = format!("{SMALL_FILES}[publish]\nsnapshot-every = 3\n[retention]\nkeep-last = 2\n");
    spec.extra = &extra;
    let ministry = TestNode::start(&pki, spec).await;
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr())];
    let province = TestNode::start(&pki, spec).await;
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();

    publish_days(&ministry, 0..1).await;
    let held = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), None).await;
    assert_eq!(held.version.get(), 1);
    let replicate =
        |version| ferry_proto::Message::Replicate { peer: "ministry".into(), dataset: dataset(), version };
    let ops = province.operator_session().await;
    ops.request(&replicate(None)).await.unwrap();
    publish_days(&ministry, 1..6).await;
    let kinds: Vec<_> =
        (1..=6).map(|n| read_manifest(&ministry.version_dir("vehicle-registry", n)).kind).collect();
    use VersionKind::{Delta as D, Snapshot as S};
    assert_eq!(kinds, [S, D, D, S, D, D]);

    // keep-last 2 keeps 5 and 6; 5 is a delta, so snapshot 4 stays too.
    let running = ministry.running.as_ref().unwrap();
    let report = running.collect_garbage().await.unwrap();
    let deleted: Vec<u64> = report.deleted_versions.iter().map(|(_, v)| v.get()).collect();
    assert_eq!(deleted, [1, 2, 3]);
    assert!(report.skipped_leased.is_empty());
    assert_eq!(listed_versions(&ministry).await, [4, 5, 6]);
    for n in 1..=3 {
        assert!(!ministry.version_dir("vehicle-registry", n).exists(), "v{n} is gone from disk");
    }
    assert_eq!(ministry.metric("ferry_gc_deleted_versions_total").await, 3.0);
    assert!(ministry.metric("ferry_gc_deleted_bytes_total").await > 0.0);

    // The user holding v1 cannot chain deltas from it any more: it starts over from v4's table.
    let update = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), None).await;
    assert_eq!(update.from.map(VersionNo::get), Some(1));
    assert_eq!(update.version.get(), 6);
    assert!(update.fell_back_to_snapshot);
    assert_eq!(update.steps, ["table v4", "delta v5", "delta v6"]);
    let m6 = read_manifest(&ministry.version_dir("vehicle-registry", 6));
    for f in &m6.table {
        assert_eq!(hash_file(&update.path.join(f.name.as_str())), f.blake3.0, "{}", f.name);
    }

    // The province node, holding v1 too, mirrors from snapshot v4 and counts the fallback.
    let answer = ops.request(&replicate(None)).await.unwrap();
    assert!(matches!(answer, ferry_proto::Message::Replicated { .. }), "{answer:?}");
    assert_eq!(province.metric("ferry_transfer_snapshot_fallbacks_total").await, 1.0);
    assert_eq!(read_manifest(&province.version_dir("vehicle-registry", 6)), m6);

    // Nothing is left to collect.
    let again = running.collect_garbage().await.unwrap();
    assert!(again.deleted_versions.is_empty() && again.deleted_orphan_files == 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_every_gc_interval() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    let extra = format!(
        "{SMALL_FILES}[publish]\nsnapshot-every = 1\n[retention]\ngc-interval = \"200ms\"\n\
         [retention.datasets.vehicle-registry]\nkeep-last = 1\n"
    );
    spec.extra = &extra;
    let ministry = TestNode::start(&pki, spec).await;
    publish_days(&ministry, 0..2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // v1 leaves the list when its manifest is deleted; its files go right after.
    let v1 = ministry.version_dir("vehicle-registry", 1);
    while listed_versions(&ministry).await != [2] || v1.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the periodic run never removed v1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
