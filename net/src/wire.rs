//! Frames over QUIC streams: a buffered reader that yields whole messages and a writer.
//! Used by the client and by the node, so both sides read and write frames the same way; also
//! the served side's choice of compressing a chunk ([`compress_if_worth`]).
//!
//! A node reads a peer's frames with the bounds of what it expects
//! ([`FrameReader::set_bounds`], the tables of `ferry_proto::frame::FrameBounds`) and within a
//! time ([`FrameReader::set_frame_timeout`]); it writes with a stall timeout
//! ([`FrameWriter::set_stall_timeout`]) after which a stream whose reader takes nothing is
//! reset, so the buffers it held are freed.

use crate::aligned::Lease;
use bytes::{Buf, BytesMut};
use ferry_proto::frame::{CHUNK_HEADER_LEN, ChunkHeader, FrameBounds, LEN_PREFIX_LEN};
use ferry_proto::{DecodeError, Message, frame};
use std::future::Future;
use std::time::Duration;

/// Application error code of a stream reset because its reader took nothing for the stall
/// timeout ([`FrameWriter::set_stall_timeout`]).
pub const RESET_STALLED: u32 = 0x15;
/// Application error code of a stream reset because the node's policy stopped allowing the
/// answer while it was being sent (a grant revoked mid-transfer); the peer's next request is
/// told why.
pub const RESET_NO_LONGER_ALLOWED: u32 = 0x16;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("malformed frame from peer: {0}")]
    Decode(#[from] DecodeError),
    #[error("reading the local source failed: {0}")]
    Source(#[from] std::io::Error),
    #[error("stream ended in the middle of a frame ({0} bytes left over)")]
    TruncatedFrame(usize),
    #[error("no whole frame arrived within {0:?}")]
    FrameTimeout(Duration),
    #[error("the peer took none of the answer for {0:?}; the stream was reset")]
    Stalled(Duration),
}

/// Reads whole frames from a QUIC receive stream.
pub struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    /// Bytes read off the stream so far (wire bytes, including framing).
    pub bytes_read: u64,
    /// What frames may come next, and how large each may be.
    bounds: FrameBounds,
    /// How long one frame may take to arrive whole; `None`: as long as it takes.
    frame_timeout: Option<Duration>,
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            buf: BytesMut::with_capacity(64 * 1024),
            bytes_read: 0,
            bounds: FrameBounds::Any,
            frame_timeout: None,
        }
    }

    /// Frames from now on are checked against `bounds` by their length prefix and tag, before
    /// their body is read.
    pub fn set_bounds(&mut self, bounds: FrameBounds) {
        self.bounds = bounds;
    }

    /// Each frame from now on must arrive whole within `timeout` of being asked for.
    pub fn set_frame_timeout(&mut self, timeout: Option<Duration>) {
        self.frame_timeout = timeout;
    }

    /// The next message, or `None` when the peer finished the stream cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Message>, WireError> {
        within(self.frame_timeout, self.next_untimed()).await
    }

    async fn next_untimed(&mut self) -> Result<Option<Message>, WireError> {
        Ok(match self.head().await? {
            None => None,
            Some(Head::Message(msg)) => Some(msg),
            Some(Head::Chunk(h)) => {
                let mut data = BytesMut::with_capacity(h.data_len as usize);
                self.payload(&h, |piece| data.extend_from_slice(piece)).await?;
                Some(Message::Chunk {
                    file: h.file,
                    index: h.index,
                    encoding: h.encoding,
                    raw_len: h.raw_len,
                    data: data.freeze(),
                })
            }
        })
    }

    /// The next frame; a `Chunk`'s payload is copied, piece by piece as the transport delivers
    /// it, into an aligned buffer (see [`crate::aligned`]), so no received datagram
    /// buffer outlives its read. Other frames are decoded whole. Only the bytes of the current
    /// frame are read off the stream, so nothing of the next frame is copied. A bad length is
    /// refused before anything more is read.
    pub async fn next_incoming(&mut self) -> Result<Option<Incoming>, WireError> {
        within(self.frame_timeout, self.next_incoming_untimed()).await
    }

    async fn next_incoming_untimed(&mut self) -> Result<Option<Incoming>, WireError> {
        Ok(match self.head().await? {
            None => None,
            Some(Head::Message(msg)) => Some(Incoming::Message(msg)),
            Some(Head::Chunk(h)) => {
                let mut lease = Lease::take(h.data_len as usize);
                let mut rest = lease.as_mut_slice();
                self.payload(&h, |piece| gather(&mut rest, piece)).await?;
                Some(Incoming::Chunk(h, ChunkData(lease)))
            }
        })
    }

    /// A whole non-chunk frame, or a chunk frame's header with its payload left on the stream.
    async fn head(&mut self) -> Result<Option<Head>, WireError> {
        if !self.fill(LEN_PREFIX_LEN).await? {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len == 0 {
            return Err(DecodeError::EmptyFrame.into());
        }
        if u64::from(len) > u64::from(frame::MAX_FRAME_LEN) {
            return Err(
                DecodeError::FrameTooLarge { len: len.into(), max: frame::MAX_FRAME_LEN.into() }.into()
            );
        }
        if !self.fill(LEN_PREFIX_LEN + 1).await? {
            return Err(WireError::TruncatedFrame(self.buf.len()));
        }
        // The kind's bound, before anything of the body is buffered.
        self.bounds.check(self.buf[LEN_PREFIX_LEN], len)?;
        if frame::is_chunk_frame(&self.buf) {
            if !self.fill(CHUNK_HEADER_LEN).await? {
                return Err(WireError::TruncatedFrame(self.buf.len()));
            }
            let header: [u8; CHUNK_HEADER_LEN] =
                self.buf[..CHUNK_HEADER_LEN].try_into().map_err(|_| WireError::TruncatedFrame(0))?;
            let header = frame::decode_chunk_header(&header)?;
            self.buf.advance(CHUNK_HEADER_LEN);
            return Ok(Some(Head::Chunk(header)));
        }
        if !self.fill(LEN_PREFIX_LEN + len as usize).await? {
            return Err(WireError::TruncatedFrame(self.buf.len()));
        }
        match frame::decode(&mut self.buf)? {
            Some(msg) => Ok(Some(Head::Message(msg))),
            None => Err(WireError::TruncatedFrame(self.buf.len())),
        }
    }

    /// Hands the chunk's `data_len` payload bytes to `sink` in the pieces they arrive in, each
    /// piece's buffer released before the next is read. The header's length was bounded by
    /// [`frame::MAX_FRAME_LEN`] when it was decoded.
    async fn payload(&mut self, header: &ChunkHeader, mut sink: impl FnMut(&[u8])) -> Result<(), WireError> {
        let mut need = header.data_len as usize;
        if !self.buf.is_empty() {
            let take = need.min(self.buf.len());
            sink(&self.buf.split_to(take));
            need -= take;
        }
        while need > 0 {
            match self.recv.read_chunk(need, true).await? {
                Some(chunk) => {
                    self.bytes_read += chunk.bytes.len() as u64;
                    need -= chunk.bytes.len();
                    sink(&chunk.bytes);
                }
                None => return Err(WireError::TruncatedFrame(header.data_len as usize - need)),
            }
        }
        Ok(())
    }

    /// Reads until the buffer holds `want` bytes, never more. `false`: the stream ended cleanly
    /// with the buffer empty; an end inside a frame is an error.
    async fn fill(&mut self, want: usize) -> Result<bool, WireError> {
        while self.buf.len() < want {
            match self.recv.read_chunk(want - self.buf.len(), true).await? {
                Some(chunk) => {
                    self.bytes_read += chunk.bytes.len() as u64;
                    self.buf.extend_from_slice(&chunk.bytes);
                }
                None if self.buf.is_empty() => return Ok(false),
                None => return Err(WireError::TruncatedFrame(self.buf.len())),
            }
        }
        Ok(true)
    }
}

