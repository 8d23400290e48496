//! The ministry hub serving a conditional grantee (issue 20 §5, Art. 11): Guangdong holds a
//! conditional grant (a column set and a row filter) for Zhejiang's dataset and pulls and
//! subscribes through the ministry's hub. The hub never signs: it fetches each restricted version
//! (and its restricted delta) from Zhejiang's node, which signed it, and serves it unchanged;
//! Guangdong's files hold exactly the permitted rows and columns, verified against Zhejiang's
//! signature. The provider down is a typed "try later" with nothing kept; only the hub may read
//! for a grant, only a grant in force; a revocation stops both the hub's serving and its fetches.

use super::grant_traffic::control;
use super::restricted::{COLUMNS, expected, held, restriction};
use ferry_client::conn::{ClientError, Connector};
use ferry_client::control::{ControlRequest, decode_answer, node_call};
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet, SyncReport};
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::authz::reason_of;
use ferry_proto::node_api::{NodeRequest, SubscriptionDefinition};
use ferry_proto::{DatasetId, ErrorCode, Manifest, Message, Principal, Role, ServiceMethod, SignedManifest};
use ferry_tables::synth;
use ferry_testkit::{NodeSpec, TestNode, TestPki, publish_vehicle_batches};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DATASET: &str = "vehicle-registry";
const WITHIN: Duration = Duration::from_secs(20);

fn dataset() -> DatasetId {
    DatasetId::new(DATASET).unwrap()
}

/// Zhejiang's vehicle registry as a conditional entry offering download and subscription.
fn conditional_entry() -> String {
    let definition = synth::vehicle_registry_definition(DATASET, "zj")
        .replace("share-type = \"unconditional\"", "share-type = \"conditional\"");
    format!(
        "{definition}\n[catalog]\nclassification = \"operations/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"provincial transport departments\"\n\
         share-conditions = \"for road safety supervision only\"\nmethods = [\"download\", \"subscription\"]\n"
    )
}

const POLICY: &str = "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"5s\"\n";

async fn start_ministry(pki: &TestPki, zj: std::net::SocketAddr) -> TestNode {
    let signing = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        signing.cert, signing.key
    );
    let spec = NodeSpec {
        dept: "mot",
        extra: &extra,
        peers: vec![("zj", zj)],
        ..NodeSpec::new("ministry", Role::Ministry)
    };
    TestNode::start(pki, spec).await
}

async fn start_province(pki: &TestPki, name: &str, ministry: &TestNode) -> TestNode {
    let peers = vec![("ministry", ministry.addr())];
    TestNode::start(pki, NodeSpec { dept: name, peers, extra: POLICY, ..NodeSpec::new(name, Role::Province) })
        .await
}

/// The `explain` answer of `node` about `dept`'s grants, as `who`.
async fn explain(who: &TlsPaths, node: &TestNode, dept: &str) -> Option<serde_json::Value> {
    let explain =
        serde_json::json!({"op": "explain", "dept": dept, "dataset": DATASET, "method": "download"});
    let session = ferry_testkit::connect(who, node.node_addr()).await;
    let answer = session.request(&Message::ControlCall { request: explain.to_string() }).await;
    session.close();
    answer.ok().and_then(|a| decode_answer(a).ok())
}

/// Polls `check` every 100 ms until it holds; panics after [`WITHIN`].
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Guangdong applies for the permitted columns and rows by download and subscription;
/// technical support and the provider approve. Returns the grant, once both nodes enforce it.
async fn conditional_grant(ministry: &TestNode, zj: &TestNode, gd: &TestNode) -> u64 {
    let wanted = restriction();
    let apply = ControlRequest::Apply {
        dataset: dataset(),
        purpose: "road safety supervision".into(),
        methods: vec![ServiceMethod::Subscription, ServiceMethod::Download],
        columns: wanted.columns.clone(),
        rows: wanted.rows.clone(),
        key: "gd-conditional".into(),
    };
    let submitted = control(&gd.operator, ministry, apply).await;
    let application = submitted["application"]["id"].as_u64().expect("application id");
    let approve = ControlRequest::ReviewApprove { application, note: None };
    control(&ministry.operator, ministry, approve.clone()).await;
    let grant = control(&zj.operator, ministry, approve).await["grant"].as_u64().expect("a grant");
    for node in [ministry, zj] {
        until("the grant is enforced", || async {
            explain(&gd.operator, node, "gd").await.is_some_and(|a| {
                a["grants"].as_array().is_some_and(|g| g.iter().any(|g| g["id"].as_u64() == Some(grant)))
            })
        })
        .await;
    }
    grant
}

