//! A scheduled download job in typed form: a [`ScheduleDefinition`] (from a `[[schedule]]` of the
//! node config or a `node-schedule-add` call) parsed once into a [`ScheduleSpec`], refused with
//! the field named. Also the pure rules of when a job runs: the next occurrence of its cron in
//! its time zone, what to do about runs missed while the node was down ([`resume`]), the jitter
//! of a run and the backoff between attempts. The scheduler (`super`) applies them.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use ferry_proto::node_api::ScheduleDefinition;
use ferry_proto::{DatasetId, JobPriority};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// The time zone of a job that names none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";
/// A run that names no deadline is stopped after this long.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait between two attempts, whatever the backoff doubles to.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Missed occurrences are counted up to this many (a cron every second, down for a week).
pub const MAX_MISSED_COUNTED: u64 = 100_000;
/// `into` naming the node's own store rather than a directory.
pub const INTO_STORE: &str = "store";

/// A definition that cannot be a job: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The key as written (`cron`, `time-zone`, …).
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError { field, message: message.into() }
}

/// A job's `priority` as written (`None`: `normal`); `Err` names the value and the choices. Shared
/// by `[[schedule]]` and `[[subscription]]` and their node calls.
pub fn parse_priority(text: Option<&str>) -> Result<JobPriority, String> {
    match text {
        None => Ok(JobPriority::default()),
        Some(text) => {
            text.parse().map_err(|_| format!("{text:?} is not a priority; write high, normal or low"))
        }
    }
}

/// Where a job's versions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Materialized tables under `<dir>/<dataset>/v<N>`, as `ferry pull` writes them.
    Directory(PathBuf),
    /// The node's own store, as `ferry replicate` (the node then serves them).
    Store,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Directory(dir) => write!(f, "{}", dir.display()),
            Self::Store => f.write_str(INTO_STORE),
        }
    }
}

/// A job's name: unique on its node, and the `job` label of its metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobName(String);

