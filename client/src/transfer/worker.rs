//! Parallel chunk fetching: streams take ranges of missing chunks from a shared queue, verify
//! each chunk against its hash (from the page of chunk hashes that opens the node's answer,
//! itself checked against the signed manifest, both by `ferry_proto::exchange::ChunkAnswer`),
//! write it at its offset and journal it. A lost
//! connection is re-established and the unfinished part of each range goes back on the queue.
//!
//! The pull sizes what QUIC may hold for it across streams to its path
//! ([`connection_receive_window`]): what a puller had received and not yet journaled when it
//! was killed is fetched again.

use super::commit::Staging;
use super::{PullError, PullEvent, PullObserver, PullOptions, connect_with_retry};
use crate::conn::{ClientError, Connector, Session};
use ferry_net::bandwidth::RateLimiter;
use ferry_net::wire::{ChunkData, Incoming};
use ferry_proto::exchange::{AnswerEvent, ChunkAnswer, ChunkRange, ExpectedChunk, SequenceError};
use ferry_proto::frame::ChunkHeader;
use ferry_proto::{ChunkEncoding, ErrorCode, Manifest};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

pub struct Job {
    pub connector: Connector,
    pub session: Session,
    pub manifest: Arc<Manifest>,
    pub staged: Arc<Staging>,
    pub opts: PullOptions,
    pub observer: Arc<dyn PullObserver>,
    pub cancel: watch::Receiver<bool>,
    pub resumed_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub fetched_bytes: u64,
    pub wire_bytes: u64,
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    file: u32,
    first: u32,
    count: u32,
}

struct Shared {
    connector: Connector,
    session: Mutex<(u64, Arc<Session>)>,
    queue: std::sync::Mutex<VecDeque<Range>>,
    manifest: Arc<Manifest>,
    staged: Arc<Staging>,
    opts: PullOptions,
    observer: Arc<dyn PullObserver>,
    verified: AtomicU64,
    fetched: AtomicU64,
    wire: AtomicU64,
    retries: AtomicU64,
    total: u64,
    /// `opts.rate_limit` and `opts.bandwidth`, the chunks' verified bytes pass both.
    limiters: Vec<Arc<RateLimiter>>,
    /// Cleared once the node refused a declared job class as a request it does not know (a
    /// node older than priorities): later ranges are asked for without one.
    declare_priority: AtomicBool,
    /// Streams of this pull, for the receive window of a new connection.
    streams: usize,
}

enum RangeError {
    /// The link failed; `rest` still needs fetching.
    Transient {
        error: ClientError,
        rest: Option<Range>,
    },
    Fatal(PullError),
    Cancelled,
    /// The node does not know requests that declare a job class; `range` is asked for again
    /// without one.
    PriorityUnknown(Range),
}

/// Missing chunks grouped into requests of at most `per_request` consecutive chunks.
fn plan(manifest: &Manifest, staged: &Staging, per_request: u32) -> VecDeque<Range> {
    let mut per_file: Vec<VecDeque<Range>> = Vec::new();
    for (file, entry) in manifest.files.iter().enumerate() {
        if !staged.wanted().includes(entry.role) {
            continue;
        }
        let file = file as u32;
        let chunks = manifest.chunk_count(entry.size) as u32;
        let mut ranges = VecDeque::new();
        let mut run: Option<Range> = None;
        for chunk in 0..chunks {
            if staged.done().contains(&(file, chunk)) {
                ranges.extend(run.take());
                continue;
            }
            match &mut run {
                Some(r) if r.count < per_request => r.count += 1,
                _ => {
                    ranges.extend(run.take());
                    run = Some(Range { file, first: chunk, count: 1 });
                }
            }
        }
        ranges.extend(run);
        per_file.push(ranges);
    }
    interleave(per_file)
}

/// One range of each file in turn, so that streams taking ranges one after another write to
/// different files: buffered writes to one file hold its inode lock for the copy, and streams on
/// the same file wait for each other.
fn interleave(mut per_file: Vec<VecDeque<Range>>) -> VecDeque<Range> {
    let mut queue = VecDeque::with_capacity(per_file.iter().map(VecDeque::len).sum());
    while per_file.iter().any(|ranges| !ranges.is_empty()) {
        for ranges in &mut per_file {
            queue.extend(ranges.pop_front());
        }
    }
    queue
}

