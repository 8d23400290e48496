//! Grant lifecycle, feedback, quality issues and supervision (issue 19 §2, §4, §5). Each
//! scenario runs on SQLite (one test each) and on PostgreSQL (one test running them all, a
//! fresh database per scenario). Grants are written as rows (the applications module makes
//! them in production); every decision is checked in the audit log.

use std::sync::Arc;

use ferry_control::audit::{AuditLog, CheckpointPolicy, EntryKind, Outcome, ShowFilter};
use ferry_control::calendar::Calendar;
use ferry_control::grants::{
    DisuseDecision, DisuseSweep, GrantFilter, GrantId, GrantNoticeKind, GrantState, UseReport,
};
use ferry_control::quality::{IssueFilter, IssueState, NeedMet};
use ferry_control::signing::KeyPairSigner;
use ferry_control::store::{ControlStore, StoreError};
use ferry_control::supervise::FindingCode;
use ferry_control::supervise::evaluate::CSV_HEADER;
use ferry_proto::{DatasetId, Role, ServiceMethod, VersionNo};
use time::{Duration, OffsetDateTime};

use crate::harness::*;

scenarios!(
    "lifecycle scenarios on PostgreSQL";
    revocation_by_each_role,
    disuse_sweep_flags_warns_and_revokes,
    feedback_by_the_holder_only,
    quality_issues_have_working_day_deadlines,
    supervision_report_is_computed_from_records,
    a_change_dropping_a_granted_column_closes_the_range,
);

pub(crate) fn gps_id() -> DatasetId {
    DatasetId::new("vehicle-gps").expect("id")
}

/// The store with an audit log attached, as the ministry runs it.
pub(crate) fn audited(db: &TestDb) -> (ControlStore, Arc<AuditLog>) {
    let log = Arc::new(AuditLog::new(
        db.store.pool().clone(),
        Arc::new(KeyPairSigner::generate().expect("key")),
        CheckpointPolicy::default(),
    ));
    (db.store.clone().with_audit(log.clone()), log)
}

/// Audit entries of `kind` by outcome: (accepted, refused).
async fn audited_count(log: &AuditLog, kind: EntryKind) -> (usize, usize) {
    let entries = log.show(&ShowFilter { limit: 1000, ..ShowFilter::default() }).await.expect("show");
    let of_kind: Vec<_> = entries.iter().filter(|e| e.kind == kind).collect();
    let accepted = of_kind.iter().filter(|e| e.outcome == Outcome::Accepted).count();
    (accepted, of_kind.len() - accepted)
}

async fn serial(store: &ControlStore) -> u64 {
    store.policy_state(&ministry_node(), NOW).await.expect("policy").serial
}

/// Writes an active grant row as the applications module would.
pub(crate) async fn insert_grant(
    store: &ControlStore,
    id: u64,
    holder: &str,
    dataset: &DatasetId,
    columns: Option<&[&str]>,
    granted_at: OffsetDateTime,
) -> GrantId {
    let columns = columns.map(|c| serde_json::to_string(c).expect("json"));
    sqlx::query(
        "INSERT INTO grants (id, application, dept, dataset, purpose, methods, restriction_columns, \
         restriction_rows, catalog_from, catalog_to, granted_at, state) \
         VALUES ($1, $2, $3, $4, 'road safety statistics', 'online-query,download', $5, NULL, 1, NULL, $6, 'active')",
    )
    .bind(id as i64)
    .bind(id as i64)
    .bind(holder.to_owned())
    .bind(dataset.as_str().to_owned())
    .bind(columns)
    .bind(granted_at.unix_timestamp())
    .execute(store.pool())
    .await
    .expect("insert grant");
    GrantId(id)
}

pub(crate) async fn with_gps(store: &ControlStore, at: OffsetDateTime) {
    store.register(&operator("zhejiang"), gps(), None, at).await.expect("register gps");
}

