//! The audit log as the catalog store's [`AuditHook`]: each control decision the store makes
//! (a registration accepted or refused, a publication recorded) becomes an entry in the same
//! transaction as the catalog rows it describes, so both commit or neither does.
//!
//! Neighbours: [`crate::store`] calls the hook; [`super::AuditLog::append_in`] writes.

use super::AuditLog;
use super::entry::{Actor, EntryKind, NewEntry, Outcome, bounded_detail};
use crate::store::{AuditHook, ControlEvent, ControlEventKind};
use sqlx::AnyConnection;
use std::future::Future;
use std::pin::Pin;

/// The entry recording `event`.
pub fn entry_for(event: &ControlEvent) -> NewEntry {
    let (kind, outcome, reason) = match event.kind {
        ControlEventKind::Registered => (EntryKind::Registration, Outcome::Accepted, String::new()),
        ControlEventKind::RegistrationRefused => {
            let reason =
                event.detail.get("reason").and_then(|r| r.as_str()).unwrap_or("compliance check failed");
            (EntryKind::Registration, Outcome::Refused, reason.chars().take(512).collect())
        }
        ControlEventKind::Published => (EntryKind::PublishAccepted, Outcome::Accepted, String::new()),
    };
    let mut detail = serde_json::json!({ "catalog-version": event.catalog_version, "event": event.detail });
    if let Ok(kind) = serde_json::to_value(event.kind) {
        detail["event-kind"] = kind;
    }
    NewEntry {
        time_ms: event.at.saturating_mul(1000),
        kind,
        actor: Actor::from(&event.actor),
        dataset: Some(event.dataset.clone()),
        outcome,
        reason,
        detail: bounded_detail(detail),
    }
}

impl AuditHook for AuditLog {
    fn append<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        event: &'c ControlEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
        Box::pin(
            async move { self.append_in(conn, &entry_for(event)).await.map(drop).map_err(|e| e.into_sqlx()) },
        )
    }

    fn append_entry<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        entry: &'c NewEntry,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
        Box::pin(async move { self.append_in(conn, entry).await.map(drop).map_err(|e| e.into_sqlx()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{CheckpointPolicy, ShowFilter};
    use crate::signing::KeyPairSigner;
    use crate::test_db::TestDb;
    use ferry_proto::{DatasetId, DeptId};
    use std::sync::Arc;

    fn event(kind: ControlEventKind, detail: serde_json::Value) -> ControlEvent {
        ControlEvent {
            kind,
            dataset: DatasetId::new("bus-routes").expect("id"),
            dept: DeptId::new("gd-transport").expect("dept"),
            actor: ferry_proto::Principal {
                dept: DeptId::new("gd-transport").expect("dept"),
                role: ferry_proto::Role::Operator,
                name: "gd-ops".into(),
                serial: "0a".into(),
                fingerprint: "00".into(),
            },
            catalog_version: Some(2),
            at: 1_796_515_200,
            detail,
        }
    }

    #[test]
    fn events_map_to_kinds_outcomes_and_reasons() {
        let accepted =
            entry_for(&event(ControlEventKind::Registered, serde_json::json!({"stage": "formal"})));
        assert_eq!(
            (accepted.kind, accepted.outcome, accepted.time_ms),
            (EntryKind::Registration, Outcome::Accepted, 1_796_515_200_000)
        );
        assert_eq!(accepted.detail["catalog-version"], 2);
        assert_eq!(accepted.detail["event"]["stage"], "formal");
        let refused =
            entry_for(&event(ControlEventKind::RegistrationRefused, serde_json::json!({"reason": "art7"})));
        assert_eq!((refused.outcome, refused.reason.as_str()), (Outcome::Refused, "art7"));
        let published = entry_for(&event(ControlEventKind::Published, serde_json::json!({})));
        assert_eq!(published.kind, EntryKind::PublishAccepted);
    }

    #[test]
    fn an_oversized_report_is_cut_not_refused() {
        let report = serde_json::json!({"report": "x".repeat(100_000)});
        assert!(entry_for(&event(ControlEventKind::RegistrationRefused, report)).validate().is_ok());
    }

    #[tokio::test]
    async fn the_hook_appends_inside_the_callers_transaction() {
        let db = TestDb::sqlite().await;
        let log = AuditLog::new(
            db.pool.clone(),
            Arc::new(KeyPairSigner::generate().expect("key")),
            CheckpointPolicy::default(),
        );
        let mut tx = log.begin().await.expect("begin");
        AuditHook::append(&log, &mut tx, &event(ControlEventKind::Registered, serde_json::json!({})))
            .await
            .expect("hook");
        tx.rollback().await.expect("rollback");
        assert!(
            log.show(&ShowFilter::default()).await.expect("show").is_empty(),
            "rolled back with the transaction"
        );
        let mut tx = log.begin().await.expect("begin");
        AuditHook::append(&log, &mut tx, &event(ControlEventKind::Registered, serde_json::json!({})))
            .await
            .expect("hook");
        tx.commit().await.expect("commit");
        let shown = log.show(&ShowFilter::default()).await.expect("show");
        assert_eq!(shown.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(), [(1, EntryKind::Registration)]);
    }
}
