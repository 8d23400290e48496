//! The transfer engine: pulls one dataset version from a node into a directory, verifying every
//! chunk against the signed manifest before it is written, over several parallel streams,
//! resuming from a journal, and making the version visible with one atomic rename.
//!
//! Used by the `ferry pull` command (to a user's directory) and by `ferryd` (node to node, into a
//! staging directory that the node then imports into its store).
//!
//! Layout under the destination root (names in [`workdir`]):
//! ```text
//! <root>/<dataset>/v<N>/             committed versions: the files, manifest.signed, manifest.json
//! <root>/.ferry-partial/<dataset>@<N>/  a pull in progress: sparse files, the manifest files
//!                                       (written at the start, synced at commit) and
//!                                       .ferry/journal, a name no manifest file can take
//! <root>/.ferry-partial/<dataset>@<N>.apply/  a delta being applied to its base table
//! <root>/.ferry-deltas/<dataset>/v<N>/  a fetched delta waiting to be applied
//! ```
//! Staged files are never written through a link (see [`workdir`]).

mod commit;
pub mod direct;
mod journal;
mod plan;
mod sync;
pub mod workdir;
mod worker;

pub use commit::{SIGNED_NAME, VerifiedHashes};
pub use journal::{DoneSet, Journal};
pub use plan::{Plan, Step, plan};
pub use sync::{SyncReport, list_versions, list_versions_as, sync};
pub use workdir::staging_dir;
pub use worker::connection_receive_window;

use crate::conn::{ClientError, Connector, Session};
use ferry_net::bandwidth::{Priority, RateLimiter};
use ferry_net::conn::message_name;
use ferry_net::sign::{self, SignatureError};
use ferry_net::tls::Credentials;
use ferry_proto::{
    DatasetId, FileRole, Manifest, Message, ServiceMethod, SignedManifest, VersionKind, VersionNo,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How a pull runs. The defaults are what a user gets.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Parallel streams on the one connection, on a short path (a LAN, loopback).
    pub streams: usize,
    /// Parallel streams when the path's minimum round-trip time is at least
    /// [`ferry_net::tls::congestion::LONG_PATH_RTT`] once connected (the larger of this and
    /// `streams` is used; see [`PullOptions::streams_for`]). More streams keep a long, lossy
    /// link full while one stream waits for a repaired packet or for its next request's answer;
    /// on loopback they cost throughput (8 instead of 4 streams: 379 against 435 MB/s in
    /// `ferry-bench transfer`).
    pub long_path_streams: usize,
    /// Chunks asked for in one request.
    pub chunks_per_request: u32,
    /// Let the node send zstd-compressed chunks where that shrinks them.
    pub accept_zstd: bool,
    /// Reconnect attempts after a lost connection before giving up.
    pub max_retries: u32,
    /// Cap on the verified bytes per second, across streams.
    pub rate_limit: Option<u64>,
    /// A bandwidth timetable (`ferry pull --bwlimit`), applied on top of `rate_limit` to the
    /// verified bytes of every stream; it changes its rate at the timetable's edges, mid-pull.
    /// One limiter may be shared by several pulls: a node's own pulls share the node's.
    pub bandwidth: Option<Arc<RateLimiter>>,
    /// A second shared timetable, for the peer pulled from: a node's pulls from one peer share
    /// its `[limits.pull-bwlimit-by-peer]` entry, besides the node-wide `bandwidth`.
    pub peer_bandwidth: Option<Arc<RateLimiter>>,
    /// How this pull queues behind a shared `bandwidth` limiter: `Interactive` for an operator's
    /// `ferry pull`, `Bulk` of its job's class for a node's replication, subscription and
    /// scheduled pulls. A bulk class other than `normal` is declared in each chunk request
    /// ([`Priority::declared`]), for the serving node to order this peer's answers by.
    pub priority: Priority,
    /// Checks that each version was published by its dataset's provider in the catalog, before
    /// any of its chunks is fetched; `None` trusts any publisher the CA vouches for.
    pub provenance: Option<Arc<dyn Provenance>>,
    /// Test hook: materialize deltas as a node with another Parquet writer would (this string as
    /// the writer's name and footer `created_by`; see ferry-tables' `WriteOptions::foreign_writer`).
    /// `None` in every real use.
    pub foreign_writer: Option<String>,
    /// Test hook: a destination that fails chosen chunk writes, as a failing disk would (EIO).
    /// `None` in every real use.
    pub write_fault: Option<Arc<dyn WriteFault>>,
    /// The service method the reads are made under: `Download` (by hand, by schedule, a node's
    /// replication) or `Subscription` (the pull that follows an announcement). The node checks
    /// it against the requester's grant.
    pub method: ServiceMethod,
}

