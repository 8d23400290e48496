//! Publishing: an operator of the node's department uploads a CSV or Parquet export with its
//! dataset definition; the node checks it against the definition, writes key-sorted zstd Parquet,
//! describes the files in a manifest, signs it and commits the version to its store.

use super::refusal::is_out_of_space;
use super::{DataService, Refusal};
use crate::data::head::{PRINTS_FILE, Superseded};
use crate::data::store::{LocalFiles, NewVersion, StoredVersion};
use crate::data::version::{ToDescribe, describe_files};
use crate::telemetry::{DiffLabel, ReasonLabel};
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::exchange::{UploadError, UploadEvent, UploadReceiver};
use ferry_proto::manifest::MANIFEST_FORMAT;
use ferry_proto::{DatasetId, DeptId, ShareType};
use ferry_proto::{DeltaCounts, FileRole, Hash32, TableFile, TableLayout, VersionNo};
use ferry_proto::{ErrorCode, Manifest, Message, PublishMode, SourceFormat, VersionKind};
use ferry_tables::canonical::{WriteOptions, WrittenFile};
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::delta::prints::{self, PrintsBody};
use ferry_tables::delta::{DiffBase, StreamDiff, StreamDiffError, diff_stream, tap_channel};
use ferry_tables::source::{PublishError, PublishOptions, SortOptions, write_sorted_parquet_tapped};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// A publish as `PublishBegin` announced it, its definition parsed (nothing looked up yet).
#[derive(Debug, Clone)]
pub struct Upload {
    definition: DatasetDefinition,
    /// The definition as sent, stored with the version.
    text: String,
    format: SourceFormat,
    mode: PublishMode,
    size: u64,
    /// The catalog version the definition was taken from, when the node enforces a catalog.
    catalog_version: Option<u64>,
}

impl Upload {
    /// Parses the dataset definition of a `PublishBegin`.
    pub fn parse(text: String, format: SourceFormat, mode: PublishMode, size: u64) -> Result<Self, Refusal> {
        let definition = DatasetDefinition::parse_toml(&text)
            .map_err(|e| Refusal::new(ErrorCode::InvalidData, format!("dataset definition: {e}")))?;
        Ok(Self { definition, text, format, mode, size, catalog_version: None })
    }

    /// Publishes under the catalog's entry in effect (`catalog_version`, `definition` as TOML)
    /// instead of the uploader's definition: the share type and the information items the export
    /// is checked against come from the catalog, never from the publisher's file.
    pub fn conform_to_catalog(mut self, catalog_version: u64, definition: &str) -> Result<Self, Refusal> {
        let catalogued = DatasetDefinition::parse_toml(definition).map_err(|e| {
            Refusal::new(
                ErrorCode::Internal,
                format!("the catalog's definition of {} does not parse: {e}", self.dataset()),
            )
        })?;
        if catalogued.id != self.definition.id {
            return Err(Refusal::new(ErrorCode::Internal, "the catalog entry is for another dataset"));
        }
        if catalogued.fingerprint() != self.definition.fingerprint() {
            tracing::info!(
                dataset = %catalogued.id, catalog_version,
                "the uploaded definition differs from the catalog's information items; the export is checked against the catalog's"
            );
        }
        self.text = catalogued.to_toml();
        self.definition = catalogued;
        self.catalog_version = Some(catalog_version);
        Ok(self)
    }

    pub fn dataset(&self) -> &DatasetId {
        &self.definition.id
    }

    /// The department the definition says provides the dataset.
    pub fn provider(&self) -> &DeptId {
        &self.definition.provider
    }

    pub fn share_type(&self) -> ShareType {
        self.definition.share_type
    }