async fn revocation_by_each_role(db: TestDb) {
    let (store, log) = audited(&db);
    with_gps(&store, NOW).await;
    let first = insert_grant(&store, 1, "guangdong", &gps_id(), None, NOW).await;
    let second = insert_grant(&store, 2, "guangdong", &gps_id(), None, NOW).await;
    let before = serial(&store).await;
    let refused = [
        operator("guangdong"),                 // the holder
        operator("jiangsu"),                   // another department
        operator("st-authority"),              // the S&T authority
        principal("zhejiang", Role::Province), // the provider's node, not a person
        principal("ministry", Role::Ministry), // technical support's node
    ];
    for caller in &refused {
        let result = store.revoke_grant(caller, first, "misuse", NOW).await;
        assert!(matches!(result, Err(StoreError::Forbidden { .. })), "{caller}: {result:?}");
    }
    let empty = store.revoke_grant(&operator("zhejiang"), first, "  ", NOW).await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))), "a revocation needs a reason: {empty:?}");
    assert_eq!(serial(&store).await, before, "nothing half-applied by a refusal");

    let by_provider =
        store.revoke_grant(&operator("zhejiang"), first, "purpose exceeded", NOW).await.expect("provider");
    assert_eq!(by_provider.state, GrantState::Revoked);
    assert_eq!(by_provider.reason.as_deref(), Some("purpose exceeded"));
    let by_support =
        store.revoke_grant(&operator("ministry"), second, "leak reported", NOW).await.expect("support");
    assert_eq!(by_support.state, GrantState::Revoked);
    assert_eq!(serial(&store).await, before + 2, "each revocation bumps the policy serial");
    let again = store.revoke_grant(&operator("zhejiang"), first, "again", NOW).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(matches!(
        store.revoke_grant(&operator("zhejiang"), GrantId(99), "x", NOW).await,
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(audited_count(&log, EntryKind::GrantRevoked).await, (2, refused.len() + 1));
    let notices = store.grant_notices(&operator("guangdong"), &dept("guangdong")).await.expect("notices");
    assert_eq!(notices.iter().filter(|n| n.kind == GrantNoticeKind::Revoked).count(), 2);
    let listed = store.grants(&operator("guangdong"), &GrantFilter::default()).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(store.grants(&operator("jiangsu"), &GrantFilter::default()).await.expect("list").is_empty());
    let by_dataset = GrantFilter { dataset: Some(gps_id()), holder: Some(dept("guangdong")) };
    assert_eq!(store.grants(&operator("st-authority"), &by_dataset).await.expect("list").len(), 2);
}

async fn disuse_sweep_flags_warns_and_revokes(db: TestDb) {
    let (store, log) = audited(&db);
    with_gps(&store, NOW).await;
    let idle = insert_grant(&store, 1, "guangdong", &gps_id(), None, NOW).await;
    let revived = insert_grant(&store, 2, "jiangsu", &gps_id(), None, NOW).await;
    let sweep = DisuseSweep { notice_days: 30 };
    let platform = ministry_node();
    let early = store.sweep_disuse(&platform, sweep, NOW + Duration::days(80)).await.expect("sweep");
    assert!(early.decisions.is_empty(), "{early:?}");
    assert!(matches!(
        store.sweep_disuse(&operator("guangdong"), sweep, NOW).await,
        Err(StoreError::Forbidden { .. })
    ));

    let flag_at = NOW + Duration::days(92);
    let flagged = store.sweep_disuse(&platform, sweep, flag_at).await.expect("sweep");
    let revoke_after = flag_at + Duration::days(30);
    assert_eq!(
        flagged.decisions,
        [
            DisuseDecision::Flagged { grant: idle, revoke_after },
            DisuseDecision::Flagged { grant: revived, revoke_after }
        ]
    );
    let rerun = store.sweep_disuse(&platform, sweep, flag_at).await.expect("re-run");
    assert!(rerun.decisions.is_empty(), "idempotent: {rerun:?}");
    let warned = store.grant_notices(&operator("guangdong"), &dept("guangdong")).await.expect("notices");
    assert_eq!(warned.len(), 1);
    assert_eq!((warned[0].kind, warned[0].deadline), (GrantNoticeKind::DisuseWarning, Some(revoke_after)));
    let listed = store.grant(&operator("guangdong"), idle).await.expect("grant");
    assert_eq!(listed.revoke_after, Some(revoke_after));

    // jiangsu uses its grant during the notice period (a province node reports it).
    let used = UseReport {
        dept: dept("jiangsu"),
        dataset: gps_id(),
        method: ServiceMethod::Download,
        at_ms: (flag_at + Duration::days(3)).unix_timestamp() * 1000,
    };
    let recorded = store
        .record_uses(&principal("zhejiang", Role::Province), &[used], &[], flag_at + Duration::days(3))
        .await
        .expect("uses");
    assert_eq!(recorded.grants_touched, 1);
    let before = serial(&store).await;
    let quiet =
        store.sweep_disuse(&platform, sweep, revoke_after - Duration::seconds(1)).await.expect("sweep");
    assert_eq!(quiet.decisions, [DisuseDecision::Cleared { grant: revived }]);
    let due = store.sweep_disuse(&platform, sweep, revoke_after).await.expect("sweep");
    assert_eq!(due.decisions, [DisuseDecision::Revoked { grant: idle }]);
    assert_eq!(serial(&store).await, before + 1, "the revocation bumps the serial; a flag does not");
    assert!(store.sweep_disuse(&platform, sweep, revoke_after).await.expect("sweep").decisions.is_empty());
    let revoked = store.grant(&operator("guangdong"), idle).await.expect("grant");
    assert_eq!((revoked.state, revoked.revoked_by.as_deref()), (GrantState::Revoked, Some("disuse sweep")));
    let alive = store.grant(&operator("jiangsu"), revived).await.expect("grant");
    assert_eq!((alive.state, alive.revoke_after), (GrantState::Active, None));

    assert_eq!(audited_count(&log, EntryKind::GrantDisuse).await, (3, 0), "two flags, one clearing");
    assert_eq!(audited_count(&log, EntryKind::GrantRevoked).await, (1, 0));
}

async fn feedback_by_the_holder_only(db: TestDb) {
    let (store, log) = audited(&db);
    with_gps(&store, NOW).await;
    let grant = insert_grant(&store, 1, "guangdong", &gps_id(), None, NOW).await;
    let given = store
        .give_feedback(&operator("guangdong"), grant, NeedMet::Partly, 4, "cut inspection time by a day", NOW)
        .await
        .expect("feedback");
    assert_eq!((given.need_met, given.quality, given.holder), (NeedMet::Partly, 4, dept("guangdong")));
    for caller in [operator("zhejiang"), operator("ministry"), principal("guangdong", Role::Province)] {
        let refused = store.give_feedback(&caller, grant, NeedMet::Yes, 5, "fine", NOW).await;
        assert!(matches!(refused, Err(StoreError::Forbidden { .. })), "{caller}: {refused:?}");
    }
    for (quality, effect) in [(0, "x"), (6, "x"), (3, " ")] {
        let bad = store.give_feedback(&operator("guangdong"), grant, NeedMet::No, quality, effect, NOW).await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))), "{quality} {effect:?}: {bad:?}");
    }
    assert_eq!(audited_count(&log, EntryKind::GrantFeedback).await, (1, 3));
}

