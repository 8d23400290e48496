//! Revocation and expiry end live connections (issue 18, "Certificates and keys"): the handshake
//! checks the CRL and the validity period once, so a node closes a connection whose peer was
//! revoked since (at the next CRL reload, 200 ms in test configs) or whose certificate has
//! expired; the client reads a typed error from the close. A node's own outgoing connections
//! (replication) check the node they reach against the CRL in force now, not the one read at
//! start.

use super::pull::ministry_and_province;
use ferry_client::conn::{ClientError, Connector, Session};
use ferry_net::tls::{Credentials, HandshakeRefusal};
use ferry_proto::{DatasetId, Message, Role, VersionNo};
use ferry_testkit::NodeSpec;
use ferry_testkit::{TestNode, TestPki, publish_vehicles};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

async fn list(session: &Session) -> Result<Message, ClientError> {
    session.request(&Message::ListDatasets).await
}

/// Waits (at most `within`) until the node has closed `session`'s connection.
async fn wait_closed(session: &Session, within: Duration) -> Duration {
    let start = Instant::now();
    let closed = tokio::time::timeout(within, session.connection().closed()).await;
    assert!(closed.is_ok(), "the connection is still open after {within:?}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peer_loses_its_live_connection_at_the_next_crl_reload() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let user = pki.issue("gd-user", "guangdong", Role::Operator);
    let creds = Credentials::load(&user).unwrap();
    let session = Connector::new(&creds, node.node_addr()).unwrap().connect().await.unwrap();
    assert!(matches!(list(&session).await, Ok(Message::DatasetList { .. })));

    pki.revoke(&user);
    // crl-reload is 200 ms in test configs; a second leaves room for a busy host.
    let took = wait_closed(&session, Duration::from_secs(3)).await;
    let err = list(&session).await.expect_err("the connection is closed");
    assert!(matches!(err, ClientError::Revoked { .. }), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    eprintln!("closed {took:?} after the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_when_its_peer_certificate_expires() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let now = OffsetDateTime::now_utc();
    let user = pki.issue_valid(
        "short-lived",
        "guangdong",
        Role::Operator,
        now - time::Duration::minutes(5),
        now + time::Duration::seconds(4),
    );
    let creds = Credentials::load(&user).unwrap();
    let session = Connector::new(&creds, node.node_addr()).unwrap().connect().await.unwrap();
    assert!(matches!(list(&session).await, Ok(Message::DatasetList { .. })));

    wait_closed(&session, Duration::from_secs(8)).await;
    let expired_for = OffsetDateTime::now_utc() - (now + time::Duration::seconds(4));
    assert!(expired_for > time::Duration::seconds(-1), "closed before the certificate expired");
    let err = list(&session).await.expect_err("the connection is closed");
    assert!(matches!(err, ClientError::Expired { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_from_a_revoked_node_is_refused() {
    let pki = TestPki::new();
    let (ministry, province) = ministry_and_province(&pki).await;
    publish_vehicles(&ministry, "vehicle-registry", 5_000, 3).await;
    let ops = province.operator_session().await;
    let dataset = DatasetId::new("vehicle-registry").unwrap();
    let replicate =
        |version| Message::Replicate { peer: "ministry".into(), dataset: dataset.clone(), version };
    let answer = ops.request(&replicate(Some(VersionNo::FIRST))).await.unwrap();
    assert!(matches!(answer, Message::Replicated { .. }), "{answer:?}");

    publish_vehicles(&ministry, "vehicle-registry", 5_000, 4).await;
    pki.revoke(&ministry.config.tls);
    let err = ops.request(&replicate(None)).await.expect_err("the ministry's certificate is revoked");
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
    let stored = province.running.as_ref().unwrap().store().versions(&dataset).unwrap();
    assert_eq!(stored.len(), 1, "nothing was replicated from the revoked node");
    // What the province saw itself: the ministry's certificate is refused at the handshake.
    let creds = Credentials::load(&province.config.tls).unwrap();
    let err = Connector::new(&creds, ministry.node_addr()).unwrap().connect().await.err().unwrap();
    assert!(matches!(err, ClientError::NodeRejected { refusal: HandshakeRefusal::Revoked, .. }), "{err}");
}