/// A sync of the dataset from `node` into `dest` as `creds`; the node's refusal as `Err`.
async fn try_sync(creds: &Credentials, node: &TestNode, dest: &Path) -> Result<SyncReport, String> {
    let (_cancel, cancelled) = tokio::sync::watch::channel(false);
    let connector = Connector::new(creds, node.node_addr()).expect("connector");
    let request = PullRequest { dataset: dataset(), version: None };
    let opts = PullOptions { max_retries: 0, ..PullOptions::default() };
    let result =
        transfer::sync(&connector, creds, &request, dest, &opts, std::sync::Arc::new(Quiet), cancelled).await;
    result.map_err(|e| e.to_string())
}

/// Sends `read` to `node` as `who`, made for `grant` when given; the answer or the refusal.
async fn read_at(
    who: &TlsPaths,
    node: &TestNode,
    grant: Option<u64>,
    read: Message,
) -> Result<Message, (ErrorCode, String)> {
    let creds = Credentials::load(who).unwrap();
    let connector = Connector::new(&creds, node.node_addr()).unwrap();
    let connector = match grant {
        Some(grant) => connector.for_grant(grant),
        None => connector,
    };
    let session = connector.connect().await.expect("connect");
    let answer = session.request(&read).await;
    session.close();
    answer.map_err(|e| match e {
        ClientError::Remote { code, message } => (code, message),
        other => panic!("unexpected: {other}"),
    })
}

/// A subscription of the dataset at `from`, into the node's store or a directory.
fn subscription(from: &str, into: Option<String>) -> SubscriptionDefinition {
    let definition = serde_json::json!({"dataset": DATASET, "from": from, "into": into});
    serde_json::from_value(definition).expect("a subscription")
}

fn manifest_request() -> Message {
    Message::GetManifest { dataset: dataset(), version: None, method: ServiceMethod::Download }
}

/// The signed manifest in `dir`, verified: the manifest and who signed it.
fn verified(dir: &Path, creds: &Credentials) -> (Manifest, Principal) {
    let signed = SignedManifest::decode(&std::fs::read(dir.join("manifest.signed")).unwrap()).unwrap();
    ferry_net::sign::verify_signed_manifest(&signed, creds, quinn::rustls::pki_types::UnixTime::now())
        .expect("verifies")
}

/// Every restricted version the hub keeps, by its directory.
fn hub_restricted(hub: &TestNode) -> Vec<PathBuf> {
    let dir =
        hub.dir.path().join("data/derived").join(restriction().id().as_str()).join("datasets").join(DATASET);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.join("manifest.signed").exists()).collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// What the grantee may see: its columns and rows of `dir`'s table, exactly those allowed.
fn assert_exactly_permitted(dir: &Path, rows: &[arrow::record_batch::RecordBatch]) {
    let (names, held_rows) = held(dir);
    assert_eq!(names, COLUMNS, "exactly the permitted columns");
    let want = expected(rows);
    assert!(want.len() > 500 && want.len() < 8_000, "a filter that selects some rows: {}", want.len());
    assert_eq!(held_rows, want, "exactly the permitted rows");
}

