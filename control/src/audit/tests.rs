//! Audit log tests over a real database: appends, concurrency, checkpoints, `show`, and one
//! test per kind of tampering, each asserting the seq `verify` names. Every case is a function
//! of a migrated pool, run on SQLite (a temp file) and on PostgreSQL (a throwaway cluster).

use super::*;
use crate::signing::{KeyPairSigner, SignedBlob};
use crate::test_db::{TestDb, on_both_backends};
use entry::tests::sample;
use ferry_proto::{DatasetId, DeptId};
use futures::TryStreamExt;
use std::time::Duration;

on_both_backends!(
    appends_number_and_chain_entries,
    concurrent_appends_stay_linear,
    two_logs_on_one_database_stay_linear,
    append_in_commits_or_rolls_back_with_the_transaction,
    a_batch_appends_in_order_or_not_at_all,
    checkpoints_by_count_and_on_demand,
    show_filters_by_dataset_department_and_time,
    modified_entry_is_named,
    deleted_entry_is_named,
    inserted_entry_is_named,
    reordered_entries_are_named,
    truncated_log_is_named,
    truncation_with_its_checkpoints_is_caught_by_an_exported_anchor,
    timer_checkpoints_an_idle_head,
    rewritten_chain_is_caught_by_the_next_checkpoint,
    forged_checkpoint_signature_is_named,
);

struct Fixture {
    log: AuditLog,
    signer: Arc<KeyPairSigner>,
}

fn fixture(db: &TestDb, every_entries: u64) -> Fixture {
    let signer = Arc::new(KeyPairSigner::generate().expect("key"));
    let policy = CheckpointPolicy { every_entries, every: Duration::from_secs(3600) };
    Fixture { log: AuditLog::new(db.pool.clone(), signer.clone(), policy), signer }
}

impl Fixture {
    async fn fill(&self, n: u64) {
        for i in 1..=n {
            let dataset = if i % 2 == 0 { "bus-routes" } else { "vehicle-registry" };
            self.log.append(sample(1_000 * i as i64, Some(dataset))).await.expect("append");
        }
    }

    async fn verify(&self) -> VerifyReport {
        self.log.verify(&self.signer.verifier()).await.expect("verify")
    }

    async fn first_problem(&self) -> Problem {
        let report = self.verify().await;
        report.first_problem().cloned().unwrap_or_else(|| panic!("tampering not detected: {report:?}"))
    }

    async fn raw_rows(&self) -> Vec<RawEntry> {
        store::stream_raw(self.log.pool()).try_collect().await.expect("rows")
    }

    async fn exec(&self, sql: &'static str) {
        sqlx::query(sql).execute(self.log.pool()).await.expect(sql);
    }

    async fn insert_raw(&self, raw: &RawEntry) {
        let mut conn = self.log.pool().acquire().await.expect("conn");
        store::insert_entry(&mut conn, raw).await.expect("insert");
    }
}

async fn appends_number_and_chain_entries(db: TestDb) {
    let f = fixture(&db, 1000);
    let first = f.log.append(sample(10, None)).await.expect("first");
    let second = f.log.append(sample(20, Some("bus-routes"))).await.expect("second");
    assert_eq!((first.seq, first.prev_hash), (1, GENESIS_HASH));
    assert_eq!((second.seq, second.prev_hash), (2, first.hash));
    assert_eq!(f.log.head().await.expect("head"), (2, second.hash));
    let report = f.verify().await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries, report.last_hash), (2, Some(second.hash.to_hex())));
}

async fn concurrent_appends_stay_linear(db: TestDb) {
    let f = Arc::new(fixture(&db, 7));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move { f.log.append(sample(i, None)).await.expect("append").seq })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let report = f.verify().await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints_valid, 5);
}

