//! The body layout of each [`Message`] variant, field by field in declaration order. Framing
//! (length and tag) is [`super`]'s; the primitive encodings are [`crate::wire`]'s.

use crate::error::{DecodeError, ErrorCode};
use crate::ids::{JobPriority, Role, ServiceMethod, ShareType};
use crate::manifest::{CHUNK_HASH_LEN, CHUNKS_PER_PAGE, SignedManifest, VersionKind};
use crate::message::{
    ChunkEncoding, DatasetSummary, Message, PublishMode, SourceFormat, VersionSummary, tag,
};
use crate::wire::{Reader, Sink, invalid};

/// Smallest encoded [`DatasetSummary`]: id and publisher of one byte, empty name, two enum bytes.
const MIN_SUMMARY_LEN: usize = (4 + 1) + 4 + (4 + 1) + 1 + 1;
/// Encoded size of a [`VersionSummary`] without a parent: version, kind, option byte, three u64.
const MIN_VERSION_SUMMARY_LEN: usize = 8 + 1 + 1 + 8 * 3;

/// Appends the body of `msg` (everything after the tag byte).
pub(super) fn write_body<S: Sink + ?Sized>(msg: &Message, out: &mut S) {
    match msg {
        Message::Hello { minor, agent } => {
            out.be16(*minor);
            out.text(agent);
        }
        Message::HelloAck { node, node_dept, peer_dept, peer_role } => {
            out.text(node);
            out.text(node_dept.as_str());
            out.text(peer_dept.as_str());
            out.byte(peer_role.code());
        }
        Message::ListDatasets => {}
        Message::DatasetList { datasets } => {
            out.len_prefix(datasets.len());
            for summary in datasets {
                write_summary(summary, out);
            }
        }
        Message::ListVersions { dataset, method } => {
            out.text(dataset.as_str());
            write_method(*method, out);
        }
        Message::ForGrant { grant, read } => {
            out.be64(*grant);
            out.byte(read.tag());
            write_body(read, out);
        }
        Message::VersionList { dataset, versions } => {
            out.text(dataset.as_str());
            out.len_prefix(versions.len());
            for v in versions {
                out.version(v.version);
                out.byte(v.kind.code());
                out.opt_version(v.parent);
                out.be64(v.rows);
                out.be64(v.delta_bytes);
                out.be64(v.snapshot_bytes);
            }
        }
        Message::GetManifest { dataset, version, method } => {
            out.text(dataset.as_str());
            out.opt_version(*version);
            write_method(*method, out);
        }
        Message::ManifestData { signed } => signed.write(out),
        Message::GetChunks { dataset, version, file, first, count, accept_zstd, method, priority } => {
            out.text(dataset.as_str());
            out.version(*version);
            out.be32(*file);
            out.be32(*first);
            out.be32(*count);
            out.flag(*accept_zstd);
            match priority {
                // Tag 0x35: the method always, then the class.
                Some(priority) => {
                    out.byte(method.code());
                    out.byte(priority.code());
                }
                None => write_method(*method, out),
            }
        }
        Message::Chunk { file, index, encoding, raw_len, data } => {
            out.be32(*file);
            out.be32(*index);
            out.byte(encoding.code());
            out.be32(*raw_len);
            out.blob(data);
        }
        Message::ChunksDone { file, sent } => {
            out.be32(*file);
            out.be32(*sent);
        }
        Message::ChunkHashes { file, page, hashes } => {
            out.be32(*file);
            out.be32(*page);
            out.blob(hashes);
        }
        Message::PublishBegin { definition, format, mode, size } => {
            out.text(definition);
            out.byte(format.code());
            out.byte(mode.code());
            out.be64(*size);
        }
        Message::PublishData { data } => out.blob(data),
        Message::PublishEnd { blake3 } => out.raw(blake3),
        Message::Published { dataset, version, rows, bytes } => {
            out.text(dataset.as_str());
            out.version(*version);
            out.be64(*rows);
            out.be64(*bytes);
        }
        Message::Unchanged { dataset, version } => {
            out.text(dataset.as_str());
            out.version(*version);
        }
        Message::Replicate { peer, dataset, version } => {
            out.text(peer);
            out.text(dataset.as_str());
            out.opt_version(*version);
        }
        Message::Replicated { dataset, version, bytes_fetched, files } => {
            out.text(dataset.as_str());
            out.version(*version);
            out.be64(*bytes_fetched);
            out.be32(*files);
        }
        Message::PolicySubscribe { have } => match have {
            None => out.flag(false),
            Some(serial) => {
                out.flag(true);
                out.be64(*serial);
            }
        },
        Message::PolicySnapshot { signed } => out.blob(signed),
        Message::ControlCall { request } => out.text(request),
        Message::ControlAnswer { answer } => out.text(answer),
        Message::Error { code, message } => {
            out.be16(code.to_u16());
            out.text(message);
        }
        Message::Subscribe { dataset, have } => {
            out.text(dataset.as_str());
            out.opt_version(*have);
        }
        Message::Announce { dataset, version, publisher, committed_ms } => {
            out.text(dataset.as_str());
            out.version(*version);
            out.text(publisher.as_str());
            out.be64(*committed_ms);
        }
        Message::Holding { dataset, version } => {
            out.text(dataset.as_str());
            out.opt_version(*version);
        }
        Message::Query { dataset, version, query } => {
            out.text(dataset.as_str());
            out.opt_version(*version);
            out.text(query);
        }
        Message::QueryData { data } => out.blob(data),
        Message::QueryDone { rows, truncated } => {
            out.be64(*rows);
            out.flag(*truncated);
        }
    }
}

