//! One request stream: read the request frame, check it with the authorizer, answer.

use crate::authz::{Access, Denial};
use crate::data::store::{StoreError, StoredVersion};
use crate::node::NodeState;
use crate::telemetry::{Direction, DirectionLabel, ReasonLabel};
use bytes::Bytes;
use ferry_net::wire::{FrameReader, FrameWriter, WireError};
use ferry_proto::Principal;
use ferry_proto::{
    ChunkEncoding, DatasetId, ErrorCode, FileRole, Manifest, Message, VersionNo, VersionSummary,
};
use std::sync::Arc;
use std::time::Instant;

/// An error answer: code and message for the peer.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NoDataset(_) | StoreError::NoVersion(..) | StoreError::NoChunk { .. } => {
                ErrorCode::NotFound
            }
            StoreError::Exists { .. } => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        };
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "storage failure while answering a request");
        }
        Self::new(code, e.to_string())
    }
}

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Self {
        Self::new(ErrorCode::BadRequest, e.to_string())
    }
}

/// Counts and logs a denial and turns it into an answer.
pub fn denied(state: &NodeState, peer: &Principal, denial: Denial) -> Refusal {
    state.metrics.denials.get_or_create(&ReasonLabel { reason: denial.reason }).inc();
    tracing::warn!(peer = %peer.dept, role = %peer.role, reason = denial.reason, "denied: {}", denial.message);
    Refusal::new(ErrorCode::PermissionDenied, denial.message)
}

pub async fn handle_stream(
    state: Arc<NodeState>,
    peer: Arc<Principal>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut reader = FrameReader::new(recv);
    let mut writer = FrameWriter::new(send);
    let request = match reader.next().await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(e) => {
            let _ =
                writer.send(&Message::Error { code: ErrorCode::BadRequest, message: e.to_string() }).await;
            let _ = writer.finish();
            return;
        }
    };
    let result = dispatch(&state, &peer, request, &mut reader, &mut writer).await;
    if let Err(refusal) = result {
        let _ = writer.send(&Message::Error { code: refusal.code, message: refusal.message }).await;
    }
    let _ = writer.finish();
}

async fn dispatch(
    state: &Arc<NodeState>,
    peer: &Principal,
    request: Message,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<(), Refusal> {
    match request {
        Message::Hello { minor, agent } => {
            state.metrics.request("hello");
            tracing::debug!(peer = %peer.dept, minor, %agent, "hello");
            let ack = Message::HelloAck {
                node: state.config.node_name.clone(),
                node_dept: state.creds.principal().dept.clone(),
                peer_dept: peer.dept.clone(),
                peer_role: peer.role,
            };
            Ok(writer.send(&ack).await?)
        }
        Message::ListDatasets => {
            state.metrics.request("list");
            state.authz.authorize(peer, Access::List).map_err(|d| denied(state, peer, d))?;
            Ok(writer.send(&Message::DatasetList { datasets: state.store.list() }).await?)
        }
        Message::ListVersions { dataset } => {
            state.metrics.request("versions");
            readable(state, peer, &dataset, None)?;
            let versions = state.store.versions(&dataset)?.iter().map(|v| summary(&v.manifest)).collect();
            Ok(writer.send(&Message::VersionList { dataset, versions }).await?)
        }
        Message::GetManifest { dataset, version } => {
            state.metrics.request("manifest");
            let stored = readable(state, peer, &dataset, version)?;
            // Held against garbage collection while the stored form is read back.
            let _lease = state.store.lease(&stored.manifest.dataset, stored.manifest.version)?;
            let signed = state.store.signed_manifest(&stored).await?;
            Ok(writer.send_stored_manifest(signed).await?)
        }
        Message::GetChunks { dataset, version, file, first, count, accept_zstd } => {
            state.metrics.request("chunks");
            let stored = readable(state, peer, &dataset, Some(version))?;
            // Garbage collection leaves the version alone while its chunks are read.
            let _lease = state.store.lease(&dataset, version)?;
            serve_chunks(state, &stored, file, first, count, accept_zstd, writer).await
        }
        Message::PublishBegin { definition, format, mode, size } => {
            state.metrics.request("publish");
            super::publish::publish(state, peer, definition, format, mode, size, reader, writer).await
        }
        Message::Replicate { peer: from, dataset, version } => {
            state.metrics.request("replicate");
            state.authz.authorize(peer, Access::Replicate).map_err(|d| denied(state, peer, d))?;
            super::replicate::replicate(state, &from, dataset, version, writer).await
        }
        other => {
            state.metrics.request("other");
            let name = ferry_net::conn::message_name(&other);
            Err(Refusal::new(ErrorCode::BadRequest, format!("{name} is not a request")))
        }
    }
}

/// What `ListVersions` says of one stored version.
pub fn summary(m: &ferry_proto::Manifest) -> VersionSummary {
    VersionSummary {
        version: m.version,
        kind: m.kind,
        parent: m.parent,
        rows: m.row_count,
        delta_bytes: m.delta_bytes(),
        snapshot_bytes: m.bytes_with(FileRole::Snapshot),
    }
}

/// Looks a version up and checks the peer may read it.
fn readable(
    state: &NodeState,
    peer: &Principal,
    dataset: &DatasetId,
    version: Option<VersionNo>,
) -> Result<Arc<StoredVersion>, Refusal> {
    let stored = state.store.version(dataset, version)?;
    let access = Access::Read {
        dataset,
        share_type: stored.manifest.share_type,
        publisher: &stored.manifest.publisher,
    };
    state.authz.authorize(peer, access).map_err(|d| denied(state, peer, d))?;
    Ok(stored)
}

/// Gauge guard: counts an active transfer while alive.
struct Active<'a>(&'a NodeState, Direction);

