//! # ferry-testkit — nodes, certificates and data for tests
//!
//! Spawns in-process `ferryd` nodes on `127.0.0.1:0` with temp directories and a fresh PKI,
//! issues certificates of any validity, publishes generated datasets, and scrapes metrics.
//! Starts a throwaway Garage server for the S3 storage tests ([`garage`]).
//! The end-to-end tests of the workspace live in `it/`.

pub mod faultfs;
pub mod garage;
pub mod grant;
pub mod postgres;

use ferry_client::conn::{Connector, Session};
use ferry_client::pki::{self, IssueRequest, RevocationReason};
use ferry_client::publish::{Published, publish_file};
use ferry_client::synth;
use ferry_daemon::config::Config;
use ferry_daemon::data::blob::BlobStore;
use ferry_daemon::node::{self, RunningNode};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DeptId, Role, SourceFormat};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

/// A ministry CA in a temp directory.
pub struct TestPki {
    pub dir: TempDir,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        Self::named("test ministry CA")
    }

    /// A CA with the given subject name.
    pub fn named(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        pki::init(dir.path(), name, Duration::days(30)).expect("CA init");
        Self { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn crl(&self) -> PathBuf {
        self.dir.path().join("crl.pem")
    }

    /// A certificate valid from 5 minutes ago for 30 days. `name` is also its DNS name.
    pub fn issue(&self, name: &str, dept: &str, role: Role) -> TlsPaths {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(name, dept, role, now - Duration::minutes(5), now + Duration::days(30))
    }

    /// A certificate with the given validity window.
    pub fn issue_valid(
        &self,
        name: &str,
        dept: &str,
        role: Role,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> TlsPaths {
        let req = IssueRequest {
            dept: DeptId::new(dept).expect("dept id"),
            role,
            name: name.to_owned(),
            dns_names: vec![name.to_owned()],
            not_before,
            not_after,
        };
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        pki::issue(self.dir.path(), &req, &cert, &key).expect("issue");
        TlsPaths { ca: self.ca(), cert, key, crl: Some(self.crl()) }
    }

    pub fn revoke(&self, paths: &TlsPaths) {
        let serial = pki::serial_of_cert_file(&paths.cert).expect("serial");
        pki::revoke(self.dir.path(), &serial, RevocationReason::KeyCompromise, OffsetDateTime::now_utc())
            .expect("revoke");
    }
}

/// A node running in this process, with its own temp directory.
pub struct TestNode {
    pub name: String,
    pub dept: String,
    pub running: Option<RunningNode>,
    pub config: Config,
    pub dir: TempDir,
    /// An operator certificate of the node's department.
    pub operator: TlsPaths,
}

/// How to build a test node.
pub struct NodeSpec<'a> {
    pub name: &'a str,
    pub dept: &'a str,
    pub role: Role,
    pub peers: Vec<(&'a str, SocketAddr)>,
    /// Extra TOML appended to the config (e.g. a `[transfer]` table).
    pub extra: &'a str,
    /// The `[storage]` table; `None` keeps versions in the node's temp dir (`local = "data"`).
    pub storage: Option<&'a str>,
}

impl<'a> NodeSpec<'a> {
    pub fn new(name: &'a str, role: Role) -> Self {
        Self { name, dept: name, role, peers: Vec::new(), extra: "", storage: None }
    }
}

impl TestNode {
    pub async fn start(pki: &TestPki, spec: NodeSpec<'_>) -> Self {
        Self::start_wrapping_store(pki, spec, |blobs| blobs).await
    }

    /// [`TestNode::start`] with `wrap` of its storage between the node and its files (a
    /// fault-injecting store such as `ferry_daemon::data::blob::IoFaultStore`).
    pub async fn start_wrapping_store(
        pki: &TestPki,
        spec: NodeSpec<'_>,
        wrap: impl FnOnce(Arc<dyn BlobStore>) -> Arc<dyn BlobStore>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = pki.issue(spec.name, spec.dept, spec.role);
        let operator = pki.issue(&format!("{}-ops", spec.name), spec.dept, Role::Operator);
        let mut text = format!(
            "node-name = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\nstate-dir = \"state\"\n\
             {}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncrl = {:?}\ncrl-reload = \"200ms\"\n",
            spec.name,
            spec.storage.unwrap_or("[storage]\nlocal = \"data\""),
            tls.ca,
            tls.cert,
            tls.key,
            pki.crl()
        );
        text.push_str(spec.extra);
        for (peer, addr) in &spec.peers {
            text.push_str(&format!("\n[peers.{peer}]\naddress = \"{addr}\"\n"));
        }
        let config = Config::parse(&text, &dir.path().join("ferryd.toml")).expect("test config parses");
        let running = node::start_wrapping_store(config.clone(), wrap).await.expect("node starts");
        Self {
            name: spec.name.to_owned(),
            dept: spec.dept.to_owned(),
            running: Some(running),
            config,
            dir,
            operator,
        }
    }

    fn running(&self) -> &RunningNode {
        self.running.as_ref().expect("node is running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr { addr: self.addr(), server_name: self.name.clone() }
    }

    /// Where the node's local storage keeps a dataset version's files.
    pub fn version_dir(&self, dataset: &str, version: u64) -> PathBuf {
        self.dir.path().join("data").join("datasets").join(dataset).join(format!("v{version}"))
    }

    /// Drains and stops the node; its directory stays.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Starts the node again on the same address and storage.
    pub async fn restart(&mut self, addr: SocketAddr) {
        let mut config = self.config.clone();
        config.listen = addr;
        // The old socket may take a moment to be released.
        for attempt in 0.. {
            match node::start(config.clone()).await {
                Ok(running) => {
                    self.running = Some(running);
                    return;
                }
                Err(e) if attempt < 50 => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node does not restart: {e}"),
            }
        }
    }

    /// A session as this node's operator.
    pub async fn operator_session(&self) -> Session {
        connect(&self.operator, self.node_addr()).await
    }

    /// The node's `/metrics` text, scraped over HTTP.
    pub async fn metrics(&self) -> String {
        let admin = self.running().admin_addr.expect("admin port");
        http_get(admin, "/metrics").await
    }

    /// The value of one metric sample (`name{labels}` as printed), or 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }
}

/// Finds `sample value` in Prometheus text and parses the value, or 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    metric_sample(text, sample).unwrap_or(0.0)
}

/// Finds `sample value` in Prometheus text and parses the value; `None` when absent.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A minimal HTTP/1.1 GET, enough to scrape an admin port.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to admin port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// Connects with the given credentials; panics on failure (tests that expect failure use
/// [`Connector`] directly).
pub async fn connect(paths: &TlsPaths, node: NodeAddr) -> Session {
    let creds = Credentials::load(paths).expect("credentials");
    Connector::new(&creds, node).expect("connector").connect().await.expect("connect")
}

/// Writes a generated vehicle registry as Parquet and its definition; returns both paths.
pub fn vehicle_export(
    dir: &Path,
    dataset: &str,
    provider: &str,
    rows: usize,
    seed: u64,
) -> (PathBuf, String) {
    let path = dir.join(format!("{dataset}-{seed}.parquet"));
    synth::write_parquet(&path, synth::vehicle_registry_schema(), synth::vehicle_registry(seed, rows))
        .expect("write export");
    (path, synth::vehicle_registry_definition(dataset, provider))
}

/// Publishes a generated vehicle registry on `node` as its operator.
pub async fn publish_vehicles(node: &TestNode, dataset: &str, rows: usize, seed: u64) -> Published {
    let scratch = tempfile::tempdir().expect("temp dir");
    let (path, definition) = vehicle_export(scratch.path(), dataset, &node.dept, rows, seed);
    let session = node.operator_session().await;
    let published = publish_file(&session, &path, definition, SourceFormat::Parquet).await.expect("publish");
    session.close();
    published
}

/// Publishes vehicle-registry rows (any order) on `node` as its operator.
pub async fn publish_vehicle_batches(
    node: &TestNode,
    dataset: &str,
    batches: Vec<arrow::record_batch::RecordBatch>,
) -> Published {
    let scratch = tempfile::tempdir().expect("temp dir");
    let path = scratch.path().join("export.parquet");
    synth::write_parquet(&path, synth::vehicle_registry_schema(), batches).expect("write export");
    let definition = synth::vehicle_registry_definition(dataset, &node.dept);
    let session = node.operator_session().await;
    let published = publish_file(&session, &path, definition, SourceFormat::Parquet).await.expect("publish");
    session.close();
    published
}

/// Syncs `dest` to a version of the vehicle registry on `node`, as a consumer with `creds`.
pub async fn sync_vehicles(
    creds: &Credentials,
    node: &TestNode,
    dest: &Path,
    version: Option<ferry_proto::VersionNo>,
) -> ferry_client::transfer::SyncReport {
    use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet};
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let dataset = ferry_proto::DatasetId::new("vehicle-registry").expect("dataset id");
    let request = PullRequest { dataset, version };
    let connector = Connector::new(creds, node.node_addr()).expect("connector");
    let opts = PullOptions::default();
    transfer::sync(&connector, creds, &request, dest, &opts, std::sync::Arc::new(Quiet), cancel)
        .await
        .expect("sync")
}

/// BLAKE3 of a file.
pub fn hash_file(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).expect("read file")).as_bytes()
}

