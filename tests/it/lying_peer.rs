//! A node that lies: its correctly signed manifest names files outside the destination, or it
//! sends chunk hashes or chunks other than the ones the manifest was signed over. The puller
//! must refuse and commit nothing (and for a bad name, write nothing anywhere).

use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullError, PullOptions, PullRequest, Quiet};
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::{self, Credentials, IgnoreRefusals};
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::manifest::MANIFEST_FORMAT;
use ferry_proto::{
    ChunkPage, DatasetId, DeptId, FileEntry, FileRole, Hash32, Manifest, Message, RelPath, Role, ShareType,
    SignedManifest, TableFile, TableLayout, VersionKind, VersionNo,
};
use ferry_testkit::TestPki;
use std::sync::Arc;

fn manifest_naming(signer: &ManifestSigner, name: &str) -> SignedManifest {
    let placeholder = "placeholder-name.parquet";
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        dataset: DatasetId::new("vehicle-registry").unwrap(),
        version: VersionNo::FIRST,
        kind: VersionKind::Snapshot,
        parent: None,
        publisher: DeptId::new("ministry").unwrap(),
        created_unix_ms: 0,
        schema_fingerprint: "00".into(),
        definition_version: 1,
        share_type: ShareType::Unconditional,
        catalog_version: None,
        key_columns: vec!["vin".into()],
        layout: TableLayout::default(),
        writer: None,
        row_count: 1,
        chunk_size: 64 * 1024,
        table: vec![TableFile {
            name: RelPath::parse(placeholder).unwrap(),
            size: 4,
            rows: 1,
            blake3: Hash32(*blake3::hash(b"evil").as_bytes()),
            rows_blake3: None,
        }],
        delta: None,
        derived_from: None,
        files: vec![FileEntry {
            role: FileRole::Snapshot,
            name: RelPath::parse(placeholder).unwrap(),
            size: 4,
            rows: 1,
            blake3: Hash32(*blake3::hash(b"evil").as_bytes()),
            chunk_pages: vec![ChunkPage::digest(blake3::hash(b"evil").as_bytes())],
        }],
    };
    let json = String::from_utf8(manifest.to_json()).unwrap();
    let escaped = serde_json::to_string(name).unwrap();
    let body = json.replace(&format!("\"{placeholder}\""), &escaped);
    assert_ne!(body, json);
    signer.sign(body.into_bytes())
}

/// The fake node's answer to the puller's `Hello`: it is the ministry, the puller Guangdong.
fn hello_ack() -> Message {
    Message::HelloAck {
        node: "ministry".into(),
        node_dept: DeptId::new("ministry").unwrap(),
        peer_dept: DeptId::new("guangdong").unwrap(),
        peer_role: Role::Province,
    }
}

/// What the lying node answers to `GetChunks` for the 4-byte file `evil`.
#[derive(Debug, Clone, Copy)]
enum Lie {
    /// A page of chunk hashes that is not the one the manifest's page hash was made from.
    Page,
    /// The right page, then a chunk other than the one hashed in it.
    Chunk,
}

/// Serves one canned manifest to whoever asks, and answers any chunk request with `lie`.
async fn lying_node(endpoint: quinn::Endpoint, signed: SignedManifest, lie: Lie) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        let signed = signed.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (mut reader, mut writer) = (FrameReader::new(recv), FrameWriter::new(send));
                let answers = match reader.next().await {
                    Ok(Some(Message::Hello { .. })) => vec![hello_ack()],
                    Ok(Some(Message::GetManifest { .. })) => {
                        vec![Message::ManifestData { signed: signed.clone() }]
                    }
                    _ => {
                        let (hashed, sent) = match lie {
                            Lie::Page => (&b"evi!"[..], &b"evi!"[..]),
                            Lie::Chunk => (&b"evil"[..], &b"evi!"[..]),
                        };
                        vec![
                            Message::ChunkHashes {
                                file: 0,
                                page: 0,
                                hashes: bytes::Bytes::copy_from_slice(blake3::hash(hashed).as_bytes()),
                            },
                            Message::Chunk {
                                file: 0,
                                index: 0,
                                encoding: ferry_proto::ChunkEncoding::Raw,
                                raw_len: 4,
                                data: bytes::Bytes::copy_from_slice(sent),
                            },
                            Message::ChunksDone { file: 0, sent: 1 },
                        ]
                    }
                };
                for answer in &answers {
                    let _ = writer.send(answer).await;
                }
                let _ = writer.finish();
            }
        });
    }
}

