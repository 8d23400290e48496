//! The decision table through the control plane (issue 19, "What it must show"): real
//! applications, reviews and revocations in the store, the snapshot built from the store as the
//! ministry signs it, and `PolicySnapshot::decide` asked for every cell of share type ×
//! requester × the consumer's grant state (none, pending, approved, revoked) × method, on SQLite
//! and on PostgreSQL. The pure table with every grant state (lapsed, older catalog range,
//! revoked for disuse, not-shared data) is `ferry-proto`'s `policy/tests/grants.rs`.

use crate::harness::*;
use ferry_control::apply::review::Verdict;
use ferry_control::apply::{ApplicationId, ApplicationRequest};
use ferry_control::store::ControlStore;
use ferry_proto::authz::{Access, ReadPart, Request};
use ferry_proto::{DatasetId, Principal, Role, ServiceMethod, ShareType};
use time::{Duration, OffsetDateTime};

const REQUESTERS: [&str; 7] = ["provider", "consumer", "other", "support", "hub", "st", "control"];
const METHODS: [ServiceMethod; 3] =
    [ServiceMethod::OnlineQuery, ServiceMethod::Subscription, ServiceMethod::Download];

fn who(requester: &str, provider: &str) -> Principal {
    match requester {
        "provider" => operator(provider),
        "consumer" => operator("guangdong"),
        "other" => operator("hubei"),
        "support" => operator("ministry"),
        "hub" => ministry_node(),
        "st" => operator("st-authority"),
        "control" => principal("ministry", Role::Control),
        other => panic!("{other}"),
    }
}

/// What the cell should be: `offered` are the entry's methods, `granted` whether the consumer
/// holds a grant in force (for download only).
fn expected(
    share: ShareType,
    requester: &str,
    method: ServiceMethod,
    offered: &[ServiceMethod],
    granted: bool,
) -> &'static str {
    match requester {
        "control" => "wrong_role",
        "provider" => "full",
        _ if !offered.contains(&method) => "method_not_offered",
        "hub" => "full",
        "consumer" if granted && method == ServiceMethod::Download => "full",
        "consumer" if granted => "method_not_granted",
        _ => {
            let _ = share;
            "no_grant"
        }
    }
}

async fn check(
    store: &ControlStore,
    dataset: &str,
    state: &str,
    granted: bool,
    at: OffsetDateTime,
    wrong: &mut Vec<String>,
) {
    let policy_state = store.policy_state(&ministry_node(), at).await.expect("policy state");
    let ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    let snapshot = ferry_control::snapshot::build(&policy_state, &dept("ministry"), ms);
    let id = DatasetId::new(dataset).unwrap();
    let (record, entry) = snapshot.in_effect(&id, ms).expect("in the catalog");
    let (provider, share, offered) = (record.provider.to_string(), entry.share_type, entry.methods.clone());
    for requester in REQUESTERS {
        for method in METHODS {
            let request =
                Request::Read { dataset: id.clone(), version: None, method, part: ReadPart::Chunks };
            let peer = who(requester, &provider);
            let got = match snapshot.decide(&peer.dept, &peer, &request, ms) {
                Ok(Access::Full) => "full".to_owned(),
                Ok(Access::Restricted { .. }) => "restricted".to_owned(),
                Err(d) => d.reason.to_owned(),
            };
            // The ministry provides the vehicle registry: its operators are the provider there.
            let role =
                if peer.dept.as_str() == provider && requester != "control" { "provider" } else { requester };
            let want = expected(share, role, method, &offered, granted);
            if got != want {
                wrong.push(format!(
                    "{dataset} ({share:?}) × {requester} × {state} × {method}: expected {want}, got {got}"
                ));
            }
        }
    }
}

async fn walk(db: TestDb, dataset: &str) {
    let store = db.store.clone();
    let entry = if dataset == "vehicle-registry" { vehicles() } else { gps() };
    let provider = entry.provider().to_string();
    store.register(&operator(&provider), entry, None, NOW - Duration::days(30)).await.expect("registered");
    let mut wrong = Vec::new();
    let mut at = NOW;
    check(&store, dataset, "none", false, at, &mut wrong).await;
    let request = ApplicationRequest {
        dataset: DatasetId::new(dataset).unwrap(),
        purpose: "road safety supervision".into(),
        methods: vec![ServiceMethod::Download],
        columns: None,
        rows: None,
        key: "k1".into(),
    };
    let submitted = store.submit_application(&operator("guangdong"), &request, at).await.expect("applied");
    let app: ApplicationId = submitted.application.id;
    if submitted.application.grant.is_none() {
        check(&store, dataset, "pending", false, at, &mut wrong).await;
        let approve = Verdict::Approve { note: None };
        at += Duration::hours(1);
        store.first_review(&operator("ministry"), app, &approve, at).await.expect("first review");
        store.decide_application(&operator(&provider), app, &approve, at).await.expect("approved");
    }
    let grant =
        store.application(&operator("guangdong"), app).await.expect("application").grant.expect("granted");
    check(&store, dataset, "approved", true, at, &mut wrong).await;
    at += Duration::hours(1);
    store
        .revoke_grant(&operator("ministry"), ferry_control::grants::GrantId(grant.0), "purpose fulfilled", at)
        .await
        .expect("revoked");
    check(&store, dataset, "revoked", false, at, &mut wrong).await;
    assert!(wrong.is_empty(), "{} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test]
async fn unconditional_cells_on_sqlite() {
    walk(TestDb::sqlite().await, "vehicle-registry").await;
}

#[tokio::test]
async fn conditional_cells_on_sqlite() {
    walk(TestDb::sqlite().await, "vehicle-gps").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_on_postgres() {
    let Some(cluster) = crate::postgres::start_or_skip("decision cells on PostgreSQL") else { return };
    for dataset in ["vehicle-registry", "vehicle-gps"] {
        let db = TestDb::postgres(&cluster, &format!("decisions_{}", dataset.replace('-', "_"))).await;
        let pool = db.store.pool().clone();
        walk(db, dataset).await;
        pool.close().await;
    }
}