/// A destination device that fails chosen writes ([`PullOptions::write_fault`], for tests).
pub trait WriteFault: Send + Sync + std::fmt::Debug {
    /// Called before chunk `chunk` of the file `name` is written; an error is the write's.
    fn before_write(&self, name: &str, chunk: u32) -> std::io::Result<()>;
}

/// Checks where a version comes from: a node checks it against its policy replica, so a node
/// re-serving a version cannot pass off one it signed itself as another department's.
pub trait Provenance: Send + Sync + std::fmt::Debug {
    /// `Err` says why the manifest's publisher is not the catalog's provider of its dataset.
    fn check(&self, manifest: &Manifest) -> Result<(), String>;
}

impl PullOptions {
    /// The streams a pull runs on a path whose smallest round-trip time so far is `min_rtt`.
    ///
    /// The minimum, as the congestion controller's choice of Cubic or BBR: the smoothed
    /// estimate starts from the handshake's round trip, which includes the node's certificate
    /// checks and signature, and a few requests later on loopback it still stood at 5 ms or
    /// more in some pulls (one was the first pull from a node just started), which then ran 8
    /// streams instead of 4.
    pub fn streams_for(&self, min_rtt: Duration) -> usize {
        let streams = if min_rtt >= ferry_net::tls::congestion::LONG_PATH_RTT {
            self.long_path_streams.max(self.streams)
        } else {
            self.streams
        };
        streams.max(1)
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            streams: 4,
            long_path_streams: 8,
            chunks_per_request: 8,
            accept_zstd: true,
            max_retries: 8,
            rate_limit: None,
            bandwidth: None,
            peer_bandwidth: None,
            priority: Priority::Interactive,
            provenance: None,
            foreign_writer: None,
            write_fault: None,
            method: ServiceMethod::Download,
        }
    }
}

/// Which stored files of a version a pull fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Every stored file: a node mirroring a version.
    All,
    /// The table's files only: a consumer starting from a snapshot.
    Table,
    /// The delta's files only: a consumer that holds the parent.
    Delta,
}

impl Wanted {
    pub fn includes(self, role: FileRole) -> bool {
        match self {
            Self::All => true,
            Self::Table => role == FileRole::Snapshot,
            Self::Delta => role != FileRole::Snapshot,
        }
    }

    /// Bytes of the files this selects.
    pub fn bytes(self, manifest: &Manifest) -> u64 {
        manifest.files.iter().filter(|f| self.includes(f.role)).map(|f| f.size).sum()
    }

    fn label(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Table => "table",
            Self::Delta => "delta",
        }
    }
}

/// What happened, for progress bars and `--json` lines.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The manifest is verified; `resumed_bytes` were already verified by an earlier run.
    Started {
        dataset: DatasetId,
        version: VersionNo,
        part: &'static str,
        files: usize,
        total_bytes: u64,
        resumed_bytes: u64,
    },
    /// A delta was applied and the result matches the publisher's table hashes.
    Materialized { dataset: DatasetId, version: VersionNo, rows: u64 },
    /// Chunk `chunk` of manifest file number `file` was verified and written (and journaled):
    /// its bytes are in the staging file from now on (a node uploads them while the pull runs).
    Chunk { file: u32, chunk: u32, verified_bytes: u64, fetched_bytes: u64, total_bytes: u64 },
    /// A lost connection is being re-established.
    Retry { attempt: u32, reason: String },
    /// Every file is verified; committing.
    Verifying,
}

/// Receives [`PullEvent`]s. Called from the engine's tasks; keep it cheap.
pub trait PullObserver: Send + Sync {
    fn event(&self, event: &PullEvent);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl PullObserver for Quiet {
    fn event(&self, _: &PullEvent) {}
}

/// The outcome of a pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    pub dataset: DatasetId,
    pub version: VersionNo,
    pub kind: VersionKind,
    pub publisher: String,
    pub files: usize,
    pub rows: u64,
    pub total_bytes: u64,
    /// Verified chunk bytes fetched by this run.
    pub fetched_bytes: u64,
    /// Payload bytes received for them (smaller where zstd paid).
    pub wire_bytes: u64,
    /// Bytes found verified in the journal of an earlier, interrupted run.
    pub resumed_bytes: u64,
    pub retries: u32,
    pub seconds: f64,
    /// The committed version's directory.
    pub path: PathBuf,
    /// The version was already there; nothing was fetched.
    pub already_present: bool,
    /// The chunk hashes this run verified, by file: what a node importing the copy into its
    /// store takes instead of reading the files again. `None` when nothing was fetched.
    #[serde(skip)]
    pub verified: Option<Arc<VerifiedHashes>>,
}

