//! The scrub: re-hashes every stored version against its signed manifest, sets a damaged file
//! aside and, where a peer holds a good copy, fetches it again.
//!
//! A run goes through the versions the [`Store`] indexes (all, or one dataset or version when an
//! operator asks), each under a [`crate::data::store::Lease`] so garbage collection leaves it
//! alone, and checks ([`check`]) for each of them:
//! - `manifest.signed`: its bytes against the digest taken when it was verified;
//! - every part file: its size, the BLAKE3 of each chunk folded into the page hashes the manifest
//!   signs, and its whole-file BLAKE3;
//! - every chunk-hash file (`.ferry/chunk-hashes/<i>`): its size and each page against the
//!   manifest's page hash.
//!
//! Reads go through the blob store a chunk at a time, paced at `[scrub] rate` (see
//! [`crate::config::ScrubConfig`]), so a scrub neither holds a file in memory nor starves serving.
//!
//! **A damaged file** is moved aside to `quarantine/<unix seconds>/<its key>` in the same store
//! (copied there, then removed; nothing is ever deleted by the scrub), and then ([`repair`]):
//! - a chunk-hash file whose part file checked good is written again from that part file;
//! - anything else is fetched again: the node pulls the version from each of its configured
//!   peers in turn (the transfer engine, as replication does, which verifies every chunk and
//!   the peer's signature), checks each needed file against *this node's* signed manifest
//!   (size, page hashes, BLAKE3) and puts it back with its chunk hashes.
//!
//! `manifest.signed` is the one exception to moving: it is copied aside and left in place, since a
//! version without its manifest would be taken for an interrupted commit and its number reused.
//! The node refuses to serve a manifest that no longer matches its digest anyway.
//!
//! **While a file is set aside the version is served only for its good files**: the chunks of
//! the missing file are refused (the object is not there), every other file is served as usual
//! — a consumer that needs only a delta's files is not held up by a damaged table file, and no
//! puller can receive the damaged bytes. The version stays indexed and keeps its number. Each
//! later run finds the file missing and tries the peers again.
//!
//! Every finding is logged (WARN when found, INFO when repaired, ERROR when it stays damaged:
//! an operator must act) and counted in [`ScrubMetrics`]. Runs are one at a time; the node runs
//! one every `[scrub] interval` ([`Scrubber::run_periodically`], the time of the last full run is
//! kept in the state directory so restarts do not postpone it), and an operator asks for one with
//! `ferry verify`, which calls the admin port ([`admin`]).

pub mod admin;
mod check;
mod repair;

pub use check::Problem;

use crate::config::ScrubConfig;
use crate::data::blob::BlobError;
use crate::data::store::{MANIFEST_NAME, Store, StoreError, StoredVersion, chunk_hashes_key, version_prefix};
use crate::telemetry::Metrics;
use check::{Pace, Read, Stopped};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, Manifest, VersionNo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The scrub's counters, registered with the node's others (`ferry_scrub_*`).
#[derive(Debug, Default)]
pub struct ScrubMetrics {
    pub files_checked: Counter,
    pub hashed_bytes: Counter,
    pub damaged: Counter,
    pub repaired: Counter,
    pub unrepairable: Counter,
    pub runs: Counter,
}

impl ScrubMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_scrub_files_checked",
            "Stored files (part files, chunk-hash files, manifests) re-hashed by the scrub",
            self.files_checked.clone(),
        );
        registry.register_with_unit(
            "ferry_scrub_hashed",
            "Bytes the scrub read back and hashed",
            Unit::Bytes,
            self.hashed_bytes.clone(),
        );
        registry.register(
            "ferry_scrub_damaged_files",
            "Stored files found missing or not matching their signed manifest",
            self.damaged.clone(),
        );
        registry.register(
            "ferry_scrub_repaired_files",
            "Damaged files put back verified (fetched from a peer or rebuilt from a good part file)",
            self.repaired.clone(),
        );
        registry.register(
            "ferry_scrub_unrepairable_files",
            "Damaged files left set aside: no peer had a good copy (an operator must act)",
            self.unrepairable.clone(),
        );
        registry.register("ferry_scrub_runs", "Scrub runs finished", self.runs.clone());
    }
}

/// What a run covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// One dataset, or every dataset.
    pub dataset: Option<DatasetId>,
    /// One version of that dataset, or every version.
    pub version: Option<VersionNo>,
    /// Bytes per second, instead of the configured rate.
    pub rate: Option<u64>,
}

/// What was done about a damaged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// It was put back, verified against the signed manifest; `from` names the peer, or says it
    /// was rebuilt locally.
    Repaired { from: String },
    /// It is still damaged (set aside where `quarantined` says); `reason` says why.
    Unrepairable { reason: String },
}

/// One damaged file and what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub dataset: DatasetId,
    pub version: VersionNo,
    /// The file's name within the version (`part-00000.parquet`, `.ferry/chunk-hashes/0`).
    pub file: String,
    pub problem: Problem,
    /// Where the damaged copy was set aside, if there was one to move.
    pub quarantined: Option<String>,
    pub outcome: Outcome,
}

