//! The catalog enforced end to end (issue 17): a ministry node running the control plane and a
//! province node following its signed policy, on SQLite and on PostgreSQL; a province that loses
//! the ministry fails closed and recovers; a version signed by the wrong department is refused
//! by the node that pulls it.

use ferry_client::control::{ControlCallError, call};
use ferry_client::publish::publish_file;
use ferry_control::api::{ApiCode, ControlRequest};
use ferry_daemon::config::{PolicyConfig, PolicySource};
use ferry_net::tls::TlsPaths;
use ferry_proto::{DeptId, ErrorCode, Message, Role, SourceFormat};
use ferry_testkit::{NodeSpec, TestNode, TestPki, metric_value, vehicle_export};
use std::time::{Duration, Instant};

const MINISTRY: &str = "mot";

/// The catalog entry of the vehicle registry provided by `provider`, as an operator writes it.
fn vehicle_entry(provider: &str) -> String {
    let definition = ferry_client::synth::vehicle_registry_definition("vehicle-registry", provider);
    format!(
        "{definition}\n[catalog]\nclassification = \"base/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"every verified transport department\"\nmethods = [\"online-query\", \"subscription\", \"download\"]\n"
    )
}

fn ministry_extra(control: &TlsPaths, database: Option<&str>) -> String {
    let database = database.map(|d| format!("database = {d:?}\n")).unwrap_or_default();
    format!(
        "\n[control]\n{database}signing-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        control.cert, control.key
    )
}

const PROVINCE_POLICY: &str =
    "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"3s\"\n";

async fn start_ministry(pki: &TestPki, database: Option<&str>) -> TestNode {
    let control = pki.issue("control", MINISTRY, Role::Control);
    let extra = ministry_extra(&control, database);
    let spec = NodeSpec { dept: MINISTRY, extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) };
    TestNode::start(pki, spec).await
}

async fn start_province(pki: &TestPki, ministry: &TestNode) -> TestNode {
    let spec = NodeSpec {
        dept: "zj",
        peers: vec![("ministry", ministry.addr())],
        extra: PROVINCE_POLICY,
        ..NodeSpec::new("zj", Role::Province)
    };
    TestNode::start(pki, spec).await
}

