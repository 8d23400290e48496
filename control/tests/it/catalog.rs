//! Catalog scenarios: registration, versions, change control, receipts, roles, failures.
//! Each runs on SQLite (one test each) and on PostgreSQL (one test running them all on one
//! cluster, a fresh database per scenario).

use ferry_control::catalog::{ItemChange, ReceiptKind, add_months};
use ferry_control::store::StoreError;
use ferry_proto::{DatasetId, Role, ShareType, VersionNo};
use ferry_tables::catalog::{RuleCode, Stage};
use ferry_tables::definition::{ColumnDef, ColumnType};
use time::Duration;

use crate::harness::*;

scenarios!(
    "catalog scenarios on PostgreSQL";
    first_registration_is_version_1_and_readable,
    every_change_is_a_new_version_and_old_ones_stay,
    a_compliance_failure_is_recorded_and_returned,
    a_dataset_id_is_bound_to_its_provider,
    a_schema_change_of_a_dataset_in_use_waits_3_months,
    a_dataset_not_used_for_90_days_changes_at_once,
    receipts_follow_stage_and_connection,
    forbidden_actions_are_refused,
    not_shared_entries_are_hidden_from_other_departments,
    a_failure_inside_a_registration_leaves_the_previous_state,
    backup_is_online_on_sqlite_and_names_pg_dump_on_postgres,
);

fn id(text: &str) -> DatasetId {
    DatasetId::new(text).expect("dataset id")
}

fn odometer() -> ColumnDef {
    ColumnDef {
        name: "odometer_km".into(),
        column_type: ColumnType::Int32,
        key: false,
        nullable: true,
        description: Some("里程 Odometer, km".into()),
    }
}

async fn serial(db: &TestDb) -> u64 {
    db.store.policy_state(&ministry_node(), NOW).await.expect("policy").serial
}

async fn first_registration_is_version_1_and_readable(db: TestDb) {
    let store = &db.store;
    let registered = store.register(&operator("ministry"), vehicles(), None, NOW).await.expect("register");
    assert_eq!(registered.catalog_version, 1);
    assert_eq!(registered.effective_from, NOW);
    assert!(registered.compliance.passed());
    assert_eq!(registered.receipt_kind, None, "formal: no receipt before data is connected");
    assert_eq!(registered.connection_deadline, add_months(NOW, 6));

    let reader = operator("guangdong");
    let stored = store.entry(&reader, &id("vehicle-registry"), None).await.expect("entry");
    assert_eq!(stored.entry, vehicles());
    assert_eq!(stored.registered_by, dept("ministry"));
    let listed = store.list(&reader, NOW).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].latest_version, listed[0].in_effect_version), (1, Some(1)));
    assert_eq!(listed[0].classification, "base/vehicles");

    let policy = store.policy_state(&ministry_node(), NOW).await.expect("policy");
    assert_eq!(policy.serial, 1);
    let current = policy.datasets[0].current.as_ref().expect("in effect");
    assert_eq!((current.catalog_version, current.share_type), (1, ShareType::Unconditional));
    assert_eq!(current.items.len(), vehicles().definition.columns.len());
    assert_eq!(current.definition, vehicles().definition.to_toml());
    assert!(policy.datasets[0].upcoming.is_none());
}

