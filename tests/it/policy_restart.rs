//! A persisted policy snapshot is judged at the time it was issued (issue 18, "Certificates and
//! keys"): a province restarted after the ministry's policy-signing certificate expired keeps
//! enforcing the snapshot it holds while that copy is fresh, and fails closed once it is stale.

use ferry_client::conn::ClientError;
use ferry_proto::{ErrorCode, Message, Role};
use ferry_testkit::{NodeSpec, TestNode, TestPki, metric_value};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Waits until `node` holds a fresh policy snapshot: one installed (the serial and the stale
/// flag read 0 before the replica first reports, and an empty catalog's snapshot is serial 0).
async fn wait_for_policy(node: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = node.metrics().await;
        if metric_value(&metrics, "ferry_policy_snapshots_total{reason=\"installed\"}") >= 1.0
            && metric_value(&metrics, "ferry_policy_stale") == 0.0
        {
            return;
        }
        assert!(Instant::now() < deadline, "{} never got a policy:\n{metrics}", node.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_snapshot_outlives_its_signers_expiry_and_a_stale_one_fails_closed() {
    let pki = TestPki::new();
    let now = OffsetDateTime::now_utc();
    let expires = now + time::Duration::seconds(8);
    let control = pki.issue_valid("control", "mot", Role::Control, now - time::Duration::days(1), expires);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"mot-st\"\nrefresh = \"1s\"\n\
         [policy]\nmax-staleness = \"5m\"\n",
        control.cert, control.key
    );
    let spec = NodeSpec { dept: "mot", extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) };
    let mut ministry = TestNode::start(&pki, spec).await;
    let spec = NodeSpec {
        dept: "zj",
        peers: vec![("ministry", ministry.addr())],
        extra: "\n[policy]\nministry = \"ministry\"\nministry-dept = \"mot\"\nmax-staleness = \"5m\"\n",
        ..NodeSpec::new("zj", Role::Province)
    };
    let mut province = TestNode::start(&pki, spec).await;
    wait_for_policy(&province).await;
    ministry.stop().await;

    // The ministry's control certificate expires; the province restarts with its persisted copy.
    let wait = (expires - OffsetDateTime::now_utc()).whole_milliseconds().max(0) as u64 + 1500;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let addr = province.addr();
    province.stop().await;
    province.restart(addr).await;
    let session = province.operator_session().await;
    let listed = session.request(&Message::ListDatasets).await;
    assert!(listed.is_ok(), "the persisted snapshot is still in force: {listed:?}");
    session.close();

    // The same copy past max-staleness: refused, fail closed.
    let addr = province.addr();
    province.stop().await;
    province.config.policy.as_mut().expect("[policy]").max_staleness = Duration::from_secs(1);
    province.restart(addr).await;
    let session = province.operator_session().await;
    match session.request(&Message::ListDatasets).await {
        Err(ClientError::Remote { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable, "{message}");
            assert!(message.contains("max-staleness"), "stale, not missing: {message}");
        }
        other => panic!("a stale copy gave {other:?}"),
    }
}