/// A frame as [`FrameReader::next_incoming`] yields it.
#[derive(Debug)]
pub enum Incoming {
    Chunk(ChunkHeader, ChunkData),
    Message(Message),
}

/// A chunk's payload, gathered into an aligned buffer that goes back to the shared idle list
/// when this is dropped.
#[derive(Debug)]
pub struct ChunkData(pub Lease);

impl ChunkData {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Copies `piece` to the front of `rest` and moves `rest` past it. The reader asks the stream
/// for at most the bytes still missing, so a piece always fits.
fn gather(rest: &mut &mut [u8], piece: &[u8]) {
    let (head, tail) = std::mem::take(rest).split_at_mut(piece.len());
    head.copy_from_slice(piece);
    *rest = tail;
}

/// What [`FrameReader::head`] read.
enum Head {
    Chunk(ChunkHeader),
    Message(Message),
}

/// Writes frames to a QUIC send stream.
pub struct FrameWriter {
    send: quinn::SendStream,
    buf: BytesMut,
    /// Bytes written to the stream so far.
    pub bytes_written: u64,
    /// How long a write may wait without the peer taking a byte before the stream is reset.
    stall_timeout: Option<Duration>,
}

impl FrameWriter {
    pub fn new(send: quinn::SendStream) -> Self {
        Self { send, buf: BytesMut::new(), bytes_written: 0, stall_timeout: None }
    }

