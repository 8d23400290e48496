//! `node-status` on a real node: its own department's operator reads what the node holds; a
//! certificate of another department learns nothing about the node.

use ferry_client::control::{ControlCallError, node_call};
use ferry_control::api::ApiCode;
use ferry_proto::Role;
use ferry_proto::node_api::{NodeRequest, NodeStatus};
use ferry_testkit::{NodeSpec, TestNode, TestPki, connect, publish_vehicles};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_tells_its_own_department_what_it_holds_and_no_one_else() {
    let pki = TestPki::new();
    let ministry = TestNode::start(&pki, NodeSpec::new("ministry", Role::Ministry)).await;
    publish_vehicles(&ministry, "vehicle-registry", 2_000, 7).await;

    let ops = ministry.operator_session().await;
    let value = node_call(&ops, &NodeRequest::NodeStatus {}).await.unwrap();
    ops.close();
    let status: NodeStatus = serde_json::from_value(value).unwrap();
    assert_eq!(status.node, "ministry");
    let held: Vec<_> =
        status.datasets.iter().map(|d| (d.dataset.as_str(), d.latest.map(|v| v.get()))).collect();
    assert_eq!(held, [("vehicle-registry", Some(1))]);

    let stranger = connect(&pki.issue("gd-ops", "guangdong", Role::Operator), ministry.node_addr()).await;
    let refused = node_call(&stranger, &NodeRequest::NodeStatus {}).await.unwrap_err();
    stranger.close();
    let ControlCallError::Refused(error) = refused else { panic!("a refusal, got {refused:?}") };
    assert_eq!(error.code, ApiCode::Forbidden);
    assert!(!error.message.contains("vehicle-registry"), "{}", error.message);
}