/// The service method of a read: nothing for `Download` (the ferry/1.0 frame), else its code
/// (the frame then has the read's `_FOR` tag, [`Message::tag`]).
fn write_method<S: Sink + ?Sized>(method: ServiceMethod, out: &mut S) {
    if method != ServiceMethod::Download {
        out.byte(method.code());
    }
}

/// Reads the service method that ends a read of tag `0x14`, `0x22` or `0x34` ([`write_method`]);
/// the ferry/1.0 tags are `Download`. `Download` under a new tag is refused, so every read has one
/// encoding.
fn read_method(r: &mut Reader<'_>, with_method: bool) -> Result<ServiceMethod, DecodeError> {
    if !with_method {
        return Ok(ServiceMethod::Download);
    }
    match code_of(r, "method", ServiceMethod::from_code)? {
        ServiceMethod::Download => Err(invalid("method", "a download is sent under the 1.0 tag".to_owned())),
        method => Ok(method),
    }
}

fn write_summary<S: Sink + ?Sized>(summary: &DatasetSummary, out: &mut S) {
    out.text(summary.id.as_str());
    out.text(&summary.name);
    out.text(summary.publisher.as_str());
    out.byte(summary.share_type.code());
    out.opt_version(summary.latest);
}

/// Reads the body of the message whose tag `r` was made with. Leftover bytes are the caller's
/// to refuse ([`Reader::finish`]).
pub(super) fn read_body(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    read_kind(r.tag(), r)
}