/// The totals of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScrubReport {
    pub versions: u64,
    pub files_checked: u64,
    pub bytes_hashed: u64,
    pub damaged: u64,
    pub repaired: u64,
    pub unrepairable: u64,
    /// The node began to drain before the run was through.
    pub stopped_early: bool,
}

/// What the node gives its scrubber.
#[derive(Debug)]
pub struct ScrubParts {
    pub store: Arc<Store>,
    pub config: ScrubConfig,
    /// Scratch space: damaged files on their way aside, versions pulled for a repair.
    pub state_dir: PathBuf,
    pub peers: BTreeMap<String, NodeAddr>,
    pub creds: Credentials,
    pub endpoint: quinn::Endpoint,
    pub metrics: Arc<Metrics>,
    pub draining: watch::Receiver<bool>,
}

/// Runs scrubs, one at a time (see the module doc).
#[derive(Debug)]
pub struct Scrubber {
    parts: ScrubParts,
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// A stored object of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Object {
    Manifest,
    Part(usize),
    Hashes(usize),
}

impl Object {
    fn key(self, m: &Manifest) -> String {
        match self {
            Self::Manifest => format!("{}/{MANIFEST_NAME}", version_prefix(&m.dataset, m.version)),
            Self::Part(i) => format!("{}/{}", version_prefix(&m.dataset, m.version), m.files[i].name),
            Self::Hashes(i) => chunk_hashes_key(&m.dataset, m.version, i),
        }
    }

    /// The name within the version's directory.
    fn name(self, m: &Manifest) -> String {
        let key = self.key(m);
        let prefix = version_prefix(&m.dataset, m.version);
        key.strip_prefix(&prefix).map_or(key.clone(), |rest| rest.trim_start_matches('/').to_owned())
    }
}

/// Name of the file in the state directory holding the Unix time of the last full run.
const LAST_RUN: &str = "scrub-last-run";

impl Scrubber {
    pub fn new(parts: ScrubParts) -> Self {
        Self { parts, one_at_a_time: tokio::sync::Mutex::new(()) }
    }

    /// Scrubs what `scope` covers; each finding goes to `found` as it is made. Waits for a run
    /// in progress to end first.
    pub async fn run(&self, scope: &Scope, found: &(dyn Fn(&Finding) + Sync)) -> ScrubReport {
        let _one = self.one_at_a_time.lock().await;
        let started = std::time::Instant::now();
        let mut pace = Pace::new(scope.rate.unwrap_or(self.parts.config.rate), self.parts.draining.clone());
        let mut report = ScrubReport::default();
        for version in self.versions(scope) {
            report.versions += 1;
            if self.scrub_version(&version, &mut pace, &mut report, found).await.is_err() {
                report.stopped_early = true;
                break;
            }
        }
        self.parts.metrics.scrub.runs.inc();
        tracing::info!(
            versions = report.versions,
            files = report.files_checked,
            bytes = report.bytes_hashed,
            damaged = report.damaged,
            repaired = report.repaired,
            unrepairable = report.unrepairable,
            seconds = started.elapsed().as_secs_f64(),
            "scrub done"
        );
        report
    }

    /// The versions `scope` names, oldest first per dataset.
    fn versions(&self, scope: &Scope) -> Vec<Arc<StoredVersion>> {
        let store = &self.parts.store;
        let datasets = match &scope.dataset {
            Some(id) => vec![id.clone()],
            None => store.list().into_iter().map(|d| d.id).collect(),
        };
        let mut all = Vec::new();
        for id in datasets {
            let versions = store.versions(&id).unwrap_or_default();
            all.extend(
                versions.into_iter().filter(|v| scope.version.is_none_or(|n| n == v.manifest.version)),
            );
        }
        all
    }

    async fn scrub_version(
        &self,
        version: &StoredVersion,
        pace: &mut Pace,
        report: &mut ScrubReport,
        found: &(dyn Fn(&Finding) + Sync),
    ) -> Result<(), Stopped> {
        let m = &version.manifest;
        // Collected since it was listed: nothing to check.
        let Ok(_lease) = self.parts.store.lease(&m.dataset, m.version) else { return Ok(()) };
        let scratch = match self.scratch() {
            Ok(dir) => dir,
            Err(e) => {
                tracing::error!(error = %e, "scrub cannot make its scratch directory; stopping");
                return Err(Stopped);
            }
        };
        let (damaged, good_hashes) = self.check_version(version, scratch.path(), pace, report).await?;
        if damaged.is_empty() {
            return Ok(());
        }
        for (object, problem) in &damaged {
            tracing::warn!(dataset = %m.dataset, version = %m.version, file = object.name(m), %problem, "scrub found a damaged file");
        }
        report.damaged += damaged.len() as u64;
        self.parts.metrics.scrub.damaged.inc_by(damaged.len() as u64);
        for finding in self.repair(version, damaged, &good_hashes, scratch.path()).await {
            self.count(&finding, report);
            found(&finding);
        }
        Ok(())
    }