async fn quality_issues_have_working_day_deadlines(db: TestDb) {
    let (store, log) = audited(&db);
    let calendar = Calendar::shipped().expect("calendar");
    with_gps(&store, NOW).await;
    insert_grant(&store, 1, "guangdong", &gps_id(), None, NOW).await;
    let v1 = VersionNo::new(1).expect("version");
    store.record_publication(&ministry_node(), &gps_id(), v1, 1, NOW).await.expect("publication");
    let file = |caller, version, at| {
        let store = store.clone();
        let calendar = calendar.clone();
        async move {
            store
                .file_quality_issue(&caller, &gps_id(), version, "speed column is in mph", &calendar, 5, at)
                .await
        }
    };
    // Filed on Sunday 6 Dec 2026: five working days are Mon 7 .. Fri 11.
    let issue = file(operator("guangdong"), 1, NOW).await.expect("file");
    assert_eq!((issue.due_on.as_str(), issue.state), ("2026-12-11", IssueState::Open));
    assert!(matches!(file(operator("jiangsu"), 1, NOW).await, Err(StoreError::Forbidden { .. })));
    assert!(matches!(file(operator("guangdong"), 7, NOW).await, Err(StoreError::NotFound(_))));
    // Filed on 28 Dec 2026, the deadline reaches into 2027, which has no calendar file.
    let missing_year = file(operator("guangdong"), 1, NOW + Duration::days(22)).await;
    assert!(matches!(&missing_year, Err(StoreError::Invalid(m)) if m.contains("2027")), "{missing_year:?}");

    let late = NOW + Duration::days(6);
    let seen =
        store.quality_issues(&operator("guangdong"), &IssueFilter::default(), late).await.expect("list");
    assert_eq!(seen.iter().map(|i| i.state).collect::<Vec<_>>(), [IssueState::Overdue]);
    let supervision = IssueFilter { dataset: Some(gps_id()), unanswered: true };
    assert_eq!(
        store.quality_issues(&operator("st-authority"), &supervision, late).await.expect("list").len(),
        1
    );
    assert!(
        store
            .quality_issues(&operator("jiangsu"), &IssueFilter::default(), late)
            .await
            .expect("list")
            .is_empty()
    );

    let refused = store.answer_quality_issue(&operator("guangdong"), issue.id, "not ours", late).await;
    assert!(matches!(refused, Err(StoreError::Forbidden { .. })), "{refused:?}");
    let answered = store
        .answer_quality_issue(&operator("zhejiang"), issue.id, "fixed in v2", late)
        .await
        .expect("answer");
    assert_eq!((answered.state, answered.answer.as_deref()), (IssueState::AnsweredLate, Some("fixed in v2")));
    let twice = store.answer_quality_issue(&operator("zhejiang"), issue.id, "again", late).await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    assert_eq!(audited_count(&log, EntryKind::QualityIssue).await, (2, 3));
}

