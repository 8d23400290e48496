//! The review of a conditional application (Art. 12–14): technical support's first review,
//! the decider's decision, requests for supporting material (which stop the decider's clock),
//! a provider's delegation of its reviews to technical support, and the grant an approval
//! makes.
//!
//! Each step reads the application in its write transaction, checks the caller's role and the
//! state, and writes the state change, the review log, the audit entry and (on approval) the
//! grant and the policy serial together. A state that moved under it (another decider first)
//! is [`ApplyError::WrongState`], never a second decision.

use ferry_proto::{DeptId, Principal, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::rows::{Step, Table, date_text, methods_text, next_id};
use super::submit::read_in;
use super::{
    Application, ApplicationId, ApplicationState, ApplyError, DECISION_DAYS, Decider, GrantId, check_text,
};
use crate::audit::{Actor, EntryKind, NewEntry, Outcome, bounded_detail};
use crate::calendar::china_date;
use crate::catalog::read::in_effect_at;
use crate::store::{ControlStore, StoreError, bump_policy_serial};

/// A reviewer's verdict: approve (first review: pass) or refuse, citing a basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Verdict {
    Approve {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Refuse {
        /// The legal or policy basis of the refusal (required).
        basis: String,
    },
}

/// A provider's delegation of its reviews (Art. 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Delegation {
    pub provider: DeptId,
    pub delegated: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

fn i64_id(id: ApplicationId) -> Result<i64, StoreError> {
    i64::try_from(id.0).map_err(|_| StoreError::NotFound(format!("application {}", id.0)))
}

/// Moves `id` from `from` to `to` with `due`; a state that moved meanwhile is a conflict.
async fn transition(
    conn: &mut AnyConnection,
    app: &Application,
    to: ApplicationState,
    due: Option<String>,
    paused: Option<i64>,
) -> Result<(), ApplyError> {
    let done = sqlx::query(
        "UPDATE applications SET state = $1, due_on = $2, paused_remaining_days = $3 WHERE id = $4 AND state = $5",
    )
    .bind(to.as_str())
    .bind(due)
    .bind(paused)
    .bind(i64_id(app.id)?)
    .bind(app.state.as_str())
    .execute(conn)
    .await
    .map_err(StoreError::from)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!("application {} changed meanwhile", app.id.0)).into());
    }
    Ok(())
}

async fn decide_row(
    conn: &mut AnyConnection,
    app: &Application,
    to: ApplicationState,
    caller: &Principal,
    basis: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), ApplyError> {
    transition(&mut *conn, app, to, None, None).await?;
    sqlx::query("UPDATE applications SET decided_at = $1, decided_by = $2, basis = $3 WHERE id = $4")
        .bind(now.unix_timestamp())
        .bind(format!("{}/{}/{}", caller.dept, caller.role, caller.name))
        .bind(basis.map(str::to_owned))
        .bind(i64_id(app.id)?)
        .execute(conn)
        .await
        .map_err(StoreError::from)?;
    Ok(())
}

fn expect_state(app: &Application, state: ApplicationState, step: &'static str) -> Result<(), ApplyError> {
    if app.state == state {
        Ok(())
    } else {
        Err(ApplyError::WrongState { id: app.id, state: app.state, step })
    }
}

fn refusal_basis(verdict: &Verdict) -> Result<Option<String>, ApplyError> {
    match verdict {
        Verdict::Approve { .. } => Ok(None),
        Verdict::Refuse { basis } if basis.trim().is_empty() => Err(ApplyError::BasisRequired("refusal")),
        Verdict::Refuse { basis } => check_text("the basis", basis).map(Some),
    }
}

impl ControlStore {
    fn is_support_operator(&self, caller: &Principal) -> bool {
        caller.role == Role::Operator && caller.dept == self.roles.technical_support
    }

