//! Node-to-node pulls: an operator asks this node to fetch a dataset version from a named peer.
//! The node runs the same transfer engine as the CLI into its state directory, then imports the
//! verified version into its store, keeping the publisher's signed manifest as is, with the
//! chunk hashes the pull verified: the import moves or uploads the copy without reading it
//! to hash it again ([`crate::data::store::Store::commit_pulled`]). A full disk
//! (in the state directory the pull writes to, or in the store) is answered `OutOfSpace`, naming
//! the node and not its paths; the pull's journal stays, so the replication asked again once
//! space is freed fetches only what is missing.

use super::refusal::is_out_of_space;
use super::{DataService, Refusal};
use crate::data::store::{ImportFeed, NewVersion, StoreError};
use crate::telemetry::{Direction, DirectionLabel};
use ferry_client::conn::{ClientError, Connector};
use ferry_client::transfer::{self, PullError, PullEvent, PullObserver, PullRequest};
use ferry_client::transfer::{SIGNED_NAME, list_versions_as};
use ferry_net::sign;
use ferry_net::wire::FrameWriter;
use ferry_proto::{
    DatasetId, ErrorCode, Message, ServiceMethod, SignedManifest, VersionKind, VersionNo, VersionSummary,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Instant;

/// One replication of a dataset at a time on a node: each pulls into, and imports from, the
/// dataset's directory under `incoming/`, and an import moves the files out of it.
#[derive(Debug, Default)]
pub struct DatasetLocks(std::sync::Mutex<HashMap<DatasetId, Weak<tokio::sync::Mutex<()>>>>);

impl DatasetLocks {
    /// Waits for, and holds until dropped, the lock of `dataset`.
    pub async fn lock(&self, dataset: &DatasetId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            locks.retain(|_, lock| lock.strong_count() > 0);
            match locks.get(dataset).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(dataset.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// Feeds pull events into the node's metrics.
#[derive(Debug)]
struct MetricsObserver(Arc<crate::telemetry::Metrics>);

impl PullObserver for MetricsObserver {
    fn event(&self, event: &PullEvent) {
        match event {
            PullEvent::Chunk { .. } => {
                self.0.chunks_verified.inc();
            }
            PullEvent::Retry { .. } => {
                self.0.retries.inc();
            }
            _ => {}
        }
    }
}

/// A replication's observer: the metrics, and each chunk written to the import that uploads
/// the files while the pull runs ([`crate::data::store::StreamedImport`]).
#[derive(Debug)]
struct ImportObserver(MetricsObserver, ImportFeed);

impl PullObserver for ImportObserver {
    fn event(&self, event: &PullEvent) {
        match event {
            PullEvent::Started { resumed_bytes, .. } => self.1.started(*resumed_bytes),
            PullEvent::Chunk { file, chunk, .. } => self.1.chunk_written(*file, *chunk),
            _ => {}
        }
        self.0.event(event);
    }
}

/// What a node-to-node pull brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicated {
    /// The version the node now holds.
    pub version: VersionNo,
    pub bytes_fetched: u64,
    pub files: u32,
}

impl DataService {
    /// Pulls `dataset` (`version: None`: the latest) from the peer this node knows as `from`, every
    /// version it lacks up to it, and answers `Replicated`. Returns the bytes fetched.
    pub async fn replicate(
        &self,
        from: &str,
        dataset: DatasetId,
        version: Option<VersionNo>,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let done = self.replicate_as(from, &dataset, version, ServiceMethod::Download).await?;
        let Replicated { version, bytes_fetched, files } = done;
        writer.send(&Message::Replicated { dataset, version, bytes_fetched, files }).await?;
        Ok(bytes_fetched)
    }

    /// A connector to the peer this node knows as `from`, with the node's own credentials.
    pub fn connector_to(&self, from: &str) -> Result<Connector, Refusal> {
        let node = self.settings.peers.get(from).ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("this node has no peer named {from:?} in its config"))
        })?;
        Connector::with_endpoint(self.endpoint.clone(), node.clone())
            .with_loopback_config(&self.creds)
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
    }

    /// Pulls `dataset` up to `version` (the latest: `None`) from `from` into the store, its reads
    /// made under `method` (a download, or the pull a subscription's announcement starts): a
    /// delta after the version held when the peer still has the chain, its snapshot otherwise.
    pub async fn replicate_as(
        &self,
        from: &str,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        method: ServiceMethod,
    ) -> Result<Replicated, Refusal> {
        let connector = self.connector_to(from)?;
        let wait = self.settings.limits.replicate_lock_timeout;
        let _one_at_a_time =
            tokio::time::timeout(wait, self.replicate_locks.lock(dataset)).await.map_err(|_| {
                Refusal::new(
                    ErrorCode::Unavailable,
                    format!("another replication of {dataset} has run for over {wait:?}; retry later"),
                )
            })?;
        let session =
            connector.connect().await.map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))?;
        let versions = list_versions_as(&session, dataset, method).await.map_err(|e| match e {
            ClientError::Remote { code, message } => Refusal::new(code, message),
            other => Refusal::new(ErrorCode::Unavailable, other.to_string()),
        })?;
        session.close();
        let target = version.or_else(|| versions.last().map(|v| v.version)).ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("{from} holds no version of {dataset}"))
        })?;
        let have =
            self.store.version(dataset, None).ok().map(|v| v.manifest.version).filter(|h| *h <= target);
        let missing = mirror_list(have, target, &versions).ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("{from} cannot provide {dataset} {target}"))
        })?;
        let fell_back = have.is_some_and(|h| missing.first().is_some_and(|first| first.get() > h.get() + 1));
        if fell_back {
            self.metrics.snapshot_fallbacks.inc();
            tracing::warn!(%dataset, ?have, from, "the deltas after our version are gone on the peer; starting from its snapshot");
        }

        let mut bytes_fetched = 0;
        let mut files = 0;
        for number in missing {
            let report = self.mirror_one(&connector, dataset, number, method).await?;
            bytes_fetched += report.fetched_bytes;
            files += report.files as u32;
        }
        tracing::info!(%dataset, version = %target, from, bytes = bytes_fetched, ?method, "replicated");
        Ok(Replicated { version: target, bytes_fetched, files })
    }
}

