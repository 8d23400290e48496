//! Test databases: a fresh migrated SQLite file, or a fresh database on a throwaway
//! PostgreSQL cluster.

use sqlx::AnyPool;

/// A migrated database for one test; dropped with the test.
pub(crate) struct TestDb {
    pub pool: AnyPool,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn sqlite() -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let pool = crate::db::open(path.to_str().expect("utf-8 path")).await.expect("open sqlite");
        Some(TestDb { pool, _dir: dir })
    }

    pub async fn postgres() -> Option<TestDb> {
        None
    }
}
