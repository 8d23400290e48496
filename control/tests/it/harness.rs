//! Test databases, callers and entries for the scenarios.

use std::path::PathBuf;

use ferry_control::roles::Roles;
use ferry_control::store::ControlStore;
use ferry_proto::{DeptId, Principal, Role};
use ferry_tables::catalog::CatalogEntry;
use time::OffsetDateTime;
use time::macros::datetime;

/// A store to run one scenario on, and how it was opened.
pub struct TestDb {
    pub store: ControlStore,
    /// The SQLite file, when the store is one.
    pub sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let store = ControlStore::open_sqlite(&path, roles()).await.expect("open sqlite");
        TestDb { store, sqlite_path: Some(path), _dir: Some(dir) }
    }

    pub async fn postgres(cluster: &crate::postgres::PgCluster, name: &str) -> TestDb {
        let url = cluster.create_database(name).expect("create database");
        let store = ControlStore::open(&url, roles()).await.expect("open postgres");
        TestDb { store, sqlite_path: None, _dir: None }
    }
}

pub const NOW: OffsetDateTime = datetime!(2026-12-06 08:00 UTC);

pub fn dept(id: &str) -> DeptId {
    DeptId::new(id).expect("dept id")
}

pub fn roles() -> Roles {
    Roles { technical_support: dept("ministry"), st_authority: dept("st-authority") }
}

pub fn principal(dept_id: &str, role: Role) -> Principal {
    Principal {
        dept: dept(dept_id),
        role,
        name: format!("{dept_id}-{role}"),
        serial: "01".into(),
        fingerprint: "00".repeat(32),
    }
}

pub fn operator(dept_id: &str) -> Principal {
    principal(dept_id, Role::Operator)
}

/// The ministry node itself (feeds uses and publications, reads the policy).
pub fn ministry_node() -> Principal {
    principal("ministry", Role::Ministry)
}

/// The demo's vehicle registry (ministry, base data, formal).
pub fn vehicles() -> CatalogEntry {
    CatalogEntry::parse_toml(include_str!("../../../deploy/catalog/vehicle-registry.toml"))
        .expect("vehicle entry")
}

/// Zhejiang's GPS positions (conditional, formal).
pub fn gps() -> CatalogEntry {
    CatalogEntry::parse_toml(include_str!("../../../deploy/catalog/vehicle-gps.toml")).expect("gps entry")
}
