//! Framing: `len:u32be tag:u8 body`. Encoding appends to a buffer; decoding is incremental and
//! never allocates more than [`MAX_FRAME_LEN`] for one frame.
//!
//! The body layout of each message is in the private `codec` module; primitive encodings are in
//! `crate::wire`. Decoding is strict, so a message has exactly one encoding: decoding then
//! re-encoding a frame gives back the same bytes.

mod bounds;
mod codec;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

pub use bounds::{
    FrameBounds, MAX_DOCUMENT_REQUEST_LEN, MAX_HELLO_LEN, MAX_PUBLISH_END_LEN, MAX_SMALL_REQUEST_LEN,
};

use crate::error::DecodeError;
use crate::message::Message;
use crate::wire::{Counter, Reader, Sink};
use bytes::{Buf, Bytes, BytesMut};

/// Largest frame (tag + body) accepted or produced: a maximum chunk plus headroom.
pub const MAX_FRAME_LEN: u32 = 8 * 1024 * 1024 + 4096;

/// Bytes of the `len:u32be` prefix in front of every frame.
pub const LEN_PREFIX_LEN: usize = 4;

/// Number of bytes [`encode`] appends for `msg`: the 4-byte length prefix, the tag byte and the
/// body. Computed without encoding.
///
/// A message may be sent only if it [`fits`], i.e. `encoded_len(msg) - 4 <= MAX_FRAME_LEN`.
/// Sending a bigger one is a programming error of the caller (split the data into more
/// `Chunk`/`PublishData` frames instead): [`encode`] asserts it in debug builds, and a peer refuses
/// such a frame with [`DecodeError::FrameTooLarge`].
pub fn encoded_len(msg: &Message) -> usize {
    LEN_PREFIX_LEN + frame_len(msg)
}

/// Whether `msg` can be framed within [`MAX_FRAME_LEN`].
pub fn fits(msg: &Message) -> bool {
    frame_len(msg) <= MAX_FRAME_LEN as usize
}

/// Tag plus body length.
fn frame_len(msg: &Message) -> usize {
    let mut counter = Counter::default();
    codec::write_body(msg, &mut counter);
    counter.0.saturating_add(1)
}

/// Appends the frame of `msg` to `out`.
///
/// The message must [`fits`] in a frame; see [`encoded_len`].
pub fn encode(msg: &Message, out: &mut BytesMut) {
    let len = frame_len(msg);
    debug_assert!(
        len <= MAX_FRAME_LEN as usize,
        "message {:#04x} needs a {len}-byte frame; the maximum is {MAX_FRAME_LEN}",
        msg.tag()
    );
    out.reserve(LEN_PREFIX_LEN + len);
    out.len_prefix(len);
    out.byte(msg.tag());
    codec::write_body(msg, out);
}

/// Everything of a `Chunk` frame that comes before its payload bytes: length prefix, tag, the
/// fixed fields and the payload's length. `header + data` is exactly `encode(&Message::Chunk{..})`,
/// so a sender can hand the payload to the transport without copying it into the frame.
pub fn encode_chunk_header(
    file: u32,
    index: u32,
    encoding: crate::ChunkEncoding,
    raw_len: u32,
    data_len: usize,
    out: &mut BytesMut,
) {
    // tag + file + index + encoding + raw_len + payload length prefix + payload
    let len = 1 + 4 + 4 + 1 + 4 + 4 + data_len;
    debug_assert!(len <= MAX_FRAME_LEN as usize, "a {len}-byte chunk frame exceeds the maximum");
    out.reserve(LEN_PREFIX_LEN + len - data_len);
    out.len_prefix(len);
    out.byte(crate::message::tag::CHUNK);
    out.be32(file);
    out.be32(index);
    out.byte(encoding.code());
    out.be32(raw_len);
    out.len_prefix(data_len);
}

/// The length prefix and tag of a `ManifestData` frame whose body is `stored_len` bytes of a
/// stored signed manifest ([`crate::SignedManifest::encode`]): `header + stored` is exactly
/// `encode(&Message::ManifestData { signed })`, so a node can send what it stored without
/// decoding it. `None` when such a frame would exceed [`MAX_FRAME_LEN`].
pub fn encode_manifest_data_header(stored_len: usize, out: &mut BytesMut) -> Option<()> {
    let len = stored_len.checked_add(1).filter(|&len| len <= MAX_FRAME_LEN as usize)?;
    out.reserve(LEN_PREFIX_LEN + 1);
    out.len_prefix(len);
    out.byte(crate::message::tag::MANIFEST_DATA);
    Some(())
}

