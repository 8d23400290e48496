//! Who may do what in the control plane: the regulation's roles mapped onto the principal a
//! verified certificate carries ([`ferry_proto::Principal`]).
//!
//! | action | allowed to |
//! |---|---|
//! | register a catalog entry | an operator of the entry's provider department (technical support does not register on a provider's behalf: the provider answers for its catalog, Art. 8) |
//! | list, show, history, diff, in effect | any verified department; a **not-shared** entry only to its provider, technical support and the S&T authority — to everyone else it does not exist (not found, never "forbidden", so its existence does not leak) |
//! | notices of a department | that department only |
//! | receipt facts of an entry | its provider, technical support, the S&T authority |
//! | record a use or a publication, read the policy state | the technical support department's node or operators (the ministry platform feeds them) |
//! | online backup | an operator of technical support |
//! | revoke a grant | an operator of the dataset's provider or of technical support |
//! | feedback on a grant | an operator of its holder |
//! | file a quality issue | an operator of a department holding a grant for the dataset or using it |
//! | answer a quality issue | an operator of the dataset's provider |
//! | report uses and publish refusals | a node (ministry or province; a province for what it serves) |
//! | report holdings (the fleet view) | a province node, for itself |
//! | read the fleet view | an operator of the ministry or of technical support, the ministry's node |
//! | read a supervision report | technical support, the S&T authority, a department its own |
//! | issue or close a rectification notice | an operator of the S&T authority |
//!
//! Neighbours: [`crate::store::ControlStore`] checks these before touching the database.

use ferry_proto::{DeptId, Principal, Role, ShareType};

use crate::store::StoreError;

/// The departments with a role of their own, from the ministry's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// 技术支持部门: runs the ministry platform and does first reviews.
    pub technical_support: DeptId,
    /// 部科技主管部门: supervises (evaluations, rectification notices).
    pub st_authority: DeptId,
}

/// An action the store refuses to some callers; named in [`StoreError::Forbidden`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Register,
    ReadNotices,
    ReadReceiptFacts,
    RecordUse,
    RecordPublication,
    ReadPolicy,
    Backup,
    /// Revoke a grant: an operator of the dataset's provider or of technical support.
    RevokeGrant,
    /// Give feedback on a grant: an operator of its holder.
    GiveFeedback,
    /// File a quality issue: an operator of a department holding a grant for the dataset or
    /// using it.
    FileQualityIssue,
    /// Answer a quality issue: an operator of the dataset's provider.
    AnswerQualityIssue,
    /// Report uses and publish refusals seen by a node: a node (ministry or province).
    ReportUse,
    /// Report what a node holds: a province node.
    ReportHoldings,
    /// Read the fleet view: an operator of the ministry (the subject) or of technical support,
    /// or the ministry's node.
    ReadFleet,
    /// Read a supervision report: supervisors, or a department its own.
    ReadSupervision,
    /// Issue or close a rectification notice: an operator of the S&T authority.
    Rectify,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register a catalog entry",
            Self::ReadNotices => "read change notices",
            Self::ReadReceiptFacts => "read receipt facts",
            Self::RecordUse => "record a dataset use",
            Self::RecordPublication => "record a publication",
            Self::ReadPolicy => "read the policy state",
            Self::Backup => "back up the control store",
            Self::RevokeGrant => "revoke this grant (only its provider or technical support)",
            Self::GiveFeedback => "give feedback on this grant (only its holder)",
            Self::FileQualityIssue => {
                "file a quality issue (only a department holding a grant for the dataset or using it)"
            }
            Self::AnswerQualityIssue => "answer this quality issue (only the dataset's provider)",
            Self::ReportUse => "report dataset uses (only a node)",
            Self::ReportHoldings => "report holdings (only a province node)",
            Self::ReadFleet => "read the fleet view (only the ministry's and technical support's operators)",
            Self::ReadSupervision => "read this supervision report",
            Self::Rectify => "issue or close rectification notices (only the S&T authority)",
        }
    }
}