    /// Checks every object of `version`: the damaged ones, and the chunk hashes computed from
    /// each part file found good (by file number).
    async fn check_version(
        &self,
        version: &StoredVersion,
        scratch: &std::path::Path,
        pace: &mut Pace,
        report: &mut ScrubReport,
    ) -> Result<(Vec<(Object, Problem)>, HashMap<usize, PathBuf>), Stopped> {
        let m = &version.manifest;
        let blobs = self.parts.store.blobs().as_ref();
        let mut damaged = Vec::new();
        let mut good_hashes = HashMap::new();
        let mut read = Read::default();
        let mut checked = 1;
        if let Some(problem) = self.check_manifest(version, &mut read).await {
            damaged.push((Object::Manifest, problem));
        }
        for (i, entry) in m.files.iter().enumerate() {
            let hashes_out = scratch.join(format!("hashes-{i}"));
            let key = Object::Part(i).key(m);
            match check::check_part(blobs, &key, m, entry, &hashes_out, pace, &mut read).await? {
                None => {
                    good_hashes.insert(i, hashes_out);
                }
                Some(problem) => damaged.push((Object::Part(i), problem)),
            }
            let key = Object::Hashes(i).key(m);
            if let Some(problem) = check::check_hashes(blobs, &key, m, entry, pace, &mut read).await {
                damaged.push((Object::Hashes(i), problem));
            }
            checked += 2;
        }
        report.files_checked += checked;
        report.bytes_hashed += read.bytes;
        self.parts.metrics.scrub.files_checked.inc_by(checked);
        self.parts.metrics.scrub.hashed_bytes.inc_by(read.bytes);
        Ok((damaged, good_hashes))
    }

    async fn check_manifest(&self, version: &StoredVersion, read: &mut Read) -> Option<Problem> {
        match self.parts.store.signed_manifest(version).await {
            Ok(bytes) => {
                read.bytes += bytes.len() as u64;
                None
            }
            Err(StoreError::ManifestChanged { detail, .. }) => Some(Problem::Content { detail }),
            Err(StoreError::Backend(BlobError::NotFound { .. })) => Some(Problem::Missing),
            Err(e) => Some(Problem::Unreadable { error: e.to_string() }),
        }
    }

    fn count(&self, finding: &Finding, report: &mut ScrubReport) {
        let metrics = &self.parts.metrics.scrub;
        let (dataset, version, file) = (&finding.dataset, finding.version, &finding.file);
        match &finding.outcome {
            Outcome::Repaired { from } => {
                report.repaired += 1;
                metrics.repaired.inc();
                tracing::info!(%dataset, %version, file, from, quarantined = ?finding.quarantined, "scrub repaired a damaged file");
            }
            Outcome::Unrepairable { reason } => {
                report.unrepairable += 1;
                metrics.unrepairable.inc();
                tracing::error!(%dataset, %version, file, reason, quarantined = ?finding.quarantined, "a damaged file could not be repaired; its version is served without it");
            }
        }
    }

    fn scratch(&self) -> std::io::Result<tempfile::TempDir> {
        let dir = self.parts.state_dir.join("scrub");
        std::fs::create_dir_all(&dir)?;
        tempfile::Builder::new().prefix("run-").tempdir_in(&dir)
    }

    /// Runs a full scrub every `interval` until the node drains. The time of the last full run
    /// is kept in the state directory: a node restarted more often than the interval still gets
    /// its scrub. A node that never ran one starts counting now.
    pub async fn run_periodically(self: Arc<Self>) {
        if !self.parts.config.enabled {
            tracing::info!(
                "scheduled scrub disabled ([scrub] enabled = false); `ferry verify` still runs one"
            );
            return;
        }
        let interval = self.parts.config.interval;
        let mut draining = self.parts.draining.clone();
        loop {
            let wait = self.until_next_run(interval);
            tokio::select! {
                _ = draining.wait_for(|d| *d) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let report = self.run(&Scope::default(), &|_| {}).await;
            if report.stopped_early {
                return;
            }
            self.record_run(SystemTime::now());
        }
    }

    fn until_next_run(&self, interval: Duration) -> Duration {
        let path = self.parts.state_dir.join(LAST_RUN);
        let last = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok());
        let now = SystemTime::now();
        let Some(last) = last else {
            self.record_run(now);
            return interval;
        };
        let next = UNIX_EPOCH + Duration::from_secs(last) + interval;
        next.duration_since(now).unwrap_or(Duration::ZERO)
    }

    fn record_run(&self, at: SystemTime) {
        let path = self.parts.state_dir.join(LAST_RUN);
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Err(e) = std::fs::write(&path, format!("{secs}\n")) {
            tracing::warn!(error = %e, path = %path.display(), "cannot record the time of the scrub");
        }
    }
}
