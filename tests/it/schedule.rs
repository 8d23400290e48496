//! Scheduled bulk downloads (issue 20, §2) on real nodes: a job added by node call runs now and
//! materializes the latest version in a directory, its next run after a new publish fetches only
//! the delta, the job and its last run survive a restart, a run missed while the node was down is
//! caught up at start (only where the job says so), a job for a dataset the department holds no
//! download grant for records the serving node's typed refusal, a malformed cron is refused
//! at add naming the field, and a run into a full or read-only target fails naming the cause,
//! commits nothing, and (the full one) completes once there is room.

use super::pull::{ministry_and_province, read_manifest};
use ferry_client::conn::Session;
use ferry_client::control::{ControlCallError, node_call};
use ferry_control::api::{ApiCode, ControlRequest};
use ferry_proto::node_api::{
    NodeRequest, NodeStatus, RunOutcome, RunRecord, RunStarted, RunTrigger, ScheduleDefinition, ScheduleView,
};
use ferry_proto::{Role, VersionNo};
use ferry_tables::synth;
use ferry_testkit::{NodeSpec, TestNode, TestPki, hash_file, publish_vehicle_batches};
use std::path::Path;
use std::time::{Duration, Instant};

const DATASET: &str = "vehicle-registry";

fn job(name: &str, into: &Path, cron: &str) -> ScheduleDefinition {
    ScheduleDefinition {
        name: name.into(),
        dataset: DATASET.into(),
        from: "ministry".into(),
        into: into.to_str().unwrap().into(),
        cron: cron.into(),
        time_zone: None,
        jitter: None,
        deadline: Some("2m".into()),
        retries: Some(1),
        backoff: Some("200ms".into()),
        catch_up: None,
        enabled: None,
        priority: None,
    }
}

async fn call(session: &Session, request: NodeRequest) -> serde_json::Value {
    node_call(session, &request).await.unwrap_or_else(|e| panic!("{}: {e}", request.to_json()))
}

async fn list(node: &TestNode) -> Vec<ScheduleView> {
    let ops = node.operator_session().await;
    let views = call(&ops, NodeRequest::NodeScheduleList {}).await;
    ops.close();
    serde_json::from_value(views).unwrap()
}

