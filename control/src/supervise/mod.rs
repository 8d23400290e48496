//! Supervision (Art. 18, 19, 23, 24): a per-department evaluation computed from the control
//! plane's records, never typed in ([`evaluate`]), exported as JSON or CSV, and the
//! rectification notices the S&T authority issues against its findings and tracks to closure
//! ([`notice`]).
//!
//! Neighbours: reads the catalog, publications, publish refusals reported by nodes
//! ([`crate::grants::uses`]), quality issues ([`crate::quality`]), applications (overdue
//! reviews) and grants (unused ones).

pub mod evaluate;
pub mod notice;

pub use evaluate::{DeptEvaluation, Finding, SupervisionReport};
pub use notice::{NoticeId, NoticeState, RectificationNotice};

use serde::{Deserialize, Serialize};
use std::fmt;

/// What an evaluation can find against a department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingCode {
    /// The department has no catalog entry (Art. 23).
    CatalogNotCompiled,
    /// Its newest catalog registration is older than [`evaluate::CATALOG_UPDATE_MONTHS`].
    CatalogNotUpdated,
    /// A formal entry in effect for longer than its update cycle has never had data published.
    DataNotProvided,
    /// The last publication is older than the entry's update cycle allows (Art. 19).
    DataNotUpdated,
    /// Nodes refused publishes of the dataset because the data did not match the catalog.
    DataInconsistent,
    /// A quality issue against its data is unanswered after its deadline (Art. 15).
    QualityUnanswered,
    /// A review it must do is overdue (Art. 12).
    ReviewOverdue,
    /// A grant it holds has not been used for 3 months (Art. 17).
    GrantUnused,
    /// A formal entry without data connected 6 months after registration (Art. 20).
    DataNotConnected,
}

impl FindingCode {
    pub const ALL: [Self; 9] = [
        Self::CatalogNotCompiled,
        Self::CatalogNotUpdated,
        Self::DataNotProvided,
        Self::DataNotUpdated,
        Self::DataInconsistent,
        Self::QualityUnanswered,
        Self::ReviewOverdue,
        Self::GrantUnused,
        Self::DataNotConnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CatalogNotCompiled => "catalog-not-compiled",
            Self::CatalogNotUpdated => "catalog-not-updated",
            Self::DataNotProvided => "data-not-provided",
            Self::DataNotUpdated => "data-not-updated",
            Self::DataInconsistent => "data-inconsistent",
            Self::QualityUnanswered => "quality-unanswered",
            Self::ReviewOverdue => "review-overdue",
            Self::GrantUnused => "grant-unused",
            Self::DataNotConnected => "data-not-connected",
        }
    }

    /// Parses a code as [`FindingCode::as_str`] writes it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_one_spelling_and_csv_fields_are_quoted_when_needed() {
        for code in FindingCode::ALL {
            assert_eq!(FindingCode::parse(code.as_str()), Some(code));
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        assert_eq!(FindingCode::parse("late-lunch"), None);
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
