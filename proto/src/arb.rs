//! proptest strategies for every protocol type, shared by the unit tests of [`crate::frame`] and
//! [`crate::manifest`]. Every generated value is well formed (ids valid, manifests consistent).

use crate::error::ErrorCode;
use crate::ids::{DatasetId, DeptId, JobPriority, Role, ServiceMethod, ShareType, VersionNo};
use crate::manifest::{
    CHUNKS_PER_PAGE, DeltaCounts, FileEntry, FileRole, Hash32, MANIFEST_FORMAT, MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE, Manifest, PageHasher, RESERVED_NAMES, SignedManifest, TableFile, TableLayout,
    VersionKind,
};
use crate::message::{ChunkEncoding, DatasetSummary, Message, PublishMode, SourceFormat, VersionSummary};
use crate::path::RelPath;
use bytes::Bytes;
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

pub fn dept() -> impl Strategy<Value = DeptId> {
    "[a-z0-9][a-z0-9._-]{0,63}".prop_map(|s| DeptId::new(s).expect("the regex only makes valid ids"))
}

pub fn dataset() -> impl Strategy<Value = DatasetId> {
    "[a-z0-9][a-z0-9._-]{0,127}".prop_map(|s| DatasetId::new(s).expect("the regex only makes valid ids"))
}

pub fn version() -> impl Strategy<Value = VersionNo> {
    (1..=u64::MAX).prop_map(|n| VersionNo::new(n).expect("n >= 1"))
}

pub fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Ministry), Just(Role::Province), Just(Role::Operator), Just(Role::Control)]
}

/// No class (an older puller's read), or one of the three.
pub fn priority() -> impl Strategy<Value = Option<JobPriority>> {
    prop_oneof![
        Just(None),
        Just(Some(JobPriority::High)),
        Just(Some(JobPriority::Normal)),
        Just(Some(JobPriority::Low))
    ]
}

pub fn method() -> impl Strategy<Value = ServiceMethod> {
    prop_oneof![
        Just(ServiceMethod::OnlineQuery),
        Just(ServiceMethod::Subscription),
        Just(ServiceMethod::Download)
    ]
}

pub fn share_type() -> impl Strategy<Value = ShareType> {
    prop_oneof![Just(ShareType::Unconditional), Just(ShareType::Conditional), Just(ShareType::NotShared)]
}

/// Any text, including non-ASCII and control characters.
fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn summary() -> impl Strategy<Value = DatasetSummary> {
    (dataset(), text(), dept(), share_type(), proptest::option::of(version())).prop_map(
        |(id, name, publisher, share_type, latest)| DatasetSummary {
            id,
            name,
            publisher,
            share_type,
            latest,
        },
    )
}

pub fn signed_manifest() -> impl Strategy<Value = SignedManifest> {
    (vec(any::<u8>(), 0..400), vec(any::<u8>(), 0..80), vec(vec(any::<u8>(), 0..120), 0..4))
        .prop_map(|(body, signature, signer_chain)| SignedManifest { body, signature, signer_chain })
}

fn version_summary() -> impl Strategy<Value = VersionSummary> {
    (version(), any::<bool>(), proptest::option::of(version()), any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(version, delta, parent, rows, delta_bytes, snapshot_bytes)| VersionSummary {
            version,
            kind: if delta { VersionKind::Delta } else { VersionKind::Snapshot },
            parent,
            rows,
            delta_bytes,
            snapshot_bytes,
        })
}

/// One value of every variant, each field arbitrary; a `ForGrant` wraps one of the reads it may
/// carry ([`read_for_grant`]).
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        30 => unwrapped(),
        1 => (any::<u64>(), read_for_grant()).prop_map(|(grant, read)| Message::ForGrant { grant, read: Box::new(read) }),
    ]
}

/// The reads a hub may make for a grant: `ListVersions`, `GetManifest`, `GetChunks`.
pub fn read_for_grant() -> impl Strategy<Value = Message> {
    prop_oneof![
        (dataset(), method()).prop_map(|(dataset, method)| Message::ListVersions { dataset, method }),
        (dataset(), proptest::option::of(version()), method())
            .prop_map(|(dataset, version, method)| Message::GetManifest { dataset, version, method }),
        (dataset(), version(), any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), method(), priority())
            .prop_map(|(dataset, version, file, first, count, accept_zstd, method, priority)| {
                Message::GetChunks { dataset, version, file, first, count, accept_zstd, method, priority }
            }),
    ]
}

