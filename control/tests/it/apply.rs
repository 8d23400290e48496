//! Applications and reviews (Art. 12–14): the immediate outcomes, idempotency by client key,
//! the conditional review with its working-day deadlines, material, delegation, cross-industry
//! data, wrong roles, bad input, and nothing half-applied. Each scenario runs on SQLite and on
//! PostgreSQL.

use std::sync::Arc;

use ferry_control::apply::review::Verdict;
use ferry_control::apply::{
    ApplicationId, ApplicationRequest, ApplicationState, ApplyError, Decider, Submitted,
};
use ferry_control::audit::{AuditLog, CheckpointPolicy};
use ferry_control::calendar::CalendarError;
use ferry_control::signing::KeyPairSigner;
use ferry_control::store::{ControlStore, StoreError};
use ferry_proto::policy::{CatalogRange, Restriction};
use ferry_proto::{DatasetId, Principal, Role, ServiceMethod, ShareType};
use ferry_tables::catalog::{CatalogEntry, Classification};
use time::OffsetDateTime;
use time::macros::{date, datetime};

use crate::harness::*;

scenarios!(
    "application scenarios on PostgreSQL";
    unconditional_data_is_granted_at_once_and_reaches_the_snapshot,
    a_resent_application_is_the_same_one_and_a_changed_one_conflicts,
    bad_input_is_refused_with_a_typed_error_and_nothing_is_written,
    a_conditional_application_runs_its_working_day_deadlines_across_spring_festival,
    refusals_cite_a_basis_and_not_shared_data_is_refused_with_the_catalog_basis,
    a_provider_delegates_its_reviews_and_reads_the_decisions_taken,
    cross_industry_data_is_decided_by_the_st_authority,
    deadlines_at_risk_and_overdue_are_listed_and_counted,
    a_deadline_in_a_year_without_a_calendar_file_is_refused,
    a_failure_inside_a_grant_leaves_nothing_behind,
    the_control_calls_answer_as_the_cli_expects_and_tick_the_policy,
);

/// Registration time of the entries: before the dates the scenarios apply on.
const REGISTERED: OffsetDateTime = datetime!(2026-01-05 09:00 +8);

/// The store with the audit log hooked in, so decisions land in it in their transactions.
fn audited(db: &TestDb) -> ControlStore {
    let signer = Arc::new(KeyPairSigner::generate().expect("key"));
    let audit = Arc::new(AuditLog::new(db.store.pool().clone(), signer, CheckpointPolicy::default()));
    db.store.clone().with_audit(audit)
}

fn id(text: &str) -> DatasetId {
    DatasetId::new(text).expect("dataset id")
}

fn support() -> Principal {
    operator("ministry")
}

fn request(dataset: &str, key: &str) -> ApplicationRequest {
    ApplicationRequest {
        dataset: id(dataset),
        purpose: "road safety supervision".into(),
        methods: vec![ServiceMethod::Download],
        columns: None,
        rows: None,
        key: key.into(),
    }
}

fn gps_request(key: &str) -> ApplicationRequest {
    ApplicationRequest {
        columns: Some(vec!["lat".into(), "vin".into(), "ts".into(), "lon".into()]),
        rows: Some("speed_kmh   > 0".into()),
        ..request("vehicle-gps", key)
    }
}

async fn count(store: &ControlStore, sql: &'static str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql).fetch_one(store.pool()).await.expect("count").try_get(0).expect("count column")
}

async fn audit_kinds(store: &ControlStore) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT kind FROM audit_entries ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("audit");
    rows.iter().map(|r| r.try_get::<String, _>(0).expect("kind")).collect()
}

async fn serial(store: &ControlStore, at: OffsetDateTime) -> u64 {
    store.policy_state(&ministry_node(), at).await.expect("policy").serial
}

async fn submit(
    store: &ControlStore,
    who: &str,
    request: &ApplicationRequest,
    at: OffsetDateTime,
) -> Submitted {
    store.submit_application(&operator(who), request, at).await.expect("submitted")
}