/// Waits until `node` enforces a policy of at least `serial` (its metrics say so).
async fn wait_for_policy(node: &TestNode, serial: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = node.metrics().await;
        if metric_value(&metrics, "ferry_policy_serial") >= serial
            && metric_value(&metrics, "ferry_policy_stale") == 0.0
        {
            return;
        }
        assert!(Instant::now() < deadline, "{} never got policy serial {serial}:\n{metrics}", node.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers `document` at `ministry` as an operator holding `operator`.
async fn register_as(
    operator: &TlsPaths,
    ministry: &TestNode,
    document: String,
) -> Result<serde_json::Value, ControlCallError> {
    let session = ferry_testkit::connect(operator, ministry.node_addr()).await;
    let answer = call(&session, &ControlRequest::CatalogRegister { document, effective_from: None }).await;
    session.close();
    answer
}

/// Publishes generated vehicles on `node` as its operator; the node's answer or its refusal.
async fn try_publish(node: &TestNode, rows: usize, seed: u64) -> Result<u64, String> {
    let scratch = tempfile::tempdir().unwrap();
    let (path, definition) = vehicle_export(scratch.path(), "vehicle-registry", &node.dept, rows, seed);
    let session = node.operator_session().await;
    let result = publish_file(&session, &path, definition, SourceFormat::Parquet).await;
    session.close();
    result.map(|p| p.version.get()).map_err(|e| e.to_string())
}

async fn governed_exchange(database: Option<&str>) {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki, database).await;
    let province = start_province(&pki, &ministry).await;

    // Nothing is in the catalog: even the ministry may not publish.
    let refused = try_publish(&ministry, 500, 1).await.unwrap_err();
    assert!(refused.contains("not in the catalog"), "{refused}");

    // A province may not register the ministry's dataset; the ministry may.
    let forbidden = register_as(&province.operator, &ministry, vehicle_entry(MINISTRY)).await.unwrap_err();
    assert!(
        matches!(&forbidden, ControlCallError::Refused(e) if e.code == ApiCode::Forbidden),
        "{forbidden}"
    );
    let registered =
        register_as(&ministry.operator, &ministry, vehicle_entry(MINISTRY)).await.expect("registration");
    assert_eq!(registered["registered"]["catalog_version"], 1, "{registered}");
    wait_for_policy(&province, 1.0).await;

    // The ministry publishes under catalog version 1; the manifest records it.
    assert_eq!(try_publish(&ministry, 500, 1).await.unwrap(), 1);
    let stored = ministry
        .running
        .as_ref()
        .unwrap()
        .store()
        .version(&"vehicle-registry".parse().unwrap(), None)
        .unwrap();
    assert_eq!(stored.manifest.catalog_version, Some(1));
    assert_eq!(stored.manifest.publisher, DeptId::new(MINISTRY).unwrap());

    // The publish connected the data: the formal receipt (Art. 20) is issued without anyone asking.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let session = ministry.operator_session().await;
        let receipts =
            call(&session, &ControlRequest::Receipts { dataset: "vehicle-registry".parse().unwrap() })
                .await
                .expect("receipts");
        session.close();
        let kinds: Vec<_> =
            receipts.as_array().unwrap().iter().map(|r| r["receipt"]["kind"].clone()).collect();
        if kinds.iter().any(|k| k == "formal") {
            break;
        }
        assert!(Instant::now() < deadline, "no formal receipt after the first publish: {receipts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The province applies (the dataset is unconditional: granted at once), replicates it and
    // serves it on.
    ferry_testkit::apply_and_wait_for_grant(
        &province.operator,
        "zj",
        &ministry,
        "vehicle-registry",
        &[&ministry, &province],
    )
    .await;
    let session = province.operator_session().await;
    let replicate = Message::Replicate {
        peer: "ministry".into(),
        dataset: "vehicle-registry".parse().unwrap(),
        version: None,
    };
    let answer = session.request(&replicate).await.expect("replicate");
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");
    let Message::DatasetList { datasets } = session.request(&Message::ListDatasets).await.unwrap() else {
        panic!()
    };
    assert_eq!(datasets.len(), 1);

    // A province operator publishing the ministry's dataset at its own node is refused.
    let refused = try_publish(&province, 500, 2).await.unwrap_err();
    assert!(refused.contains("provided by mot"), "{refused}");
    assert_eq!(province.metric("ferry_authz_denials_total{reason=\"not_provider\"}").await, 1.0);

    // The province's own audit log holds its decisions.
    let audit = province.dir.path().join("state").join("audit.db");
    assert!(audit.exists(), "the province keeps its audit log in its state directory");
    session.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governed_exchange_on_sqlite() {
    governed_exchange(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governed_exchange_on_postgresql() {
    let Some(cluster) = ferry_testkit::postgres::start_or_skip("a_governed_exchange_on_postgresql") else {
        return;
    };
    let url = cluster.create_database("governed").expect("database");
    governed_exchange(Some(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_province_that_loses_the_ministry_fails_closed_and_recovers() {
    let pki = TestPki::new();
    let mut ministry = start_ministry(&pki, None).await;
    let province = start_province(&pki, &ministry).await;
    register_as(&ministry.operator, &ministry, vehicle_entry(MINISTRY)).await.expect("registration");
    wait_for_policy(&province, 1.0).await;
    let session = province.operator_session().await;
    assert!(session.request(&Message::ListDatasets).await.is_ok());

    let ministry_addr = ministry.addr();
    ministry.stop().await;
    // Past max-staleness (3 s) every request that needs a policy decision is refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    let refusal = loop {
        match session.request(&Message::ListDatasets).await {
            Err(ferry_client::conn::ClientError::Remote { code, message }) => break (code, message),
            Ok(_) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
        assert!(Instant::now() < deadline, "the province never failed closed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(refusal.0, ErrorCode::Unavailable);
    assert!(refusal.1.contains("max-staleness"), "{}", refusal.1);
    // /healthz and the metrics follow within their one-second refresh.
    let admin = province.running.as_ref().unwrap().admin_addr.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        let health = ferry_testkit::http_get(admin, "/healthz").await;
        if health.starts_with("HTTP/1.1 503") || Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(health.starts_with("HTTP/1.1 503") && health.contains("policy stale"), "{health}");
    assert_eq!(province.metric("ferry_policy_stale").await, 1.0);

    // The ministry returns: the province follows it again by itself.
    ministry.restart(ministry_addr).await;
    wait_for_policy(&province, 1.0).await;
    assert!(session.request(&Message::ListDatasets).await.is_ok());
    let health = ferry_testkit::http_get(admin, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    session.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_signed_by_another_department_is_refused_by_the_puller() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki, None).await;
    register_as(&ministry.operator, &ministry, vehicle_entry(MINISTRY)).await.expect("registration");
    // A province node without a policy (interim rules) lets its operator publish a dataset of
    // that id under its own name: a version forced into its store.
    let spec = NodeSpec {
        dept: "zj",
        peers: vec![("ministry", ministry.addr())],
        ..NodeSpec::new("zj", Role::Province)
    };
    let mut province = TestNode::start(&pki, spec).await;
    assert_eq!(try_publish(&province, 300, 3).await.unwrap(), 1);
    // Now it enforces the catalog too, and still holds the forged version.
    let addr = province.addr();
    province.stop().await;
    province.config.policy = Some(PolicyConfig {
        source: PolicySource::Ministry { peer: "ministry".into() },
        ministry_dept: Some(DeptId::new(MINISTRY).unwrap()),
        max_staleness: Duration::from_secs(30),
        report_uses_every: ferry_daemon::policy::uses::REPORT_EVERY,
    });
    province.restart(addr).await;
    wait_for_policy(&province, 1.0).await;

    // A hub node of the ministry's department pulls the dataset from the province: the version
    // is signed by zj, the catalog's provider is mot, so nothing is fetched or stored.
    let spec = NodeSpec {
        dept: MINISTRY,
        peers: vec![("zj", province.addr()), ("ministry", ministry.addr())],
        extra: "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"30s\"\n",
        ..NodeSpec::new("hub", Role::Ministry)
    };
    let hub = TestNode::start(&pki, spec).await;
    wait_for_policy(&hub, 1.0).await;
    let session = hub.operator_session().await;
    let replicate =
        Message::Replicate { peer: "zj".into(), dataset: "vehicle-registry".parse().unwrap(), version: None };
    let refused = session.request(&replicate).await.unwrap_err();
    let ferry_client::conn::ClientError::Remote { code, message } = refused else { panic!("{refused}") };
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
    assert!(message.contains("provided by mot") && message.contains("signed by zj"), "{message}");
    assert!(
        hub.running.as_ref().unwrap().store().version(&"vehicle-registry".parse().unwrap(), None).is_err()
    );
    session.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_database_is_backed_up_online_by_technical_support_only() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki, None).await;
    register_as(&ministry.operator, &ministry, vehicle_entry(MINISTRY)).await.expect("registration");
    let copy = tempfile::tempdir().unwrap();
    let destination = copy.path().join("control-backup.db");
    let backup = ControlRequest::Backup { destination: destination.display().to_string() };
    let province_ops = pki.issue("zj-ops", "zj", Role::Operator);
    let session = ferry_testkit::connect(&province_ops, ministry.node_addr()).await;
    let refused = call(&session, &backup).await.unwrap_err();
    assert!(matches!(&refused, ControlCallError::Refused(e) if e.code == ApiCode::Forbidden), "{refused}");
    assert!(!destination.exists());
    let session = ministry.operator_session().await;
    call(&session, &backup).await.expect("backup by technical support");
    // The copy is a database holding the registration.
    let bytes = std::fs::read(&destination).expect("backup written");
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    assert!(bytes.windows(b"vehicle-registry".len()).any(|w| w == b"vehicle-registry"));
}
