//! Grants as nodes enforce them: which department may use which dataset, by which service
//! methods, for which purpose, restricted to which content, under which catalog versions.
//!
//! The control plane (`ferry-control`) records applications and decides them; each approved
//! application becomes a grant, and every grant in force travels in the signed
//! [`super::PolicySnapshot`] (sorted by dataset, then department, then id). A revoked or
//! expired grant leaves the snapshot; nodes know only the grants in force. A node's
//! [`super::PolicySnapshot::decide`] looks a reader's grant up here and answers with the
//! [`crate::authz::Access`] it allows: the whole dataset, or a [`Restriction`] that the node
//! serves as a restricted, derived version (only the permitted columns and rows).
//!
//! A restriction is identified by [`Restriction::id`], a hash of its canonical JSON, so a node
//! builds one derived version per (version, restriction) and any number of grants with the same
//! content share it.

use crate::ids::{DatasetId, DeptId, ServiceMethod};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The content a conditional grant allows: a subset of the information items (columns) and a
/// row filter. `None` in a field means "no restriction on that axis".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Restriction {
    /// The permitted columns, in the catalog's order, each once. Key columns the grant omits are
    /// not served either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// The permitted rows, as the canonical text of a row filter (`ferry_proto::filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
}

impl Restriction {
    /// Whether it restricts nothing (the whole dataset).
    pub fn is_unrestricted(&self) -> bool {
        self.columns.is_none() && self.rows.is_none()
    }

    /// A stable identifier of the content: the first 16 bytes of the BLAKE3 hash of its
    /// canonical JSON, in hex. Equal restrictions share one derived version.
    pub fn id(&self) -> RestrictionId {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let hash = blake3::hash(&json);
        let mut hex = String::with_capacity(32);
        for byte in &hash.as_bytes()[..16] {
            hex.push_str(&format!("{byte:02x}"));
        }
        RestrictionId(hex)
    }
}

/// [`Restriction::id`]: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RestrictionId(String);

impl RestrictionId {
    /// Parses an id as [`Restriction::id`] writes it.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RestrictionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The catalog versions of the dataset a grant covers: `from` up to `to` inclusive, or every
/// later one when `to` is `None`. A catalog change that alters the information items closes the
/// range of the grants made before it (their holders are notified under change control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CatalogRange {
    pub from: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

impl CatalogRange {
    pub fn contains(&self, catalog_version: u64) -> bool {
        catalog_version >= self.from && self.to.is_none_or(|to| catalog_version <= to)
    }
}

/// One grant in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyGrant {
    /// The control plane's grant number.
    pub id: u64,
    /// The application it was decided on.
    pub application: u64,
    /// The department that holds it (every certificate of that department uses it).
    pub dept: DeptId,
    pub dataset: DatasetId,
    /// The stated purpose of use (Art. 16: another purpose needs another application).
    pub purpose: String,
    /// Sorted, without duplicates.
    pub methods: Vec<ServiceMethod>,
    /// `None`: the whole dataset (unconditional data, or a conditional grant without limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<Restriction>,
    pub catalog_versions: CatalogRange,
    /// When it was granted, Unix milliseconds.
    pub granted_at_ms: i64,
    /// When it lapses, if it does (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
}

impl PolicyGrant {
    /// Whether it allows `method` under `catalog_version` at `now_ms`.
    pub fn allows(&self, method: ServiceMethod, catalog_version: u64, now_ms: i64) -> bool {
        self.methods.contains(&method)
            && self.catalog_versions.contains(catalog_version)
            && self.expires_at_ms.is_none_or(|t| now_ms < t)
    }

    /// The restriction the holder is served under, `None` for the whole dataset.
    pub fn effective_restriction(&self) -> Option<&Restriction> {
        self.restriction.as_ref().filter(|r| !r.is_unrestricted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_restrictions_share_an_id_and_different_ones_do_not() {
        let a = Restriction {
            columns: Some(vec!["plate".into(), "city".into()]),
            rows: Some("city = 'gz'".into()),
        };
        let b = a.clone();
        let c = Restriction { rows: Some("city = 'sz'".into()), ..a.clone() };
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(RestrictionId::parse(a.id().as_str()), Some(a.id()));
        assert_eq!(RestrictionId::parse("../etc"), None);
    }

    #[test]
    fn a_grant_allows_its_methods_within_its_range_until_it_expires() {
        let grant = PolicyGrant {
            id: 7,
            application: 3,
            dept: DeptId::new("guangdong").unwrap(),
            dataset: DatasetId::new("vehicles").unwrap(),
            purpose: "road safety statistics".into(),
            methods: vec![ServiceMethod::Download],
            restriction: None,
            catalog_versions: CatalogRange { from: 2, to: Some(3) },
            granted_at_ms: 0,
            expires_at_ms: Some(1_000),
        };
        assert!(grant.allows(ServiceMethod::Download, 2, 999));
        assert!(!grant.allows(ServiceMethod::Download, 2, 1_000), "expired");
        assert!(!grant.allows(ServiceMethod::Download, 1, 0), "before its range");
        assert!(!grant.allows(ServiceMethod::Download, 4, 0), "after its range");
        assert!(!grant.allows(ServiceMethod::OnlineQuery, 2, 0), "another method");
    }
}
