//! Publishing: an operator of the node's department uploads a CSV or Parquet export with its
//! dataset definition; the node checks it against the definition, writes key-sorted zstd Parquet,
//! describes the files in a manifest, signs it and commits the version to its store.

use super::handler::{Refusal, denied};
use crate::authz::Access;
use crate::data::store::{LocalFiles, NewVersion};
use crate::data::version::describe_file;
use crate::node::NodeState;
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::Principal;
use ferry_proto::manifest::MANIFEST_FORMAT;
use ferry_proto::{DeltaCounts, FileEntry, FileRole, TableFile, TableLayout, VersionNo};
use ferry_proto::{ErrorCode, Manifest, Message, PublishMode, SourceFormat, VersionKind};
use ferry_tables::canonical::{WriteOptions, WrittenFile};
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::source::{PublishOptions, write_sorted_parquet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn publish(
    state: &Arc<NodeState>,
    peer: &Principal,
    definition_text: String,
    format: SourceFormat,
    mode: PublishMode,
    size: u64,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<(), Refusal> {
    let definition = DatasetDefinition::parse_toml(&definition_text)
        .map_err(|e| Refusal::new(ErrorCode::InvalidData, format!("dataset definition: {e}")))?;
    let access = Access::Publish { dataset: &definition.id, provider: &definition.provider };
    state.authz.authorize(peer, access).map_err(|d| denied(state, peer, d))?;
    let max = state.config.transfer.max_upload;
    if size > max {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("upload of {size} bytes exceeds this node's limit of {max}"),
        ));
    }
    let scratch_dir =
        state.config.state_dir.join("uploads").join(format!("{}-{}", definition.id, rand_suffix()));
    tokio::fs::create_dir_all(&scratch_dir).await.map_err(internal)?;
    let scratch = Scratch(scratch_dir);
    let source = scratch.0.join("source");
    receive_upload(state, reader, &source, size).await?;

    // One publish at a time: each diffs against the head the previous one left.
    let _serial = state.publish_lock.lock().await;
    let latest = state.store.version(&definition.id, None).ok();
    let head = match &latest {
        Some(v) => Some(state.heads.ensure(&state.store, v).await.map_err(|e| {
            tracing::error!(error = %e, "cannot get the head table to diff against");
            Refusal::new(ErrorCode::Internal, format!("node failed: {e}"))
        })?),
        None => None,
    };
    let layout =
        TableLayout { rows_per_file: state.config.transfer.rows_per_file as u64, ..TableLayout::default() };
    let stage = scratch.0.join("stage");
    let job = TableJob {
        definition: definition.clone(),
        format,
        mode,
        source,
        scratch: scratch.0.clone(),
        stage: stage.clone(),
        head,
        layout,
    };
    let tables = tokio::task::spawn_blocking(move || job.run())
        .await
        .map_err(|e| internal(std::io::Error::other(e.to_string())))??;
    let Some(tables) = tables else {
        let version = latest.map(|v| v.manifest.version).unwrap_or(VersionNo::FIRST);
        tracing::info!(dataset = %definition.id, %version, "published table is unchanged; no new version");
        writer.send(&Message::Unchanged { dataset: definition.id, version }).await?;
        return Ok(());
    };

    let version = state.store.next_version(&definition.id);
    let parent = latest.as_ref().map(|v| v.manifest.version);
    let table_bytes: u64 = tables.table.iter().map(|f| f.size).sum();
    let delta_bytes: u64 = tables.delta.iter().map(|(f, _)| f.size).sum();
    let policy = &state.config.publish;
    let since_snapshot = state.store.versions(&definition.id).ok().and_then(|vs| {
        vs.iter()
            .rev()
            .find(|v| v.manifest.kind == VersionKind::Snapshot)
            .map(|s| version.get() - s.manifest.version.get())
    });
    let store_snapshot = parent.is_none()
        || since_snapshot.is_none_or(|n| n >= policy.snapshot_every)
        || delta_bytes as f64 > table_bytes as f64 * policy.snapshot_when_delta_over;
    let chunk_size = state.config.transfer.chunk_size;
    let (table_written, delta_written) = (tables.table.clone(), tables.delta.clone());
    let (table_entries, delta_entries) = tokio::task::spawn_blocking(move || {
        let describe = |files: Vec<(WrittenFile, FileRole)>| {
            files
                .into_iter()
                .map(|(w, role)| {
                    describe_file(&w.path, w.name, w.rows, chunk_size).map(|e| FileEntry { role, ..e })
                })
                .collect::<std::io::Result<Vec<_>>>()
        };
        let table = describe(table_written.into_iter().map(|w| (w, FileRole::Snapshot)).collect())?;
        let delta = describe(delta_written)?;
        Ok::<_, std::io::Error>((table, delta))
    })
    .await
    .map_err(|e| internal(std::io::Error::other(e.to_string())))?
    .map_err(internal)?;
    let table: Vec<TableFile> = table_entries
        .iter()
        .map(|f| TableFile { name: f.name.clone(), size: f.size, rows: f.rows, blake3: f.blake3 })
        .collect();
    let mut files = if store_snapshot { table_entries } else { Vec::new() };
    files.extend(delta_entries);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        dataset: definition.id.clone(),
        version,
        kind: if store_snapshot { VersionKind::Snapshot } else { VersionKind::Delta },
        parent,
        publisher: state.creds.principal().dept.clone(),
        created_unix_ms: now_unix_ms(),
        schema_fingerprint: definition.fingerprint(),
        definition_version: definition.definition_version,
        share_type: definition.share_type,
        key_columns: definition.key_columns().iter().map(|c| c.name.clone()).collect(),
        layout,
        row_count: table.iter().map(|f| f.rows).sum(),
        chunk_size,
        files,
        table,
        delta: tables.counts,
    };
    manifest.validate().map_err(|e| internal(std::io::Error::other(e.to_string())))?;
    let stored_bytes = manifest.total_bytes();
    let rows = manifest.row_count;
    let kind = manifest.kind;
    let signed = state.signer.sign(manifest.to_json());
    let stored = NewVersion { signed, manifest, signer: state.creds.principal().clone() };
    state.store.put_definition(&definition.id, &definition.name, &definition_text).await?;
    // The new table stays: it becomes the head the next publish diffs against.
    state.store.commit_version(&stage, stored, LocalFiles::Keep).await?;
    // The head moves last: a crash before this leaves a stale head, rebuilt on the next publish.
    let table_dir = scratch.0.join("table");
    std::fs::create_dir_all(&table_dir).map_err(internal)?;
    for f in &tables.table {
        std::fs::rename(&f.path, table_dir.join(f.name.as_str())).map_err(internal)?;
    }
    if let Err(e) = state.heads.install(&definition.id, version, &table_dir) {
        tracing::warn!(error = %e, "cannot keep the head table; the next publish rebuilds it");
    }
    state.metrics.published_versions.inc();
    state.metrics.published_rows.inc_by(rows);
    tracing::info!(dataset = %definition.id, %version, ?kind, rows, stored_bytes, delta_bytes, table_bytes, by = %peer.name, "published");
    writer.send(&Message::Published { dataset: definition.id, version, rows, bytes: stored_bytes }).await?;
    Ok(())
}

