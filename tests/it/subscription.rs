//! Subscriptions (issue 20 §1) and the ministry hub (§5): a subscribed node holds each version
//! its source commits within seconds, as a delta; one that was down catches up when it returns;
//! a subscription needs a grant offering the method, and a revoked grant ends the stream; a
//! province receives another province's dataset through the ministry, signed by its provider; an
//! announcement by a node that is not the provider (a province, a hub that re-signs) is refused
//! naming both, counted, and nothing committed, the provider still followed; a full or
//! read-only target fails naming the cause for the node's operator.

use ferry_client::conn::Session;
use ferry_client::control::{ControlRequest, decode_answer, node_call};
use ferry_net::tls::TlsPaths;
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::authz::reason_of;
use ferry_proto::node_api::{
    NodeRequest, NodeStatus, SubscriptionDefinition, SubscriptionOrigin, SubscriptionView,
};
use ferry_proto::{DatasetId, ErrorCode, Message, Role, ServiceMethod, VersionKind, VersionNo};
use ferry_tables::synth;
use ferry_testkit::{
    NodeSpec, TestNode, TestPki, apply_for_methods_and_wait, hash_file, metric_sample,
    publish_vehicle_batches,
};
use std::time::{Duration, Instant};

use super::grant_traffic::control;
use super::pull::{SMALL_FILES, read_manifest};

const DATASET: &str = "vehicle-registry";
/// The issue's bound: every subscriber holds a new version within 10 s of its commit.
const WITHIN: Duration = Duration::from_secs(10);

fn dataset() -> DatasetId {
    DatasetId::new(DATASET).unwrap()
}

/// The version of the dataset `node`'s store holds.
fn held(node: &TestNode) -> Option<u64> {
    node.running.as_ref()?.store().version(&dataset(), None).ok().map(|v| v.manifest.version.get())
}