    /// From now on, a write that makes no progress for `timeout` (the peer's flow control gives
    /// no room: it reads nothing) resets the stream with [`RESET_STALLED`], which drops what
    /// QUIC buffered for it, and fails with [`WireError::Stalled`].
    pub fn set_stall_timeout(&mut self, timeout: Option<Duration>) {
        self.stall_timeout = timeout;
    }

    /// Abandons the answer: the peer's reads fail with `code`, and nothing more is written. An
    /// answer cut off in the middle of a frame cannot be finished any other way.
    pub fn reset(&mut self, code: u32) {
        let _ = self.send.reset(quinn::VarInt::from_u32(code));
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        self.buf.clear();
        frame::encode(msg, &mut self.buf);
        let bytes = self.buf.split().freeze();
        self.bytes_written += bytes.len() as u64;
        self.write_all(&mut [bytes]).await
    }

    /// Writes every buffer, each call to QUIC bounded by the stall timeout.
    async fn write_all(&mut self, mut bufs: &mut [bytes::Bytes]) -> Result<(), WireError> {
        let Some(timeout) = self.stall_timeout else {
            self.send.write_all_chunks(bufs).await?;
            return Ok(());
        };
        while !bufs.is_empty() {
            match tokio::time::timeout(timeout, self.send.write_chunks(bufs)).await {
                Ok(written) => bufs = &mut bufs[written?.chunks..],
                Err(_) => {
                    let _ = self.send.reset(quinn::VarInt::from_u32(RESET_STALLED));
                    return Err(WireError::Stalled(timeout));
                }
            }
        }
        Ok(())
    }

    /// Sends a `ManifestData` frame whose body is `stored`, a signed manifest in its stored form
    /// ([`ferry_proto::SignedManifest::encode`]), without decoding or copying it.
    pub async fn send_stored_manifest(&mut self, stored: bytes::Bytes) -> Result<(), WireError> {
        self.buf.clear();
        frame::encode_manifest_data_header(stored.len(), &mut self.buf).ok_or(
            DecodeError::FrameTooLarge { len: stored.len() as u64 + 1, max: frame::MAX_FRAME_LEN.into() },
        )?;
        let header = self.buf.split().freeze();
        self.bytes_written += (header.len() + stored.len()) as u64;
        self.write_all(&mut [header, stored]).await
    }

    /// Sends a `Chunk` frame without copying `data`: the header and the payload go to the
    /// stream as two buffers.
    pub async fn send_chunk(
        &mut self,
        file: u32,
        index: u32,
        encoding: ferry_proto::ChunkEncoding,
        raw_len: u32,
        data: bytes::Bytes,
    ) -> Result<(), WireError> {
        self.buf.clear();
        frame::encode_chunk_header(file, index, encoding, raw_len, data.len(), &mut self.buf);
        let header = self.buf.split().freeze();
        self.bytes_written += (header.len() + data.len()) as u64;
        self.write_all(&mut [header, data]).await
    }