pub async fn run(job: Job) -> Result<Outcome, PullError> {
    let queue = plan(&job.manifest, &job.staged, job.opts.chunks_per_request.max(1));
    let min_rtt = job.session.min_rtt();
    let streams = job.opts.streams_for(min_rtt);
    tracing::debug!(streams, min_rtt_us = min_rtt.as_micros() as u64, "fetching");
    bound_receive_window(&job.session, streams, job.manifest.chunk_size);
    let shared = Arc::new(Shared {
        connector: job.connector,
        session: Mutex::new((0, Arc::new(job.session))),
        queue: std::sync::Mutex::new(queue),
        total: job.staged.wanted().bytes(&job.manifest),
        manifest: job.manifest,
        staged: job.staged,
        observer: job.observer,
        verified: AtomicU64::new(job.resumed_bytes),
        fetched: AtomicU64::new(0),
        wire: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        limiters: limiters(&job.opts),
        declare_priority: AtomicBool::new(true),
        streams,
        opts: job.opts,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        tasks.spawn(stream_loop(shared.clone(), job.cancel.clone()));
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(PullError::Io { path: Default::default(), source: std::io::Error::other(e.to_string()) })
        });
        if let Err(e) = result {
            if !matches!(e, PullError::Interrupted { .. }) {
                tasks.abort_all();
            }
            first_error.get_or_insert(e);
        }
    }
    ferry_net::conn::log_path_stats(shared.session.lock().await.1.connection(), "transfer done");
    if let Some(mut e) = first_error {
        if let PullError::Interrupted { verified_bytes } = &mut e {
            *verified_bytes = shared.verified.load(Ordering::Relaxed);
        }
        return Err(e);
    }
    Ok(Outcome {
        fetched_bytes: shared.fetched.load(Ordering::Relaxed),
        wire_bytes: shared.wire.load(Ordering::Relaxed),
        retries: shared.retries.load(Ordering::Relaxed) as u32,
    })
}

/// The fastest link a short path is sized for: 10 Gbit/s.
const SHORT_PATH_RATE: f64 = 1.25e9;

/// The bytes QUIC may hold for a pull on a short path (its minimum round-trip time under
/// [`ferry_net::tls::congestion::LONG_PATH_RTT`]) across all its streams, ahead of what the pull
/// has read: one chunk per stream, or two round trips at [`SHORT_PATH_RATE`] where that is more.
/// `None` on a long path: no connection-wide bound, only the transport's per-stream windows
/// (they keep a lossy long link full; what is in flight there when a puller dies is never
/// received).
///
/// A chunk is journaled once verified and written, so a killed puller fetches again what it
/// had in hand (at most a chunk per stream, read or being read) and what QUIC had received for
/// it: this window bounds the latter to one chunk per stream, where the per-stream windows
/// alone allowed four ([`ferry_net::tls::STREAM_RECEIVE_WINDOW`] each) once the disk lagged
/// the link. A client's connection starts with
/// [`ferry_net::tls::CLIENT_INITIAL_RECEIVE_WINDOW`]; loopback connections keep their own bound
/// ([`ferry_net::tls::LOOPBACK_RECEIVE_WINDOW`]).
pub fn connection_receive_window(min_rtt: Duration, streams: usize, chunk_size: u32) -> Option<u64> {
    if min_rtt >= ferry_net::tls::congestion::LONG_PATH_RTT {
        return None;
    }
    let chunks = (streams.max(1) as u64).saturating_mul(u64::from(chunk_size));
    let path = (SHORT_PATH_RATE * 2.0 * min_rtt.as_secs_f64()) as u64;
    Some(chunks.max(path))
}

/// Sets [`connection_receive_window`] on a session's connection to a node on another host
/// (unbounded on a long path).
fn bound_receive_window(session: &Session, streams: usize, chunk_size: u32) {
    let conn = session.connection();
    if ferry_net::tls::is_loopback(conn.remote_address()) {
        return;
    }
    let window = connection_receive_window(session.min_rtt(), streams, chunk_size)
        .and_then(|w| quinn::VarInt::from_u64(w).ok())
        .unwrap_or(quinn::VarInt::MAX);
    conn.set_receive_window(window);
    tracing::debug!(window = window.into_inner(), "connection receive window");
}

fn pop(shared: &Shared) -> Option<Range> {
    shared.queue.lock().ok()?.pop_front()
}