    /// Removes what publishes cut short by a crash or a kill left in `<state_dir>/uploads`: their
    /// uploads and the runs their sorts spilled. For the node's start, before any publish runs.
    /// An `uploads` that is not a directory of its own (a link) is left alone: a publish refuses
    /// it anyway. Returns the entries removed.
    pub fn remove_stale(state_dir: &Path) -> usize {
        let uploads = state_dir.join("uploads");
        if !std::fs::symlink_metadata(&uploads).is_ok_and(|m| m.is_dir()) {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(&uploads) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            // A link is removed, never followed.
            let result = match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale upload"),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed uploads and spilled runs of publishes cut short");
        }
        removed
    }
}

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A new directory of this upload's own under `uploads`, which must be a real directory of
    /// the node's user: a link planted there, or in the new directory's place, would send an
    /// operator's upload elsewhere. The new directory is made with `mkdir`, which fails on
    /// anything already in its place.
    fn create(uploads: &Path, dataset: &DatasetId) -> Result<Self, Refusal> {
        if let Some(state_dir) = uploads.parent() {
            std::fs::create_dir_all(state_dir).map_err(internal)?;
        }
        ferry_client::transfer::workdir::own_dir(uploads).map_err(|e| {
            tracing::error!(error = %e, "refusing uploads until the upload directory is a directory of the node's own");
            Refusal::new(ErrorCode::Internal, "node failed: its upload directory is not safe to write")
        })?;
        let dir = uploads.join(format!("{dataset}-{}", rand_suffix()));
        std::fs::create_dir(&dir).map_err(internal)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl DataService {
    /// Receives an authorized upload, writes, diffs, signs and commits its version, and answers
    /// `Published` or `Unchanged`. `by` names the uploader in the log. Returns the bytes received.
    pub async fn publish(
        &self,
        upload: Upload,
        by: &str,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let Upload { definition, text: definition_text, format, mode, size, catalog_version } = upload;
        let max = self.settings.transfer.max_upload;
        if size > max {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("upload of {size} bytes exceeds this node's limit of {max}"),
            ));
        }
        let scratch = Scratch::create(&self.settings.state_dir.join("uploads"), &definition.id)?;
        let source = scratch.0.join("source");
        self.receive_upload(reader, &source, size).await?;
        let job = PublishJob { definition, definition_text, format, mode, by, catalog_version };
        self.commit_upload(job, &scratch, source, writer).await?;
        Ok(size)
    }
}

/// An upload received whole, on its way to a version.
struct PublishJob<'a> {
    definition: DatasetDefinition,
    definition_text: String,
    format: SourceFormat,
    mode: PublishMode,
    by: &'a str,
    catalog_version: Option<u64>,
}

