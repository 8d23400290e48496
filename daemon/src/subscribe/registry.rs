//! The node's subscriptions: those of its config and those added by `ferry subscription add`
//! (kept in `subscriptions.json` in the state directory: temp file, fsync, rename, directory
//! fsync; restored at start), each run by its own [`Follower`] task until it is removed or the
//! node drains. `crate::node_calls` answers the `node-subscription-*` calls from here.

use super::follow::{FollowStatus, Follower};
use super::spec::{SubscriptionError, SubscriptionSpec, SubscriptionTarget};
use crate::data::service::DataService;
use crate::policy::replica::PolicyReplica;
use crate::telemetry::Metrics;
use ferry_proto::DatasetId;
use ferry_proto::node_api::{SubscriptionDefinition, SubscriptionOrigin, SubscriptionView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// The file the added subscriptions are kept in, in the state directory.
pub const STATE_FILE: &str = "subscriptions.json";
const FORMAT: &str = "ferry-subscriptions/1";

/// The persisted document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kept {
    format: String,
    subscriptions: Vec<SubscriptionDefinition>,
}

/// What the subscriptions need of the node.
#[derive(Debug)]
pub struct SubscriptionParts {
    pub service: Arc<DataService>,
    pub metrics: Arc<Metrics>,
    /// Checks announced publishers against the catalog, when the node enforces one.
    pub replica: Option<Arc<PolicyReplica>>,
    pub state_dir: PathBuf,
    /// The names of the node's `[peers]`.
    pub peers: Vec<String>,
    /// `[[subscription]]` of the node config.
    pub configured: Vec<SubscriptionSpec>,
    pub draining: watch::Receiver<bool>,
}

type Key = (DatasetId, SubscriptionTarget);

#[derive(Debug)]
struct Running {
    spec: SubscriptionSpec,
    status: Arc<Mutex<FollowStatus>>,
    stop: watch::Sender<bool>,
}

/// Every subscription of the node, running (see the module doc).
#[derive(Debug)]
pub struct Subscriptions {
    parts: SubscriptionParts,
    running: Mutex<BTreeMap<Key, Running>>,
}

impl Subscriptions {
    /// Starts the configured subscriptions and the ones kept in the state directory.
    pub fn start(parts: SubscriptionParts) -> Result<Arc<Self>, SubscriptionError> {
        let kept = load(&parts.state_dir.join(STATE_FILE))?;
        let this = Arc::new(Self { running: Mutex::new(BTreeMap::new()), parts });
        let mut running = this.lock();
        for spec in this.parts.configured.clone() {
            this.spawn(&mut running, spec)?;
        }
        for definition in kept {
            let spec = SubscriptionSpec::from_definition(
                definition,
                SubscriptionOrigin::Added,
                this.parts.peers.iter(),
            )?;
            this.spawn(&mut running, spec)?;
        }
        drop(running);
        Ok(this)
    }

    /// Adds and starts a subscription, kept across restarts.
    pub fn add(&self, definition: SubscriptionDefinition) -> Result<SubscriptionView, SubscriptionError> {
        let spec = SubscriptionSpec::from_definition(
            definition,
            SubscriptionOrigin::Added,
            self.parts.peers.iter(),
        )?;
        let mut running = self.lock();
        let key = (spec.dataset.clone(), spec.target.clone());
        if running.contains_key(&key) {
            return Err(SubscriptionError::Duplicate {
                dataset: spec.dataset,
                target: spec.target.describe(),
            });
        }
        let mut added = added(&running);
        added.push(spec.definition());
        self.persist(&added)?;
        self.spawn(&mut running, spec)?;
        Ok(view(&running[&key]))
    }

    /// Stops and forgets an added subscription.
    pub fn remove(
        &self,
        dataset: &DatasetId,
        into: Option<&str>,
    ) -> Result<SubscriptionView, SubscriptionError> {
        let target = SubscriptionTarget::parse(into)?;
        let mut running = self.lock();
        let key = (dataset.clone(), target);
        let Some(found) = running.get(&key) else {
            return Err(SubscriptionError::NotFound { dataset: dataset.clone(), target: key.1.describe() });
        };
        if found.spec.origin == SubscriptionOrigin::Config {
            return Err(SubscriptionError::FromConfig { dataset: dataset.clone() });
        }
        let kept: Vec<_> = added(&running)
            .into_iter()
            .filter(|d| {
                let spec_key = (d.dataset.clone(), SubscriptionTarget::parse(d.into.as_deref()).ok());
                spec_key != (key.0.clone(), Some(key.1.clone()))
            })
            .collect();
        self.persist(&kept)?;
        let removed = running.remove(&key).map(|r| {
            let _ = r.stop.send(true);
            view(&r)
        });
        tracing::info!(%dataset, "subscription removed");
        removed
            .ok_or_else(|| SubscriptionError::NotFound { dataset: dataset.clone(), target: key.1.describe() })
    }