async fn stream_loop(shared: Arc<Shared>, cancel: watch::Receiver<bool>) -> Result<(), PullError> {
    let mut failures = 0u32;
    while let Some(range) = pop(&shared) {
        if *cancel.borrow() {
            return Err(PullError::Interrupted { verified_bytes: 0 });
        }
        let (generation, session) = shared.session.lock().await.clone();
        match fetch_range(&shared, &session, range, &cancel).await {
            Ok(()) => failures = 0,
            Err(RangeError::Cancelled) => return Err(PullError::Interrupted { verified_bytes: 0 }),
            Err(RangeError::Fatal(e)) => return Err(e),
            Err(RangeError::PriorityUnknown(range)) => {
                if let Ok(mut q) = shared.queue.lock() {
                    q.push_front(range);
                }
            }
            Err(RangeError::Transient { error, rest }) => {
                if let Some(rest) = rest
                    && let Ok(mut q) = shared.queue.lock()
                {
                    q.push_front(rest);
                }
                failures += 1;
                if failures > shared.opts.max_retries {
                    return Err(PullError::RetriesExhausted { attempts: failures, last: error });
                }
                shared.retries.fetch_add(1, Ordering::Relaxed);
                shared.observer.event(&PullEvent::Retry { attempt: failures, reason: error.to_string() });
                reconnect(&shared, generation).await?;
            }
        }
    }
    Ok(())
}

/// Replaces the session unless another stream already did.
async fn reconnect(shared: &Shared, seen: u64) -> Result<(), PullError> {
    let mut guard = shared.session.lock().await;
    if guard.0 != seen {
        return Ok(());
    }
    tokio::time::sleep(super::backoff(0)).await;
    let mut retries = 0;
    let session =
        connect_with_retry(&shared.connector, &shared.opts, shared.observer.as_ref(), &mut retries).await?;
    shared.retries.fetch_add(u64::from(retries), Ordering::Relaxed);
    bound_receive_window(&session, shared.streams, shared.manifest.chunk_size);
    *guard = (seen + 1, Arc::new(session));
    Ok(())
}

async fn fetch_range(
    shared: &Arc<Shared>,
    session: &Session,
    range: Range,
    cancel: &watch::Receiver<bool>,
) -> Result<(), RangeError> {
    let manifest = &shared.manifest;
    let fatal = |detail: &dyn std::fmt::Display| {
        RangeError::Fatal(corrupt(manifest, range.file, range.first, &detail.to_string()))
    };
    let chunks = ChunkRange::within(manifest, range.file, range.first, range.count).map_err(|e| fatal(&e))?;
    let mut answer = ChunkAnswer::new(manifest, chunks).map_err(|e| fatal(&e))?;
    let opts = &shared.opts;
    let declared =
        if shared.declare_priority.load(Ordering::Relaxed) { opts.priority.declared() } else { None };
    let request =
        chunks.request(manifest.dataset.clone(), manifest.version, opts.accept_zstd, opts.method, declared);
    let mut reader = session.start(&request).await.map_err(|e| classify(e, Some(range)))?;
    // The answer's order (pages of chunk hashes, chunks, ChunksDone) is checked by `answer`,
    // which also verifies each page against the signed manifest and says what each chunk
    // must hash to.
    loop {
        if *cancel.borrow() {
            return Err(RangeError::Cancelled);
        }
        let rest = answer.rest().map(Range::from);
        let incoming = match session.read_incoming(&mut reader).await {
            Ok(incoming) => incoming,
            Err(ClientError::Remote { code, message }) if declared.is_some() => {
                return Err(refused(shared, range, code, message, rest));
            }
            Err(e) => return Err(classify(e, rest)),
        };
        let (header, data) = match incoming {
            Incoming::Chunk(header, data) => (header, data),
            Incoming::Message(msg) => match answer.handle(&msg) {
                Ok(AnswerEvent::Done { .. }) => return Ok(()),
                Ok(AnswerEvent::Page { .. }) => continue,
                Ok(AnswerEvent::Refused { code, message }) => {
                    return Err(if declared.is_some() {
                        refused(shared, range, code, message, rest)
                    } else {
                        classify(ClientError::Remote { code, message }, rest)
                    });
                }
                Ok(AnswerEvent::Chunk(_)) => {
                    let got = "a chunk without its payload".to_owned();
                    return Err(RangeError::Fatal(ClientError::Unexpected { expected: "Chunk", got }.into()));
                }
                Err(e) => return Err(RangeError::Fatal(sequence_error(manifest, &answer, e))),
            },
        };
        let ChunkHeader { file, index, encoding, raw_len, .. } = header;
        let expected = answer
            .handle_chunk(file, index, raw_len)
            .map_err(|e| RangeError::Fatal(sequence_error(manifest, &answer, e)))?;
        let wire_len = data.len() as u64;
        let raw = verify_and_write(shared, file, encoding, expected, data).await?;
        shared.wire.fetch_add(wire_len, Ordering::Relaxed);
        shared.fetched.fetch_add(raw, Ordering::Relaxed);
        let verified = shared.verified.fetch_add(raw, Ordering::Relaxed) + raw;
        shared.observer.event(&PullEvent::Chunk {
            file,
            chunk: index,
            verified_bytes: verified,
            fetched_bytes: shared.fetched.load(Ordering::Relaxed),
            total_bytes: shared.total,
        });
        pace(shared, raw).await;
    }
}