/// Two logs on one database stand for two processes: only the database serializes them.
async fn two_logs_on_one_database_stay_linear(db: TestDb) {
    let a = Arc::new(fixture(&db, 1000));
    let b = Arc::new(AuditLog::new(db.pool.clone(), a.signer.clone(), CheckpointPolicy::default()));
    let mut tasks = Vec::new();
    for i in 0..15 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move { a.log.append(sample(i, None)).await.map(|e| e.seq) }));
        tasks.push(tokio::spawn(async move { b.append(sample(i, None)).await.map(|e| e.seq) }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task").expect("append: the database lock orders both writers"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    let report = a.verify().await;
    assert!(report.is_intact(), "{report:?}");
}

async fn append_in_commits_or_rolls_back_with_the_transaction(db: TestDb) {
    let f = fixture(&db, 1000);
    let mut tx = f.log.begin().await.expect("begin");
    f.log.append_in(&mut tx, &sample(1, None)).await.expect("append_in");
    tx.rollback().await.expect("rollback");
    assert_eq!(f.log.head().await.expect("head").0, 0);
    let mut tx = f.log.begin().await.expect("begin");
    let entry = f.log.append_in(&mut tx, &sample(2, None)).await.expect("append_in");
    tx.commit().await.expect("commit");
    assert_eq!(f.log.head().await.expect("head"), (1, entry.hash));
}

async fn a_batch_appends_in_order_or_not_at_all(db: TestDb) {
    let f = fixture(&db, 4);
    f.log.append(sample(1, None)).await.expect("first");
    let batch: Vec<NewEntry> = (2..=6).map(|i| sample(i, Some("bus-routes"))).collect();
    let appended = f.log.append_batch(&batch).await.expect("batch");
    let seqs: Vec<(u64, i64)> = appended.iter().map(|e| (e.seq, e.time_ms)).collect();
    assert_eq!(seqs, [(2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]);
    let mut bad = batch.clone();
    bad[3].detail = serde_json::json!("not an object");
    assert!(matches!(
        f.log.append_batch(&bad).await,
        Err(AuditError::Invalid(EntryError::DetailNotAnObject))
    ));
    assert_eq!(f.log.head().await.expect("head").0, 6, "nothing of the refused batch was written");
    let report = f.verify().await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints_valid, 1, "the checkpoint due at 4 was taken inside the batch");
}

async fn checkpoints_by_count_and_on_demand(db: TestDb) {
    let f = fixture(&db, 3);
    f.fill(7).await;
    let seqs: Vec<i64> = store::checkpoints(f.log.pool()).await.expect("cps").iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [3, 6]);
    let on_demand = f.log.checkpoint(99_000).await.expect("checkpoint").expect("new head");
    assert_eq!(on_demand.seq, 7);
    assert!(f.log.checkpoint(99_001).await.expect("again").is_none(), "head already checkpointed");
    let report = f.verify().await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints_valid, 3);
}

async fn show_filters_by_dataset_department_and_time(db: TestDb) {
    let f = fixture(&db, 1000);
    f.fill(6).await;
    let mut other = sample(7_000, Some("bus-routes"));
    other.actor.department = DeptId::new("zj-transport").expect("dept");
    other.kind = EntryKind::ReadDenied;
    other.outcome = Outcome::Refused;
    f.log.append(other).await.expect("append");

    let bus =
        ShowFilter { dataset: Some(DatasetId::new("bus-routes").expect("id")), ..ShowFilter::default() };
    let seqs = |entries: Vec<AuditEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(f.log.show(&bus).await.expect("show")), [7, 6, 4, 2]);
    let zj =
        ShowFilter { department: Some(DeptId::new("zj-transport").expect("dept")), ..ShowFilter::default() };
    let denied = f.log.show(&zj).await.expect("show");
    assert_eq!((seqs(denied.clone()), denied[0].outcome), (vec![7], Outcome::Refused));
    let window =
        ShowFilter { from_ms: Some(2_000), until_ms: Some(5_000), limit: 2, ..ShowFilter::default() };
    assert_eq!(seqs(f.log.show(&window).await.expect("show")), [4, 3]);
    let page = ShowFilter { before_seq: Some(3), ..ShowFilter::default() };
    assert_eq!(seqs(f.log.show(&page).await.expect("show")), [2, 1]);
}

async fn modified_entry_is_named(db: TestDb) {
    let f = fixture(&db, 4);
    f.fill(10).await;
    f.exec("UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 5").await;
    assert_eq!(f.first_problem().await, Problem { seq: 5, kind: ProblemKind::HashMismatch });
}

async fn deleted_entry_is_named(db: TestDb) {
    let f = fixture(&db, 4);
    f.fill(10).await;
    f.exec("DELETE FROM audit_entries WHERE seq = 6").await;
    assert_eq!(f.first_problem().await, Problem { seq: 6, kind: ProblemKind::Missing { found: 7 } });
}

/// A forged entry at 5, correctly chained to 4 and hashed, with the rest moved up one: the
/// forgery itself is self-consistent, so the first break is the old 5, now at 6.
async fn inserted_entry_is_named(db: TestDb) {
    let f = fixture(&db, 1000);
    f.fill(8).await;
    let rows = f.raw_rows().await;
    f.exec("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 5").await;
    f.exec("UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000").await;
    let prev = EntryHash::from_hex(&rows[3].hash).expect("hash");
    let forged = sample(4_500, Some("bus-routes")).to_raw(5, prev).expect("forged");
    f.insert_raw(&forged).await;
    assert_eq!(f.first_problem().await, Problem { seq: 6, kind: ProblemKind::PrevHashMismatch });
}

async fn reordered_entries_are_named(db: TestDb) {
    let f = fixture(&db, 1000);
    f.fill(8).await;
    f.exec("UPDATE audit_entries SET seq = -1 WHERE seq = 4").await;
    f.exec("UPDATE audit_entries SET seq = 4 WHERE seq = 5").await;
    f.exec("UPDATE audit_entries SET seq = 5 WHERE seq = -1").await;
    assert_eq!(f.first_problem().await, Problem { seq: 4, kind: ProblemKind::PrevHashMismatch });
}