impl DataService {
    async fn commit_upload(
        &self,
        job: PublishJob<'_>,
        scratch: &Scratch,
        source: PathBuf,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let PublishJob { definition, definition_text, format, mode, by, catalog_version } = job;
        // One publish at a time: each diffs against the head the previous one left.
        let _serial = self.publish_lock.lock().await;
        let latest = self.store.version(&definition.id, None).ok();
        let (head_sender, head) = match &latest {
            Some(_) => PendingHead::channel(),
            None => (None, None),
        };
        let layout = TableLayout {
            rows_per_file: self.settings.transfer.rows_per_file as u64,
            ..TableLayout::default()
        };
        let stage = scratch.0.join("stage");
        let job = TableJob {
            node: self.creds.principal().name.clone(),
            sort: SortOptions {
                memory_budget: self.settings.publish.memory_budget,
                spill_dir: Some(scratch.0.join("spill")),
            },
            definition: definition.clone(),
            format,
            mode,
            source,
            scratch: scratch.0.clone(),
            stage: stage.clone(),
            head,
            layout,
            chunk_size: self.settings.transfer.chunk_size,
        };
        let sorting = tokio::task::spawn_blocking(move || job.run());
        // The head is checked by its hashes (or rebuilt) while the sort reads the upload: the
        // diff waits for it only when the sorted rows start to come.
        let head_checked = match (&latest, head_sender) {
            (Some(v), Some(sender)) => {
                let checked = self.head_to_diff_against(v, mode).await;
                // A sort that already failed no longer waits for it.
                let _ = sender.send(checked.as_ref().ok().cloned());
                checked.map(drop)
            }
            _ => Ok(()),
        };
        let tables = sorting.await.map_err(|e| internal(std::io::Error::other(e.to_string())));
        // Without its head the sort was cut: the head's failure is the cause.
        head_checked?;
        let tables = tables??;
        let Some(tables) = tables else {
            let version = latest.map(|v| v.manifest.version).unwrap_or(VersionNo::FIRST);
            tracing::info!(dataset = %definition.id, %version, "published table is unchanged; no new version");
            writer.send(&Message::Unchanged { dataset: definition.id, version }).await?;
            return Ok(());
        };

        let (mut manifest, chunk_hashes) =
            self.new_manifest(&definition, parent_of(&latest), &tables, layout).await?;
        let table_hashes: Vec<[u8; 32]> = manifest.table.iter().map(|f| f.blake3.0).collect();
        manifest.catalog_version = catalog_version;
        manifest.validate().map_err(|e| internal(std::io::Error::other(e.to_string())))?;
        let stored_bytes = manifest.total_bytes();
        let rows = manifest.row_count;
        let kind = manifest.kind;
        let manifest_version = manifest.version;
        // The certificate in force when it signs (it may have been rotated since start-up).
        let (signed, signer) = self.signer.sign_as(manifest.to_json());
        let publisher = manifest.publisher.clone();
        let stored = NewVersion { signed, manifest, signer };
        let node = &self.creds.principal().name;
        let what = format!("{} {manifest_version}", definition.id);
        let full = |e| Refusal::from_store_on(node, &what, e);
        self.store.put_definition(&definition.id, &definition.name, &definition_text).await.map_err(full)?;
        // The new table stays: it becomes the head the next publish diffs against. A table the
        // version stores in a local directory on the stage's filesystem is copied aside for the
        // head (not synced: a head is checked before each use and rebuilt when lost) and the
        // writer's synced files are moved in, where the store would copy them and sync its copy;
        // anywhere else, or if the copy fails, the store copies (or uploads) the files and the
        // head keeps them.
        let table_dir = scratch.0.join("table");
        std::fs::create_dir_all(&table_dir).map_err(internal)?;
        let table_stored = kind == VersionKind::Snapshot
            && self.store.moves_by_rename(&stage)
            && copy_for_head(&tables.table, &table_dir).await;
        let files = if table_stored { LocalFiles::Move } else { LocalFiles::Keep };
        // The chunk hashes are of the bytes the writers wrote: the files are not read again.
        self.store.commit_written(&stage, stored, files, &chunk_hashes).await.map_err(full)?;
        self.announce_commit(&definition.id, manifest_version, publisher);
        // The head moves last: a crash before this leaves a stale head, rebuilt on the next publish.
        if !table_stored {
            for f in &tables.table {
                std::fs::rename(&f.path, table_dir.join(f.name.as_str())).map_err(internal)?;
            }
        }
        if let Some(body) = &tables.prints {
            keep_prints(body, rows, &table_hashes, &table_dir);
        }
        let superseded = match self.heads.install(&definition.id, manifest_version, &table_dir) {
            Ok(superseded) => superseded,
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the head table; the next publish rebuilds it");
                Superseded::default()
            }
        };
        self.metrics.published_versions.inc();
        self.metrics.published_rows.inc_by(rows);
        let version = manifest_version;
        tracing::info!(dataset = %definition.id, %version, ?kind, rows, stored_bytes, by, "published");
        let answered = writer
            .send(&Message::Published { dataset: definition.id, version, rows, bytes: stored_bytes })
            .await;
        // The head before, once the uploader has its answer (and the next publish of this
        // dataset waits for this one: it holds the publish lock).
        let _ = tokio::task::spawn_blocking(move || superseded.remove()).await;
        answered?;
        Ok(())
    }
}

impl DataService {
    /// The head table of `latest`, checked by hash and rebuilt from the store when missing or
    /// damaged (counted by reason).
    /// With it, for a snapshot's diff, its row prints when it kept them whole (a rebuilt head
    /// has none; an append merges and diffs by value).
    async fn head_to_diff_against(
        &self,
        latest: &StoredVersion,
        mode: PublishMode,
    ) -> Result<DiffBase, Refusal> {
        let head = self.heads.ensure(&self.store, latest).await.map_err(|e| {
            tracing::error!(error = %e, "cannot get the head table to diff against");
            Refusal::new(ErrorCode::Internal, format!("node failed: {e}"))
        })?;
        let prints = match head.rebuilt {
            Some(reason) => {
                self.metrics.head_rebuilds.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
                None
            }
            None if mode == PublishMode::Snapshot => self.heads.prints(&latest.manifest).await,
            None => None,
        };
        let by = if prints.is_some() { "prints" } else { "values" };
        self.metrics.publish_diffs.get_or_create(&DiffLabel { by }).inc();
        Ok(DiffBase { files: head.files, prints })
    }

