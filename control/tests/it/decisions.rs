//! The decision table through the control plane (issue 19, "What it must show"): real
//! applications, reviews and revocations in the store, the snapshot built from the store as the
//! ministry signs it, and `PolicySnapshot::decide` asked for every cell of share type ×
//! requester × the consumer's grant state (none, pending, approved, flagged for disuse, revoked,
//! revoked for disuse by the sweep) × method, on SQLite and on PostgreSQL, for unconditional,
//! conditional and not-shared data (its application refused at once with the catalog's basis).
//! The pure table with every grant state (lapsed, older catalog range) is `ferry-proto`'s
//! `policy/tests/grants.rs`.

use crate::harness::*;
use ferry_control::apply::review::Verdict;
use ferry_control::apply::{ApplicationId, ApplicationRequest, ApplicationState};
use ferry_control::grants::{DisuseDecision, DisuseSweep, GrantId};
use ferry_control::store::ControlStore;
use ferry_proto::authz::{Access, ReadPart, Request};
use ferry_proto::{DatasetId, ErrorCode, Principal, Role, ServiceMethod, ShareType};
use ferry_tables::catalog::CatalogEntry;
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
        // Hidden from everyone else, the hub and the supervisors included: as if absent.
        _ if share == ShareType::NotShared => "hidden:not_shared",
        _ if !offered.contains(&method) => "method_not_offered",
        "hub" => "full",
        "consumer" if granted && method == ServiceMethod::Download => "full",
        "consumer" if granted => "method_not_granted",
        _ => "no_grant",
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
                Err(d) if d.code == ErrorCode::NotFound => format!("hidden:{}", d.reason),
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

fn application(dataset: &str) -> ApplicationRequest {
    ApplicationRequest {
        dataset: DatasetId::new(dataset).unwrap(),
        purpose: "road safety supervision".into(),
        methods: vec![ServiceMethod::Download],
        columns: None,
        rows: None,
        key: "k1".into(),
    }
}

/// Registers `dataset`, checks the cells without a grant, applies as Guangdong (a conditional
/// application is pending until the first review and the provider's approval) and checks the
/// cells of the grant in force. Returns the grant and when it was made.
async fn granted(store: &ControlStore, dataset: &str, wrong: &mut Vec<String>) -> (GrantId, OffsetDateTime) {
    let entry = if dataset == "vehicle-registry" { vehicles() } else { gps() };
    let provider = entry.provider().to_string();
    store.register(&operator(&provider), entry, None, NOW - Duration::days(30)).await.expect("registered");
    let mut at = NOW;
    check(store, dataset, "none", false, at, wrong).await;
    let submitted =
        store.submit_application(&operator("guangdong"), &application(dataset), at).await.expect("applied");
    let app: ApplicationId = submitted.application.id;
    if submitted.application.grant.is_none() {
        check(store, dataset, "pending", false, at, wrong).await;
        let approve = Verdict::Approve { note: None };
        at += Duration::hours(1);
        store.first_review(&operator("ministry"), app, &approve, at).await.expect("first review");
        store.decide_application(&operator(&provider), app, &approve, at).await.expect("approved");
    }
    let grant =
        store.application(&operator("guangdong"), app).await.expect("application").grant.expect("granted");
    check(store, dataset, "approved", true, at, wrong).await;
    (GrantId(grant.0), at)
}

async fn walk(db: TestDb, dataset: &str) {
    let store = db.store.clone();
    let mut wrong = Vec::new();
    let (grant, at) = granted(&store, dataset, &mut wrong).await;
    let at = at + Duration::hours(1);
    store.revoke_grant(&operator("ministry"), grant, "purpose fulfilled", at).await.expect("revoked");
    check(&store, dataset, "revoked", false, at, &mut wrong).await;
    assert!(wrong.is_empty(), "{} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}

/// The grant is never used: the sweep flags it after three months (still in force during the
/// notice) and revokes it when the notice runs out.
async fn walk_disuse(db: TestDb, dataset: &str) {
    let store = db.store.clone();
    let mut wrong = Vec::new();
    let (grant, granted_at) = granted(&store, dataset, &mut wrong).await;
    let (platform, sweep) = (ministry_node(), DisuseSweep { notice_days: 30 });
    let flag_at = granted_at + Duration::days(92);
    let flagged = store.sweep_disuse(&platform, sweep, flag_at).await.expect("sweep");
    let revoke_after = flag_at + Duration::days(30);
    assert_eq!(flagged.decisions, [DisuseDecision::Flagged { grant, revoke_after }]);
    check(&store, dataset, "flagged for disuse", true, revoke_after - Duration::seconds(1), &mut wrong).await;
    let due = store.sweep_disuse(&platform, sweep, revoke_after).await.expect("sweep");
    assert_eq!(due.decisions, [DisuseDecision::Revoked { grant }]);
    check(&store, dataset, "revoked for disuse", false, revoke_after, &mut wrong).await;
    assert!(wrong.is_empty(), "{} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}

/// Zhejiang's enforcement cases: not shared, with the legal basis the catalog records.
fn not_shared() -> CatalogEntry {
    let mut secret = gps();
    secret.definition.id = DatasetId::new("enforcement-cases").unwrap();
    secret.definition.share_type = ShareType::NotShared;
    secret.methods.clear();
    secret.share_conditions = None;
    secret.legal_basis = Some("《行政处罚法》 Administrative Penalty Law".into());
    secret
}

/// An application for not-shared data is refused at once citing the catalog's basis; no grant.
async fn walk_not_shared(db: TestDb) {
    let (store, dataset) = (db.store.clone(), "enforcement-cases");
    store
        .register(&operator("zhejiang"), not_shared(), None, NOW - Duration::days(30))
        .await
        .expect("registered");
    let mut wrong = Vec::new();
    check(&store, dataset, "none", false, NOW, &mut wrong).await;
    let refused =
        store.submit_application(&operator("guangdong"), &application(dataset), NOW).await.expect("applied");
    let refused = refused.application;
    assert_eq!(
        (refused.state, refused.basis.as_deref(), refused.grant),
        (ApplicationState::Refused, Some("《行政处罚法》 Administrative Penalty Law"), None)
    );
    assert!(store.policy_state(&ministry_node(), NOW).await.expect("policy").grants.is_empty());
    check(&store, dataset, "refused", false, NOW, &mut wrong).await;
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

#[tokio::test]
async fn unconditional_disuse_cells_on_sqlite() {
    walk_disuse(TestDb::sqlite().await, "vehicle-registry").await;
}

#[tokio::test]
async fn conditional_disuse_cells_on_sqlite() {
    walk_disuse(TestDb::sqlite().await, "vehicle-gps").await;
}

#[tokio::test]
async fn not_shared_cells_on_sqlite() {
    walk_not_shared(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_on_postgres() {
    let Some(cluster) = crate::postgres::start_or_skip("decision cells on PostgreSQL") else { return };
    for dataset in ["vehicle-registry", "vehicle-gps"] {
        for disuse in [false, true] {
            let name = format!("decisions_{}_{disuse}", dataset.replace('-', "_"));
            let db = TestDb::postgres(&cluster, &name).await;
            let pool = db.store.pool().clone();
            if disuse {
                walk_disuse(db, dataset).await
            } else {
                walk(db, dataset).await
            }
            pool.close().await;
        }
    }
    let db = TestDb::postgres(&cluster, "decisions_not_shared").await;
    let pool = db.store.pool().clone();
    walk_not_shared(db).await;
    pool.close().await;
}
