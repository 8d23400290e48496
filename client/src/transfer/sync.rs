//! `sync`: bring a consumer's directory to a version, the cheapest way — fetch the deltas it
//! lacks and apply them, or start from the nearest snapshot — and prove the result: every
//! materialized file must hash to the publisher's table list before the version is committed.

use super::commit::{SIGNED_NAME, write_manifest_and_rename};
use super::plan::{Step, plan};
use super::workdir::{self, apply_dir, delta_dir};
use super::{
    Fetch, PullError, PullEvent, PullObserver, PullOptions, PullRequest, Wanted, check_manifest,
    fetch_manifest, io_error, manifest_request, retry_connect, version_dir,
};
use crate::conn::{ClientError, Connector, Session};
use ferry_net::conn::message_name;
use ferry_net::tls::Credentials;
use ferry_proto::{
    DatasetId, FileRole, Manifest, Message, ServiceMethod, SignedManifest, VersionNo, VersionSummary,
};
use ferry_tables::canonical::WriteOptions;
use ferry_tables::proof::{ProofError, Proven, check_table};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The outcome of a sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    pub dataset: DatasetId,
    /// The version the directory held before, if any.
    pub from: Option<VersionNo>,
    pub version: VersionNo,
    /// What was fetched, e.g. `["table v5", "delta v6", "delta v7"]`.
    pub steps: Vec<String>,
    pub fetched_bytes: u64,
    pub wire_bytes: u64,
    pub resumed_bytes: u64,
    /// Bytes of the table at the target version (what a full download would have cost).
    pub table_bytes: u64,
    pub rows: u64,
    /// The deltas from `from` were no longer on the node: a snapshot was fetched instead.
    pub fell_back_to_snapshot: bool,
    pub retries: u32,
    pub seconds: f64,
    pub path: PathBuf,
    pub already_present: bool,
}

/// Lists the versions a node holds (a read under the `Download` method).
pub async fn list_versions(
    session: &Session,
    dataset: &DatasetId,
) -> Result<Vec<VersionSummary>, ClientError> {
    list_versions_as(session, dataset, ServiceMethod::Download).await
}

/// Lists the versions a node holds, as a read under `method`.
pub async fn list_versions_as(
    session: &Session,
    dataset: &DatasetId,
    method: ServiceMethod,
) -> Result<Vec<VersionSummary>, ClientError> {
    version_list(session.request(&Message::ListVersions { dataset: dataset.clone(), method }).await?)
}

fn version_list(answer: Message) -> Result<Vec<VersionSummary>, ClientError> {
    match answer {
        Message::VersionList { versions, .. } => Ok(versions),
        other => Err(ClientError::Unexpected { expected: "VersionList", got: message_name(&other) }),
    }
}

/// Whether `root` holds no version of `dataset` at all, committed or not: a sync then starts
/// from the node's snapshot, most often the requested version itself.
fn holds_nothing_of(root: &Path, dataset: &DatasetId) -> bool {
    std::fs::read_dir(root.join(dataset.as_str())).map_or(true, |mut entries| entries.next().is_none())
}

/// Connects and asks, together with `Hello`, for the versions of the dataset and, when
/// nothing of it is here yet, for the requested version's manifest (most often the plan's only
/// step): the answers then come in one round trip instead of three. Returns the session, the
/// version list and that manifest's answer, if asked.
async fn connect_and_list(
    connector: &Connector,
    req: &PullRequest,
    root: &Path,
    opts: &PullOptions,
    observer: &dyn PullObserver,
    retries: &mut u32,
) -> Result<(Session, Vec<VersionSummary>, Option<Result<Message, ClientError>>), PullError> {
    let mut requests = vec![Message::ListVersions { dataset: req.dataset.clone(), method: opts.method }];
    if holds_nothing_of(root, &req.dataset) {
        requests.push(manifest_request(req, opts.method));
    }
    let (session, answers) =
        retry_connect(opts, observer, retries, || connector.connect_asking(&requests)).await?;
    let mut answers = answers.into_iter();
    let versions = answers
        .next()
        .ok_or(ClientError::Unexpected { expected: "VersionList", got: "no answer".into() })??;
    Ok((session, version_list(versions)?, answers.next()))
}

