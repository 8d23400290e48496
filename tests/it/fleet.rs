//! The fleet view end to end (issue 20 §6): a ministry and two province nodes; both provinces
//! replicate the ministry's vehicle registry, the ministry publishes a new version, one province
//! takes it and the other does not. The province nodes report what they hold by themselves
//! (`report-holdings`), and the ministry's `fleet` call shows one up to date and the other a
//! version behind, as do its metrics; a province asking for the fleet is refused.

use ferry_client::control::{ControlCallError, ControlRequest, call};
use ferry_control::api::ApiCode;
use ferry_control::fleet::{FleetRow, FleetView};
use ferry_net::tls::TlsPaths;
use ferry_proto::{DatasetId, Message};
use ferry_testkit::metric_sample;
use ferry_testkit::{TestNode, TestPki, apply_and_wait_for_grant, connect, publish_vehicles};
use std::time::{Duration, Instant};

use super::enforcement::{start_ministry, start_province};

const DATASET: &str = "vehicle-registry";

fn vehicle_entry() -> String {
    let definition = ferry_client::synth::vehicle_registry_definition(DATASET, "mot");
    format!(
        "{definition}\n[catalog]\nclassification = \"base/vehicles\"\nformat = \"parquet\"\nstage = \"formal\"\n\
         share-scope = \"every verified transport department\"\nmethods = [\"subscription\", \"download\"]\n"
    )
}

async fn fleet_as(who: &TlsPaths, ministry: &TestNode) -> Result<FleetView, ControlCallError> {
    let session = connect(who, ministry.node_addr()).await;
    let answer = call(&session, &ControlRequest::Fleet {}).await;
    session.close();
    answer.map(|value| serde_json::from_value(value).expect("a fleet view"))
}

async fn replicate(province: &TestNode) -> u64 {
    let ops = province.operator_session().await;
    let request = Message::Replicate {
        peer: "ministry".into(),
        dataset: DatasetId::new(DATASET).unwrap(),
        version: None,
    };
    let answer = ops.request(&request).await.expect("replicate");
    ops.close();
    let Message::Replicated { version, .. } = answer else { panic!("{answer:?}") };
    version.get()
}

/// (department, held, latest, versions behind) of the rows with a node.
fn held(view: &FleetView) -> Vec<(String, Option<u64>, Option<u64>, u64)> {
    view.rows
        .iter()
        .filter(|r| r.node.is_some())
        .map(|r: &FleetRow| (r.dept.to_string(), r.held, r.latest, r.versions_behind))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ministry_sees_one_province_up_to_date_and_one_behind() {
    let pki = TestPki::new();
    let ministry = start_ministry(&pki).await;
    let zj = start_province(&pki, "zj", &ministry).await;
    let gd = start_province(&pki, "gd", &ministry).await;
    let session = connect(&ministry.operator, ministry.node_addr()).await;
    call(&session, &ControlRequest::CatalogRegister { document: vehicle_entry(), effective_from: None })
        .await
        .expect("register");
    session.close();
    publish_vehicles(&ministry, DATASET, 2_000, 1).await;
    for province in [&zj, &gd] {
        apply_and_wait_for_grant(&province.operator, &province.dept, &ministry, DATASET, &[&ministry]).await;
        assert_eq!(replicate(province).await, 1);
    }
    publish_vehicles(&ministry, DATASET, 2_000, 2).await;
    let published = Instant::now();
    assert_eq!(replicate(&zj).await, 2, "zj takes the new version; gd does not");

    // Each province reports by itself on its commit (looked at every second).
    let expected = vec![("gd".to_owned(), Some(1), Some(2), 1), ("zj".to_owned(), Some(2), Some(2), 0)];
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view =
            fleet_as(&ministry.operator, &ministry).await.expect("the ministry's operator reads the fleet");
        if held(&view) == expected {
            break view;
        }
        assert!(Instant::now() < deadline, "the fleet never showed {expected:?}: {view:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gd_row = &view.rows[0];
    assert_eq!(gd_row.node.as_deref(), Some("gd"));
    assert!(gd_row.seconds_behind <= published.elapsed().as_secs() + 1, "{gd_row:?}");
    assert!(view.rows.iter().all(|r| !r.stale && r.report_age_s.is_some_and(|a| a < 30)), "{view:#?}");
    assert_eq!(view.rows[1].seconds_behind, 0);

    // A province node's certificate, and a province's operator, may not read it.
    for who in [&gd.config.tls, &gd.operator] {
        let refused = fleet_as(who, &ministry).await.expect_err("a province reads no fleet");
        let ControlCallError::Refused(error) = refused else { panic!("a refusal, got {refused:?}") };
        assert_eq!(error.code, ApiCode::Forbidden, "{}", error.message);
    }
    // An operator may not report holdings for a node.
    let session = connect(&gd.operator, ministry.node_addr()).await;
    let refused = call(&session, &ControlRequest::ReportHoldings { holdings: vec![] }).await.unwrap_err();
    session.close();
    assert!(
        matches!(refused, ControlCallError::Refused(ref e) if e.code == ApiCode::Forbidden),
        "{refused:?}"
    );

    // The ministry's metrics follow within its export period.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = ministry.metrics().await;
        let behind = |dept: &str| {
            metric_sample(
                &metrics,
                &format!("ferry_fleet_versions_behind{{dept=\"{dept}\",dataset=\"{DATASET}\"}}"),
            )
        };
        let age = metric_sample(&metrics, "ferry_fleet_report_age_seconds{dept=\"gd\"}");
        if behind("gd") == Some(1.0) && behind("zj") == Some(0.0) && age.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no fleet metrics:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
