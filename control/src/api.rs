//! The control-plane calls a `ferry` CLI (or a node) makes to the ministry node, as JSON
//! documents carried by `ControlCall`/`ControlAnswer` frames.
//!
//! Requests are a tagged enum (`{"op": "catalog-register", ...}`, kebab-case, unknown fields
//! refused); answers are the JSON of the operation's result, or an [`ApiError`] with a stable
//! `code` the CLI maps to its exit status. The caller is always the principal of the TLS
//! connection: no request names who it acts for.

use ferry_proto::{DatasetId, DeptId};
use serde::{Deserialize, Serialize};

/// Largest request document accepted, in bytes (a catalog entry is at most 1 MiB).
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// One control-plane call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Register a catalog entry (TOML document) as the next catalog version of its dataset.
    CatalogRegister {
        document: String,
        /// RFC 3339; absent: at once (or refused when change control needs a later date).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effective_from: Option<String>,
    },
    /// Run the compliance check as the caller's department, registering nothing.
    CatalogCheck {
        document: String,
    },
    /// One catalog version of an entry (default: the latest).
    CatalogShow {
        dataset: DatasetId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    CatalogHistory {
        dataset: DatasetId,
    },
    CatalogDiff {
        dataset: DatasetId,
        from: u64,
        to: u64,
    },
    CatalogList {},
    /// Change notices addressed to the caller's department.
    Notices {},
    /// Audit entries, newest first, filtered.
    AuditShow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset: Option<DatasetId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        department: Option<DeptId>,
        /// RFC 3339 bounds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Check the whole audit chain and its signed checkpoints.
    AuditVerify {},
    /// The receipts issued for a dataset (signed documents and their facts).
    Receipts {
        dataset: DatasetId,
    },
    /// A node of the provider reports a published version (data connected, Art. 20).
    ReportPublication {
        dataset: DatasetId,
        version: u64,
        catalog_version: Option<u64>,
    },
    /// Online backup of the control database to a path on the ministry host.
    Backup {
        destination: String,
    },
    /// Apply for a dataset (Art. 12) as the caller's department; idempotent by `key`.
    Apply {
        dataset: DatasetId,
        purpose: String,
        methods: Vec<ferry_proto::ServiceMethod>,
        /// Conditional data: the columns wanted (absent: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
        /// Conditional data: a row filter (absent: all rows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<String>,
        key: String,
    },
    /// The applications the caller may see (applicant, provider; all for supervisors).
    ReviewList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<crate::apply::ApplicationState>,
    },
    /// Pending review steps due within one working day, and overdue ones.
    ReviewDue {},
    /// Approve the pending step of an application (first review: pass; decision: grant).
    ReviewApprove {
        application: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Refuse the pending step of an application, citing a legal or policy basis.
    ReviewRefuse {
        application: u64,
        basis: String,
    },
    /// The decider asks the applicant for supporting material (its clock stops).
    ReviewAskMaterial {
        application: u64,
        what: String,
    },
    /// The applicant supplies the material asked for (the decider's clock restarts).
    ReviewSupplyMaterial {
        application: u64,
        note: String,
    },
    /// A provider delegates its reviews to technical support (Art. 14), or takes them back.
    ReviewDelegate {
        delegate: bool,
    },
    /// Decisions technical support took under a provider's delegation (default: the caller's).
    ReviewDelegated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<DeptId>,
        /// RFC 3339 or YYYY-MM-DD.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// The grants the caller may see (holder, provider, supervisors), narrowed.
    GrantList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset: Option<DatasetId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dept: Option<DeptId>,
    },
    /// Revoke a grant (its dataset's provider or technical support), with a reason.
    GrantRevoke {
        grant: u64,
        reason: String,
    },
    /// Notices to the caller's department about its grants (disuse warnings, revocations).
    GrantNotices {},
    /// A node reports the uses it served and the publishes it refused for not matching the catalog.
    ReportUse {
        uses: Vec<crate::grants::UseReport>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publish_refusals: Vec<crate::grants::PublishRefusalReport>,
    },
    /// A province node reports the latest version of each dataset it holds (the fleet view).
    ReportHoldings {
        holdings: Vec<crate::fleet::HoldingReport>,
    },
    /// Every province x dataset: the version held and how far behind it is (ministry operators
    /// and technical support).
    Fleet {},
    /// A holder's feedback on a grant (Art. 17).
    Feedback {
        grant: u64,
        need_met: crate::quality::NeedMet,
        quality: u8,
        effect: String,
    },
    /// The feedback the caller may read: its department's, on datasets it provides (all, for
    /// supervisors), narrowed to one dataset.
    FeedbackList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset: Option<DatasetId>,
    },
    /// File a quality issue against a published version (Art. 15).
    QualityFile {
        dataset: DatasetId,
        version: u64,
        text: String,
    },
    /// The provider's answer to a quality issue.
    QualityAnswer {
        issue: u64,
        text: String,
    },
    /// Quality issues the caller may see.
    QualityList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset: Option<DatasetId>,
        #[serde(default)]
        unanswered: bool,
    },
    /// The supervision evaluation (all departments, or one).
    SuperviseReport {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dept: Option<DeptId>,
    },
    /// The S&T authority issues a rectification notice against a finding.
    SuperviseNotice {
        dept: DeptId,
        finding: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset: Option<DatasetId>,
        text: String,
    },
    SuperviseNoticeList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dept: Option<DeptId>,
    },
    SuperviseNoticeClose {
        notice: u64,
        note: String,
    },
}