    /// Who `caller` acts as when deciding `app`: (acting as, under delegation).
    async fn decider_role(
        &self,
        conn: &mut AnyConnection,
        app: &Application,
        caller: &Principal,
        step: &'static str,
    ) -> Result<(&'static str, bool), ApplyError> {
        let operator = caller.role == Role::Operator;
        match app.decider {
            Decider::StAuthority if operator && caller.dept == self.roles.st_authority => {
                Ok(("st-authority", false))
            }
            Decider::StAuthority => Err(ApplyError::wrong_role(
                step,
                caller,
                format!("the S&T authority ({})", self.roles.st_authority),
            )),
            Decider::Provider if operator && caller.dept == app.provider => Ok(("provider", false)),
            Decider::Provider
                if self.is_support_operator(caller) && delegated(conn, &app.provider).await? =>
            {
                Ok(("technical-support", true))
            }
            Decider::Provider => Err(ApplyError::wrong_role(
                step,
                caller,
                format!("the provider {} (or technical support under its delegation)", app.provider),
            )),
        }
    }

    /// Technical support's first review: pass (the decider's 7 working days start) or refuse.
    pub async fn first_review(
        &self,
        caller: &Principal,
        id: ApplicationId,
        verdict: &Verdict,
        now: OffsetDateTime,
    ) -> Result<Application, ApplyError> {
        const STEP: &str = "make the first review";
        if !self.is_support_operator(caller) {
            return Err(ApplyError::wrong_role(
                STEP,
                caller,
                format!("technical support ({})", self.roles.technical_support),
            ));
        }
        let basis = refusal_basis(verdict)?;
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        let app = read_in(&mut tx, id).await?;
        expect_state(&app, ApplicationState::FirstReview, STEP)?;
        let (outcome, facts) = match &basis {
            Some(basis) => {
                decide_row(&mut tx, &app, ApplicationState::Refused, caller, Some(basis), now).await?;
                ("refuse", json!({}))
            }
            None => {
                let due = self.calendar().add_working_days(china_date(now), DECISION_DAYS)?;
                transition(&mut tx, &app, ApplicationState::ProviderReview, Some(date_text(due)), None)
                    .await?;
                ("pass", json!({ "decision-due-on": date_text(due) }))
            }
        };
        let note = match verdict {
            Verdict::Approve { note } => note.as_deref(),
            Verdict::Refuse { .. } => None,
        };
        let step = Step {
            application: id,
            step: "first-review",
            outcome,
            actor: caller,
            acting_as: "technical-support",
            delegated: false,
            basis: basis.as_deref(),
            note,
            at: now,
        };
        self.record_step(&mut tx, &step, EntryKind::ApplicationReviewed, &app.dataset, facts).await?;
        let app = read_in(&mut tx, id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(app)
    }

    /// The decider's decision: approve (a grant is made) or refuse citing a basis.
    pub async fn decide_application(
        &self,
        caller: &Principal,
        id: ApplicationId,
        verdict: &Verdict,
        now: OffsetDateTime,
    ) -> Result<Application, ApplyError> {
        const STEP: &str = "decide the application";
        let basis = refusal_basis(verdict)?;
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        let app = read_in(&mut tx, id).await?;
        let (acting_as, delegated) = self.decider_role(&mut tx, &app, caller, STEP).await?;
        expect_state(&app, ApplicationState::ProviderReview, STEP)?;
        let (state, outcome, basis, note) = match (&basis, verdict) {
            (Some(basis), _) => (ApplicationState::Refused, "refuse", Some(basis.as_str()), None),
            (None, Verdict::Approve { note }) => {
                (ApplicationState::Granted, "approve", None, note.as_deref())
            }
            (None, Verdict::Refuse { .. }) => return Err(ApplyError::BasisRequired("refusal")),
        };
        decide_row(&mut tx, &app, state, caller, basis.or(note), now).await?;
        let step = Step {
            application: id,
            step: "decision",
            outcome,
            actor: caller,
            acting_as,
            delegated,
            basis,
            note,
            at: now,
        };
        self.record_step(&mut tx, &step, EntryKind::ApplicationReviewed, &app.dataset, json!({})).await?;
        if state == ApplicationState::Granted {
            self.grant_in(&mut tx, caller, id, now, "approve", note).await?;
        }
        let app = read_in(&mut tx, id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(app)
    }

    /// The decider asks for supporting material: its clock stops with the working days left.
    pub async fn ask_material(
        &self,
        caller: &Principal,
        id: ApplicationId,
        what: &str,
        now: OffsetDateTime,
    ) -> Result<Application, ApplyError> {
        const STEP: &str = "ask for supporting material";
        let what = check_text("the material asked for", what)
            .map_err(|_| ApplyError::BasisRequired("request for material"))?;
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        let app = read_in(&mut tx, id).await?;
        let (acting_as, delegated) = self.decider_role(&mut tx, &app, caller, STEP).await?;
        expect_state(&app, ApplicationState::ProviderReview, STEP)?;
        let due =
            app.due_on.ok_or_else(|| StoreError::Corrupt(format!("application {} has no deadline", id.0)))?;
        let left = self.calendar().working_days_between(china_date(now), due)?.max(0);
        transition(&mut tx, &app, ApplicationState::AwaitingMaterial, None, Some(left)).await?;
        let seq: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM material_requests WHERE application = $1")
                .bind(i64_id(id)?)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)?
                .try_get(0)
                .map_err(StoreError::from)?;
        sqlx::query(
            "INSERT INTO material_requests (application, seq, requested_at, requested_by, what, remaining_days) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(i64_id(id)?)
        .bind(seq)
        .bind(now.unix_timestamp())
        .bind(caller.name.clone())
        .bind(what.clone())
        .bind(left)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let step = Step {
            application: id,
            step: "ask-material",
            outcome: "asked",
            actor: caller,
            acting_as,
            delegated,
            basis: None,
            note: Some(&what),
            at: now,
        };
        self.record_step(
            &mut tx,
            &step,
            EntryKind::ApplicationReviewed,
            &app.dataset,
            json!({ "remaining-days": left }),
        )
        .await?;
        let app = read_in(&mut tx, id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(app)
    }

    /// The applicant supplies the material: the decider's clock restarts with the days left.
    pub async fn supply_material(
        &self,
        caller: &Principal,
        id: ApplicationId,
        note: &str,
        now: OffsetDateTime,
    ) -> Result<Application, ApplyError> {
        const STEP: &str = "supply material";
        let note = check_text("the material's description", note)?;
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        let app = read_in(&mut tx, id).await?;
        if caller.role != Role::Operator || caller.dept != app.dept {
            return Err(ApplyError::wrong_role(STEP, caller, format!("the applicant {}", app.dept)));
        }
        expect_state(&app, ApplicationState::AwaitingMaterial, STEP)?;
        let left = app.paused_remaining_days.unwrap_or(0);
        let due = self.calendar().add_working_days(china_date(now), left)?;
        transition(&mut tx, &app, ApplicationState::ProviderReview, Some(date_text(due)), None).await?;
        sqlx::query(
            "UPDATE material_requests SET supplied_at = $1, supplied_note = $2 WHERE application = $3 AND supplied_at IS NULL",
        )
        .bind(now.unix_timestamp())
        .bind(note.clone())
        .bind(i64_id(id)?)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let step = Step {
            application: id,
            step: "supply-material",
            outcome: "supplied",
            actor: caller,
            acting_as: "applicant",
            delegated: false,
            basis: None,
            note: Some(&note),
            at: now,
        };
        self.record_step(
            &mut tx,
            &step,
            EntryKind::ApplicationReviewed,
            &app.dataset,
            json!({ "decision-due-on": date_text(due) }),
        )
        .await?;
        let app = read_in(&mut tx, id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(app)
    }

    /// Writes the grant of the approved application `id` (in the caller's transaction): its
    /// content, the catalog versions from the one in effect on, the policy serial, the audit entry.
    pub(crate) async fn grant_in(
        &self,
        conn: &mut AnyConnection,
        caller: &Principal,
        id: ApplicationId,
        now: OffsetDateTime,
        outcome: &'static str,
        note: Option<&str>,
    ) -> Result<GrantId, ApplyError> {
        let app = read_in(&mut *conn, id).await?;
        let in_effect = in_effect_at(&mut *conn, &app.dataset, now).await?.ok_or_else(|| {
            StoreError::NotFound(format!("dataset {}: no catalog version in effect", app.dataset))
        })?;
        let grant = GrantId(next_id(&mut *conn, Table::Grants).await?);
        let columns = app.columns.as_ref().map(|c| serde_json::Value::from(c.clone()).to_string());
        sqlx::query(
            "INSERT INTO grants (id, application, dept, dataset, purpose, methods, restriction_columns, \
             restriction_rows, catalog_from, catalog_to, granted_at, expires_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, NULL, 'active')",
        )
        .bind(grant.0 as i64)
        .bind(i64_id(id)?)
        .bind(app.dept.as_str().to_owned())
        .bind(app.dataset.as_str().to_owned())
        .bind(app.purpose.clone())
        .bind(methods_text(&app.methods))
        .bind(columns)
        .bind(app.rows.clone())
        .bind(in_effect.catalog_version as i64)
        .bind(now.unix_timestamp())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from)?;
        bump_policy_serial(&mut *conn).await?;
        let entry = NewEntry {
            time_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
            kind: EntryKind::GrantIssued,
            actor: Actor::from(caller),
            dataset: Some(app.dataset.clone()),
            outcome: Outcome::Accepted,
            reason: note.unwrap_or_default().chars().take(512).collect(),
            detail: bounded_detail(json!({
                "grant": grant.0, "application": id.0, "dept": app.dept.as_str(), "outcome": outcome,
                "methods": methods_text(&app.methods), "columns": app.columns, "rows": app.rows,
                "catalog-from": in_effect.catalog_version,
            })),
        };
        self.audit_entry(conn, &entry).await?;
        Ok(grant)
    }

    /// A provider delegates its reviews to technical support (`delegate`), or takes them back.
    pub async fn set_review_delegation(
        &self,
        caller: &Principal,
        delegate: bool,
        now: OffsetDateTime,
    ) -> Result<Delegation, ApplyError> {
        if caller.role != Role::Operator || caller.dept == self.roles.technical_support {
            return Err(ApplyError::wrong_role(
                "delegate reviews",
                caller,
                "an operator of a providing department".into(),
            ));
        }
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        let provider = caller.dept.as_str().to_owned();
        sqlx::query(
            "UPDATE review_delegations SET revoked_at = $1 WHERE provider = $2 AND revoked_at IS NULL",
        )
        .bind(now.unix_timestamp())
        .bind(provider.clone())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if delegate {
            sqlx::query("INSERT INTO review_delegations (provider, since, granted_by) VALUES ($1, $2, $3)")
                .bind(provider)
                .bind(now.unix_timestamp())
                .bind(caller.name.clone())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        let entry = NewEntry {
            time_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
            kind: EntryKind::ReviewDelegation,
            actor: Actor::from(caller),
            dataset: None,
            outcome: Outcome::Accepted,
            reason: String::new(),
            detail: json!({ "delegated": delegate, "to": self.roles.technical_support.as_str() }),
        };
        self.audit_entry(&mut tx, &entry).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Delegation { provider: caller.dept.clone(), delegated: delegate, at: now })
    }
}

/// Whether `provider` has delegated its reviews to technical support.
pub(crate) async fn delegated(conn: &mut AnyConnection, provider: &DeptId) -> Result<bool, StoreError> {
    let row =
        sqlx::query("SELECT COUNT(*) FROM review_delegations WHERE provider = $1 AND revoked_at IS NULL")
            .bind(provider.as_str().to_owned())
            .fetch_one(conn)
            .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}