    /// The manifest of the next version of `definition`'s dataset, made of `tables`; whether
    /// the table is stored too follows the publish policy. Beside it, by manifest file, the
    /// chunk hashes its page hashes were made of.
    async fn new_manifest(
        &self,
        definition: &DatasetDefinition,
        parent: Option<VersionNo>,
        tables: &Tables,
        layout: TableLayout,
    ) -> Result<(Manifest, Vec<Option<Vec<Hash32>>>), Refusal> {
        let version = self.store.next_version(&definition.id);
        let table_bytes: u64 = tables.table.iter().map(|f| f.size).sum();
        let delta_bytes: u64 = tables.delta.iter().map(|(f, _)| f.size).sum();
        let policy = &self.settings.publish;
        let since_snapshot = self.store.versions(&definition.id).ok().and_then(|vs| {
            vs.iter()
                .rev()
                .find(|v| v.manifest.kind == VersionKind::Snapshot)
                .map(|s| version.get() - s.manifest.version.get())
        });
        // After a number set aside at start-up (see `store::startup`) the parent is not the number
        // before: consumers chain deltas by number, so the version after the gap is a table.
        let store_snapshot = parent.is_none()
            || parent.and_then(VersionNo::next) != Some(version)
            || since_snapshot.is_none_or(|n| n >= policy.snapshot_every)
            || delta_bytes as f64 > table_bytes as f64 * policy.snapshot_when_delta_over;
        let chunk_size = self.settings.transfer.chunk_size;
        let (table_written, delta_written) = (tables.table.clone(), tables.delta.clone());
        let (table_entries, delta_entries) = tokio::task::spawn_blocking(move || {
            let table_files = table_written.len();
            let files = table_written.into_iter().map(|w| (w, FileRole::Snapshot)).chain(delta_written);
            // The table's chunk hashes only where the version stores it.
            let files = files.map(|(w, role)| {
                let chunks = store_snapshot || role != FileRole::Snapshot;
                ToDescribe { path: w.path, name: w.name, rows: w.rows, role, chunks, written: Some(w.hashes) }
            });
            // From the hashes the writers took as they wrote; what they lack is read, the table
            // and the delta together, on every core.
            let mut table = describe_files(files.collect(), chunk_size)?;
            let delta = table.split_off(table_files);
            Ok::<_, std::io::Error>((table, delta))
        })
        .await
        .map_err(|e| internal(std::io::Error::other(e.to_string())))?
        .map_err(internal)?;
        let table: Vec<TableFile> = table_entries
            .iter()
            .map(|d| &d.entry)
            .zip(&tables.table)
            .map(|(f, w)| TableFile {
                name: f.name.clone(),
                size: f.size,
                rows: f.rows,
                blake3: f.blake3,
                rows_blake3: w.rows_blake3.map(|h| Hash32(*h.as_bytes())),
            })
            .collect();
        let mut described = if store_snapshot { table_entries } else { Vec::new() };
        described.extend(delta_entries);
        let (files, chunk_hashes) = described.into_iter().map(|d| (d.entry, d.chunk_hashes)).unzip();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataset: definition.id.clone(),
            version,
            kind: if store_snapshot { VersionKind::Snapshot } else { VersionKind::Delta },
            parent,
            publisher: self.creds.principal().dept.clone(),
            created_unix_ms: now_unix_ms(),
            schema_fingerprint: definition.fingerprint(),
            definition_version: definition.definition_version,
            share_type: definition.share_type,
            catalog_version: None,
            key_columns: definition.key_columns().iter().map(|c| c.name.clone()).collect(),
            layout,
            writer: Some(WriteOptions::from(layout).writer()),
            row_count: table.iter().map(|f| f.rows).sum(),
            chunk_size,
            files,
            table,
            delta: tables.counts,
            derived_from: None,
        };
        Ok((manifest, chunk_hashes))
    }
}

/// Copies the table's files into `table_dir`, the next head, on as many threads as the machine
/// has cores; false (and a warning) if that fails: the files then stay where they are for the
/// store to copy, and a partial copy is replaced when they are moved into `table_dir` after
/// the commit.
async fn copy_for_head(table: &[WrittenFile], table_dir: &Path) -> bool {
    let copies: Vec<(PathBuf, PathBuf)> =
        table.iter().map(|f| (f.path.clone(), table_dir.join(f.name.as_str()))).collect();
    let copied = tokio::task::spawn_blocking(move || {
        let threads =
            std::thread::available_parallelism().map_or(1, usize::from).clamp(1, copies.len().max(1));
        let per_thread = copies.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let each: Vec<_> = copies
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().try_for_each(|(from, to)| std::fs::copy(from, to).map(drop))
                    })
                })
                .collect();
            each.into_iter().try_for_each(|t| {
                t.join().unwrap_or_else(|_| Err(std::io::Error::other("a copying thread panicked")))
            })
        })
    });
    match copied.await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot copy the new table for the head; the store copies it instead");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "the copy of the new table for the head failed; the store copies it instead");
            false
        }
    }
}

