//! The answer to `GetChunks`: pages of chunk hashes, chunks in ascending order, `ChunksDone`.
//!
//! [`ChunkRange::within`] checks a request against the manifest (both ends use it: the node
//! before it answers, the puller before it asks); [`ChunkRange::plan`] is what the node sends;
//! [`ChunkAnswer`] is the puller's side, which checks the order of the frames, verifies each page
//! against the signed manifest and hands out the hash each chunk must have.

use crate::error::{DecodeError, ErrorCode};
use crate::ids::{DatasetId, JobPriority, ServiceMethod, VersionNo};
use crate::manifest::{ChunkPage, FileEntry, Hash32, Manifest, PageError};
use crate::message::Message;
use bytes::Bytes;
use std::ops::RangeInclusive;

/// Chunks `first..=last` of file number `file` of a manifest, checked to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    file: u32,
    first: u32,
    last: u32,
}

/// Why a `GetChunks` request names no chunks of the version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{dataset} {version} has no file number {file}")]
    NoFile { dataset: DatasetId, version: VersionNo, file: u32 },
    #[error("chunks {first}..{end} are outside file {name} ({chunks} chunks)")]
    OutOfRange { name: String, first: u32, end: u64, chunks: u64 },
}

impl RangeError {
    /// The code a node answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoFile { .. } => ErrorCode::NotFound,
            Self::OutOfRange { .. } => ErrorCode::BadRequest,
        }
    }
}

impl ChunkRange {
    /// Chunks `first..first + count` of file number `file` of `manifest`; at least one, all of
    /// them in the file.
    pub fn within(manifest: &Manifest, file: u32, first: u32, count: u32) -> Result<Self, RangeError> {
        let entry = manifest.files.get(file as usize).ok_or_else(|| RangeError::NoFile {
            dataset: manifest.dataset.clone(),
            version: manifest.version,
            file,
        })?;
        let chunks = manifest.chunk_count(entry.size);
        let end = u64::from(first) + u64::from(count);
        if count == 0 || end > chunks {
            let name = entry.name.to_string();
            return Err(RangeError::OutOfRange { name, first, end, chunks });
        }
        // `count >= 1` and `first + count` is computed in u64, so the last index fits in a u32.
        let last = first + (count - 1);
        Ok(Self { file, first, last })
    }

    pub fn file(&self) -> u32 {
        self.file
    }

    pub fn first(&self) -> u32 {
        self.first
    }

    pub fn last(&self) -> u32 {
        self.last
    }

    /// Number of chunks, at least 1.
    pub fn count(&self) -> u32 {
        self.last - self.first + 1
    }

    /// The pages of chunk hashes the answer opens with, in the order they are sent.
    pub fn pages(&self) -> RangeInclusive<u32> {
        Manifest::page_of(self.first)..=Manifest::page_of(self.last)
    }

    /// The chunks from `index` to the end of this range, if `index` is in it: what is left to
    /// fetch when an answer stopped before `index`.
    pub fn rest_from(&self, index: u32) -> Option<Self> {
        (self.first..=self.last).contains(&index).then_some(Self { first: index, ..*self })
    }

    /// The request that asks for this range, made under service method `method`, declaring the
    /// job's class `priority` if any.
    pub fn request(
        &self,
        dataset: DatasetId,
        version: VersionNo,
        accept_zstd: bool,
        method: ServiceMethod,
        priority: Option<JobPriority>,
    ) -> Message {
        Message::GetChunks {
            dataset,
            version,
            file: self.file,
            first: self.first,
            count: self.count(),
            accept_zstd,
            method,
            priority,
        }
    }

    /// Whether a refusal is how a node older than declared priorities answers a request that
    /// declares one: it does not know the request's tag (0x35) and refuses the frame as a bad
    /// request. The puller then asks again without declaring a class.
    pub fn refuses_declared_priority(code: ErrorCode, message: &str) -> bool {
        code == ErrorCode::BadRequest
            && message.contains(&DecodeError::UnknownTag(crate::message::tag::GET_CHUNKS_AT).to_string())
    }

    /// What the node sends, in order.
    pub fn plan(&self) -> AnswerPlan {
        AnswerPlan {
            range: *self,
            next: Some(AnswerStep::Page { file: self.file, page: *self.pages().start() }),
        }
    }
}

/// One frame of an answer, in the order [`AnswerPlan`] yields them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerStep {
    /// Send `ChunkHashes` for this page of the file.
    Page { file: u32, page: u32 },
    /// Send `Chunk` `index` of the file.
    Chunk { file: u32, index: u32 },
    /// Send `ChunksDone{file, sent}`.
    Done { file: u32, sent: u32 },
}

/// The frames of the answer to one [`ChunkRange`]: its pages, its chunks in ascending order,
/// then `Done`. Ends after `Done`.
#[derive(Debug, Clone)]
pub struct AnswerPlan {
    range: ChunkRange,
    next: Option<AnswerStep>,
}

