//! Online queries (issue 20 §3): key lookups, ranges with a projection and a limit, `IN` and
//! `IS NULL`, checked against rows selected here from the generated export (plain loops, not
//! the node's filter); pruning reads one row group for a key lookup; bad input gets typed
//! errors naming the column or the literal; a result over the node's bounds is truncated; a
//! query needs a grant offering online query; a restricted grantee sees only its columns and
//! rows.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Int16Type, Int32Type};
use ferry_client::conn::{ClientError, Session};
use ferry_client::control::{ControlRequest, call, decode_answer};
use ferry_client::query::{QueryError, query, query_batches};
use ferry_proto::authz::reason_of;
use ferry_proto::policy::Restriction;
use ferry_proto::query::{QueryFormat, QuerySpec};
use ferry_proto::{DatasetId, DeptId, ErrorCode, Message, Role, ServiceMethod};
use ferry_tables::synth;
use ferry_testkit::grant::OneConditionalGrant;
use ferry_testkit::{NodeSpec, TestNode, TestPki, apply_for_methods_and_wait, publish_vehicle_batches};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATASET: &str = "vehicle-registry";
/// One file of three row groups (65 536 rows each at most).
const ROWS: usize = 140_000;
const ONE_FILE: &str = "[transfer]\nrows-per-file = 140000\n";

fn dataset() -> DatasetId {
    DatasetId::new(DATASET).unwrap()
}

fn spec(predicate: Option<&str>, columns: Option<&[&str]>, limit: Option<u64>) -> QuerySpec {
    let columns = columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect());
    QuerySpec::new(predicate, columns, limit, QueryFormat::ArrowIpc).expect("query")
}

/// The export as one batch, in key (VIN) order, as the node stores it.
fn table(batches: &[RecordBatch]) -> RecordBatch {
    let all = concat_batches(&synth::vehicle_registry_schema(), batches).unwrap();
    let order = arrow::compute::sort_to_indices(all.column(0), None, None).unwrap();
    let columns = all.columns().iter().map(|c| arrow::compute::take(c, &order, None).unwrap()).collect();
    RecordBatch::try_new(all.schema(), columns).unwrap()
}

fn text(b: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let c = b.column_by_name(name).unwrap().as_string::<i32>();
    c.is_valid(i).then(|| c.value(i).to_owned())
}

/// VINs of the rows of `b` that `keep` selects, in order.
fn vins_where(b: &RecordBatch, keep: impl Fn(usize) -> bool) -> Vec<String> {
    (0..b.num_rows()).filter(|i| keep(*i)).map(|i| text(b, "vin", i).unwrap()).collect()
}

fn result_vins(batches: &[RecordBatch]) -> Vec<String> {
    batches.iter().flat_map(|b| (0..b.num_rows()).map(|i| text(b, "vin", i).unwrap())).collect()
}

async fn run(session: &Session, spec: &QuerySpec) -> (Vec<RecordBatch>, u64, bool) {
    let (batches, done) = query_batches(session, &dataset(), None, spec).await.expect("query");
    (batches, done.rows, done.truncated)
}

