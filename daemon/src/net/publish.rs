//! Publishing: an operator of the node's department uploads a CSV or Parquet export with its
//! dataset definition; the node checks it against the definition, writes key-sorted zstd Parquet,
//! describes the files in a manifest, signs it and commits the version to its store.

use super::handler::{Refusal, denied};
use crate::authz::Access;
use crate::data::store::StoredVersion;
use crate::data::version::describe_file;
use crate::node::NodeState;
use ferry_client::identity::PeerIdentity;
use ferry_client::wire::{FrameReader, FrameWriter};
use ferry_proto::manifest::MANIFEST_FORMAT;
use ferry_proto::{ErrorCode, Manifest, Message, PublishMode, SourceFormat, VersionKind};
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
    peer: &PeerIdentity,
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
    if mode == PublishMode::Append {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "append publishing needs row-level deltas, which this node version does not have; publish the whole table",
        ));
    }
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

    let out_dir = scratch.0.join("out");
    let opts =
        PublishOptions { rows_per_file: state.config.transfer.rows_per_file, ..PublishOptions::default() };
    let def = definition.clone();
    let src = source.clone();
    let out = out_dir.clone();
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&out)?;
        Ok::<_, std::io::Error>(write_sorted_parquet(&def, format, &src, &out, &opts))
    })
    .await
    .map_err(|e| internal(std::io::Error::other(e.to_string())))?
    .map_err(internal)?
    .map_err(|e| Refusal::new(ErrorCode::InvalidData, e.to_string()))?;

    let version = state.store.next_version(&definition.id);
    let parent = state.store.version(&definition.id, None).ok().map(|v| v.manifest.version);
    let chunk_size = state.config.transfer.chunk_size;
    let files = tokio::task::spawn_blocking(move || {
        written
            .into_iter()
            .map(|w| describe_file(&w.path, w.name, w.rows, chunk_size))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| internal(std::io::Error::other(e.to_string())))?
    .map_err(internal)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        dataset: definition.id.clone(),
        version,
        kind: VersionKind::Snapshot,
        parent,
        publisher: state.creds.identity().dept.clone(),
        created_unix_ms: now_unix_ms(),
        schema_fingerprint: definition.fingerprint(),
        definition_version: definition.definition_version,
        share_type: definition.share_type,
        row_count: files.iter().map(|f| f.rows).sum(),
        chunk_size,
        files,
    };
    let bytes = manifest.total_bytes();
    let rows = manifest.row_count;
    let signed = state.signer.sign(manifest.to_json());
    let stored = StoredVersion { signed, manifest, signer: state.creds.identity().clone() };
    state.store.put_definition(&definition.id, &definition.name, &definition_text).await?;
    state.store.commit_version(&out_dir, stored).await?;
    state.metrics.published_versions.inc();
    state.metrics.published_rows.inc_by(rows);
    tracing::info!(dataset = %definition.id, %version, rows, bytes, by = %peer.name, "published");
    writer.send(&Message::Published { dataset: definition.id, version, rows, bytes }).await?;
    Ok(())
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