/// Why a pull failed. The staging directory and journal are kept unless the data was bad.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the manifest's signature does not check out: {0}")]
    Signature(#[from] SignatureError),
    #[error("the node sent {got} but {expected} was asked for")]
    WrongManifest { expected: String, got: String },
    #[error("refused {dataset} {version}: {reason}; nothing was fetched")]
    NotProvider { dataset: DatasetId, version: VersionNo, reason: String },
    #[error(
        "chunk {chunk} of file {file} does not match its manifest hash ({detail}); nothing was committed"
    )]
    Corrupt { file: String, chunk: u32, detail: String },
    #[error("the node sent chunk hashes that do not match the signed manifest ({0}); nothing was committed")]
    ChunkHashes(ferry_proto::PageError),
    #[error(
        "file {file} does not match its manifest hash after writing; its chunks will be fetched again on the next run"
    )]
    FileMismatch { file: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} {reason}; a pull writes only in real directories of its own (remove it and pull again)")]
    UnsafeStaging { path: PathBuf, reason: &'static str },
    #[error("interrupted; {verified_bytes} bytes are verified and journaled, the next run resumes")]
    Interrupted { verified_bytes: u64 },
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: ClientError },
    #[error("{dataset} {version} is not on the node, nor any snapshot it could be built from")]
    NoPath { dataset: DatasetId, version: VersionNo },
    #[error("applying the delta of {version}: {detail}")]
    Materialize { version: VersionNo, detail: String },
    #[error(
        "materialized {version} differs from the publisher's table in file {file}; nothing was committed"
    )]
    MaterializedMismatch { version: VersionNo, file: String },
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub dataset: DatasetId,
    /// `None`: the latest version.
    pub version: Option<VersionNo>,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io { path: path.to_owned(), source }
}

/// Directory where a committed version lives under `root`.
pub fn version_dir(root: &Path, dataset: &DatasetId, version: VersionNo) -> PathBuf {
    root.join(dataset.as_str()).join(format!("v{}", version.get()))
}

/// Connects with retries for transient failures.
pub(crate) async fn connect_with_retry(
    connector: &Connector,
    opts: &PullOptions,
    observer: &dyn PullObserver,
    retries: &mut u32,
) -> Result<Session, PullError> {
    retry_connect(opts, observer, retries, || connector.connect()).await
}