async fn unconditional_data_is_granted_at_once_and_reaches_the_snapshot(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("ministry"), vehicles(), None, REGISTERED).await.expect("vehicles");
    let before = serial(&store, NOW).await;
    let submitted = submit(&store, "guangdong", &request("vehicle-registry", "k1"), NOW).await;
    let app = &submitted.application;
    assert!(submitted.created);
    assert_eq!(
        (app.state, app.due_on, app.share_type),
        (ApplicationState::Granted, None, ShareType::Unconditional)
    );
    let grant_id = app.grant.expect("a grant");
    let state = store.policy_state(&ministry_node(), NOW).await.expect("policy");
    assert_eq!(state.serial, before + 1, "the grant bumped the policy serial");
    let [grant] = state.grants.as_slice() else { panic!("one grant: {:?}", state.grants) };
    assert_eq!(grant.id, grant_id.0);
    assert_eq!(grant.application, app.id.0);
    assert_eq!(grant.dept, dept("guangdong"));
    assert_eq!(grant.methods, [ServiceMethod::Download]);
    assert_eq!(grant.restriction, None, "unconditional: the whole dataset");
    assert_eq!(grant.catalog_versions, CatalogRange { from: 1, to: None });
    assert_eq!(grant.granted_at_ms, NOW.unix_timestamp() * 1000);
    let snapshot = ferry_control::snapshot::build(&state, &dept("ministry"), 0);
    snapshot.validate().expect("the snapshot with its grant is valid");
    assert_eq!(snapshot.grants.len(), 1);
    assert_eq!(audit_kinds(&store).await, ["registration", "application-submitted", "grant-issued"]);
}

async fn a_resent_application_is_the_same_one_and_a_changed_one_conflicts(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("zhejiang"), gps(), None, REGISTERED).await.expect("gps");
    let first = submit(&store, "guangdong", &gps_request("k1"), NOW).await;
    let again = submit(&store, "guangdong", &gps_request("k1"), NOW + time::Duration::hours(1)).await;
    assert!(first.created && !again.created);
    assert_eq!(again.application, first.application, "the first application, unchanged");
    let changed = ApplicationRequest { purpose: "another purpose".into(), ..gps_request("k1") };
    let conflict = store.submit_application(&operator("guangdong"), &changed, NOW).await;
    assert!(
        matches!(conflict, Err(ApplyError::KeyReused { existing, .. }) if existing == first.application.id),
        "{conflict:?}"
    );
    let other_dept = submit(&store, "jiangsu", &gps_request("k1"), NOW).await;
    assert!(
        other_dept.created && other_dept.application.id != first.application.id,
        "keys are per department"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM applications").await, 2);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM audit_entries WHERE kind = 'application-submitted'").await,
        2
    );
}

/// Whether an error is the one a case expects.
type Expected = fn(&ApplyError) -> bool;

