//! Names and paths (issue 18, section 4): a version's file names never meet the puller's own
//! bookkeeping, per-dataset working directories never meet each other, staged files are never
//! written through a link someone planted, and names that one file system would merge are
//! refused before anything is written.
//!
//! A canned node serves a signed manifest of any file names with honest chunks, so the names
//! are the only thing under test; the working-directory case runs real nodes.

use ferry_client::conn::{ClientError, Connector};
use ferry_client::publish::{PublishError, publish_file};
use ferry_client::transfer::{self, PullError, PullOptions, PullReport, PullRequest, Quiet};
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::{self, Credentials, IgnoreRefusals};
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::exchange::{AnswerStep, ChunkRange};
use ferry_proto::manifest::{CHUNKS_PER_PAGE, MANIFEST_FORMAT};
use ferry_proto::{
    ChunkEncoding, DatasetId, DeptId, ErrorCode, FileEntry, FileRole, Hash32, Manifest, Message, PageHasher,
    RelPath, Role, ShareType, SignedManifest, SourceFormat, TableFile, TableLayout, VersionKind, VersionNo,
};
use ferry_tables::synth;
use ferry_testkit::{
    NodeSpec, TestNode, TestPki, hash_file, publish_vehicle_batches, publish_vehicles, vehicle_export,
};
use std::path::Path;
use std::sync::Arc;

const CHUNK: usize = 64 * 1024;
const DATASET: &str = "vehicle-registry";

/// A version as the canned node serves it: the signed manifest and each file's bytes.
#[derive(Clone)]
struct Canned {
    signed: SignedManifest,
    contents: Arc<Vec<Vec<u8>>>,
}

/// Bytes that differ per file and per chunk, so a chunk written to the wrong place shows.
fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 7) as u8) ^ (seed as u8).wrapping_mul(31) ^ ((i / CHUNK) as u8)).collect()
}

fn chunk_hashes(data: &[u8]) -> Vec<Hash32> {
    data.chunks(CHUNK).map(|c| Hash32(*blake3::hash(c).as_bytes())).collect()
}

/// Signs a snapshot manifest of `files` (name, bytes). The names are put into the JSON body as
/// text, so names this build refuses to parse can still be served.
fn canned(signer: &ManifestSigner, files: &[(&str, Vec<u8>)]) -> Canned {
    let placeholder = |i: usize| format!("placeholder-{i:04}.parquet");
    let mut entries = Vec::new();
    let mut table = Vec::new();
    for (i, (_, data)) in files.iter().enumerate() {
        let name = RelPath::parse(placeholder(i)).unwrap();
        let blake3 = Hash32(*blake3::hash(data).as_bytes());
        let mut pages = PageHasher::default();
        chunk_hashes(data).iter().for_each(|h| pages.push(h));
        let size = data.len() as u64;
        entries.push(FileEntry {
            role: FileRole::Snapshot,
            name: name.clone(),
            size,
            rows: 1,
            blake3,
            chunk_pages: pages.finish(),
        });
        table.push(TableFile { name, size, rows: 1, blake3, rows_blake3: None });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        dataset: DatasetId::new(DATASET).unwrap(),
        version: VersionNo::FIRST,
        kind: VersionKind::Snapshot,
        parent: None,
        publisher: DeptId::new("ministry").unwrap(),
        // Signed now: a manifest is judged by the certificate's validity when it was signed.
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        schema_fingerprint: "00".into(),
        definition_version: 1,
        share_type: ShareType::Unconditional,
        catalog_version: None,
        key_columns: vec!["vin".into()],
        layout: TableLayout::default(),
        writer: None,
        row_count: files.len() as u64,
        chunk_size: CHUNK as u32,
        table,
        delta: None,
        derived_from: None,
        files: entries,
    };
    let mut body = String::from_utf8(manifest.to_json()).unwrap();
    for (i, (name, _)) in files.iter().enumerate() {
        let escaped = serde_json::to_string(name).unwrap();
        body = body.replace(&format!("\"{}\"", placeholder(i)), &escaped);
    }
    let contents = Arc::new(files.iter().map(|(_, data)| data.clone()).collect());
    Canned { signed: signer.sign(body.into_bytes()), contents }
}

