//! Rows of the applications and grants tables as types, and the small writes every step
//! shares: numbering, the review log, the audit entry.
//!
//! Service methods are stored as their wire names, sorted, joined by commas; columns as a
//! JSON array; deadlines as `YYYY-MM-DD`. Neighbours: [`super::submit`], [`super::review`] and
//! [`super::read`] use these; the migration `0200_applications.sql` defines the tables.

use ferry_proto::policy::{CatalogRange, PolicyGrant, Restriction};
use ferry_proto::{DatasetId, DeptId, Principal, ServiceMethod, ShareType};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::{Date, OffsetDateTime};

use super::{Application, ApplicationId, ApplicationState, ApplyError, Decider, GrantId};
use crate::audit::{Actor, EntryKind, NewEntry, Outcome, bounded_detail};
use crate::store::{ControlStore, StoreError, from_unix};

/// `SELECT <APPLICATION_COLUMNS> FROM applications a LEFT JOIN grants g ... <rest>`.
macro_rules! select_applications {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.dept, a.client_key, a.dataset, a.provider, a.catalog_version, a.share_type, \
             a.purpose, a.methods, a.columns_json, a.row_filter, a.state, a.decider, a.submitted_at, \
             a.due_on, a.paused_remaining_days, a.basis, g.id \
             FROM applications a LEFT JOIN grants g ON g.application = a.id ",
            $rest
        )
    };
}
pub(crate) use select_applications;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn methods_text(methods: &[ServiceMethod]) -> String {
    methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn parse_methods(text: &str) -> Result<Vec<ServiceMethod>, StoreError> {
    text.split(',').filter(|m| !m.is_empty()).map(|m| m.parse().map_err(corrupt)).collect()
}

pub(crate) fn date_text(date: Date) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    date.format(&format).unwrap_or_default()
}

pub(crate) fn parse_date(text: &str) -> Result<Date, StoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).map_err(corrupt)
}

fn unsigned(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(corrupt)
}

pub(crate) fn application(row: &AnyRow) -> Result<Application, StoreError> {
    let columns: Option<String> = row.try_get(9)?;
    let due: Option<String> = row.try_get(14)?;
    let paused: Option<i64> = row.try_get(15)?;
    let grant: Option<i64> = row.try_get(17)?;
    let state: String = row.try_get(11)?;
    let decider: String = row.try_get(12)?;
    Ok(Application {
        id: ApplicationId(unsigned(row.try_get(0)?)?),
        dept: DeptId::new(row.try_get::<String, _>(1)?).map_err(corrupt)?,
        key: row.try_get(2)?,
        dataset: DatasetId::new(row.try_get::<String, _>(3)?).map_err(corrupt)?,
        provider: DeptId::new(row.try_get::<String, _>(4)?).map_err(corrupt)?,
        catalog_version: unsigned(row.try_get(5)?)?,
        share_type: row.try_get::<String, _>(6)?.parse::<ShareType>().map_err(corrupt)?,
        purpose: row.try_get(7)?,
        methods: parse_methods(&row.try_get::<String, _>(8)?)?,
        columns: columns.map(|c| serde_json::from_str(&c).map_err(corrupt)).transpose()?,
        rows: row.try_get(10)?,
        state: ApplicationState::parse(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
        decider: Decider::parse(&decider).ok_or_else(|| corrupt(format!("decider {decider:?}")))?,
        submitted_at: from_unix(row.try_get(13)?)?,
        due_on: due.as_deref().map(parse_date).transpose()?,
        paused_remaining_days: paused.map(|d| u32::try_from(d).map_err(corrupt)).transpose()?,
        basis: row.try_get(16)?,
        grant: grant.map(|g| unsigned(g).map(GrantId)).transpose()?,
    })
}

/// `SELECT <the columns [policy_grant] reads> FROM grants <rest>`.
macro_rules! select_grants {
    ($rest:literal) => {
        concat!(
            "SELECT id, application, dept, dataset, purpose, methods, restriction_columns, restriction_rows, \
             catalog_from, catalog_to, granted_at, expires_at FROM grants ",
            $rest
        )
    };
}
pub(crate) use select_grants;

pub(crate) fn policy_grant(row: &AnyRow) -> Result<PolicyGrant, StoreError> {
    let columns: Option<String> = row.try_get(6)?;
    let rows: Option<String> = row.try_get(7)?;
    let to: Option<i64> = row.try_get(9)?;
    let expires: Option<i64> = row.try_get(11)?;
    let columns: Option<Vec<String>> =
        columns.map(|c| serde_json::from_str(&c).map_err(corrupt)).transpose()?;
    let restriction = (columns.is_some() || rows.is_some()).then_some(Restriction { columns, rows });
    Ok(PolicyGrant {
        id: unsigned(row.try_get(0)?)?,
        application: unsigned(row.try_get(1)?)?,
        dept: DeptId::new(row.try_get::<String, _>(2)?).map_err(corrupt)?,
        dataset: DatasetId::new(row.try_get::<String, _>(3)?).map_err(corrupt)?,
        purpose: row.try_get(4)?,
        methods: parse_methods(&row.try_get::<String, _>(5)?)?,
        restriction,
        catalog_versions: CatalogRange {
            from: unsigned(row.try_get(8)?)?,
            to: to.map(unsigned).transpose()?,
        },
        granted_at_ms: row.try_get::<i64, _>(10)?.saturating_mul(1000),
        expires_at_ms: expires.map(|e| e.saturating_mul(1000)),
    })
}

/// The next number of `table` (`applications` or `grants`), inside the write transaction.
pub(crate) async fn next_id(conn: &mut AnyConnection, table: Table) -> Result<u64, StoreError> {
    let sql = match table {
        Table::Applications => "SELECT COALESCE(MAX(id), 0) + 1 FROM applications",
        Table::Grants => "SELECT COALESCE(MAX(id), 0) + 1 FROM grants",
    };
    let next: i64 = sqlx::query(sql).fetch_one(conn).await?.try_get(0)?;
    unsigned(next)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    Applications,
    Grants,
}

/// One step of the review log.
pub(crate) struct Step<'a> {
    pub application: ApplicationId,
    pub step: &'static str,
    pub outcome: &'static str,
    pub actor: &'a Principal,
    /// The role the actor acted in (`technical-support`, `provider`, `st-authority`, `applicant`).
    pub acting_as: &'static str,
    pub delegated: bool,
    pub basis: Option<&'a str>,
    pub note: Option<&'a str>,
    pub at: OffsetDateTime,
}