async fn every_change_is_a_new_version_and_old_ones_stay(db: TestDb) {
    let store = &db.store;
    let ministry = operator("ministry");
    store.register(&ministry, vehicles(), None, NOW).await.expect("v1");
    let mut changed = vehicles();
    changed.definition.description = Some("机动车登记 Vehicle registry, revised".into());
    let later = NOW + Duration::hours(1);
    let v2 = store.register(&ministry, changed.clone(), None, later).await.expect("v2");
    assert_eq!((v2.catalog_version, v2.items_changed, v2.effective_from), (2, false, later));

    let dataset = id("vehicle-registry");
    let history = store.history(&ministry, &dataset).await.expect("history");
    assert_eq!(history.iter().map(|v| v.catalog_version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(history[0].items_fingerprint, history[1].items_fingerprint);
    assert_eq!(store.entry(&ministry, &dataset, Some(1)).await.expect("v1").entry, vehicles());
    assert_eq!(store.entry(&ministry, &dataset, None).await.expect("latest").entry, changed);
    assert_eq!(store.in_effect(&ministry, &dataset, NOW).await.expect("at v1").catalog_version, 1);
    assert_eq!(store.in_effect(&ministry, &dataset, later).await.expect("at v2").catalog_version, 2);

    let diff = store.diff(&ministry, &dataset, 1, 2).await.expect("diff");
    assert_eq!(diff.fields.len(), 1, "{diff:?}");
    assert_eq!(diff.fields[0].field, "description");
    assert!(diff.items.is_empty() && !diff.items_changed);
    assert!(matches!(store.entry(&ministry, &dataset, Some(3)).await, Err(StoreError::NotFound(_))));
    assert_eq!(serial(&db).await, 2);
}

async fn a_compliance_failure_is_recorded_and_returned(db: TestDb) {
    let mut entry = vehicles();
    entry.definition.share_type = ShareType::Conditional; // base data must be unconditional
    let refused = db.store.register(&operator("ministry"), entry, None, NOW).await;
    let Err(StoreError::ComplianceFailed(report)) = refused else {
        panic!("expected a compliance failure: {refused:?}")
    };
    assert!(
        report.fails(RuleCode::BaseDataUnconditional) && report.fails(RuleCode::ConditionsStated),
        "{report}"
    );
    let dataset = id("vehicle-registry");
    assert_eq!(db.store.refusals(&dataset).await.expect("refusals"), 1);
    assert!(matches!(
        db.store.entry(&operator("ministry"), &dataset, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(serial(&db).await, 0, "a refusal changes no catalog state");
}

async fn a_dataset_id_is_bound_to_its_provider(db: TestDb) {
    db.store.register(&operator("zhejiang"), gps(), None, NOW).await.expect("zhejiang registers");
    let mut copy = gps();
    copy.definition.provider = dept("guangdong");
    let refused = db.store.register(&operator("guangdong"), copy, None, NOW).await;
    assert!(
        matches!(&refused, Err(StoreError::ProviderBound { provider, .. }) if provider == &dept("zhejiang")),
        "{refused:?}"
    );
    assert_eq!(db.store.refusals(&id("vehicle-gps")).await.expect("refusals"), 1);
    assert_eq!(db.store.history(&operator("zhejiang"), &id("vehicle-gps")).await.expect("history").len(), 1);
}

async fn a_schema_change_of_a_dataset_in_use_waits_3_months(db: TestDb) {
    let (store, zhejiang, dataset) = (&db.store, operator("zhejiang"), id("vehicle-gps"));
    store.register(&zhejiang, gps(), None, NOW - Duration::days(30)).await.expect("v1");
    store
        .record_use(&ministry_node(), &dataset, &dept("guangdong"), NOW - Duration::days(10))
        .await
        .expect("use");
    let mut v2 = gps();
    v2.definition.columns.push(odometer());
    let earliest = add_months(NOW, 3).expect("date");
    for asked in [None, Some(NOW + Duration::days(30))] {
        let refused = store.register(&zhejiang, v2.clone(), asked, NOW).await;
        assert!(
            matches!(refused, Err(StoreError::TooEarly { earliest: e, .. }) if e == earliest),
            "{refused:?}"
        );
    }
    let registered = store.register(&zhejiang, v2, Some(earliest), NOW).await.expect("v2 at 3 months");
    assert!(registered.items_changed);
    assert_eq!(registered.notified, vec![dept("guangdong")]);

    assert_eq!(store.in_effect(&zhejiang, &dataset, NOW).await.expect("now").catalog_version, 1);
    let just_before = earliest - Duration::seconds(1);
    assert_eq!(store.in_effect(&zhejiang, &dataset, just_before).await.expect("before").catalog_version, 1);
    assert_eq!(store.in_effect(&zhejiang, &dataset, earliest).await.expect("then").catalog_version, 2);
    let notices = store.notices(&operator("guangdong"), &dept("guangdong")).await.expect("notices");
    assert_eq!(notices.len(), 1);
    assert_eq!(
        (notices[0].catalog_version, notices[0].previous_version, notices[0].effective_from),
        (2, 1, earliest)
    );
    assert!(store.notices(&zhejiang, &dept("zhejiang")).await.expect("provider notices").is_empty());

    let policy = store.policy_state(&ministry_node(), NOW).await.expect("policy");
    let gps_policy = &policy.datasets[0];
    assert_eq!(gps_policy.current.as_ref().map(|v| v.catalog_version), Some(1));
    assert_eq!(
        gps_policy.upcoming.as_ref().map(|v| (v.catalog_version, v.effective_from)),
        Some((2, earliest))
    );
    let diff = store.diff(&zhejiang, &dataset, 1, 2).await.expect("diff");
    assert!(diff.items_changed);
    assert!(matches!(&diff.items[..], [ItemChange::Added { name, .. }] if name == "odometer_km"), "{diff:?}");

    // A later version cannot take effect before the pending one.
    let mut v3 = gps();
    v3.definition.columns.push(odometer());
    v3.share_scope = Some("the ministry only".into());
    let refused = store.register(&zhejiang, v3, None, NOW).await;
    assert!(matches!(refused, Err(StoreError::TooEarly { earliest: e, .. }) if e == earliest), "{refused:?}");
    assert_eq!(store.refusals(&dataset).await.expect("refusals"), 3);
}

async fn a_dataset_not_used_for_90_days_changes_at_once(db: TestDb) {
    let (store, zhejiang, dataset) = (&db.store, operator("zhejiang"), id("vehicle-gps"));
    store.register(&zhejiang, gps(), None, NOW - Duration::days(200)).await.expect("v1");
    store
        .record_use(&ministry_node(), &dataset, &dept("guangdong"), NOW - Duration::days(91))
        .await
        .expect("use");
    store.record_use(&ministry_node(), &dataset, &dept("zhejiang"), NOW).await.expect("own use");
    let mut v2 = gps();
    v2.definition.columns.push(odometer());
    let registered = store.register(&zhejiang, v2, None, NOW).await.expect("v2 at once");
    assert!(registered.items_changed && registered.notified.is_empty());
    assert_eq!(store.in_effect(&zhejiang, &dataset, NOW).await.expect("now").catalog_version, 2);
}

async fn receipts_follow_stage_and_connection(db: TestDb) {
    let (store, zhejiang, dataset) = (&db.store, operator("zhejiang"), id("vehicle-gps"));
    let mut pre = gps();
    pre.stage = Stage::PreCatalog;
    let v1 = store.register(&zhejiang, pre, None, NOW).await.expect("pre-catalog");
    assert_eq!((v1.receipt_kind, v1.connection_deadline), (Some(ReceiptKind::PreCatalog), None));
    let v2 = store.register(&zhejiang, gps(), None, NOW + Duration::days(1)).await.expect("formal");
    assert_eq!(v2.receipt_kind, None);
    let facts = store.receipt_facts(&zhejiang, &dataset, 2).await.expect("facts");
    assert_eq!((facts.receipts.len(), facts.connected_at), (0, None));
    assert_eq!(facts.connection_deadline, add_months(NOW + Duration::days(1), 6));

    let published = NOW + Duration::days(2);
    let issued = store.record_publication(&ministry_node(), &dataset, VersionNo::FIRST, 2, published).await;
    assert_eq!(issued.expect("publication"), vec![2]);
    let facts = store.receipt_facts(&operator("st-authority"), &dataset, 2).await.expect("facts");
    assert_eq!(facts.receipts, vec![(ReceiptKind::Formal, published.unix_timestamp())]);
    assert_eq!(facts.connected_at, Some(published));
    let pre_facts = store.receipt_facts(&zhejiang, &dataset, 1).await.expect("v1 facts");
    assert_eq!(pre_facts.receipts.iter().map(|r| r.0).collect::<Vec<_>>(), vec![ReceiptKind::PreCatalog]);

    // Data already connected: a new formal version gets its receipt at once.
    let mut v3 = gps();
    v3.share_scope = Some("the ministry".into());
    let v3 = store.register(&zhejiang, v3, None, NOW + Duration::days(3)).await.expect("v3");
    assert_eq!(v3.receipt_kind, Some(ReceiptKind::Formal));
    let unknown = store.record_publication(&ministry_node(), &dataset, VersionNo::FIRST, 9, published).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Forbidden { .. })), "{what}: {result:?}");
}

async fn forbidden_actions_are_refused(db: TestDb) {
    let (store, dataset) = (&db.store, id("vehicle-gps"));
    store.register(&operator("zhejiang"), gps(), None, NOW).await.expect("v1");
    let node = principal("zhejiang", Role::Province);
    let guangdong = operator("guangdong");
    assert_forbidden("another dept registers", store.register(&guangdong, gps(), None, NOW).await);
    assert_forbidden("a node registers", store.register(&node, gps(), None, NOW).await);
    assert_forbidden(
        "tech support registers for a provider",
        store.register(&operator("ministry"), gps(), None, NOW).await,
    );
    assert_forbidden("another dept's notices", store.notices(&guangdong, &dept("zhejiang")).await);
    assert_forbidden(
        "backup by a provider",
        store.backup(&operator("zhejiang"), &std::env::temp_dir().join("x")).await,
    );
    assert_forbidden(
        "backup by the ministry node",
        store.backup(&ministry_node(), &std::env::temp_dir().join("x")).await,
    );
    assert_forbidden(
        "a province records a use",
        store.record_use(&node, &dataset, &dept("zhejiang"), NOW).await,
    );
    let publish = store.record_publication(&operator("zhejiang"), &dataset, VersionNo::FIRST, 1, NOW).await;
    assert_forbidden("a provider records a publication", publish);
    assert_forbidden("a province reads the policy", store.policy_state(&node, NOW).await);
    assert_forbidden("another dept's receipt facts", store.receipt_facts(&guangdong, &dataset, 1).await);
    assert_eq!(store.history(&operator("zhejiang"), &dataset).await.expect("history").len(), 1);
}

async fn not_shared_entries_are_hidden_from_other_departments(db: TestDb) {
    let store = &db.store;
    let mut secret = gps();
    secret.definition.id = id("enforcement-cases");
    secret.definition.share_type = ShareType::NotShared;
    secret.methods.clear();
    secret.share_conditions = None;
    secret.legal_basis = Some("《行政处罚法》 Administrative Penalty Law".into());
    store.register(&operator("zhejiang"), secret, None, NOW).await.expect("not-shared entry");
    store.register(&operator("zhejiang"), gps(), None, NOW).await.expect("gps");
    let dataset = id("enforcement-cases");
    let guangdong = operator("guangdong");
    let hidden = store.entry(&guangdong, &dataset, None).await;
    assert!(matches!(hidden, Err(StoreError::NotFound(_))), "{hidden:?}");
    assert!(matches!(store.history(&guangdong, &dataset).await, Err(StoreError::NotFound(_))));
    let listed = store.list(&guangdong, NOW).await.expect("list");
    assert_eq!(listed.iter().map(|e| e.dataset.as_str()).collect::<Vec<_>>(), vec!["vehicle-gps"]);
    for allowed in ["zhejiang", "ministry", "st-authority"] {
        assert!(store.entry(&operator(allowed), &dataset, None).await.is_ok(), "{allowed}");
        assert_eq!(store.list(&operator(allowed), NOW).await.expect("list").len(), 2, "{allowed}");
    }
}

async fn a_failure_inside_a_registration_leaves_the_previous_state(db: TestDb) {
    let (store, zhejiang, dataset) = (&db.store, operator("zhejiang"), id("vehicle-gps"));
    let mut pre = gps();
    pre.stage = Stage::PreCatalog;
    store.register(&zhejiang, pre.clone(), None, NOW).await.expect("v1");
    // A row the registration of v2 will collide with after it wrote the version itself.
    sqlx::query("INSERT INTO receipt_facts (dataset, catalog_version, kind, issued_at) VALUES ($1, 2, 'pre-catalog', 0)")
        .bind("vehicle-gps")
        .execute(store.pool())
        .await
        .expect("plant a conflicting row");
    pre.share_scope = Some("changed".into());
    let failed = store.register(&zhejiang, pre.clone(), None, NOW).await;
    assert!(matches!(failed, Err(StoreError::Conflict(_))), "{failed:?}");
    assert_eq!(store.history(&zhejiang, &dataset).await.expect("history").len(), 1, "no version 2");
    assert_eq!(serial(&db).await, 1, "policy serial untouched");
    sqlx::query("DELETE FROM receipt_facts WHERE catalog_version = 2")
        .execute(store.pool())
        .await
        .expect("clean");
    assert_eq!(store.register(&zhejiang, pre, None, NOW).await.expect("retry").catalog_version, 2);
}

async fn backup_is_online_on_sqlite_and_names_pg_dump_on_postgres(db: TestDb) {
    let store = &db.store;
    store.register(&operator("ministry"), vehicles(), None, NOW).await.expect("v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("backup.db");
    let result = store.backup(&operator("ministry"), &dest).await;
    if db.sqlite_path.is_none() {
        assert!(matches!(&result, Err(StoreError::Unsupported(m)) if m.contains("pg_dump")), "{result:?}");
        return;
    }
    result.expect("backup");
    let again = store.backup(&operator("ministry"), &dest).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "an existing file is not overwritten: {again:?}");
    let copy = ferry_control::store::ControlStore::open_sqlite(&dest, roles()).await.expect("open backup");
    let stored =
        copy.entry(&operator("guangdong"), &id("vehicle-registry"), None).await.expect("entry in backup");
    assert_eq!(stored.entry, vehicles());
}

#[tokio::test]
async fn a_read_only_sqlite_file_gives_a_typed_error_and_keeps_its_data() {
    let db = TestDb::sqlite().await;
    db.store.register(&operator("ministry"), vehicles(), None, NOW).await.expect("v1");
    db.store.pool().close().await;
    let path = db.sqlite_path.clone().expect("sqlite");
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut changed = vehicles();
    changed.definition.description = Some("changed".into());
    match ferry_control::store::ControlStore::open(&url, roles()).await {
        Err(StoreError::ReadOnly(_)) => {}
        Err(other) => panic!("expected ReadOnly at open, got {other:?}"),
        Ok(store) => {
            let refused = store.register(&operator("ministry"), changed, None, NOW).await;
            assert!(matches!(refused, Err(StoreError::ReadOnly(_))), "{refused:?}");
            let history = store.history(&operator("ministry"), &id("vehicle-registry")).await.expect("read");
            assert_eq!(history.len(), 1);
        }
    }
}

#[tokio::test]
async fn an_unreachable_database_gives_a_typed_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/control?connect_timeout=2");
    let down = ferry_control::store::ControlStore::open(&url, roles()).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    let missing_dir = std::env::temp_dir().join("ferry-no-such-dir").join("sub").join("control.db");
    let no_file = ferry_control::store::ControlStore::open_sqlite(&missing_dir, roles()).await;
    assert!(matches!(no_file, Err(StoreError::Unavailable(_))), "{no_file:?}");
}