impl<'a> Active<'a> {
    fn new(state: &'a NodeState, direction: Direction) -> Self {
        state.metrics.active_transfers.get_or_create(&DirectionLabel { direction }).inc();
        Self(state, direction)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.metrics.active_transfers.get_or_create(&DirectionLabel { direction: self.1 }).dec();
    }
}

async fn serve_chunks(
    state: &NodeState,
    stored: &StoredVersion,
    file: u32,
    first: u32,
    count: u32,
    accept_zstd: bool,
    writer: &mut FrameWriter,
) -> Result<(), Refusal> {
    let m = &stored.manifest;
    let entry = m.files.get(file as usize).ok_or_else(|| {
        Refusal::new(ErrorCode::NotFound, format!("{} {} has no file number {file}", m.dataset, m.version))
    })?;
    let chunks = m.chunk_count(entry.size);
    let end = u64::from(first) + u64::from(count);
    if count == 0 || end > chunks {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("chunks {first}..{end} are outside file {} ({chunks} chunks)", entry.name),
        ));
    }
    let _active = Active::new(state, Direction::Serve);
    let started = Instant::now();
    // The hashes the puller checks these chunks against, a page at a time, each checked here
    // against the manifest first.
    for page in Manifest::page_of(first)..=Manifest::page_of(first + (count - 1)) {
        let hashes = state.store.read_chunk_hashes(stored, file, page).await?;
        writer.send(&Message::ChunkHashes { file, page, hashes }).await?;
    }
    let mut try_zstd = accept_zstd;
    for index in first..first + count {
        if *state.draining.borrow() {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "node is shutting down; resume from another chunk later",
            ));
        }
        // Room in the node-wide budget first, so that a node serving many peers holds a bounded
        // number of chunks however many answers are running.
        let room = m.chunk_span(entry, index).map_or(0, |(_, len)| len as usize);
        let reservation = state.serve_budget.reserve(room).await;
        let raw = state.store.read_chunk(stored, file, index).await?;
        let raw_len = raw.len() as u32;
        let (encoding, data) = if try_zstd {
            match compress(raw.clone()).await {
                Some(small) => (ChunkEncoding::Zstd, small),
                None => {
                    try_zstd = false;
                    (ChunkEncoding::Raw, raw)
                }
            }
        } else {
            (ChunkEncoding::Raw, raw)
        };
        let sent = data.len() as u64;
        writer.send_chunk(file, index, encoding, raw_len, reservation.attach(data)).await?;
        state.metrics.sent_bytes.inc_by(sent);
    }
    writer.send(&Message::ChunksDone { file, sent: count }).await?;
    state
        .metrics
        .transfer_duration
        .get_or_create(&DirectionLabel { direction: Direction::Serve })
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// Compression is tried on the first chunk of an answer; if it does not pay, the rest of the
/// answer goes raw. Runs off the async threads.
async fn compress(raw: Bytes) -> Option<Bytes> {
    tokio::task::spawn_blocking(move || ferry_net::wire::compress_if_worth(&raw).map(Bytes::from))
        .await
        .ok()
        .flatten()
}
