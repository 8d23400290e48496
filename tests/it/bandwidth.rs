//! Bandwidth timetables and priorities (issue 20 §4), measured on loopback: the rate a pull
//! achieves against its limit, a timetable's edge passing mid-pull, a serving node holding one
//! peer to its department's limit while another peer is not held, an operator's pull beside a
//! node's bulk pull under the serving node's limit, and a node's `pull-bwlimit` holding its own
//! replication; priorities: a high-priority schedule beside a low-priority subscription under
//! one `pull-bwlimit`, and an operator's pull beside a node's pull that declares `high`. Rates
//! are asserted in bands (a limit holds within ±15%); the unlimited case's speed is never
//! asserted, only compared.

use super::pull::read_manifest;
use ferry_client::conn::Connector;
use ferry_client::control::node_call;
use ferry_client::transfer::{self, PullEvent, PullObserver, PullOptions, PullReport, PullRequest};
use ferry_net::bandwidth::{Priority, Rate, RateLimiter, ShiftedClock, Timetable};
use ferry_net::tls::Credentials;
use ferry_proto::node_api::{
    NodeRequest, RunStarted, ScheduleDefinition, ScheduleView, SubscriptionDefinition, SubscriptionView,
};
use ferry_proto::{DatasetId, JobPriority, Role};
use ferry_testkit::{NodeSpec, TestNode, TestPki, publish_vehicles};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const MIB: f64 = (1 << 20) as f64;

/// Small chunks, so a limit of a MiB or two per second is paced in many small steps.
const CHUNKS: &str = "[transfer]\nrows-per-file = 20000\nchunk-size = \"64KiB\"\n";

/// When each verified byte count was reached.
#[derive(Default)]
struct Timeline(Mutex<Vec<(Instant, u64)>>);

impl PullObserver for Timeline {
    fn event(&self, event: &PullEvent) {
        if let PullEvent::Chunk { fetched_bytes, .. } = event {
            self.0.lock().unwrap().push((Instant::now(), *fetched_bytes));
        }
    }
}

impl Timeline {
    fn first(&self) -> Instant {
        self.0.lock().unwrap()[0].0
    }

    fn last(&self) -> Instant {
        self.0.lock().unwrap().last().unwrap().0
    }

    /// Bytes fetched by `at`.
    fn bytes_at(&self, at: Instant) -> u64 {
        let samples = self.0.lock().unwrap();
        samples.iter().take_while(|(t, _)| *t <= at).last().map_or(0, |(_, b)| *b)
    }

    /// Bytes per second between `from` and `to`.
    fn rate(&self, from: Instant, to: Instant) -> f64 {
        (self.bytes_at(to) - self.bytes_at(from)) as f64 / (to - from).as_secs_f64()
    }

    /// Bytes per second from the first chunk to the last (the connection and the commit left out).
    fn overall(&self) -> f64 {
        self.rate(self.first(), self.last())
    }
}

/// A node of the ministry with `datasets` published (`rows` each), chunks of 64 KiB, and `limits`
/// as its `[limits]` table's lines.
async fn serving_node(pki: &TestPki, datasets: &[(&str, usize)], limits: &str) -> TestNode {
    let extra = format!("{CHUNKS}[limits]\n{limits}\n");
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = &extra;
    let node = TestNode::start(pki, spec).await;
    for (seed, (dataset, rows)) in datasets.iter().enumerate() {
        publish_vehicles(&node, dataset, *rows, seed as u64 + 1).await;
    }
    node
}

/// Pulls `dataset` from `node` as `creds` with `opts`, recording its timeline.
async fn pull(
    creds: &Credentials,
    node: &TestNode,
    dataset: &str,
    opts: PullOptions,
) -> (PullReport, Arc<Timeline>) {
    let dest = tempfile::tempdir().unwrap();
    let timeline = Arc::new(Timeline::default());
    let connector = Connector::new(creds, node.node_addr()).unwrap();
    let request = PullRequest { dataset: DatasetId::new(dataset).unwrap(), version: None };
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let report = transfer::pull(&connector, creds, &request, dest.path(), &opts, timeline.clone(), cancel)
        .await
        .expect("pull");
    connector.shutdown().await;
    (report, timeline)
}

