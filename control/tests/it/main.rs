//! Integration tests of the control store, each scenario on SQLite and on a throwaway
//! PostgreSQL cluster (skipped with a printed reason when PostgreSQL is absent, unless
//! `FERRY_REQUIRE_PG=1`).

/// Runs each named scenario `async fn name(db: TestDb)` once on its own SQLite file
/// (`on_sqlite::name`) and, in one test, in turn on a throwaway PostgreSQL database each
/// (`on_postgres`, skipped with `$label` as the reason when PostgreSQL is absent).
macro_rules! scenarios {
    ($label:literal; $($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::harness::TestDb::sqlite().await).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn on_postgres() {
            let Some(cluster) = crate::postgres::start_or_skip($label) else { return };
            $(
                eprintln!("postgres: {}", stringify!($name));
                let db = crate::harness::TestDb::postgres(&cluster, stringify!($name)).await;
                let pool = db.store.pool().clone();
                $name(db).await;
                pool.close().await;
            )*
        }
    };
}

#[path = "../../../tests/src/postgres.rs"]
mod postgres;

mod apply;
mod catalog;
mod decisions;
mod feedback;
mod fleet;
mod harness;
mod lifecycle;
