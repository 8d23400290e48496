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

/// A province's policy stream to the ministry ends when the CA revokes the province's node
/// certificate: the ministry closes the connection at its next CRL reload, the province cannot
/// reconnect, gets no more snapshots and goes stale (fails closed) once its copy is older than
/// `max-staleness` (3 s here; the ministry re-issues every second, so an open stream would keep
/// it fresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_provinces_policy_stream_ends_at_the_next_crl_reload() {
    use super::grant_traffic::{control, start_ministry, start_province, unconditional_entry};
    let pki = TestPki::new();
    let ministry = start_ministry(&pki).await;
    let zj = start_province(&pki, &ministry, "1m", "").await;
    let register = ferry_control::api::ControlRequest::CatalogRegister {
        document: unconditional_entry("zj"),
        effective_from: None,
    };
    control(&zj.operator, &ministry, register).await;
    let fresh = |metrics: &str| {
        ferry_testkit::metric_value(metrics, "ferry_policy_serial") >= 1.0
            && ferry_testkit::metric_value(metrics, "ferry_policy_stale") == 0.0
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fresh(&zj.metrics().await) {
        assert!(Instant::now() < deadline, "zj never followed the ministry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Fresh for longer than max-staleness while the stream is open.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(fresh(&zj.metrics().await), "an open stream keeps the province fresh");

    pki.revoke(&zj.config.tls);
    let revoked_at = Instant::now();
    loop {
        let metrics = zj.metrics().await;
        if ferry_testkit::metric_value(&metrics, "ferry_policy_stale") == 1.0 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "the revoked province still follows the ministry:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("revoked province stale {:?} after the revocation", revoked_at.elapsed());
    // It stays stale: its reconnections are refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(zj.metric("ferry_policy_stale").await, 1.0);
}
