//! Online queries (联机查询): the node answers a [`QuerySpec`] from the Parquet files of a stored
//! version — the latest or a named one — streaming the rows as `QueryData` frames in the asked
//! format, then `QueryDone{rows, truncated}`.
//!
//! How a query runs, once the dispatcher has authorized it (`Read{.., OnlineQuery, Rows}`):
//! - the query is checked against the columns the asker may see before any data page is read
//!   (a restricted grant's columns only: another column reads as unknown; its row filter is
//!   ANDed with the query's predicate);
//! - each table file is read through [`reader::VerifiedFile`] (whole chunks checked against the
//!   signed manifest, cached); row groups are pruned by their statistics and the key columns'
//!   bloom filters, pages by the page index (`ferry_tables::prune`), and only the pages left
//!   are fetched and decoded, one batch at a time, the predicate tested row by row
//!   (`ferry_tables::restrict::evaluate`);
//! - bounds per peer ([`QueryConfig`]): at most `max-rows` rows and `max-result` encoded bytes
//!   (beyond either the result is marked truncated), `timeout` (`Unavailable`), and
//!   `concurrent-per-peer` queries of one identity at once (`Unavailable`).
//!
//! A version stored as a delta only (its table not stored; every publish between snapshots, and
//! what a replica or subscriber pulls of it) is answered from the node's head table when it is
//! the dataset's latest: `DataService::open_latest_head` checks the head by BLAKE3 against the
//! signed manifest (rebuilding it from the nearest stored snapshot plus deltas when missing or
//! damaged) and opens its files while no publish runs; [`head::HeadFile`] hashes each open file
//! whole against the manifest, keeps its chunk hashes, and checks every chunk read against them.
//! The open files are kept per dataset until a newer version is queried; a publish replaces the
//! head by renaming a new directory in, so a query in flight keeps reading the files it opened.
//! An older delta-only version is refused, naming the nearest version that stores its table.
//!
//! Neighbours: `crate::net::dispatch` authorizes and hands queries here; the files come from
//! [`Store`]; the pruning and the predicate are `ferry_tables`'; the query is `ferry_proto::query`.

mod head;
mod metrics;
mod output;
mod reader;
mod scan;

pub use metrics::QueryMetrics;

use crate::config::QueryConfig;
use crate::data::service::{DataService, Refusal};
use crate::data::store::{Store, StoredVersion};
use ferry_net::wire::FrameWriter;
use ferry_proto::authz::Access;
use ferry_proto::query::QuerySpec;
use ferry_proto::{DatasetId, ErrorCode, Message, Principal, VersionKind, VersionNo};
use head::HeadFile;
use reader::ChunkCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Answers online queries from the node's store (see the module doc).
#[derive(Debug)]
pub struct QueryEngine {
    data: Arc<DataService>,
    store: Arc<Store>,
    config: QueryConfig,
    metrics: Arc<crate::telemetry::Metrics>,
    cache: Arc<ChunkCache>,
    /// Queries running now, per identity (certificate fingerprint).
    running: Arc<Mutex<HashMap<String, usize>>>,
    /// The verified head files last opened, per dataset, with their version.
    heads: Mutex<HashMap<DatasetId, (VersionNo, HeadFiles)>>,
}

/// A version's table as open, verified head files, in the manifest's order.
type HeadFiles = Arc<[Arc<HeadFile>]>;

/// One identity's query slot, given back when dropped.
struct Slot {
    running: Arc<Mutex<HashMap<String, usize>>>,
    peer: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = running.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.peer);
            }
        }
    }
}

impl QueryEngine {
    pub fn new(data: Arc<DataService>, config: QueryConfig, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        let cache = Arc::new(ChunkCache::new(config.cache));
        let store = Arc::clone(data.store());
        Self { data, store, config, metrics, cache, running: Arc::default(), heads: Mutex::default() }
    }

    fn metrics(&self) -> &QueryMetrics {
        &self.metrics.query
    }

