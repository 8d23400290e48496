//! Every message of the protocol, with its tag byte. Encoding and decoding live in [`crate::frame`].

use crate::error::ErrorCode;
use crate::ids::{DatasetId, DeptId, JobPriority, Role, ServiceMethod, ShareType, VersionNo};
use crate::manifest::{SignedManifest, VersionKind};
use bytes::Bytes;

/// How a chunk payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEncoding {
    /// The chunk's bytes as stored.
    Raw,
    /// zstd frame; decompresses to exactly `raw_len` bytes.
    Zstd,
}

/// Format of a file handed to `ferry publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Csv,
    Parquet,
}

/// How a publish relates to the previous version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// The file is the whole table.
    Snapshot,
    /// The file holds only new rows of an append-only dataset.
    Append,
}

/// One line of a `DatasetList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    pub id: DatasetId,
    pub name: String,
    pub publisher: DeptId,
    pub share_type: ShareType,
    pub latest: Option<VersionNo>,
}

/// One line of a `VersionList`: what a node holds of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    pub version: VersionNo,
    /// `Snapshot` when the whole table is stored; `Delta` when only the change is.
    pub kind: VersionKind,
    pub parent: Option<VersionNo>,
    /// Rows of the table at this version.
    pub rows: u64,
    /// Bytes of the stored delta files (0 for a first version).
    pub delta_bytes: u64,
    /// Bytes of the stored snapshot files (0 when only the delta is stored).
    pub snapshot_bytes: u64,
}