    /// Every subscription with its state and lag, by dataset.
    pub fn list(&self) -> Vec<SubscriptionView> {
        self.lock().values().map(view).collect()
    }

    fn spawn(
        &self,
        running: &mut BTreeMap<Key, Running>,
        spec: SubscriptionSpec,
    ) -> Result<(), SubscriptionError> {
        let key = (spec.dataset.clone(), spec.target.clone());
        if running.contains_key(&key) {
            return Err(SubscriptionError::Duplicate {
                dataset: spec.dataset,
                target: spec.target.describe(),
            });
        }
        if spec.target == SubscriptionTarget::Store {
            // A hub serves the dataset on: restricted versions of it come from the same peer.
            self.parts.service.relay_from(&spec.dataset, &spec.from);
        }
        let status = Arc::new(Mutex::new(FollowStatus::default()));
        let (stop, stopped) = watch::channel(false);
        let follower = Follower {
            spec: spec.clone(),
            service: self.parts.service.clone(),
            metrics: self.parts.metrics.clone(),
            replica: self.parts.replica.clone(),
            status: status.clone(),
        };
        let mut draining = self.parts.draining.clone();
        // The follower ends itself when stopped (and then drops its series); draining ends it too.
        tokio::spawn(async move {
            tokio::select! {
                () = follower.run(stopped) => {}
                _ = draining.wait_for(|d| *d) => {}
            }
        });
        tracing::info!(dataset = %spec.dataset, from = %spec.from, into = %spec.target.describe(), "subscription started");
        running.insert(key, Running { spec, status, stop });
        Ok(())
    }

    fn persist(&self, added: &[SubscriptionDefinition]) -> Result<(), SubscriptionError> {
        let path = self.parts.state_dir.join(STATE_FILE);
        let kept = Kept { format: FORMAT.into(), subscriptions: added.to_vec() };
        write_atomically(&path, &serde_json::to_vec_pretty(&kept).unwrap_or_default())
            .map_err(|source| SubscriptionError::Persist { path, source })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn added(running: &BTreeMap<Key, Running>) -> Vec<SubscriptionDefinition> {
    running
        .values()
        .filter(|r| r.spec.origin == SubscriptionOrigin::Added)
        .map(|r| r.spec.definition())
        .collect()
}

fn view(running: &Running) -> SubscriptionView {
    let status = running.status.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let (lag_versions, seconds_behind) = status.lag(super::announce::now_ms());
    let definition = running.spec.definition();
    SubscriptionView {
        dataset: definition.dataset,
        source: definition.from,
        into: definition.into,
        origin: running.spec.origin,
        priority: running.spec.priority,
        held: status.held,
        announced: status.announced.map(|(v, _)| v),
        lag_versions,
        seconds_behind,
        state: status.state,
        last_error: status.last_error,
        pulls: status.pulls,
    }
}

/// The added subscriptions kept at `path` (none when there is no file).
fn load(path: &Path) -> Result<Vec<SubscriptionDefinition>, SubscriptionError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SubscriptionError::Persist { path: path.into(), source }),
    };
    let corrupt = |message: String| SubscriptionError::Corrupt { path: path.into(), message };
    let kept: Kept = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if kept.format != FORMAT {
        return Err(corrupt(format!("format {:?}, expected {FORMAT:?}", kept.format)));
    }
    Ok(kept.subscriptions)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_subscriptions_round_trip_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert!(load(&path).unwrap().is_empty());
        let definition = SubscriptionDefinition {
            dataset: DatasetId::new("cars").unwrap(),
            from: "ministry".into(),
            into: Some("/srv/cars".into()),
            priority: Some("high".into()),
        };
        let kept = Kept { format: FORMAT.into(), subscriptions: vec![definition.clone()] };
        write_atomically(&path, &serde_json::to_vec(&kept).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap(), vec![definition]);
        std::fs::write(&path, br#"{"format":"other/9","subscriptions":[]}"#).unwrap();
        assert!(matches!(load(&path), Err(SubscriptionError::Corrupt { .. })));
    }
}
