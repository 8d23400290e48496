//! Versions as deltas: a changed export publishes only the change, nodes mirror it, consumers
//! apply it and get the publisher's table byte for byte (or, with another Parquet writer, row for row).

use super::pull::{SMALL_FILES, ministry_and_province, read_manifest};
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, FileRole, Message, Role, VersionKind, VersionNo};
use ferry_tables::synth;
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicle_batches};
use std::path::Path;

fn v(n: u64) -> VersionNo {
    VersionNo::new(n).unwrap()
}

fn assert_table_matches(dir: &Path, manifest: &ferry_proto::Manifest) {
    for f in &manifest.table {
        assert_eq!(
            hash_file(&dir.join(f.name.as_str())),
            f.blake3.0,
            "{} differs from the publisher's table",
            f.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_export_ships_as_a_delta_and_materializes_identically() {
    let pki = TestPki::new();
    let (ministry, province) = ministry_and_province(&pki).await;

    let day1: Vec<_> = synth::vehicle_registry(21, 30_000).collect();
    let first = publish_vehicle_batches(&ministry, "vehicle-registry", day1.clone()).await;
    assert_eq!(first.version, v(1));
    let edits = synth::edit_vehicle_registry(&day1, 22, 0.02).unwrap();
    let second = publish_vehicle_batches(&ministry, "vehicle-registry", edits.batches.clone()).await;
    assert_eq!(second.version, v(2));
    assert!(!second.unchanged);

    // The publisher stored only the change, and counted it exactly.
    let m2 = read_manifest(&ministry.version_dir("vehicle-registry", 2));
    assert_eq!(m2.kind, VersionKind::Delta);
    assert_eq!(m2.parent, Some(v(1)));
    let counts = m2.delta.unwrap();
    assert_eq!(
        (counts.updated, counts.inserted, counts.deleted),
        (edits.updated as u64, edits.inserted as u64, edits.deleted as u64)
    );
    assert!(m2.files_with(FileRole::Snapshot).next().is_none());
    assert!(
        m2.delta_bytes() * 5 < m2.table_bytes(),
        "delta {} vs table {}",
        m2.delta_bytes(),
        m2.table_bytes()
    );

    // The same export again makes no version.
    let again = publish_vehicle_batches(&ministry, "vehicle-registry", edits.batches).await;
    assert!(again.unchanged);
    assert_eq!(again.version, v(2));

    // A user holding v1 syncs to v2 from the ministry: fetches the delta only and applies it.
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let first_sync = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), Some(v(1))).await;
    assert_eq!(first_sync.steps, vec!["table v1"]);
    let update = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), None).await;
    assert_eq!(update.from, Some(v(1)));
    assert_eq!(update.steps, vec!["delta v2"]);
    assert_eq!(update.fetched_bytes, m2.delta_bytes());
    assert_table_matches(&update.path, &m2);
    assert!(
        !dest.path().join(".ferry-partial").exists()
            || std::fs::read_dir(dest.path().join(".ferry-partial")).unwrap().count() == 0
    );

    // The province mirrors both versions; for v2 it moves only the delta.
    let ops = province.operator_session().await;
    let dataset = DatasetId::new("vehicle-registry").unwrap();
    let answer = ops
        .request(&Message::Replicate {
            peer: "ministry".into(),
            dataset: dataset.clone(),
            version: Some(v(1)),
        })
        .await
        .unwrap();
    assert!(matches!(answer, Message::Replicated { .. }));
    let answer =
        ops.request(&Message::Replicate { peer: "ministry".into(), dataset, version: None }).await.unwrap();
    let Message::Replicated { version, bytes_fetched, .. } = answer else { panic!("{answer:?}") };
    assert_eq!(version, v(2));
    assert_eq!(bytes_fetched, m2.delta_bytes());

    // A newcomer at the province gets v1's table plus v2's delta, and the same bytes.
    let newcomer = Credentials::load(&pki.issue("gd-analyst", "guangdong", Role::Operator)).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let report = ferry_testkit::sync_vehicles(&newcomer, &province, fresh.path(), None).await;
    assert_eq!(report.steps, vec!["table v1", "delta v2"]);
    assert_table_matches(&report.path, &m2);
    assert!(
        !fresh.path().join("vehicle-registry").join("v1").exists(),
        "the version passed through is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_stored_by_policy_and_newcomers_start_from_the_nearest() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = "[transfer]\nrows-per-file = 10000\nchunk-size = \"64KiB\"\n[publish]\nsnapshot-every = 2\n";
    let ministry = TestNode::start(&pki, spec).await;
    let mut table: Vec<_> = synth::vehicle_registry(5, 12_000).collect();
    for day in 0..4u64 {
        if day > 0 {
            table = synth::edit_vehicle_registry(&table, 100 + day, 0.01).unwrap().batches;
        }
        publish_vehicle_batches(&ministry, "vehicle-registry", table.clone()).await;
    }
    let kinds: Vec<_> =
        (1..=4).map(|n| read_manifest(&ministry.version_dir("vehicle-registry", n)).kind).collect();
    assert_eq!(kinds, [VersionKind::Snapshot, VersionKind::Delta, VersionKind::Snapshot, VersionKind::Delta]);

    let user = Credentials::load(&pki.issue("gd-analyst", "guangdong", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let report = ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), None).await;
    assert_eq!(report.steps, vec!["table v3", "delta v4"]);
    assert_table_matches(&report.path, &read_manifest(&ministry.version_dir("vehicle-registry", 4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_is_rebuilt_from_the_store_when_the_state_dir_loses_it() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    let day1: Vec<_> = synth::vehicle_registry(8, 15_000).collect();
    publish_vehicle_batches(&ministry, "vehicle-registry", day1.clone()).await;
    let day2 = synth::edit_vehicle_registry(&day1, 9, 0.01).unwrap().batches;
    publish_vehicle_batches(&ministry, "vehicle-registry", day2.clone()).await;
    std::fs::remove_dir_all(ministry.dir.path().join("state").join("heads")).unwrap();
    let day3 = synth::edit_vehicle_registry(&day2, 10, 0.01).unwrap().batches;
    let third = publish_vehicle_batches(&ministry, "vehicle-registry", day3).await;
    assert_eq!(third.version, v(3));
    let m3 = read_manifest(&ministry.version_dir("vehicle-registry", 3));
    assert_eq!(m3.kind, VersionKind::Delta);
    assert!(m3.delta.unwrap().updated > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_are_a_delta_of_new_rows_and_repeats_are_refused() {
    use ferry_client::publish::{PublishError, publish_file_as};
    use ferry_proto::{PublishMode, SourceFormat};
    let pki = TestPki::new();
    let ministry = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let all: Vec<_> = synth::gps_positions(3, 6_000, 40).collect();
    let table = arrow::compute::concat_batches(&synth::gps_positions_schema(), &all).unwrap();
    let (old, new) = (table.slice(0, 5_000), table.slice(5_000, 1_000));
    let scratch = tempfile::tempdir().unwrap();
    let write = |name: &str, batch: arrow::record_batch::RecordBatch| {
        let path = scratch.path().join(name);
        synth::write_parquet(&path, synth::gps_positions_schema(), [batch]).unwrap();
        path
    };
    let (day1, day2) = (write("day1.parquet", old), write("day2.parquet", new));
    let definition = synth::gps_positions_definition("vehicle-gps", "ministry");
    let session = ministry.operator_session().await;
    let publish = |path: std::path::PathBuf, mode| {
        let (session, definition) = (session.clone(), definition.clone());
        async move { publish_file_as(&session, &path, definition, SourceFormat::Parquet, mode).await }
    };
    publish(day1, PublishMode::Snapshot).await.unwrap();
    let appended = publish(day2.clone(), PublishMode::Append).await.unwrap();
    assert_eq!((appended.version, appended.rows), (v(2), 6_000));
    let dir = ministry.dir.path().join("data/datasets/vehicle-gps/v2");
    let m2 = read_manifest(&dir);
    let counts = m2.delta.unwrap();
    assert_eq!((counts.inserted, counts.updated, counts.deleted), (1_000, 0, 0));
    let again = publish(day2, PublishMode::Append).await.unwrap_err();
    assert!(matches!(&again, PublishError::Client(_)), "{again}");
    assert!(again.to_string().contains("invalid data"), "a repeated key is refused: {again}");
}

/// All rows of a version directory's table files, in order, as one batch.
fn table_rows(dir: &Path, manifest: &ferry_proto::Manifest) -> arrow::record_batch::RecordBatch {
    let paths: Vec<_> = manifest.table.iter().map(|f| dir.join(f.name.as_str())).collect();
    let batches = ferry_tables::source::read_parquet_files(&paths).unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// A rolling upgrade: the consumer's Parquet writer differs from the publisher's (here another
/// `created_by`, as another parquet-rs or ferry version writes), so the table it rebuilds from a
/// delta has other bytes. It still commits the version, proven by the rows hash, with rows equal
/// to the publisher's; a consumer with the publisher's writer still gets the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_parquet_writer_differs_proves_the_delta_by_its_rows() {
    use ferry_client::conn::Connector;
    use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet};
    let pki = TestPki::new();
    let (ministry, _province) = ministry_and_province(&pki).await;
    let day1: Vec<_> = synth::vehicle_registry(31, 20_000).collect();
    publish_vehicle_batches(&ministry, "vehicle-registry", day1.clone()).await;
    let edits = synth::edit_vehicle_registry(&day1, 32, 0.02).unwrap();
    publish_vehicle_batches(&ministry, "vehicle-registry", edits.batches).await;
    let m2 = read_manifest(&ministry.version_dir("vehicle-registry", 2));
    assert_eq!(m2.kind, VersionKind::Delta);
    assert!(m2.writer.as_deref().is_some_and(|w| w.starts_with("ferry-canonical/")), "{:?}", m2.writer);
    assert!(m2.table.iter().all(|f| f.rows_blake3.is_some()));

    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let (same, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dest in [&same, &other] {
        ferry_testkit::sync_vehicles(&user, &ministry, dest.path(), Some(v(1))).await;
    }
    let reference = ferry_testkit::sync_vehicles(&user, &ministry, same.path(), None).await;
    assert_table_matches(&reference.path, &m2);

    let opts = PullOptions {
        foreign_writer: Some("parquet-rs version 99.0.0 (a later writer)".into()),
        ..PullOptions::default()
    };
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let connector = Connector::new(&user, ministry.node_addr()).unwrap();
    let report =
        transfer::sync(&connector, &user, &request, other.path(), &opts, std::sync::Arc::new(Quiet), cancel)
            .await
            .expect("a consumer with another writer proves the delta by its rows");
    assert_eq!(report.steps, vec!["delta v2"]);
    let differing = m2
        .table
        .iter()
        .filter(|f| ferry_testkit::hash_file(&report.path.join(f.name.as_str())) != f.blake3.0)
        .count();
    assert_eq!(differing, m2.table.len(), "every file keeps the consumer's own bytes");
    for f in &m2.table {
        let rows = ferry_tables::rows_hash::hash_parquet_file(&report.path.join(f.name.as_str())).unwrap();
        assert_eq!(rows.map(|h| *h.as_bytes()), f.rows_blake3.map(|h| h.0), "{}", f.name);
    }
    assert_eq!(table_rows(&report.path, &m2), table_rows(&reference.path, &m2));
}