/// A protocol message. The comment on each variant is its tag byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0x01: first request on a connection.
    Hello { minor: u16, agent: String },
    /// 0x02: the node's answer to `Hello`, saying who it is and who it saw.
    HelloAck { node: String, node_dept: DeptId, peer_dept: DeptId, peer_role: Role },
    /// 0x10
    ListDatasets,
    /// 0x11
    DatasetList { datasets: Vec<DatasetSummary> },
    /// 0x12: which versions of a dataset the node holds. `method` is the service method the
    /// read is made under (see [`Message::GetChunks`]).
    ListVersions { dataset: DatasetId, method: ServiceMethod },
    /// 0x15: a read (`ListVersions`, `GetManifest` or `GetChunks`, as `read`) that the
    /// ministry's hub makes for grant `grant` of another department, to serve that grant's
    /// holder: the provider's node answers with what the grant allows (its restricted versions,
    /// signed by the provider), and only to the hub (`ferry_proto::policy`, read for a grant).
    /// Any other `read` is refused when decoded.
    ForGrant { grant: u64, read: Box<Message> },
    /// 0x13: oldest first.
    VersionList { dataset: DatasetId, versions: Vec<VersionSummary> },
    /// 0x20: `version: None` asks for the latest; `method` as for [`Message::GetChunks`].
    GetManifest { dataset: DatasetId, version: Option<VersionNo>, method: ServiceMethod },
    /// 0x21
    ManifestData { signed: SignedManifest },
    /// 0x30: chunks `first..first+count` of file number `file` of the manifest. `method` is the
    /// service method the read is made under: `Download` (a pull, by hand or by schedule, or a
    /// node's replication) or `Subscription` (the pull that follows an [`Message::Announce`]).
    /// A `Download` read keeps the ferry/1.0 frame (tag 0x30); a read under another method is
    /// tag 0x34 with the method's code as a last byte (likewise 0x14 and 0x22 for the other
    /// two reads), so each read has one encoding and 1.0 peers see a tag they refuse.
    /// `priority` is the puller's job's class ([`JobPriority`]): declared, the read is tag 0x35
    /// with the method's code and the class's code as its last two bytes; `None` (what every
    /// older puller sends) leaves the class to the certificate's role, as before.
    GetChunks {
        dataset: DatasetId,
        version: VersionNo,
        file: u32,
        first: u32,
        count: u32,
        accept_zstd: bool,
        method: ServiceMethod,
        priority: Option<JobPriority>,
    },
    /// 0x31
    Chunk { file: u32, index: u32, encoding: ChunkEncoding, raw_len: u32, data: Bytes },
    /// 0x32: end of a `GetChunks` answer.
    ChunksDone { file: u32, sent: u32 },
    /// 0x33: page `page` of file `file`'s chunk hashes, 32 bytes per chunk
    /// ([`crate::ChunkPage`]). A `GetChunks` answer sends, before the chunks, every page that
    /// holds a hash of one of them.
    ChunkHashes { file: u32, page: u32, hashes: Bytes },
    /// 0x40: `definition` is the dataset definition document (TOML, UTF-8); `size` the source bytes.
    PublishBegin { definition: String, format: SourceFormat, mode: PublishMode, size: u64 },
    /// 0x41
    PublishData { data: Bytes },
    /// 0x42: BLAKE3 of all source bytes sent.
    PublishEnd { blake3: [u8; 32] },
    /// 0x43
    Published { dataset: DatasetId, version: VersionNo, rows: u64, bytes: u64 },
    /// 0x44: the published table equals the latest version; no version was made.
    Unchanged { dataset: DatasetId, version: VersionNo },
    /// 0x50: ask the node to pull a dataset version from the peer it knows by this name.
    Replicate { peer: String, dataset: DatasetId, version: Option<VersionNo> },
    /// 0x51
    Replicated { dataset: DatasetId, version: VersionNo, bytes_fetched: u64, files: u32 },
    /// 0x60: a node asks for the signed policy snapshot (the catalog state it enforces) and to
    /// be sent each newer one on the same stream; `have` is the serial it holds.
    PolicySubscribe { have: Option<u64> },
    /// 0x61: a signed policy snapshot, as the control plane signed it (a `SignedDocument`'s
    /// encoding). Serials on one stream never decrease; the same serial re-sent is a refresh.
    PolicySnapshot { signed: Bytes },
    /// 0x70: a control-plane call (catalog, notices, audit, receipts): a JSON document whose
    /// schema is the control plane's API. Answered by `ControlAnswer` or `Error`.
    ControlCall { request: String },
    /// 0x71: the JSON answer to a `ControlCall`.
    ControlAnswer { answer: String },
    /// 0x80: subscribe to the versions of `dataset` (service method `Subscription`). The stream
    /// stays open: the node answers an [`Message::Announce`] of the latest version it holds at
    /// once (when newer than `have`), then one for each version it commits later, until either
    /// side ends the stream or an `Error` frame does. The subscriber sends [`Message::Holding`]
    /// frames on the same stream to say what it holds.
    Subscribe { dataset: DatasetId, have: Option<VersionNo> },
    /// 0x81: the node holds `version` of `dataset`, published by `publisher`, committed at
    /// `committed_ms` (Unix milliseconds, the node's clock).
    Announce { dataset: DatasetId, version: VersionNo, publisher: DeptId, committed_ms: u64 },
    /// 0x82: subscriber → node on a `Subscribe` stream: the version of the dataset it now holds
    /// (committed), `None` when none yet.
    Holding { dataset: DatasetId, version: Option<VersionNo> },
    /// 0x90: an online query (service method `OnlineQuery`) on `dataset` at `version` (`None`:
    /// the latest). `query` is the query's canonical JSON (`ferry_proto::query`). Answered by
    /// `QueryData` frames, then `QueryDone`, or an `Error`.
    Query { dataset: DatasetId, version: Option<VersionNo>, query: String },
    /// 0x91: the next piece of a query's result, in the format the query asked for.
    QueryData { data: Bytes },
    /// 0x92: end of a query's result: `rows` rows sent; `truncated` when the query's limit or
    /// the node's bound stopped it before the last matching row.
    QueryDone { rows: u64, truncated: bool },
    /// 0x7F
    Error { code: ErrorCode, message: String },
}