async fn bad_input_is_refused_with_a_typed_error_and_nothing_is_written(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("zhejiang"), gps(), None, REGISTERED).await.expect("gps");
    store.register(&operator("ministry"), vehicles(), None, REGISTERED).await.expect("vehicles");
    let before = serial(&store, NOW).await;
    let guangdong = operator("guangdong");
    let cases: Vec<(&str, Principal, ApplicationRequest, Expected)> = vec![
        ("unknown dataset", guangdong.clone(), request("no-such", "a"), |e| {
            matches!(e, ApplyError::Store(StoreError::NotFound(_)))
        }),
        (
            "method not offered",
            guangdong.clone(),
            ApplicationRequest { methods: vec![ServiceMethod::OnlineQuery], ..gps_request("b") },
            |e| matches!(e, ApplyError::MethodNotOffered { method: ServiceMethod::OnlineQuery, .. }),
        ),
        (
            "unknown column",
            guangdong.clone(),
            ApplicationRequest {
                columns: Some(vec!["vin".into(), "ts".into(), "colour".into()]),
                ..gps_request("c")
            },
            |e| matches!(e, ApplyError::UnknownColumn { column, .. } if column == "colour"),
        ),
        (
            "key column left out",
            guangdong.clone(),
            ApplicationRequest { columns: Some(vec!["vin".into(), "lat".into()]), ..gps_request("d") },
            |e| matches!(e, ApplyError::KeyColumnMissing { column, .. } if column == "ts"),
        ),
        (
            "malformed row filter",
            guangdong.clone(),
            ApplicationRequest { rows: Some("speed_kmh >".into()), ..gps_request("e") },
            |e| matches!(e, ApplyError::RowFilter(_)),
        ),
        (
            "row filter on an unknown column",
            guangdong.clone(),
            ApplicationRequest { rows: Some("province = 'gd'".into()), ..gps_request("f") },
            |e| matches!(e, ApplyError::RowFilter(m) if m.contains("province")),
        ),
        (
            "content for unconditional data",
            guangdong.clone(),
            ApplicationRequest { columns: Some(vec!["vin".into()]), ..request("vehicle-registry", "g") },
            |e| matches!(e, ApplyError::ContentNotApplicable { share_type: ShareType::Unconditional, .. }),
        ),
        ("the provider's own data", operator("zhejiang"), gps_request("h"), |e| {
            matches!(e, ApplyError::OwnDataset { .. })
        }),
        ("a node applies", principal("guangdong", Role::Province), gps_request("i"), |e| {
            matches!(e, ApplyError::WrongRole { .. })
        }),
        ("no method", guangdong.clone(), ApplicationRequest { methods: vec![], ..gps_request("j") }, |e| {
            matches!(e, ApplyError::Invalid(_))
        }),
        (
            "empty purpose",
            guangdong.clone(),
            ApplicationRequest { purpose: " ".into(), ..gps_request("k") },
            |e| matches!(e, ApplyError::Invalid(_)),
        ),
    ];
    for (what, caller, request, expected) in cases {
        let refused = store.submit_application(&caller, &request, NOW).await;
        match refused {
            Err(error) => assert!(expected(&error), "{what}: {error:?}"),
            Ok(ok) => panic!("{what}: accepted {ok:?}"),
        }
    }
    assert_eq!(count(&store, "SELECT COUNT(*) FROM applications").await, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM application_reviews").await, 0);
    assert_eq!(audit_kinds(&store).await, ["registration", "registration"], "no decision recorded");
    assert_eq!(serial(&store, NOW).await, before);
    let missing = store.application(&support(), ApplicationId(99)).await;
    assert!(matches!(missing, Err(ApplyError::Store(StoreError::NotFound(_)))), "{missing:?}");
}

