//! # ferry-proto — the ferry wire protocol, without I/O
//!
//! This crate is the specification of what two ferry nodes (or a node and the `ferry` CLI) say to
//! each other. It holds identifiers, the framing, every message, the dataset-version manifest and
//! the checks on all of them. It performs no I/O, reads no clock and spawns nothing: callers hand it
//! bytes and get typed values or typed errors back. Its neighbours: `ferry-client` (the QUIC client
//! and transfer engine) and `ferry-daemon` (the node) both speak through it.
//!
//! ## Goals
//! - A small, explicit binary format that is cheap to parse and impossible to make allocate more
//!   than a hard bound ([`frame::MAX_FRAME_LEN`]).
//! - Stable tags: a message tag byte is never reused for a different meaning.
//! - Every error a peer can cause is a typed value with a stable [`ErrorCode`].
//!
//! ## Non-goals
//! - Transport security: that is QUIC + TLS 1.3 with mutual authentication. The ALPN string
//!   [`ALPN`] carries the protocol's major version; a node refuses any other.
//! - Compression of metadata; only chunk payloads may be zstd-compressed, and only where it pays.
//!
//! ## Message flow
//!
//! Each request opens one bidirectional QUIC stream, sends exactly one request frame and finishes
//! its send side; the node answers on the same stream and finishes it. The policy stream is the
//! one long-lived answer: it stays open, one `PolicySnapshot` per change, until either side goes.
//!
//! ```text
//! client                                   node
//!   | Hello{minor, agent}           ---->    |
//!   |                               <----    | HelloAck{node, node_dept, peer_dept, peer_role}
//!   | ListDatasets                  ---->    |
//!   |                               <----    | DatasetList{datasets}
//!   | ListVersions{dataset}         ---->    |
//!   |                               <----    | VersionList{dataset, versions}
//!   | GetManifest{dataset, version?} --->    |
//!   |                               <----    | ManifestData{signed manifest}
//!   | GetChunks{dataset, version, file, first, count, accept_zstd} -> |
//!   |                               <----    | ChunkHashes{file, page, hashes} x pages touched
//!   |                               <----    | Chunk{file, index, encoding, raw_len, data} x count
//!   |                               <----    | ChunksDone{file, sent}
//!   | PublishBegin{definition, format, mode, size} --> (operator of the node only)
//!   | PublishData{data} x n ... PublishEnd{blake3}  ->  |
//!   |                               <----    | Published{dataset, version, rows, bytes}
//!   |                                        |   or Unchanged{dataset, version}
//!   | Replicate{peer, dataset, version?} ->  | (operator: node pulls from a peer node)
//!   |                               <----    | Replicated{dataset, version, bytes_fetched, files}
//!   | PolicySubscribe{have?}        ---->    | (nodes only: follow the catalog policy)
//!   |                               <----    | PolicySnapshot{signed} now and at every change
//!   | ControlCall{request: JSON}    ---->    | (the ministry node: catalog, notices, audit, receipts)
//!   |                               <----    | ControlAnswer{answer: JSON}
//! ```
//!
//! Any request may instead be answered by `Error{code, message}`, after which the node finishes
//! the stream. A `GetChunks` answer may end early with an `Error` (for example when the node is
//! draining); the chunks already sent are valid.
//!
//! A `GetChunks` answer opens with the pages of chunk hashes its chunks need
//! ([`manifest::ChunkPage`]), each checked by the receiver against the page hash in the signed
//! manifest before any chunk is; so the manifest stays small however large the version is.
//!
//! ## Framing
//!
//! `frame = len:u32be tag:u8 body`, where `len` counts the tag and the body and must not exceed
//! [`frame::MAX_FRAME_LEN`]. Integers in bodies are big-endian fixed width; strings and byte
//! strings are `len:u32be bytes` and bounded by the frame; optional values are `0x00` or `0x01 value`;
//! lists are `count:u32be items`. A frame whose body has bytes left over is malformed.
//!
//! A body holds the fields of its [`Message`] variant in declaration order (tags are on the
//! variants). Field encodings: `bool` is `0x00`/`0x01` (any other byte is invalid); `Role` and
//! `ShareType` are their `code()` byte; `ChunkEncoding` (Raw 0, Zstd 1), `SourceFormat` (Csv 0,
//! Parquet 1) and `PublishMode` (Snapshot 0, Append 1) one byte; [`ErrorCode`] a `u16`; ids
//! ([`DeptId`], [`DatasetId`]) are strings that must parse; [`VersionNo`] a `u64` that must not be 0;
//! a BLAKE3 hash 32 raw bytes; payloads byte strings. A [`SignedManifest`] is
//! `body:bytes signature:bytes signer_chain:list<bytes>`, both as the `ManifestData` body and as
//! the stored `manifest.signed`. Each message has exactly one encoding, pinned by golden byte tests.
//!
//! A sender checks [`frame::fits`] (or [`frame::encoded_len`]) before framing anything whose size
//! it does not control; chunk and publish payloads are split to stay within the bound.

pub mod authz;
pub mod error;
pub mod exchange;
pub mod filter;
pub mod frame;
mod fuzz;
pub mod ids;
pub mod manifest;
pub mod message;
pub mod node_api;
pub mod path;
pub mod policy;
pub mod principal;
pub mod query;
pub mod signed;
mod wire;

#[cfg(test)]
mod arb;

pub use error::{DecodeError, ErrorCode};
pub use ids::{DatasetId, DeptId, IdError, JobPriority, Role, ServiceMethod, ShareType, VersionNo};
pub use manifest::{
    CHUNK_HASH_LEN, CHUNKS_PER_PAGE, ChunkPage, DeltaCounts, FileEntry, FileRole, Hash32, Manifest,
    ManifestError, PageError, PageHasher, RESERVED_NAMES, SignedManifest, TableFile, TableLayout,
    VersionKind,
};
pub use message::{ChunkEncoding, DatasetSummary, Message, PublishMode, SourceFormat, VersionSummary};
pub use path::{NameClash, NameSet, PathError, RelPath};
pub use principal::Principal;
pub use signed::SignedDocument;

#[doc(hidden)]
pub use fuzz::fuzz_decode;

/// ALPN protocol id: the major version of this protocol. Bumped only for incompatible changes.
pub const ALPN: &[u8] = b"ferry/1";

/// Minor protocol version sent in `Hello`; compatible additions bump it.
pub const PROTOCOL_MINOR: u16 = 0;
