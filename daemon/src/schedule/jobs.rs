//! The [`Scheduler`]: the node's jobs, their next and last runs, the loop that starts due runs,
//! and the operations node calls ask for (add, list, remove, run now). Runs of one job never
//! overlap: a job is marked running under the jobs lock before its run is spawned.

use super::clock::Clock;
use super::metrics::ScheduleMetrics;
use super::run::{Pulled, RunError, Runner};
use super::spec::{self, JobName, ScheduleSpec, SpecError, from_unix_ms, unix_ms};
use super::state::{self, PersistedJob, StateError, StateFile};
use ferry_proto::node_api::{
    RunOutcome, RunRecord, RunStarted, RunTrigger, ScheduleDefinition, ScheduleSource, ScheduleView,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// The loop looks at the clock at least this often (an injected clock may jump).
const MAX_NAP: Duration = Duration::from_millis(500);
/// After its deadline, a run gets this long to stop at a chunk boundary before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a node call about schedules was refused, by what the operator must do.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(#[from] SpecError),
    #[error("a job named {0} exists on this node; remove it first or choose another name")]
    Exists(String),
    #[error("this node has no job named {0}")]
    NotFound(String),
    #[error("job {0} is defined in the node's config; change it there")]
    FromConfig(String),
    #[error("job {0} is running now; wait for its run to end")]
    Running(String),
    #[error("the schedule state could not be saved: {0}")]
    State(#[from] StateError),
}

/// What a scheduler is built from.
#[derive(Debug)]
pub struct SchedulerParts {
    pub node_name: String,
    pub state_dir: PathBuf,
    /// The node's `[peers]` names: a job's `from` must be one.
    pub peers: BTreeSet<String>,
    /// The config's `[[schedule]]` jobs.
    pub configured: Vec<ScheduleSpec>,
    pub clock: Arc<dyn Clock>,
    pub runner: Arc<dyn Runner>,
    pub metrics: Arc<ScheduleMetrics>,
    pub draining: watch::Receiver<bool>,
}

#[derive(Debug)]
struct Job {
    spec: ScheduleSpec,
    source: ScheduleSource,
    next_run: Option<SystemTime>,
    running: bool,
    last_run: Option<RunRecord>,
    last_success_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_name: BTreeMap<JobName, Job>,
    /// Persisted jobs that no longer parse (their peer left the config): kept in the file for
    /// the operator, not run.
    unparsable: Vec<PersistedJob>,
}

/// The node's scheduled download jobs (see the module doc).
#[derive(Debug)]
pub struct Scheduler {
    node_name: String,
    state_dir: PathBuf,
    peers: BTreeSet<String>,
    jobs: Mutex<Jobs>,
    /// Held across taking a snapshot and writing it, so writes land in order.
    persisting: Mutex<()>,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    metrics: Arc<ScheduleMetrics>,
    wake: Notify,
    draining: watch::Receiver<bool>,
}

impl Scheduler {
    /// Restores the jobs (config ones and persisted ones), starts the catch-up runs of jobs that
    /// missed a run while the node was down, and spawns the loop. An unreadable state file is
    /// set aside (logged as an ERROR) so the node still starts with its config jobs.
    pub fn start(parts: SchedulerParts) -> Arc<Self> {
        let now = parts.clock.now();
        let persisted = state::load(&parts.state_dir).unwrap_or_else(|e| {
            let aside = state::set_aside(&parts.state_dir, unix_ms(now));
            tracing::error!(error = %e, ?aside, "the schedule state is unreadable; set aside, starting from the config's jobs");
            StateFile::default()
        });
        let scheduler = Arc::new(Self {
            node_name: parts.node_name,
            state_dir: parts.state_dir,
            peers: parts.peers,
            jobs: Mutex::new(Jobs::default()),
            persisting: Mutex::new(()),
            clock: parts.clock,
            runner: parts.runner,
            metrics: parts.metrics,
            wake: Notify::new(),
            draining: parts.draining,
        });
        let catch_up = scheduler.restore(parts.configured, persisted, now);
        for name in catch_up {
            scheduler.clone().spawn_run(name, RunTrigger::CatchUp, Duration::ZERO);
        }
        scheduler.persist_or_log();
        tokio::spawn(scheduler.clone().run_loop());
        scheduler
    }

    /// Builds the jobs and returns those that catch up now (already marked running).
    fn restore(&self, configured: Vec<ScheduleSpec>, persisted: StateFile, now: SystemTime) -> Vec<JobName> {
        let mut saved: BTreeMap<String, PersistedJob> =
            persisted.jobs.into_iter().map(|j| (j.definition.name.clone(), j)).collect();
        let mut specs: Vec<(ScheduleSpec, ScheduleSource, Option<PersistedJob>)> = Vec::new();
        for spec in configured {
            let old = saved.remove(spec.name.as_str());
            specs.push((spec, ScheduleSource::Config, old));
        }
        let mut jobs = self.lock();
        for (_, old) in saved.into_iter().filter(|(_, j)| j.source == ScheduleSource::Added) {
            match ScheduleSpec::parse(&old.definition, |p| self.peers.contains(p), None) {
                Ok(spec) => specs.push((spec, ScheduleSource::Added, Some(old))),
                Err(e) => {
                    tracing::error!(job = %old.definition.name, error = %e, "a persisted job no longer parses; kept in the state file, not run");
                    jobs.unparsable.push(old);
                }
            }
        }
        let mut catch_up = Vec::new();
        for (spec, source, old) in specs {
            let planned = old.as_ref().and_then(|o| o.next_run_ms).map(from_unix_ms);
            let resumed = spec::resume(&spec, planned, now);
            let label = ScheduleMetrics::job(spec.name.as_str());
            if resumed.missed > 0 {
                self.metrics.missed.get_or_create(&label).inc_by(resumed.missed);
                tracing::warn!(job = %spec.name, missed = resumed.missed, catch_up = resumed.run_now, "scheduled runs passed while the node was down");
            }
            let last_success_ms = old.as_ref().and_then(|o| o.last_success_ms);
            if let Some(ms) = last_success_ms {
                self.metrics.last_success.get_or_create(&label).set(ms as f64 / 1000.0);
            }
            let name = spec.name.clone();
            let job = Job {
                spec,
                source,
                next_run: resumed.next,
                running: resumed.run_now,
                last_run: old.and_then(|o| o.last_run),
                last_success_ms,
            };
            self.show_next_run(&job);
            if resumed.run_now {
                catch_up.push(name.clone());
            }
            jobs.by_name.insert(name, job);
        }
        catch_up
    }

    /// Adds a job defined by a node call; persisted before it is answered.
    pub fn add(&self, definition: ScheduleDefinition) -> Result<ScheduleView, ScheduleError> {
        let spec = ScheduleSpec::parse(&definition, |p| self.peers.contains(p), None)?;
        let name = spec.name.clone();
        let next_run = spec.enabled.then(|| spec.next_after(self.clock.now())).flatten();
        let view = {
            let mut jobs = self.lock();
            if jobs.by_name.contains_key(&name) {
                return Err(ScheduleError::Exists(name.to_string()));
            }
            let job = Job {
                spec,
                source: ScheduleSource::Added,
                next_run,
                running: false,
                last_run: None,
                last_success_ms: None,
            };
            self.show_next_run(&job);
            let view = view_of(&job);
            jobs.by_name.insert(name.clone(), job);
            view
        };
        if let Err(e) = self.persist() {
            self.lock().by_name.remove(&name);
            self.forget_metrics(&name);
            return Err(e.into());
        }
        tracing::info!(job = %name, "schedule added");
        self.wake.notify_one();
        Ok(view)
    }

    /// Every job, by name.
    pub fn list(&self) -> Vec<ScheduleView> {
        self.lock().by_name.values().map(view_of).collect()
    }

    /// Removes a job added by a node call (not while it runs).
    pub fn remove(&self, name: &str) -> Result<(), ScheduleError> {
        let key = JobName::new(name).map_err(|_| ScheduleError::NotFound(name.to_owned()))?;
        {
            let mut jobs = self.lock();
            let job = jobs.by_name.get(&key).ok_or_else(|| ScheduleError::NotFound(name.to_owned()))?;
            if job.source == ScheduleSource::Config {
                return Err(ScheduleError::FromConfig(name.to_owned()));
            }
            if job.running {
                return Err(ScheduleError::Running(name.to_owned()));
            }
            jobs.by_name.remove(&key);
        }
        self.forget_metrics(&key);
        self.persist()?;
        tracing::info!(job = %name, "schedule removed");
        Ok(())
    }

    /// Starts a run of `name` now, whether or not the job is enabled; `Running` while one runs.
    pub fn run_now(self: &Arc<Self>, name: &str) -> Result<RunStarted, ScheduleError> {
        let key = JobName::new(name).map_err(|_| ScheduleError::NotFound(name.to_owned()))?;
        {
            let mut jobs = self.lock();
            let job = jobs.by_name.get_mut(&key).ok_or_else(|| ScheduleError::NotFound(name.to_owned()))?;
            if job.running {
                return Err(ScheduleError::Running(name.to_owned()));
            }
            job.running = true;
        }
        let started_ms = unix_ms(self.clock.now());
        self.clone().spawn_run(key, RunTrigger::RunNow, Duration::ZERO);
        Ok(RunStarted { name: name.to_owned(), started_ms })
    }

    /// Wakes for the next due run until the node drains.
    async fn run_loop(self: Arc<Self>) {
        let mut draining = self.draining.clone();
        loop {
            if *draining.borrow() {
                return;
            }
            let wait = self.start_due_runs(self.clock.now());
            tokio::select! {
                _ = tokio::time::sleep(wait.min(MAX_NAP)) => {}
                _ = self.wake.notified() => {}
                _ = draining.changed() => {}
            }
        }
    }

    /// Starts the runs due at `now` (a job still running misses its turn, counted) and returns
    /// how long until the next one is due.
    fn start_due_runs(self: &Arc<Self>, now: SystemTime) -> Duration {
        let mut due = Vec::new();
        let mut earliest = None::<SystemTime>;
        {
            let mut jobs = self.lock();
            for (name, job) in jobs.by_name.iter_mut() {
                let Some(at) = job.next_run.filter(|_| job.spec.enabled) else { continue };
                if at <= now {
                    job.next_run = job.spec.next_after(now);
                    if job.running {
                        self.metrics.missed.get_or_create(&ScheduleMetrics::job(name.as_str())).inc();
                        tracing::warn!(job = %name, "a scheduled run is skipped: the previous run is still going");
                    } else {
                        job.running = true;
                        due.push((name.clone(), job.spec.jitter_for(&self.node_name, at)));
                    }
                    self.show_next_run(job);
                }
                if let Some(next) = job.next_run {
                    earliest = Some(earliest.map_or(next, |e| e.min(next)));
                }
            }
        }
        let changed = !due.is_empty();
        for (name, jitter) in due {
            self.clone().spawn_run(name, RunTrigger::Scheduled, jitter);
        }
        if changed {
            self.persist_or_log();
        }
        earliest.map_or(MAX_NAP, |next| next.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Runs `name` (already marked running) after `delay`, records and persists the outcome.
    fn spawn_run(self: Arc<Self>, name: JobName, trigger: RunTrigger, delay: Duration) {
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let Some(spec) = self.lock().by_name.get(&name).map(|j| j.spec.clone()) else { return };
            let mut record = RunRecord {
                trigger,
                started_ms: unix_ms(self.clock.now()),
                ended_ms: None,
                outcome: None,
                version: None,
                bytes_fetched: 0,
                attempts: 0,
                code: None,
                error: None,
            };
            self.record(&name, record.clone(), false);
            tracing::info!(job = %name, dataset = %spec.dataset, from = %spec.from, into = %spec.into, ?trigger, "scheduled download started");
            let began = Instant::now();
            let (result, attempts) = self.attempts(&spec).await;
            record.attempts = attempts;
            record.ended_ms = Some(unix_ms(self.clock.now()));
            let outcome = fill_outcome(&mut record, result);
            let label = ScheduleMetrics::job(name.as_str());
            self.metrics.duration.get_or_create(&label).observe(began.elapsed().as_secs_f64());
            self.metrics.fetched.get_or_create(&label).inc_by(record.bytes_fetched);
            let outcome_label =
                super::metrics::JobOutcomeLabel { schedule: name.to_string(), outcome: outcome.as_str() };
            self.metrics.runs.get_or_create(&outcome_label).inc();
            match outcome {
                RunOutcome::Succeeded => {
                    tracing::info!(job = %name, version = ?record.version, bytes = record.bytes_fetched, "scheduled download succeeded")
                }
                _ => {
                    tracing::warn!(job = %name, outcome = outcome.as_str(), error = ?record.error, "scheduled download did not succeed")
                }
            }
            self.record(&name, record, true);
        });
    }

    /// Attempts with backoff until one succeeds, a refusal, the retries are spent, the deadline
    /// passes or the node drains. Returns the result (`None`: the deadline) and the attempts.
    async fn attempts(&self, spec: &ScheduleSpec) -> (Option<Result<Pulled, RunError>>, u32) {
        let (cancel, cancelled) = watch::channel(false);
        let attempts = AtomicU32::new(0);
        let work = async {
            loop {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                match self.runner.pull(spec, cancelled.clone()).await {
                    Ok(pulled) => return Ok(pulled),
                    Err(e @ RunError::Refused { .. }) => return Err(e),
                    Err(e) if attempt > spec.retries => return Err(e),
                    Err(e) => {
                        let wait = spec::backoff_before(spec.backoff, attempt + 1);
                        tracing::warn!(job = %spec.name, attempt, error = %e, ?wait, "scheduled download attempt failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        };
        tokio::pin!(work);
        let mut draining = self.draining.clone();
        let drained = async move {
            let _ = draining.wait_for(|d| *d).await;
        };
        let result = tokio::select! {
            result = &mut work => Some(result),
            _ = tokio::time::sleep(spec.deadline) => {
                let _ = cancel.send(true);
                let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
                None
            }
            () = drained => {
                let _ = cancel.send(true);
                let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
                Some(Err(RunError::Failed { code: None, message: "the node shut down during the run".into() }))
            }
        };
        (result, attempts.load(Ordering::Relaxed))
    }

    /// Stores a job's run record (`finished`: the run is over) and persists it.
    fn record(&self, name: &JobName, record: RunRecord, finished: bool) {
        {
            let mut jobs = self.lock();
            let Some(job) = jobs.by_name.get_mut(name) else { return };
            if finished {
                job.running = false;
                if record.outcome == Some(RunOutcome::Succeeded) {
                    job.last_success_ms = record.ended_ms;
                    let seconds = record.ended_ms.unwrap_or(0) as f64 / 1000.0;
                    self.metrics
                        .last_success
                        .get_or_create(&ScheduleMetrics::job(name.as_str()))
                        .set(seconds);
                }
            }
            job.last_run = Some(record);
        }
        self.persist_or_log();
    }

    fn show_next_run(&self, job: &Job) {
        let label = ScheduleMetrics::job(job.spec.name.as_str());
        let seconds = job.next_run.map_or(0.0, |t| unix_ms(t) as f64 / 1000.0);
        self.metrics.next_run.get_or_create(&label).set(seconds);
    }

    fn forget_metrics(&self, name: &JobName) {
        let label = ScheduleMetrics::job(name.as_str());
        self.metrics.next_run.remove(&label);
        self.metrics.last_success.remove(&label);
    }

    fn persist(&self) -> Result<(), StateError> {
        let _in_order = self.persisting.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = {
            let jobs = self.lock();
            let mut out: Vec<PersistedJob> = jobs
                .by_name
                .values()
                .map(|job| PersistedJob {
                    definition: job.spec.definition.clone(),
                    source: job.source,
                    next_run_ms: job.next_run.map(unix_ms),
                    last_run: job.last_run.clone(),
                    last_success_ms: job.last_success_ms,
                })
                .collect();
            out.extend(jobs.unparsable.iter().cloned());
            StateFile { jobs: out }
        };
        state::save(&self.state_dir, &snapshot)
    }

    fn persist_or_log(&self) {
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "the schedule state could not be saved; runs go on, a restart may repeat or miss one");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes the result into `record` and returns the outcome.
fn fill_outcome(record: &mut RunRecord, result: Option<Result<Pulled, RunError>>) -> RunOutcome {
    let outcome = match result {
        Some(Ok(pulled)) => {
            record.version = Some(pulled.version);
            record.bytes_fetched = pulled.bytes_fetched;
            RunOutcome::Succeeded
        }
        Some(Err(e)) => {
            record.code = e.code().map(|c| c.to_string());
            let outcome = match e {
                RunError::Refused { .. } => RunOutcome::Refused,
                RunError::Failed { .. } => RunOutcome::Failed,
            };
            record.error = Some(match e {
                RunError::Refused { message, .. } | RunError::Failed { message, .. } => message,
            });
            outcome
        }
        None => {
            record.error =
                Some("the run's deadline passed; what was verified is kept for the next run".into());
            RunOutcome::DeadlineExceeded
        }
    };
    record.outcome = Some(outcome);
    outcome
}

fn view_of(job: &Job) -> ScheduleView {
    let s = &job.spec;
    ScheduleView {
        name: s.name.to_string(),
        dataset: s.dataset.clone(),
        from: s.from.clone(),
        into: s.into.to_string(),
        cron: s.definition.cron.clone(),
        time_zone: s.time_zone.name().to_owned(),
        enabled: s.enabled,
        priority: s.priority,
        source: job.source,
        running: job.running,
        next_run_ms: job.next_run.map(unix_ms),
        last_run: job.last_run.clone(),
        last_success_ms: job.last_success_ms,
    }
}

#[cfg(test)]
mod tests;