/// Every variant but the `ForGrant` envelope.
fn unwrapped() -> impl Strategy<Value = Message> {
    let opt_version = || proptest::option::of(version());
    prop_oneof![
        (any::<u16>(), text()).prop_map(|(minor, agent)| Message::Hello { minor, agent }),
        (text(), dept(), dept(), role()).prop_map(|(node, node_dept, peer_dept, peer_role)| {
            Message::HelloAck { node, node_dept, peer_dept, peer_role }
        }),
        Just(Message::ListDatasets),
        vec(summary(), 0..5).prop_map(|datasets| Message::DatasetList { datasets }),
        (dataset(), method()).prop_map(|(dataset, method)| Message::ListVersions { dataset, method }),
        (dataset(), vec(version_summary(), 0..4))
            .prop_map(|(dataset, versions)| Message::VersionList { dataset, versions }),
        (dataset(), version()).prop_map(|(dataset, version)| Message::Unchanged { dataset, version }),
        (dataset(), opt_version(), method()).prop_map(|(dataset, version, method)| Message::GetManifest {
            dataset,
            version,
            method
        }),
        signed_manifest().prop_map(|signed| Message::ManifestData { signed }),
        (dataset(), version(), any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), method(), priority())
            .prop_map(|(dataset, version, file, first, count, accept_zstd, method, priority)| {
                Message::GetChunks { dataset, version, file, first, count, accept_zstd, method, priority }
            }),
        (any::<u32>(), any::<u32>(), any::<bool>(), any::<u32>(), payload()).prop_map(
            |(file, index, zstd, raw_len, data)| Message::Chunk {
                file,
                index,
                encoding: if zstd { ChunkEncoding::Zstd } else { ChunkEncoding::Raw },
                raw_len,
                data,
            }
        ),
        (any::<u32>(), any::<u32>()).prop_map(|(file, sent)| Message::ChunksDone { file, sent }),
        (any::<u32>(), any::<u32>(), vec(any::<[u8; 32]>(), 1..=CHUNKS_PER_PAGE as usize)).prop_map(
            |(file, page, hashes)| Message::ChunkHashes { file, page, hashes: Bytes::from(hashes.concat()) }
        ),
        (text(), any::<bool>(), any::<bool>(), any::<u64>()).prop_map(
            |(definition, parquet, append, size)| Message::PublishBegin {
                definition,
                format: if parquet { SourceFormat::Parquet } else { SourceFormat::Csv },
                mode: if append { PublishMode::Append } else { PublishMode::Snapshot },
                size,
            }
        ),
        payload().prop_map(|data| Message::PublishData { data }),
        any::<[u8; 32]>().prop_map(|blake3| Message::PublishEnd { blake3 }),
        (dataset(), version(), any::<u64>(), any::<u64>())
            .prop_map(|(dataset, version, rows, bytes)| Message::Published { dataset, version, rows, bytes }),
        (text(), dataset(), opt_version())
            .prop_map(|(peer, dataset, version)| { Message::Replicate { peer, dataset, version } }),
        (dataset(), version(), any::<u64>(), any::<u32>()).prop_map(
            |(dataset, version, bytes_fetched, files)| Message::Replicated {
                dataset,
                version,
                bytes_fetched,
                files,
            }
        ),
        proptest::option::of(any::<u64>()).prop_map(|have| Message::PolicySubscribe { have }),
        payload().prop_map(|signed| Message::PolicySnapshot { signed }),
        text().prop_map(|request| Message::ControlCall { request }),
        text().prop_map(|answer| Message::ControlAnswer { answer }),
        (any::<u16>(), text())
            .prop_map(|(code, message)| Message::Error { code: ErrorCode::from_u16(code), message }),
        (dataset(), opt_version()).prop_map(|(dataset, have)| Message::Subscribe { dataset, have }),
        (dataset(), version(), dept(), any::<u64>()).prop_map(
            |(dataset, version, publisher, committed_ms)| {
                Message::Announce { dataset, version, publisher, committed_ms }
            }
        ),
        (dataset(), opt_version()).prop_map(|(dataset, version)| Message::Holding { dataset, version }),
        (dataset(), opt_version(), text()).prop_map(|(dataset, version, query)| Message::Query {
            dataset,
            version,
            query
        }),
        payload().prop_map(|data| Message::QueryData { data }),
        (any::<u64>(), any::<bool>()).prop_map(|(rows, truncated)| Message::QueryDone { rows, truncated }),
    ]
}

