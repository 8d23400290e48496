//! Conditional grants served as restricted files (issue 19, §3): a consumer whose grant allows
//! some columns and rows pulls exactly those (compared with rows selected here, independently
//! of the node's filter), syncs the next version as a restricted delta, and never receives a
//! byte of the full version.

use super::pull::{SMALL_FILES, read_manifest};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Int16Type};
use ferry_net::tls::Credentials;
use ferry_proto::policy::Restriction;
use ferry_proto::{DeptId, Role};
use ferry_tables::synth;
use ferry_testkit::grant::OneConditionalGrant;
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicle_batches, sync_vehicles};
use std::path::Path;
use std::sync::Arc;

const CONSUMER: &str = "guangdong";
pub(crate) const COLUMNS: [&str; 5] = ["vin", "plate", "seats", "registered_on", "status"];
/// 2015-01-01 as days since the epoch.
const SINCE: i32 = 16_436;

pub(crate) fn restriction() -> Restriction {
    let rows =
        ferry_proto::filter::RowFilter::parse("registered_on >= DATE '2015-01-01' and seats between 2 and 5")
            .expect("filter");
    Restriction {
        columns: Some(COLUMNS.iter().map(|c| (*c).to_owned()).collect()),
        rows: Some(rows.to_string()),
    }
}

/// One row as the consumer may see it.
pub(crate) type Row = (String, Option<String>, Option<i16>, Option<i32>, Option<String>);

/// The rows the grant allows, selected here by hand from the provider's export, in key order.
pub(crate) fn expected(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in batches {
        let col = |name: &str| b.column(b.schema().index_of(name).expect("column")).clone();
        let (vin, plate, status) = (col("vin"), col("plate"), col("status"));
        let (seats, day) = (col("seats"), col("registered_on"));
        let (seats, day) = (seats.as_primitive::<Int16Type>(), day.as_primitive::<Date32Type>());
        for i in 0..b.num_rows() {
            let keep = day.is_valid(i)
                && day.value(i) >= SINCE
                && seats.is_valid(i)
                && (2..=5).contains(&seats.value(i));
            if keep {
                rows.push(row(&vin, &plate, seats, day, &status, i));
            }
        }
    }
    rows.sort();
    rows
}

fn text(array: &Arc<dyn Array>, i: usize) -> Option<String> {
    let strings = array.as_string::<i32>();
    strings.is_valid(i).then(|| strings.value(i).to_owned())
}

fn row(
    vin: &Arc<dyn Array>,
    plate: &Arc<dyn Array>,
    seats: &arrow::array::PrimitiveArray<Int16Type>,
    day: &arrow::array::PrimitiveArray<Date32Type>,
    status: &Arc<dyn Array>,
    i: usize,
) -> Row {
    (
        text(vin, i).expect("vin"),
        text(plate, i),
        seats.is_valid(i).then(|| seats.value(i)),
        day.is_valid(i).then(|| day.value(i)),
        text(status, i),
    )
}

/// The consumer's table as it holds it: every column name and every row, in file order.
pub(crate) fn held(dir: &Path) -> (Vec<String>, Vec<Row>) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("table dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let batches = ferry_tables::source::read_parquet_files(&files).expect("read the consumer's files");
    let names = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for b in &batches {
        let (seats, day) =
            (b.column(2).as_primitive::<Int16Type>(), b.column(3).as_primitive::<Date32Type>());
        for i in 0..b.num_rows() {
            rows.push(row(b.column(0), b.column(1), seats, day, b.column(4), i));
        }
    }
    (names, rows)
}

