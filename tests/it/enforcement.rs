//! Grants enforced at every node (issue 19, §3): a ministry running the control plane and two
//! provinces following its policy. Guangdong applies for Zhejiang's conditional dataset,
//! technical support and the provider approve, Guangdong pulls from Zhejiang's node; the
//! ministry revokes the grant and Zhejiang's node refuses Guangdong's next request with the
//! reason `no_grant` within seconds (the delay is printed). `ferry explain`'s answer follows each
//! step, and a province that loses the ministry fails closed.

use super::grant_traffic::control;
use ferry_client::conn::ClientError;
use ferry_client::control::decode_answer;
use ferry_control::api::ControlRequest;
use ferry_control::explain::{ExplainRequest, Explanation};
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::authz::reason_of;
use ferry_proto::{DatasetId, DeptId, ErrorCode, Message, Role, ServiceMethod};
use ferry_testkit::{NodeSpec, TestNode, TestPki, metric_value, publish_vehicles, sync_vehicles};
use std::time::{Duration, Instant};

const DATASET: &str = "vehicle-registry";
/// How long a revocation may take to stop the serving province (generous: the policy stream
/// pushes each snapshot as it is issued).
const REVOCATION_BOUND: Duration = Duration::from_secs(10);

/// The vehicle registry of `provider` as a conditional catalog entry.
fn conditional_entry(provider: &str) -> String {
    let definition = ferry_client::synth::vehicle_registry_definition(DATASET, provider)
        .replace("share-type = \"unconditional\"", "share-type = \"conditional\"");
    format!(
        "{definition}\n[catalog]\nclassification = \"operations/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"provincial transport departments\"\n\
         share-conditions = \"for road safety supervision only\"\nmethods = [\"download\"]\n"
    )
}

pub(crate) async fn start_ministry(pki: &TestPki) -> TestNode {
    let control = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        control.cert, control.key
    );
    let spec = NodeSpec { dept: "mot", extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) };
    TestNode::start(pki, spec).await
}

pub(crate) async fn start_province(pki: &TestPki, name: &str, ministry: &TestNode) -> TestNode {
    let spec = NodeSpec {
        dept: name,
        peers: vec![("ministry", ministry.addr())],
        extra: "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"3s\"\n",
        ..NodeSpec::new(name, Role::Province)
    };
    TestNode::start(pki, spec).await
}

async fn explain(who: &TlsPaths, node: &TestNode, dept: &str) -> Explanation {
    let query = ExplainRequest::Explain {
        dept: DeptId::new(dept).unwrap(),
        dataset: DatasetId::new(DATASET).unwrap(),
        method: Some(ServiceMethod::Download),
    };
    let session = ferry_testkit::connect(who, node.node_addr()).await;
    let answer = session.request(&Message::ControlCall { request: query.to_json() }).await.expect("explain");
    session.close();
    serde_json::from_value(decode_answer(answer).expect("explained")).expect("an explanation")
}

/// Asks `node` for the dataset's manifest as `who`: `Ok` or the node's refusal.
async fn manifest(who: &TlsPaths, node: &TestNode) -> Result<(), (ErrorCode, String)> {
    let session = ferry_testkit::connect(who, node.node_addr()).await;
    let request = Message::GetManifest {
        dataset: DatasetId::new(DATASET).unwrap(),
        version: None,
        method: ServiceMethod::Download,
    };
    let answer = session.request(&request).await;
    session.close();
    match answer {
        Ok(_) => Ok(()),
        Err(ClientError::Remote { code, message }) => Err((code, message)),
        Err(other) => panic!("unexpected: {other}"),
    }
}