/// Applies for `dataset` (download) at `ministry` as `applicant`, an operator of `dept`, as a
/// department must before it reads unconditional data (the grant is made at once), and waits
/// until every node of `nodes` enforces the grant (its `explain` answer lists it). Returns the
/// grant's number.
pub async fn apply_and_wait_for_grant(
    applicant: &TlsPaths,
    dept: &str,
    ministry: &TestNode,
    dataset: &str,
    nodes: &[&TestNode],
) -> u64 {
    let download = [ferry_proto::ServiceMethod::Download];
    apply_for_methods_and_wait(applicant, dept, ministry, dataset, &download, nodes).await
}

/// One application per department, dataset and set of methods (the key makes a retry idempotent).
fn application_key(dept: &str, dataset: &str, methods: &[ferry_proto::ServiceMethod]) -> String {
    match methods {
        [ferry_proto::ServiceMethod::Download] => format!("{dept}-{dataset}"),
        _ => {
            let names: Vec<String> = methods.iter().map(|m| format!("{m:?}").to_lowercase()).collect();
            format!("{dept}-{dataset}-{}", names.join("-"))
        }
    }
}

/// [`apply_and_wait_for_grant`] for the service `methods` (e.g. subscription and download).
pub async fn apply_for_methods_and_wait(
    applicant: &TlsPaths,
    dept: &str,
    ministry: &TestNode,
    dataset: &str,
    methods: &[ferry_proto::ServiceMethod],
    nodes: &[&TestNode],
) -> u64 {
    use ferry_client::control::{ControlRequest, call, decode_answer};
    let request = ControlRequest::Apply {
        dataset: dataset.parse().expect("dataset id"),
        purpose: "exchange tests".into(),
        methods: methods.to_vec(),
        columns: None,
        rows: None,
        key: application_key(dept, dataset, methods),
    };
    let session = connect(applicant, ministry.node_addr()).await;
    let answer = call(&session, &request).await.expect("application");
    session.close();
    let grant = answer["application"]["grant"]
        .as_u64()
        .unwrap_or_else(|| panic!("unconditional data is granted at once: {answer}"));
    let explain =
        serde_json::json!({"op": "explain", "dept": dept, "dataset": dataset, "method": "download"});
    for node in nodes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let session = connect(applicant, node.node_addr()).await;
            let frame = ferry_proto::Message::ControlCall { request: explain.to_string() };
            let answer = session.request(&frame).await.ok().and_then(|a| decode_answer(a).ok());
            session.close();
            let holds = answer
                .as_ref()
                .and_then(|a| a["grants"].as_array())
                .is_some_and(|grants| grants.iter().any(|g| g["id"].as_u64() == Some(grant)));
            if holds {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{} never enforced grant {grant}", node.name);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    grant
}