/// The frames of an honest answer to `GetChunks`, or a refusal when `refused` is that file.
fn answer(canned: &Canned, request: &Message, refused: Option<u32>) -> Vec<Message> {
    let Message::GetChunks { file, first, count, .. } = *request else {
        return vec![Message::Error { code: ErrorCode::BadRequest, message: "unexpected".into() }];
    };
    if refused == Some(file) {
        return vec![Message::Error { code: ErrorCode::NotFound, message: "not today".into() }];
    }
    let manifest = Manifest::from_json(&canned.signed.body).unwrap();
    let range = ChunkRange::within(&manifest, file, first, count).unwrap();
    let data = &canned.contents[file as usize];
    let hashes = chunk_hashes(data);
    range
        .plan()
        .map(|step| match step {
            AnswerStep::Page { file, page } => {
                let from = (page * CHUNKS_PER_PAGE) as usize;
                let to = (from + CHUNKS_PER_PAGE as usize).min(hashes.len());
                let bytes: Vec<u8> = hashes[from..to].iter().flat_map(|h| h.0).collect();
                Message::ChunkHashes { file, page, hashes: bytes.into() }
            }
            AnswerStep::Chunk { file, index } => {
                let at = index as usize * CHUNK;
                let chunk = &data[at..(at + CHUNK).min(data.len())];
                Message::Chunk {
                    file,
                    index,
                    encoding: ChunkEncoding::Raw,
                    raw_len: chunk.len() as u32,
                    data: bytes::Bytes::copy_from_slice(chunk),
                }
            }
            AnswerStep::Done { file, sent } => Message::ChunksDone { file, sent },
        })
        .collect()
}

/// Serves `canned` to whoever asks; chunk requests for file `refused` are refused.
async fn canned_node(endpoint: quinn::Endpoint, canned: Canned, refused: Option<u32>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        let canned = canned.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (mut reader, mut writer) = (FrameReader::new(recv), FrameWriter::new(send));
                let answers = match reader.next().await {
                    Ok(Some(Message::Hello { .. })) => vec![Message::HelloAck {
                        node: "ministry".into(),
                        node_dept: DeptId::new("ministry").unwrap(),
                        peer_dept: DeptId::new("guangdong").unwrap(),
                        peer_role: Role::Province,
                    }],
                    Ok(Some(Message::GetManifest { .. })) => {
                        vec![Message::ManifestData { signed: canned.signed.clone() }]
                    }
                    Ok(Some(request)) => answer(&canned, &request, refused),
                    _ => continue,
                };
                for answer in &answers {
                    let _ = writer.send(answer).await;
                }
                let _ = writer.finish();
            }
        });
    }
}

/// The node's and a puller's credentials, and a signer with the node's key.
struct Parties {
    _pki: TestPki,
    node: Credentials,
    user: Credentials,
    signer: ManifestSigner,
}

fn parties() -> Parties {
    let pki = TestPki::new();
    let node = Credentials::load(&pki.issue("ministry", "ministry", Role::Ministry)).unwrap();
    let signer = ManifestSigner::new(&node).unwrap();
    let user = Credentials::load(&pki.issue("gd", "guangdong", Role::Province)).unwrap();
    Parties { _pki: pki, node, user, signer }
}

/// Pulls the canned version into `root` with one stream and no retries.
async fn pull_canned(
    parties: &Parties,
    canned: &Canned,
    refused: Option<u32>,
    root: &Path,
) -> Result<PullReport, PullError> {
    let server_config = tls::server_config(&parties.node, Arc::new(IgnoreRefusals)).unwrap();
    let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let server = tokio::spawn(canned_node(endpoint.clone(), canned.clone(), refused));
    std::fs::create_dir_all(root).unwrap();
    let node = ferry_net::conn::NodeAddr { addr, server_name: "ministry".into() };
    let connector = Connector::new(&parties.user, node).unwrap();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new(DATASET).unwrap(), version: None };
    let opts = PullOptions { streams: 1, long_path_streams: 1, max_retries: 0, ..PullOptions::default() };
    let result =
        transfer::pull(&connector, &parties.user, &request, root, &opts, Arc::new(Quiet), cancel).await;
    endpoint.close(0u32.into(), b"");
    server.abort();
    result
}

fn assert_pulled(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let got = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *data, "{name}: {} bytes differ from the {} served", got.len(), data.len());
    }
}

