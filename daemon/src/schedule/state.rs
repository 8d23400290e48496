//! What the scheduler keeps across restarts, in `<state-dir>/schedules.json`: every job added by
//! a node call (with its definition), and for every job, config ones included, the next run it
//! had planned and its last run. Written whole on each change: a temporary file, fsync, rename
//! over the old one, fsync of the directory, so a crash leaves the old or the new file.

use ferry_proto::node_api::{RunOutcome, RunRecord, ScheduleDefinition, ScheduleSource};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "schedules.json";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a schedule state file: {message}")]
    Malformed { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StateFile {
    pub jobs: Vec<PersistedJob>,
}

/// One job's persisted part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PersistedJob {
    pub definition: ScheduleDefinition,
    pub source: ScheduleSource,
    /// The next scheduled run the node had planned (Unix ms): passed at start means missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
}

/// Reads the state under `state_dir`; none yet is an empty state. A run recorded as started but
/// never ended was cut by the node stopping, and is read as failed.
pub fn load(state_dir: &Path) -> Result<StateFile, StateError> {
    let path = state_dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::default()),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let mut state: StateFile = serde_json::from_str(&text)
        .map_err(|e| StateError::Malformed { path: path.clone(), message: e.to_string() })?;
    for run in state.jobs.iter_mut().filter_map(|j| j.last_run.as_mut()) {
        if run.outcome.is_none() {
            run.outcome = Some(RunOutcome::Failed);
            run.ended_ms = Some(run.started_ms);
            run.error = Some("the node stopped while this run was in progress".into());
        }
    }
    Ok(state)
}

/// Replaces the state under `state_dir` atomically and durably.
pub fn save(state_dir: &Path, state: &StateFile) -> Result<(), StateError> {
    let path = state_dir.join(STATE_FILE);
    let temp = state_dir.join(format!("{STATE_FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    // Serializing plain data cannot fail.
    let text = serde_json::to_vec_pretty(state).unwrap_or_default();
    let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(&text).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    std::fs::File::open(state_dir).and_then(|d| d.sync_all()).map_err(io(state_dir))
}

/// Moves an unreadable state file aside (kept for the operator) so the node can start.
pub fn set_aside(state_dir: &Path, now_ms: u64) -> Option<PathBuf> {
    let aside = state_dir.join(format!("{STATE_FILE}.unreadable-{now_ms}"));
    std::fs::rename(state_dir.join(STATE_FILE), &aside).ok().map(|()| aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::node_api::RunTrigger;

    fn job(name: &str, run: Option<RunRecord>) -> PersistedJob {
        PersistedJob {
            definition: ScheduleDefinition {
                name: name.into(),
                dataset: "vehicle-registry".into(),
                from: "ministry".into(),
                into: "store".into(),
                cron: "0 3 * * *".into(),
                time_zone: None,
                jitter: None,
                deadline: None,
                retries: None,
                backoff: None,
                catch_up: None,
                enabled: None,
                priority: None,
            },
            source: ScheduleSource::Added,
            next_run_ms: Some(1_000),
            last_run: run,
            last_success_ms: None,
        }
    }

    #[test]
    fn state_round_trips_and_a_cut_run_reads_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), StateFile::default(), "no file yet");
        let cut = RunRecord {
            trigger: RunTrigger::Scheduled,
            started_ms: 5,
            ended_ms: None,
            outcome: None,
            version: None,
            bytes_fetched: 0,
            attempts: 1,
            code: None,
            error: None,
        };
        let state = StateFile { jobs: vec![job("a", None), job("b", Some(cut))] };
        save(dir.path(), &state).unwrap();
        assert!(!dir.path().join(format!("{STATE_FILE}.tmp")).exists());
        let back = load(dir.path()).unwrap();
        assert_eq!(back.jobs[0], state.jobs[0]);
        let run = back.jobs[1].last_run.as_ref().unwrap();
        assert_eq!(run.outcome, Some(RunOutcome::Failed));
        assert!(run.error.as_deref().unwrap().contains("stopped"));
    }

    #[test]
    fn a_malformed_file_is_refused_and_can_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{\"jobs\": 3}").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Malformed { .. }), "{err}");
        let aside = set_aside(dir.path(), 42).unwrap();
        assert!(aside.exists());
        assert_eq!(load(dir.path()).unwrap(), StateFile::default());
    }
}