/// Polls `check` every 100 ms until it holds; panics after `within`. Returns the time it took.
async fn until<F: Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_at_the_ministry_stops_the_serving_province_within_seconds() {
    let pki = TestPki::new();
    let mut ministry = start_ministry(&pki).await;
    let zj = start_province(&pki, "zj", &ministry).await;
    let gd = start_province(&pki, "gd", &ministry).await;
    control(
        &zj.operator,
        &ministry,
        ControlRequest::CatalogRegister { document: conditional_entry("zj"), effective_from: None },
    )
    .await;
    until(Duration::from_secs(20), "zj follows the catalog", || async { publish_ok(&zj).await }).await;
    publish_vehicles(&zj, DATASET, 2_000, 7).await;

    // Without a grant Guangdong is refused, and told why and what to do.
    let (code, message) = manifest(&gd.operator, &zj).await.unwrap_err();
    assert_eq!((code, reason_of(&message)), (ErrorCode::PermissionDenied, Some("no_grant")), "{message}");
    assert!(message.contains("ferry apply vehicle-registry"), "{message}");

    // Guangdong applies; until technical support and the provider approve, it is pending.
    let apply = ControlRequest::Apply {
        dataset: DatasetId::new(DATASET).unwrap(),
        purpose: "road safety supervision".into(),
        methods: vec![ServiceMethod::Download],
        columns: None,
        rows: None,
        key: "gd-1".into(),
    };
    let submitted = control(&gd.operator, &ministry, apply).await;
    let application = submitted["application"]["id"].as_u64().expect("application id");
    let pending = explain(&gd.operator, &ministry, "gd").await;
    let pending_ids: Vec<u64> = pending.applications.unwrap_or_default().iter().map(|a| a.id).collect();
    assert_eq!(pending_ids, [application], "the ministry lists the pending application");
    assert_eq!(pending.decisions[0].reason.as_deref(), Some("no_grant"));
    let approve = ControlRequest::ReviewApprove { application, note: None };
    control(&ministry.operator, &ministry, approve.clone()).await;
    let decided = control(&zj.operator, &ministry, approve).await;
    let grant = decided["grant"].as_u64().expect("a grant");

    // Zhejiang's node learns of the grant and serves Guangdong; its explanation agrees.
    until(Duration::from_secs(10), "zj serves gd under its grant", || async {
        manifest(&gd.operator, &zj).await.is_ok()
    })
    .await;
    let granted = explain(&gd.operator, &zj, "gd").await;
    assert_eq!(granted.decisions[0].outcome, "full", "{granted:?}");
    assert_eq!(granted.grants.iter().map(|g| g.id).collect::<Vec<_>>(), [grant]);
    assert!(granted.replica.as_ref().is_some_and(|r| !r.stale && r.node == "zj"));
    let consumer = Credentials::load(&gd.operator).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let pulled = sync_vehicles(&consumer, &zj, dest.path(), None).await;
    assert_eq!(pulled.rows, 2_000);

    // The ministry revokes; the serving province refuses the next request within seconds.
    let revoke = ControlRequest::GrantRevoke { grant, reason: "purpose fulfilled".into() };
    let revoked_at = Instant::now();
    control(&ministry.operator, &ministry, revoke).await;
    let last = loop {
        if let Err((code, message)) = manifest(&gd.operator, &zj).await {
            assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
            break message;
        }
        assert!(revoked_at.elapsed() < REVOCATION_BOUND, "zj still serves gd after {REVOCATION_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let delay = revoked_at.elapsed();
    println!(
        "revocation at the ministry -> refusal at the serving province: {:.0} ms",
        delay.as_secs_f64() * 1e3
    );
    assert_eq!(reason_of(&last), Some("no_grant"), "{last}");
    assert!(delay < REVOCATION_BOUND);
    let after = explain(&gd.operator, &zj, "gd").await;
    assert!(after.grants.is_empty() && after.decisions[0].reason.as_deref() == Some("no_grant"));
    let metrics = zj.metrics().await;
    assert!(metric_value(&metrics, "ferry_authz_denials_total{reason=\"no_grant\"}") >= 2.0, "{metrics}");

    // Without the ministry, Zhejiang's copy goes stale and it fails closed, for everyone.
    ministry.stop().await;
    until(Duration::from_secs(15), "zj fails closed", || async {
        matches!(manifest(&zj.operator, &zj).await, Err((ErrorCode::Unavailable, _)))
    })
    .await;
    let (_, message) = manifest(&gd.operator, &zj).await.unwrap_err();
    assert_eq!(reason_of(&message), Some("policy_stale"), "{message}");
    let stale = explain(&gd.operator, &zj, "gd").await;
    assert!(stale.replica.as_ref().is_some_and(|r| r.stale), "{stale:?}");
    assert_eq!(stale.decisions[0].reason.as_deref(), Some("policy_stale"));
}

/// Whether `node` enforces a catalog that lists the dataset (its operator may publish it).
async fn publish_ok(node: &TestNode) -> bool {
    let dataset = DatasetId::new(DATASET).unwrap();
    let creds = node.operator.clone();
    let query = ExplainRequest::Explain { dept: DeptId::new(&node.dept).unwrap(), dataset, method: None };
    let session = ferry_testkit::connect(&creds, node.node_addr()).await;
    let answer = session.request(&Message::ControlCall { request: query.to_json() }).await;
    session.close();
    answer
        .ok()
        .and_then(|a| decode_answer(a).ok())
        .and_then(|v| serde_json::from_value::<Explanation>(v).ok())
        .is_some_and(|e| e.catalog.is_some() && e.replica.is_some_and(|r| !r.stale))
}
