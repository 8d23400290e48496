//! The fleet view (issue 20 §6) through the control store, on SQLite and PostgreSQL: province
//! nodes report what they hold, the ministry's operators read every province x dataset with the
//! version held and how far behind the latest publication it is; who may report and read.

use ferry_control::fleet::{FleetRow, HoldingReport, STALE_AFTER_S};
use ferry_control::store::{ControlStore, StoreError};
use ferry_proto::{DatasetId, Principal, Role, VersionNo};
use time::{Duration, OffsetDateTime};

use crate::harness::*;

scenarios!(
    "fleet scenarios on PostgreSQL";
    provinces_behind_and_up_to_date,
    a_report_replaces_the_nodes_rows_and_unknown_datasets_are_ignored,
    only_province_nodes_report_and_only_the_ministry_reads,
);

fn vehicles_id() -> DatasetId {
    DatasetId::new("vehicle-registry").expect("id")
}

fn node(dept_id: &str, name: &str) -> Principal {
    Principal { name: name.into(), ..principal(dept_id, Role::Province) }
}

fn holds(version: u64) -> Vec<HoldingReport> {
    vec![HoldingReport { dataset: vehicles_id(), version: VersionNo::new(version).expect("version") }]
}

/// The vehicle registry with versions 1..=3 published at t0, t0 + 1 h, t0 + 2 h.
async fn published(store: &ControlStore, t0: OffsetDateTime) {
    store.register(&operator("ministry"), vehicles(), None, t0 - Duration::days(1)).await.expect("register");
    for v in 1..=3u64 {
        let at = t0 + Duration::hours(v as i64 - 1);
        let version = VersionNo::new(v).expect("version");
        store.record_publication(&ministry_node(), &vehicles_id(), version, 1, at).await.expect("publish");
    }
}

async fn grant(store: &ControlStore, id: i64, holder: &str, methods: &str) {
    sqlx::query(
        "INSERT INTO grants (id, application, dept, dataset, purpose, methods, restriction_columns, \
         restriction_rows, catalog_from, catalog_to, granted_at, state) \
         VALUES ($1, $1, $2, 'vehicle-registry', 'road safety', $3, NULL, NULL, 1, NULL, 0, 'active')",
    )
    .bind(id)
    .bind(holder.to_owned())
    .bind(methods.to_owned())
    .execute(store.pool())
    .await
    .expect("insert grant");
}

/// dept, node, held, latest, versions behind, seconds behind, stale.
type Cells = (String, Option<String>, Option<u64>, Option<u64>, u64, u64, bool);

fn cells(rows: &[FleetRow]) -> Vec<Cells> {
    rows.iter()
        .map(|r| {
            (
                r.dept.to_string(),
                r.node.clone(),
                r.held,
                r.latest,
                r.versions_behind,
                r.seconds_behind,
                r.stale,
            )
        })
        .collect()
}

async fn provinces_behind_and_up_to_date(db: TestDb) {
    let store = &db.store;
    let t0 = NOW - Duration::hours(3);
    published(store, t0).await;
    // Zhejiang holds the latest; Guangdong's node still holds v1, reported 10 minutes ago.
    store.record_holdings(&node("zhejiang", "zj-node"), &holds(3), NOW).await.expect("zj report");
    let recorded = store
        .record_holdings(&node("guangdong", "gd-node"), &holds(1), NOW - Duration::minutes(10))
        .await
        .expect("gd report");
    assert_eq!((recorded.holdings, recorded.ignored), (1, 0));
    // Sichuan holds a download grant but never reported; Hunan's is query-only (holds nothing).
    grant(store, 1, "sichuan", "download").await;
    grant(store, 2, "hunan", "online-query").await;
    grant(store, 3, "zhejiang", "subscription").await;

    let view = store.fleet(&operator("ministry"), &dept("ministry"), NOW).await.expect("fleet");
    let hour = 3600;
    assert_eq!(
        cells(&view.rows),
        [
            // v2 (the oldest it lacks) was published 2 h before now.
            ("guangdong".into(), Some("gd-node".into()), Some(1), Some(3), 2, 2 * hour, true),
            ("sichuan".into(), None, None, Some(3), 3, 3 * hour, true),
            ("zhejiang".into(), Some("zj-node".into()), Some(3), Some(3), 0, 0, false),
        ]
    );
    let gd = &view.rows[0];
    assert_eq!(gd.report_age_s, Some(600));
    const { assert!(600 > STALE_AFTER_S) };
    let ages: Vec<_> = view.nodes.iter().map(|n| (n.node.as_str(), n.report_age_s, n.stale)).collect();
    assert_eq!(ages, [("gd-node", 600, true), ("zj-node", 0, false)]);

    // Guangdong catches up: nothing behind, fresh again.
    store.record_holdings(&node("guangdong", "gd-node"), &holds(3), NOW).await.expect("gd again");
    let view = store.fleet(&operator("ministry"), &dept("ministry"), NOW).await.expect("fleet");
    assert_eq!(
        cells(&view.rows)[0],
        ("guangdong".into(), Some("gd-node".into()), Some(3), Some(3), 0, 0, false)
    );
}

