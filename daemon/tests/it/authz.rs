//! The authorizer is asked, with the typed request, before the store is consulted, and listings
//! hold only what it lets a peer see.

use ferry_client::conn::{ClientError, Connector, Session};
use ferry_client::pki::{self, IssueRequest};
use ferry_client::publish::publish_file;
use ferry_client::synth;
use ferry_daemon::config::Config;
use ferry_daemon::node::{self, RunningNode};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::authz::{Access, Authorizer, Denial, Outcome, ReadPart, Request};
use ferry_proto::{
    DatasetId, DeptId, ErrorCode, Message, Principal, Role, ServiceMethod, SourceFormat, VersionNo,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// Allows publishing and listing, denies everything else, shows only `alpha` in listings, and
/// records every request and outcome it is told.
#[derive(Debug, Default)]
struct Recorder {
    asked: Mutex<Vec<Request>>,
    outcomes: Mutex<Vec<(Request, String)>>,
}

impl Authorizer for Recorder {
    fn authorize(&self, _peer: &Principal, request: &Request) -> Result<Access, Denial> {
        self.asked.lock().unwrap().push(request.clone());
        match request {
            Request::Publish { .. } | Request::List => Ok(Access::Full),
            _ => Err(Denial::forbidden("test_denies", "the test denies every read")),
        }
    }

    fn visible(&self, _peer: &Principal, dataset: &DatasetId) -> bool {
        dataset.as_str() == "alpha"
    }

    fn report(&self, _peer: &Principal, request: &Request, outcome: &Outcome<'_>) {
        let outcome = match outcome {
            Outcome::Allowed => "allowed".to_owned(),
            Outcome::Denied(denial) => format!("denied {}", denial.reason),
            Outcome::Completed { .. } => "completed".to_owned(),
            Outcome::Failed { code, .. } => format!("failed {code}"),
        };
        self.outcomes.lock().unwrap().push((request.clone(), outcome));
    }
}

fn issue(dir: &Path, name: &str, dept: &str, role: Role) -> TlsPaths {
    let now = OffsetDateTime::now_utc();
    let request = IssueRequest {
        dept: DeptId::new(dept).unwrap(),
        role,
        name: name.to_owned(),
        dns_names: vec![name.to_owned()],
        not_before: now - Duration::minutes(5),
        not_after: now + Duration::days(1),
    };
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    pki::issue(dir, &request, &cert, &key).unwrap();
    TlsPaths { ca: dir.join("ca.pem"), cert, key, crl: Some(dir.join("crl.pem")) }
}

async fn start(dir: &Path, recorder: Arc<Recorder>) -> RunningNode {
    let tls = issue(dir, "ministry", "ministry", Role::Ministry);
    let text = format!(
        "node-name = \"ministry\"\nlisten = \"127.0.0.1:0\"\nstate-dir = \"state\"\n[storage]\nlocal = \"data\"\n\
         [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n",
        tls.ca,
        tls.cert,
        tls.key,
        tls.crl.unwrap()
    );
    let config = Config::parse(&text, &dir.join("ferryd.toml")).unwrap();
    node::start_with(config, move |_, _, _, _| recorder).await.unwrap()
}

async fn connect(node: &RunningNode, tls: &TlsPaths) -> Session {
    let creds = Credentials::load(tls).unwrap();
    let addr = NodeAddr { addr: node.addr, server_name: "ministry".into() };
    Connector::new(&creds, addr).unwrap().connect().await.unwrap()
}

async fn publish(session: &Session, scratch: &Path, dataset: &str) {
    let path = scratch.join(format!("{dataset}.parquet"));
    synth::write_parquet(&path, synth::vehicle_registry_schema(), synth::vehicle_registry(1, 100)).unwrap();
    let definition = synth::vehicle_registry_definition(dataset, "ministry");
    publish_file(session, &path, definition, SourceFormat::Parquet).await.unwrap();
}

fn remote(result: Result<Message, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Remote { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_decides_before_the_store_and_filters_listings() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), "test CA", Duration::days(1)).unwrap();
    let recorder = Arc::new(Recorder::default());
    let node = start(dir.path(), recorder.clone()).await;
    let operator = connect(&node, &issue(dir.path(), "ministry-ops", "ministry", Role::Operator)).await;
    publish(&operator, dir.path(), "alpha").await;
    publish(&operator, dir.path(), "beta").await;

    let province = connect(&node, &issue(dir.path(), "gd-node", "guangdong", Role::Province)).await;
    let v3 = VersionNo::new(3).unwrap();
    let ask = |dataset: &str| Message::GetManifest {
        dataset: DatasetId::new(dataset).unwrap(),
        version: Some(v3),
        method: ServiceMethod::Download,
    };
    let existing = remote(province.request(&ask("alpha")).await);
    let absent = remote(province.request(&ask("no-such-dataset")).await);
    assert_eq!(existing, absent, "the answer cannot depend on what the store holds");
    assert_eq!(existing.0, ErrorCode::PermissionDenied);
    let chunks = Message::GetChunks {
        dataset: DatasetId::new("no-such-dataset").unwrap(),
        version: v3,
        file: 99,
        first: 0,
        count: 1,
        accept_zstd: false,
        method: ServiceMethod::Download,
        priority: None,
    };
    assert_eq!(remote(province.request(&chunks).await), existing, "no lookup of the file or range either");

    let asked = recorder.asked.lock().unwrap().clone();
    let read_of_alpha = Request::Read {
        dataset: DatasetId::new("alpha").unwrap(),
        version: Some(v3),
        method: ServiceMethod::Download,
        part: ReadPart::Manifest,
    };
    assert!(asked.contains(&read_of_alpha), "{asked:?}");
    assert!(matches!(asked.last(), Some(Request::Read { part: ReadPart::Chunks, .. })), "{asked:?}");
    let outcomes = recorder.outcomes.lock().unwrap().clone();
    assert!(outcomes.contains(&(read_of_alpha, "denied test_denies".to_owned())), "{outcomes:?}");
    let published = outcomes.iter().filter(|(r, o)| matches!(r, Request::Publish { .. }) && o == "completed");
    assert_eq!(published.count(), 2, "{outcomes:?}");

    let Message::DatasetList { datasets } = province.request(&Message::ListDatasets).await.unwrap() else {
        panic!("a dataset list")
    };
    let listed: Vec<&str> = datasets.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(listed, ["alpha"], "beta is held but not visible");
    operator.close();
    province.close();
    node.shutdown().await;
}