    /// Answers one query of `peer`, read as `access` allows; returns the result's bytes.
    pub async fn answer(
        &self,
        peer: &Principal,
        access: &Access,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        query: &str,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let started = Instant::now();
        let result = self.answer_within_bounds(peer, access, dataset, version, query, writer).await;
        let outcome = match &result {
            Ok(done) if done.truncated => "truncated",
            Ok(_) => "ok",
            Err((outcome, _)) => outcome,
        };
        self.metrics().outcome(outcome);
        self.metrics().seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(done) => {
                tracing::debug!(
                    peer = %peer.dept, %dataset, rows = done.rows, truncated = done.truncated,
                    seconds = started.elapsed().as_secs_f64(), "answered a query"
                );
                Ok(done.bytes)
            }
            Err((_, refusal)) => Err(refusal),
        }
    }

    async fn answer_within_bounds(
        &self,
        peer: &Principal,
        access: &Access,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        query: &str,
        writer: &mut FrameWriter,
    ) -> Result<scan::Done, (&'static str, Refusal)> {
        let started = Instant::now();
        let spec = QuerySpec::from_json(query)
            .map_err(|e| ("bad_request", Refusal::new(ErrorCode::BadRequest, e.to_string())))?;
        let slot = self.slot(peer).map_err(|r| ("busy", r))?;
        let (stored, head) = self.queryable(dataset, version).await.map_err(|r| ("not_found", r))?;
        let lease =
            self.store.lease(dataset, stored.manifest.version).map_err(|e| ("not_found", e.into()))?;
        let run = scan::Scan {
            store: &self.store,
            version: &stored,
            cache: &self.cache,
            head: head.as_deref(),
            config: &self.config,
            metrics: self.metrics(),
            deadline: started + self.config.timeout,
        };
        // The scan stops itself at its deadline between batches; a read stuck in the store is
        // stopped here after as long again (at least a second more: with a bound of a few
        // milliseconds the backstop would otherwise fire at the scan's first await, before the
        // scan could answer its own refusal), the stream reset (a frame may be cut).
        let backstop = self.config.timeout + self.config.timeout.max(std::time::Duration::from_secs(1));
        match tokio::time::timeout(backstop, run.run(&spec, access, writer)).await {
            Ok(Ok(done)) => {
                // The slot is free before the peer learns the query is done, so its next query
                // never finds this one still counted.
                drop((slot, lease));
                send_done(writer, done.rows, done.truncated).await.map_err(|r| ("failed", r))?;
                Ok(done)
            }
            Ok(Err(refusal)) => {
                let outcome = match refusal.code {
                    ErrorCode::BadRequest => "bad_request",
                    ErrorCode::Unavailable => "timeout",
                    _ => "failed",
                };
                Err((outcome, refusal))
            }
            Err(_) => {
                writer.reset(ferry_net::wire::RESET_STALLED);
                let message = format!(
                    "the query's storage reads stalled past {}",
                    humantime::format_duration(backstop)
                );
                Err(("timeout", Refusal::new(ErrorCode::Unavailable, message)))
            }
        }
    }

    /// Takes one of `peer`'s query slots, or refuses when it has them all.
    fn slot(&self, peer: &Principal) -> Result<Slot, Refusal> {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = running.entry(peer.fingerprint.clone()).or_default();
        if *n >= self.config.concurrent_per_peer {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                format!(
                    "{} queries of this identity are running (at most {}); ask again later",
                    n, self.config.concurrent_per_peer
                ),
            ));
        }
        *n += 1;
        Ok(Slot { running: Arc::clone(&self.running), peer: peer.fingerprint.clone() })
    }

    /// The version asked for, with its head files when only the head holds its table.
    async fn queryable(
        &self,
        dataset: &DatasetId,
        version: Option<VersionNo>,
    ) -> Result<(Arc<StoredVersion>, Option<HeadFiles>), Refusal> {
        let stored = self.store.version(dataset, version)?;
        if stored.manifest.kind == VersionKind::Snapshot {
            return Ok((stored, None));
        }
        let number = stored.manifest.version;
        if self.store.version(dataset, None)?.manifest.version != number {
            return Err(self.delta_only(dataset, number));
        }
        let cached = self.lock_heads().get(dataset).filter(|(v, _)| *v == number).map(|(_, f)| f.clone());
        if let Some(files) = cached {
            return Ok((stored, Some(files)));
        }
        let (latest, files) = self.data.open_latest_head(dataset).await?;
        if latest.manifest.version != number {
            // A publish committed between the two looks.
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                format!("{dataset} {number} was just replaced by {}; ask again", latest.manifest.version),
            ));
        }
        let m = &latest.manifest;
        let (table, chunk_size) = (m.table.clone(), m.chunk_size);
        let verified = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .zip(&table)
                .map(|(file, entry)| HeadFile::verify(file, entry, chunk_size).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Refusal::internal("checking the head table", &e))?
        .map_err(|e| Refusal::new(ErrorCode::Unavailable, format!("{dataset} {number}: {e}; ask again")))?;
        let files: HeadFiles = verified.into();
        self.lock_heads().insert(dataset.clone(), (number, files.clone()));
        Ok((latest, Some(files)))
    }

    fn lock_heads(&self) -> std::sync::MutexGuard<'_, HashMap<DatasetId, (VersionNo, HeadFiles)>> {
        // A poisoned map only means a panic elsewhere; its files are still verified.
        self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The refusal of an older version stored as a delta only, naming the nearest snapshot.
    fn delta_only(&self, dataset: &DatasetId, number: VersionNo) -> Refusal {
        let nearest = self.store.versions(dataset).ok().and_then(|versions| {
            versions
                .iter()
                .rev()
                .find(|v| v.manifest.kind == VersionKind::Snapshot && v.manifest.version < number)
                .map(|v| v.manifest.version)
        });
        let hint = match nearest {
            Some(v) => format!(
                "; the nearest version that stores its table is {v} (ferry query --version {})",
                v.get()
            ),
            None => String::new(),
        };
        Refusal::new(
            ErrorCode::NotFound,
            format!(
                "{dataset} {number} is stored as a delta only and only the latest version is queried from the head table on this node{hint}"
            ),
        )
    }
}

/// Sends the result's end.
async fn send_done(writer: &mut FrameWriter, rows: u64, truncated: bool) -> Result<(), Refusal> {
    writer.send(&Message::QueryDone { rows, truncated }).await?;
    Ok(())
}