impl Iterator for AnswerPlan {
    type Item = AnswerStep;

    fn next(&mut self) -> Option<AnswerStep> {
        let step = self.next?;
        let ChunkRange { file, first, last } = self.range;
        self.next = match step {
            AnswerStep::Page { page, .. } if page < *self.range.pages().end() => {
                Some(AnswerStep::Page { file, page: page + 1 })
            }
            AnswerStep::Page { .. } => Some(AnswerStep::Chunk { file, index: first }),
            AnswerStep::Chunk { index, .. } if index < last => {
                Some(AnswerStep::Chunk { file, index: index + 1 })
            }
            AnswerStep::Chunk { .. } => Some(AnswerStep::Done { file, sent: self.range.count() }),
            AnswerStep::Done { .. } => None,
        };
        Some(step)
    }
}

/// Why an answer to `GetChunks` is refused by the puller. After one, the stream is out of step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: &'static str },
    #[error("got a frame of file {got}; file {expected} was asked for")]
    WrongFile { expected: u32, got: u32 },
    #[error("expected page {expected} of chunk hashes, got page {got}")]
    PageOutOfOrder { expected: u32, got: u32 },
    #[error("page {page} of chunk hashes was sent twice")]
    DuplicatePage { page: u32 },
    #[error(transparent)]
    Page(#[from] PageError),
    #[error("chunk {index} is outside the chunks {first}..={last} asked for")]
    ChunkOutOfRange { index: u32, first: u32, last: u32 },
    #[error("expected chunk {expected}, got chunk {got}")]
    ChunkOutOfOrder { expected: u32, got: u32 },
    #[error("chunk {index} announces {announced} bytes; the manifest says {expected}")]
    ChunkLength { index: u32, announced: u32, expected: u32 },
    #[error("ChunksDone after {received} of the {count} chunks asked for")]
    EndedEarly { received: u32, count: u32 },
    #[error("ChunksDone says {sent} chunks were sent; {count} were")]
    DoneCount { sent: u32, count: u32 },
    #[error("a frame after the end of the answer")]
    AfterEnd,
}

impl SequenceError {
    /// Whether the peer sent data that does not match the signed manifest (rather than frames
    /// in a wrong order).
    pub fn is_corrupt_data(&self) -> bool {
        matches!(self, Self::Page(_) | Self::ChunkLength { .. })
    }
}

/// A chunk the answer announced: where it goes and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedChunk {
    pub index: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Raw length, as announced and as the manifest says.
    pub len: u32,
    /// BLAKE3 of the raw bytes, from a verified page.
    pub hash: Hash32,
}

/// What a frame of the answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerEvent {
    /// A page of chunk hashes, verified against the manifest and kept.
    Page { page: u32 },
    /// A chunk header: check its payload against `ExpectedChunk::hash`.
    Chunk(ExpectedChunk),
    /// `ChunksDone`: every chunk asked for was announced.
    Done { sent: u32 },
    /// The node ended the answer with an error; the chunks announced before it stay valid.
    Refused { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pages { next: u32 },
    Chunks { next: u32 },
    Done,
    Ended,
}

/// The puller's side of one `GetChunks` answer (see the module doc).
#[derive(Debug)]
pub struct ChunkAnswer<'m> {
    manifest: &'m Manifest,
    entry: &'m FileEntry,
    range: ChunkRange,
    phase: Phase,
    pages: Vec<(u32, Bytes)>,
}

impl<'m> ChunkAnswer<'m> {
    /// Expects the answer to `range`, a range of `manifest` (from [`ChunkRange::within`] on it).
    pub fn new(manifest: &'m Manifest, range: ChunkRange) -> Result<Self, RangeError> {
        // Checked again: a range made against another manifest must not index out of this one.
        let range = ChunkRange::within(manifest, range.file, range.first, range.count())?;
        let entry = &manifest.files[range.file as usize];
        let phase = Phase::Pages { next: *range.pages().start() };
        Ok(Self { manifest, entry, range, phase, pages: Vec::with_capacity(2) })
    }

    pub fn range(&self) -> ChunkRange {
        self.range
    }

    /// The chunks not yet announced, or `None` once all were.
    pub fn rest(&self) -> Option<ChunkRange> {
        match self.phase {
            Phase::Pages { .. } => Some(self.range),
            Phase::Chunks { next } => self.range.rest_from(next),
            Phase::Done | Phase::Ended => None,
        }
    }

