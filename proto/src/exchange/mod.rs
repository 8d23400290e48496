//! The message sequences both ends of a stream speak, defined once, without I/O.
//!
//! [`crate::frame`] says how one message looks on the wire; this module says which messages may
//! follow which within one request stream. Each sequence is a pair of plain state machines, in
//! the manner of quinn-proto: the receiving side is fed the frames it reads and returns a typed
//! event (what to do with the frame) or a typed error (the peer broke the sequence; the stream is
//! out of step and must end); the sending side says what to send next. Neither touches a socket,
//! a file or a clock, so `ferry-client`, `ferry-daemon` and the tests drive the same definition.
//!
//! ## Sequences
//!
//! - [`chunks`]: the answer to `GetChunks`. The node sends every page of chunk hashes the asked
//!   chunks need (`ChunkHashes`, in page order, each exactly once), then one `Chunk` per asked
//!   index in ascending order, then `ChunksDone{sent = count}`. An `Error` frame may end the
//!   answer at any point; chunks received before it stay valid. Sender: [`ChunkRange::plan`];
//!   receiver: [`ChunkAnswer`].
//! - [`upload`]: a publish. After `PublishBegin{size}` the client sends `PublishData` frames
//!   whose running total never exceeds `size`, then `PublishEnd{blake3}` of exactly `size`
//!   bytes. Sender: [`UploadSender`] (it splits payloads to fit the frame bound); receiver:
//!   [`UploadReceiver`] (it keeps the BLAKE3 hasher and checks the total and the end hash).
//! - [`policy`]: the policy push. `PolicySubscribe{have: Option<u64>}` from a node, then
//!   `PolicySnapshot{signed}` frames from the node it follows, at once and at every change, whose
//!   serials never decrease; an `Error` ends the stream. Sender: [`PolicyPublisher`]; receiver:
//!   [`PolicyFollower`] (the signature is the replica's to check).

use crate::message::Message;

pub mod chunks;
pub mod policy;
pub mod upload;

#[cfg(test)]
mod tests;

pub use chunks::SequenceError;
pub use chunks::{AnswerEvent, AnswerPlan, AnswerStep, ChunkAnswer, ChunkRange, ExpectedChunk, RangeError};
pub use policy::{PolicyEvent, PolicyFollower, PolicyPublisher, PolicyStreamError};
pub use upload::{MAX_PUBLISH_DATA, UploadError, UploadEvent, UploadReceiver, UploadSender};

/// The name of a message's variant, for error reports (`"ChunkHashes"`); never its payload. The
/// match is exhaustive, so a new message cannot be reported as something else.
pub fn message_name(msg: &Message) -> &'static str {
    match msg {
        Message::Announce { .. } => "Announce",
        Message::Chunk { .. } => "Chunk",
        Message::ChunkHashes { .. } => "ChunkHashes",
        Message::ChunksDone { .. } => "ChunksDone",
        Message::ControlAnswer { .. } => "ControlAnswer",
        Message::ControlCall { .. } => "ControlCall",
        Message::DatasetList { .. } => "DatasetList",
        Message::Error { .. } => "Error",
        Message::ForGrant { .. } => "ForGrant",
        Message::GetChunks { .. } => "GetChunks",
        Message::GetManifest { .. } => "GetManifest",
        Message::Hello { .. } => "Hello",
        Message::HelloAck { .. } => "HelloAck",
        Message::Holding { .. } => "Holding",
        Message::ListDatasets => "ListDatasets",
        Message::ListVersions { .. } => "ListVersions",
        Message::ManifestData { .. } => "ManifestData",
        Message::PolicySnapshot { .. } => "PolicySnapshot",
        Message::PolicySubscribe { .. } => "PolicySubscribe",
        Message::PublishBegin { .. } => "PublishBegin",
        Message::PublishData { .. } => "PublishData",
        Message::PublishEnd { .. } => "PublishEnd",
        Message::Published { .. } => "Published",
        Message::Query { .. } => "Query",
        Message::QueryData { .. } => "QueryData",
        Message::QueryDone { .. } => "QueryDone",
        Message::Replicate { .. } => "Replicate",
        Message::Replicated { .. } => "Replicated",
        Message::Subscribe { .. } => "Subscribe",
        Message::Unchanged { .. } => "Unchanged",
        Message::VersionList { .. } => "VersionList",
    }
}
