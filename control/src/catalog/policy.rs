//! The policy state every node enforces: for each dataset the catalog version in effect at a
//! time and the next one with its date, and a serial that grows with every change of catalog
//! state, with the grants in force. Plain serde values; [`crate::snapshot`] signs them into snapshots. A node switches to
//! the upcoming version at its date by itself, so a date passing needs no new serial.

use ferry_proto::{DatasetId, DeptId, Principal, ServiceMethod, ShareType};
use ferry_tables::catalog::Stage;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;

use super::read::{StoredEntry, corrupt, select_versions, stored_entry};
use crate::roles::Action;
use crate::store::{ControlStore, StoreError, unix};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Grows with every change of catalog state.
    pub serial: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub datasets: Vec<DatasetPolicy>,
    /// The grants in force, sorted by (dataset, department, id) (see [`crate::apply`]).
    #[serde(default)]
    pub grants: Vec<ferry_proto::policy::PolicyGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetPolicy {
    pub dataset: DatasetId,
    pub provider: DeptId,
    /// `None` before the first version takes effect.
    pub current: Option<PolicyVersion>,
    /// The next version, registered but not yet in effect.
    pub upcoming: Option<PolicyVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub catalog_version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    pub stage: Stage,
    pub share_type: ShareType,
    pub methods: Vec<ServiceMethod>,
    pub items_fingerprint: String,
    pub items: Vec<PolicyItem>,
    /// The dataset definition as TOML (`DatasetDefinition::to_toml`): what a publish is
    /// checked against.
    pub definition: String,
}

/// One information item as a node checks an export against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyItem {
    pub name: String,
    /// As the document writes it (`utf8`, `timestamp(ms, +08:00)`).
    pub column_type: String,
    pub key: bool,
    pub nullable: bool,
}

fn policy_version(stored: &StoredEntry) -> PolicyVersion {
    let entry = &stored.entry;
    PolicyVersion {
        catalog_version: stored.catalog_version,
        effective_from: stored.effective_from,
        stage: entry.stage,
        share_type: entry.share_type(),
        methods: entry.methods.clone(),
        items_fingerprint: entry.items_fingerprint(),
        items: entry
            .definition
            .columns
            .iter()
            .map(|c| PolicyItem {
                name: c.name.clone(),
                column_type: c.column_type.to_string(),
                key: c.key,
                nullable: c.nullable,
            })
            .collect(),
        definition: entry.definition.to_toml(),
    }
}

impl ControlStore {
    /// The policy state at `at`, read in one transaction so serial and datasets agree.
    pub async fn policy_state(
        &self,
        caller: &Principal,
        at: OffsetDateTime,
    ) -> Result<PolicyState, StoreError> {
        self.roles.authorize(caller, Action::ReadPolicy, None)?;
        let mut tx = self.pool().begin().await?;
        let serial: i64 = sqlx::query("SELECT serial FROM policy_serial WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let sql = select_versions!("ORDER BY dataset, catalog_version");
        let rows = sqlx::query(sql).fetch_all(&mut *tx).await?;
        let grants = crate::apply::read::grants_in_force(&mut tx).await?;
        tx.commit().await?;
        let mut datasets: Vec<DatasetPolicy> = Vec::new();
        for row in &rows {
            let stored = stored_entry(row)?;
            if datasets.last().is_none_or(|d| d.dataset != stored.dataset) {
                datasets.push(DatasetPolicy {
                    dataset: stored.dataset.clone(),
                    provider: stored.entry.provider().clone(),
                    current: None,
                    upcoming: None,
                });
            }
            // Rows come in version order, so the last in effect wins and the first after `at` is next.
            let Some(policy) = datasets.last_mut() else { continue };
            if unix(stored.effective_from) <= unix(at) {
                policy.current = Some(policy_version(&stored));
                policy.upcoming = None;
            } else if policy.upcoming.is_none() {
                policy.upcoming = Some(policy_version(&stored));
            }
        }
        Ok(PolicyState { serial: u64::try_from(serial).map_err(corrupt)?, at, datasets, grants })
    }
}