impl DataService {
    /// Brings `dir/<dataset>/v<N>` up to `version` from `from` (the transfer engine's `sync`: the
    /// deltas after the version the directory holds, or the nearest snapshot, every file proven
    /// before the version is committed), its reads made under `method`.
    pub async fn sync_directory(
        &self,
        from: &str,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        dir: &std::path::Path,
        method: ServiceMethod,
    ) -> Result<Replicated, Refusal> {
        let connector = self.connector_to(from)?;
        let opts = self.pull_options(method, connector.node());
        let request = PullRequest { dataset: dataset.clone(), version };
        let observer = Arc::new(MetricsObserver(self.metrics.clone()));
        let result =
            transfer::sync(&connector, &self.creds, &request, dir, &opts, observer, self.draining.clone())
                .await;
        let what = format!("{dataset} into {}", dir.display());
        let report = result.map_err(|e| match is_out_of_space(&e) {
            true => Refusal::out_of_space(&self.creds.principal().name, &what, &e),
            false => pull_refusal(&self.metrics, e),
        })?;
        self.metrics.received_bytes.inc_by(report.wire_bytes);
        if report.fell_back_to_snapshot {
            self.metrics.snapshot_fallbacks.inc();
        }
        let files = u32::try_from(report.steps.len()).unwrap_or(u32::MAX);
        Ok(Replicated { version: report.version, bytes_fetched: report.fetched_bytes, files })
    }
}

