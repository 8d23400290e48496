//! Catalog entries of regulation Art. 8 and their automatic compliance check (Art. 7, 9, 20).
//!
//! A [`CatalogEntry`] is a [`DatasetDefinition`] (id, name, provider, share type, update cycle,
//! security level, source system, information items) plus the catalog's own metadata:
//! classification, format, share conditions and scope, service methods, legal basis and stage
//! (pre-catalog or formal). It is written as the definition's TOML with a `[catalog]` table:
//!
//! ```toml
//! id = "vehicle-registry"
//! # ... the definition keys and [[columns]] of `crate::definition` ...
//!
//! [catalog]
//! classification = "base/vehicles"   # category path; `base/<category>` is base data (Art. 7)
//! format = "parquet"
//! stage = "formal"                    # or "pre-catalog"
//! share-scope = "全国交通运输政务部门 all verified transport departments"
//! share-conditions = "..."            # required when share-type = "conditional"
//! legal-basis = "..."                 # required when share-type = "not-shared"
//! methods = ["download", "subscription", "online-query"]
//! ```
//!
//! [`document`] reads such a file, bounded in size, into a typed entry or into violations;
//! [`compliance`] holds the named rules. Pure: no I/O and no clock. Neighbours: the control
//! plane's store (`ferry-control`) runs [`check`] before it registers anything and stores
//! [`CatalogEntry::to_toml`]; `ferry catalog check FILE` runs [`check_document`] offline.

mod compliance;
mod document;

#[cfg(test)]
mod tests;

pub use compliance::{CheckContext, ComplianceReport, RuleCode, Violation, check, check_document};
pub use document::{CatalogDocumentError, MAX_COLUMNS, MAX_DOCUMENT_BYTES, MAX_TEXT_BYTES};

use std::fmt;
use std::str::FromStr;

use ferry_proto::{DatasetId, DeptId, ServiceMethod, ShareType};
use serde::{Deserialize, Serialize};

use crate::definition::DatasetDefinition;

/// The base-data categories of Art. 7, which must be shared unconditionally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseCategory {
    /// 基础设施 roads, bridges, ports, waterways, stations.
    Infrastructure,
    /// 运载工具 vehicles and vessels.
    Vehicles,
    /// 企业 transport companies.
    Companies,
    /// 从业人员 practitioners (drivers, crew).
    Practitioners,
    /// 证照 licences and permits.
    Licences,
    /// 执法结果 administrative enforcement results.
    EnforcementResults,
    /// 信用 credit records.
    Credit,
}

impl BaseCategory {
    pub const ALL: [BaseCategory; 7] = [
        Self::Infrastructure,
        Self::Vehicles,
        Self::Companies,
        Self::Practitioners,
        Self::Licences,
        Self::EnforcementResults,
        Self::Credit,
    ];

    /// The path segment naming this category (`base/<segment>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Infrastructure => "infrastructure",
            Self::Vehicles => "vehicles",
            Self::Companies => "companies",
            Self::Practitioners => "practitioners",
            Self::Licences => "licences",
            Self::EnforcementResults => "enforcement-results",
            Self::Credit => "credit",
        }
    }
}

/// Why a classification path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassificationError {
    #[error(
        "classification {0:?} is not a path of 1 to {max} segments [a-z0-9-] joined by `/`, at most {bytes} bytes",
        max = Classification::MAX_SEGMENTS,
        bytes = Classification::MAX_LEN
    )]
    Malformed(String),
    #[error("classification {0:?} is under `base/` but names no base-data category of Art. 7 ({1})")]
    UnknownBaseCategory(String, String),
}

/// The category path of a dataset in the catalog (e.g. `base/vehicles`, `operations/gps`).
///
/// A path whose first segment is `base` is base data (Art. 7); its second segment must then be
/// one of the [`BaseCategory`] names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Classification(String);

impl Classification {
    pub const MAX_LEN: usize = 128;
    pub const MAX_SEGMENTS: usize = 4;
    /// First segment of the paths of cross-industry data (Art. 13).
    pub const CROSS_INDUSTRY: &str = "cross-industry";