/// Waits until `node` holds `version`; returns how long it took.
async fn until_held(node: &TestNode, version: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while held(node) != Some(version) {
        assert!(
            started.elapsed() < within,
            "{} holds {:?}, not v{version}, after {within:?}",
            node.name,
            held(node)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Every stored file of `version` on `node` has the BLAKE3 of the same file on `source`.
fn assert_same_files(node: &TestNode, source: &TestNode, version: u64) {
    let theirs = source.version_dir(DATASET, version);
    let mut names = 0;
    for entry in std::fs::read_dir(&theirs).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let name = entry.file_name();
        let ours = node.version_dir(DATASET, version).join(&name);
        assert_eq!(hash_file(&ours), hash_file(&theirs.join(&name)), "{name:?}");
        names += 1;
    }
    assert!(names >= 2, "the version has files ({names})");
}

async fn subscriptions(node: &TestNode) -> Vec<SubscriptionView> {
    let ops = node.operator_session().await;
    let value = node_call(&ops, &NodeRequest::NodeSubscriptionList {}).await.expect("subscription list");
    ops.close();
    serde_json::from_value(value).unwrap()
}

async fn subscribe(node: &TestNode, from: &str) -> SubscriptionView {
    subscribe_into(node, from, None).await
}

/// Subscribes `node` to the dataset at `from`, into its store or a directory.
async fn subscribe_into(node: &TestNode, from: &str, into: Option<&std::path::Path>) -> SubscriptionView {
    let ops = node.operator_session().await;
    let into = into.map(|dir| dir.display().to_string());
    let subscription = SubscriptionDefinition { dataset: dataset(), from: from.into(), into, priority: None };
    let value = node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription }).await.expect("subscribe");
    ops.close();
    serde_json::from_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_province_holds_each_new_version_within_seconds_as_a_delta() {
    let pki = TestPki::new();
    let ministry =
        TestNode::start(&pki, NodeSpec { extra: SMALL_FILES, ..NodeSpec::new("ministry", Role::Ministry) })
            .await;
    let spec = NodeSpec {
        peers: vec![("ministry", ministry.addr())],
        extra: "[[subscription]]\ndataset = \"vehicle-registry\"\nfrom = \"ministry\"\n",
        ..NodeSpec::new("guangdong", Role::Province)
    };
    let province = TestNode::start(&pki, spec).await;

    let day1: Vec<_> = synth::vehicle_registry(31, 30_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1.clone()).await;
    let took = until_held(&province, 1, WITHIN).await;
    println!("v1 held by the subscriber {took:?} after the publish");
    assert_same_files(&province, &ministry, 1);

    let received = |text: &str| metric_sample(text, "ferry_transfer_received_bytes_total").unwrap_or(0.0);
    let before = received(&province.metrics().await);
    let edits = synth::edit_vehicle_registry(&day1, 32, 0.01).unwrap();
    publish_vehicle_batches(&ministry, DATASET, edits.batches).await;
    let took = until_held(&province, 2, WITHIN).await;
    let fetched = received(&province.metrics().await) - before;
    let m2 = read_manifest(&province.version_dir(DATASET, 2));
    println!(
        "v2 held {took:?} after the publish; {fetched} bytes fetched, the table is {}",
        m2.table_bytes()
    );
    assert_eq!(m2.kind, VersionKind::Delta, "the subscriber holds v2 as the publisher's delta");
    assert!(
        fetched > 0.0 && fetched < m2.table_bytes() as f64 / 5.0,
        "fetched {fetched} of {}",
        m2.table_bytes()
    );
    assert_same_files(&province, &ministry, 2);

    // The subscriber shows it in `ferry status` and its metrics; the ministry sees it hold v2.
    let ops = province.operator_session().await;
    let status: NodeStatus =
        serde_json::from_value(node_call(&ops, &NodeRequest::NodeStatus {}).await.unwrap()).unwrap();
    ops.close();
    let view = &status.subscriptions[0];
    assert_eq!((view.source.as_str(), view.held, view.lag_versions), ("ministry", VersionNo::new(2).ok(), 0));
    assert_eq!(view.origin, SubscriptionOrigin::Config);
    let text = province.metrics().await;
    let ok = r#"ferry_subscription_pulls_total{dataset="vehicle-registry",outcome="ok"}"#;
    assert_eq!(metric_sample(&text, ok), Some(2.0), "{text}");
    let lag = r#"ferry_subscription_version_lag{dataset="vehicle-registry",source="ministry"}"#;
    assert_eq!(metric_sample(&text, lag), Some(0.0));
    let lag = r#"ferry_subscriber_lag_versions{dataset="vehicle-registry",subscriber="guangdong"}"#;
    let started = Instant::now();
    while metric_sample(&ministry.metrics().await, lag) != Some(0.0) {
        assert!(started.elapsed() < WITHIN, "the ministry never saw the subscriber hold v2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_was_down_catches_up_when_it_returns() {
    let pki = TestPki::new();
    let ministry =
        TestNode::start(&pki, NodeSpec { extra: SMALL_FILES, ..NodeSpec::new("ministry", Role::Ministry) })
            .await;
    let spec =
        NodeSpec { peers: vec![("ministry", ministry.addr())], ..NodeSpec::new("guangdong", Role::Province) };
    let mut province = TestNode::start(&pki, spec).await;
    let added = subscribe(&province, "ministry").await;
    assert_eq!(added.origin, SubscriptionOrigin::Added);

    let day1: Vec<_> = synth::vehicle_registry(41, 20_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1.clone()).await;
    until_held(&province, 1, WITHIN).await;

    // Down while two versions are published.
    let addr = province.addr();
    province.stop().await;
    let day2 = synth::edit_vehicle_registry(&day1, 42, 0.01).unwrap().batches;
    publish_vehicle_batches(&ministry, DATASET, day2.clone()).await;
    let day3 = synth::edit_vehicle_registry(&day2, 43, 0.01).unwrap().batches;
    publish_vehicle_batches(&ministry, DATASET, day3).await;

    // Back: the subscription kept in its state directory resumes, and it holds the latest.
    province.restart(addr).await;
    let took = until_held(&province, 3, WITHIN).await;
    println!("caught up to v3 {took:?} after the restart");
    for version in 2..=3 {
        assert_same_files(&province, &ministry, version);
    }
    let kept = subscriptions(&province).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((kept[0].origin, kept[0].source.as_str()), (SubscriptionOrigin::Added, "ministry"));

    // Removed, it is gone after a restart too.
    let ops = province.operator_session().await;
    node_call(&ops, &NodeRequest::NodeSubscriptionRemove { dataset: dataset(), into: None }).await.unwrap();
    ops.close();
    // Its series go with it: the label set is that of the subscriptions the node has.
    let lag = r#"ferry_subscription_version_lag{dataset="vehicle-registry",source="ministry"}"#;
    let started = Instant::now();
    while metric_sample(&province.metrics().await, lag).is_some() {
        assert!(started.elapsed() < WITHIN, "the removed subscription's lag is still exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    province.stop().await;
    province.restart(addr).await;
    assert!(subscriptions(&province).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_into_a_directory_materializes_each_version() {
    let pki = TestPki::new();
    let ministry =
        TestNode::start(&pki, NodeSpec { extra: SMALL_FILES, ..NodeSpec::new("ministry", Role::Ministry) })
            .await;
    let spec =
        NodeSpec { peers: vec![("ministry", ministry.addr())], ..NodeSpec::new("guangdong", Role::Province) };
    let province = TestNode::start(&pki, spec).await;
    let target = tempfile::tempdir().unwrap();
    let ops = province.operator_session().await;
    let into = Some(target.path().display().to_string());
    let subscription = SubscriptionDefinition {
        dataset: dataset(),
        from: "ministry".into(),
        into: into.clone(),
        priority: None,
    };
    node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription }).await.expect("subscribe");
    // A relative directory is refused, naming the problem.
    let relative = SubscriptionDefinition {
        dataset: dataset(),
        from: "ministry".into(),
        into: Some("exports".into()),
        priority: None,
    };
    let refused =
        node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription: relative }).await.unwrap_err();
    assert!(refused.to_string().contains("absolute"), "{refused}");
    ops.close();

    let day1: Vec<_> = synth::vehicle_registry(71, 20_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1.clone()).await;
    let day2 = synth::edit_vehicle_registry(&day1, 72, 0.01).unwrap().batches;
    publish_vehicle_batches(&ministry, DATASET, day2).await;
    let v2 = target.path().join(DATASET).join("v2");
    let started = Instant::now();
    while !v2.join("manifest.signed").exists() {
        assert!(started.elapsed() < WITHIN, "v2 never materialized in the directory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let manifest = read_manifest(&v2);
    for file in &manifest.table {
        assert_eq!(hash_file(&v2.join(file.name.as_str())), file.blake3.0, "{}", file.name);
    }
    assert_eq!(held(&province), None, "the node's own store is not the target");
    let started = Instant::now();
    loop {
        let views = subscriptions(&province).await;
        if views[0].held == VersionNo::new(2).ok() {
            assert_eq!(views[0].into, into);
            break;
        }
        assert!(started.elapsed() < WITHIN, "the subscription never showed v2 held: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last error of the node's first subscription as `ferry status` shows it.
async fn status_error(ops: &Session) -> String {
    let status: NodeStatus =
        serde_json::from_value(node_call(ops, &NodeRequest::NodeStatus {}).await.expect("status")).unwrap();
    status.subscriptions[0].last_error.clone().expect("status shows the error")
}

/// Waits until the node's subscription of the dataset reports an error; returns it.
async fn until_error(node: &TestNode) -> String {
    until_error_from(node, "ministry").await
}

/// Waits until the node's subscription of the dataset at `source` reports an error; returns it.
async fn until_error_from(node: &TestNode, source: &str) -> String {
    let started = Instant::now();
    loop {
        let views = subscriptions(node).await;
        let view = views.iter().find(|v| v.source == source);
        if let Some(error) = view.and_then(|v| v.last_error.clone()) {
            return error;
        }
        assert!(started.elapsed() < WITHIN, "the subscription reported no error: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_target_fails_typed_commits_nothing_and_the_node_keeps_serving() {
    let pki = TestPki::new();
    let ministry =
        TestNode::start(&pki, NodeSpec { extra: SMALL_FILES, ..NodeSpec::new("ministry", Role::Ministry) })
            .await;
    let spec =
        NodeSpec { peers: vec![("ministry", ministry.addr())], ..NodeSpec::new("guangdong", Role::Province) };
    let province = TestNode::start(&pki, spec).await;
    let day1: Vec<_> = synth::vehicle_registry(73, 20_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1).await;
    let total = read_manifest(&ministry.version_dir(DATASET, 1)).total_bytes();

    // A full target: a tmpfs with room for a third of the version.
    let target = tempfile::tempdir().unwrap();
    let Some(tmpfs) = super::faults::Tmpfs::mount(target.path(), total / 3) else { return };
    let ops = province.operator_session().await;
    let into = Some(target.path().display().to_string());
    let subscription =
        SubscriptionDefinition { dataset: dataset(), from: "ministry".into(), into, priority: None };
    node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription }).await.expect("subscribe");
    let error = until_error(&province).await;
    assert!(error.to_lowercase().contains("space"), "names the full disk: {error}");
    let v1 = target.path().join(DATASET).join("v1");
    assert!(!v1.join("manifest.signed").exists(), "nothing committed on a full target");
    // The node keeps serving: its own department's calls and a peer's reads.
    let status = node_call(&ops, &NodeRequest::NodeStatus {}).await.expect("status while failing");
    assert_eq!(status["node"], "guangdong");
    // Room again: the subscription's retry completes the version.
    tmpfs.resize(3 * total + (8 << 20));
    let started = Instant::now();
    while !v1.join("manifest.signed").exists() {
        assert!(started.elapsed() < WITHIN * 3, "v1 never materialized once there was room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let manifest = read_manifest(&v1);
    for file in &manifest.table {
        assert_eq!(hash_file(&v1.join(file.name.as_str())), file.blake3.0, "{}", file.name);
    }
    node_call(
        &ops,
        &NodeRequest::NodeSubscriptionRemove {
            dataset: dataset(),
            into: Some(target.path().display().to_string()),
        },
    )
    .await
    .expect("unsubscribe");
    drop(tmpfs);

    // A read-only target.
    let readonly = tempfile::tempdir().unwrap();
    let Some(mounted) = super::faults::Tmpfs::mount_read_only(readonly.path()) else { return };
    let into = Some(readonly.path().display().to_string());
    let subscription =
        SubscriptionDefinition { dataset: dataset(), from: "ministry".into(), into, priority: None };
    node_call(&ops, &NodeRequest::NodeSubscriptionAdd { subscription }).await.expect("subscribe read-only");
    let error = until_error(&province).await;
    // The node's own operator reads the cause in `ferry subscription list` and `ferry status`:
    // the target's path and the read-only file system (a peer would read an incident number
    // only), with the incident number of the log line; nothing is committed and the node keeps
    // answering.
    let target = readonly.path().display().to_string();
    for shown in [&error, &status_error(&ops).await] {
        assert!(shown.contains("Read-only file system"), "names the cause: {shown}");
        assert!(shown.contains(&target) && shown.contains("incident"), "{shown}");
    }
    assert!(!readonly.path().join(DATASET).join("v1").join("manifest.signed").exists());
    drop(mounted);
    ops.close();
}

// ---- With the ministry's catalog and grants -------------------------------------------------

/// The vehicle registry of `provider` as an unconditional catalog entry offering download and
/// subscription.
fn entry(provider: &str) -> String {
    let definition = synth::vehicle_registry_definition(DATASET, provider);
    format!(
        "{definition}\n[catalog]\nclassification = \"operations/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"provincial transport departments\"\nmethods = [\"download\", \"subscription\"]\n"
    )
}

async fn start_ministry(pki: &TestPki, peers: Vec<(&str, std::net::SocketAddr)>) -> TestNode {
    let control = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        control.cert, control.key
    );
    let spec = NodeSpec { dept: "mot", extra: &extra, peers, ..NodeSpec::new("ministry", Role::Ministry) };
    TestNode::start(pki, spec).await
}

async fn start_province(pki: &TestPki, name: &str, peers: Vec<(&str, std::net::SocketAddr)>) -> TestNode {
    let spec = NodeSpec {
        dept: name,
        peers,
        extra: "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"5s\"\n",
        ..NodeSpec::new(name, Role::Province)
    };
    TestNode::start(pki, spec).await
}

/// Registers the provider's entry and publishes its first version once its node enforces it.
async fn register_and_publish(
    ministry: &TestNode,
    provider: &TestNode,
    seed: u64,
) -> Vec<arrow::record_batch::RecordBatch> {
    let register = ControlRequest::CatalogRegister { document: entry(&provider.dept), effective_from: None };
    control(&provider.operator, ministry, register).await;
    let rows: Vec<_> = synth::vehicle_registry(seed, 5_000).collect();
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
    publish_vehicle_batches(provider, DATASET, rows.clone()).await;
    rows
}

/// A subscriber's open stream: its side stays open while this lives.
struct Stream {
    _session: Session,
    _writer: FrameWriter,
    reader: FrameReader,
}

/// Opens a `Subscribe` stream as `who`; returns it and its first frame (or the refusal).
async fn open_subscription(who: &TlsPaths, node: &TestNode) -> (Stream, Message) {
    let session = ferry_testkit::connect(who, node.node_addr()).await;
    let (writer, mut reader) =
        session.open(&Message::Subscribe { dataset: dataset(), have: None }).await.unwrap();
    let first = tokio::time::timeout(WITHIN, reader.next()).await.expect("an answer").unwrap().unwrap();
    (Stream { _session: session, _writer: writer, reader }, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_needs_a_grant_offering_it_and_a_revocation_ends_the_stream() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki, Vec::new()).await;
    let zj = start_province(&pki, "zj", vec![("ministry", ministry.addr())]).await;
    let gd = start_province(&pki, "gd", vec![("ministry", ministry.addr()), ("zj", zj.addr())]).await;
    register_and_publish(&ministry, &zj, 51).await;

    // Without any grant: refused `no_grant`, before anything is announced.
    let (_stream, refused) = open_subscription(&gd.operator, &zj).await;
    let Message::Error { code, message } = refused else { panic!("a refusal, got {refused:?}") };
    assert_eq!((code, reason_of(&message)), (ErrorCode::PermissionDenied, Some("no_grant")), "{message}");

    // With a download grant only: `method_not_granted`; gd's own subscription says so and
    // commits nothing.
    apply_for_methods_and_wait(
        &gd.operator,
        "gd",
        &ministry,
        DATASET,
        &[ServiceMethod::Download],
        &[&zj, &gd],
    )
    .await;
    let (_stream, refused) = open_subscription(&gd.operator, &zj).await;
    let Message::Error { code, message } = refused else { panic!("a refusal, got {refused:?}") };
    assert_eq!(
        (code, reason_of(&message)),
        (ErrorCode::PermissionDenied, Some("method_not_granted")),
        "{message}"
    );
    subscribe(&gd, "zj").await;
    let started = Instant::now();
    let view = loop {
        let view = subscriptions(&gd).await.remove(0);
        if view.last_error.is_some() {
            break view;
        }
        assert!(started.elapsed() < WITHIN, "the refusal never showed: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(view.last_error.as_deref().unwrap().contains("method_not_granted"), "{view:?}");
    assert_eq!(held(&gd), None, "nothing is committed");

    // With a subscription grant the stream announces v1; revoked, it ends with the reason (the
    // download grant left does not offer subscription).
    let grant = apply_for_methods_and_wait(
        &gd.operator,
        "gd",
        &ministry,
        DATASET,
        &[ServiceMethod::Subscription, ServiceMethod::Download],
        &[&zj, &gd],
    )
    .await;
    let (mut stream, first) = open_subscription(&gd.operator, &zj).await;
    assert!(matches!(first, Message::Announce { version, .. } if version == VersionNo::FIRST), "{first:?}");
    until_held(&gd, 1, WITHIN).await;
    let revoke = ControlRequest::GrantRevoke { grant, reason: "purpose fulfilled".into() };
    let revoked_at = Instant::now();
    control(&ministry.operator, &ministry, revoke).await;
    let ended = tokio::time::timeout(WITHIN, stream.reader.next()).await.expect("the stream ends").unwrap();
    println!("the subscription ended {:?} after the revocation", revoked_at.elapsed());
    let Some(Message::Error { code, message }) = ended else { panic!("an error frame, got {ended:?}") };
    assert_eq!(
        (code, reason_of(&message)),
        (ErrorCode::PermissionDenied, Some("method_not_granted")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ministry_hub_relays_a_province_dataset_signed_by_its_provider() {
    let pki = TestPki::new();
    // zj is restarted on an address the ministry knows as its peer `zj`.
    let reserved = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let zj_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let ministry = start_ministry(&pki, vec![("zj", zj_addr)]).await;
    let mut zj = start_province(&pki, "zj", vec![("ministry", ministry.addr())]).await;
    zj.stop().await;
    zj.restart(zj_addr).await;
    let gd = start_province(&pki, "gd", vec![("ministry", ministry.addr())]).await;
    let day1 = register_and_publish(&ministry, &zj, 61).await;

    // The hub follows zj's dataset; gd, granted subscription, follows it at the hub.
    subscribe(&ministry, "zj").await;
    until_held(&ministry, 1, WITHIN).await;
    let methods = [ServiceMethod::Subscription, ServiceMethod::Download];
    apply_for_methods_and_wait(&gd.operator, "gd", &ministry, DATASET, &methods, &[&ministry, &gd]).await;
    subscribe(&gd, "ministry").await;
    until_held(&gd, 1, WITHIN).await;

    // zj publishes the next day: it reaches gd through the hub, as zj's node signed it.
    let day2 = synth::edit_vehicle_registry(&day1, 62, 0.01).unwrap().batches;
    publish_vehicle_batches(&zj, DATASET, day2).await;
    let took = until_held(&gd, 2, WITHIN).await;
    println!("zj's v2 reached gd through the hub {took:?} after the publish");
    for version in [1, 2] {
        let stored =
            gd.running.as_ref().unwrap().store().version(&dataset(), VersionNo::new(version).ok()).unwrap();
        assert_eq!(stored.manifest.publisher.as_str(), "zj");
        assert_eq!(
            (stored.signer.name.as_str(), stored.signer.dept.as_str()),
            ("zj", "zj"),
            "the hub never re-signs"
        );
        assert_same_files(&gd, &zj, version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_by_a_node_that_is_not_the_provider_is_refused_and_the_provider_still_followed() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki, Vec::new()).await;
    let zj = start_province(&pki, "zj", vec![("ministry", ministry.addr())]).await;
    // Two nodes that enforce no catalog and publish zj's dataset under their own name: a
    // province, and a hub of the ministry's department, which thereby re-signs it.
    let sh = TestNode::start(&pki, NodeSpec::new("sh", Role::Province)).await;
    let hub = TestNode::start(&pki, NodeSpec { dept: "mot", ..NodeSpec::new("hub", Role::Ministry) }).await;
    let peers =
        vec![("ministry", ministry.addr()), ("zj", zj.addr()), ("sh", sh.addr()), ("hub", hub.addr())];
    let gd = start_province(&pki, "gd", peers).await;
    let day1 = register_and_publish(&ministry, &zj, 81).await;
    let methods = [ServiceMethod::Subscription, ServiceMethod::Download];
    apply_for_methods_and_wait(&gd.operator, "gd", &ministry, DATASET, &methods, &[&zj, &gd]).await;
    for forger in [&sh, &hub] {
        publish_vehicle_batches(forger, DATASET, synth::vehicle_registry(82, 2_000).collect()).await;
    }

    // gd follows the dataset at each of them, into a directory each: every announcement is
    // refused naming the publisher and the provider, counted, and nothing is written.
    let (from_sh, from_hub) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let forgers = [("sh", "sh", from_sh.path()), ("hub", "mot", from_hub.path())];
    for (peer, _, dir) in forgers {
        subscribe_into(&gd, peer, Some(dir)).await;
    }
    let refused = |peer: &str, signer: &str, error: &str| {
        let names = format!("{peer} announced vehicle-registry v1 by {signer}, not its provider: ");
        let why =
            format!("dataset vehicle-registry is provided by zj, but this version was signed by {signer}");
        assert!(error.starts_with(&names) && error.ends_with(&why), "{error}");
    };
    for (peer, signer, _) in forgers {
        refused(peer, signer, &until_error_from(&gd, peer).await);
    }
    let not_provider = r#"ferry_subscription_pulls_total{dataset="vehicle-registry",outcome="not_provider"}"#;
    let counted = metric_sample(&gd.metrics().await, not_provider).unwrap_or(0.0);
    assert!(counted >= 2.0, "both refusals counted: {counted}");

    // gd keeps working: its subscription at the provider pulls v1 and, announced later, v2,
    // while the two others are still refused and have written nothing.
    subscribe(&gd, "zj").await;
    until_held(&gd, 1, WITHIN).await;
    let day2 = synth::edit_vehicle_registry(&day1, 83, 0.01).unwrap().batches;
    publish_vehicle_batches(&zj, DATASET, day2).await;
    until_held(&gd, 2, WITHIN).await;
    for version in [1, 2] {
        let stored =
            gd.running.as_ref().unwrap().store().version(&dataset(), VersionNo::new(version).ok()).unwrap();
        assert_eq!((stored.manifest.publisher.as_str(), stored.signer.dept.as_str()), ("zj", "zj"));
        assert_same_files(&gd, &zj, version);
    }
    let text = gd.metrics().await;
    let ok = r#"ferry_subscription_pulls_total{dataset="vehicle-registry",outcome="ok"}"#;
    assert_eq!(metric_sample(&text, ok), Some(2.0), "{text}");
    assert!(metric_sample(&text, not_provider).unwrap_or(0.0) >= counted);
    let views = subscriptions(&gd).await;
    for (peer, signer, dir) in forgers {
        let view = views.iter().find(|v| v.source == peer).unwrap();
        assert_eq!(view.held, None, "{view:?}");
        refused(peer, signer, view.last_error.as_deref().unwrap_or_default());
        assert!(!dir.join(DATASET).exists(), "nothing written from {peer}");
    }
}
