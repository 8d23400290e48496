//! Integration tests of the control store, each scenario on SQLite and on a throwaway
//! PostgreSQL cluster (skipped with a printed reason when PostgreSQL is absent, unless
//! `FERRY_REQUIRE_PG=1`).

#[path = "../../../tests/src/postgres.rs"]
mod postgres;

mod apply;
mod catalog;
mod decisions;
mod harness;
mod lifecycle;