/// The new table and its delta, written into the stage directory.
struct Tables {
    table: Vec<WrittenFile>,
    delta: Vec<(WrittenFile, FileRole)>,
    counts: Option<DeltaCounts>,
}

/// The blocking part of a publish: sort the export, merge appended rows, diff against the head.
struct TableJob {
    definition: DatasetDefinition,
    format: SourceFormat,
    mode: PublishMode,
    source: PathBuf,
    scratch: PathBuf,
    stage: PathBuf,
    head: Option<Vec<PathBuf>>,
    layout: TableLayout,
}

impl TableJob {
    /// `None` when the table equals the head.
    fn run(self) -> Result<Option<Tables>, Refusal> {
        let invalid = |e: &dyn std::fmt::Display| Refusal::new(ErrorCode::InvalidData, e.to_string());
        let opts = WriteOptions::from(self.layout);
        let publish_opts = PublishOptions {
            rows_per_file: opts.rows_per_file,
            row_group_rows: opts.row_group_rows,
            zstd_level: opts.zstd_level,
        };
        let keys: Vec<String> = self.definition.key_columns().iter().map(|c| c.name.clone()).collect();
        std::fs::create_dir_all(&self.stage).map_err(internal)?;
        let table = match (self.mode, &self.head) {
            (PublishMode::Snapshot, _) | (PublishMode::Append, None) => {
                write_sorted_parquet(&self.definition, self.format, &self.source, &self.stage, &publish_opts)
                    .map_err(|e| invalid(&e))?
            }
            (PublishMode::Append, Some(head)) => {
                let rows_dir = self.scratch.join("appended");
                std::fs::create_dir_all(&rows_dir).map_err(internal)?;
                let rows = write_sorted_parquet(
                    &self.definition,
                    self.format,
                    &self.source,
                    &rows_dir,
                    &publish_opts,
                )
                .map_err(|e| invalid(&e))?;
                let paths: Vec<PathBuf> = rows.into_iter().map(|w| w.path).collect();
                ferry_tables::delta::append(head, &paths, &keys, &self.stage, &opts)
                    .map_err(|e| invalid(&e))?
            }
        };
        let Some(head) = &self.head else {
            return Ok(Some(Tables { table, delta: Vec::new(), counts: None }));
        };
        let new: Vec<PathBuf> = table.iter().map(|w| w.path.clone()).collect();
        let delta =
            ferry_tables::delta::diff(head, &new, &keys, &self.stage, &opts).map_err(|e| invalid(&e))?;
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
        Ok(Some(Tables { table, delta: files, counts: Some(counts) }))
    }
}

async fn receive_upload(
    state: &NodeState,
    reader: &mut FrameReader,
    path: &Path,
    size: u64,
) -> Result<(), Refusal> {
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(path).await.map_err(internal)?);
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    loop {
        match reader.next().await? {
            Some(Message::PublishData { data }) => {
                received += data.len() as u64;
                if received > size {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!("upload exceeds the announced {size} bytes"),
                    ));
                }
                hasher.update(&data);
                file.write_all(&data).await.map_err(internal)?;
                state.metrics.received_bytes.inc_by(data.len() as u64);
            }
            Some(Message::PublishEnd { blake3 }) => {
                if received != size {
                    return Err(Refusal::new(
                        ErrorCode::InvalidData,
                        format!("upload has {received} bytes, {size} announced"),
                    ));
                }
                if hasher.finalize().as_bytes() != &blake3 {
                    state.metrics.verify_failures.inc();
                    return Err(Refusal::new(ErrorCode::InvalidData, "upload does not match its BLAKE3"));
                }
                file.flush().await.map_err(internal)?;
                return Ok(());
            }
            Some(other) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("expected PublishData or PublishEnd, got {other:?}")
                        .chars()
                        .take(200)
                        .collect::<String>(),
                ));
            }
            None => return Err(Refusal::new(ErrorCode::BadRequest, "upload ended without PublishEnd")),
        }
    }
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