/// The newest committed version under `root` not newer than `target`, with its manifest.
fn local_version(root: &Path, dataset: &DatasetId, target: VersionNo) -> Option<(VersionNo, Manifest)> {
    let entries = std::fs::read_dir(root.join(dataset.as_str())).ok()?;
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let number = VersionNo::new(name.to_str()?.strip_prefix('v')?.parse().ok()?).ok()?;
            (number <= target).then_some(number)
        })
        .filter_map(|number| {
            let dir = version_dir(root, dataset, number);
            let signed = SignedManifest::decode(&std::fs::read(dir.join("manifest.signed")).ok()?).ok()?;
            let manifest = Manifest::from_json(&signed.body).ok()?;
            let complete = manifest.table.iter().all(|f| dir.join(f.name.as_str()).exists());
            complete.then_some((number, manifest))
        })
        .max_by_key(|(n, _)| *n)
}

/// Brings `root/<dataset>/v<N>` up to the requested version (see the module doc).
pub async fn sync(
    connector: &Connector,
    creds: &Credentials,
    req: &PullRequest,
    root: &Path,
    opts: &PullOptions,
    observer: Arc<dyn PullObserver>,
    cancel: watch::Receiver<bool>,
) -> Result<SyncReport, PullError> {
    let started = Instant::now();
    let mut retries = 0;
    let (session, versions, mut first_manifest) =
        connect_and_list(connector, req, root, opts, observer.as_ref(), &mut retries).await?;
    let target = match req.version {
        Some(v) => v,
        None => versions.last().map(|v| v.version).ok_or_else(|| ClientError::Remote {
            code: ferry_proto::ErrorCode::NotFound,
            message: format!("the node holds no version of {}", req.dataset),
        })?,
    };
    let have = local_version(root, &req.dataset, target);
    let from = have.as_ref().map(|(n, _)| *n);
    let plan = plan(from, target, &versions)
        .ok_or(PullError::NoPath { dataset: req.dataset.clone(), version: target })?;
    let mut report = SyncReport {
        dataset: req.dataset.clone(),
        from,
        version: target,
        steps: Vec::new(),
        fetched_bytes: 0,
        wire_bytes: 0,
        resumed_bytes: 0,
        table_bytes: 0,
        rows: 0,
        fell_back_to_snapshot: plan.fell_back_to_snapshot,
        retries,
        seconds: 0.0,
        path: version_dir(root, &req.dataset, target),
        already_present: plan.steps.is_empty(),
    };
    let mut base = have.map(|(number, manifest)| (number, Arc::new(manifest)));
    let mut made = Vec::new();
    for step in &plan.steps {
        let (number, wanted) = match *step {
            Step::Table(n) => (n, Wanted::Table),
            Step::Delta(n) => (n, Wanted::Delta),
        };
        let request = PullRequest { dataset: req.dataset.clone(), version: Some(number) };
        let provenance = opts.provenance.as_deref();
        // The manifest asked for with the version list is this step's if it is this version's;
        // otherwise (a delta version, a failed answer) it is asked for again, as it would be.
        let asked = first_manifest
            .take()
            .and_then(Result::ok)
            .map(|answer| check_manifest(answer, creds, req, provenance));
        let (signed, manifest) = match asked {
            Some(Ok((signed, manifest))) if manifest.version == number => (signed, manifest),
            _ => fetch_manifest(&session, creds, &request, provenance, opts.method).await?,
        };
        // The fetch drops the signed form once it is on disk; a delta's materialization reads
        // it back from there, checked against this hash.
        let signed_hash = blake3::hash(&signed.body);
        let fetch = Fetch { connector, session: session.clone(), signed, manifest: &manifest, wanted };
        let final_dir = match wanted {
            Wanted::Delta => {
                let dir = delta_dir(root, &req.dataset, number);
                std::fs::create_dir_all(root).map_err(io_error(root))?;
                workdir::own_below(root, dir.parent().unwrap_or(root))?;
                dir
            }
            _ => version_dir(root, &req.dataset, number),
        };
        let fetched = fetch.run(root, &final_dir, opts, observer.clone(), cancel.clone()).await?;
        report.fetched_bytes += fetched.fetched_bytes;
        report.wire_bytes += fetched.wire_bytes;
        report.resumed_bytes += fetched.resumed_bytes;
        report.retries += fetched.retries;
        report.steps.push(format!("{} {number}", if wanted == Wanted::Delta { "delta" } else { "table" }));
        if wanted == Wanted::Delta {
            let (base_number, base_manifest) = base
                .take()
                .ok_or_else(|| PullError::NoPath { dataset: req.dataset.clone(), version: number })?;
            let writer = opts.foreign_writer.clone();
            materialize(root, &base_number, &base_manifest, &final_dir, signed_hash, &manifest, writer)
                .await?;
            let _ = std::fs::remove_dir_all(&final_dir);
            observer.event(&PullEvent::Materialized {
                dataset: req.dataset.clone(),
                version: number,
                rows: manifest.row_count,
            });
        }
        made.push(number);
        base = Some((number, manifest));
    }
    // Keep what the directory held before and the target; drop the versions passed through.
    for number in made.into_iter().filter(|n| *n != target) {
        let _ = std::fs::remove_dir_all(version_dir(root, &req.dataset, number));
    }
    if let Some((_, manifest)) = &base {
        report.table_bytes = manifest.table_bytes();
        report.rows = manifest.row_count;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Applies the delta in `delta_dir` to the table of `base` and commits the result as the
/// version of `manifest`, after checking every file against the publisher's table list: by its
/// bytes, or by its rows where this writer differs from the publisher's
/// ([`ferry_tables::proof::check_table`]). `foreign_writer` is [`PullOptions::foreign_writer`].
async fn materialize(
    root: &Path,
    base: &VersionNo,
    base_manifest: &Manifest,
    delta_dir: &Path,
    signed_hash: blake3::Hash,
    manifest: &Manifest,
    foreign_writer: Option<String>,
) -> Result<(), PullError> {
    let dataset = &manifest.dataset;
    let base_dir = version_dir(root, dataset, *base);
    let join = |dir: &Path, names: Vec<String>| names.into_iter().map(|n| dir.join(n)).collect::<Vec<_>>();
    let base_files = join(&base_dir, base_manifest.table.iter().map(|f| f.name.to_string()).collect());
    let by_role = |role| join(delta_dir, manifest.files_with(role).map(|f| f.name.to_string()).collect());
    let (upserts, deletes) = (by_role(FileRole::Upserts), by_role(FileRole::Deletes));
    let out = apply_dir(root, dataset, manifest.version);
    let root_dir = root.to_owned();
    let final_dir = version_dir(root, dataset, manifest.version);
    let keys = manifest.key_columns.clone();
    let opts = WriteOptions {
        foreign_writer,
        ..WriteOptions::for_manifest(manifest.layout, manifest.writer.as_deref())
    };
    let version = manifest.version;
    let signed_path = delta_dir.join(SIGNED_NAME);
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        // Left by an interrupted apply of this version (a link is removed, not followed).
        let _ = std::fs::remove_dir_all(&out);
        workdir::own_below(&root_dir, &out)?;
        let written = ferry_tables::delta::apply(&base_files, &upserts, &deletes, &keys, &out, &opts)
            .map_err(|e| PullError::Materialize { version, detail: e.to_string() })?;
        let mut hashed = Vec::with_capacity(written.len());
        for file in written {
            // Streamed: a table file is up to `rows-per-file` rows, often hundreds of MB.
            let hash = super::commit::hash_file(&file.path)?;
            hashed.push((file, hash));
        }
        let writer = opts.writer();
        let proven = check_table(&hashed, &manifest.table, manifest.writer.as_deref(), &writer).map_err(
            |e| {
                let file = match e {
                    ProofError::File { file, reason } => format!("{file} ({reason})"),
                    count @ ProofError::FileCount { .. } => count.to_string(),
                };
                PullError::MaterializedMismatch { version, file }
            },
        )?;
        if proven == Proven::Rows {
            tracing::info!(
                %version,
                publisher_writer = manifest.writer.as_deref().unwrap_or(""),
                writer,
                "the publisher's Parquet writer differs: the table was proven by its rows and keeps this writer's bytes"
            );
        }
        let stored = std::fs::read(&signed_path).map_err(io_error(&signed_path))?;
        let signed = SignedManifest::decode(&stored)
            .ok()
            .filter(|signed| blake3::hash(&signed.body) == signed_hash)
            .ok_or_else(|| PullError::Materialize {
                version,
                detail: format!("{} is not the manifest the delta was fetched with", signed_path.display()),
            })?;
        write_manifest_and_rename(&out, &final_dir, &signed)
    })
    .await
    .map_err(|e| PullError::Materialize { version, detail: e.to_string() })?
}
