//! Golden byte tests: one fixed value of every message and the exact frame it encodes to. A change
//! here is a change of the wire format — that needs a new tag or a new ALPN, never an edit.

use super::{decode, decode_body, encode, encoded_len};
use crate::error::ErrorCode;
use crate::ids::{DatasetId, DeptId, JobPriority, Role, ServiceMethod, ShareType, VersionNo};
use crate::manifest::{SignedManifest, VersionKind};
use crate::message::{ChunkEncoding, DatasetSummary, Message, PublishMode, SourceFormat, VersionSummary};
use bytes::{Bytes, BytesMut};

fn dataset(s: &str) -> DatasetId {
    DatasetId::new(s).unwrap()
}

fn dept(s: &str) -> DeptId {
    DeptId::new(s).unwrap()
}

fn v(n: u64) -> VersionNo {
    VersionNo::new(n).unwrap()
}

/// Every message variant (some twice), each with its frame in hex.
pub(super) fn cases() -> Vec<(Message, &'static str)> {
    vec![
        (Message::Hello { minor: 0, agent: "ferry/0.1".into() }, "000000100100000000000966657272792f302e31"),
        (
            Message::HelloAck {
                node: "n1".into(),
                node_dept: dept("interior"),
                peer_dept: dept("health"),
                peer_role: Role::Province,
            },
            "0000001e02000000026e3100000008696e746572696f72000000066865616c746802",
        ),
        (Message::ListDatasets, "0000000110"),
        (
            Message::DatasetList {
                datasets: vec![
                    DatasetSummary {
                        id: dataset("cars"),
                        name: "Cars".into(),
                        publisher: dept("interior"),
                        share_type: ShareType::Conditional,
                        latest: Some(v(3)),
                    },
                    DatasetSummary {
                        id: dataset("x"),
                        name: String::new(),
                        publisher: dept("y"),
                        share_type: ShareType::NotShared,
                        latest: None,
                    },
                ],
            },
            "0000003b11000000020000000463617273000000044361727300000008696e746572696f720201000000000000000300000001780000000000000001790300",
        ),
        (Message::DatasetList { datasets: vec![] }, "000000051100000000"),
        (
            Message::GetManifest {
                dataset: dataset("cars"),
                version: Some(v(2)),
                method: ServiceMethod::Download,
            },
            "00000012200000000463617273010000000000000002",
        ),
        (
            Message::GetManifest { dataset: dataset("cars"), version: None, method: ServiceMethod::Download },
            "0000000a20000000046361727300",
        ),
        (
            Message::ManifestData {
                signed: SignedManifest {
                    body: b"{}".to_vec(),
                    signature: vec![0xaa, 0xbb],
                    signer_chain: vec![vec![1, 2, 3], vec![]],
                },
            },
            "0000001c21000000027b7d00000002aabb000000020000000301020300000000",
        ),
        (
            Message::GetChunks {
                dataset: dataset("cars"),
                version: v(7),
                file: 1,
                first: 2,
                count: 3,
                accept_zstd: true,
                method: ServiceMethod::Download,
                priority: None,
            },
            "0000001e300000000463617273000000000000000700000001000000020000000301",
        ),
        (
            Message::Chunk {
                file: 0,
                index: 5,
                encoding: ChunkEncoding::Zstd,
                raw_len: 65536,
                data: Bytes::from_static(&[0xde, 0xad]),
            },
            "00000014310000000000000005010001000000000002dead",
        ),
        (
            Message::Chunk {
                file: 2,
                index: 0,
                encoding: ChunkEncoding::Raw,
                raw_len: 1,
                data: Bytes::from_static(&[0x2a]),
            },
            "000000133100000002000000000000000001000000012a",
        ),
        (Message::ChunksDone { file: 1, sent: 4 }, "00000009320000000100000004"),
        (
            Message::PublishBegin {
                definition: "id = 1\n".into(),
                format: SourceFormat::Parquet,
                mode: PublishMode::Append,
                size: 1024,
            },
            "0000001640000000076964203d20310a01010000000000000400",
        ),
        (
            Message::PublishBegin {
                definition: String::new(),
                format: SourceFormat::Csv,
                mode: PublishMode::Snapshot,
                size: 0,
            },
            "0000000f400000000000000000000000000000",
        ),
        (Message::PublishData { data: Bytes::from_static(b"abc") }, "000000084100000003616263"),
        (
            Message::PublishEnd { blake3: std::array::from_fn(|i| i as u8) },
            "0000002142000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ),
        (
            Message::Published { dataset: dataset("cars"), version: v(1), rows: 100, bytes: 4096 },
            "00000021430000000463617273000000000000000100000000000000640000000000001000",
        ),
        (
            Message::Replicate { peer: "ministry".into(), dataset: dataset("cars"), version: None },
            "0000001650000000086d696e6973747279000000046361727300",
        ),
        (
            Message::Replicate { peer: "p".into(), dataset: dataset("cars"), version: Some(v(u64::MAX)) },
            "00000017500000000170000000046361727301ffffffffffffffff",
        ),
        (
            Message::Replicated { dataset: dataset("cars"), version: v(9), bytes_fetched: 123_456, files: 2 },
            "0000001d5100000004636172730000000000000009000000000001e24000000002",
        ),
        (Message::PolicySubscribe { have: None }, "000000026000"),
        (Message::PolicySubscribe { have: Some(7) }, "0000000a60010000000000000007"),
        (Message::PolicySnapshot { signed: Bytes::from_static(b"sig") }, "000000086100000003736967"),
        (Message::ControlCall { request: "{}".into() }, "0000000770000000027b7d"),
        (Message::ControlAnswer { answer: "[]".into() }, "0000000771000000025b5d"),
        (
            Message::Error { code: ErrorCode::NotFound, message: "no such dataset".into() },
            "000000167f00020000000f6e6f20737563682064617461736574",
        ),
        (
            Message::Error { code: ErrorCode::Unknown(0x1234), message: String::new() },
            "000000077f123400000000",
        ),
        (
            Message::ListVersions { dataset: dataset("cars"), method: ServiceMethod::Download },
            "00000009120000000463617273",
        ),
        (
            Message::VersionList {
                dataset: dataset("cars"),
                versions: vec![
                    VersionSummary {
                        version: v(1),
                        kind: VersionKind::Snapshot,
                        parent: None,
                        rows: 10,
                        delta_bytes: 0,
                        snapshot_bytes: 100,
                    },
                    VersionSummary {
                        version: v(2),
                        kind: VersionKind::Delta,
                        parent: Some(v(1)),
                        rows: 11,
                        delta_bytes: 5,
                        snapshot_bytes: 0,
                    },
                ],
            },
            concat!(
                "00000059130000000463617273",
                "00000002",
                "0000000000000001",
                "01",
                "00",
                "000000000000000a",
                "0000000000000000",
                "0000000000000064",
                "0000000000000002",
                "02",
                "010000000000000001",
                "000000000000000b",
                "0000000000000005",
                "0000000000000000",
            ),
        ),
        (
            Message::Unchanged { dataset: dataset("cars"), version: v(3) },
            "000000114400000004636172730000000000000003",
        ),
        (
            Message::ChunkHashes { file: 1, page: 2, hashes: Bytes::from(vec![0xab; 32]) },
            concat!(
                "0000002d33000000010000000200000020",
                "abababababababababababababababababababababababababababababababab",
            ),
        ),
        (
            Message::ListVersions { dataset: dataset("cars"), method: ServiceMethod::Subscription },
            "0000000a14000000046361727302",
        ),
        (
            Message::ForGrant {
                grant: 7,
                read: Box::new(Message::ListVersions {
                    dataset: dataset("cars"),
                    method: ServiceMethod::Subscription,
                }),
            },
            "0000001315000000000000000714000000046361727302",
        ),
        (
            Message::Subscribe { dataset: dataset("cars"), have: Some(v(2)) },
            "00000012800000000463617273010000000000000002",
        ),
        (
            Message::Announce {
                dataset: dataset("cars"),
                version: v(3),
                publisher: dept("gd"),
                committed_ms: 1000,
            },
            "0000001f810000000463617273000000000000000300000002676400000000000003e8",
        ),
        (Message::Holding { dataset: dataset("cars"), version: None }, "0000000a82000000046361727300"),
        (
            Message::Query { dataset: dataset("cars"), version: None, query: "{}".into() },
            "0000001090000000046361727300000000027b7d",
        ),
        (Message::QueryData { data: Bytes::from_static(&[1, 2, 3]) }, "000000089100000003010203"),
        (Message::QueryDone { rows: 5, truncated: true }, "0000000a92000000000000000501"),
        (
            Message::GetChunks {
                dataset: dataset("cars"),
                version: v(7),
                file: 1,
                first: 2,
                count: 3,
                accept_zstd: true,
                method: ServiceMethod::Subscription,
                priority: None,
            },
            "0000001f34000000046361727300000000000000070000000100000002000000030102",
        ),
        (
            Message::GetManifest {
                dataset: dataset("cars"),
                version: None,
                method: ServiceMethod::OnlineQuery,
            },
            "0000000b2200000004636172730001",
        ),
        (
            Message::GetChunks {
                dataset: dataset("cars"),
                version: v(7),
                file: 1,
                first: 2,
                count: 3,
                accept_zstd: true,
                method: ServiceMethod::Download,
                priority: Some(JobPriority::Low),
            },
            "000000203500000004636172730000000000000007000000010000000200000003010303",
        ),
    ]
}

/// The encoded frame of a golden case.
pub(super) fn frame_of(msg: &Message) -> BytesMut {
    let mut out = BytesMut::new();
    encode(msg, &mut out);
    out
}

#[test]
fn every_message_encodes_to_its_golden_bytes() {
    for (msg, hex) in cases() {
        let frame = frame_of(&msg);
        assert_eq!(hex::encode(&frame), hex, "{msg:?}");
        assert_eq!(encoded_len(&msg), frame.len());
    }
}

#[test]
fn a_download_method_written_out_is_refused() {
    // `GetManifest{cars, latest}` under the method-bearing tag 0x22 with Download's code (3).
    let bytes = hex::decode("0000000b2200000004636172730003").unwrap();
    let err = decode_body(&bytes[4..]).unwrap_err();
    assert!(err.to_string().contains("method"), "{err}");
    let unknown = hex::decode("0000000b2200000004636172730009").unwrap();
    assert!(decode_body(&unknown[4..]).is_err());
}

#[test]
fn every_golden_frame_decodes_back() {
    for (msg, hex) in cases() {
        let bytes = hex::decode(hex).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf), Ok(Some(msg.clone())), "{hex}");
        assert!(buf.is_empty());
        assert_eq!(decode_body(&bytes[4..]), Ok(msg));
    }
}