impl From<ChunkRange> for Range {
    fn from(r: ChunkRange) -> Self {
        Self { file: r.file(), first: r.first(), count: r.count() }
    }
}

/// A broken answer: data that does not match the signed manifest is corrupt; frames out of
/// the order `GetChunks` defines are a protocol error.
fn sequence_error(manifest: &Manifest, answer: &ChunkAnswer<'_>, e: SequenceError) -> PullError {
    match e {
        SequenceError::Page(page) => PullError::ChunkHashes(page),
        SequenceError::ChunkLength { index, .. } => {
            corrupt(manifest, answer.range().file(), index, &e.to_string())
        }
        other => ClientError::Unexpected { expected: "the answer GetChunks defines", got: other.to_string() }
            .into(),
    }
}

/// A refusal of a request that declared a job class: a node older than priorities does not
/// know such a request, and `range` is asked for again without one (for this pull's other
/// ranges too); any other refusal is classified as usual.
fn refused(
    shared: &Shared,
    range: Range,
    code: ErrorCode,
    message: String,
    rest: Option<Range>,
) -> RangeError {
    if ChunkRange::refuses_declared_priority(code, &message) {
        shared.declare_priority.store(false, Ordering::Relaxed);
        tracing::info!("the node predates declared job classes; asking without one");
        return RangeError::PriorityUnknown(range);
    }
    classify(ClientError::Remote { code, message }, rest)
}

fn classify(error: ClientError, rest: Option<Range>) -> RangeError {
    if error.is_transient() { RangeError::Transient { error, rest } } else { RangeError::Fatal(error.into()) }
}

