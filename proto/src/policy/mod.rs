//! The policy snapshot: the catalog state every node enforces, as the ministry's control plane
//! signed it, and the decisions that follow from it. Pure: the caller passes the time in.
//!
//! The control plane (`ferry-control`) builds a [`PolicySnapshot`] from its catalog whenever the
//! catalog changes, and re-issues it (same `serial`, later `issued_at_ms`) on a timer so nodes can
//! tell a quiet ministry from a lost one. It travels as the body of a signed document (JSON, see
//! [`PolicySnapshot::to_json`]) in `PolicySnapshot` frames. A node accepts a snapshot only through
//! [`PolicySnapshot::accept`]: never an older serial (no rollback), never a different snapshot
//! under a serial it already holds. The node's authorizer then asks [`PolicySnapshot::decide`]
//! about every request and [`PolicySnapshot::visible`] about every listed dataset; a puller asks
//! [`PolicySnapshot::check_publisher`] whether a version was signed by the dataset's provider.
//!
//! The rules:
//!
//! | request | allowed when |
//! |---|---|
//! | list | always; each dataset only if `visible` |
//! | read (versions, manifest, chunks) | the dataset is in the catalog in effect, and the reader is its provider (any method, [`Access::Full`]); or the ministry's hub node and the dataset is shared (unconditional or conditional), by a method the entry offers (full, to relay it, Art. 11); or the reader's department holds a grant in force ([`grant`]) for that method and the catalog version in effect, which the entry still offers: full, or restricted to the grant's content |
//! | read for a grant (the hub fetching what a grant allows, to serve its holder) | the reader is the ministry's hub node, which may read the dataset by that method, and the grant named is in force for the dataset and allows the method under the catalog version in effect: restricted to the grant's content (full for a grant without one) |
//! | publish | an operator of the node's own department, which is the dataset's provider, for a formal entry |
//! | replicate | an operator of the node's own department, for a dataset the node itself may read |
//!
//! A certificate of the `control` role (the control plane's signing key) is refused every
//! request. A peer that may not read a dataset is answered as if it did not exist
//! ([`Denial::hidden`]).

use crate::authz::{Access, Denial, Request};
use crate::ids::{DatasetId, DeptId, Role, ServiceMethod, ShareType};
use crate::principal::Principal;
use serde::{Deserialize, Serialize};

pub mod grant;
pub use grant::{CatalogRange, PolicyGrant, Restriction, RestrictionId};

/// The `format` of the snapshots this build reads and writes.
pub const POLICY_FORMAT: &str = "ferry-policy/1";
/// Largest snapshot body accepted, in bytes (it must also fit one frame).
pub const MAX_POLICY_BYTES: usize = 6 * 1024 * 1024;

/// Catalog stage of an entry (regulation Art. 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyStage {
    /// 预编目录: the system is in approval; nothing may be published yet.
    PreCatalog,
    /// 正式编目: the system is in trial operation; data is connected.
    Formal,
}

/// One catalog version of a dataset as nodes enforce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyEntry {
    /// The catalog version of the entry (1, 2, … per dataset).
    pub catalog_version: u64,
    /// When this version takes effect, Unix milliseconds.
    pub effective_from_ms: i64,
    pub stage: PolicyStage,
    pub share_type: ShareType,
    /// Sorted, without duplicates.
    pub methods: Vec<ServiceMethod>,
    /// Fingerprint of the information items (the dataset definition's schema fingerprint).
    pub schema_fingerprint: String,
    /// The dataset definition (information items) as TOML, which a publish is checked against.
    pub definition: String,
}

/// A dataset of the catalog: who provides it and its versions that are in effect or upcoming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyDataset {
    pub id: DatasetId,
    pub provider: DeptId,
    /// Ascending by `effective_from_ms` and by `catalog_version`; the first is in effect at
    /// the snapshot's issue time.
    pub versions: Vec<PolicyEntry>,
}