fn refusal(e: QueryError) -> (ErrorCode, String) {
    match e {
        QueryError::Client(ClientError::Remote { code, message }) => (code, message),
        other => panic!("a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_match_rows_selected_independently_and_a_key_lookup_reads_one_row_group() {
    let pki = TestPki::new();
    let node =
        TestNode::start(&pki, NodeSpec { extra: ONE_FILE, ..NodeSpec::new("zj", Role::Province) }).await;
    let rows: Vec<RecordBatch> = synth::vehicle_registry(21, ROWS).collect();
    publish_vehicle_batches(&node, DATASET, rows.clone()).await;
    let t = table(&rows);
    let session = node.operator_session().await;

    // A key lookup by VIN: one row, one row group decoded.
    let vin = text(&t, "vin", 100_000).unwrap();
    let before = node.metric("ferry_query_row_groups_read_total").await;
    let (batches, n, truncated) = run(&session, &spec(Some(&format!("vin = '{vin}'")), None, None)).await;
    assert_eq!((result_vins(&batches), n, truncated), (vec![vin.clone()], 1, false));
    assert_eq!(batches[0].num_columns(), 15);
    assert_eq!(node.metric("ferry_query_row_groups_read_total").await - before, 1.0, "one row group read");
    // An absent key: nothing read, the bloom filter or the statistics rule every group out.
    let before = node.metric("ferry_query_row_groups_read_total").await;
    let (_, n, _) = run(&session, &spec(Some(&format!("vin = '{vin}X'")), None, None)).await;
    assert_eq!(n, 0);
    assert_eq!(node.metric("ferry_query_row_groups_read_total").await, before);

    // A lookup by plate (京A12345-style), a non-key column, as CSV.
    let plate = text(&t, "plate", 4_321).unwrap();
    let csv_spec = QuerySpec {
        format: QueryFormat::Csv,
        ..spec(Some(&format!("plate = '{plate}'")), Some(&["plate", "vin"]), None)
    };
    let result = query(&session, &dataset(), None, &csv_spec).await.expect("query");
    let expected = vins_where(&t, |i| text(&t, "plate", i).as_deref() == Some(&plate));
    let mut csv = String::from("plate,vin\n");
    for v in &expected {
        csv.push_str(&format!("{plate},{v}\n"));
    }
    assert_eq!(String::from_utf8(result.data).unwrap(), csv);
    assert_eq!(result.done.rows, expected.len() as u64);

    // A range with a projection and a limit: the first rows in key order, truncated.
    let seats = t.column_by_name("seats").unwrap().as_primitive::<Int16Type>();
    let mass = t.column_by_name("gross_mass_kg").unwrap().as_primitive::<Int32Type>();
    let range = "gross_mass_kg BETWEEN 1500 AND 2000 AND seats >= 5";
    let all = vins_where(&t, |i| (1500..=2000).contains(&mass.value(i)) && seats.value(i) >= 5);
    assert!(all.len() > 60, "{} rows in range", all.len());
    let (batches, n, truncated) =
        run(&session, &spec(Some(range), Some(&["vin", "seats", "gross_mass_kg"]), Some(50))).await;
    assert_eq!((result_vins(&batches), n, truncated), (all[..50].to_vec(), 50, true));
    let names: Vec<_> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["vin", "seats", "gross_mass_kg"]);
    let (batches, _, truncated) =
        run(&session, &spec(Some(range), Some(&["vin"]), Some(all.len() as u64))).await;
    assert_eq!((result_vins(&batches), truncated), (all, false), "the exact limit is not truncated");

    // IN and IS NULL, as JSON lines.
    let predicate = "province_code IN ('440000', '330000') AND company IS NULL";
    let expected = vins_where(&t, |i| {
        matches!(text(&t, "province_code", i).as_deref(), Some("440000" | "330000"))
            && text(&t, "company", i).is_none()
    });
    assert!(!expected.is_empty());
    let json_spec =
        QuerySpec { format: QueryFormat::Json, ..spec(Some(predicate), Some(&["vin", "company"]), None) };
    let result = query(&session, &dataset(), None, &json_spec).await.expect("query");
    let lines: Vec<serde_json::Value> =
        String::from_utf8(result.data).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<String> = lines.iter().map(|l| l["vin"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, expected);
    assert!(lines.iter().all(|l| l.get("company").is_none()), "null company is left out");
    assert_eq!(node.metric("ferry_query_queries_total{outcome=\"truncated\"}").await, 1.0);
    session.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_results_over_the_bounds_are_truncated() {
    let pki = TestPki::new();
    let extra = "[query]\nmax-rows = 100\nconcurrent-per-peer = 1\n";
    let node = TestNode::start(&pki, NodeSpec { extra, ..NodeSpec::new("zj", Role::Province) }).await;
    publish_vehicle_batches(&node, DATASET, synth::vehicle_registry(3, 2_000).collect()).await;
    let session = node.operator_session().await;
    let ask = |s: QuerySpec| {
        let session = &session;
        async move { query_batches(session, &dataset(), None, &s).await.map(|(_, done)| done) }
    };

    let (code, message) = refusal(ask(spec(Some("seats = 5 AND wheels = 4"), None, None)).await.unwrap_err());
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("unknown column \"wheels\" at position 15"), "{message}");
    let (code, message) = refusal(ask(spec(Some("seats = 'five'"), None, None)).await.unwrap_err());
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("bad literal 'five'") && message.contains("position 9"), "{message}");
    let (code, message) = refusal(ask(spec(None, Some(&["vin", "colour"]), None)).await.unwrap_err());
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("\"colour\" in the projection"), "{message}");
    let raw = Message::Query { dataset: dataset(), version: None, query: "{\"where\": \"seats >\"}".into() };
    match session.request(&raw).await {
        Err(ClientError::Remote { code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("position 8"), "{message}")
        }
        other => panic!("a refusal, got {other:?}"),
    }
    let missing =
        query_batches(&session, &DatasetId::new("no-such").unwrap(), None, &spec(None, None, None)).await;
    assert_eq!(refusal(missing.unwrap_err()).0, ErrorCode::NotFound);

    // Over max-rows: 100 rows, truncated; a limit under it is the limit.
    let done = ask(spec(None, None, None)).await.expect("query");
    assert_eq!((done.rows, done.truncated), (100, true));
    let done = ask(spec(Some("seats >= 0"), Some(&["vin"]), Some(7))).await.expect("query");
    assert_eq!((done.rows, done.truncated), (7, true));
    // The node goes on serving.
    let done = ask(spec(Some("seats < 0"), None, None)).await.expect("query");
    assert_eq!((done.rows, done.truncated), (0, false));
    assert!(node.metric("ferry_query_queries_total{outcome=\"bad_request\"}").await >= 4.0);
    session.close();
}