    pub fn new(path: impl Into<String>) -> Result<Self, ClassificationError> {
        let path = path.into();
        let segments: Vec<&str> = path.split('/').collect();
        let segment_ok = |s: &&str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if path.len() > Self::MAX_LEN
            || segments.len() > Self::MAX_SEGMENTS
            || !segments.iter().all(segment_ok)
        {
            return Err(ClassificationError::Malformed(path));
        }
        if segments[0] == "base" && Self::category_of(&segments).is_none() {
            let known: Vec<&str> = BaseCategory::ALL.iter().map(|c| c.as_str()).collect();
            return Err(ClassificationError::UnknownBaseCategory(path, known.join(", ")));
        }
        Ok(Self(path))
    }

    fn category_of(segments: &[&str]) -> Option<BaseCategory> {
        match segments {
            ["base", category, ..] => BaseCategory::ALL.into_iter().find(|c| c.as_str() == *category),
            _ => None,
        }
    }

    /// Whether the path marks data from outside the transport sector (first segment
    /// [`Self::CROSS_INDUSTRY`], e.g. `cross-industry/meteorology`): the S&T authority, not the
    /// provider, decides applications for it (Art. 13).
    pub fn is_cross_industry(&self) -> bool {
        self.0.split('/').next() == Some(Self::CROSS_INDUSTRY)
    }

    /// The base-data category, when this path is base data (Art. 7).
    pub fn base_category(&self) -> Option<BaseCategory> {
        let segments: Vec<&str> = self.0.split('/').collect();
        Self::category_of(&segments)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Classification {
    type Error = ClassificationError;
    fn try_from(path: String) -> Result<Self, ClassificationError> {
        Self::new(path)
    }
}

impl From<Classification> for String {
    fn from(c: Classification) -> String {
        c.0
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The file format a dataset is shared in (Art. 8 数据格式). ferry publishes Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    Parquet,
}

impl DataFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
        }
    }
}

impl FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "parquet" => Ok(Self::Parquet),
            other => Err(format!("unknown format {other:?}; expected \"parquet\"")),
        }
    }
}

/// Where the system behind a dataset stands (Art. 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// 预编目录: the system is in its approval phase; its catalog is pre-registered.
    PreCatalog,
    /// 正式编目: the system is in trial operation; data must be connected within 6 months.
    Formal,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreCatalog => "pre-catalog",
            Self::Formal => "formal",
        }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pre-catalog" => Ok(Self::PreCatalog),
            "formal" => Ok(Self::Formal),
            other => Err(format!("unknown stage {other:?}; expected \"pre-catalog\" or \"formal\"")),
        }
    }
}

/// One catalog entry (Art. 8): the dataset definition and the catalog's metadata about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Id, name, provider, description, share type, update cycle, security level, source
    /// system and the information items.
    pub definition: DatasetDefinition,
    pub classification: Classification,
    pub format: DataFormat,
    pub stage: Stage,
    /// 共享条件: what a consumer must meet; required for conditional entries.
    pub share_conditions: Option<String>,
    /// 共享范围: who may use it, in words.
    pub share_scope: Option<String>,
    /// 共享方式: sorted by wire code, no duplicates.
    pub methods: Vec<ServiceMethod>,
    /// 依据: the law or policy that keeps a not-shared entry from being shared.
    pub legal_basis: Option<String>,
}

impl CatalogEntry {
    pub fn dataset(&self) -> &DatasetId {
        &self.definition.id
    }

    pub fn provider(&self) -> &DeptId {
        &self.definition.provider
    }

    pub fn share_type(&self) -> ShareType {
        self.definition.share_type
    }

    /// The schema fingerprint of the information items (see
    /// [`DatasetDefinition::fingerprint`]); a change of it is a change of the data (Art. 9).
    pub fn items_fingerprint(&self) -> String {
        self.definition.fingerprint()
    }

    /// Whether `method` is one of the entry's service methods.
    pub fn offers(&self, method: ServiceMethod) -> bool {
        self.methods.contains(&method)
    }

    /// Parses a catalog document (bounded; see [`document`]) into a typed entry.
    pub fn parse_toml(text: &str) -> Result<Self, CatalogDocumentError> {
        document::parse(text)
    }

    /// The entry as a document that [`Self::parse_toml`] reads back to an equal value.
    pub fn to_toml(&self) -> String {
        document::render(self)
    }
}

/// Sorts methods by wire code and drops duplicates.
pub(crate) fn normalize_methods(methods: &mut Vec<ServiceMethod>) {
    methods.sort_by_key(|m| m.code());
    methods.dedup();
}