async fn truncated_log_is_named(db: TestDb) {
    let f = fixture(&db, 4);
    f.fill(10).await;
    f.exec("DELETE FROM audit_entries WHERE seq > 6").await;
    assert_eq!(
        f.first_problem().await,
        Problem { seq: 7, kind: ProblemKind::Truncated { checkpoint_seq: 8 } }
    );
}

/// The tail and the checkpoints behind it deleted: only a checkpoint exported before shows it.
async fn truncation_with_its_checkpoints_is_caught_by_an_exported_anchor(db: TestDb) {
    let f = fixture(&db, 4);
    f.fill(10).await;
    let exported = f.log.checkpoints().await.expect("export");
    let json = serde_json::to_string(&exported).expect("json");
    f.exec("DELETE FROM audit_entries WHERE seq > 6").await;
    f.exec("DELETE FROM audit_checkpoints WHERE seq > 6").await;
    assert!(f.verify().await.is_intact(), "without the anchor the shorter log looks whole");
    let anchors: Vec<StoredCheckpoint> = serde_json::from_str(&json).expect("parse");
    let report = verify_pool(f.log.pool(), &f.signer.verifier(), &anchors).await.expect("verify");
    assert_eq!(
        report.first_problem(),
        Some(&Problem { seq: 7, kind: ProblemKind::Truncated { checkpoint_seq: 8 } })
    );
}

async fn timer_checkpoints_an_idle_head(db: TestDb) {
    let f = fixture(&db, 1000);
    let log = Arc::new(f.log);
    log.append(sample(1, None)).await.expect("append");
    let timer = log.spawn_checkpoint_timer(Duration::from_millis(20), || 42);
    let mut checkpoints = Vec::new();
    for _ in 0..200 {
        checkpoints = log.checkpoints().await.expect("checkpoints");
        if !checkpoints.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    timer.abort();
    assert_eq!(checkpoints.iter().map(|c| (c.seq, c.time_ms)).collect::<Vec<_>>(), [(1, 42)]);
}

/// Entry 6 changed and every hash from 6 on recomputed: the chain is consistent again, but the
/// signed checkpoint at 8 no longer matches, and names the range since the good one at 4.
async fn rewritten_chain_is_caught_by_the_next_checkpoint(db: TestDb) {
    let f = fixture(&db, 4);
    f.fill(10).await;
    let rows = f.raw_rows().await;
    f.exec("DELETE FROM audit_entries WHERE seq >= 6").await;
    let mut prev = EntryHash::from_hex(&rows[4].hash).expect("hash");
    for raw in &rows[5..] {
        let mut forged = raw.clone();
        if forged.seq == 6 {
            forged.reason = "rewritten".into();
        }
        forged.prev_hash = prev.to_hex();
        prev = entry_hash(&forged, prev);
        forged.hash = prev.to_hex();
        f.insert_raw(&forged).await;
    }
    assert_eq!(
        f.first_problem().await,
        Problem { seq: 8, kind: ProblemKind::CheckpointMismatch { since_seq: 5 } }
    );
}

async fn forged_checkpoint_signature_is_named(db: TestDb) {
    let f = fixture(&db, 4);
    f.fill(10).await;
    let stored = store::checkpoints(f.log.pool()).await.expect("checkpoints");
    let mut signed: SignedBlob = serde_json::from_str(&stored[1].signed).expect("blob");
    signed.signature = KeyPairSigner::generate().expect("key").sign(&signed.body).expect("sign").signature;
    sqlx::query("UPDATE audit_checkpoints SET signed = $1 WHERE seq = 8")
        .bind(serde_json::to_string(&signed).expect("json"))
        .execute(f.log.pool())
        .await
        .expect("update");
    let problem = f.first_problem().await;
    assert_eq!(problem.seq, 8);
    assert!(matches!(problem.kind, ProblemKind::CheckpointSignature { .. }), "{problem:?}");
}

#[tokio::test]
async fn verify_file_reads_a_copy_offline_without_writing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node-audit.db");
    let signer = Arc::new(KeyPairSigner::generate().expect("key"));
    let policy = CheckpointPolicy { every_entries: 2, every: Duration::from_secs(60) };
    let log = AuditLog::open(path.to_str().expect("utf-8"), signer.clone(), policy).await.expect("open");
    for i in 0..5 {
        log.append(sample(i, None)).await.expect("append");
    }
    log.pool().close().await;
    let before = std::fs::read(&path).expect("read");
    let report = verify_file(&path, &signer.verifier(), &[]).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries, report.checkpoints_valid), (5, 2));
    assert_eq!(std::fs::read(&path).expect("read"), before, "verification wrote to the file");
}

#[tokio::test]
async fn oversized_entry_is_refused_and_nothing_is_written() {
    let db = TestDb::sqlite().await;
    let f = fixture(&db, 1000);
    let mut entry = sample(1, None);
    entry.reason = "x".repeat(MAX_REASON_LEN + 1);
    assert!(matches!(f.log.append(entry).await, Err(AuditError::Invalid(EntryError::TooLong { .. }))));
    assert_eq!(f.log.head().await.expect("head").0, 0);
}