async fn a_report_replaces_the_nodes_rows_and_unknown_datasets_are_ignored(db: TestDb) {
    let store = &db.store;
    published(store, NOW - Duration::hours(3)).await;
    let gd = node("guangdong", "gd-node");
    let mut report = holds(2);
    report.push(HoldingReport {
        dataset: DatasetId::new("not-in-catalog").expect("id"),
        version: VersionNo::FIRST,
    });
    // The same dataset twice: the newer counts.
    report.push(HoldingReport { dataset: vehicles_id(), version: VersionNo::FIRST });
    let recorded = store.record_holdings(&gd, &report, NOW).await.expect("report");
    assert_eq!((recorded.holdings, recorded.ignored), (1, 1));
    // A second node of the same department is its own row.
    store.record_holdings(&node("guangdong", "gd-backup"), &holds(3), NOW).await.expect("backup");
    let view = store.fleet(&ministry_node(), &dept("ministry"), NOW).await.expect("fleet");
    let held: Vec<_> = view.rows.iter().map(|r| (r.node.clone().unwrap_or_default(), r.held)).collect();
    assert_eq!(held, [("gd-backup".to_owned(), Some(3)), ("gd-node".to_owned(), Some(2))]);
    let (behind, _) = view.by_department();
    assert_eq!(behind.values().copied().collect::<Vec<_>>(), [1], "the worst node of the department");

    // The node dropped the dataset: its row goes, the node stays known with its report time.
    store.record_holdings(&gd, &[], NOW + Duration::minutes(1)).await.expect("empty report");
    let view =
        store.fleet(&ministry_node(), &dept("ministry"), NOW + Duration::minutes(1)).await.expect("fleet");
    assert_eq!(view.rows.len(), 1);
    assert_eq!(view.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["gd-backup", "gd-node"]);
}

async fn only_province_nodes_report_and_only_the_ministry_reads(db: TestDb) {
    let store = &db.store;
    published(store, NOW - Duration::hours(3)).await;
    for caller in [operator("guangdong"), ministry_node(), principal("ministry", Role::Control)] {
        let refused = store.record_holdings(&caller, &holds(1), NOW).await;
        assert!(matches!(refused, Err(StoreError::Forbidden { .. })), "{caller} reported: {refused:?}");
    }
    let too_many = vec![holds(1)[0].clone(); ferry_control::fleet::MAX_HOLDINGS + 1];
    let refused = store.record_holdings(&node("guangdong", "gd"), &too_many, NOW).await;
    assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");

    for caller in [
        node("guangdong", "gd-node"),
        operator("guangdong"),
        operator("st-authority"),
        principal("ministry", Role::Control),
    ] {
        let refused = store.fleet(&caller, &dept("ministry"), NOW).await;
        assert!(matches!(refused, Err(StoreError::Forbidden { .. })), "{caller} read the fleet");
    }
    // Technical support's operators read it where it is not the ministry's own department.
    let other_ministry = dept("transport-ministry");
    store.fleet(&operator("ministry"), &other_ministry, NOW).await.expect("technical support reads");
    store
        .fleet(&operator("transport-ministry"), &other_ministry, NOW)
        .await
        .expect("ministry operator reads");
}
