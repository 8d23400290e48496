//! Test databases: a fresh migrated SQLite file, or a fresh database on a PostgreSQL server —
//! the testkit's throwaway cluster (`tests/src/postgres.rs`, included by path so the crate's
//! tests need no dependency on the testkit), or a running server named by
//! `FERRY_TEST_POSTGRES_URL` (a superuser URL ending in a database name).
//!
//! [`on_both_backends!`] runs each case on SQLite (one test per case) and all of them on one
//! PostgreSQL cluster (one test, a fresh database per case), so a cluster starts once per module.

use sqlx::AnyPool;
use std::sync::atomic::{AtomicU64, Ordering};

#[path = "../../tests/src/postgres.rs"]
#[allow(dead_code)]
mod pg_harness;

/// A migrated database for one test case; dropped with it.
pub(crate) struct TestDb {
    pub pool: AnyPool,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let pool = crate::db::open(path.to_str().expect("utf-8 path")).await.expect("open sqlite");
        TestDb { pool, _dir: Some(dir) }
    }
}

/// Where PostgreSQL test databases are created.
pub(crate) enum PgServer {
    Url(String),
    Cluster(pg_harness::PgCluster),
}

impl PgServer {
    /// The server of `FERRY_TEST_POSTGRES_URL`, else a new cluster, else `None` with a printed
    /// reason (a failure instead when `FERRY_REQUIRE_PG=1`).
    pub fn start_or_skip(test: &str) -> Option<PgServer> {
        if let Ok(url) = std::env::var("FERRY_TEST_POSTGRES_URL") {
            return Some(PgServer::Url(url));
        }
        pg_harness::start_or_skip(test).map(PgServer::Cluster)
    }

    /// A fresh, migrated database.
    pub async fn database(&self, hint: &str) -> TestDb {
        let url = match self {
            PgServer::Cluster(cluster) => cluster.create_database(hint).expect("create database"),
            PgServer::Url(admin_url) => create_on(admin_url).await,
        };
        let pool = crate::db::open(&url).await.expect("open postgres");
        TestDb { pool, _dir: None }
    }
}

async fn create_on(admin_url: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("ferry_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let admin = crate::db::open_unmigrated(admin_url).await.expect("connect to the test server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create");
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').expect("URL with a database name");
    format!("{base}/{name}")
}

/// Declares, for each `async fn case(db: TestDb)`, a SQLite test `sqlite::case`, and one test
/// `postgres_cases` that runs every case on one PostgreSQL server.
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(crate::test_db::TestDb::sqlite().await).await })+
        }

        #[tokio::test]
        async fn postgres_cases() {
            let Some(server) = crate::test_db::PgServer::start_or_skip(module_path!()) else { return };
            $(
                eprintln!("postgres case {}", stringify!($case));
                $case(server.database(stringify!($case)).await).await;
            )+
        }
    };
}
pub(crate) use on_both_backends;
