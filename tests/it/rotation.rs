//! Node certificate rotation and version numbers (issue 18, "Version numbers are never reused"
//! and "Certificate rotation with overlap"): versions signed with a rotated-out certificate are
//! still served and pulled, a version that truly fails is set aside without giving up its
//! number, and a running node takes up a new certificate without a restart.

use ferry_client::pki::{self, IssueRequest, RevocationReason};
use ferry_client::transfer::list_versions;
use ferry_net::identity::principal_from_cert;
use ferry_net::tls::Credentials;
use ferry_proto::{DatasetId, DeptId, Role, SignedManifest, VersionNo};
use ferry_testkit::{NodeSpec, TestNode, TestPki, publish_vehicles, sync_vehicles};
use quinn::rustls::pki_types::CertificateDer;
use std::time::Duration;
use time::OffsetDateTime;

const DATASET: &str = "vehicle-registry";

async fn listed(node: &TestNode) -> Vec<u64> {
    let session = node.operator_session().await;
    let versions = list_versions(&session, &DatasetId::new(DATASET).unwrap()).await.unwrap();
    session.close();
    versions.iter().map(|v| v.version.get()).collect()
}

async fn publish(node: &TestNode, seed: u64) -> u64 {
    publish_vehicles(node, DATASET, 2_000, seed).await.version.get()
}

/// Issues the node a new certificate (same node, new key and serial) and installs it over the
/// node's configured files, as an operator rotating it does; returns the old serial.
fn rotate(pki: &TestPki, node: &TestNode) -> String {
    let old = pki::serial_of_cert_file(&node.config.tls.cert).unwrap();
    let now = OffsetDateTime::now_utc();
    let request = IssueRequest {
        dept: DeptId::new(&node.dept).unwrap(),
        role: Role::Ministry,
        name: node.name.clone(),
        dns_names: vec![node.name.clone()],
        not_before: now - time::Duration::minutes(5),
        not_after: now + time::Duration::days(30),
    };
    let staged = tempfile::tempdir().unwrap();
    let (cert, key) = (staged.path().join("node.pem"), staged.path().join("node.key"));
    pki::issue(pki.dir.path(), &request, &cert, &key).unwrap();
    std::fs::copy(&cert, &node.config.tls.cert).unwrap();
    std::fs::copy(&key, &node.config.tls.key).unwrap();
    assert_ne!(pki::serial_of_cert_file(&node.config.tls.cert).unwrap(), old);
    old
}

/// Revokes `serial` as superseded, dated now (after a second, since CRL dates have whole
/// seconds and the versions were signed up to now).
async fn revoke_superseded(pki: &TestPki, serial: &str) {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    pki::revoke(pki.dir.path(), serial, RevocationReason::Superseded, OffsetDateTime::now_utc()).unwrap();
}

fn signer_serial(node: &TestNode, version: u64) -> String {
    let bytes = std::fs::read(node.version_dir(DATASET, version).join("manifest.signed")).unwrap();
    let signed = SignedManifest::decode(&bytes).unwrap();
    principal_from_cert(&signed.signer_chain[0]).unwrap().serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_survive_a_certificate_rotation_and_restart_and_the_next_is_v4() {
    let pki = TestPki::new();
    let mut node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    for seed in 1..=3 {
        publish(&node, seed).await;
    }
    assert_eq!(listed(&node).await, [1, 2, 3]);
    let addr = node.addr();
    node.stop().await;

    let old = rotate(&pki, &node);
    revoke_superseded(&pki, &old).await;
    node.restart(addr).await;

    assert_eq!(listed(&node).await, [1, 2, 3], "versions signed before the rotation are still served");
    assert_eq!(node.metric("ferry_store_set_aside_versions").await, 0.0);
    // A consumer holding the new CRL pulls v1, signed with the revoked (superseded) key.
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let pulled = sync_vehicles(&user, &node, dest.path(), Some(VersionNo::FIRST)).await;
    assert_eq!(pulled.version, VersionNo::FIRST);
    assert_eq!(publish(&node, 4).await, 4, "the next publish takes 4, not a number of v1–v3");
    assert_eq!(listed(&node).await, [1, 2, 3, 4]);
    assert_ne!(signer_serial(&node, 4), old, "v4 is signed with the new certificate");
    assert_eq!(signer_serial(&node, 1), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_truly_fails_is_set_aside_and_its_number_is_not_reused() {
    let pki = TestPki::new();
    let mut node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    publish(&node, 1).await;
    sync_vehicles(&user, &node, dest.path(), None).await;
    publish(&node, 2).await;
    let addr = node.addr();
    node.stop().await;

    // v2's manifest no longer matches its signature.
    let manifest = node.version_dir(DATASET, 2).join("manifest.signed");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&manifest, &bytes).unwrap();
    node.restart(addr).await;

    assert_eq!(listed(&node).await, [1]);
    assert_eq!(node.metric("ferry_store_set_aside_versions").await, 1.0);
    assert_eq!(publish(&node, 3).await, 3, "v2's number stays taken");
    assert_eq!(std::fs::read(&manifest).unwrap(), bytes, "the set-aside version is not overwritten");
    assert!(node.version_dir(DATASET, 2).join(".ferry/set-aside").exists(), "a note says why");
    assert_eq!(listed(&node).await, [1, 3]);
    // The consumer holding v1 gets to v3 across the gap.
    let synced = sync_vehicles(&user, &node, dest.path(), None).await;
    assert_eq!(synced.version.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_takes_up_a_new_certificate_while_the_old_is_still_valid() {
    let pki = TestPki::new();
    let node = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    publish(&node, 1).await;
    let served_serial = |session: &ferry_client::conn::Session| {
        let certs = session.connection().peer_identity().unwrap();
        let certs = certs.downcast::<Vec<CertificateDer<'static>>>().unwrap();
        principal_from_cert(&certs[0]).unwrap().serial
    };
    let session = node.operator_session().await;
    let old = served_serial(&session);

    let rotated = rotate(&pki, &node);
    assert_eq!(rotated, old);
    let new = pki::serial_of_cert_file(&node.config.tls.cert).unwrap();
    // The node polls its files every 200 ms (`crl-reload` of the test config).
    let mut taken_up = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if node.metric("ferry_tls_certificate_rotations_total").await >= 1.0 {
            taken_up = true;
            break;
        }
    }
    assert!(taken_up, "the node took up its new certificate without a restart");
    let fresh = node.operator_session().await;
    assert_eq!(served_serial(&fresh), new, "new connections get the new certificate");
    fresh.close();
    // The connection opened before the rotation keeps working.
    let before = list_versions(&session, &DatasetId::new(DATASET).unwrap()).await.unwrap();
    assert_eq!(before.len(), 1);
    session.close();

    assert_eq!(publish(&node, 2).await, 2);
    assert_eq!(signer_serial(&node, 2), new, "new publishes are signed with the new key");
    assert_eq!(signer_serial(&node, 1), old);
    // Both stay verifiable, also once the old certificate is revoked as superseded.
    let user = Credentials::load(&pki.issue("zj-analyst", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    assert_eq!(sync_vehicles(&user, &node, dest.path(), Some(VersionNo::FIRST)).await.version.get(), 1);
    revoke_superseded(&pki, &old).await;
    let user = Credentials::load(&pki.issue("zj-analyst-2", "zhejiang", Role::Operator)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    assert_eq!(sync_vehicles(&user, &node, dest.path(), Some(VersionNo::FIRST)).await.version.get(), 1);
    assert_eq!(sync_vehicles(&user, &node, dest.path(), None).await.version.get(), 2);
}