/// The catalog state a node enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicySnapshot {
    /// [`POLICY_FORMAT`].
    pub format: String,
    /// Increases with every change of the catalog state.
    pub serial: u64,
    /// When the control plane signed this copy, Unix milliseconds.
    pub issued_at_ms: i64,
    /// The department that runs the ministry platform (its hub node reads conditional data).
    pub ministry: DeptId,
    /// Sorted by id, each id once.
    pub datasets: Vec<PolicyDataset>,
    /// The grants in force, sorted by (dataset, department, id), each id once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<PolicyGrant>,
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy snapshot is {len} bytes; the limit is {MAX_POLICY_BYTES}")]
    TooLarge { len: usize },
    #[error("policy snapshot is not valid JSON of format {POLICY_FORMAT}: {0}")]
    Syntax(String),
    #[error("policy snapshot format {0:?} is not supported (this build reads {POLICY_FORMAT})")]
    UnsupportedFormat(String),
    #[error("policy snapshot lists dataset {0} out of order or twice")]
    Unordered(DatasetId),
    #[error("policy snapshot: grant {grant}: {detail}")]
    BadGrant { grant: u64, detail: &'static str },
    #[error("policy snapshot: dataset {dataset}: {detail}")]
    BadEntry { dataset: DatasetId, detail: &'static str },
    #[error(
        "policy snapshot serial {offered} is older than the serial {held} this node holds (rollback refused)"
    )]
    Rollback { held: u64, offered: u64 },
    #[error(
        "policy snapshot serial {serial} was issued at {offered_ms} ms, before the copy held ({held_ms} ms)"
    )]
    StaleRefresh { serial: u64, held_ms: i64, offered_ms: i64 },
    #[error(
        "policy snapshot serial {serial} differs from the snapshot this node holds under the same serial"
    )]
    Conflict { serial: u64 },
}

/// How an accepted snapshot relates to the one held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// A newer catalog state (or the first snapshot).
    Newer,
    /// The same state, issued later: the node's copy is fresh again.
    Refresh,
}