async fn supervision_report_is_computed_from_records(db: TestDb) {
    let (store, log) = audited(&db);
    let now = NOW + Duration::days(14); // Sunday 20 Dec 2026
    let calendar = Calendar::shipped().expect("calendar");
    // The ministry registered its vehicles 13 months ago and never connected data.
    store
        .register(&operator("ministry"), vehicles(), None, now - Duration::days(400))
        .await
        .expect("vehicles");
    // Zhejiang's GPS (hourly) was last published 10 days after registering, half a year ago.
    let gps_registered = now - Duration::days(200);
    with_gps(&store, gps_registered).await;
    let v1 = VersionNo::new(1).expect("version");
    store
        .record_publication(&ministry_node(), &gps_id(), v1, 1, gps_registered + Duration::days(10))
        .await
        .expect("pub");
    // Jiangsu registered a daily dataset 20 days ago and published nothing.
    let mut js = gps();
    js.definition.id = DatasetId::new("js-gps").expect("id");
    js.definition.provider = dept("jiangsu");
    js.definition.update_cycle = ferry_tables::definition::UpdateCycle::Daily;
    store.register(&operator("jiangsu"), js, None, now - Duration::days(20)).await.expect("js");
    // Guangdong holds a grant it never used, and filed an issue Zhejiang has not answered.
    insert_grant(&store, 1, "guangdong", &gps_id(), None, gps_registered + Duration::days(15)).await;
    store
        .file_quality_issue(&operator("guangdong"), &gps_id(), 1, "gaps every night", &calendar, 5, NOW)
        .await
        .expect("issue");
    // Zhejiang's node refused a publish that did not match the catalog.
    let refusal = ferry_control::grants::PublishRefusalReport {
        dataset: gps_id(),
        reason: "schema_mismatch".into(),
        at_ms: (now - Duration::days(5)).unix_timestamp() * 1000,
    };
    store.record_uses(&principal("zhejiang", Role::Province), &[], &[refusal], now).await.expect("refusal");
    // An application has waited for technical support's first review since 15 Dec.
    sqlx::query(
        "INSERT INTO applications (id, dept, client_key, body_hash, submitted_by, submitted_at, dataset, provider, \
         catalog_version, share_type, purpose, methods, state, decider, due_on) VALUES \
         (1, 'guangdong', 'k1', 'h', 'guangdong/operator/a', $1, 'vehicle-gps', 'zhejiang', 1, 'conditional', \
         'statistics', 'download', 'first-review', 'provider', '2026-12-15')",
    )
    .bind((now - Duration::days(10)).unix_timestamp())
    .execute(store.pool())
    .await
    .expect("application");

    let report = store.supervision_report(&operator("st-authority"), None, now).await.expect("report");
    let mut found: Vec<(String, FindingCode, Option<String>)> = report
        .departments
        .iter()
        .flat_map(|d| &d.findings)
        .map(|f| (f.dept.to_string(), f.finding, f.dataset.as_ref().map(|d| d.to_string())))
        .collect();
    found.sort();
    let s = |t: &str| Some(t.to_owned());
    let mut expected = vec![
        ("guangdong".to_owned(), FindingCode::CatalogNotCompiled, None),
        ("guangdong".to_owned(), FindingCode::GrantUnused, s("vehicle-gps")),
        ("jiangsu".to_owned(), FindingCode::DataNotProvided, s("js-gps")),
        ("ministry".to_owned(), FindingCode::CatalogNotUpdated, None),
        ("ministry".to_owned(), FindingCode::ReviewOverdue, s("vehicle-gps")),
        ("ministry".to_owned(), FindingCode::DataNotConnected, s("vehicle-registry")),
        ("zhejiang".to_owned(), FindingCode::DataNotUpdated, s("vehicle-gps")),
        ("zhejiang".to_owned(), FindingCode::DataInconsistent, s("vehicle-gps")),
        ("zhejiang".to_owned(), FindingCode::QualityUnanswered, s("vehicle-gps")),
    ];
    expected.sort();
    assert_eq!(found, expected);
    let codes: std::collections::BTreeSet<_> = found.iter().map(|f| f.1).collect();
    assert_eq!(codes.len(), FindingCode::ALL.len(), "every finding is produced");

    let json = serde_json::to_value(&report).expect("json");
    let zhejiang =
        json["departments"].as_array().expect("departments").iter().find(|d| d["dept"] == "zhejiang");
    let zhejiang = zhejiang.expect("zhejiang");
    assert_eq!(zhejiang["counts"]["data-not-updated"], 1);
    assert_eq!(
        zhejiang["findings"][0]["finding"].as_str().map(|f| FindingCode::parse(f).is_some()),
        Some(true)
    );
    let csv = report.to_csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    assert_eq!(lines.clone().count(), expected.len());
    assert!(lines.all(|l| l.split(',').count() >= 6), "{csv}");
    assert!(csv.contains("\njiangsu,data-not-provided,js-gps,,"), "{csv}");

    let own =
        store.supervision_report(&operator("zhejiang"), Some(&dept("zhejiang")), now).await.expect("own");
    assert_eq!(own.departments.len(), 1);
    assert!(matches!(
        store.supervision_report(&operator("zhejiang"), Some(&dept("jiangsu")), now).await,
        Err(StoreError::Forbidden { .. })
    ));

    // Rectification: against a standing finding only, by the S&T authority only, to closure.
    let st = operator("st-authority");
    let gps = gps_id();
    let stale = FindingCode::DataNotUpdated;
    assert!(matches!(
        store
            .issue_rectification(&operator("ministry"), &dept("zhejiang"), stale, Some(&gps), "publish", now)
            .await,
        Err(StoreError::Forbidden { .. })
    ));
    assert!(matches!(
        store
            .issue_rectification(&st, &dept("zhejiang"), FindingCode::GrantUnused, None, "use it", now)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let notice = store
        .issue_rectification(&st, &dept("zhejiang"), stale, Some(&gps), "publish on the hourly cycle", now)
        .await
        .expect("issue");
    assert!(notice.finding_stands);
    let v2 = VersionNo::new(2).expect("version");
    store.record_publication(&ministry_node(), &gps, v2, 1, now).await.expect("publish");
    let listed = store.rectifications(&operator("zhejiang"), None, now).await.expect("list");
    assert_eq!((listed.len(), listed[0].finding_stands), (1, false), "rectified by a publication");
    let closed = store.close_rectification(&st, notice.id, "publishing again", now).await.expect("close");
    assert_eq!(closed.state, ferry_control::supervise::NoticeState::Closed);
    assert!(matches!(
        store.close_rectification(&st, notice.id, "again", now).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audited_count(&log, EntryKind::RectificationNotice).await, (2, 3));
}

async fn a_change_dropping_a_granted_column_closes_the_range(db: TestDb) {
    let (store, _log) = audited(&db);
    with_gps(&store, NOW).await;
    let naming =
        insert_grant(&store, 1, "guangdong", &gps_id(), Some(&["vin", "ts", "altitude_m"]), NOW).await;
    let other = insert_grant(&store, 2, "jiangsu", &gps_id(), Some(&["vin", "ts"]), NOW).await;
    let mut changed = gps();
    changed.definition.columns.retain(|c| c.name != "altitude_m");
    let later = NOW + Duration::days(1);
    let too_soon = store.register(&operator("zhejiang"), changed.clone(), None, later).await;
    assert!(
        matches!(too_soon, Err(StoreError::TooEarly { .. })),
        "holders make the dataset in use: {too_soon:?}"
    );
    let effective = ferry_control::catalog::add_months(later, 3).expect("date");
    let registered =
        store.register(&operator("zhejiang"), changed, Some(effective), later).await.expect("register v2");
    assert_eq!(registered.notified, [dept("guangdong"), dept("jiangsu")]);
    assert_eq!(store.grant(&operator("guangdong"), naming).await.expect("grant").catalog_to, Some(1));
    assert_eq!(store.grant(&operator("jiangsu"), other).await.expect("grant").catalog_to, None);
    let notices = store.grant_notices(&operator("guangdong"), &dept("guangdong")).await.expect("notices");
    assert_eq!(notices.iter().map(|n| n.kind).collect::<Vec<_>>(), [GrantNoticeKind::RangeClosed]);
    assert!(store.grant_notices(&operator("jiangsu"), &dept("jiangsu")).await.expect("notices").is_empty());
}