/// Waits (at most `within`) for a finished run of `name` that started at or after `since_ms`.
async fn finished_run(node: &TestNode, name: &str, since_ms: u64, within: Duration) -> RunRecord {
    let started = Instant::now();
    loop {
        let view = list(node).await.into_iter().find(|v| v.name == name).expect("the job is listed");
        let run = view.last_run.filter(|r| r.started_ms >= since_ms && r.outcome.is_some());
        if let Some(run) = run.filter(|_| !view.running) {
            return run;
        }
        assert!(started.elapsed() < within, "{name}: no finished run within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_now(node: &TestNode, name: &str) -> RunRecord {
    let ops = node.operator_session().await;
    let started = call(&ops, NodeRequest::NodeScheduleRunNow { name: name.into() }).await;
    ops.close();
    let started: RunStarted = serde_json::from_value(started).unwrap();
    finished_run(node, name, started.started_ms, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pulls_the_latest_then_only_the_delta_and_survives_a_restart() {
    let pki = TestPki::new();
    let (ministry, mut province) = ministry_and_province(&pki).await;
    let day1: Vec<_> = synth::vehicle_registry(31, 30_000).collect();
    publish_vehicle_batches(&ministry, DATASET, day1.clone()).await;
    let dest = tempfile::tempdir().unwrap();

    let ops = province.operator_session().await;
    let added = call(
        &ops,
        NodeRequest::NodeScheduleAdd { schedule: Box::new(job("nightly", dest.path(), "0 2 * * *")) },
    )
    .await;
    ops.close();
    let added: ScheduleView = serde_json::from_value(added).unwrap();
    assert_eq!((added.time_zone.as_str(), added.enabled, added.running), ("Asia/Shanghai", true, false));
    assert!(added.next_run_ms.is_some() && added.last_run.is_none());

    let first = run_now(&province, "nightly").await;
    assert_eq!(
        (first.outcome, first.trigger),
        (Some(RunOutcome::Succeeded), RunTrigger::RunNow),
        "{first:?}"
    );
    assert_eq!(first.version, Some(VersionNo::FIRST));
    let v1 = dest.path().join(DATASET).join("v1");
    assert!(v1.join("manifest.signed").exists(), "v1 committed in the directory");
    let table_bytes: u64 = std::fs::read_dir(&v1)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        first.bytes_fetched >= table_bytes,
        "the first run fetches the table: {first:?} vs {table_bytes}"
    );

    let edits = synth::edit_vehicle_registry(&day1, 32, 0.01).unwrap();
    publish_vehicle_batches(&ministry, DATASET, edits.batches).await;
    let second = run_now(&province, "nightly").await;
    assert_eq!(
        (second.outcome, second.version),
        (Some(RunOutcome::Succeeded), Some(VersionNo::new(2).unwrap()))
    );
    assert!(
        second.bytes_fetched * 10 < table_bytes,
        "the second run fetches the delta only: {} of a {table_bytes}-byte table",
        second.bytes_fetched
    );
    assert!(dest.path().join(DATASET).join("v2").join("manifest.signed").exists());
    eprintln!(
        "first run fetched {} bytes, the run after a 1% edit {} ({table_bytes}-byte table)",
        first.bytes_fetched, second.bytes_fetched
    );
    let runs = province.metric("ferry_schedule_runs_total{schedule=\"nightly\",outcome=\"succeeded\"}").await;
    assert_eq!(runs, 2.0);
    assert!(
        province.metric("ferry_schedule_last_success_timestamp_seconds{schedule=\"nightly\"}").await > 1.7e9
    );
    assert!(province.metric("ferry_schedule_next_run_timestamp_seconds{schedule=\"nightly\"}").await > 1.7e9);

    // `ferry status` shows the job with its last run.
    let ops = province.operator_session().await;
    let status: NodeStatus = serde_json::from_value(call(&ops, NodeRequest::NodeStatus {}).await).unwrap();
    ops.close();
    let shown = status.schedules.iter().find(|s| s.name == "nightly").expect("status lists the job");
    assert_eq!(shown.last_run.as_ref().and_then(|r| r.version), second.version);

    // The job and its last run are persisted: still there after a restart.
    let addr = province.addr();
    province.stop().await;
    province.restart(addr).await;
    let after = list(&province).await;
    let nightly = after.iter().find(|v| v.name == "nightly").expect("the job survives the restart");
    assert_eq!(nightly.last_run.as_ref(), Some(&second));
    assert!(nightly.last_success_ms.is_some() && nightly.next_run_ms.is_some());
}

/// A cron firing once a day, `seconds` from now (Shanghai is UTC+8 all year).
fn cron_in(seconds: i64) -> (String, Instant) {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    let local = at.to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap());
    let cron = format!("{} {} {} * * *", local.second(), local.minute(), local.hour());
    (cron, Instant::now() + Duration::from_secs(seconds as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_missed_while_the_node_was_down_is_caught_up_at_start_when_configured() {
    let pki = TestPki::new();
    let (ministry, mut province) = ministry_and_province(&pki).await;
    publish_vehicle_batches(&ministry, DATASET, synth::vehicle_registry(41, 5_000).collect()).await;
    let (catch_dir, skip_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cron, fires) = cron_in(6);
    let ops = province.operator_session().await;
    call(&ops, NodeRequest::NodeScheduleAdd { schedule: Box::new(job("catch", catch_dir.path(), &cron)) })
        .await;
    let mut skip = job("skip", skip_dir.path(), &cron);
    skip.catch_up = Some(false);
    call(&ops, NodeRequest::NodeScheduleAdd { schedule: Box::new(skip) }).await;
    ops.close();
    let addr = province.addr();
    province.stop().await;
    assert!(Instant::now() < fires, "the node stopped before the scheduled time");

    tokio::time::sleep_until((fires + Duration::from_secs(2)).into()).await;
    province.restart(addr).await;
    let run = finished_run(&province, "catch", 0, Duration::from_secs(60)).await;
    assert_eq!((run.trigger, run.outcome), (RunTrigger::CatchUp, Some(RunOutcome::Succeeded)), "{run:?}");
    assert!(catch_dir.path().join(DATASET).join("v1").join("manifest.signed").exists());
    let skipped = list(&province).await.into_iter().find(|v| v.name == "skip").unwrap();
    assert!(skipped.last_run.is_none(), "catch-up = false: counted, not run");
    assert!(!skip_dir.path().join(DATASET).exists());
    for job in ["catch", "skip"] {
        let missed =
            province.metric(&format!("ferry_schedule_missed_runs_total{{schedule=\"{job}\"}}")).await;
        assert_eq!(missed, 1.0, "{job}");
    }
    // The alert rules on failed and missed runs use series the node exports.
    let exported = province.metrics().await;
    let rules = include_str!("../../deploy/prometheus/ferry-alerts.yml");
    let used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("ferry_schedule_"))
        .collect();
    assert!(used.len() >= 2, "{used:?}");
    for name in used {
        assert!(exported.lines().any(|l| l.starts_with(&format!("{name}{{"))), "{name} is not exported");
    }
}

/// The ministry runs the control plane and registers the vehicle registry (unconditional,
/// download); Guangdong follows its policy and has applied for nothing.
async fn ministry_with_catalog_and_province(pki: &TestPki) -> (TestNode, TestNode) {
    let control = pki.issue("control", "mot", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5s\"\n",
        control.cert, control.key
    );
    let ministry = TestNode::start(
        pki,
        NodeSpec { dept: "mot", extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) },
    )
    .await;
    let entry = format!(
        "{}\n[catalog]\nclassification = \"operations/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"provincial transport departments\"\nmethods = [\"download\"]\n",
        synth::vehicle_registry_definition(DATASET, "mot")
    );
    let session = ministry.operator_session().await;
    let register = ControlRequest::CatalogRegister { document: entry, effective_from: None };
    ferry_client::control::call(&session, &register).await.expect("catalog entry registered");
    session.close();
    let spec = NodeSpec {
        dept: "gd",
        peers: vec![("ministry", ministry.addr())],
        extra: "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"3s\"\n",
        ..NodeSpec::new("guangdong", Role::Province)
    };
    let province = TestNode::start(pki, spec).await;
    (ministry, province)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_download_grant_records_the_typed_refusal() {
    let pki = TestPki::new();
    let (ministry, province) = ministry_with_catalog_and_province(&pki).await;
    // The ministry's replica takes up the new entry within its refresh; publish once it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    let batches: Vec<_> = synth::vehicle_registry(51, 2_000).collect();
    loop {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("export.parquet");
        synth::write_parquet(&path, synth::vehicle_registry_schema(), batches.clone()).unwrap();
        let definition = synth::vehicle_registry_definition(DATASET, "mot");
        let session = ministry.operator_session().await;
        let published = ferry_client::publish::publish_file(
            &session,
            &path,
            definition,
            ferry_proto::SourceFormat::Parquet,
        )
        .await;
        session.close();
        if published.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the ministry never accepted the publish: {published:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let dest = tempfile::tempdir().unwrap();
    let ops = province.operator_session().await;
    call(
        &ops,
        NodeRequest::NodeScheduleAdd { schedule: Box::new(job("no-grant", dest.path(), "0 2 * * *")) },
    )
    .await;
    ops.close();
    let run = run_now(&province, "no-grant").await;
    assert_eq!(run.outcome, Some(RunOutcome::Refused), "{run:?}");
    assert_eq!(run.code.as_deref(), Some("permission denied"));
    let error = run.error.as_deref().unwrap();
    assert!(error.contains("holds no grant") && error.contains(DATASET), "{error}");
    assert_eq!(run.attempts, 1, "a refusal is not retried");
    assert!(!dest.path().join(DATASET).exists(), "nothing committed");
    let refused =
        province.metric("ferry_schedule_runs_total{schedule=\"no-grant\",outcome=\"refused\"}").await;
    assert_eq!(refused, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cron_is_refused_at_add_naming_the_field() {
    let pki = TestPki::new();
    let (_ministry, province) = ministry_and_province(&pki).await;
    let dest = tempfile::tempdir().unwrap();
    let ops = province.operator_session().await;
    for (cron, says) in [("61 * * * *", "61"), ("every night", "2 fields")] {
        let add = NodeRequest::NodeScheduleAdd { schedule: Box::new(job("bad", dest.path(), cron)) };
        let refused = node_call(&ops, &add).await.unwrap_err();
        let ControlCallError::Refused(error) = refused else { panic!("a refusal, got {refused:?}") };
        assert_eq!(error.code, ApiCode::BadRequest);
        assert!(error.message.starts_with("cron: ") && error.message.contains(says), "{}", error.message);
        assert_eq!(error.detail, Some(serde_json::json!({ "field": "cron" })));
    }
    let mut bad_zone = job("bad", dest.path(), "0 2 * * *");
    bad_zone.time_zone = Some("Asia/Beijing".into());
    let refused =
        node_call(&ops, &NodeRequest::NodeScheduleAdd { schedule: Box::new(bad_zone) }).await.unwrap_err();
    assert!(refused.to_string().contains("time-zone"), "{refused}");
    let views = call(&ops, NodeRequest::NodeScheduleList {}).await;
    ops.close();
    assert_eq!(views, serde_json::json!([]), "nothing was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_the_node_config_runs_on_its_schedule() {
    let pki = TestPki::new();
    let (ministry, _) = ministry_and_province(&pki).await;
    publish_vehicle_batches(&ministry, DATASET, synth::vehicle_registry(61, 3_000).collect()).await;
    // Every two seconds, into the node's own store, as `ferry replicate` would.
    let extra = "\n[[schedule]]\nname = \"mirror\"\ndataset = \"vehicle-registry\"\nfrom = \"ministry\"\n\
                 into = \"store\"\ncron = \"*/2 * * * * *\"\ntime-zone = \"UTC\"\njitter = \"500ms\"\n";
    let spec = NodeSpec {
        dept: "guangdong",
        peers: vec![("ministry", ministry.addr())],
        extra,
        ..NodeSpec::new("guangdong-2", Role::Province)
    };
    let province = TestNode::start(&pki, spec).await;
    let run = finished_run(&province, "mirror", 0, Duration::from_secs(30)).await;
    assert_eq!((run.trigger, run.outcome), (RunTrigger::Scheduled, Some(RunOutcome::Succeeded)), "{run:?}");
    assert_eq!(run.version, Some(VersionNo::FIRST));
    assert!(province.version_dir(DATASET, 1).join("manifest.signed").exists(), "in the store");
    let ops = province.operator_session().await;
    let refused =
        node_call(&ops, &NodeRequest::NodeScheduleRemove { name: "mirror".into() }).await.unwrap_err();
    ops.close();
    assert!(refused.to_string().contains("config"), "{refused}");
}

/// Each table file of the version committed in `dir` hashes as its manifest says.
fn assert_committed(dir: &Path) {
    let manifest = read_manifest(dir);
    for file in &manifest.table {
        assert_eq!(hash_file(&dir.join(file.name.as_str())), file.blake3.0, "{}", file.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_target_fails_the_run_naming_the_cause_and_commits_nothing() {
    let pki = TestPki::new();
    let (ministry, province) = ministry_and_province(&pki).await;
    publish_vehicle_batches(&ministry, DATASET, synth::vehicle_registry(81, 20_000).collect()).await;
    let total = read_manifest(&ministry.version_dir(DATASET, 1)).total_bytes();

    // A full target: a tmpfs with room for a third of the version.
    let full = tempfile::tempdir().unwrap();
    let Some(tmpfs) = super::faults::Tmpfs::mount(full.path(), total / 3) else { return };
    let ops = province.operator_session().await;
    call(&ops, NodeRequest::NodeScheduleAdd { schedule: Box::new(job("full", full.path(), "0 2 * * *")) })
        .await;
    let run = run_now(&province, "full").await;
    assert_eq!((run.outcome, run.attempts), (Some(RunOutcome::Failed), 2), "retried once: {run:?}");
    assert_eq!(run.code.as_deref(), Some("out of space"), "{run:?}");
    let error = run.error.as_deref().unwrap();
    assert!(error.contains("No space left on device"), "names the lack of space: {error}");
    let v1 = full.path().join(DATASET).join("v1");
    assert!(!v1.join("manifest.signed").exists(), "nothing committed on a full target");
    // `ferry schedule list` shows that run; the node keeps answering its operators.
    let listed = list(&province).await.into_iter().find(|v| v.name == "full").unwrap();
    assert_eq!(listed.last_run.as_ref(), Some(&run));
    assert!(listed.last_success_ms.is_none());
    let status = call(&ops, NodeRequest::NodeStatus {}).await;
    assert_eq!(status["node"], "guangdong");
    let failed = province.metric("ferry_schedule_runs_total{schedule=\"full\",outcome=\"failed\"}").await;
    assert_eq!(failed, 1.0);
    // Room again: the next run completes the version, every file proven.
    tmpfs.resize(3 * total + (8 << 20));
    let run = run_now(&province, "full").await;
    assert_eq!((run.outcome, run.version), (Some(RunOutcome::Succeeded), Some(VersionNo::FIRST)), "{run:?}");
    assert_committed(&v1);
    drop(tmpfs);

    // A read-only target.
    let readonly = tempfile::tempdir().unwrap();
    let Some(_mounted) = super::faults::Tmpfs::mount_read_only(readonly.path()) else { return };
    call(
        &ops,
        NodeRequest::NodeScheduleAdd { schedule: Box::new(job("read-only", readonly.path(), "0 2 * * *")) },
    )
    .await;
    let run = run_now(&province, "read-only").await;
    assert_eq!(run.outcome, Some(RunOutcome::Failed), "{run:?}");
    let error = run.error.as_deref().unwrap();
    let target = readonly.path().display().to_string();
    assert!(error.contains("Read-only file system") && error.contains(&target), "names the cause: {error}");
    assert!(!readonly.path().join(DATASET).exists(), "nothing written");
    let listed = list(&province).await.into_iter().find(|v| v.name == "read-only").unwrap();
    assert_eq!(listed.last_run.as_ref(), Some(&run));
    let status = call(&ops, NodeRequest::NodeStatus {}).await;
    assert_eq!(status["node"], "guangdong");
    ops.close();
}
