//! Applications for shared data and their reviews (regulation Art. 12–14), and the grants they
//! create (Art. 16).
//!
//! A department applies for a dataset with a purpose, the service methods it wants and, for
//! conditional data, the content (columns, row filter). What happens next follows the catalog
//! entry in effect:
//!
//! | share type | path |
//! |---|---|
//! | unconditional | granted at once, the whole dataset |
//! | not shared | refused at once, citing the entry's legal basis |
//! | conditional | technical support's first review (due in 3 working days), then the decider's decision (due in 7 working days): the provider, technical support when the provider has delegated its reviews (Art. 14), or the S&T authority for data from outside the transport sector (Art. 13). The decider may ask for supporting material, which stops its clock until the applicant supplies it |
//!
//! Every step writes its rows, its audit entry and (for a grant) the policy serial in one
//! transaction. Deadlines are working days of [`crate::calendar`]; a step whose deadline falls
//! in a year without a calendar file is refused, never guessed.
//!
//! Submodules add methods to [`ControlStore`]: [`submit`] (validation, idempotency by client
//! key, the immediate outcomes), [`review`] (first review, decision, material, delegation),
//! [`read`] (lists, deadlines at risk, delegated decisions, grants in force); [`rows`] maps
//! rows to types. Neighbours: [`crate::catalog`] provides the entry in effect;
//! [`crate::snapshot`] carries the grants in force to every node.

pub mod calls;
pub mod read;
pub mod review;
pub mod rows;
pub mod submit;

use ferry_proto::{DatasetId, DeptId, ServiceMethod, ShareType};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::calendar::CalendarError;
use crate::store::StoreError;

#[cfg(doc)]
use crate::store::ControlStore;

/// Working days technical support has for the first review (Art. 12).
pub const FIRST_REVIEW_DAYS: u32 = 3;
/// Working days the decider has after the first review (Art. 12).
pub const DECISION_DAYS: u32 = 7;
/// Longest purpose, basis, note or client key text, in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Longest client key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// An application's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApplicationId(pub u64);

/// A grant's number (the `id` of [`ferry_proto::policy::PolicyGrant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrantId(pub u64);

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplicationState {
    /// Waiting for technical support's first review.
    FirstReview,
    /// Waiting for the decider's decision.
    ProviderReview,
    /// The decider asked for supporting material; its clock is stopped.
    AwaitingMaterial,
    Granted,
    Refused,
}

impl ApplicationState {
    pub const ALL: [Self; 5] =
        [Self::FirstReview, Self::ProviderReview, Self::AwaitingMaterial, Self::Granted, Self::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstReview => "first-review",
            Self::ProviderReview => "provider-review",
            Self::AwaitingMaterial => "awaiting-material",
            Self::Granted => "granted",
            Self::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether no further step may be taken.
    pub fn is_decided(self) -> bool {
        matches!(self, Self::Granted | Self::Refused)
    }
}

/// Who decides an application after the first review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decider {
    /// The provider (or technical support under the provider's delegation, Art. 14).
    Provider,
    /// The S&T authority: cross-industry data (Art. 13).
    StAuthority,
}

impl Decider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::StAuthority => "st-authority",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Provider, Self::StAuthority].into_iter().find(|d| d.as_str() == text)
    }
}

/// What a department asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplicationRequest {
    pub dataset: DatasetId,
    pub purpose: String,
    pub methods: Vec<ServiceMethod>,
    /// Conditional data only: the columns wanted (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Conditional data only: a row filter (`ferry_proto::filter`; absent: all rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    /// The client's key: a re-sent request with the same key is the same application.
    pub key: String,
}

/// An application as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Application {
    pub id: ApplicationId,
    pub dept: DeptId,
    pub key: String,
    pub dataset: DatasetId,
    pub provider: DeptId,
    /// The catalog version in effect when it was submitted.
    pub catalog_version: u64,
    pub share_type: ShareType,
    pub purpose: String,
    pub methods: Vec<ServiceMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    pub state: ApplicationState,
    pub decider: Decider,
    #[serde(with = "time::serde::rfc3339")]
    pub submitted_at: OffsetDateTime,
    /// The last day (China Standard Time) the pending step is on time; `None` when decided or
    /// while the clock is stopped for material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_on: Option<Date>,
    /// Working days left on the stopped clock, while material is awaited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_remaining_days: Option<u32>,
    /// The cited basis of a refusal (or the note of an approval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// The grant made on approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantId>,
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Submitted {
    pub application: Application,
    /// `false` when the key had already been used with the same request (nothing new written).
    pub created: bool,
}

/// Why an application or a review step was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// The request is malformed (empty purpose, no method, an over-long text, a bad key).
    #[error("invalid application: {0}")]
    Invalid(String),
    #[error("{dataset} does not offer {method} (it offers {offered})")]
    MethodNotOffered { dataset: DatasetId, method: ServiceMethod, offered: String },
    #[error("{dataset} has no column {column}")]
    UnknownColumn { dataset: DatasetId, column: String },
    /// A restricted grant keeps the dataset's key columns (restricted versions are diffed by key).
    #[error("the columns of {dataset} must include its key column {column}")]
    KeyColumnMissing { dataset: DatasetId, column: String },
    #[error("row filter: {0}")]
    RowFilter(String),
    /// Columns or rows were asked for data that is shared whole (or not at all).
    #[error("{dataset} is {share_type}: content (columns, rows) applies only to conditional data")]
    ContentNotApplicable { dataset: DatasetId, share_type: ShareType },
    /// The provider needs no grant for its own data.
    #[error("{dataset} is provided by {dept}; a provider does not apply for its own data")]
    OwnDataset { dataset: DatasetId, dept: DeptId },
    /// The client key was used before with a different request.
    #[error("key {key:?} was used for application {existing:?} with a different request")]
    KeyReused { key: String, existing: ApplicationId },
    /// The step does not fit the application's state (already decided, not yet reviewed, ...).
    #[error("application {id:?} is {state:?}; cannot {step}")]
    WrongState { id: ApplicationId, state: ApplicationState, step: &'static str },
    /// The caller's department or role may not take this step.
    #[error("{dept} ({role}) may not {step}: only {who} may")]
    WrongRole { step: &'static str, dept: DeptId, role: ferry_proto::Role, who: String },
    /// A refusal (or a request for material) names no basis.
    #[error("a {0} must cite its basis")]
    BasisRequired(&'static str),
}

impl ApplyError {
    pub(crate) fn wrong_role(step: &'static str, caller: &ferry_proto::Principal, who: String) -> Self {
        Self::WrongRole { step, dept: caller.dept.clone(), role: caller.role, who }
    }
}

/// Checks a free text: not empty (when `required`), at most [`MAX_TEXT_BYTES`].
pub(crate) fn check_text(what: &str, text: &str) -> Result<String, ApplyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApplyError::Invalid(format!("{what} is empty")));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApplyError::Invalid(format!(
            "{what} is {} bytes; the limit is {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    Ok(text.to_owned())
}