fn operator(pki: &TestPki, dept: &str) -> Credentials {
    Credentials::load(&pki.issue(&format!("{dept}-analyst"), dept, Role::Operator)).unwrap()
}

fn within(rate: f64, limit: f64, band: f64) -> bool {
    (limit * (1.0 - band)..=limit * (1.0 + band)).contains(&rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_with_a_bwlimit_achieves_its_rate() {
    let pki = TestPki::new();
    let node = serving_node(&pki, &[("vehicle-registry", 400_000)], "").await;
    let total = read_manifest(&node.version_dir("vehicle-registry", 1)).total_bytes() as f64;
    assert!(total > 3.0 * 4.0 * MIB, "enough for three seconds at 4M: {total}");
    let opts = PullOptions {
        bandwidth: Some(Arc::new(RateLimiter::new(Timetable::parse("4M").unwrap()))),
        ..PullOptions::default()
    };
    let (report, timeline) = pull(&operator(&pki, "guangdong"), &node, "vehicle-registry", opts).await;
    assert_eq!(report.fetched_bytes as f64, total);
    let rate = timeline.overall() / MIB;
    println!("limit=4MiB/s achieved={rate:.2}MiB/s total={:.1}MiB", total / MIB);
    assert!(within(rate, 4.0, 0.15), "{rate:.2} MiB/s against a limit of 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timetable_edge_passing_mid_pull_changes_the_rate() {
    let pki = TestPki::new();
    let node = serving_node(&pki, &[("vehicle-registry", 160_000)], "").await;
    // The puller's clock reads 07:59:57 (Shanghai): 512 KiB/s for three seconds, then 2 MiB/s
    // from the 08:00 edge on.
    let timetable = Timetable::parse("07:00,512k 08:00,2M 09:00,off").unwrap();
    let mut edge = timetable.next_edge(SystemTime::now()).unwrap();
    while edge.rate != Rate::from_bytes_per_second(2 << 20) {
        edge = timetable.next_edge(edge.at).unwrap();
    }
    let clock = ShiftedClock::reading(edge.at - Duration::from_secs(3));
    let limiter = Arc::new(RateLimiter::with_clock(timetable, Arc::new(clock)));
    let started = Instant::now();
    let opts = PullOptions { bandwidth: Some(limiter), ..PullOptions::default() };
    let (_report, timeline) = pull(&operator(&pki, "guangdong"), &node, "vehicle-registry", opts).await;
    let edge_passed = started + Duration::from_secs(3);
    assert!(timeline.last() > edge_passed + Duration::from_secs(1), "the pull lasted past the edge");
    let before = timeline.rate(timeline.first() + Duration::from_millis(300), edge_passed) / MIB;
    let after = timeline.rate(edge_passed + Duration::from_millis(300), timeline.last()) / MIB;
    println!("before={before:.2}MiB/s after={after:.2}MiB/s");
    assert!(within(before, 0.5, 0.15), "{before:.2} MiB/s before the edge, limit 0.5");
    assert!(within(after, 2.0, 0.15), "{after:.2} MiB/s after the edge, limit 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departments_serve_limit_holds_its_peers_and_leaves_another_alone() {
    let pki = TestPki::new();
    let limits = "[limits.serve-bwlimit-by-dept]\nguangdong = \"1M\"\n";
    let node = serving_node(&pki, &[("vehicle-registry", 60_000)], limits).await;
    let total = read_manifest(&node.version_dir("vehicle-registry", 1)).total_bytes() as f64;
    let (gd, zj) = (operator(&pki, "guangdong"), operator(&pki, "zhejiang"));
    let (held, free) = tokio::join!(
        pull(&gd, &node, "vehicle-registry", PullOptions::default()),
        pull(&zj, &node, "vehicle-registry", PullOptions::default()),
    );
    let held_rate = held.1.overall() / MIB;
    let free_seconds = (free.1.last() - free.1.first()).as_secs_f64();
    let held_seconds = (held.1.last() - held.1.first()).as_secs_f64();
    println!(
        "guangdong={held_rate:.2}MiB/s in {held_seconds:.1}s zhejiang in {free_seconds:.2}s total={:.1}MiB",
        total / MIB
    );
    assert!(within(held_rate, 1.0, 0.15), "guangdong held to 1M: {held_rate:.2} MiB/s");
    assert!(free_seconds < held_seconds / 2.0, "zhejiang is not held to guangdong's limit");
    let delayed = node.metric("ferry_bandwidth_delayed_bytes_total{direction=\"serve\"}").await;
    assert!(delayed > 0.0, "the limiter's delays are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_pull_beside_a_bulk_pull_gets_most_of_the_nodes_limit() {
    let pki = TestPki::new();
    let limits = "serve-bwlimit = \"2M\"\n";
    let datasets = [("bulk-registry", 100_000), ("vehicle-registry", 40_000)];
    let node = serving_node(&pki, &datasets, limits).await;
    let limit =
        node.metric("ferry_bandwidth_limit_bytes_per_second{direction=\"serve\",scope=\"node\"}").await;
    assert_eq!(limit, 2.0 * MIB);
    // A province's node certificate: bulk. An operator's: interactive.
    let province = Credentials::load(&pki.issue("zj-node", "zhejiang", Role::Province)).unwrap();
    let bulk = {
        let (province, node_addr) = (province.clone(), node.node_addr());
        tokio::spawn(async move {
            let timeline = Arc::new(Timeline::default());
            let dest = tempfile::tempdir().unwrap();
            let connector = Connector::new(&province, node_addr).unwrap();
            let request = PullRequest { dataset: DatasetId::new("bulk-registry").unwrap(), version: None };
            let (_tx, cancel) = tokio::sync::watch::channel(false);
            let opts = PullOptions::default();
            transfer::pull(&connector, &province, &request, dest.path(), &opts, timeline.clone(), cancel)
                .await
                .expect("bulk pull");
            timeline
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_report, interactive) =
        pull(&operator(&pki, "guangdong"), &node, "vehicle-registry", PullOptions::default()).await;
    let bulk = bulk.await.unwrap();
    let rate = interactive.overall() / MIB;
    let (from, to) = (interactive.first(), interactive.last());
    let bulk_meanwhile = bulk.rate(from, to) / MIB;
    println!("interactive={rate:.2}MiB/s bulk_meanwhile={bulk_meanwhile:.2}MiB/s limit=2MiB/s");
    assert!(rate >= 2.0 * 0.75, "the interactive pull has most of the limit: {rate:.2} MiB/s");
    assert!(bulk_meanwhile > 0.05, "the bulk pull still moves: {bulk_meanwhile:.2} MiB/s");
    assert!(rate + bulk_meanwhile <= 2.0 * 1.15, "together within the node's limit");
    assert!(to < bulk.last(), "the interactive pull finished first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_pull_bwlimit_holds_its_replication() {
    let pki = TestPki::new();
    let ministry = serving_node(&pki, &[("vehicle-registry", 60_000)], "").await;
    let total = read_manifest(&ministry.version_dir("vehicle-registry", 1)).total_bytes() as f64;
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr())];
    spec.extra = "[limits]\npull-bwlimit = \"1M\"\n";
    let province = TestNode::start(&pki, spec).await;
    let limit =
        province.metric("ferry_bandwidth_limit_bytes_per_second{direction=\"pull\",scope=\"node\"}").await;
    assert_eq!(limit, MIB);
    let ops = province.operator_session().await;
    let started = Instant::now();
    let replicate = ferry_proto::Message::Replicate {
        peer: "ministry".into(),
        dataset: DatasetId::new("vehicle-registry").unwrap(),
        version: None,
    };
    let answer = ops.request(&replicate).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(matches!(answer, ferry_proto::Message::Replicated { .. }), "{answer:?}");
    let rate = total / MIB / seconds;
    println!(
        "replication at {rate:.2}MiB/s (limit 1M, connection and commit included) total={:.1}MiB",
        total / MIB
    );
    // The connection, manifest and commit are in the time: the band reaches lower.
    assert!((0.7..=1.15).contains(&rate), "{rate:.2} MiB/s against pull-bwlimit 1M");
    let delayed = province.metric("ferry_bandwidth_delayed_bytes_total{direction=\"pull\"}").await;
    assert!(delayed > 0.0, "the node's pull limiter delayed its replication");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_pull_bwlimit_holds_the_pulls_from_that_peer_only() {
    let pki = TestPki::new();
    let ministry = serving_node(&pki, &[("vehicle-registry", 60_000)], "").await;
    let total = read_manifest(&ministry.version_dir("vehicle-registry", 1)).total_bytes() as f64;
    let mut spec = NodeSpec::new("zhejiang", Role::Province);
    spec.extra = CHUNKS;
    let zhejiang = TestNode::start(&pki, spec).await;
    publish_vehicles(&zhejiang, "zj-vehicles", 60_000, 7).await;
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr()), ("zhejiang", zhejiang.addr())];
    spec.extra = "[limits.pull-bwlimit-by-peer]\nministry = \"1M\"\n";
    let province = TestNode::start(&pki, spec).await;
    let ops = province.operator_session().await;
    let replicate = |peer: &str, dataset: &str| ferry_proto::Message::Replicate {
        peer: peer.into(),
        dataset: DatasetId::new(dataset).unwrap(),
        version: None,
    };
    let started = Instant::now();
    let answer = ops.request(&replicate("zhejiang", "zj-vehicles")).await.unwrap();
    let unlimited_seconds = started.elapsed().as_secs_f64();
    assert!(matches!(answer, ferry_proto::Message::Replicated { .. }), "{answer:?}");
    let started = Instant::now();
    let answer = ops.request(&replicate("ministry", "vehicle-registry")).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(matches!(answer, ferry_proto::Message::Replicated { .. }), "{answer:?}");
    let rate = total / MIB / seconds;
    println!("from the ministry {rate:.2}MiB/s (limit 1M); from zhejiang {unlimited_seconds:.2}s, no limit");
    assert!((0.7..=1.15).contains(&rate), "{rate:.2} MiB/s against the ministry's pull-bwlimit-by-peer 1M");
    assert!(
        unlimited_seconds < seconds / 2.0,
        "the pull from zhejiang is not held by the ministry's limit: {unlimited_seconds:.2}s against {seconds:.2}s"
    );
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A node call on `node`'s operator session, its answer.
async fn ask(node: &TestNode, request: NodeRequest) -> serde_json::Value {
    let ops = node.operator_session().await;
    let answer = node_call(&ops, &request).await.unwrap_or_else(|e| panic!("{}: {e}", request.to_json()));
    ops.close();
    answer
}

fn high_job() -> ScheduleDefinition {
    ScheduleDefinition {
        name: "high-registry-nightly".into(),
        dataset: "high-registry".into(),
        from: "ministry".into(),
        into: "store".into(),
        cron: "0 3 * * *".into(),
        time_zone: None,
        jitter: None,
        deadline: Some("2m".into()),
        retries: Some(0),
        backoff: None,
        catch_up: None,
        enabled: None,
        priority: Some("high".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_schedule_beside_a_low_subscription_gets_most_of_the_pull_bwlimit() {
    let pki = TestPki::new();
    let datasets = [("high-registry", 150_000), ("low-registry", 150_000)];
    let ministry = serving_node(&pki, &datasets, "").await;
    let high = read_manifest(&ministry.version_dir("high-registry", 1));
    let high_chunks: u64 = high.files.iter().map(|f| high.chunk_count(f.size)).sum();
    let mut spec = NodeSpec::new("guangdong", Role::Province);
    spec.peers = vec![("ministry", ministry.addr())];
    spec.extra = "[limits]\npull-bwlimit = \"2M\"\n";
    let province = TestNode::start(&pki, spec).await;
    let chunks = "ferry_transfer_chunks_verified_total";
    // The low subscription starts pulling v1 at once; the high job is added and run beside it.
    let low = SubscriptionDefinition {
        dataset: DatasetId::new("low-registry").unwrap(),
        from: "ministry".into(),
        into: None,
        priority: Some("low".into()),
    };
    let view: SubscriptionView =
        serde_json::from_value(ask(&province, NodeRequest::NodeSubscriptionAdd { subscription: low }).await)
            .unwrap();
    assert_eq!(view.priority, JobPriority::Low);
    let added = ask(&province, NodeRequest::NodeScheduleAdd { schedule: Box::new(high_job()) }).await;
    let added: ScheduleView = serde_json::from_value(added).unwrap();
    assert_eq!(added.priority, JobPriority::High);
    let name = added.name.clone();
    let started = ask(&province, NodeRequest::NodeScheduleRunNow { name: name.clone() }).await;
    let started: RunStarted = serde_json::from_value(started).unwrap();
    // Chunks verified by the province (both pulls), sampled until the high run has ended.
    let mut samples = vec![(unix_ms(), province.metric(chunks).await)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        samples.push((unix_ms(), province.metric(chunks).await));
        let views: Vec<ScheduleView> =
            serde_json::from_value(ask(&province, NodeRequest::NodeScheduleList {}).await).unwrap();
        let view = views.into_iter().find(|v| v.name == name).unwrap();
        let ended = view.last_run.filter(|r| r.started_ms >= started.started_ms && r.outcome.is_some());
        if let Some(run) = ended.filter(|_| !view.running) {
            break run;
        }
        assert!(Instant::now() < deadline, "the high job's run did not end");
    };
    let (from, to) = (run.started_ms, run.ended_ms.unwrap());
    let chunks_at = |at: u64| samples.iter().take_while(|(t, _)| *t <= at).last().map_or(0.0, |(_, c)| *c);
    let seconds = (to - from) as f64 / 1000.0;
    let high_rate = run.bytes_fetched as f64 / seconds / MIB;
    let low_chunks = chunks_at(to) - chunks_at(from) - high_chunks as f64;
    let low_rate = low_chunks * 64.0 * 1024.0 / seconds / MIB;
    println!(
        "high={high_rate:.2}MiB/s over {seconds:.1}s (connection and commit included) \
         low_meanwhile={low_rate:.2}MiB/s ({low_chunks} chunks) limit=2MiB/s"
    );
    // Split evenly (both bulk normal, as before priorities) the high job would get about 1M.
    assert!(high_rate >= 2.0 * 0.65, "the high job has most of the limit: {high_rate:.2} MiB/s");
    assert!(low_chunks >= 3.0, "the low subscription still moves: {low_chunks} chunks meanwhile");
    assert!(high_rate + low_rate <= 2.0 * 1.15, "together within pull-bwlimit");
    // The low subscription completes afterwards.
    let holds_low = || {
        let store = province.running.as_ref().unwrap().store();
        store.version(&DatasetId::new("low-registry").unwrap(), None).is_ok()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holds_low() {
        assert!(Instant::now() < deadline, "the low subscription never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pull_finishes_before_a_node_pull_that_declares_high() {
    let pki = TestPki::new();
    let limits = "serve-bwlimit = \"2M\"\n";
    let datasets = [("bulk-registry", 100_000), ("vehicle-registry", 40_000)];
    let node = serving_node(&pki, &datasets, limits).await;
    // A province's node pulls in class high (GetChunks tag 0x35): it orders the node's own
    // answers, never above an operator's.
    let province = Credentials::load(&pki.issue("zj-node", "zhejiang", Role::Province)).unwrap();
    let bulk = {
        let (province, node_addr) = (province.clone(), node.node_addr());
        tokio::spawn(async move {
            let timeline = Arc::new(Timeline::default());
            let dest = tempfile::tempdir().unwrap();
            let connector = Connector::new(&province, node_addr).unwrap();
            let request = PullRequest { dataset: DatasetId::new("bulk-registry").unwrap(), version: None };
            let (_tx, cancel) = tokio::sync::watch::channel(false);
            let opts = PullOptions { priority: Priority::Bulk(JobPriority::High), ..PullOptions::default() };
            transfer::pull(&connector, &province, &request, dest.path(), &opts, timeline.clone(), cancel)
                .await
                .expect("high bulk pull");
            timeline
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_report, interactive) =
        pull(&operator(&pki, "guangdong"), &node, "vehicle-registry", PullOptions::default()).await;
    let bulk = bulk.await.unwrap();
    let rate = interactive.overall() / MIB;
    let bulk_meanwhile = bulk.rate(interactive.first(), interactive.last()) / MIB;
    println!("interactive={rate:.2}MiB/s declared_high_meanwhile={bulk_meanwhile:.2}MiB/s limit=2MiB/s");
    assert!(rate >= 2.0 * 0.75, "the operator's pull has most of the limit: {rate:.2} MiB/s");
    assert!(bulk_meanwhile > 0.05, "the node's pull still moves: {bulk_meanwhile:.2} MiB/s");
    assert!(interactive.last() < bulk.last(), "the operator's pull finished first");
}
