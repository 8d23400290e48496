//! Reading applications: one, a list, the deadlines at risk (`ferry review due`), the counts
//! the ministry node exports as metrics, the decisions technical support took under a
//! provider's delegation (its periodic report, Art. 14), and the grants in force that the
//! policy snapshot carries.
//!
//! Who sees what: the applicant and the provider see their applications; technical support
//! and the S&T authority see all of them. Neighbours: [`crate::catalog::policy`] reads
//! [`grants_in_force`] in the policy state's transaction.

use ferry_proto::policy::PolicyGrant;
use ferry_proto::{DatasetId, DeptId, Principal};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use time::{Date, OffsetDateTime};

use super::rows::{application, policy_grant, select_applications, select_grants};
use super::submit::read_in;
use super::{Application, ApplicationId, ApplicationState, ApplyError};
use crate::calendar::china_date;
use crate::store::{ControlStore, StoreError, from_unix};

/// A pending step whose deadline is near or past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DueReview {
    pub application: Application,
    /// Working days from today to the deadline: 1 is tomorrow, 0 today, negative when overdue.
    pub working_days_left: i64,
    pub overdue: bool,
}

/// Applications by state and deadlines, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReviewCounts {
    /// (state, count) for every state.
    pub by_state: Vec<(ApplicationState, u64)>,
    /// Pending steps due today or on the next working day.
    pub due_within_one_day: u64,
    pub overdue: u64,
}

/// A decision technical support took under a provider's delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DelegatedDecision {
    pub application: ApplicationId,
    pub dataset: DatasetId,
    pub applicant: DeptId,
    /// `approve` or `refuse`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    pub decided_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The grants in force, sorted as the snapshot wants them (dataset, department, id).
pub(crate) async fn grants_in_force(conn: &mut AnyConnection) -> Result<Vec<PolicyGrant>, StoreError> {
    let rows = sqlx::query(select_grants!("WHERE state = 'active'")).fetch_all(conn).await?;
    let mut grants = rows.iter().map(policy_grant).collect::<Result<Vec<_>, _>>()?;
    grants.sort_by(|a, b| (&a.dataset, &a.dept, a.id).cmp(&(&b.dataset, &b.dept, b.id)));
    Ok(grants)
}

impl ControlStore {
    fn sees_all_applications(&self, caller: &Principal) -> bool {
        caller.dept == self.roles.technical_support || caller.dept == self.roles.st_authority
    }

    fn may_see_application(&self, caller: &Principal, app: &Application) -> bool {
        self.sees_all_applications(caller) || caller.dept == app.dept || caller.dept == app.provider
    }

    /// Application `id` (not found for a caller who may not see it).
    pub async fn application(
        &self,
        caller: &Principal,
        id: ApplicationId,
    ) -> Result<Application, ApplyError> {
        let mut conn = self.pool().acquire().await.map_err(StoreError::from)?;
        let app = read_in(&mut conn, id).await?;
        if !self.may_see_application(caller, &app) {
            return Err(StoreError::NotFound(format!("application {}", id.0)).into());
        }
        Ok(app)
    }

    /// The applications `caller` may see, oldest first, optionally in one state.
    pub async fn applications(
        &self,
        caller: &Principal,
        state: Option<ApplicationState>,
    ) -> Result<Vec<Application>, ApplyError> {
        let rows = sqlx::query(select_applications!("ORDER BY a.id"))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::from)?;
        let mut list = Vec::new();
        for row in &rows {
            let app = application(row)?;
            if self.may_see_application(caller, &app) && state.is_none_or(|s| s == app.state) {
                list.push(app);
            }
        }
        Ok(list)
    }

    /// Pending steps `caller` may see whose deadline is within one working day of `now`, or past.
    pub async fn reviews_due(
        &self,
        caller: &Principal,
        now: OffsetDateTime,
    ) -> Result<Vec<DueReview>, ApplyError> {
        let today = china_date(now);
        let mut due = Vec::new();
        for app in self.applications(caller, None).await? {
            if let Some(review) = self.due_review(app, today)? {
                due.push(review);
            }
        }
        due.sort_by_key(|d| (d.working_days_left, d.application.id));
        Ok(due)
    }

    fn due_review(&self, app: Application, today: Date) -> Result<Option<DueReview>, ApplyError> {
        let Some(deadline) = app.due_on.filter(|_| !app.state.is_decided()) else { return Ok(None) };
        let overdue = today > deadline;
        let left = self.calendar().working_days_between(today, deadline)?;
        Ok((overdue || left <= 1).then_some(DueReview { application: app, working_days_left: left, overdue }))
    }

    /// Counts for the ministry node's metrics (no caller: the node reads its own store).
    pub async fn review_counts(&self, now: OffsetDateTime) -> Result<ReviewCounts, ApplyError> {
        let rows = sqlx::query(select_applications!("ORDER BY a.id"))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::from)?;
        let today = china_date(now);
        let mut counts = ReviewCounts {
            by_state: ApplicationState::ALL.iter().map(|s| (*s, 0)).collect(),
            ..ReviewCounts::default()
        };
        for row in &rows {
            let app = application(row)?;
            if let Some(slot) = counts.by_state.iter_mut().find(|(s, _)| *s == app.state) {
                slot.1 += 1;
            }
            if let Some(review) = self.due_review(app, today)? {
                if review.overdue {
                    counts.overdue += 1;
                } else {
                    counts.due_within_one_day += 1;
                }
            }
        }
        Ok(counts)
    }

    /// The decisions technical support took under `provider`'s delegation since `since`, for
    /// the provider's periodic report. The provider and the supervisors may read them.
    pub async fn delegated_decisions(
        &self,
        caller: &Principal,
        provider: &DeptId,
        since: OffsetDateTime,
    ) -> Result<Vec<DelegatedDecision>, ApplyError> {
        if caller.dept != *provider && !self.sees_all_applications(caller) {
            return Err(ApplyError::wrong_role(
                "read delegated decisions",
                caller,
                format!("the provider {provider}, technical support or the S&T authority"),
            ));
        }
        let rows = sqlx::query(
            "SELECT r.application, a.dataset, a.dept, r.outcome, r.basis, r.actor_name, r.at \
             FROM application_reviews r JOIN applications a ON a.id = r.application \
             WHERE a.provider = $1 AND r.delegated = 1 AND r.step = 'decision' AND r.at >= $2 \
             ORDER BY r.at, r.application",
        )
        .bind(provider.as_str().to_owned())
        .bind(since.unix_timestamp())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::from)?;
        rows.iter().map(delegated_decision).collect()
    }
}

fn delegated_decision(row: &sqlx::any::AnyRow) -> Result<DelegatedDecision, ApplyError> {
    let corrupt = |e: String| StoreError::Corrupt(e);
    Ok(DelegatedDecision {
        application: ApplicationId(
            u64::try_from(row.try_get::<i64, _>(0).map_err(StoreError::from)?)
                .map_err(|e| corrupt(e.to_string()))?,
        ),
        dataset: DatasetId::new(row.try_get::<String, _>(1).map_err(StoreError::from)?)
            .map_err(|e| corrupt(e.to_string()))?,
        applicant: DeptId::new(row.try_get::<String, _>(2).map_err(StoreError::from)?)
            .map_err(|e| corrupt(e.to_string()))?,
        outcome: row.try_get(3).map_err(StoreError::from)?,
        basis: row.try_get(4).map_err(StoreError::from)?,
        decided_by: row.try_get(5).map_err(StoreError::from)?,
        at: from_unix(row.try_get(6).map_err(StoreError::from)?)?,
    })
}