/// The versions to mirror, oldest first: the ones after `have` if their chain is complete,
/// otherwise the newest stored snapshot at or before `target` and every version after it.
fn mirror_list(
    have: Option<VersionNo>,
    target: VersionNo,
    versions: &[VersionSummary],
) -> Option<Vec<VersionNo>> {
    if have == Some(target) {
        return Some(Vec::new());
    }
    let chain_from = |start: VersionNo| -> Option<Vec<VersionNo>> {
        let wanted: Vec<VersionNo> =
            versions.iter().filter(|v| v.version > start && v.version <= target).map(|v| v.version).collect();
        let contiguous = wanted.len() as u64 == target.get() - start.get();
        contiguous.then_some(wanted)
    };
    if let Some(have) = have
        && let Some(list) = chain_from(have)
    {
        return Some(list);
    }
    let snapshot = versions.iter().rev().find(|v| {
        v.version <= target && v.kind == VersionKind::Snapshot && have.is_none_or(|h| v.version > h)
    })?;
    let mut list = vec![snapshot.version];
    list.extend(chain_from(snapshot.version)?);
    Some(list)
}

impl DataService {
    /// Pulls one version verbatim and commits it to the store.
    async fn mirror_one(
        &self,
        connector: &Connector,
        dataset: &DatasetId,
        number: VersionNo,
        method: ServiceMethod,
    ) -> Result<ferry_client::transfer::PullReport, Refusal> {
        let root = self.settings.state_dir.join("incoming");
        let pulled = transfer::version_dir(&root, dataset, number);
        if pulled.exists() && !pulled.join(SIGNED_NAME).exists() && !self.resume_import(&pulled).await {
            // An import that stopped part-way and cannot be completed from the store (see
            // `resume_import`): what is left is pulled afresh.
            tracing::warn!(%dataset, version = %number, "removing the rest of an interrupted import");
            tokio::fs::remove_dir_all(&pulled).await.map_err(|e| internal_io(&pulled, e))?;
        }
        let opts = self.pull_options(method, connector.node());
        let request = PullRequest { dataset: dataset.clone(), version: Some(number) };
        // Into S3 the files are uploaded while the pull writes them (dropped on an error: aborted).
        let staging = transfer::staging_dir(&root, dataset, number);
        let streaming = self.store.stream_import(&staging, dataset, number);
        let observer = Arc::new(ImportObserver(MetricsObserver(self.metrics.clone()), streaming.feed()));
        let label = DirectionLabel { direction: Direction::Pull };
        self.metrics.active_transfers.get_or_create(&label).inc();
        let started = Instant::now();
        let result =
            transfer::pull(connector, &self.creds, &request, &root, &opts, observer, self.draining.clone())
                .await;
        self.metrics.active_transfers.get_or_create(&label).dec();
        let what = format!("{dataset} {number}");
        let full = |e: &dyn std::fmt::Display| Refusal::out_of_space(&self.creds.principal().name, &what, e);
        let report = result.map_err(|e| match is_out_of_space(&e) {
            true => full(&e),
            false => pull_refusal(&self.metrics, e),
        })?;
        self.metrics.received_bytes.inc_by(report.wire_bytes);
        self.metrics.transfer_duration.get_or_create(&label).observe(started.elapsed().as_secs_f64());
        let streamed = streaming.finish().await;
        if self.store.version(&report.dataset, Some(report.version)).is_err() {
            let signed_bytes = tokio::fs::read(report.path.join("manifest.signed"))
                .await
                .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
            let signed = SignedManifest::decode(&signed_bytes)
                .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
            let (manifest, signer) =
                sign::verify_signed_manifest(&signed, &self.creds, rustls::pki_types::UnixTime::now())
                    .map_err(|e| Refusal::new(ErrorCode::InvalidData, e.to_string()))?;
            // The files are moved into the store, so this copy stops being a finished pull first;
            // its manifest is kept aside to take them back should the commit stop part-way.
            set_manifest_aside(&report.path).await?;
            let publisher = manifest.publisher.clone();
            let version = NewVersion { signed, manifest, signer };
            // The hashes the pull verified chunk by chunk: the import does not read the copy.
            let verified = report.verified.as_deref().map_or(&[][..], |v| v.files());
            let importing = Instant::now();
            let committed =
                self.store.commit_pulled_streamed(&report.path, version, verified, streamed).await;
            if let Err(e) = committed {
                if matches!(e, StoreError::FileMismatch { .. }) {
                    // A copy that does not match its manifest is not worth taking back.
                    let _ = tokio::fs::remove_dir_all(&report.path).await;
                }
                return Err(if is_out_of_space(&e) { full(&e) } else { Refusal::from(e) });
            }
            tracing::info!(
                %dataset,
                version = %number,
                pull_s = report.seconds,
                import_s = importing.elapsed().as_secs_f64(),
                "imported"
            );
            self.announce_commit(&report.dataset, report.version, publisher);
        }
        let _ = tokio::fs::remove_dir_all(&report.path).await;
        Ok(report)
    }
}