/// Every entry under `dir`, relative, sorted (links are listed, not followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Issue 18 §4: a file named `journal` was the pull's resume journal, so the pull wrote its
/// chunks over the journal and deleted the data file at commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_named_like_the_pulls_bookkeeping_pull_and_resume() {
    let parties = parties();
    let names = ["journal", "sub/journal", ".ferry-partial", ".ferry-deltas", "part-00000.parquet"];
    let files: Vec<(&str, Vec<u8>)> =
        names.iter().enumerate().map(|(i, n)| (*n, content(i, 3 * CHUNK + 1000 + i))).collect();
    let canned = canned(&parties.signer, &files);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dest");

    // The first run fetches every file but the last, then the node refuses it.
    let last = names.len() as u32 - 1;
    let first = pull_canned(&parties, &canned, Some(last), &root).await;
    assert!(first.is_err(), "the node refused a file, yet the pull finished");
    // The second run resumes: it fetches only the last file.
    let report = pull_canned(&parties, &canned, None, &root).await.expect("the resumed pull completes");
    let resumed: u64 = files[..files.len() - 1].iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(report.resumed_bytes, resumed, "every file the first run verified is resumed");
    assert_eq!(report.fetched_bytes, files[files.len() - 1].1.len() as u64);
    let version = report.path;
    assert_pulled(&version, &files);
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.extend(["manifest.json", "manifest.signed", "sub"].map(String::from));
    expected.sort();
    assert_eq!(tree(&version), expected, "the version directory holds the files and the manifest only");
}

/// Issue 18 §4: names that differ only in Unicode normalization, in case, or that make one name
/// both a file and a directory land on one file on some file systems; such a manifest is
/// refused before anything is written, and ordinary non-ASCII (NFC) names still pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_one_file_system_would_merge_are_refused_and_nfc_names_pull() {
    let parties = parties();
    let dir = tempfile::tempdir().unwrap();
    let refused: [&[&str]; 4] = [
        &["e\u{301}t\u{e9}.parquet"],
        &["\u{e9}t\u{e9}.parquet", "e\u{301}t\u{e9}.parquet"],
        &["Part-00000.parquet", "part-00000.parquet"],
        &["a", "a/b.parquet"],
    ];
    for (case, names) in refused.iter().enumerate() {
        let files: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (*n, content(case, 1000))).collect();
        let root = dir.path().join(format!("refused-{case}"));
        let err = pull_canned(&parties, &canned(&parties.signer, &files), None, &root)
            .await
            .map(|r| tree(&r.path))
            .expect_err(&format!("{names:?} was pulled"));
        assert!(matches!(err, PullError::Signature(_)), "{names:?}: {err}");
        assert!(err.to_string().contains("file name"), "{names:?}: the error names the file: {err}");
        assert_eq!(tree(&root), Vec::<String>::new(), "{names:?}: nothing written");
    }
    let files =
        vec![("\u{e9}t\u{e9}.parquet", content(7, 2000)), ("donn\u{e9}es/\u{5e73}.parquet", content(8, 10))];
    let root = dir.path().join("nfc");
    let report =
        pull_canned(&parties, &canned(&parties.signer, &files), None, &root).await.expect("NFC names pull");
    assert_pulled(&report.path, &files);
}

/// A place a link is planted at, and where that place is under a destination root.
type Plant<'a> = (&'a str, &'a dyn Fn(&Path) -> std::path::PathBuf);

/// Issue 18 §4: a link planted where a staged file, the journal or the staging directory
/// will be is not written through: the pull stops with a typed error and the link's target
/// is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_staging_directory_are_not_followed() {
    let parties = parties();
    let files =
        vec![("part-00000.parquet", content(1, 2 * CHUNK)), ("sub/part-00001.parquet", content(2, 10))];
    let canned = canned(&parties.signer, &files);
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let precious = outside.join("precious");
    std::fs::write(&precious, b"not yours").unwrap();
    let staging = |root: &Path| root.join(".ferry-partial").join(format!("{DATASET}@1"));
    let plants: [Plant; 5] = [
        ("a staged file", &|root| staging(root).join("part-00000.parquet")),
        ("a staged file's directory", &|root| staging(root).join("sub")),
        ("the journal's directory", &|root| staging(root).join(".ferry")),
        ("the staging directory", &staging),
        ("the staging root", &|root| root.join(".ferry-partial")),
    ];
    for (case, (what, at)) in plants.iter().enumerate() {
        let root = dir.path().join(format!("dest-{case}"));
        let link = at(&root);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let target = if what.contains("file") && !what.contains("directory") { &precious } else { &outside };
        std::os::unix::fs::symlink(target, &link).unwrap();
        let result = pull_canned(&parties, &canned, None, &root).await;
        assert!(std::fs::read(&precious).unwrap() == b"not yours", "{what}: the link's target was written");
        assert_eq!(tree(&outside), vec!["precious".to_owned()], "{what}: something was written outside");
        let err = result.map(|r| r.path).expect_err(&format!("{what}: the pull went through the link"));
        assert!(matches!(err, PullError::UnsafeStaging { .. }), "{what}: {err}");
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{what}: the error names the link: {err}"
        );
    }
}