/// Bytes of a `Chunk` frame before its payload: length prefix, tag, file, index, encoding,
/// raw_len and the payload's length (what [`encode_chunk_header`] writes).
pub const CHUNK_HEADER_LEN: usize = LEN_PREFIX_LEN + 1 + 4 + 4 + 1 + 4 + 4;

/// The fields of a `Chunk` frame that come before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub file: u32,
    pub index: u32,
    pub encoding: crate::ChunkEncoding,
    pub raw_len: u32,
    /// Payload bytes that follow the header; exactly the rest of the frame.
    pub data_len: u32,
}

/// Whether the frame starting at `start` (at least 5 bytes: length prefix and tag) is a `Chunk`.
pub fn is_chunk_frame(start: &[u8]) -> bool {
    start.get(LEN_PREFIX_LEN) == Some(&crate::message::tag::CHUNK)
}

/// Parses the header of a `Chunk` frame, so a receiver can take the payload off the transport
/// piece by piece instead of gathering the frame into one buffer. Checks what [`decode`] checks
/// before the payload: the frame length, the tag, the encoding, and that the payload is exactly
/// the rest of the frame.
pub fn decode_chunk_header(header: &[u8; CHUNK_HEADER_LEN]) -> Result<ChunkHeader, DecodeError> {
    let be32 = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let len = be32(0);
    check_len(u64::from(len))?;
    let tag = header[LEN_PREFIX_LEN];
    if tag != crate::message::tag::CHUNK {
        return Err(DecodeError::InvalidField { field: "tag", reason: format!("{tag:#04x} is not a chunk") });
    }
    let fixed = (CHUNK_HEADER_LEN - LEN_PREFIX_LEN) as u32;
    if len < fixed {
        return Err(DecodeError::Truncated { tag, field: "data", needed: (fixed - len) as usize });
    }
    let code = header[13];
    let encoding = crate::ChunkEncoding::from_code(code).ok_or_else(|| DecodeError::InvalidField {
        field: "encoding",
        reason: format!("unknown code {code:#04x}"),
    })?;
    let data_len = be32(18);
    let rest = len - fixed;
    if data_len > rest {
        return Err(DecodeError::Truncated { tag, field: "data", needed: (data_len - rest) as usize });
    }
    if data_len < rest {
        return Err(DecodeError::TrailingBytes { tag, extra: (rest - data_len) as usize });
    }
    Ok(ChunkHeader { file: be32(5), index: be32(9), encoding, raw_len: be32(14), data_len })
}

/// Takes one whole frame off the front of `buf` and decodes it. `Ok(None)`: need more bytes.
/// A length over [`MAX_FRAME_LEN`] is refused as soon as the 4 length bytes are in.
///
/// On `Ok(None)` and on a bad length (`FrameTooLarge`, `EmptyFrame`) `buf` is left as it was; on
/// any other error the bad frame has been taken off. Either way, after an error the stream is out
/// of step and must be closed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
    let Some(prefix) = buf.get(..LEN_PREFIX_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    check_len(u64::from(len))?;
    // Checked against MAX_FRAME_LEN just now, so this fits in usize.
    let total = LEN_PREFIX_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame: Bytes = buf.split_to(total).freeze();
    frame.advance(LEN_PREFIX_LEN);
    let (tag, body) = match frame.split_first() {
        Some((&tag, body)) => (tag, body),
        None => return Err(DecodeError::EmptyFrame),
    };
    decode_tagged(Reader::with_owner(&frame, body, tag)).map(Some)
}

/// Decodes a message from the bytes of exactly one frame body (tag + body, no length prefix).
///
/// Payloads (`Chunk::data`, `PublishData::data`) are copied out of `frame`; [`decode`] slices them
/// from its buffer instead.
pub fn decode_body(frame: &[u8]) -> Result<Message, DecodeError> {
    check_len(frame.len() as u64)?;
    let Some((&tag, body)) = frame.split_first() else {
        return Err(DecodeError::EmptyFrame);
    };
    decode_tagged(Reader::new(body, tag))
}

fn check_len(len: u64) -> Result<(), DecodeError> {
    if len == 0 {
        Err(DecodeError::EmptyFrame)
    } else if len > u64::from(MAX_FRAME_LEN) {
        Err(DecodeError::FrameTooLarge { len, max: u64::from(MAX_FRAME_LEN) })
    } else {
        Ok(())
    }
}

fn decode_tagged(mut reader: Reader<'_>) -> Result<Message, DecodeError> {
    let msg = codec::read_body(&mut reader)?;
    reader.finish()?;
    Ok(msg)
}