impl ControlRequest {
    /// A bounded label for metrics and logs.
    pub fn op(&self) -> &'static str {
        match self {
            Self::CatalogRegister { .. } => "catalog-register",
            Self::CatalogCheck { .. } => "catalog-check",
            Self::CatalogShow { .. } => "catalog-show",
            Self::CatalogHistory { .. } => "catalog-history",
            Self::CatalogDiff { .. } => "catalog-diff",
            Self::CatalogList {} => "catalog-list",
            Self::Notices {} => "notices",
            Self::AuditShow { .. } => "audit-show",
            Self::AuditVerify {} => "audit-verify",
            Self::Receipts { .. } => "receipts",
            Self::ReportPublication { .. } => "report-publication",
            Self::Backup { .. } => "backup",
            Self::Apply { .. } => "apply",
            Self::ReviewList { .. } => "review-list",
            Self::ReviewDue {} => "review-due",
            Self::ReviewApprove { .. } => "review-approve",
            Self::ReviewRefuse { .. } => "review-refuse",
            Self::ReviewAskMaterial { .. } => "review-ask-material",
            Self::ReviewSupplyMaterial { .. } => "review-supply-material",
            Self::ReviewDelegate { .. } => "review-delegate",
            Self::ReviewDelegated { .. } => "review-delegated",
            Self::GrantList { .. } => "grant-list",
            Self::GrantRevoke { .. } => "grant-revoke",
            Self::GrantNotices {} => "grant-notices",
            Self::ReportUse { .. } => "report-use",
            Self::ReportHoldings { .. } => "report-holdings",
            Self::Fleet {} => "fleet",
            Self::Feedback { .. } => "feedback",
            Self::FeedbackList { .. } => "feedback-list",
            Self::QualityFile { .. } => "quality-file",
            Self::QualityAnswer { .. } => "quality-answer",
            Self::QualityList { .. } => "quality-list",
            Self::SuperviseReport { .. } => "supervise-report",
            Self::SuperviseNotice { .. } => "supervise-notice",
            Self::SuperviseNoticeList { .. } => "supervise-notice-list",
            Self::SuperviseNoticeClose { .. } => "supervise-notice-close",
        }
    }

    /// Parses a request document, bounded in size.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if text.len() > MAX_REQUEST_BYTES {
            return Err(ApiError::new(
                ApiCode::BadRequest,
                format!("control request is {} bytes; the limit is {MAX_REQUEST_BYTES}", text.len()),
            ));
        }
        serde_json::from_str(text)
            .map_err(|e| ApiError::new(ApiCode::BadRequest, format!("malformed control request: {e}")))
    }

    pub fn to_json(&self) -> String {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What kind of failure an answer reports; the CLI maps each to an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiCode {
    BadRequest,
    Forbidden,
    NotFound,
    /// The compliance check failed; `detail` holds the report.
    ComplianceFailed,
    /// Change control: the effective date is too early; `detail` holds the earliest allowed.
    TooEarly,
    Conflict,
    /// The control store is down or read-only; retry later.
    Unavailable,
    Internal,
}

/// A refused or failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[error("{message}")]
pub struct ApiError {
    pub code: ApiCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ApiCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None }
    }
}

/// The answer document: `{"ok": <result>}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ControlAnswer {
    Ok(serde_json::Value),
    Error(ApiError),
}

impl ControlAnswer {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<Self, ApiError> {
        serde_json::from_str(text)
            .map_err(|e| ApiError::new(ApiCode::Internal, format!("malformed control answer: {e}")))
    }

    pub fn into_result(self) -> Result<serde_json::Value, ApiError> {
        match self {
            Self::Ok(value) => Ok(value),
            Self::Error(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let request =
            ControlRequest::CatalogShow { dataset: DatasetId::new("vehicles").unwrap(), version: Some(2) };
        let json = request.to_json();
        assert_eq!(json, r#"{"op":"catalog-show","dataset":"vehicles","version":2}"#);
        assert_eq!(ControlRequest::parse(&json).unwrap(), request);
        let unknown = ControlRequest::parse(r#"{"op":"catalog-list","as":"ministry"}"#).unwrap_err();
        assert_eq!(unknown.code, ApiCode::BadRequest);
        assert_eq!(ControlRequest::parse(r#"{"op":"drop-tables"}"#).unwrap_err().code, ApiCode::BadRequest);
        let huge = "x".repeat(MAX_REQUEST_BYTES + 1);
        assert!(ControlRequest::parse(&huge).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn answers_round_trip() {
        let ok = ControlAnswer::Ok(serde_json::json!({"n": 1}));
        assert_eq!(ControlAnswer::parse(&ok.to_json()).unwrap(), ok);
        let err = ControlAnswer::Error(ApiError::new(ApiCode::Forbidden, "no"));
        assert_eq!(
            ControlAnswer::parse(&err.to_json()).unwrap().into_result().unwrap_err().code,
            ApiCode::Forbidden
        );
    }
}