async fn a_conditional_application_runs_its_working_day_deadlines_across_spring_festival(db: TestDb) {
    let store = audited(&db);
    let (zhejiang, guangdong) = (operator("zhejiang"), operator("guangdong"));
    store.register(&zhejiang, gps(), None, REGISTERED).await.expect("gps");
    // Friday 13 February 2026, the last working day before the Spring Festival holiday.
    let submitted = submit(&store, "guangdong", &gps_request("k1"), datetime!(2026-02-13 10:00 +8)).await;
    let app = submitted.application;
    assert_eq!((app.state, app.decider), (ApplicationState::FirstReview, Decider::Provider));
    assert_eq!(
        app.columns.as_deref(),
        Some(&["vin", "ts", "lon", "lat"].map(String::from)[..]),
        "catalog order"
    );
    assert_eq!(app.rows.as_deref(), Some("speed_kmh > 0"), "canonical text");
    // Sat 14 Feb is a make-up working day, 15-23 Feb the holiday: day 3 is Wed 25 Feb.
    assert_eq!(app.due_on, Some(date!(2026 - 02 - 25)));
    let approve = Verdict::Approve { note: None };
    let t = datetime!(2026-02-25 16:00 +8);
    let wrong = store.first_review(&zhejiang, app.id, &approve, t).await;
    assert!(
        matches!(wrong, Err(ApplyError::WrongRole { .. })),
        "the provider makes no first review: {wrong:?}"
    );
    let early = store.decide_application(&zhejiang, app.id, &approve, t).await;
    assert!(
        matches!(early, Err(ApplyError::WrongState { state: ApplicationState::FirstReview, .. })),
        "{early:?}"
    );
    let reviewed = store.first_review(&support(), app.id, &approve, t).await.expect("first review");
    // 7 working days from Wed 25 Feb count the make-up Saturday 28 Feb: Thu 5 Mar.
    assert_eq!(
        (reviewed.state, reviewed.due_on),
        (ApplicationState::ProviderReview, Some(date!(2026 - 03 - 05)))
    );
    let again = store.first_review(&support(), app.id, &approve, t).await;
    assert!(matches!(again, Err(ApplyError::WrongState { .. })), "{again:?}");
    let asked =
        store.ask_material(&zhejiang, app.id, "the supervision mandate", datetime!(2026-02-26 10:00 +8));
    let asked = asked.await.expect("ask material");
    assert_eq!(
        (asked.state, asked.due_on, asked.paused_remaining_days),
        (ApplicationState::AwaitingMaterial, None, Some(6))
    );
    let paused = store.decide_application(&zhejiang, app.id, &approve, datetime!(2026-02-27 10:00 +8)).await;
    assert!(matches!(paused, Err(ApplyError::WrongState { .. })), "{paused:?}");
    let not_applicant =
        store.supply_material(&operator("jiangsu"), app.id, "x", datetime!(2026-03-09 10:00 +8)).await;
    assert!(matches!(not_applicant, Err(ApplyError::WrongRole { .. })), "{not_applicant:?}");
    let supplied =
        store.supply_material(&guangdong, app.id, "mandate attached", datetime!(2026-03-09 10:00 +8));
    let supplied = supplied.await.expect("supplied");
    // The clock restarts on Mon 9 Mar with 6 working days left: Tue 17 Mar.
    assert_eq!(
        (supplied.state, supplied.due_on),
        (ApplicationState::ProviderReview, Some(date!(2026 - 03 - 17)))
    );
    let no_basis =
        store.decide_application(&zhejiang, app.id, &Verdict::Refuse { basis: "  ".into() }, NOW).await;
    assert!(matches!(no_basis, Err(ApplyError::BasisRequired(_))), "{no_basis:?}");
    let by_other = store.decide_application(&operator("jiangsu"), app.id, &approve, NOW).await;
    assert!(matches!(by_other, Err(ApplyError::WrongRole { .. })), "{by_other:?}");
    let before = serial(&store, NOW).await;
    let granted = store.decide_application(&zhejiang, app.id, &approve, datetime!(2026-03-10 10:00 +8)).await;
    let granted = granted.expect("approved");
    assert_eq!((granted.state, granted.due_on), (ApplicationState::Granted, None));
    let twice =
        store.decide_application(&zhejiang, app.id, &Verdict::Refuse { basis: "late".into() }, NOW).await;
    assert!(
        matches!(twice, Err(ApplyError::WrongState { state: ApplicationState::Granted, .. })),
        "{twice:?}"
    );
    let state = store.policy_state(&ministry_node(), NOW).await.expect("policy");
    assert_eq!(state.serial, before + 1);
    let [grant] = state.grants.as_slice() else { panic!("one grant: {:?}", state.grants) };
    assert_eq!(
        grant.restriction,
        Some(Restriction {
            columns: Some(["vin", "ts", "lon", "lat"].map(String::from).to_vec()),
            rows: Some("speed_kmh > 0".into())
        })
    );
    assert_eq!((grant.purpose.as_str(), grant.application), ("road safety supervision", app.id.0));
    ferry_control::snapshot::build(&state, &dept("ministry"), 0).validate().expect("valid snapshot");
    let steps = count(&store, "SELECT COUNT(*) FROM application_reviews").await;
    assert_eq!(steps, 5, "submitted, first review, asked, supplied, decision");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM material_requests WHERE supplied_at IS NOT NULL").await,
        1
    );
    let kinds = audit_kinds(&store).await;
    assert_eq!(kinds.iter().filter(|k| *k == "application-reviewed").count(), 4, "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("grant-issued"));
}