/// Decompresses (bounded), hashes and compares, then writes and journals. Returns raw bytes.
async fn verify_and_write(
    shared: &Arc<Shared>,
    file: u32,
    encoding: ChunkEncoding,
    expected: ExpectedChunk,
    data: ChunkData,
) -> Result<u64, RangeError> {
    let shared = shared.clone();
    let work = move || -> Result<u64, PullError> {
        let manifest = &shared.manifest;
        // The answer's sequence checked the announced length against the manifest.
        let ExpectedChunk { index, offset, len, hash: expected } = expected;
        let entry = manifest
            .files
            .get(file as usize)
            .ok_or_else(|| corrupt(manifest, file, index, "no such file"))?;
        let size_error =
            |got: usize| corrupt(manifest, file, index, &format!("{got} bytes received, {len} expected"));
        let write_error =
            |source| PullError::Io { path: shared.staged.dir.join(entry.name.as_str()), source };
        if let Some(fault) = &shared.opts.write_fault {
            fault.before_write(entry.name.as_str(), index).map_err(write_error)?;
        }
        match encoding {
            // The payload arrived in an aligned buffer: it is hashed there and written from it
            // (directly to disk where the file system allows).
            ChunkEncoding::Raw => {
                if data.len() != len as usize {
                    return Err(size_error(data.len()));
                }
                if blake3::hash(data.as_slice()).as_bytes() != &expected.0 {
                    return Err(corrupt(manifest, file, index, "BLAKE3 mismatch"));
                }
                shared
                    .staged
                    .write_chunk(file, index, offset, data.as_slice(), &expected)
                    .map_err(write_error)?;
            }
            ChunkEncoding::Zstd => {
                // The buffer's length bounds the output: a decompression bomb fails here.
                let mut raw = ferry_net::aligned::Lease::take(len as usize);
                let got = zstd::bulk::decompress_to_buffer(data.as_slice(), raw.as_mut_slice())
                    .map_err(|e| corrupt(manifest, file, index, &format!("zstd: {e}")))?;
                if got != len as usize {
                    return Err(size_error(got));
                }
                if blake3::hash(raw.as_slice()).as_bytes() != &expected.0 {
                    return Err(corrupt(manifest, file, index, "BLAKE3 mismatch"));
                }
                shared
                    .staged
                    .write_chunk(file, index, offset, raw.as_slice(), &expected)
                    .map_err(write_error)?;
            }
        }
        Ok(u64::from(len))
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(RangeError::Fatal(e)),
        Err(e) => Err(RangeError::Fatal(PullError::Io {
            path: Default::default(),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}

fn corrupt(manifest: &Manifest, file: u32, chunk: u32, detail: &str) -> PullError {
    let name = manifest.files.get(file as usize).map_or_else(|| format!("#{file}"), |f| f.name.to_string());
    PullError::Corrupt { file: name, chunk, detail: detail.to_owned() }
}

/// The limiters a pull's chunks pass: its own fixed cap, and the shared timetable. None at all
/// without a limit, so an unlimited pull pays nothing for them.
fn limiters(opts: &PullOptions) -> Vec<Arc<RateLimiter>> {
    let fixed = opts.rate_limit.filter(|r| *r > 0).map(|r| Arc::new(RateLimiter::fixed(r)));
    fixed.into_iter().chain(opts.bandwidth.clone()).chain(opts.peer_bandwidth.clone()).collect()
}

/// Waits until `bytes` just fetched fit the limits; the stream asks for no more meanwhile.
async fn pace(shared: &Shared, bytes: u64) {
    for limiter in &shared.limiters {
        limiter.acquire(bytes, shared.opts.priority).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ranges(file: u32, counts: &[u32]) -> VecDeque<Range> {
        let mut first = 0;
        counts
            .iter()
            .map(|&count| {
                let r = Range { file, first, count };
                first += count;
                r
            })
            .collect()
    }

    #[test]
    fn the_stream_count_follows_the_path_minimum_rtt() {
        let opts = PullOptions::default();
        assert_eq!(opts.streams_for(Duration::from_micros(400)), 4, "loopback");
        assert_eq!(opts.streams_for(Duration::from_micros(4_999)), 4, "a LAN");
        assert_eq!(opts.streams_for(Duration::from_millis(5)), 8, "from the long-path RTT on");
        assert_eq!(opts.streams_for(Duration::from_millis(80)), 8);
        let chosen = PullOptions { streams: 2, long_path_streams: 2, ..PullOptions::default() };
        assert_eq!(chosen.streams_for(Duration::from_millis(30)), 2, "--streams applies to both");
        let none = PullOptions { streams: 0, long_path_streams: 0, ..PullOptions::default() };
        assert_eq!(none.streams_for(Duration::ZERO), 1, "at least one stream");
    }

    #[test]
    fn a_node_keeps_what_a_long_path_pull_may_be_granted() {
        // The credit a puller's streams grant on a long path, not the node's send buffer, is
        // what bounds a pull there: with quinn's 10 MB a lossy 1 Gbit/s, 30 ms link stalled.
        let streams = PullOptions::default().streams_for(Duration::from_millis(30)) as u64;
        let granted = streams * u64::from(ferry_net::tls::STREAM_RECEIVE_WINDOW);
        assert!(ferry_net::tls::SEND_WINDOW >= granted, "{} < {granted}", ferry_net::tls::SEND_WINDOW);
    }

    #[test]
    fn a_short_path_holds_one_chunk_per_stream_in_quic_and_a_long_one_is_left_alone() {
        let mib = 1 << 20;
        let lan = connection_receive_window(Duration::from_micros(300), 4, mib);
        assert_eq!(lan, Some(4 * u64::from(mib)), "one chunk per stream");
        let far_lan = connection_receive_window(Duration::from_millis(4), 4, mib).unwrap();
        assert_eq!(far_lan, 10_000_000, "two round trips of 10 Gbit/s where that is more");
        assert_eq!(connection_receive_window(Duration::from_millis(5), 8, mib), None, "a long path");
        assert_eq!(connection_receive_window(Duration::ZERO, 0, mib), Some(u64::from(mib)));
    }

    #[test]
    fn interleave_takes_one_range_of_each_file_in_turn_and_keeps_all() {
        let per_file = vec![ranges(0, &[8, 8, 8]), ranges(1, &[8]), ranges(2, &[]), ranges(3, &[8, 3])];
        let all: Vec<Range> = per_file.iter().flatten().copied().collect();
        let queue: Vec<Range> = interleave(per_file).into_iter().collect();
        let files: Vec<u32> = queue.iter().map(|r| r.file).collect();
        assert_eq!(files, vec![0, 1, 3, 0, 3, 0]);
        // Nothing lost or duplicated, and each file's ranges stay in order.
        assert_eq!(queue.len(), all.len());
        for file in 0..4 {
            let mine: Vec<_> = queue.iter().filter(|r| r.file == file).copied().collect();
            let want: Vec<_> = all.iter().filter(|r| r.file == file).copied().collect();
            assert_eq!(mine, want);
        }
    }
}