/// Tag bytes, as listed on the variants of [`Message`]. A tag is never reused.
pub(crate) mod tag {
    pub const HELLO: u8 = 0x01;
    pub const HELLO_ACK: u8 = 0x02;
    pub const LIST_DATASETS: u8 = 0x10;
    pub const DATASET_LIST: u8 = 0x11;
    pub const LIST_VERSIONS: u8 = 0x12;
    pub const LIST_VERSIONS_FOR: u8 = 0x14;
    pub const FOR_GRANT: u8 = 0x15;
    pub const VERSION_LIST: u8 = 0x13;
    pub const GET_MANIFEST: u8 = 0x20;
    pub const GET_MANIFEST_FOR: u8 = 0x22;
    pub const MANIFEST_DATA: u8 = 0x21;
    pub const GET_CHUNKS: u8 = 0x30;
    pub const GET_CHUNKS_FOR: u8 = 0x34;
    pub const GET_CHUNKS_AT: u8 = 0x35;
    pub const CHUNK: u8 = 0x31;
    pub const CHUNKS_DONE: u8 = 0x32;
    pub const CHUNK_HASHES: u8 = 0x33;
    pub const PUBLISH_BEGIN: u8 = 0x40;
    pub const PUBLISH_DATA: u8 = 0x41;
    pub const PUBLISH_END: u8 = 0x42;
    pub const PUBLISHED: u8 = 0x43;
    pub const UNCHANGED: u8 = 0x44;
    pub const REPLICATE: u8 = 0x50;
    pub const REPLICATED: u8 = 0x51;
    pub const POLICY_SUBSCRIBE: u8 = 0x60;
    pub const POLICY_SNAPSHOT: u8 = 0x61;
    pub const CONTROL_CALL: u8 = 0x70;
    pub const CONTROL_ANSWER: u8 = 0x71;
    pub const ERROR: u8 = 0x7F;
    pub const SUBSCRIBE: u8 = 0x80;
    pub const ANNOUNCE: u8 = 0x81;
    pub const HOLDING: u8 = 0x82;
    pub const QUERY: u8 = 0x90;
    pub const QUERY_DATA: u8 = 0x91;
    pub const QUERY_DONE: u8 = 0x92;
}

impl Message {
    /// The tag byte that starts this message's frame.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Hello { .. } => tag::HELLO,
            Self::HelloAck { .. } => tag::HELLO_ACK,
            Self::ListDatasets => tag::LIST_DATASETS,
            Self::DatasetList { .. } => tag::DATASET_LIST,
            Self::ListVersions { method: ServiceMethod::Download, .. } => tag::LIST_VERSIONS,
            Self::ListVersions { .. } => tag::LIST_VERSIONS_FOR,
            Self::ForGrant { .. } => tag::FOR_GRANT,
            Self::VersionList { .. } => tag::VERSION_LIST,
            Self::GetManifest { method: ServiceMethod::Download, .. } => tag::GET_MANIFEST,
            Self::GetManifest { .. } => tag::GET_MANIFEST_FOR,
            Self::ManifestData { .. } => tag::MANIFEST_DATA,
            Self::GetChunks { priority: Some(_), .. } => tag::GET_CHUNKS_AT,
            Self::GetChunks { method: ServiceMethod::Download, .. } => tag::GET_CHUNKS,
            Self::GetChunks { .. } => tag::GET_CHUNKS_FOR,
            Self::Chunk { .. } => tag::CHUNK,
            Self::ChunksDone { .. } => tag::CHUNKS_DONE,
            Self::ChunkHashes { .. } => tag::CHUNK_HASHES,
            Self::PublishBegin { .. } => tag::PUBLISH_BEGIN,
            Self::PublishData { .. } => tag::PUBLISH_DATA,
            Self::PublishEnd { .. } => tag::PUBLISH_END,
            Self::Published { .. } => tag::PUBLISHED,
            Self::Unchanged { .. } => tag::UNCHANGED,
            Self::Replicate { .. } => tag::REPLICATE,
            Self::Replicated { .. } => tag::REPLICATED,
            Self::PolicySubscribe { .. } => tag::POLICY_SUBSCRIBE,
            Self::PolicySnapshot { .. } => tag::POLICY_SNAPSHOT,
            Self::ControlCall { .. } => tag::CONTROL_CALL,
            Self::ControlAnswer { .. } => tag::CONTROL_ANSWER,
            Self::Error { .. } => tag::ERROR,
            Self::Subscribe { .. } => tag::SUBSCRIBE,
            Self::Announce { .. } => tag::ANNOUNCE,
            Self::Holding { .. } => tag::HOLDING,
            Self::Query { .. } => tag::QUERY,
            Self::QueryData { .. } => tag::QUERY_DATA,
            Self::QueryDone { .. } => tag::QUERY_DONE,
        }
    }
}

impl ChunkEncoding {
    /// The byte that stands for this value on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::Zstd => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Raw),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }
}

impl SourceFormat {
    /// The byte that stands for this value on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Csv => 0,
            Self::Parquet => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Csv),
            1 => Some(Self::Parquet),
            _ => None,
        }
    }
}

impl PublishMode {
    /// The byte that stands for this value on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Snapshot => 0,
            Self::Append => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Snapshot),
            1 => Some(Self::Append),
            _ => None,
        }
    }
}