impl JobName {
    pub fn new(name: &str) -> Result<Self, SpecError> {
        let ok = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(refuse("name", format!("{name:?} must be 1 to 64 letters, digits, '-', '_' or '.'")));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job the scheduler can run.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: JobName,
    pub dataset: DatasetId,
    /// A peer name of the node's `[peers]`.
    pub from: String,
    pub into: Target,
    pub cron: Cron,
    pub time_zone: Tz,
    pub jitter: Duration,
    pub deadline: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub catch_up: bool,
    pub enabled: bool,
    /// The class of its pulls (`priority`, `normal` when absent).
    pub priority: JobPriority,
    /// The definition as written, kept to persist and show it.
    pub definition: ScheduleDefinition,
}

impl ScheduleSpec {
    /// Parses `definition`; `is_peer` says whether a name is one of the node's peers, and a
    /// relative `into` is resolved against `base` (the config file's directory) or refused
    /// without one (a node call names an absolute directory).
    pub fn parse(
        definition: &ScheduleDefinition,
        is_peer: impl Fn(&str) -> bool,
        base: Option<&Path>,
    ) -> Result<Self, SpecError> {
        let d = definition;
        let name = JobName::new(&d.name)?;
        let dataset = DatasetId::new(d.dataset.as_str()).map_err(|e| refuse("dataset", e.to_string()))?;
        if !is_peer(&d.from) {
            return Err(refuse("from", format!("{:?} is not a peer of this node's [peers]", d.from)));
        }
        let into = parse_target(&d.into, base)?;
        let cron = parse_cron(&d.cron)?;
        let time_zone = parse_time_zone(d.time_zone.as_deref().unwrap_or(DEFAULT_TIME_ZONE))?;
        let duration = |field: &'static str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                refuse(field, format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"2h\""))
            }),
        };
        let jitter = duration("jitter", &d.jitter, Duration::ZERO)?;
        let deadline = duration("deadline", &d.deadline, DEFAULT_DEADLINE)?;
        if deadline.is_zero() {
            return Err(refuse("deadline", "must be longer than zero"));
        }
        let backoff = duration("backoff", &d.backoff, DEFAULT_BACKOFF)?;
        let priority =
            parse_priority(d.priority.as_deref()).map_err(|message| refuse("priority", message))?;
        let retries = d.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > 100 {
            return Err(refuse("retries", format!("{retries} is more than 100")));
        }
        let spec = Self {
            name,
            dataset,
            from: d.from.clone(),
            into,
            cron,
            time_zone,
            jitter,
            deadline,
            retries,
            backoff,
            catch_up: d.catch_up.unwrap_or(true),
            enabled: d.enabled.unwrap_or(true),
            priority,
            definition: d.clone(),
        };
        if spec.next_after(SystemTime::now()).is_none() {
            return Err(refuse(
                "cron",
                format!("{:?} never fires (no such date in the coming years)", d.cron),
            ));
        }
        Ok(spec)
    }

    /// The first occurrence of the cron strictly after `after`, in the job's time zone.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let local = DateTime::<Utc>::from(after).with_timezone(&self.time_zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|next| next.with_timezone(&Utc).into())
    }

    /// Occurrences from `first` (included) up to `now` (included), counted up to
    /// [`MAX_MISSED_COUNTED`].
    pub fn occurrences_between(&self, first: SystemTime, now: SystemTime) -> u64 {
        if first > now {
            return 0;
        }
        let mut count = 1;
        let mut at = first;
        while count < MAX_MISSED_COUNTED {
            match self.next_after(at) {
                Some(next) if next <= now => {
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        count
    }

    /// How long after its scheduled time `due` a run of this job on `node` starts: spread over
    /// `[0, jitter)` by a hash, so nodes sharing a cron do not all start at once, and the same
    /// on every computation of one run.
    pub fn jitter_for(&self, node: &str, due: SystemTime) -> Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if jitter_ms == 0 {
            return Duration::ZERO;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(node.as_bytes()).update(&[0]).update(self.name.as_str().as_bytes());
        hasher.update(&unix_ms(due).to_le_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        Duration::from_millis(u64::from_le_bytes(first) % jitter_ms)
    }
}

/// The wait before attempt `attempt` (2 is the first retry): the backoff doubled for each retry
/// after the first, at most [`MAX_BACKOFF`].
pub fn backoff_before(base: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(2).min(20);
    base.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// What a job does when the node starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Scheduled times that passed while the node was down.
    pub missed: u64,
    /// Run once now for them (the job catches up).
    pub run_now: bool,
    /// The next scheduled run; `None` for a disabled job.
    pub next: Option<SystemTime>,
}

/// Decides at start, from the next run the node had planned before it stopped (`planned`).
pub fn resume(spec: &ScheduleSpec, planned: Option<SystemTime>, now: SystemTime) -> Resume {
    if !spec.enabled {
        return Resume { missed: 0, run_now: false, next: None };
    }
    let missed = planned.map_or(0, |due| spec.occurrences_between(due, now));
    Resume { missed, run_now: missed > 0 && spec.catch_up, next: spec.next_after(now) }
}

fn parse_target(into: &str, base: Option<&Path>) -> Result<Target, SpecError> {
    if into == INTO_STORE {
        return Ok(Target::Store);
    }
    if into.is_empty() {
        return Err(refuse("into", "name a directory or \"store\""));
    }
    let path = PathBuf::from(into);
    match (path.is_absolute(), base) {
        (true, _) => Ok(Target::Directory(path)),
        (false, Some(base)) => Ok(Target::Directory(base.join(path))),
        (false, None) => {
            Err(refuse("into", format!("{into:?} is not an absolute directory (nor \"store\")")))
        }
    }
}

/// A cron expression: five fields, or six with seconds first.
pub fn parse_cron(text: &str) -> Result<Cron, SpecError> {
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(refuse(
            "cron",
            format!(
                "{text:?} has {fields} fields; write five (minute hour day-of-month month day-of-week) \
                 or six with seconds first"
            ),
        ));
    }
    Cron::from_str(text).map_err(|e| refuse("cron", format!("{text:?} is not a cron expression: {e}")))
}

/// An IANA time zone name (`Asia/Shanghai`, `UTC`).
pub fn parse_time_zone(text: &str) -> Result<Tz, SpecError> {
    Tz::from_str(text).map_err(|_| {
        refuse("time-zone", format!("{text:?} is not an IANA time zone name (e.g. \"Asia/Shanghai\")"))
    })
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests;