impl DataService {
    /// An import that stopped part-way, its manifest kept aside in the copy
    /// ([`set_manifest_aside`]): takes back from the store the files it had already moved there
    /// and makes the copy a finished pull again, so that the version is committed again without
    /// being fetched (the commit reads each file taken back and checks it against the manifest).
    /// False when it cannot: no manifest aside, one that no longer verifies, a file neither here
    /// nor in the store.
    async fn resume_import(&self, pulled: &Path) -> bool {
        let aside = manifest_aside(pulled);
        let Ok(bytes) = tokio::fs::read(&aside).await else { return false };
        let Ok(signed) = SignedManifest::decode(&bytes) else { return false };
        let now = rustls::pki_types::UnixTime::now();
        let Ok((manifest, _)) = sign::verify_signed_manifest(&signed, &self.creds, now) else { return false };
        match self.store.take_back_moved(pulled, &manifest).await {
            Ok(Some(bytes)) => {
                tracing::info!(dataset = %manifest.dataset, version = %manifest.version, taken_back_bytes = bytes,
                    "resuming an interrupted import");
            }
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(dataset = %manifest.dataset, error = %e, "cannot take back an interrupted import");
                return false;
            }
        }
        let restored = tokio::fs::rename(&aside, pulled.join(SIGNED_NAME)).await;
        restored.is_ok() && sync_dir(pulled).await.is_ok()
    }
}

/// Where an import keeps the signed manifest of the copy it is moving into the store: in the
/// copy's reserved `.ferry` directory, which no file of a manifest can name.
fn manifest_aside(pulled: &Path) -> PathBuf {
    pulled.join(".ferry").join("importing.signed")
}

/// Moves the copy's `manifest.signed` to [`manifest_aside`], durably: the copy is no longer a
/// finished pull, and an import cut short can still be resumed.
async fn set_manifest_aside(pulled: &Path) -> Result<(), Refusal> {
    let (marker, aside) = (pulled.join(SIGNED_NAME), manifest_aside(pulled));
    let reserved = pulled.join(".ferry");
    tokio::fs::create_dir_all(&reserved).await.map_err(|e| internal_io(&reserved, e))?;
    tokio::fs::rename(&marker, &aside).await.map_err(|e| internal_io(&marker, e))?;
    sync_dir(&reserved).await.map_err(|e| internal_io(&reserved, e))?;
    sync_dir(pulled).await.map_err(|e| internal_io(pulled, e))
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

fn internal_io(path: &std::path::Path, e: std::io::Error) -> Refusal {
    Refusal::new(ErrorCode::Internal, format!("{}: {e}", path.display()))
}

fn pull_refusal(metrics: &crate::telemetry::Metrics, e: PullError) -> Refusal {
    let code = match &e {
        PullError::NotProvider { .. } => {
            metrics.verify_failures.inc();
            tracing::warn!(error = %e, "node-to-node pull refused a version its provider did not sign");
            return Refusal::new(ErrorCode::PermissionDenied, format!("not_provider: pull failed: {e}"));
        }
        PullError::Corrupt { .. }
        | PullError::FileMismatch { .. }
        | PullError::Signature(_)
        | PullError::WrongManifest { .. } => {
            metrics.verify_failures.inc();
            ErrorCode::InvalidData
        }
        PullError::Interrupted { .. } => ErrorCode::Unavailable,
        PullError::Client(ferry_client::conn::ClientError::Remote { code, .. }) => *code,
        _ => ErrorCode::Internal,
    };
    tracing::warn!(error = %e, "node-to-node pull failed");
    Refusal::new(code, format!("pull failed: {e}"))
}
