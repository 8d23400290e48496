//! The scheduler on a manual clock with a stand-in runner: a due run starts when the clock
//! passes it, runs never overlap, refusals are not retried and failures are, and a restart after
//! a missed run catches it up from the persisted state.

use super::*;
use crate::schedule::clock::ManualClock;
use ferry_proto::{ErrorCode, VersionNo};
use futures::future::BoxFuture;
use std::collections::VecDeque;

/// Answers attempts from a queue (success when empty); a run waits while `hold` is closed.
#[derive(Debug)]
struct Scripted {
    answers: Mutex<VecDeque<Result<Pulled, RunError>>>,
    calls: AtomicU32,
    hold: tokio::sync::Semaphore,
}

impl Scripted {
    fn open() -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::default(),
            calls: AtomicU32::new(0),
            hold: tokio::sync::Semaphore::new(1_000),
        })
    }
}

impl Runner for Scripted {
    fn pull<'a>(
        &'a self,
        _spec: &'a ScheduleSpec,
        _cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'a, Result<Pulled, RunError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let _permit = self.hold.acquire().await;
            let next = self.answers.lock().unwrap().pop_front();
            next.unwrap_or(Ok(Pulled { version: VersionNo::FIRST, bytes_fetched: 10 }))
        })
    }
}

fn definition(name: &str, cron: &str) -> ScheduleDefinition {
    ScheduleDefinition {
        name: name.into(),
        dataset: "vehicle-registry".into(),
        from: "ministry".into(),
        into: "store".into(),
        cron: cron.into(),
        time_zone: Some("UTC".into()),
        jitter: None,
        deadline: None,
        retries: Some(2),
        backoff: Some("10ms".into()),
        catch_up: None,
        enabled: None,
        priority: None,
    }
}

fn start(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
    runner: Arc<Scripted>,
) -> (Arc<Scheduler>, watch::Sender<bool>) {
    let (drain, draining) = watch::channel(false);
    let parts = SchedulerParts {
        node_name: "gd".into(),
        state_dir: dir.to_owned(),
        peers: ["ministry".to_owned()].into(),
        configured: Vec::new(),
        clock,
        runner,
        metrics: Arc::new(ScheduleMetrics::default()),
        draining,
    };
    (Scheduler::start(parts), drain)
}

fn at(text: &str) -> SystemTime {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&chrono::Utc).into()
}

/// Waits until the job's last run has ended and returns it.
async fn ended(scheduler: &Scheduler, name: &str) -> RunRecord {
    for _ in 0..200 {
        let view = scheduler.list().into_iter().find(|v| v.name == name).unwrap();
        if let Some(run) = view.last_run.filter(|r| r.outcome.is_some() && !view.running) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} did not finish a run");
}