/// A catalog entry offering download and online query.
fn entry(provider: &str) -> String {
    let definition = synth::vehicle_registry_definition(DATASET, provider);
    format!(
        "{definition}\n[catalog]\nclassification = \"operations/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"provincial transport departments\"\nmethods = [\"download\", \"online-query\"]\n"
    )
}

async fn start_ministry(pki: &TestPki) -> TestNode {
    let control = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        control.cert, control.key
    );
    let extra: &'static str = Box::leak(extra.into_boxed_str());
    TestNode::start(pki, NodeSpec { dept: "mot", extra, ..NodeSpec::new("ministry", Role::Ministry) }).await
}

async fn start_province(pki: &TestPki, name: &str, ministry: &TestNode) -> TestNode {
    let spec = NodeSpec {
        dept: name,
        peers: vec![("ministry", ministry.addr())],
        extra: "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"5s\"\n",
        ..NodeSpec::new(name, Role::Province)
    };
    TestNode::start(pki, spec).await
}

/// Registers `provider`'s entry at the ministry and publishes once its node enforces it.
async fn register_and_publish(ministry: &TestNode, provider: &TestNode) {
    let session = ferry_testkit::connect(&provider.operator, ministry.node_addr()).await;
    let register = ControlRequest::CatalogRegister { document: entry(&provider.dept), effective_from: None };
    call(&session, &register).await.expect("register");
    session.close();
    let started = Instant::now();
    loop {
        let session = provider.operator_session().await;
        let explain = serde_json::json!({"op": "explain", "dept": provider.dept, "dataset": DATASET});
        let answer = session.request(&Message::ControlCall { request: explain.to_string() }).await;
        session.close();
        let ready = answer.ok().and_then(|a| decode_answer(a).ok()).is_some_and(|v| {
            !v["catalog"].is_null() && v["replica"]["stale"] == serde_json::Value::Bool(false)
        });
        if ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{} never enforced the entry", provider.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_vehicle_batches(provider, DATASET, synth::vehicle_registry(5, 3_000).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_query_needs_a_grant_offering_it() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki).await;
    let zj = start_province(&pki, "zj", &ministry).await;
    let gd = start_province(&pki, "gd", &ministry).await;
    register_and_publish(&ministry, &zj).await;
    let lookup = spec(Some("seats = 5"), Some(&["vin"]), Some(3));
    let ask = || async {
        let session = ferry_testkit::connect(&gd.operator, zj.node_addr()).await;
        let result = query_batches(&session, &dataset(), None, &lookup).await;
        session.close();
        result
    };
    let (code, message) = refusal(ask().await.unwrap_err());
    assert_eq!((code, reason_of(&message)), (ErrorCode::PermissionDenied, Some("no_grant")), "{message}");
    apply_for_methods_and_wait(&gd.operator, "gd", &ministry, DATASET, &[ServiceMethod::Download], &[&zj])
        .await;
    let (code, message) = refusal(ask().await.unwrap_err());
    assert_eq!(
        (code, reason_of(&message)),
        (ErrorCode::PermissionDenied, Some("method_not_granted")),
        "{message}"
    );
    // A second application, for online query (its own idempotency key); granted at once.
    let apply = ControlRequest::Apply {
        dataset: dataset(),
        purpose: "look vehicles up".into(),
        methods: vec![ServiceMethod::OnlineQuery],
        columns: None,
        rows: None,
        key: "gd-vehicle-registry-query".into(),
    };
    let session = ferry_testkit::connect(&gd.operator, ministry.node_addr()).await;
    call(&session, &apply).await.expect("application");
    session.close();
    let started = Instant::now();
    let done = loop {
        match ask().await {
            Ok((_, done)) => break done,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the online-query grant never allowed the query: {e}"),
        }
    };
    assert_eq!((done.rows, done.truncated), (3, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_grantee_sees_only_the_permitted_columns_and_rows() {
    const COLUMNS: [&str; 4] = ["vin", "plate", "seats", "province_code"];
    let pki = TestPki::new();
    let mut node = TestNode::start(&pki, NodeSpec::new("zj", Role::Ministry)).await;
    node.stop().await;
    let grant = OneConditionalGrant {
        grant: 7,
        consumer: DeptId::new("guangdong").unwrap(),
        restriction: Restriction {
            columns: Some(COLUMNS.iter().map(|c| (*c).to_owned()).collect()),
            rows: Some("seats BETWEEN 2 AND 5".to_owned()),
        },
    };
    let running = ferry_daemon::node::start_with(node.config.clone(), move |_, _, _, _| Arc::new(grant))
        .await
        .expect("node starts");
    node.running = Some(running);
    let rows: Vec<RecordBatch> = synth::vehicle_registry(8, 4_000).collect();
    publish_vehicle_batches(&node, DATASET, rows.clone()).await;
    let t = table(&rows);
    let consumer = pki.issue("gd-analyst", "guangdong", Role::Operator);
    let session = ferry_testkit::connect(&consumer, node.node_addr()).await;

    let seats = t.column_by_name("seats").unwrap().as_primitive::<Int16Type>();
    let in_grant = |i: usize| (2..=5).contains(&seats.value(i));
    let (batches, n, _) = run(&session, &spec(None, None, None)).await;
    let names: Vec<_> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, COLUMNS, "only the permitted columns, in the table's order");
    assert_eq!(result_vins(&batches), vins_where(&t, in_grant));
    assert_eq!(n, vins_where(&t, in_grant).len() as u64);
    // The query's predicate is ANDed with the grant's.
    let (batches, _, _) = run(&session, &spec(Some("seats >= 4"), Some(&["vin", "seats"]), None)).await;
    assert_eq!(result_vins(&batches), vins_where(&t, |i| in_grant(i) && seats.value(i) >= 4));
    // A column outside the grant reads as unknown, exactly as one the table lacks.
    for column in ["owner_name", "no_such_column"] {
        let (code, message) = refusal(
            query_batches(&session, &dataset(), None, &spec(None, Some(&["vin", column]), None))
                .await
                .unwrap_err(),
        );
        assert_eq!(code, ErrorCode::BadRequest);
        assert_eq!(message, format!("unknown column {column:?} in the projection"));
        let predicate = format!("{column} IS NULL");
        let (_, message) = refusal(
            query_batches(&session, &dataset(), None, &spec(Some(&predicate), None, None)).await.unwrap_err(),
        );
        assert!(message.starts_with(&format!("unknown column {column:?} at position 1")), "{message}");
    }
    session.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_time_bound_is_stopped_with_unavailable() {
    let pki = TestPki::new();
    let extra = "[query]\ntimeout = \"1ns\"\n";
    let node = TestNode::start(&pki, NodeSpec { extra, ..NodeSpec::new("zj", Role::Province) }).await;
    publish_vehicle_batches(&node, DATASET, synth::vehicle_registry(4, 1_000).collect()).await;
    let session = node.operator_session().await;
    let result = query_batches(&session, &dataset(), None, &spec(Some("seats > 1"), None, None)).await;
    let (code, message) = refusal(result.unwrap_err());
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(message.contains("ran longer than 1ns"), "{message}");
    assert_eq!(node.metric("ferry_query_queries_total{outcome=\"timeout\"}").await, 1.0);
    session.close();
}

/// All VINs of `version` (or the latest) of the registry at `node`, as its operator.
async fn all_vins(node: &TestNode, version: Option<u64>) -> Result<Vec<String>, QueryError> {
    let session = node.operator_session().await;
    let version = version.map(|n| ferry_proto::VersionNo::new(n).unwrap());
    let result = query_batches(&session, &dataset(), version, &spec(None, Some(&["vin"]), None)).await;
    session.close();
    result.map(|(batches, _)| result_vins(&batches))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_version_stored_as_a_delta_is_answered_at_the_publisher_and_a_replica() {
    let pki = TestPki::new();
    let (ministry, province) = super::pull::ministry_and_province(&pki).await;
    let day1: Vec<RecordBatch> = synth::vehicle_registry(31, 3_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1.clone()).await;
    let day2 = synth::edit_vehicle_registry(&day1, 32, 0.05).unwrap().batches;
    let second = publish_vehicle_batches(&ministry, DATASET, day2.clone()).await;
    assert_eq!(second.version.get(), 2);
    let m2 = super::pull::read_manifest(&ministry.version_dir(DATASET, 2));
    assert_eq!(m2.kind, ferry_proto::VersionKind::Delta, "v2 must be stored as a delta only");
    let expected = vins_where(&table(&day2), |_| true);
    assert_ne!(expected, vins_where(&table(&day1), |_| true));

    // At the publisher: the latest, by number and by default, answered from its head table.
    assert_eq!(all_vins(&ministry, Some(2)).await.expect("v2 at the publisher"), expected);
    assert_eq!(all_vins(&ministry, None).await.expect("latest at the publisher"), expected);
    assert_eq!(all_vins(&ministry, Some(1)).await.expect("v1"), vins_where(&table(&day1), |_| true));

    // At a node that replicated v1 then v2 (a delta): its head is rebuilt from its own store.
    let ops = province.operator_session().await;
    for version in [Some(ferry_proto::VersionNo::FIRST), None] {
        let replicate = Message::Replicate { peer: "ministry".into(), dataset: dataset(), version };
        let answer = ops.request(&replicate).await.expect("replicate");
        assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");
    }
    ops.close();
    let stored = super::pull::read_manifest(&province.version_dir(DATASET, 2));
    assert_eq!(stored.kind, ferry_proto::VersionKind::Delta);
    let key = &expected[7];
    let session = province.operator_session().await;
    let lookup = spec(Some(&format!("vin = '{key}'")), Some(&["vin"]), None);
    let (batches, _) = query_batches(&session, &dataset(), None, &lookup).await.expect("key lookup");
    session.close();
    assert_eq!(result_vins(&batches), vec![key.clone()]);
    assert_eq!(all_vins(&province, None).await.expect("latest at the replica"), expected);

    // A newer publish moves the head: the latest follows it, the older delta names a snapshot.
    let day3 = synth::edit_vehicle_registry(&day2, 33, 0.05).unwrap().batches;
    publish_vehicle_batches(&ministry, DATASET, day3.clone()).await;
    assert_eq!(all_vins(&ministry, None).await.expect("v3"), vins_where(&table(&day3), |_| true));
    let (code, message) = refusal(all_vins(&ministry, Some(2)).await.unwrap_err());
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    assert!(message.contains("nearest version that stores its table is v1"), "{message}");
}
