//! A publish upload: `PublishBegin{size}`, `PublishData` frames adding up to at most `size`
//! bytes, `PublishEnd{blake3}` after exactly `size` bytes.
//!
//! [`UploadSender`] is the client's side (it splits payloads to fit a frame and hashes what it
//! sends); [`UploadReceiver`] is the node's (it counts and hashes what arrives and checks the
//! end). The node answers the upload itself (`Published`, `Unchanged` or `Error`) after
//! [`UploadEvent::Complete`]; that answer is not part of this sequence.

use crate::error::ErrorCode;
use crate::frame::MAX_FRAME_LEN;
use crate::message::{Message, PublishMode, SourceFormat};
use bytes::Bytes;

/// Most payload bytes one `PublishData` frame carries: the frame bound less the tag byte and the
/// payload's length prefix.
pub const MAX_PUBLISH_DATA: usize = MAX_FRAME_LEN as usize - 1 - 4;

/// Why an upload broke its sequence. Each has the code the node answers with ([`UploadError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: &'static str },
    #[error("upload exceeds the announced {size} bytes")]
    Overrun { size: u64 },
    #[error("upload has {received} bytes, {size} announced")]
    Short { received: u64, size: u64 },
    #[error("upload does not match its BLAKE3")]
    HashMismatch,
    #[error("upload ended without PublishEnd after {received} of {size} bytes")]
    Truncated { received: u64, size: u64 },
    #[error("a frame after PublishEnd")]
    AfterEnd,
}

impl UploadError {
    /// The code a node answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Overrun { .. } => ErrorCode::TooLarge,
            Self::Short { .. } | Self::HashMismatch => ErrorCode::InvalidData,
            Self::Unexpected { .. } | Self::Truncated { .. } | Self::AfterEnd => ErrorCode::BadRequest,
        }
    }
}

/// What a frame of an upload means to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEvent {
    /// Source bytes, counted and hashed: store them.
    Data(Bytes),
    /// `PublishEnd` after exactly the announced bytes, with their BLAKE3.
    Complete { bytes: u64 },
}

/// The node's side of an upload announced by `PublishBegin{size}`.
#[derive(Debug, Clone)]
pub struct UploadReceiver {
    size: u64,
    received: u64,
    hasher: blake3::Hasher,
    ended: bool,
}

impl UploadReceiver {
    pub fn new(size: u64) -> Self {
        Self { size, received: 0, hasher: blake3::Hasher::new(), ended: false }
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes the next frame after `PublishBegin`. After an error the upload is over.
    pub fn handle(&mut self, msg: Message) -> Result<UploadEvent, UploadError> {
        let result = self.step(msg);
        if result.is_err() {
            self.ended = true;
        }
        result
    }

    /// The stream ended: an error unless `PublishEnd` came first.
    pub fn finish(&self) -> Result<(), UploadError> {
        if self.ended {
            Ok(())
        } else {
            Err(UploadError::Truncated { received: self.received, size: self.size })
        }
    }

    fn step(&mut self, msg: Message) -> Result<UploadEvent, UploadError> {
        if self.ended {
            return Err(UploadError::AfterEnd);
        }
        match msg {
            Message::PublishData { data } => {
                let received = self.received.saturating_add(data.len() as u64);
                if received > self.size {
                    return Err(UploadError::Overrun { size: self.size });
                }
                self.received = received;
                self.hasher.update(&data);
                Ok(UploadEvent::Data(data))
            }
            Message::PublishEnd { blake3 } => {
                if self.received != self.size {
                    return Err(UploadError::Short { received: self.received, size: self.size });
                }
                if self.hasher.finalize().as_bytes() != &blake3 {
                    return Err(UploadError::HashMismatch);
                }
                self.ended = true;
                Ok(UploadEvent::Complete { bytes: self.received })
            }
            other => Err(UploadError::Unexpected {
                expected: "PublishData or PublishEnd",
                got: super::message_name(&other),
            }),
        }
    }
}

/// The client's side of an upload of `size` bytes.
#[derive(Debug, Clone)]
pub struct UploadSender {
    size: u64,
    sent: u64,
    hasher: blake3::Hasher,
}

impl UploadSender {
    /// The `PublishBegin` that opens the upload, and the sender of its bytes.
    pub fn begin(definition: String, format: SourceFormat, mode: PublishMode, size: u64) -> (Message, Self) {
        let begin = Message::PublishBegin { definition, format, mode, size };
        (begin, Self { size, sent: 0, hasher: blake3::Hasher::new() })
    }

    /// Bytes still to send.
    pub fn remaining(&self) -> u64 {
        self.size - self.sent
    }

    /// The `PublishData` frames that carry `data`, each within the frame bound. Refused, with
    /// nothing counted, if `data` would take the upload past its announced size.
    pub fn data(&mut self, data: Bytes) -> Result<impl Iterator<Item = Message> + use<>, UploadError> {
        if data.len() as u64 > self.remaining() {
            return Err(UploadError::Overrun { size: self.size });
        }
        self.sent += data.len() as u64;
        self.hasher.update(&data);
        let pieces = data.len().div_ceil(MAX_PUBLISH_DATA);
        Ok((0..pieces).map(move |i| {
            let end = ((i + 1) * MAX_PUBLISH_DATA).min(data.len());
            Message::PublishData { data: data.slice(i * MAX_PUBLISH_DATA..end) }
        }))
    }

    /// The `PublishEnd` that closes the upload, once exactly `size` bytes went out.
    pub fn end(self) -> Result<Message, UploadError> {
        if self.sent != self.size {
            return Err(UploadError::Short { received: self.sent, size: self.size });
        }
        Ok(Message::PublishEnd { blake3: *self.hasher.finalize().as_bytes() })
    }
}
