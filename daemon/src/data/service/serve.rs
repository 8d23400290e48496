//! Serving datasets: the listing, a dataset's versions, a version's stored manifest, and the
//! answer to `GetChunks`, sent in the order `ferry_proto::exchange::chunks` defines.

use super::{Active, Borrower, DataService, Refusal};
use crate::data::store::Store;
use crate::telemetry::{Direction, DirectionLabel};
use bytes::Bytes;
use ferry_net::wire::FrameWriter;
use ferry_proto::exchange::{AnswerStep, ChunkRange};
use ferry_proto::{
    ChunkEncoding, DatasetId, DatasetSummary, ErrorCode, FileRole, Manifest, Message, VersionNo,
    VersionSummary,
};
use std::time::Instant;

/// The chunks a `GetChunks` asks for, not yet checked against the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunksWanted {
    pub file: u32,
    pub first: u32,
    pub count: u32,
    pub accept_zstd: bool,
}

impl DataService {
    /// Every dataset this node holds; the caller filters what a peer may see.
    pub fn list(&self) -> Vec<DatasetSummary> {
        self.store.list()
    }

    /// Answers `ListVersions`.
    pub async fn send_versions(&self, dataset: DatasetId, writer: &mut FrameWriter) -> Result<u64, Refusal> {
        self.send_versions_in(&self.store, dataset, writer).await
    }

    /// Answers `ListVersions` from `store` (the node's, or a restricted one).
    pub(super) async fn send_versions_in(
        &self,
        store: &Store,
        dataset: DatasetId,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let versions = store.versions(&dataset)?.iter().map(|v| summary(&v.manifest)).collect();
        writer.send(&Message::VersionList { dataset, versions }).await?;
        Ok(0)
    }

    /// Answers `GetManifest` with the stored signed manifest, as it was stored. Returns its bytes.
    pub async fn send_manifest(
        &self,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        self.send_manifest_in(&self.store, dataset, version, writer).await
    }

    /// Answers `GetManifest` from `store` (the node's, or a restricted one).
    pub(super) async fn send_manifest_in(
        &self,
        store: &Store,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let stored = store.version(dataset, version)?;
        // Held against garbage collection while the stored form is read back.
        let _lease = store.lease(&stored.manifest.dataset, stored.manifest.version)?;
        let signed = store.signed_manifest(&stored).await?;
        let bytes = signed.len() as u64;
        writer.send_stored_manifest(signed).await?;
        Ok(bytes)
    }

    /// Answers `GetChunks`: the pages of chunk hashes the chunks need, the chunks in ascending
    /// order, `ChunksDone`. Stops with `Unavailable` between two chunks when the node drains.
    /// Each chunk's room in the serve budget is counted against `who`, the asking peer.
    /// Returns the payload bytes sent.
    pub async fn send_chunks(
        &self,
        who: &Borrower,
        dataset: &DatasetId,
        version: VersionNo,
        request: ChunksWanted,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        self.send_chunks_in(&self.store, who, dataset, version, request, writer).await
    }

    /// Answers `GetChunks` from `store` (the node's, or a restricted one).
    pub(super) async fn send_chunks_in(
        &self,
        store: &Store,
        who: &Borrower,
        dataset: &DatasetId,
        version: VersionNo,
        request: ChunksWanted,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let ChunksWanted { file, first, count, accept_zstd } = request;
        let stored = store.version(dataset, Some(version))?;
        // Garbage collection leaves the version alone while its chunks are read.
        let _lease = store.lease(dataset, version)?;
        let m = &stored.manifest;
        let range =
            ChunkRange::within(m, file, first, count).map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        let _active = Active::new(&self.metrics, Direction::Serve);
        // Resolved once per answer; `None` (nothing asked per chunk) without a limit.
        let pace = self.serve_limits.as_ref().and_then(|limits| limits.pace(who));
        let started = Instant::now();
        let mut try_zstd = accept_zstd;
        let mut sent = 0u64;
        for step in range.plan() {
            match step {
                AnswerStep::Page { file, page } => {
                    // Checked here against the manifest before it goes out.
                    let hashes = store.read_chunk_hashes(&stored, file, page).await?;
                    writer.send(&Message::ChunkHashes { file, page, hashes }).await?;
                }
                AnswerStep::Chunk { file, index } => {
                    if *self.draining.borrow() {
                        return Err(Refusal::new(
                            ErrorCode::Unavailable,
                            "node is shutting down; resume from another chunk later",
                        ));
                    }
                    // Room in the node-wide budget first, so that a node serving many peers
                    // holds a bounded number of chunks however many answers are running, and
                    // one peer no more than its share of them.
                    let entry = &m.files[file as usize];
                    let room = m.chunk_span(entry, index).map_or(0, |(_, len)| len as usize);
                    // The bandwidth limits before the budget: no room is held while waiting.
                    if let Some(pace) = &pace {
                        pace.before_chunk(room as u64).await;
                    }
                    let reservation = self.serve_budget.reserve(who, room).await;
                    let raw = store.read_chunk(&stored, file, index).await?;
                    let raw_len = raw.len() as u32;
                    let (encoding, data) = encode(raw, &mut try_zstd).await;
                    let len = data.len() as u64;
                    writer.send_chunk(file, index, encoding, raw_len, reservation.attach(data)).await?;
                    self.metrics.sent_bytes.inc_by(len);
                    sent += len;
                }
                AnswerStep::Done { file, sent } => writer.send(&Message::ChunksDone { file, sent }).await?,
            }
        }
        let label = DirectionLabel { direction: Direction::Serve };
        self.metrics.transfer_duration.get_or_create(&label).observe(started.elapsed().as_secs_f64());
        Ok(sent)
    }
}

/// What `ListVersions` says of one stored version.
pub fn summary(m: &Manifest) -> VersionSummary {
    VersionSummary {
        version: m.version,
        kind: m.kind,
        parent: m.parent,
        rows: m.row_count,
        delta_bytes: m.delta_bytes(),
        snapshot_bytes: m.bytes_with(FileRole::Snapshot),
    }
}

/// Compression is tried on the first chunk of an answer; if it does not pay, the rest of the
/// answer goes raw (`try_zstd` turns false).
async fn encode(raw: Bytes, try_zstd: &mut bool) -> (ChunkEncoding, Bytes) {
    if !*try_zstd {
        return (ChunkEncoding::Raw, raw);
    }
    match compress(raw.clone()).await {
        Some(small) => (ChunkEncoding::Zstd, small),
        None => {
            *try_zstd = false;
            (ChunkEncoding::Raw, raw)
        }
    }
}

/// Runs off the async threads.
async fn compress(raw: Bytes) -> Option<Bytes> {
    tokio::task::spawn_blocking(move || ferry_net::wire::compress_if_worth(&raw).map(Bytes::from))
        .await
        .ok()
        .flatten()
}