    /// Whether `ChunksDone` (or an `Error`) has ended the answer.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Takes the next frame of the answer.
    pub fn handle(&mut self, msg: &Message) -> Result<AnswerEvent, SequenceError> {
        let result = match msg {
            Message::ChunkHashes { file, page, hashes } => self.page(*file, *page, hashes),
            Message::Chunk { file, index, raw_len, .. } => {
                self.chunk(*file, *index, *raw_len).map(AnswerEvent::Chunk)
            }
            Message::ChunksDone { file, sent } => self.done(*file, *sent),
            Message::Error { code, message } => {
                let ended = self.phase == Phase::Ended;
                self.phase = Phase::Ended;
                if ended {
                    Err(SequenceError::AfterEnd)
                } else {
                    Ok(AnswerEvent::Refused { code: *code, message: message.clone() })
                }
            }
            other => {
                Err(SequenceError::Unexpected { expected: self.expected(), got: super::message_name(other) })
            }
        };
        self.fail_on_error(result)
    }

    /// Takes the header of the next `Chunk` frame (for a reader that takes payloads off the
    /// transport piece by piece): the same checks as [`ChunkAnswer::handle`] on the whole frame.
    pub fn handle_chunk(
        &mut self,
        file: u32,
        index: u32,
        raw_len: u32,
    ) -> Result<ExpectedChunk, SequenceError> {
        let result = self.chunk(file, index, raw_len);
        self.fail_on_error(result)
    }

    fn fail_on_error<T>(&mut self, result: Result<T, SequenceError>) -> Result<T, SequenceError> {
        if result.is_err() {
            self.phase = Phase::Ended;
        }
        result
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            Phase::Pages { .. } => "ChunkHashes",
            Phase::Chunks { .. } => "Chunk",
            Phase::Done => "ChunksDone",
            Phase::Ended => "the end of the answer",
        }
    }

    fn check_file(&self, file: u32) -> Result<(), SequenceError> {
        if file == self.range.file {
            Ok(())
        } else {
            Err(SequenceError::WrongFile { expected: self.range.file, got: file })
        }
    }

    fn page(&mut self, file: u32, page: u32, hashes: &Bytes) -> Result<AnswerEvent, SequenceError> {
        let Phase::Pages { next } = self.phase else {
            return Err(self.out_of_phase("ChunkHashes"));
        };
        self.check_file(file)?;
        if page != next {
            return Err(if page < next {
                SequenceError::DuplicatePage { page }
            } else {
                SequenceError::PageOutOfOrder { expected: next, got: page }
            });
        }
        ChunkPage { page, hashes }.verify(self.manifest, self.entry)?;
        self.pages.push((page, hashes.clone()));
        self.phase = if page == *self.range.pages().end() {
            Phase::Chunks { next: self.range.first }
        } else {
            Phase::Pages { next: page + 1 }
        };
        Ok(AnswerEvent::Page { page })
    }

    fn chunk(&mut self, file: u32, index: u32, raw_len: u32) -> Result<ExpectedChunk, SequenceError> {
        let ChunkRange { first, last, .. } = self.range;
        let next = match self.phase {
            Phase::Chunks { next } => next,
            Phase::Done if file == self.range.file && !(first..=last).contains(&index) => {
                return Err(SequenceError::ChunkOutOfRange { index, first, last });
            }
            _ => return Err(self.out_of_phase("Chunk")),
        };
        self.check_file(file)?;
        if !(first..=last).contains(&index) {
            return Err(SequenceError::ChunkOutOfRange { index, first, last });
        }
        if index != next {
            return Err(SequenceError::ChunkOutOfOrder { expected: next, got: index });
        }
        // The range was checked against the manifest, and its pages were verified: both hold.
        let (offset, len) = self
            .manifest
            .chunk_span(self.entry, index)
            .ok_or(SequenceError::ChunkOutOfRange { index, first, last })?;
        if raw_len != len {
            return Err(SequenceError::ChunkLength { index, announced: raw_len, expected: len });
        }
        let hash = self
            .pages
            .iter()
            .find(|(page, _)| *page == Manifest::page_of(index))
            .and_then(|(page, hashes)| ChunkPage { page: *page, hashes }.chunk(index))
            .ok_or(SequenceError::Unexpected { expected: "ChunkHashes", got: "Chunk" })?;
        self.phase = if index == last { Phase::Done } else { Phase::Chunks { next: index + 1 } };
        Ok(ExpectedChunk { index, offset, len, hash })
    }

    fn done(&mut self, file: u32, sent: u32) -> Result<AnswerEvent, SequenceError> {
        let count = self.range.count();
        match self.phase {
            Phase::Done => {}
            Phase::Pages { .. } => return Err(SequenceError::EndedEarly { received: 0, count }),
            Phase::Chunks { next } => {
                return Err(SequenceError::EndedEarly { received: next - self.range.first, count });
            }
            Phase::Ended => return Err(SequenceError::AfterEnd),
        }
        self.check_file(file)?;
        if sent != count {
            return Err(SequenceError::DoneCount { sent, count });
        }
        self.phase = Phase::Ended;
        Ok(AnswerEvent::Done { sent })
    }

    fn out_of_phase(&self, got: &'static str) -> SequenceError {
        match self.phase {
            Phase::Ended => SequenceError::AfterEnd,
            _ => SequenceError::Unexpected { expected: self.expected(), got },
        }
    }
}