fn not_shared() -> CatalogEntry {
    let mut secret = gps();
    secret.definition.id = id("enforcement-cases");
    secret.definition.share_type = ShareType::NotShared;
    secret.methods.clear();
    secret.share_conditions = None;
    secret.legal_basis = Some("《行政处罚法》 Administrative Penalty Law".into());
    secret
}

async fn refusals_cite_a_basis_and_not_shared_data_is_refused_with_the_catalog_basis(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("zhejiang"), not_shared(), None, REGISTERED).await.expect("not shared");
    store.register(&operator("zhejiang"), gps(), None, REGISTERED).await.expect("gps");
    let refused = submit(&store, "guangdong", &request("enforcement-cases", "k1"), NOW).await.application;
    assert_eq!(refused.state, ApplicationState::Refused);
    assert_eq!(refused.basis.as_deref(), Some("《行政处罚法》 Administrative Penalty Law"));
    assert_eq!(refused.grant, None);
    let app = submit(&store, "guangdong", &gps_request("k2"), NOW).await.application;
    let basis = Verdict::Refuse { basis: "not within the stated share scope".into() };
    let first = store.first_review(&support(), app.id, &basis, NOW).await.expect("refused at first review");
    assert_eq!(
        (first.state, first.basis.as_deref()),
        (ApplicationState::Refused, Some("not within the stated share scope"))
    );
    assert!(store.policy_state(&ministry_node(), NOW).await.expect("policy").grants.is_empty());
    let refusals = count(
        &store,
        "SELECT COUNT(*) FROM audit_entries WHERE kind = 'application-reviewed' AND outcome = 'refused'",
    );
    assert_eq!(refusals.await, 2);
}

async fn a_provider_delegates_its_reviews_and_reads_the_decisions_taken(db: TestDb) {
    let store = audited(&db);
    let zhejiang = operator("zhejiang");
    store.register(&zhejiang, gps(), None, REGISTERED).await.expect("gps");
    let approve = Verdict::Approve { note: Some("delegated review".into()) };
    let first = submit(&store, "guangdong", &gps_request("k1"), NOW).await.application;
    store.first_review(&support(), first.id, &approve, NOW).await.expect("first review");
    let undelegated = store.decide_application(&support(), first.id, &approve, NOW).await;
    assert!(matches!(undelegated, Err(ApplyError::WrongRole { .. })), "{undelegated:?}");
    store.set_review_delegation(&zhejiang, true, NOW).await.expect("delegate");
    let decided =
        store.decide_application(&support(), first.id, &approve, NOW).await.expect("decided by support");
    assert_eq!(decided.state, ApplicationState::Granted);
    let report = store.delegated_decisions(&zhejiang, &dept("zhejiang"), REGISTERED).await.expect("report");
    assert_eq!(report.len(), 1);
    assert_eq!((report[0].application, report[0].outcome.as_str()), (first.id, "approve"));
    let other = store.delegated_decisions(&operator("guangdong"), &dept("zhejiang"), REGISTERED).await;
    assert!(matches!(other, Err(ApplyError::WrongRole { .. })), "{other:?}");
    let later = NOW + time::Duration::minutes(1);
    store.set_review_delegation(&zhejiang, false, later).await.expect("take back");
    let second = submit(&store, "jiangsu", &gps_request("k2"), later).await.application;
    store.first_review(&support(), second.id, &approve, later).await.expect("first review");
    let taken_back = store.decide_application(&support(), second.id, &approve, later).await;
    assert!(matches!(taken_back, Err(ApplyError::WrongRole { .. })), "{taken_back:?}");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_entries WHERE kind = 'review-delegation'").await, 2);
}