impl PolicySnapshot {
    /// Parses and checks a snapshot body.
    pub fn parse(body: &[u8]) -> Result<Self, PolicyError> {
        if body.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge { len: body.len() });
        }
        let snapshot: Self = serde_json::from_slice(body).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        snapshot.validate()?;
        Ok(snapshot)
    }

    /// The exact bytes that are signed.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the structure: format, order, and each dataset's versions.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.format != POLICY_FORMAT {
            return Err(PolicyError::UnsupportedFormat(self.format.clone()));
        }
        for pair in self.datasets.windows(2) {
            if pair[0].id >= pair[1].id {
                return Err(PolicyError::Unordered(pair[1].id.clone()));
            }
        }
        for dataset in &self.datasets {
            let bad = |detail| PolicyError::BadEntry { dataset: dataset.id.clone(), detail };
            if dataset.versions.is_empty() {
                return Err(bad("no catalog version"));
            }
            for pair in dataset.versions.windows(2) {
                if pair[0].catalog_version >= pair[1].catalog_version
                    || pair[0].effective_from_ms > pair[1].effective_from_ms
                {
                    return Err(bad("catalog versions out of order"));
                }
            }
            for entry in &dataset.versions {
                if entry.methods.windows(2).any(|m| m[0] >= m[1]) {
                    return Err(bad("service methods unsorted or repeated"));
                }
            }
        }
        self.validate_grants()
    }

    fn validate_grants(&self) -> Result<(), PolicyError> {
        let order = |g: &PolicyGrant| (g.dataset.clone(), g.dept.clone(), g.id);
        for pair in self.grants.windows(2) {
            if order(&pair[0]) >= order(&pair[1]) {
                return Err(PolicyError::BadGrant { grant: pair[1].id, detail: "out of order or repeated" });
            }
        }
        let mut ids: Vec<u64> = self.grants.iter().map(|g| g.id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
            return Err(PolicyError::BadGrant { grant: pair[0], detail: "id given twice" });
        }
        for grant in &self.grants {
            let bad = |detail| PolicyError::BadGrant { grant: grant.id, detail };
            if grant.methods.is_empty() || grant.methods.windows(2).any(|m| m[0] >= m[1]) {
                return Err(bad("service methods empty, unsorted or repeated"));
            }
            if self.dataset(&grant.dataset).is_none() {
                return Err(bad("dataset not in the catalog"));
            }
            if grant.catalog_versions.to.is_some_and(|to| to < grant.catalog_versions.from) {
                return Err(bad("empty catalog version range"));
            }
        }
        Ok(())
    }

    /// The grants in force that `dept` holds for `dataset`, lowest id first.
    pub fn grants_of<'a>(
        &'a self,
        dept: &'a DeptId,
        dataset: &'a DatasetId,
    ) -> impl Iterator<Item = &'a PolicyGrant> + 'a {
        let start = self.grants.partition_point(|g| (&g.dataset, &g.dept) < (dataset, dept));
        self.grants[start..].iter().take_while(move |g| g.dataset == *dataset && g.dept == *dept)
    }

    /// Whether `self` may replace `held` (see the module doc).
    pub fn accept(&self, held: Option<&PolicySnapshot>) -> Result<Acceptance, PolicyError> {
        let Some(held) = held else { return Ok(Acceptance::Newer) };
        if self.serial < held.serial {
            return Err(PolicyError::Rollback { held: held.serial, offered: self.serial });
        }
        if self.serial > held.serial {
            return Ok(Acceptance::Newer);
        }
        if self.issued_at_ms < held.issued_at_ms {
            return Err(PolicyError::StaleRefresh {
                serial: self.serial,
                held_ms: held.issued_at_ms,
                offered_ms: self.issued_at_ms,
            });
        }
        if self.ministry != held.ministry || self.datasets != held.datasets || self.grants != held.grants {
            return Err(PolicyError::Conflict { serial: self.serial });
        }
        Ok(Acceptance::Refresh)
    }

    /// The dataset's catalog record, if it is in the catalog.
    pub fn dataset(&self, id: &DatasetId) -> Option<&PolicyDataset> {
        self.datasets.binary_search_by(|d| d.id.cmp(id)).ok().map(|i| &self.datasets[i])
    }

    /// The catalog version of `id` in effect at `now_ms`, if any.
    pub fn in_effect(&self, id: &DatasetId, now_ms: i64) -> Option<(&PolicyDataset, &PolicyEntry)> {
        let dataset = self.dataset(id)?;
        let entry = dataset.versions.iter().rev().find(|e| e.effective_from_ms <= now_ms)?;
        Some((dataset, entry))
    }

    /// Whether `peer` may learn that `dataset` exists (listings): it may read it by some method.
    pub fn visible(&self, peer: &Principal, dataset: &DatasetId, now_ms: i64) -> bool {
        peer.role != Role::Control
            && self.in_effect(dataset, now_ms).is_some_and(|(d, e)| {
                e.methods.iter().any(|m| self.read_access(peer, d, e, *m, now_ms).is_ok())
                    || d.provider == peer.dept
            })
    }

    /// Decides a request of `peer` to the node of department `node_dept`.
    pub fn decide(
        &self,
        node_dept: &DeptId,
        peer: &Principal,
        request: &Request,
        now_ms: i64,
    ) -> Result<Access, Denial> {
        if peer.role == Role::Control {
            return Err(Denial::forbidden(
                "wrong_role",
                "a control-plane signing certificate cannot make requests to a node",
            ));
        }
        match request {
            Request::List => Ok(Access::Full),
            Request::Read { dataset, method, .. } => {
                let Some((record, entry)) = self.in_effect(dataset, now_ms) else {
                    return Err(Denial::hidden("not_in_catalog", dataset));
                };
                self.read_access(peer, record, entry, *method, now_ms)
            }
            Request::ReadForGrant { dataset, method, grant, .. } => {
                let Some((record, entry)) = self.in_effect(dataset, now_ms) else {
                    return Err(Denial::hidden("not_in_catalog", dataset));
                };
                self.read_for_grant(peer, record, entry, *method, *grant, now_ms)
            }
            Request::Publish { dataset, .. } => {
                self.publishable(node_dept, peer, dataset, now_ms).map(|()| Access::Full)
            }
            Request::Replicate { dataset, .. } => {
                own_operator(node_dept, peer, "order pulls")?;
                let node_role = if *node_dept == self.ministry { Role::Ministry } else { Role::Province };
                let node = Principal { dept: node_dept.clone(), role: node_role, ..peer.clone() };
                let Some((record, entry)) = self.in_effect(dataset, now_ms) else {
                    return Err(Denial::hidden("not_in_catalog", dataset));
                };
                // What the source serves this node (whole or restricted) is the source's decision.
                self.read_access(&node, record, entry, ServiceMethod::Download, now_ms).map(|_| Access::Full)
            }
        }
    }

    /// What `peer` may read of `record` (catalog version `entry` in effect) by `method`.
    fn read_access(
        &self,
        peer: &Principal,
        record: &PolicyDataset,
        entry: &PolicyEntry,
        method: ServiceMethod,
        now_ms: i64,
    ) -> Result<Access, Denial> {
        if record.provider == peer.dept {
            // A provider reads its own data by any means.
            return Ok(Access::Full);
        }
        if entry.share_type == ShareType::NotShared {
            return Err(Denial::hidden("not_shared", &record.id));
        }
        if peer.dept == self.ministry && peer.role == Role::Ministry {
            // The ministry's platform relays shared data (Art. 11).
            return self.offered(record, entry, method).map(|()| Access::Full);
        }
        // A method the catalog does not offer is refused as such: applying would not help.
        self.offered(record, entry, method)?;
        let grants: Vec<&PolicyGrant> = self.grants_of(&peer.dept, &record.id).collect();
        let usable = grants.iter().filter(|g| g.allows(method, entry.catalog_version, now_ms));
        let chosen = usable.clone().find(|g| g.effective_restriction().is_none()).or(usable.clone().next());
        let Some(grant) = chosen else {
            return Err(no_grant(peer, record, entry, method, &grants, now_ms));
        };
        Ok(match grant.effective_restriction() {
            None => Access::Full,
            Some(restriction) => Access::Restricted { grant: grant.id, restriction: restriction.clone() },
        })
    }

    /// What the ministry's hub may read of `record` for grant `grant` (to serve its holder):
    /// only from the hub node, which must be allowed to read the dataset by `method` itself,
    /// and only for a grant in force for this dataset that allows `method` under the catalog
    /// version in effect; then exactly the grant's content, whoever holds it.
    fn read_for_grant(
        &self,
        peer: &Principal,
        record: &PolicyDataset,
        entry: &PolicyEntry,
        method: ServiceMethod,
        grant: u64,
        now_ms: i64,
    ) -> Result<Access, Denial> {
        if peer.dept != self.ministry || peer.role != Role::Ministry {
            return Err(Denial::forbidden(
                "not_hub",
                format!(
                    "only the ministry's hub node reads a dataset for another department's grant; \
                     this is a {} certificate of {}",
                    peer.role, peer.dept
                ),
            ));
        }
        self.read_access(peer, record, entry, method, now_ms)?;
        let Some(held) = self.grants.iter().find(|g| g.id == grant && g.dataset == record.id) else {
            return Err(Denial::forbidden(
                "no_grant",
                format!("grant {grant} is not in force for dataset {} (never made, or revoked)", record.id),
            ));
        };
        if !held.allows(method, entry.catalog_version, now_ms) {
            return Err(Denial::forbidden(
                "grant_not_usable",
                format!(
                    "grant {grant} for dataset {} does not allow {method} under catalog version {} now",
                    record.id, entry.catalog_version
                ),
            ));
        }
        Ok(match held.effective_restriction() {
            None => Access::Full,
            Some(restriction) => Access::Restricted { grant, restriction: restriction.clone() },
        })
    }

    /// Checks that a version of `dataset` under `catalog_version` (or, for a version that
    /// records none, the catalog in effect) was published by the catalog's provider.
    pub fn check_publisher(
        &self,
        dataset: &DatasetId,
        publisher: &DeptId,
        catalog_version: Option<u64>,
    ) -> Result<(), PublisherMismatch> {
        let Some(record) = self.dataset(dataset) else {
            return Err(PublisherMismatch::NotInCatalog { dataset: dataset.clone() });
        };
        // Versions that are no longer in effect have left the snapshot; one newer than any the
        // catalog has ever had is invented.
        let newest = record.versions.last().map_or(0, |e| e.catalog_version);
        if let Some(version) = catalog_version
            && version > newest
        {
            return Err(PublisherMismatch::UnknownCatalogVersion { dataset: dataset.clone(), version });
        }
        if record.provider != *publisher {
            return Err(PublisherMismatch::NotProvider {
                dataset: dataset.clone(),
                provider: record.provider.clone(),
                publisher: publisher.clone(),
            });
        }
        Ok(())
    }

    fn offered(
        &self,
        record: &PolicyDataset,
        entry: &PolicyEntry,
        method: ServiceMethod,
    ) -> Result<(), Denial> {
        if entry.methods.contains(&method) {
            return Ok(());
        }
        Err(Denial::forbidden(
            "method_not_offered",
            format!(
                "dataset {} is not shared by {method} (catalog version {} offers: {})",
                record.id,
                entry.catalog_version,
                list(&entry.methods)
            ),
        ))
    }

    fn publishable(
        &self,
        node_dept: &DeptId,
        peer: &Principal,
        dataset: &DatasetId,
        now_ms: i64,
    ) -> Result<(), Denial> {
        own_operator(node_dept, peer, "publish")?;
        let Some((record, entry)) = self.in_effect(dataset, now_ms) else {
            return Err(Denial::forbidden(
                "not_in_catalog",
                format!(
                    "dataset {dataset} is not in the catalog in effect; register it first (ferry catalog register)"
                ),
            ));
        };
        if record.provider != *node_dept {
            return Err(Denial::forbidden(
                "not_provider",
                format!(
                    "dataset {dataset} is provided by {} in the catalog; department {node_dept} cannot publish it",
                    record.provider
                ),
            ));
        }
        if entry.stage == PolicyStage::PreCatalog {
            return Err(Denial::forbidden(
                "pre_catalog",
                format!(
                    "dataset {dataset} is pre-catalogued (catalog version {}); register the formal entry before publishing",
                    entry.catalog_version
                ),
            ));
        }
        Ok(())
    }
}