/// Reads the body of a message of kind `kind` (the frame's tag, or the read inside a
/// `ForGrant`, whose errors name the frame's tag).
fn read_kind(kind: u8, r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let msg = match kind {
        tag::HELLO => Message::Hello { minor: r.be16("minor")?, agent: r.text("agent")? },
        tag::HELLO_ACK => Message::HelloAck {
            node: r.text("node")?,
            node_dept: r.dept("node_dept")?,
            peer_dept: r.dept("peer_dept")?,
            peer_role: code_of(r, "peer_role", Role::from_code)?,
        },
        tag::LIST_DATASETS => Message::ListDatasets,
        tag::DATASET_LIST => {
            Message::DatasetList { datasets: r.list("datasets", MIN_SUMMARY_LEN, read_summary)? }
        }
        kind @ (tag::LIST_VERSIONS | tag::LIST_VERSIONS_FOR) => Message::ListVersions {
            dataset: r.dataset("dataset")?,
            method: read_method(r, kind == tag::LIST_VERSIONS_FOR)?,
        },
        tag::FOR_GRANT => read_for_grant(r)?,
        tag::VERSION_LIST => Message::VersionList {
            dataset: r.dataset("dataset")?,
            versions: r.list("versions", MIN_VERSION_SUMMARY_LEN, read_version_summary)?,
        },
        kind @ (tag::GET_MANIFEST | tag::GET_MANIFEST_FOR) => {
            let (dataset, version) = (r.dataset("dataset")?, r.opt_version("version")?);
            Message::GetManifest { dataset, version, method: read_method(r, kind == tag::GET_MANIFEST_FOR)? }
        }
        tag::MANIFEST_DATA => Message::ManifestData { signed: SignedManifest::read(r)? },
        kind @ (tag::GET_CHUNKS | tag::GET_CHUNKS_FOR | tag::GET_CHUNKS_AT) => Message::GetChunks {
            dataset: r.dataset("dataset")?,
            version: r.version("version")?,
            file: r.be32("file")?,
            first: r.be32("first")?,
            count: r.be32("count")?,
            accept_zstd: r.flag("accept_zstd")?,
            method: match kind {
                tag::GET_CHUNKS_AT => code_of(r, "method", ServiceMethod::from_code)?,
                _ => read_method(r, kind == tag::GET_CHUNKS_FOR)?,
            },
            priority: match kind {
                tag::GET_CHUNKS_AT => Some(code_of(r, "priority", JobPriority::from_code)?),
                _ => None,
            },
        },
        tag::CHUNK => Message::Chunk {
            file: r.be32("file")?,
            index: r.be32("index")?,
            encoding: code_of(r, "encoding", ChunkEncoding::from_code)?,
            raw_len: r.be32("raw_len")?,
            data: r.payload("data")?,
        },
        tag::CHUNKS_DONE => Message::ChunksDone { file: r.be32("file")?, sent: r.be32("sent")? },
        tag::CHUNK_HASHES => {
            let (file, page) = (r.be32("file")?, r.be32("page")?);
            let hashes = r.payload("hashes")?;
            let whole = hashes.len() % CHUNK_HASH_LEN == 0;
            if !whole || hashes.is_empty() || hashes.len() > CHUNKS_PER_PAGE as usize * CHUNK_HASH_LEN {
                let reason = format!(
                    "{} bytes is not 1 to {CHUNKS_PER_PAGE} hashes of {CHUNK_HASH_LEN} bytes",
                    hashes.len()
                );
                return Err(invalid("hashes", reason));
            }
            Message::ChunkHashes { file, page, hashes }
        }
        tag::PUBLISH_BEGIN => Message::PublishBegin {
            definition: r.text("definition")?,
            format: code_of(r, "format", SourceFormat::from_code)?,
            mode: code_of(r, "mode", PublishMode::from_code)?,
            size: r.be64("size")?,
        },
        tag::PUBLISH_DATA => Message::PublishData { data: r.payload("data")? },
        tag::PUBLISH_END => Message::PublishEnd { blake3: r.hash("blake3")? },
        tag::PUBLISHED => Message::Published {
            dataset: r.dataset("dataset")?,
            version: r.version("version")?,
            rows: r.be64("rows")?,
            bytes: r.be64("bytes")?,
        },
        tag::UNCHANGED => {
            Message::Unchanged { dataset: r.dataset("dataset")?, version: r.version("version")? }
        }
        tag::REPLICATE => Message::Replicate {
            peer: r.text("peer")?,
            dataset: r.dataset("dataset")?,
            version: r.opt_version("version")?,
        },
        tag::REPLICATED => Message::Replicated {
            dataset: r.dataset("dataset")?,
            version: r.version("version")?,
            bytes_fetched: r.be64("bytes_fetched")?,
            files: r.be32("files")?,
        },
        tag::POLICY_SUBSCRIBE => {
            Message::PolicySubscribe { have: if r.flag("have")? { Some(r.be64("have")?) } else { None } }
        }
        tag::POLICY_SNAPSHOT => Message::PolicySnapshot { signed: r.payload("signed")? },
        tag::CONTROL_CALL => Message::ControlCall { request: r.text("request")? },
        tag::CONTROL_ANSWER => Message::ControlAnswer { answer: r.text("answer")? },
        tag::ERROR => {
            Message::Error { code: ErrorCode::from_u16(r.be16("code")?), message: r.text("message")? }
        }
        tag::SUBSCRIBE => Message::Subscribe { dataset: r.dataset("dataset")?, have: r.opt_version("have")? },
        tag::ANNOUNCE => Message::Announce {
            dataset: r.dataset("dataset")?,
            version: r.version("version")?,
            publisher: r.dept("publisher")?,
            committed_ms: r.be64("committed_ms")?,
        },
        tag::HOLDING => {
            Message::Holding { dataset: r.dataset("dataset")?, version: r.opt_version("version")? }
        }
        tag::QUERY => Message::Query {
            dataset: r.dataset("dataset")?,
            version: r.opt_version("version")?,
            query: r.text("query")?,
        },
        tag::QUERY_DATA => Message::QueryData { data: r.payload("data")? },
        tag::QUERY_DONE => Message::QueryDone { rows: r.be64("rows")?, truncated: r.flag("truncated")? },
        other => return Err(DecodeError::UnknownTag(other)),
    };
    Ok(msg)
}

