//! The control calls of the grant lifecycle, feedback, quality issues and supervision, as the
//! plane answers them: each call runs as its caller, in the store's transactions; a call that
//! changed what nodes enforce (a revocation) ticks the plane's changes so the ministry
//! re-issues its snapshot at once. The ministry's node runs the disuse sweep on a timer
//! ([`ControlPlane::sweep_disuse`]) and feeds the uses it serves in process
//! ([`ControlPlane::record_uses`]).
//!
//! Neighbours: [`crate::grants`], [`crate::quality`], [`crate::supervise`] (the store
//! operations); [`crate::plane`] (dispatches here).

use ferry_proto::Principal;
use serde_json::Value;
use time::OffsetDateTime;

use crate::api::{ApiCode, ApiError, ControlRequest};
use crate::grants::{
    DisuseSweep, GrantFilter, GrantId, PublishRefusalReport, SweepReport, UseReport, UsesRecorded,
};
use crate::plane::{ControlPlane, store_error};
use crate::quality::{FeedbackFilter, IssueFilter, IssueId};
use crate::supervise::{FindingCode, NoticeId};

fn to_value(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))
}

/// Answers one lifecycle call (the plane dispatches only these variants here).
pub(crate) async fn call(
    plane: &ControlPlane,
    caller: &Principal,
    request: ControlRequest,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let store = plane.store();
    match request {
        ControlRequest::GrantList { dataset, dept } => {
            to_value(store.grants(caller, &GrantFilter { dataset, holder: dept }).await.map_err(store_error)?)
        }
        ControlRequest::GrantRevoke { grant, reason } => {
            let revoked =
                store.revoke_grant(caller, GrantId(grant), &reason, now).await.map_err(store_error)?;
            plane.policy_changed();
            to_value(revoked)
        }
        ControlRequest::GrantNotices {} => {
            to_value(store.grant_notices(caller, &caller.dept).await.map_err(store_error)?)
        }
        ControlRequest::ReportUse { uses, publish_refusals } => {
            to_value(store.record_uses(caller, &uses, &publish_refusals, now).await.map_err(store_error)?)
        }
        ControlRequest::Feedback { grant, need_met, quality, effect } => to_value(
            store
                .give_feedback(caller, GrantId(grant), need_met, quality, &effect, now)
                .await
                .map_err(store_error)?,
        ),
        ControlRequest::FeedbackList { dataset } => {
            to_value(store.feedback_list(caller, &FeedbackFilter { dataset }).await.map_err(store_error)?)
        }
        ControlRequest::QualityFile { dataset, version, text } => {
            let days = plane.lifecycle().quality_answer_days;
            let filed = store
                .file_quality_issue(caller, &dataset, version, &text, store.calendar(), days, now)
                .await
                .map_err(store_error)?;
            to_value(filed)
        }
        ControlRequest::QualityAnswer { issue, text } => to_value(
            store.answer_quality_issue(caller, IssueId(issue), &text, now).await.map_err(store_error)?,
        ),
        ControlRequest::QualityList { dataset, unanswered } => {
            let filter = IssueFilter { dataset, unanswered };
            to_value(store.quality_issues(caller, &filter, now).await.map_err(store_error)?)
        }
        ControlRequest::SuperviseReport { dept } => {
            to_value(store.supervision_report(caller, dept.as_ref(), now).await.map_err(store_error)?)
        }
        ControlRequest::SuperviseNotice { dept, finding, dataset, text } => {
            let code = FindingCode::parse(&finding).ok_or_else(|| {
                let known: Vec<_> = FindingCode::ALL.iter().map(|c| c.as_str()).collect();
                ApiError::new(
                    ApiCode::BadRequest,
                    format!("unknown finding {finding:?}; one of {}", known.join(", ")),
                )
            })?;
            let issued = store
                .issue_rectification(caller, &dept, code, dataset.as_ref(), &text, now)
                .await
                .map_err(store_error)?;
            to_value(issued)
        }
        ControlRequest::SuperviseNoticeList { dept } => {
            to_value(store.rectifications(caller, dept.as_ref(), now).await.map_err(store_error)?)
        }
        ControlRequest::SuperviseNoticeClose { notice, note } => to_value(
            store.close_rectification(caller, NoticeId(notice), &note, now).await.map_err(store_error)?,
        ),
        other => Err(ApiError::new(ApiCode::Internal, format!("{} is not a lifecycle call", other.op()))),
    }
}

/// What the ministry's metrics show of the lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LifecycleCounts {
    pub grants_active: u64,
    pub grants_revoked: u64,
    pub issues_open: u64,
    pub issues_overdue: u64,
}

impl ControlPlane {
    /// Grants by state and unanswered quality issues (on time, overdue) at `now`.
    pub async fn lifecycle_counts(&self, now: OffsetDateTime) -> Result<LifecycleCounts, ApiError> {
        let platform = self.platform();
        let grants = self.store().grants(platform, &GrantFilter::default()).await.map_err(store_error)?;
        let issues =
            self.store().quality_issues(platform, &IssueFilter::default(), now).await.map_err(store_error)?;
        let count = |n: usize| n as u64;
        Ok(LifecycleCounts {
            grants_active: count(
                grants.iter().filter(|g| g.state == crate::grants::GrantState::Active).count(),
            ),
            grants_revoked: count(
                grants.iter().filter(|g| g.state == crate::grants::GrantState::Revoked).count(),
            ),
            issues_open: count(issues.iter().filter(|i| i.state == crate::quality::IssueState::Open).count()),
            issues_overdue: count(
                issues.iter().filter(|i| i.state == crate::quality::IssueState::Overdue).count(),
            ),
        })
    }

    /// The disuse sweep (Art. 17) at `now`, as the platform; ticks the changes when it revoked.
    pub async fn sweep_disuse(&self, now: OffsetDateTime) -> Result<SweepReport, ApiError> {
        let sweep = DisuseSweep { notice_days: self.lifecycle().disuse_notice_days };
        let report = self.store().sweep_disuse(self.platform(), sweep, now).await.map_err(store_error)?;
        if report.decisions.iter().any(|d| matches!(d, crate::grants::DisuseDecision::Revoked { .. })) {
            self.policy_changed();
        }
        Ok(report)
    }

    /// Records the uses and publish refusals the ministry's own node saw, as the platform.
    pub async fn record_uses(
        &self,
        uses: &[UseReport],
        refusals: &[PublishRefusalReport],
    ) -> Result<UsesRecorded, ApiError> {
        self.store()
            .record_uses(self.platform(), uses, refusals, OffsetDateTime::now_utc())
            .await
            .map_err(store_error)
    }
}