/// Why a version's signer is not the dataset's provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublisherMismatch {
    #[error("dataset {dataset} is not in the catalog")]
    NotInCatalog { dataset: DatasetId },
    #[error("dataset {dataset} has no catalog version {version}")]
    UnknownCatalogVersion { dataset: DatasetId, version: u64 },
    #[error("dataset {dataset} is provided by {provider}, but this version was signed by {publisher}")]
    NotProvider { dataset: DatasetId, provider: DeptId, publisher: DeptId },
}

fn own_operator(node_dept: &DeptId, peer: &Principal, what: &str) -> Result<(), Denial> {
    if peer.role != Role::Operator {
        return Err(Denial::forbidden(
            "wrong_role",
            format!("only an operator certificate may {what}; this one is for a {} node", peer.role),
        ));
    }
    if peer.dept != *node_dept {
        return Err(Denial::forbidden(
            "other_department",
            format!("operators of {node_dept} may {what} on this node, not of {}", peer.dept),
        ));
    }
    Ok(())
}

/// The refusal of a read without a usable grant, saying why by its reason and what the requester
/// can do about it. The reasons, in the order they are told apart:
///
/// | reason | when |
/// |---|---|
/// | `no_grant` | the department holds no grant in force for the dataset (never granted, pending, revoked, revoked for disuse) |
/// | `grant_expired` | every grant it holds has lapsed |
/// | `method_not_granted` | no grant it holds covers the service method asked for |
/// | `catalog_version_not_granted` | its grants cover the method, but not the catalog version in effect (the information items changed) |
fn no_grant(
    peer: &Principal,
    record: &PolicyDataset,
    entry: &PolicyEntry,
    method: ServiceMethod,
    held: &[&PolicyGrant],
    now_ms: i64,
) -> Denial {
    let (dept, dataset, version) = (&peer.dept, &record.id, entry.catalog_version);
    let apply = format!("ferry apply {dataset} --purpose <purpose> --method {method}");
    let live: Vec<&&PolicyGrant> =
        held.iter().filter(|g| g.expires_at_ms.is_none_or(|t| now_ms < t)).collect();
    if held.is_empty() {
        return Denial::forbidden(
            "no_grant",
            format!(
                "department {dept} holds no grant for dataset {dataset} (none was granted, or it was revoked); \
                 apply for it: {apply}, or see why: ferry explain {dept} {dataset} --method {method}"
            ),
        );
    }
    if live.is_empty() {
        let ids = grant_ids(held.iter().copied());
        return Denial::forbidden(
            "grant_expired",
            format!(
                "the grant of department {dept} for dataset {dataset} has expired ({ids}); apply again: {apply}"
            ),
        );
    }
    let covering: Vec<&&PolicyGrant> = live.iter().copied().filter(|g| g.methods.contains(&method)).collect();
    if covering.is_empty() {
        let mut methods: Vec<ServiceMethod> = live.iter().flat_map(|g| g.methods.iter().copied()).collect();
        methods.sort();
        methods.dedup();
        return Denial::forbidden(
            "method_not_granted",
            format!(
                "the grant of department {dept} for dataset {dataset} ({}) covers {} only, not {method}; \
                 apply for {method}: {apply}",
                grant_ids(live.iter().map(|g| **g)),
                list(&methods)
            ),
        );
    }
    let ranges: Vec<String> = covering.iter().map(|g| range_text(&g.catalog_versions)).collect();
    Denial::forbidden(
        "catalog_version_not_granted",
        format!(
            "the grant of department {dept} for dataset {dataset} ({}) covers catalog versions {}, not \
             version {version} now in effect (the information items changed); apply again under version {version}: {apply}",
            grant_ids(covering.iter().map(|g| **g)),
            ranges.join(", ")
        ),
    )
}

fn grant_ids<'a>(grants: impl Iterator<Item = &'a PolicyGrant>) -> String {
    let ids: Vec<String> = grants.map(|g| format!("grant {}", g.id)).collect();
    ids.join(", ")
}

fn range_text(range: &CatalogRange) -> String {
    match range.to {
        Some(to) if to == range.from => range.from.to_string(),
        Some(to) => format!("{}-{to}", range.from),
        None => format!("{} and later", range.from),
    }
}

fn list(methods: &[ServiceMethod]) -> String {
    if methods.is_empty() {
        return "none".into();
    }
    methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