impl Roles {
    fn is_supervisor(&self, dept: &DeptId) -> bool {
        dept == &self.technical_support || dept == &self.st_authority
    }

    /// Whether `caller` may see an entry of `provider` with `share_type` at all.
    pub fn may_see(&self, caller: &Principal, provider: &DeptId, share_type: ShareType) -> bool {
        share_type != ShareType::NotShared || &caller.dept == provider || self.is_supervisor(&caller.dept)
    }

    /// Checks `action` for `caller`; `subject` is the department the action concerns (the
    /// provider of the entry, or the department whose notices are read).
    pub fn authorize(
        &self,
        caller: &Principal,
        action: Action,
        subject: Option<&DeptId>,
    ) -> Result<(), StoreError> {
        let operator = caller.role == Role::Operator;
        let platform =
            caller.dept == self.technical_support && matches!(caller.role, Role::Operator | Role::Ministry);
        let allowed = match action {
            Action::Register => operator && subject == Some(&caller.dept),
            Action::ReadNotices => subject == Some(&caller.dept),
            Action::ReadReceiptFacts => subject == Some(&caller.dept) || self.is_supervisor(&caller.dept),
            Action::RecordUse | Action::RecordPublication | Action::ReadPolicy => platform,
            Action::Backup => operator && caller.dept == self.technical_support,
            Action::RevokeGrant => {
                operator && (subject == Some(&caller.dept) || caller.dept == self.technical_support)
            }
            Action::GiveFeedback | Action::FileQualityIssue | Action::AnswerQualityIssue => {
                operator && subject == Some(&caller.dept)
            }
            Action::ReportUse => matches!(caller.role, Role::Ministry | Role::Province),
            Action::ReportHoldings => caller.role == Role::Province,
            Action::ReadFleet => {
                (subject == Some(&caller.dept) || caller.dept == self.technical_support)
                    && matches!(caller.role, Role::Operator | Role::Ministry)
            }
            Action::ReadSupervision => subject == Some(&caller.dept) || self.is_supervisor(&caller.dept),
            Action::Rectify => operator && caller.dept == self.st_authority,
        };
        if allowed {
            Ok(())
        } else {
            Err(StoreError::Forbidden { action, dept: caller.dept.clone(), role: caller.role })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(dept: &str, role: Role) -> Principal {
        Principal {
            dept: DeptId::new(dept).expect("dept"),
            role,
            name: format!("{dept}-{role}"),
            serial: "01".into(),
            fingerprint: "00".repeat(32),
        }
    }

    fn roles() -> Roles {
        Roles {
            technical_support: DeptId::new("ministry").expect("id"),
            st_authority: DeptId::new("st").expect("id"),
        }
    }

    #[test]
    fn registering_needs_an_operator_of_the_provider() {
        let zj = DeptId::new("zhejiang").expect("id");
        assert!(
            roles().authorize(&principal("zhejiang", Role::Operator), Action::Register, Some(&zj)).is_ok()
        );
        for caller in [principal("zhejiang", Role::Province), principal("ministry", Role::Operator)] {
            let refused = roles().authorize(&caller, Action::Register, Some(&zj));
            assert!(
                matches!(refused, Err(StoreError::Forbidden { action: Action::Register, .. })),
                "{caller}"
            );
        }
    }

    #[test]
    fn not_shared_entries_are_seen_by_provider_and_supervisors_only() {
        let zj = DeptId::new("zhejiang").expect("id");
        for (dept, seen) in [("zhejiang", true), ("ministry", true), ("st", true), ("guangdong", false)] {
            assert_eq!(
                roles().may_see(&principal(dept, Role::Operator), &zj, ShareType::NotShared),
                seen,
                "{dept}"
            );
            assert!(roles().may_see(&principal(dept, Role::Operator), &zj, ShareType::Conditional));
        }
    }
}