#[test]
fn every_variant_has_a_golden_case() {
    let mut tags: Vec<u8> = cases().iter().map(|(m, _)| m.tag()).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(
        tags,
        [
            0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x21, 0x22, 0x30, 0x31, 0x32, 0x33, 0x34,
            0x35, 0x40, 0x41, 0x42, 0x43, 0x44, 0x50, 0x51, 0x60, 0x61, 0x70, 0x71, 0x7f, 0x80, 0x81, 0x82,
            0x90, 0x91, 0x92
        ]
    );
}

#[test]
fn chunk_header_plus_payload_is_the_chunk_frame() {
    for data in [&b""[..], b"x", &[7u8; 300][..]] {
        let msg = Message::Chunk {
            file: 3,
            index: 9,
            encoding: ChunkEncoding::Zstd,
            raw_len: 1000,
            data: Bytes::copy_from_slice(data),
        };
        let mut whole = BytesMut::new();
        encode(&msg, &mut whole);
        let mut split = BytesMut::new();
        super::encode_chunk_header(3, 9, ChunkEncoding::Zstd, 1000, data.len(), &mut split);
        split.extend_from_slice(data);
        assert_eq!(whole, split);
    }
}

/// The `decode_frame` fuzz target's seed corpus holds a frame of every message kind, so fuzzing
/// starts inside each decoder. `FERRY_WRITE_CORPUS=1` writes the missing ones from the golden
/// cases (`frame-<tag>-<name>.bin`), and the check then passes.
#[test]
fn the_fuzz_corpus_has_a_seed_of_every_message_kind() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_frame");
    let mut seeded = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("frame-") {
            let bytes = std::fs::read(&path).unwrap();
            if let Ok(Some(msg)) = decode(&mut BytesMut::from(&bytes[..])) {
                seeded.insert(msg.tag());
            }
        }
    }
    let write = std::env::var_os("FERRY_WRITE_CORPUS").is_some();
    let mut missing = Vec::new();
    for (msg, hex) in cases() {
        if seeded.insert(msg.tag()) {
            let name = format!("frame-{:02x}-{}.bin", msg.tag(), crate::exchange::message_name(&msg));
            if write {
                std::fs::write(dir.join(&name), hex::decode(hex).unwrap()).unwrap();
            }
            missing.push(name);
        }
    }
    assert!(write || missing.is_empty(), "no seed in {} for: {missing:?}", dir.display());
}