fn rel_path() -> impl Strategy<Value = RelPath> {
    "[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,11}(/[a-zA-Z0-9_.-]{1,12}){0,2}"
        .prop_filter_map("not a valid relative path", |s| RelPath::parse(s).ok())
        .prop_filter("a reserved name", |p| {
            p.components().all(|c| !RESERVED_NAMES.contains(&crate::path::fold(c).as_str()))
        })
}

/// A manifest that passes [`Manifest::validate`].
pub fn manifest() -> impl Strategy<Value = Manifest> {
    let distinct = |names: &std::collections::BTreeSet<RelPath>| {
        let mut set = crate::path::NameSet::default();
        names.iter().all(|name| set.insert(name).is_ok())
    };
    let files =
        btree_set(rel_path(), 0..6).prop_filter("names that clash", distinct).prop_flat_map(|names| {
            let n = names.len();
            (Just(names), vec((0u64..4, any::<u32>(), 0u64..1 << 40, any::<[u8; 32]>()), n..=n))
        });
    let head = (
        dataset(),
        version(),
        any::<bool>(),
        proptest::option::of(version()),
        dept(),
        any::<i64>(),
        "[0-9a-f]{64}",
        any::<u32>(),
        share_type(),
    );
    (head, MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE, files).prop_map(|(head, chunk_size, (names, sizes))| {
        let (dataset, version, delta, parent, publisher, created, fingerprint, def_version, share) = head;
        let files: Vec<FileEntry> = names
            .into_iter()
            .zip(sizes)
            .map(|(name, (full_chunks, extra, rows, seed))| {
                let size = full_chunks * u64::from(chunk_size) + u64::from(extra % chunk_size);
                let count = size.div_ceil(u64::from(chunk_size));
                let mut pages = PageHasher::default();
                for i in 0..count {
                    let mut h = seed;
                    h[..8].iter_mut().zip(i.to_le_bytes()).for_each(|(b, i)| *b ^= i);
                    pages.push(&Hash32(h));
                }
                let chunk_pages = pages.finish();
                FileEntry { role: FileRole::Snapshot, name, size, rows, blake3: Hash32(seed), chunk_pages }
            })
            .collect();
        let table: Vec<TableFile> = files
            .iter()
            .map(|f| TableFile {
                name: f.name.clone(),
                size: f.size,
                rows: f.rows,
                blake3: f.blake3,
                rows_blake3: (f.rows % 2 == 0).then_some(f.blake3),
            })
            .collect();
        // Delta file names cannot collide with generated ones: those have no `=`.
        let delta_file = |role, name: &str| FileEntry {
            role,
            name: RelPath::parse(name).expect("literal name"),
            size: 0,
            rows: 0,
            blake3: Hash32([0; 32]),
            chunk_pages: vec![],
        };
        let delta_files = [
            delta_file(FileRole::Upserts, "delta=upserts.parquet"),
            delta_file(FileRole::Deletes, "delta=deletes.parquet"),
        ];
        let (kind, files) = match (parent, delta) {
            (None, _) => (VersionKind::Snapshot, files),
            (Some(_), true) => (VersionKind::Delta, delta_files.to_vec()),
            (Some(_), false) => (VersionKind::Snapshot, files.into_iter().chain(delta_files).collect()),
        };
        Manifest {
            format: MANIFEST_FORMAT,
            dataset,
            version,
            kind,
            parent,
            publisher,
            created_unix_ms: created,
            schema_fingerprint: fingerprint,
            definition_version: def_version,
            share_type: share,
            catalog_version: None,
            key_columns: vec!["vin".into(), "ts".into()],
            layout: TableLayout::default(),
            writer: (created % 2 == 0).then(|| "ferry-canonical/1 parquet-rs/60.2.0".to_owned()),
            row_count: table.iter().map(|f| f.rows).sum(),
            chunk_size,
            files,
            table,
            delta: parent.map(|_| DeltaCounts { inserted: 1, updated: 2, deleted: 3 }),
            derived_from: None,
        }
    })
}