pub(crate) async fn insert_step(conn: &mut AnyConnection, step: &Step<'_>) -> Result<(), StoreError> {
    let id = i64::try_from(step.application.0).map_err(corrupt)?;
    let seq: i64 =
        sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM application_reviews WHERE application = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
    sqlx::query(
        "INSERT INTO application_reviews (application, seq, step, outcome, actor_dept, actor_name, acting_as, \
         delegated, basis, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(seq)
    .bind(step.step)
    .bind(step.outcome)
    .bind(step.actor.dept.as_str().to_owned())
    .bind(step.actor.name.clone())
    .bind(step.acting_as)
    .bind(i64::from(step.delegated))
    .bind(step.basis.map(str::to_owned))
    .bind(step.note.map(str::to_owned))
    .bind(step.at.unix_timestamp())
    .execute(conn)
    .await?;
    Ok(())
}

impl ControlStore {
    /// Records `step` in the review log and the audit log, in the caller's transaction.
    pub(crate) async fn record_step(
        &self,
        conn: &mut AnyConnection,
        step: &Step<'_>,
        kind: EntryKind,
        dataset: &DatasetId,
        detail: serde_json::Value,
    ) -> Result<(), ApplyError> {
        insert_step(&mut *conn, step).await?;
        let refused = matches!(step.outcome, "refuse" | "refused-not-shared");
        let entry = NewEntry {
            time_ms: (step.at.unix_timestamp_nanos() / 1_000_000) as i64,
            kind,
            actor: Actor::from(step.actor),
            dataset: Some(dataset.clone()),
            outcome: if refused { Outcome::Refused } else { Outcome::Accepted },
            reason: step.basis.unwrap_or_default().chars().take(512).collect(),
            detail: bounded_detail(serde_json::json!({
                "application": step.application.0,
                "step": step.step,
                "outcome": step.outcome,
                "acting-as": step.acting_as,
                "delegated": step.delegated,
                "facts": detail,
            })),
        };
        self.audit_entry(conn, &entry).await?;
        Ok(())
    }
}