/// A version signed by Zhejiang's node, restricted for the grant, derived from Zhejiang's own.
fn assert_signed_by_the_provider(manifest: &Manifest, signer: &Principal) {
    assert_eq!(
        (signer.dept.as_str(), signer.name.as_str()),
        ("zj", "zj"),
        "signed by zj's node, not the hub"
    );
    assert_eq!(manifest.publisher.as_str(), "zj");
    let derived = manifest.derived_from.as_ref().expect("a restricted version");
    assert_eq!((derived.source_publisher.as_str(), &derived.restriction_id), ("zj", &restriction().id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_grantee_is_served_through_the_hub_as_the_provider_signed_it() {
    let pki = TestPki::new();
    // zj is restarted on an address the ministry knows as its peer `zj`.
    let reserved = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let zj_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let ministry = start_ministry(&pki, zj_addr).await;
    let mut zj = start_province(&pki, "zj", &ministry).await;
    zj.stop().await;
    zj.restart(zj_addr).await;
    let gd = start_province(&pki, "gd", &ministry).await;
    control(
        &zj.operator,
        &ministry,
        ControlRequest::CatalogRegister { document: conditional_entry(), effective_from: None },
    )
    .await;
    until("zj enforces the entry", || async {
        explain(&zj.operator, &zj, "zj")
            .await
            .is_some_and(|a| !a["catalog"].is_null() && a["replica"]["stale"] == false)
    })
    .await;
    let day1: Vec<_> = synth::vehicle_registry(91, 12_000).collect();
    publish_vehicle_batches(&zj, DATASET, day1.clone()).await;

    // The hub follows zj's dataset whole (it relays it, Art. 11).
    let ops = ministry.operator_session().await;
    let follow = subscription("zj", None);
    node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription: follow }).await.expect("subscribe");
    ops.close();
    let hub_holds = |v: u64| {
        let store = ministry.running.as_ref().unwrap().store();
        store.version(&dataset(), None).is_ok_and(|s| s.manifest.version.get() == v)
    };
    until("the hub holds v1", || async { hub_holds(1) }).await;
    let grant = conditional_grant(&ministry, &zj, &gd).await;
    let gd_creds = Credentials::load(&gd.operator).unwrap();

    // zj down: the hub cannot fetch what the grant allows, says so, and keeps nothing.
    zj.stop().await;
    let (code, message) = read_at(&gd.operator, &ministry, None, manifest_request()).await.unwrap_err();
    assert_eq!(
        (code, reason_of(&message)),
        (ErrorCode::Unavailable, Some("provider_unreachable")),
        "{message}"
    );
    assert!(message.contains("try later"), "{message}");
    assert!(hub_restricted(&ministry).is_empty(), "no partial version kept");
    let fetches = |outcome: &str| format!("ferry_hub_fetches_total{{reason=\"{outcome}\"}}");
    assert!(ministry.metric(&fetches("unreachable")).await >= 1.0, "the failed fetch is counted");
    zj.restart(zj_addr).await;

    // gd pulls through the hub: exactly its columns and rows, as zj's node signed them.
    let pulled = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let first = loop {
        match try_sync(&gd_creds, &ministry, pulled.path()).await {
            Ok(report) => break report,
            Err(e) => assert!(started.elapsed() < WITHIN, "gd never pulled through the hub: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_exactly_permitted(&first.path, &day1);
    let (manifest, signer) = verified(&first.path, &gd_creds);
    assert_signed_by_the_provider(&manifest, &signer);

    // Only the hub reads for a grant, and only for a grant in force.
    let hub_node = &ministry.config.tls;
    let Ok(Message::ManifestData { .. }) = read_at(hub_node, &zj, Some(grant), manifest_request()).await
    else {
        panic!("zj serves the hub what the grant allows")
    };
    let (_, message) = read_at(&gd.operator, &zj, Some(grant), manifest_request()).await.unwrap_err();
    assert_eq!(reason_of(&message), Some("not_hub"), "{message}");
    let (_, message) = read_at(hub_node, &zj, Some(grant + 100), manifest_request()).await.unwrap_err();
    assert_eq!(reason_of(&message), Some("no_grant"), "{message}");

    // gd subscribes through the hub into a directory: zj's next version reaches it restricted,
    // the hub having fetched zj's restricted delta.
    let subscribed = tempfile::tempdir().unwrap();
    let ops = gd.operator_session().await;
    let into = Some(subscribed.path().display().to_string());
    let follow = subscription("ministry", into);
    node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription: follow }).await.expect("subscribe");
    ops.close();
    let version_dir = |v: u64| subscribed.path().join(DATASET).join(format!("v{v}"));
    until("gd's subscription holds v1", || async { version_dir(1).join("manifest.signed").exists() }).await;
    let day2 = synth::edit_vehicle_registry(&day1, 92, 0.02).unwrap().batches;
    publish_vehicle_batches(&zj, DATASET, day2.clone()).await;
    until("gd's subscription holds v2", || async { version_dir(2).join("manifest.signed").exists() }).await;
    assert_exactly_permitted(&version_dir(2), &day2);
    let (manifest, signer) = verified(&version_dir(2), &gd_creds);
    assert_signed_by_the_provider(&manifest, &signer);

    // The hub keeps zj's restricted versions unchanged (v2 with its restricted delta), and holds
    // no version of the dataset signed by itself.
    let kept = hub_restricted(&ministry);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let (v2, _) = verified(&kept[1], &gd_creds);
    assert!(v2.delta.is_some() && v2.parent.is_some_and(|p| p.get() == 1), "a restricted delta: {v2:?}");
    let store = ministry.running.as_ref().unwrap().store();
    let mut signers: Vec<String> =
        store.versions(&dataset()).unwrap().iter().map(|v| v.signer.dept.to_string()).collect();
    signers.extend(kept.iter().map(|dir| verified(dir, &gd_creds).1.dept.to_string()));
    assert!(signers.len() >= 4 && signers.iter().all(|d| d == "zj"), "{signers:?}");
    assert_eq!(ministry.metric(&fetches("fetched")).await, 2.0, "one fetch per version");
    assert_eq!(ministry.metric(&fetches("invalid")).await, 0.0);

    // Revoked: the hub refuses gd, and zj refuses the hub's reads for the grant.
    control(
        &ministry.operator,
        &ministry,
        ControlRequest::GrantRevoke { grant, reason: "purpose fulfilled".into() },
    )
    .await;
    until("the hub refuses gd", || async {
        read_at(&gd.operator, &ministry, None, manifest_request())
            .await
            .is_err_and(|(_, m)| reason_of(&m) == Some("no_grant"))
    })
    .await;
    until("zj refuses the hub's read for the revoked grant", || async {
        read_at(hub_node, &zj, Some(grant), manifest_request())
            .await
            .is_err_and(|(_, m)| reason_of(&m) == Some("no_grant"))
    })
    .await;
}
