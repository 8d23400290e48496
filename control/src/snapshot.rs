//! The signed policy snapshot: the catalog state of [`crate::catalog`] as nodes enforce it
//! ([`ferry_proto::policy::PolicySnapshot`]), signed by the control-plane key.
//!
//! The ministry node builds one from [`crate::store::ControlStore::policy_state`] whenever the
//! catalog or a grant changes and re-issues it with the same serial on a timer (a refresh), so provinces
//! can tell a quiet catalog from a lost ministry. The signed form is a
//! [`ferry_proto::SignedDocument`] over the snapshot's JSON, encoded as `PolicySnapshot` frames
//! carry it. Pure apart from the signature; the caller passes the time.

use crate::catalog::{PolicyState, PolicyVersion};
use ferry_net::sign::DocumentSigner;
use ferry_proto::DeptId;
use ferry_proto::policy::{POLICY_FORMAT, PolicyDataset, PolicyEntry, PolicySnapshot, PolicyStage};
use ferry_tables::catalog::Stage;

/// The snapshot of `state` issued at `issued_at_ms` by the platform of `ministry`.
pub fn build(state: &PolicyState, ministry: &DeptId, issued_at_ms: i64) -> PolicySnapshot {
    let mut datasets: Vec<PolicyDataset> = state
        .datasets
        .iter()
        .filter_map(|d| {
            let versions: Vec<PolicyEntry> = d.current.iter().chain(d.upcoming.iter()).map(entry).collect();
            (!versions.is_empty()).then(|| PolicyDataset {
                id: d.dataset.clone(),
                provider: d.provider.clone(),
                versions,
            })
        })
        .collect();
    datasets.sort_by(|a, b| a.id.cmp(&b.id));
    // Sorted by (dataset, department, id) as the state reads them; a grant of a dataset the
    // snapshot does not list (none can be: grants follow registered entries) is left out.
    let grants = state
        .grants
        .iter()
        .filter(|g| datasets.binary_search_by(|d| d.id.cmp(&g.dataset)).is_ok())
        .cloned()
        .collect();
    PolicySnapshot {
        format: POLICY_FORMAT.into(),
        serial: state.serial,
        issued_at_ms,
        ministry: ministry.clone(),
        datasets,
        grants,
    }
}

fn entry(v: &PolicyVersion) -> PolicyEntry {
    let mut methods = v.methods.clone();
    methods.sort();
    methods.dedup();
    PolicyEntry {
        catalog_version: v.catalog_version,
        effective_from_ms: (v.effective_from.unix_timestamp_nanos() / 1_000_000) as i64,
        stage: match v.stage {
            Stage::PreCatalog => PolicyStage::PreCatalog,
            Stage::Formal => PolicyStage::Formal,
        },
        share_type: v.share_type,
        methods,
        schema_fingerprint: v.items_fingerprint.clone(),
        definition: v.definition.clone(),
    }
}

/// Signs a snapshot; the result is what `PolicySnapshot` frames carry and nodes persist.
pub fn sign(snapshot: &PolicySnapshot, signer: &DocumentSigner) -> Vec<u8> {
    signer.sign(&snapshot.to_json()).encode()
}
