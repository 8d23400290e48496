//! Frames over QUIC streams: a buffered reader that yields whole messages and a writer.
//! Used by the client and by the node, so both sides read and write frames the same way.

use bytes::BytesMut;
use ferry_proto::{DecodeError, Message, frame};

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
}

/// Reads whole frames from a QUIC receive stream.
pub struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    /// Bytes read off the stream so far (wire bytes, including framing).
    pub bytes_read: u64,
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self { recv, buf: BytesMut::with_capacity(64 * 1024), bytes_read: 0 }
    }

    /// The next message, or `None` when the peer finished the stream cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Message>, WireError> {
        loop {
            if let Some(msg) = frame::decode(&mut self.buf)? {
                return Ok(Some(msg));
            }
            match self.recv.read_chunk(usize::MAX, true).await? {
                Some(chunk) => {
                    self.bytes_read += chunk.bytes.len() as u64;
                    self.buf.extend_from_slice(&chunk.bytes);
                }
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(WireError::TruncatedFrame(self.buf.len())),
            }
        }
    }
}

/// Writes frames to a QUIC send stream.
pub struct FrameWriter {
    send: quinn::SendStream,
    buf: BytesMut,
    /// Bytes written to the stream so far.
    pub bytes_written: u64,
}

impl FrameWriter {
    pub fn new(send: quinn::SendStream) -> Self {
        Self { send, buf: BytesMut::new(), bytes_written: 0 }
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        self.buf.clear();
        frame::encode(msg, &mut self.buf);
        let bytes = self.buf.split().freeze();
        self.bytes_written += bytes.len() as u64;
        self.send.write_chunk(bytes).await?;
        Ok(())
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
        self.send.write_all_chunks(&mut [header, data]).await?;
        Ok(())
    }

    /// Finishes the stream: the peer sees a clean end after the last frame.
    pub fn finish(&mut self) -> Result<(), WireError> {
        self.send.finish()?;
        Ok(())
    }
}

/// A chunk is sent compressed only when zstd saves at least this fraction's complement
/// (Parquet pages are already compressed and never qualify).
pub const ZSTD_WORTH: f64 = 0.9;

/// zstd level 1 of `raw`, or `None` when it does not shrink the chunk by a tenth.
/// CPU-bound: call it off the async threads.
pub fn compress_if_worth(raw: &[u8]) -> Option<Vec<u8>> {
    let small = zstd::bulk::compress(raw, 1).ok()?;
    ((small.len() as f64) < raw.len() as f64 * ZSTD_WORTH).then_some(small)
}