/// A provider node whose authorizer holds one conditional grant for [`CONSUMER`]; `extra` is
/// appended to its config.
async fn provider(pki: &TestPki, extra: &str) -> TestNode {
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = extra;
    let mut node = TestNode::start(pki, spec).await;
    node.stop().await;
    let grant = OneConditionalGrant {
        grant: 7,
        consumer: DeptId::new(CONSUMER).unwrap(),
        restriction: restriction(),
    };
    let running = ferry_daemon::node::start_with(node.config.clone(), move |_, _, _, _| Arc::new(grant))
        .await
        .expect("node starts");
    node.running = Some(running);
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_grant_pulls_only_its_columns_and_rows_and_syncs_by_restricted_deltas() {
    let pki = TestPki::new();
    // Every version stores its table, so retention can drop the first one.
    let extra = format!("{SMALL_FILES}[publish]\nsnapshot-every = 1\n[retention]\nkeep-last = 1\n");
    let node = provider(&pki, &extra).await;
    let day1: Vec<_> = synth::vehicle_registry(31, 30_000).collect();
    publish_vehicle_batches(&node, "vehicle-registry", day1.clone()).await;
    let consumer = Credentials::load(&pki.issue("gd-analyst", CONSUMER, Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();

    let first = sync_vehicles(&consumer, &node, dest.path(), None).await;
    let want1 = expected(&day1);
    assert!(want1.len() > 1_000 && want1.len() < 20_000, "a filter that selects some rows: {}", want1.len());
    let (names, rows) = held(&first.path);
    assert_eq!(names, COLUMNS, "exactly the permitted columns, in catalog order");
    assert_eq!(rows, want1, "exactly the permitted rows");
    assert_eq!(first.rows, want1.len() as u64);

    // The next version reaches the consumer as the delta between the two restricted versions.
    let edits = synth::edit_vehicle_registry(&day1, 32, 0.02).unwrap();
    publish_vehicle_batches(&node, "vehicle-registry", edits.batches.clone()).await;
    let second = sync_vehicles(&consumer, &node, dest.path(), None).await;
    assert_eq!(second.version.get(), 2);
    assert!(
        !second.steps.is_empty() && second.steps.iter().all(|s| s.starts_with("delta")),
        "{:?}",
        second.steps
    );
    let (names, rows) = held(&second.path);
    assert_eq!(names, COLUMNS);
    assert_eq!(rows, expected(&edits.batches));

    // Nothing of the full versions went out: the node sent at most what the restricted versions
    // hold, far less than the full table, and no file the consumer holds is one of the full
    // version's.
    let full = read_manifest(&node.version_dir("vehicle-registry", 1));
    let sent = node.metric("ferry_transfer_sent_bytes_total").await as u64;
    let restricted_bytes = first.fetched_bytes + second.fetched_bytes;
    assert!(sent <= restricted_bytes, "sent {sent} > restricted {restricted_bytes}");
    assert!(restricted_bytes * 3 < full.table_bytes(), "{restricted_bytes} vs {}", full.table_bytes());
    let full_hashes: Vec<[u8; 32]> = full.table.iter().map(|f| f.blake3.0).collect();
    for entry in std::fs::read_dir(&second.path).unwrap().flatten() {
        assert!(!full_hashes.contains(&hash_file(&entry.path())), "{:?}", entry.path());
    }
    // Built once per version, however many requests asked.
    assert_eq!(node.metric("ferry_restricted_builds_total").await, 2.0);

    // A restricted version goes with its source: retention drops v1, and its restricted copy.
    let derived = node.dir.path().join("data/derived").join(restriction().id().as_str());
    let derived = derived.join("datasets/vehicle-registry");
    assert!(derived.join("v1/manifest.signed").exists() && derived.join("v2/manifest.signed").exists());
    node.running.as_ref().unwrap().collect_garbage().await.unwrap();
    assert!(!node.version_dir("vehicle-registry", 1).join("manifest.signed").exists());
    assert!(!derived.join("v1").join("manifest.signed").exists(), "pruned with its source");
    assert!(derived.join("v2/manifest.signed").exists());

    // The provider itself still reads the full version.
    let own = tempfile::tempdir().unwrap();
    let operator = Credentials::load(&node.operator).unwrap();
    let whole = sync_vehicles(&operator, &node, own.path(), None).await;
    assert_eq!(whole.rows, read_manifest(&node.version_dir("vehicle-registry", 2)).row_count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_wait_for_one_build_and_a_delta_only_version_is_restricted_from_the_head() {
    let pki = TestPki::new();
    // The default publish policy stores v2 as a delta only.
    let node = provider(&pki, SMALL_FILES).await;
    let day1: Vec<_> = synth::vehicle_registry(41, 20_000).collect();
    publish_vehicle_batches(&node, "vehicle-registry", day1.clone()).await;
    let consumer = Credentials::load(&pki.issue("gd-analyst", CONSUMER, Role::Operator)).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (first, second) = tokio::join!(
        sync_vehicles(&consumer, &node, a.path(), None),
        sync_vehicles(&consumer, &node, b.path(), None)
    );
    assert_eq!(node.metric("ferry_restricted_builds_total").await, 1.0, "one build for both");
    assert_eq!(held(&first.path).1, expected(&day1));
    assert_eq!(
        hash_file(&first.path.join("part-00000.parquet")),
        hash_file(&second.path.join("part-00000.parquet"))
    );

    let edits = synth::edit_vehicle_registry(&day1, 42, 0.05).unwrap();
    publish_vehicle_batches(&node, "vehicle-registry", edits.batches.clone()).await;
    assert_eq!(read_manifest(&node.version_dir("vehicle-registry", 2)).kind, ferry_proto::VersionKind::Delta);
    let next = sync_vehicles(&consumer, &node, a.path(), None).await;
    assert!(!next.steps.is_empty() && next.steps.iter().all(|s| s.starts_with("delta")), "{:?}", next.steps);
    let (names, rows) = held(&next.path);
    assert_eq!(names, COLUMNS);
    assert_eq!(rows, expected(&edits.batches));
}