fn parent_of(latest: &Option<std::sync::Arc<crate::data::store::StoredVersion>>) -> Option<VersionNo> {
    latest.as_ref().map(|v| v.manifest.version)
}

/// Seals the new table's row prints and keeps them in `table_dir` for the head (best effort:
/// without them the next publish diffs by value).
fn keep_prints(body: &PrintsBody, rows: u64, table_hashes: &[[u8; 32]], table_dir: &Path) {
    let kept = if body.rows != rows {
        Err(format!("{} prints for a table of {rows} rows", body.rows))
    } else {
        prints::seal(body, &prints::binding(table_hashes)).map_err(|e| e.to_string()).and_then(|()| {
            std::fs::rename(&body.path, table_dir.join(PRINTS_FILE)).map_err(|e| e.to_string())
        })
    };
    if let Err(e) = kept {
        tracing::warn!(error = %e, "cannot keep the new table's row prints; the next publish diffs by value");
    }
}

/// The new table and its delta, written into the stage directory, and the table's row prints.
struct Tables {
    table: Vec<WrittenFile>,
    delta: Vec<(WrittenFile, FileRole)>,
    counts: Option<DeltaCounts>,
    prints: Option<PrintsBody>,
}

/// Batches of the sorted table queued between its writer and the diff fed from it.
const TAP_BATCHES: usize = 4;

/// The head table a publish diffs against, as the node's check of it (or its rebuild) gives it
/// while the sort already runs: the sort reads and spills the upload meanwhile, and only the
/// diff (or the append's merge) waits for it.
/// (In a mutex so that the job may be shared with the diff's thread; one thread waits.)
struct PendingHead(std::sync::Mutex<std::sync::mpsc::Receiver<Option<DiffBase>>>);

impl PendingHead {
    /// A head still being checked, and where its files (`None`: the check failed) are sent.
    #[allow(clippy::type_complexity)]
    fn channel() -> (Option<std::sync::mpsc::SyncSender<Option<DiffBase>>>, Option<Self>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        (Some(sender), Some(Self(std::sync::Mutex::new(receiver))))
    }

    /// A head whose files are known already.
    #[cfg(test)]
    fn ready(files: Vec<PathBuf>) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let _ = sender.send(Some(DiffBase { files, prints: None }));
        Self(std::sync::Mutex::new(receiver))
    }

    /// Waits for the head's files; `None` when its check failed (the caller answers with that
    /// failure, not with what the sort made of it).
    fn wait(&self) -> Option<DiffBase> {
        let receiver = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        receiver.recv().ok().flatten()
    }
}

/// The answer while the head's own failure is on its way to the caller.
fn no_head() -> Refusal {
    internal(std::io::Error::other("the head table to diff against could not be had"))
}

/// The blocking part of a publish: sort the export, merge appended rows, diff against the head.
struct TableJob {
    /// The node's name, for an out-of-space answer.
    node: String,
    /// The sort's memory budget, and its spill directory inside the upload's scratch directory.
    sort: SortOptions,
    definition: DatasetDefinition,
    format: SourceFormat,
    mode: PublishMode,
    source: PathBuf,
    scratch: PathBuf,
    stage: PathBuf,
    head: Option<PendingHead>,
    layout: TableLayout,
    /// The node's transfer chunk size: the table's writer hashes each file's chunks as it
    /// writes them, for the manifest.
    chunk_size: u32,
}

impl TableJob {
    /// Sorts the upload into `out_dir` within the node's publish memory budget.
    fn write_sorted(&self, out_dir: &Path, opts: &PublishOptions) -> Result<Vec<WrittenFile>, PublishError> {
        let source = &self.source;
        write_sorted_parquet_tapped(&self.definition, self.format, source, out_dir, opts, &self.sort, &|| {
            None
        })
    }