async fn cross_industry_data_is_decided_by_the_st_authority(db: TestDb) {
    let store = audited(&db);
    let mut weather = gps();
    weather.definition.id = id("road-weather");
    weather.definition.provider = dept("meteorology");
    weather.classification = Classification::new("cross-industry/meteorology").expect("path");
    store.register(&operator("meteorology"), weather, None, REGISTERED).await.expect("weather");
    let app = submit(&store, "guangdong", &request("road-weather", "k1"), NOW).await.application;
    assert_eq!(app.decider, Decider::StAuthority);
    let approve = Verdict::Approve { note: None };
    store.first_review(&support(), app.id, &approve, NOW).await.expect("first review");
    let by_provider = store.decide_application(&operator("meteorology"), app.id, &approve, NOW).await;
    assert!(matches!(by_provider, Err(ApplyError::WrongRole { .. })), "{by_provider:?}");
    let decided = store.decide_application(&operator("st-authority"), app.id, &approve, NOW).await;
    assert_eq!(decided.expect("decided by the S&T authority").state, ApplicationState::Granted);
}

async fn deadlines_at_risk_and_overdue_are_listed_and_counted(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("zhejiang"), gps(), None, REGISTERED).await.expect("gps");
    // Mon 7 Sep 2026: first review due Thu 10 Sep.
    let early =
        submit(&store, "guangdong", &gps_request("k1"), datetime!(2026-09-07 10:00 +8)).await.application;
    // Wed 9 Sep: due Mon 14 Sep.
    let later =
        submit(&store, "jiangsu", &gps_request("k2"), datetime!(2026-09-09 10:00 +8)).await.application;
    assert_eq!((early.due_on, later.due_on), (Some(date!(2026 - 09 - 10)), Some(date!(2026 - 09 - 14))));
    let wed = datetime!(2026-09-09 12:00 +8);
    let due = store.reviews_due(&support(), wed).await.expect("due");
    assert_eq!(
        due.iter().map(|d| (d.application.id, d.working_days_left, d.overdue)).collect::<Vec<_>>(),
        [(early.id, 1, false)]
    );
    // Fri 11 Sep: the first is overdue, the second is due on the next working day (Mon).
    let fri = datetime!(2026-09-11 12:00 +8);
    let due = store.reviews_due(&support(), fri).await.expect("due");
    assert_eq!(
        due.iter().map(|d| (d.application.id, d.working_days_left, d.overdue)).collect::<Vec<_>>(),
        [(early.id, -1, true), (later.id, 1, false)]
    );
    let seen_by_applicant = store.reviews_due(&operator("guangdong"), fri).await.expect("due");
    assert_eq!(seen_by_applicant.len(), 1, "an applicant sees its own");
    let counts = store.review_counts(fri).await.expect("counts");
    assert_eq!((counts.due_within_one_day, counts.overdue), (1, 1));
    assert!(counts.by_state.contains(&(ApplicationState::FirstReview, 2)), "{counts:?}");
    let listed =
        store.applications(&operator("zhejiang"), Some(ApplicationState::FirstReview)).await.expect("list");
    assert_eq!(listed.len(), 2, "the provider sees applications for its data");
    assert!(store.applications(&operator("hubei"), None).await.expect("list").is_empty());
}

async fn a_deadline_in_a_year_without_a_calendar_file_is_refused(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("zhejiang"), gps(), None, REGISTERED).await.expect("gps");
    // Wed 30 Dec 2026: the third working day falls in 2027, which has no calendar file.
    let refused = store
        .submit_application(&operator("guangdong"), &gps_request("k1"), datetime!(2026-12-30 10:00 +8))
        .await;
    assert!(
        matches!(refused, Err(ApplyError::Calendar(CalendarError::MissingYear { year: 2027 }))),
        "{refused:?}"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM applications").await, 0, "nothing written");
    assert_eq!(audit_kinds(&store).await, ["registration"]);
}