/// The body of a `ForGrant`: the grant, then one read frame's tag and body (no further
/// envelope: the tag must be a read's).
fn read_for_grant(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let grant = r.be64("grant")?;
    let kind = r.byte("read")?;
    let reads = [
        tag::LIST_VERSIONS,
        tag::LIST_VERSIONS_FOR,
        tag::GET_MANIFEST,
        tag::GET_MANIFEST_FOR,
        tag::GET_CHUNKS,
        tag::GET_CHUNKS_FOR,
        tag::GET_CHUNKS_AT,
    ];
    if !reads.contains(&kind) {
        let reason =
            format!("a read for a grant wraps a ListVersions, GetManifest or GetChunks, not {kind:#04x}");
        return Err(invalid("read", reason));
    }
    Ok(Message::ForGrant { grant, read: Box::new(read_kind(kind, r)?) })
}

fn read_summary(r: &mut Reader<'_>) -> Result<DatasetSummary, DecodeError> {
    Ok(DatasetSummary {
        id: r.dataset("datasets.id")?,
        name: r.text("datasets.name")?,
        publisher: r.dept("datasets.publisher")?,
        share_type: code_of(r, "datasets.share_type", ShareType::from_code)?,
        latest: r.opt_version("datasets.latest")?,
    })
}

fn read_version_summary(r: &mut Reader<'_>) -> Result<VersionSummary, DecodeError> {
    Ok(VersionSummary {
        version: r.version("versions.version")?,
        kind: code_of(r, "versions.kind", VersionKind::from_code)?,
        parent: r.opt_version("versions.parent")?,
        rows: r.be64("versions.rows")?,
        delta_bytes: r.be64("versions.delta_bytes")?,
        snapshot_bytes: r.be64("versions.snapshot_bytes")?,
    })
}

/// Reads one enum byte and maps it with `from_code`; an unknown byte is `InvalidField`.
fn code_of<T>(
    r: &mut Reader<'_>,
    field: &'static str,
    from_code: fn(u8) -> Option<T>,
) -> Result<T, DecodeError> {
    let code = r.byte(field)?;
    from_code(code).ok_or_else(|| invalid(field, format!("unknown code {code:#04x}")))
}