    /// Sorts the upload into the stage and diffs it against `head` as it is written: the diff
    /// (on a thread of its own) is fed the table's rows by the writer's tap, so the new table is
    /// never read back. The delta is the bytes `delta::diff` of the written files gives.
    /// The head may still be being checked: the diff waits for it, the sort does not.
    fn sort_and_diff(
        &self,
        head: &PendingHead,
        keys: &[String],
        opts: &PublishOptions,
    ) -> Result<(Vec<WrittenFile>, StreamDiff), Refusal> {
        let (sender, receiver) = tap_channel(TAP_BATCHES);
        let (schema, write) = (self.definition.arrow_schema(), opts.write_options());
        let prints_to = self.scratch.join(PRINTS_FILE);
        let diff = move || {
            // Without a head the receiver goes: the writer's tap fails and the sort stops.
            let head = head.wait().ok_or_else(no_head)?;
            Ok::<_, Refusal>(diff_stream(&head, receiver, schema, keys, &self.stage, &write, &prints_to))
        };
        std::thread::scope(|scope| {
            let differ = std::thread::Builder::new()
                .name("ferry-publish-diff".to_owned())
                .spawn_scoped(scope, diff)
                .map_err(internal)?;
            let (source, tap) = (&self.source, || Some(sender.tap()));
            let sorted = parse_upload(|| {
                write_sorted_parquet_tapped(
                    &self.definition,
                    self.format,
                    source,
                    &self.stage,
                    opts,
                    &self.sort,
                    &tap,
                )
            });
            // The diff waits for the writers' taps: none may outlive the sort.
            drop(sender);
            let diffed =
                differ.join().map_err(|_| internal(std::io::Error::other("the diff thread panicked")))??;
            match (sorted?, diffed) {
                (Ok(table), Ok(delta)) => Ok((table, delta)),
                // A diff that failed first stops the writer: its error is the cause.
                (_, Err(StreamDiffError::Table(e))) => {
                    Err(Refusal::new(ErrorCode::InvalidData, e.to_string()))
                }
                (Err(e), _) => Err(self.refusal(e)),
                (Ok(_), Err(StreamDiffError::Cut)) => {
                    Err(internal(std::io::Error::other("the diff lost the sorted table's end")))
                }
            }
        })
    }

    /// The answer to a failed sort: the export's faults are `InvalidData` in their own words; a
    /// full state directory (spilled runs, the new table) is `OutOfSpace`; any other failure of
    /// the node's disk is the node's (`Internal`).
    fn refusal(&self, e: PublishError) -> Refusal {
        if is_out_of_space(&e) {
            return Refusal::out_of_space(&self.node, &format!("publishing {}", self.definition.id), &e);
        }
        match e {
            PublishError::Io { .. } => Refusal::internal("sorting an upload", &e),
            e => Refusal::new(ErrorCode::InvalidData, e.to_string()),
        }
    }