async fn a_failure_inside_a_grant_leaves_nothing_behind(db: TestDb) {
    let store = audited(&db);
    store.register(&operator("ministry"), vehicles(), None, REGISTERED).await.expect("vehicles");
    let before = serial(&store, NOW).await;
    // A grant row that claims application 1, which the submission is about to create.
    sqlx::query(
        "INSERT INTO grants (id, application, dept, dataset, purpose, methods, catalog_from, granted_at, state) \
         VALUES (50, 1, 'x', 'vehicle-registry', 'p', 'download', 1, 0, 'revoked')",
    )
    .execute(store.pool())
    .await
    .expect("plant a conflicting grant");
    let failed =
        store.submit_application(&operator("guangdong"), &request("vehicle-registry", "k1"), NOW).await;
    assert!(matches!(failed, Err(ApplyError::Store(StoreError::Conflict(_)))), "{failed:?}");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM applications").await, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM application_reviews").await, 0);
    assert_eq!(audit_kinds(&store).await, ["registration"], "no audit entry of a rolled-back decision");
    assert_eq!(serial(&store, NOW).await, before);
    sqlx::query("DELETE FROM grants").execute(store.pool()).await.expect("clean");
    let retried = submit(&store, "guangdong", &request("vehicle-registry", "k1"), NOW).await;
    assert_eq!(retried.application.state, ApplicationState::Granted);
}

async fn the_control_calls_answer_as_the_cli_expects_and_tick_the_policy(db: TestDb) {
    use ferry_control::api::{ApiCode, ControlRequest};
    use ferry_control::plane::ControlPlane;
    let signer = Arc::new(KeyPairSigner::generate().expect("key"));
    let audit = Arc::new(AuditLog::new(db.store.pool().clone(), signer.clone(), CheckpointPolicy::default()));
    let store = db.store.clone().with_audit(audit.clone());
    store.register(&operator("zhejiang"), gps(), None, REGISTERED).await.expect("gps");
    let verifier = Arc::new(signer.verifier());
    let plane = ControlPlane::new(store, audit, signer, verifier, ministry_node());
    let changes = plane.changes();
    let apply = ControlRequest::parse(
        r#"{"op": "apply", "dataset": "vehicle-gps", "purpose": "safety", "methods": ["download"],
            "columns": ["vin", "ts", "lat"], "rows": "heading < 90", "key": "k1"}"#,
    )
    .expect("the CLI's document parses");
    let answer = plane.call(&operator("guangdong"), apply, NOW).await.expect("applied");
    assert_eq!(
        (answer["created"].as_bool(), answer["application"]["state"].as_str()),
        (Some(true), Some("first-review"))
    );
    let id = answer["application"]["id"].as_u64().expect("id");
    let approve = |note: &str| ControlRequest::ReviewApprove { application: id, note: Some(note.into()) };
    let refused =
        plane.call(&operator("guangdong"), approve("self-approval"), NOW).await.expect_err("wrong role");
    assert_eq!(refused.code, ApiCode::Forbidden);
    let first = plane.call(&support(), approve("complete"), NOW).await.expect("first review");
    assert_eq!(first["state"].as_str(), Some("provider-review"));
    assert!(!changes.has_changed().expect("plane alive"), "no grant yet");
    let granted = plane.call(&operator("zhejiang"), approve("ok"), NOW).await.expect("decision");
    assert_eq!(granted["state"].as_str(), Some("granted"));
    assert!(changes.has_changed().expect("plane alive"), "a grant ticks the snapshot's re-issue");
    let twice = plane.call(&operator("zhejiang"), approve("again"), NOW).await.expect_err("decided");
    assert_eq!(twice.code, ApiCode::Conflict);
    let bad = ControlRequest::ReviewRefuse { application: id + 1, basis: "x".into() };
    assert_eq!(plane.call(&support(), bad, NOW).await.expect_err("no such").code, ApiCode::NotFound);
    let listed = plane.call(&support(), ControlRequest::ReviewList { state: None }, NOW).await.expect("list");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let due = plane.call(&support(), ControlRequest::ReviewDue {}, NOW).await.expect("due");
    assert_eq!(due.as_array().map(Vec::len), Some(0), "a granted application has no deadline");
}
