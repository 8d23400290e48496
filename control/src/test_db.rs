//! Test databases: a fresh migrated SQLite file, or a fresh database on a PostgreSQL server.
//!
//! PostgreSQL: `FERRY_TEST_POSTGRES_URL` (a superuser URL, e.g.
//! `postgres://ferry@127.0.0.1:5432/postgres`) names a running server; each test creates its
//! own database there. Without it the PostgreSQL cases are skipped with a message.

use sqlx::AnyPool;
use std::sync::atomic::{AtomicU64, Ordering};

/// A migrated database for one test; dropped with the test.
pub(crate) struct TestDb {
    pub pool: AnyPool,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let pool = crate::db::open(path.to_str().expect("utf-8 path")).await.expect("open sqlite");
        Some(TestDb { pool, _dir: Some(dir) })
    }

    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("FERRY_TEST_POSTGRES_URL") else {
            eprintln!("skipped: set FERRY_TEST_POSTGRES_URL to run the PostgreSQL cases");
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("ferry_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = crate::db::open_unmigrated(&admin_url).await.expect("connect to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').expect("URL with a database name");
        let pool = crate::db::open(&format!("{base}/{name}")).await.expect("open postgres");
        Some(TestDb { pool, _dir: None })
    }
}
