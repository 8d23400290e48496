//! Every refused handshake of the foundation issue, against a real node: refused before any
//! application byte, a clear error on the client, and a metric by reason on the node.

use ferry_client::conn::{ClientError, Connector};
use ferry_net::tls::{self, Credentials, HandshakeRefusal, TlsPaths};
use ferry_proto::Role;
use ferry_testkit::{NodeSpec, TestNode, TestPki};
use std::time::Duration;
use time::OffsetDateTime;

async fn refused_with(node: &TestNode, creds: &Credentials) -> HandshakeRefusal {
    let err =
        Connector::new(creds, node.node_addr()).unwrap().connect().await.err().expect("must be refused");
    let message = err.to_string();
    match err {
        ClientError::Refused { refusal, .. } => {
            assert!(message.contains("refused"), "{message}");
            refusal
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

async fn assert_no_application_traffic(node: &TestNode) {
    let metrics = node.metrics().await;
    assert_eq!(ferry_testkit::metric_value(&metrics, "ferry_net_connections_total"), 0.0, "{metrics}");
    assert!(!metrics.contains("ferry_net_requests_total{"), "no request was handled:\n{metrics}");
}

async fn failures(node: &TestNode, reason: &str) -> f64 {
    node.metric(&format!("ferry_net_handshake_failures_total{{reason=\"{reason}\"}}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_certificate_is_refused_before_any_request() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);

    // No client certificate at all.
    let good = Credentials::load(&pki.issue("gd", "guangdong", Role::Province)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls::client_config_without_cert(good.ca_certs()).unwrap());
    let err = Connector::with_endpoint(endpoint, node.node_addr()).connect().await.err().unwrap();
    assert!(matches!(err, ClientError::Refused { refusal: HandshakeRefusal::NoCertificate, .. }), "{err}");
    assert_eq!(failures(&node, "no_certificate").await, 1.0);

    // A certificate from another CA (the client still trusts the right CA for the node).
    let other = TestPki::named("some other CA");
    let foreign = other.issue("gd", "guangdong", Role::Province);
    let creds = Credentials::load(&TlsPaths { ca: pki.ca(), crl: None, ..foreign }).unwrap();
    assert_eq!(refused_with(&node, &creds).await, HandshakeRefusal::UnknownCa);
    assert_eq!(failures(&node, "unknown_ca").await, 1.0);

    // A forged CA that copies the ministry CA's name: the signature gives it away.
    let forged = TestPki::new();
    let fake = forged.issue("gd", "guangdong", Role::Province);
    let creds = Credentials::load(&TlsPaths { ca: pki.ca(), crl: None, ..fake }).unwrap();
    assert_eq!(refused_with(&node, &creds).await, HandshakeRefusal::BadCertificate);
    assert_eq!(failures(&node, "bad_certificate").await, 1.0);

    // Expired, and not yet valid: the alert is the same, the node's metric tells them apart.
    let expired = pki.issue_valid("old", "guangdong", Role::Province, now - 10 * day, now - day);
    assert_eq!(refused_with(&node, &Credentials::load(&expired).unwrap()).await, HandshakeRefusal::Expired);
    assert_eq!(failures(&node, "expired").await, 1.0);
    let early = pki.issue_valid("early", "guangdong", Role::Province, now + day, now + 10 * day);
    assert_eq!(refused_with(&node, &Credentials::load(&early).unwrap()).await, HandshakeRefusal::Expired);
    assert_eq!(failures(&node, "not_yet_valid").await, 1.0);

    // Revoked: the node picks up the new CRL without a restart.
    let revoked = pki.issue("stolen", "guangdong", Role::Province);
    let creds = Credentials::load(&revoked).unwrap();
    pki.revoke(&revoked);
    tokio::time::sleep(Duration::from_millis(700)).await; // crl-reload is 200ms in test configs
    assert_eq!(refused_with(&node, &creds).await, HandshakeRefusal::Revoked);
    assert_eq!(failures(&node, "revoked").await, 1.0);

    assert_no_application_traffic(&node).await;

    // And the good certificate still gets in.
    let session = Connector::new(&good, node.node_addr()).unwrap().connect().await.unwrap();
    let hello = session.hello().unwrap();
    assert_eq!(hello.our_dept.as_str(), "guangdong");
    assert_eq!(hello.node_dept.as_str(), "ministry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_revoked_certificate_is_refused_by_the_client() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let node_cert = pki.dir.path().join("ministry.pem");
    pki.revoke(&TlsPaths { cert: node_cert, ..pki.issue("unused", "x", Role::Operator) });
    let creds = Credentials::load(&pki.issue("gd", "guangdong", Role::Province)).unwrap();
    let err = Connector::new(&creds, node.node_addr()).unwrap().connect().await.err().unwrap();
    assert!(matches!(err, ClientError::NodeRejected { refusal: HandshakeRefusal::Revoked, .. }), "{err}");
}