fn v(n: u64) -> VersionNo {
    VersionNo::new(n).unwrap()
}

/// Syncs `dataset` in `dest` from `node` to `version` (or the latest).
async fn sync(
    creds: &Credentials,
    node: &TestNode,
    dest: &Path,
    dataset: &str,
    version: Option<VersionNo>,
) -> Result<transfer::SyncReport, PullError> {
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let request = PullRequest { dataset: DatasetId::new(dataset).unwrap(), version };
    let connector = Connector::new(creds, node.node_addr()).unwrap();
    transfer::sync(&connector, creds, &request, dest, &PullOptions::default(), Arc::new(Quiet), cancel).await
}

/// Issue 18 §4: the directory a delta was applied in was named by cutting the staging name at
/// its last dot, so `roads.v1` and `roads.v2` (and every version of each) shared one, and two
/// syncs at once removed each other's half-written tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_differing_after_a_dot_materialize_side_by_side() {
    let pki = TestPki::new();
    let mut spec = NodeSpec::new("ministry", Role::Ministry);
    spec.extra = super::pull::SMALL_FILES;
    let ministry = TestNode::start(&pki, spec).await;
    let ids = ["roads.v1", "roads.v2"];
    for (i, id) in ids.iter().enumerate() {
        let day1: Vec<_> = synth::vehicle_registry(40 + i as u64, 20_000).collect();
        assert_eq!(publish_vehicle_batches(&ministry, id, day1.clone()).await.version, v(1));
        let edits = synth::edit_vehicle_registry(&day1, 50 + i as u64, 0.05).unwrap();
        assert_eq!(publish_vehicle_batches(&ministry, id, edits.batches).await.version, v(2));
    }
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    for round in 0..3 {
        for id in ids {
            let _ = std::fs::remove_dir_all(dest.path().join(id));
            sync(&user, &ministry, dest.path(), id, Some(v(1))).await.expect("sync to v1");
        }
        let (a, b) = tokio::join!(
            sync(&user, &ministry, dest.path(), ids[0], None),
            sync(&user, &ministry, dest.path(), ids[1], None)
        );
        for (id, report) in ids.iter().zip([a, b]) {
            let report = report.unwrap_or_else(|e| panic!("round {round}: {id}: {e}"));
            assert_eq!(report.steps, vec!["delta v2"], "{id}");
            let manifest = super::pull::read_manifest(&ministry.version_dir(id, 2));
            for f in &manifest.table {
                let got = hash_file(&report.path.join(f.name.as_str()));
                assert_eq!(got, f.blake3.0, "round {round}: {id}: {} differs from the publisher's", f.name);
            }
        }
    }
}

/// Issue 18 §4: the node received an upload under `<state>/uploads/` after creating it with
/// `create_dir_all`, which follows a link planted at `uploads` and wrote the operator's
/// upload wherever it pointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_planted_at_the_nodes_upload_directory_is_not_followed() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let outside = tempfile::tempdir().unwrap();
    let uploads = node.dir.path().join("state").join("uploads");
    std::fs::create_dir_all(uploads.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&uploads);
    std::os::unix::fs::symlink(outside.path(), &uploads).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (path, definition) = vehicle_export(scratch.path(), DATASET, &node.dept, 1000, 3);
    let session = node.operator_session().await;
    let result = publish_file(&session, &path, definition, SourceFormat::Parquet).await;
    session.close();
    assert_eq!(tree(outside.path()), Vec::<String>::new(), "nothing is written through the link");
    let err = result.expect_err("the node published through the link");
    let PublishError::Client(ClientError::Remote { code, message }) = &err else { panic!("{err}") };
    assert_eq!(*code, ErrorCode::Internal, "{err}");
    let state = node.dir.path().display().to_string();
    assert!(!message.contains(&state), "the answer names no path of the node: {message}");
    // With the link gone the node publishes again.
    std::fs::remove_file(&uploads).unwrap();
    assert_eq!(publish_vehicles(&node, DATASET, 1000, 3).await.version, VersionNo::FIRST);
}