#[tokio::test]
async fn a_due_run_starts_when_the_clock_passes_it_and_runs_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-06T10:00:30Z")));
    let runner = Scripted::open();
    let (scheduler, _drain) = start(dir.path(), clock.clone(), runner.clone());
    scheduler.add(definition("every-minute", "* * * * *")).unwrap();
    let view = &scheduler.list()[0];
    assert_eq!(view.next_run_ms, Some(unix_ms(at("2026-12-06T10:01:00Z"))));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(runner.calls.load(Ordering::SeqCst), 0, "nothing is due yet");

    clock.set(at("2026-12-06T10:01:00Z"));
    let run = ended(&scheduler, "every-minute").await;
    assert_eq!((run.trigger, run.outcome), (RunTrigger::Scheduled, Some(RunOutcome::Succeeded)));
    assert_eq!(run.started_ms, unix_ms(at("2026-12-06T10:01:00Z")));
    assert_eq!(scheduler.list()[0].next_run_ms, Some(unix_ms(at("2026-12-06T10:02:00Z"))));

    // Hold the next run: run-now and the scheduled time both find it running.
    runner.hold.forget_permits(1_000);
    scheduler.run_now("every-minute").unwrap();
    let refused = scheduler.run_now("every-minute").unwrap_err();
    assert!(matches!(refused, ScheduleError::Running(_)), "{refused}");
    clock.set(at("2026-12-06T10:02:00Z"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let missed = scheduler.metrics.missed.get_or_create(&ScheduleMetrics::job("every-minute")).get();
    assert_eq!(missed, 1, "the scheduled time is skipped and counted, not run alongside");
    runner.hold.add_permits(1_000);
    let run = ended(&scheduler, "every-minute").await;
    assert_eq!(run.trigger, RunTrigger::RunNow);
    assert_eq!(runner.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refusal_is_recorded_at_once_and_a_failure_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-06T10:00:00Z")));
    let runner = Scripted::open();
    let (scheduler, _drain) = start(dir.path(), clock, runner.clone());
    scheduler.add(definition("job", "0 3 * * *")).unwrap();
    let denied = "department gd holds no grant for dataset vehicle-registry";
    runner
        .answers
        .lock()
        .unwrap()
        .push_back(Err(RunError::from_code(ErrorCode::PermissionDenied, denied.into())));
    scheduler.run_now("job").unwrap();
    let run = ended(&scheduler, "job").await;
    assert_eq!((run.outcome, run.attempts), (Some(RunOutcome::Refused), 1));
    assert_eq!(run.code.as_deref(), Some(ErrorCode::PermissionDenied.to_string().as_str()));
    assert_eq!(run.error.as_deref(), Some(denied));

    let flaky = || Err(RunError::from_code(ErrorCode::Unavailable, "draining".into()));
    runner.answers.lock().unwrap().extend([flaky(), flaky()]);
    scheduler.run_now("job").unwrap();
    let run = ended(&scheduler, "job").await;
    assert_eq!((run.outcome, run.attempts), (Some(RunOutcome::Succeeded), 3), "two retries");

    runner.answers.lock().unwrap().extend([flaky(), flaky(), flaky()]);
    scheduler.run_now("job").unwrap();
    let run = ended(&scheduler, "job").await;
    assert_eq!((run.outcome, run.attempts), (Some(RunOutcome::Failed), 3), "retries spent");
    assert!(scheduler.list()[0].last_success_ms.is_some(), "the earlier success stays");
}

#[tokio::test]
async fn a_restart_after_a_missed_run_catches_it_up_from_the_persisted_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-06T10:00:00Z")));
    let runner = Scripted::open();
    let (scheduler, drain) = start(dir.path(), clock.clone(), runner.clone());
    scheduler.add(definition("daily", "0 3 * * *")).unwrap();
    let mut quiet = definition("quiet", "0 3 * * *");
    quiet.catch_up = Some(false);
    scheduler.add(quiet).unwrap();
    drain.send(true).unwrap();
    drop(scheduler);

    // Down over two 03:00 runs.
    clock.set(at("2026-12-08T09:00:00Z"));
    let (scheduler, _drain) = start(dir.path(), clock, runner.clone());
    let run = ended(&scheduler, "daily").await;
    assert_eq!((run.trigger, run.outcome), (RunTrigger::CatchUp, Some(RunOutcome::Succeeded)));
    let missed = |job| scheduler.metrics.missed.get_or_create(&ScheduleMetrics::job(job)).get();
    assert_eq!((missed("daily"), missed("quiet")), (2, 2));
    let quiet = scheduler.list().into_iter().find(|v| v.name == "quiet").unwrap();
    assert!(quiet.last_run.is_none(), "catch-up = false only counts");
    assert_eq!(quiet.next_run_ms, Some(unix_ms(at("2026-12-09T03:00:00Z"))));
    assert_eq!(runner.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn add_and_remove_refuse_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-06T10:00:00Z")));
    let (scheduler, _drain) = start(dir.path(), clock, Scripted::open());
    let err = scheduler.add(definition("bad", "0 25 * * *")).unwrap_err();
    assert!(matches!(&err, ScheduleError::Invalid(e) if e.field == "cron"), "{err}");
    scheduler.add(definition("job", "0 3 * * *")).unwrap();
    assert!(matches!(scheduler.add(definition("job", "0 4 * * *")), Err(ScheduleError::Exists(_))));
    assert!(matches!(scheduler.remove("nope"), Err(ScheduleError::NotFound(_))));
    scheduler.remove("job").unwrap();
    assert!(scheduler.list().is_empty());
    assert!(state::load(dir.path()).unwrap().jobs.is_empty(), "removed from the state file too");
}