    /// `None` when the table equals the head.
    fn run(self) -> Result<Option<Tables>, Refusal> {
        let invalid = |e: &dyn std::fmt::Display| Refusal::new(ErrorCode::InvalidData, e.to_string());
        let opts = WriteOptions::from(self.layout);
        let publish_opts = PublishOptions {
            rows_per_file: opts.rows_per_file,
            row_group_rows: opts.row_group_rows,
            zstd_level: opts.zstd_level,
            chunk_hashes: Some(self.chunk_size),
        };
        let keys: Vec<String> = self.definition.key_columns().iter().map(|c| c.name.clone()).collect();
        std::fs::create_dir_all(&self.stage).map_err(internal)?;
        let mut prints = None;
        let (table, delta) = match (self.mode, &self.head) {
            (PublishMode::Snapshot, Some(head)) => {
                let (table, diffed) = self.sort_and_diff(head, &keys, &publish_opts)?;
                prints = diffed.prints.map_err(|e| {
                    tracing::warn!(error = %e, "the new table's row prints were not written; the next publish diffs by value");
                }).ok();
                (table, Some(diffed.delta))
            }
            (PublishMode::Snapshot, None) | (PublishMode::Append, None) => {
                let table = parse_upload(|| self.write_sorted(&self.stage, &publish_opts))?
                    .map_err(|e| self.refusal(e))?;
                (table, None)
            }
            (PublishMode::Append, Some(head)) => {
                let rows_dir = self.scratch.join("appended");
                std::fs::create_dir_all(&rows_dir).map_err(internal)?;
                let rows = parse_upload(|| self.write_sorted(&rows_dir, &publish_opts))?
                    .map_err(|e| self.refusal(e))?;
                let head = head.wait().ok_or_else(no_head)?;
                let head = head.files.as_slice();
                let paths: Vec<PathBuf> = rows.into_iter().map(|w| w.path).collect();
                let table = ferry_tables::delta::append(head, &paths, &keys, &self.stage, &opts)
                    .map_err(|e| invalid(&e))?;
                let new: Vec<PathBuf> = table.iter().map(|w| w.path.clone()).collect();
                let delta = ferry_tables::delta::diff(head, &new, &keys, &self.stage, &opts)
                    .map_err(|e| invalid(&e))?;
                (table, Some(delta))
            }
        };
        let Some(delta) = delta else {
            return Ok(Some(Tables { table, delta: Vec::new(), counts: None, prints }));
        };
        if delta.stats.is_empty() {
            return Ok(None);
        }
        let counts = DeltaCounts {
            inserted: delta.stats.inserted,
            updated: delta.stats.updated,
            deleted: delta.stats.deleted,
        };
        let files = delta
            .upserts
            .into_iter()
            .map(|w| (w, FileRole::Upserts))
            .chain(delta.deletes.into_iter().map(|w| (w, FileRole::Deletes)))
            .collect();
        Ok(Some(Tables { table, delta: files, counts: Some(counts), prints }))
    }
}

impl DataService {
    /// Takes the upload's frames (`ferry_proto::exchange::upload`) into `path` until
    /// `PublishEnd` has checked their total and BLAKE3.
    async fn receive_upload(&self, reader: &mut FrameReader, path: &Path, size: u64) -> Result<(), Refusal> {
        // A new file (O_EXCL) in the scratch directory, never through a link.
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(ferry_client::transfer::workdir::NO_FOLLOW)
            .open(path)
            .await
            .map_err(internal)?;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut upload = UploadReceiver::new(size);
        loop {
            let Some(msg) = reader.next().await? else {
                return Err(upload_refusal(upload.finish().err().unwrap_or(UploadError::AfterEnd)));
            };
            match upload.handle(msg) {
                Ok(UploadEvent::Data(data)) => {
                    file.write_all(&data).await.map_err(|e| self.upload_io(e))?;
                    self.metrics.received_bytes.inc_by(data.len() as u64);
                }
                Ok(UploadEvent::Complete { .. }) => {
                    file.flush().await.map_err(|e| self.upload_io(e))?;
                    return Ok(());
                }
                Err(e) => {
                    if e == UploadError::HashMismatch {
                        self.metrics.verify_failures.inc();
                    }
                    return Err(upload_refusal(e));
                }
            }
        }
    }
}

/// Runs a reader of the operator's upload (Parquet, Arrow IPC in its metadata, CSV). The upload
/// is parsed before any hash protects it, and a reader that panics on a malformed file (as
/// parquet/arrow 57 did on inputs fuzzing found) must not end the request as a node failure:
/// the panic is caught, logged as an incident, and answered `BadRequest`, "the upload could not
/// be parsed". The node goes on serving (the publish runs on a blocking thread of its own).
fn parse_upload<T>(parse: impl FnOnce() -> T) -> Result<T, Refusal> {
    let guarded = || {
        #[cfg(test)]
        tests::maybe_panic_in_parser();
        parse()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(guarded)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Refusal::with_incident(
            ErrorCode::BadRequest,
            "the upload could not be parsed",
            "parsing an upload (the reader panicked)",
            &detail,
        )
    })
}

impl DataService {
    /// A write of an upload into the state directory failed: a full disk is said to be one.
    fn upload_io(&self, e: std::io::Error) -> Refusal {
        match is_out_of_space(&e) {
            true => Refusal::out_of_space(&self.creds.principal().name, "the upload", &e),
            false => internal(e),
        }
    }
}

fn upload_refusal(e: UploadError) -> Refusal {
    Refusal::new(e.code(), e.to_string())
}

fn internal(e: std::io::Error) -> Refusal {
    tracing::error!(error = %e, "publish failed on the node");
    Refusal::new(ErrorCode::Internal, format!("node failed: {e}"))
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn rand_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests;