    /// Finishes the stream: the peer sees a clean end after the last frame.
    pub fn finish(&mut self) -> Result<(), WireError> {
        self.send.finish()?;
        Ok(())
    }
}

/// `work`, bounded by `timeout` when there is one.
async fn within<T>(
    timeout: Option<Duration>,
    work: impl Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    match timeout {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or(Err(WireError::FrameTimeout(limit))),
    }
}

/// A chunk is sent compressed only when zstd saves at least this fraction's complement
/// (Parquet pages are already compressed and never qualify).
pub const ZSTD_WORTH: f64 = 0.9;

/// Slices of a chunk zstd tries before the whole: [`PROBE_SLICES`] of this many bytes, spread
/// evenly over the chunk.
pub const PROBE_SLICE: usize = 16 * 1024;
/// How many probe slices; together 64 KiB, a sixteenth of a 1 MiB chunk.
pub const PROBE_SLICES: usize = 4;

/// zstd level 1 of `raw`, or `None` when it does not shrink the chunk by a tenth.
///
/// A chunk larger than twice the probe is first judged by the probe: when the slices spread over
/// it do not shrink by a tenth, the chunk is sent raw without compressing the rest. Served data is
/// mostly Parquet with compressed pages, so this turns most of the cost of asking (and its
/// megabyte-sized scratch allocations) into a sixteenth. CPU-bound: call it off the async threads.
pub fn compress_if_worth(raw: &[u8]) -> Option<Vec<u8>> {
    let probe_len = PROBE_SLICE * PROBE_SLICES;
    if raw.len() > 2 * probe_len {
        let stride = raw.len() / PROBE_SLICES;
        let mut probe = Vec::with_capacity(probe_len);
        for i in 0..PROBE_SLICES {
            probe.extend_from_slice(&raw[i * stride..i * stride + PROBE_SLICE]);
        }
        if !shrinks(&zstd::bulk::compress(&probe, 1).ok()?, probe.len()) {
            return None;
        }
    }
    let small = zstd::bulk::compress(raw, 1).ok()?;
    shrinks(&small, raw.len()).then_some(small)
}

fn shrinks(compressed: &[u8], raw_len: usize) -> bool {
    (compressed.len() as f64) < raw_len as f64 * ZSTD_WORTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathering_pieces_gives_the_whole() {
        let whole: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let expected = blake3::hash(&whole);
        for cuts in [vec![], vec![1], vec![8_951, 17_902, 100_000], vec![16_384, 16_385, 50_000, 199_999]] {
            let mut data = ChunkData(Lease::take(whole.len()));
            data.0.as_mut_slice().fill(0xa5);
            let mut rest = data.0.as_mut_slice();
            let mut start = 0;
            for cut in cuts.iter().copied().chain([whole.len()]) {
                gather(&mut rest, &whole[start..cut]);
                start = cut;
            }
            assert!(rest.is_empty());
            assert_eq!(data.len(), whole.len());
            assert_eq!(blake3::hash(data.as_slice()), expected, "cuts {cuts:?}");
        }
    }

    fn text(len: usize) -> Vec<u8> {
        b"plate=ZJ-A12345 owner=province-operator status=registered "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn compression_is_used_only_where_it_pays() {
        let mib = 1 << 20;
        let small = compress_if_worth(&text(mib)).expect("text compresses");
        assert_eq!(zstd::bulk::decompress(&small, mib).unwrap(), text(mib));
        assert!(compress_if_worth(&noise(mib, 7)).is_none(), "random bytes are sent raw");
        // Chunks too small for a probe are judged whole.
        assert!(compress_if_worth(&text(1000)).is_some());
        assert!(compress_if_worth(&noise(1000, 3)).is_none());
        // The probe is spread: a first 64 KiB of noise does not hide a compressible chunk.
        let mut mixed = noise(PROBE_SLICE * PROBE_SLICES, 5);
        mixed.extend(text(mib - PROBE_SLICE * PROBE_SLICES));
        assert!(compress_if_worth(&mixed).is_some());
        // A probe that passes does not decide alone: the whole chunk must shrink too.
        let mut striped = noise(mib, 9);
        let stride = mib / PROBE_SLICES;
        for i in 0..PROBE_SLICES {
            striped[i * stride..i * stride + PROBE_SLICE].copy_from_slice(&text(PROBE_SLICE));
        }
        assert!(compress_if_worth(&striped).is_none());
    }
}