/// `connect` (a [`Connector`]'s connect, perhaps with its first questions) until it succeeds,
/// a failure is not transient, or the retries are spent.
pub(crate) async fn retry_connect<T, F, Fut>(
    opts: &PullOptions,
    observer: &dyn PullObserver,
    retries: &mut u32,
    mut connect: F,
) -> Result<T, PullError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 0;
    loop {
        match connect().await {
            Ok(session) => return Ok(session),
            Err(e) if e.is_transient() && attempt < opts.max_retries => {
                attempt += 1;
                *retries += 1;
                observer.event(&PullEvent::Retry { attempt, reason: e.to_string() });
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) if e.is_transient() => {
                return Err(PullError::RetriesExhausted { attempts: attempt + 1, last: e });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(10))
}

/// Fetches and verifies the manifest of the requested version.
pub async fn fetch_manifest(
    session: &Session,
    creds: &Credentials,
    req: &PullRequest,
    provenance: Option<&dyn Provenance>,
    method: ServiceMethod,
) -> Result<(Arc<SignedManifest>, Arc<Manifest>), PullError> {
    let answer = session.request(&manifest_request(req, method)).await?;
    check_manifest(answer, creds, req, provenance)
}

/// The `GetManifest` of `req`.
pub(crate) fn manifest_request(req: &PullRequest, method: ServiceMethod) -> Message {
    Message::GetManifest { dataset: req.dataset.clone(), version: req.version, method }
}

/// Verifies a node's answer to [`manifest_request`]: its signature, that it is the version
/// asked for, and where it comes from.
pub(crate) fn check_manifest(
    answer: Message,
    creds: &Credentials,
    req: &PullRequest,
    provenance: Option<&dyn Provenance>,
) -> Result<(Arc<SignedManifest>, Arc<Manifest>), PullError> {
    let Message::ManifestData { signed } = answer else {
        return Err(ClientError::Unexpected { expected: "ManifestData", got: message_name(&answer) }.into());
    };
    let (manifest, _signer) =
        sign::verify_signed_manifest(&signed, creds, rustls_pki_types::UnixTime::now())?;
    let wrong = manifest.dataset != req.dataset || req.version.is_some_and(|v| v != manifest.version);
    if wrong {
        return Err(PullError::WrongManifest {
            expected: format!("{} {}", req.dataset, req.version.map_or("latest".into(), |v| v.to_string())),
            got: format!("{} {}", manifest.dataset, manifest.version),
        });
    }
    if let Some(provenance) = provenance
        && let Err(reason) = provenance.check(&manifest)
    {
        return Err(PullError::NotProvider { dataset: manifest.dataset, version: manifest.version, reason });
    }
    // Shared by the workers and the commit rather than copied.
    Ok((Arc::new(signed), Arc::new(manifest)))
}

/// Pulls one version verbatim (every stored file) into `root` (see the module doc for the
/// layout). Nodes mirror versions this way; consumers use [`sync`], which plans and materializes.
pub async fn pull(
    connector: &Connector,
    creds: &Credentials,
    req: &PullRequest,
    root: &Path,
    opts: &PullOptions,
    observer: Arc<dyn PullObserver>,
    cancel: watch::Receiver<bool>,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let mut retries = 0;
    let session = connect_with_retry(connector, opts, observer.as_ref(), &mut retries).await?;
    let (signed, manifest) =
        fetch_manifest(&session, creds, req, opts.provenance.as_deref(), opts.method).await?;
    let final_dir = version_dir(root, &manifest.dataset, manifest.version);
    let fetch = Fetch { connector, session, signed, manifest: &manifest, wanted: Wanted::All };
    let mut report = fetch.run(root, &final_dir, opts, observer, cancel).await?;
    report.retries += retries;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Fetching some files of one version and committing them as a directory.
pub(crate) struct Fetch<'a> {
    pub connector: &'a Connector,
    pub session: Session,
    /// Dropped once the staging directory holds it: the transfer needs only the parsed form.
    pub signed: Arc<SignedManifest>,
    pub manifest: &'a Arc<Manifest>,
    pub wanted: Wanted,
}

impl Fetch<'_> {
    /// Fetches the wanted files into a staging directory under `root`, verifies them and renames
    /// the staging directory to `final_dir`.
    pub async fn run(
        self,
        root: &Path,
        final_dir: &Path,
        opts: &PullOptions,
        observer: Arc<dyn PullObserver>,
        cancel: watch::Receiver<bool>,
    ) -> Result<PullReport, PullError> {
        let manifest = self.manifest;
        let mut report = PullReport {
            dataset: manifest.dataset.clone(),
            version: manifest.version,
            kind: manifest.kind,
            publisher: manifest.publisher.to_string(),
            files: manifest.files.iter().filter(|f| self.wanted.includes(f.role)).count(),
            rows: manifest.row_count,
            total_bytes: self.wanted.bytes(manifest),
            fetched_bytes: 0,
            wire_bytes: 0,
            resumed_bytes: 0,
            retries: 0,
            seconds: 0.0,
            path: final_dir.to_owned(),
            already_present: false,
            verified: None,
        };
        if commit::already_committed(final_dir, &self.signed) {
            report.already_present = true;
            return Ok(report);
        }
        let staging = staging_dir(root, &manifest.dataset, manifest.version);
        std::fs::create_dir_all(root).map_err(io_error(root))?;
        workdir::own_below(root, &staging)?;
        let staged = Arc::new(commit::Staging::open(&staging, &self.signed, manifest, self.wanted)?);
        // The signed form (its body alone is ~80 bytes per chunk, 1.6 MB at 20 GiB) is in the
        // staging directory now; a caller that still needs it holds its own reference.
        drop(self.signed);
        let resumed_bytes = staged.done_bytes(manifest);
        let resumed_files = staged.done().iter().map(|&(file, _)| file).collect();
        observer.event(&PullEvent::Started {
            dataset: manifest.dataset.clone(),
            version: manifest.version,
            part: self.wanted.label(),
            files: report.files,
            total_bytes: report.total_bytes,
            resumed_bytes,
        });
        let outcome = worker::run(worker::Job {
            connector: self.connector.clone(),
            session: self.session,
            manifest: self.manifest.clone(),
            staged: staged.clone(),
            opts: opts.clone(),
            observer: observer.clone(),
            cancel,
            resumed_bytes,
        })
        .await?;
        report.fetched_bytes = outcome.fetched_bytes;
        report.wire_bytes = outcome.wire_bytes;
        report.resumed_bytes = resumed_bytes;
        report.retries = outcome.retries;
        observer.event(&PullEvent::Verifying);
        let committing = Instant::now();
        report.verified = Some(Arc::new(staged.verified_hashes(&resumed_files)));
        commit::commit(staged, final_dir, self.manifest.clone(), resumed_files).await?;
        tracing::debug!(seconds = committing.elapsed().as_secs_f64(), dir = %final_dir.display(), "committed");
        Ok(report)
    }
}