/// Pulls the lying node's version into `root`.
async fn pull_from_liar(
    user: &Credentials,
    signed: SignedManifest,
    lie: Lie,
    node_creds: &Credentials,
    root: &std::path::Path,
) -> PullError {
    let server_config = tls::server_config(node_creds, Arc::new(IgnoreRefusals)).unwrap();
    let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let server = tokio::spawn(lying_node(endpoint.clone(), signed, lie));
    std::fs::create_dir_all(root).unwrap();
    let node = ferry_net::conn::NodeAddr { addr, server_name: "ministry".into() };
    let connector = Connector::new(user, node).unwrap();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let err =
        transfer::pull(&connector, user, &request, root, &PullOptions::default(), Arc::new(Quiet), cancel)
            .await
            .unwrap_err();
    endpoint.close(0u32.into(), b"");
    server.abort();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_about_chunk_hashes_or_chunks_are_caught_and_nothing_is_committed() {
    let pki = TestPki::new();
    let node_creds = Credentials::load(&pki.issue("ministry", "ministry", Role::Ministry)).unwrap();
    let signer = ManifestSigner::new(&node_creds).unwrap();
    let user = Credentials::load(&pki.issue("gd", "guangdong", Role::Province)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for lie in [Lie::Page, Lie::Chunk] {
        let root = dir.path().join(format!("{lie:?}"));
        let signed = manifest_naming(&signer, "part-00000.parquet");
        let err = pull_from_liar(&user, signed, lie, &node_creds, &root).await;
        match (lie, &err) {
            (Lie::Page, PullError::ChunkHashes(_)) => {
                assert!(err.to_string().contains("page 0 of file part-00000.parquet"), "{err}");
            }
            (Lie::Chunk, PullError::Corrupt { file, chunk: 0, detail }) => {
                assert_eq!(file, "part-00000.parquet");
                assert!(detail.contains("BLAKE3"), "{detail}");
            }
            _ => panic!("{lie:?}: unexpected error {err}"),
        }
        assert!(!root.join("vehicle-registry").exists(), "{lie:?}: nothing committed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_with_escaping_names_are_refused_and_nothing_is_written() {
    let pki = TestPki::new();
    let node_creds = Credentials::load(&pki.issue("ministry", "ministry", Role::Ministry)).unwrap();
    let signer = ManifestSigner::new(&node_creds).unwrap();
    let user = Credentials::load(&pki.issue("gd", "guangdong", Role::Province)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("evil.parquet");
    for name in [
        "../evil.parquet",
        "a/../../evil.parquet",
        absolute.to_str().unwrap(),
        "evil\0.parquet",
        "a\\..\\evil",
        // Names the version directory or the node's store use beside the files.
        "manifest.signed",
        ".ferry/chunk-hashes/0",
    ] {
        let root = outside.path().join("dest");
        let err = pull_from_liar(&user, manifest_naming(&signer, name), Lie::Chunk, &node_creds, &root).await;
        assert!(matches!(err, PullError::Signature(_)), "{name:?}: {err}");
        assert!(err.to_string().contains("file name"), "{name:?}: the error names the bad file name: {err}");
        let mut entries: Vec<_> =
            std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        entries.sort();
        assert_eq!(
            entries,
            vec![std::ffi::OsString::from("dest")],
            "{name:?}: nothing written beside the destination"
        );
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "{name:?}: nothing written in the destination"
        );
    }
}

/// A node that predates declared job classes: a `GetChunks` declaring one (tag 0x35) is a frame
/// it cannot decode, refused as such; without one it serves the 4-byte file `evil` truthfully.
/// Counts the requests it refused.
async fn node_before_priorities(
    endpoint: quinn::Endpoint,
    signed: SignedManifest,
    refused: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        let (signed, refused) = (signed.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (mut reader, mut writer) = (FrameReader::new(recv), FrameWriter::new(send));
                let answers = match reader.next().await {
                    Ok(Some(Message::Hello { .. })) => vec![hello_ack()],
                    Ok(Some(Message::GetManifest { .. })) => {
                        vec![Message::ManifestData { signed: signed.clone() }]
                    }
                    Ok(Some(Message::GetChunks { priority: Some(_), .. })) => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let old =
                            ferry_net::wire::WireError::Decode(ferry_proto::DecodeError::UnknownTag(0x35));
                        vec![Message::Error {
                            code: ferry_proto::ErrorCode::BadRequest,
                            message: old.to_string(),
                        }]
                    }
                    _ => vec![
                        Message::ChunkHashes {
                            file: 0,
                            page: 0,
                            hashes: bytes::Bytes::copy_from_slice(blake3::hash(b"evil").as_bytes()),
                        },
                        Message::Chunk {
                            file: 0,
                            index: 0,
                            encoding: ferry_proto::ChunkEncoding::Raw,
                            raw_len: 4,
                            data: bytes::Bytes::from_static(b"evil"),
                        },
                        Message::ChunksDone { file: 0, sent: 1 },
                    ],
                };
                for answer in &answers {
                    let _ = writer.send(answer).await;
                }
                let _ = writer.finish();
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_declaring_its_class_still_pulls_from_a_node_older_than_priorities() {
    let pki = TestPki::new();
    let node_creds = Credentials::load(&pki.issue("ministry", "ministry", Role::Ministry)).unwrap();
    let signer = ManifestSigner::new(&node_creds).unwrap();
    let user = Credentials::load(&pki.issue("gd", "guangdong", Role::Province)).unwrap();
    let server_config = tls::server_config(&node_creds, Arc::new(IgnoreRefusals)).unwrap();
    let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let signed = manifest_naming(&signer, "part-00000.parquet");
    let server = tokio::spawn(node_before_priorities(endpoint.clone(), signed, refused.clone()));
    let dir = tempfile::tempdir().unwrap();
    let node = ferry_net::conn::NodeAddr { addr, server_name: "ministry".into() };
    let connector = Connector::new(&user, node).unwrap();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new("vehicle-registry").unwrap(), version: None };
    let opts = PullOptions {
        priority: ferry_net::bandwidth::Priority::Bulk(ferry_proto::JobPriority::High),
        ..PullOptions::default()
    };
    let pulled =
        transfer::pull(&connector, &user, &request, dir.path(), &opts, Arc::new(Quiet), cancel).await;
    endpoint.close(0u32.into(), b"");
    server.abort();
    let outcome = pulled.expect("the pull falls back to asking without a class");
    assert_eq!(outcome.retries, 0, "asking again without a class is not a retry");
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1, "one refusal, then no class declared");
    let copy = dir.path().join("vehicle-registry").join("v1").join("part-00000.parquet");
    assert_eq!(std::fs::read(&copy).unwrap(), b"evil");
}
