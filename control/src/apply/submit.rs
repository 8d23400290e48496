//! Submitting an application: the client key first (a re-sent request returns the first
//! application; the same key with another request is a conflict), then the checks against the
//! catalog entry in effect (dataset, methods, content), then one transaction that writes the
//! application, its first step, its grant (unconditional data) and the audit entries.
//!
//! Neighbours: [`super::review`] takes the application from here; [`super::rows`] writes.

use ferry_proto::filter::{ColumnKind, RowFilter};
use ferry_proto::{Principal, Role, ServiceMethod, ShareType};
use ferry_tables::catalog::CatalogEntry;
use serde_json::json;
use sqlx::AnyConnection;
use time::OffsetDateTime;

use super::rows::{Step, Table, application, date_text, methods_text, next_id, select_applications};
use super::{
    Application, ApplicationId, ApplicationRequest, ApplicationState, ApplyError, Decider, FIRST_REVIEW_DAYS,
    MAX_KEY_BYTES, Submitted, check_text,
};
use crate::audit::EntryKind;
use crate::calendar::china_date;
use crate::catalog::read::{StoredEntry, in_effect_at};
use crate::store::{ControlStore, StoreError};

/// A request after its own checks (before the catalog's): trimmed, methods sorted.
struct Normalized {
    purpose: String,
    methods: Vec<ServiceMethod>,
    columns: Option<Vec<String>>,
    rows: Option<String>,
    key: String,
    body_hash: String,
}

fn normalize(request: &ApplicationRequest) -> Result<Normalized, ApplyError> {
    let key = request.key.trim();
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApplyError::Invalid(format!(
            "the client key must be 1 to {MAX_KEY_BYTES} printable ASCII characters"
        )));
    }
    let purpose = check_text("the purpose", &request.purpose)?;
    let mut methods = request.methods.clone();
    methods.sort();
    methods.dedup();
    if methods.is_empty() {
        return Err(ApplyError::Invalid("no service method asked for".into()));
    }
    let rows = request.rows.as_deref().map(|r| check_text("the row filter", r)).transpose()?;
    let columns = request.columns.clone();
    let body = json!({
        "dataset": request.dataset.as_str(), "purpose": purpose, "methods": methods,
        "columns": columns, "rows": rows,
    });
    let body_hash = blake3::hash(body.to_string().as_bytes()).to_hex().to_string();
    Ok(Normalized { purpose, methods, columns, rows, key: key.to_owned(), body_hash })
}

/// The content of a conditional application, checked against the entry: known columns in
/// the catalog's order with every key column, and a row filter that fits the columns.
fn check_content(
    entry: &CatalogEntry,
    columns: Option<&[String]>,
    rows: Option<&str>,
) -> Result<(Option<Vec<String>>, Option<String>), ApplyError> {
    let dataset = entry.dataset();
    let defined = &entry.definition.columns;
    let columns = match columns {
        None => None,
        Some(asked) => {
            if asked.is_empty() {
                return Err(ApplyError::Invalid("an empty column list grants nothing".into()));
            }
            if let Some(unknown) = asked.iter().find(|c| !defined.iter().any(|d| &d.name == *c)) {
                return Err(ApplyError::UnknownColumn { dataset: dataset.clone(), column: unknown.clone() });
            }
            if let Some(key) = defined.iter().find(|d| d.key && !asked.contains(&d.name)) {
                return Err(ApplyError::KeyColumnMissing {
                    dataset: dataset.clone(),
                    column: key.name.clone(),
                });
            }
            Some(defined.iter().filter(|d| asked.contains(&d.name)).map(|d| d.name.clone()).collect())
        }
    };
    let rows = match rows {
        None => None,
        Some(text) => {
            let filter = RowFilter::parse(text).map_err(|e| ApplyError::RowFilter(e.to_string()))?;
            let kinds: Vec<(String, ColumnKind)> = defined
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        ColumnKind::from_type_name(&d.column_type.to_string()).unwrap_or(ColumnKind::Other),
                    )
                })
                .collect();
            filter
                .check_against(kinds.iter().map(|(n, k)| (n.as_str(), *k)))
                .map_err(|e| ApplyError::RowFilter(e.to_string()))?;
            Some(filter.to_string())
        }
    };
    Ok((columns, rows))
}

/// Checks the request against the entry in effect; the content as it will be stored.
fn check_against_entry(
    caller: &Principal,
    entry: &CatalogEntry,
    request: &Normalized,
) -> Result<(Option<Vec<String>>, Option<String>), ApplyError> {
    let dataset = entry.dataset();
    if entry.provider() == &caller.dept {
        return Err(ApplyError::OwnDataset { dataset: dataset.clone(), dept: caller.dept.clone() });
    }
    if entry.share_type() == ShareType::NotShared {
        return Ok((None, None));
    }
    if let Some(method) = request.methods.iter().find(|m| !entry.offers(**m)) {
        let offered = entry.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
        return Err(ApplyError::MethodNotOffered { dataset: dataset.clone(), method: *method, offered });
    }
    if entry.share_type() == ShareType::Conditional {
        return check_content(entry, request.columns.as_deref(), request.rows.as_deref());
    }
    if request.columns.is_some() || request.rows.is_some() {
        return Err(ApplyError::ContentNotApplicable {
            dataset: dataset.clone(),
            share_type: entry.share_type(),
        });
    }
    Ok((None, None))
}

async fn by_key(
    conn: &mut AnyConnection,
    caller: &Principal,
    key: &str,
) -> Result<Option<(Application, String)>, StoreError> {
    let sql = select_applications!("WHERE a.dept = $1 AND a.client_key = $2");
    let Some(row) = sqlx::query(sql)
        .bind(caller.dept.as_str().to_owned())
        .bind(key.to_owned())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let hash: Option<(String,)> =
        sqlx::query_as("SELECT body_hash FROM applications WHERE dept = $1 AND client_key = $2")
            .bind(caller.dept.as_str().to_owned())
            .bind(key.to_owned())
            .fetch_optional(conn)
            .await?;
    Ok(Some((application(&row)?, hash.map(|h| h.0).unwrap_or_default())))
}

impl ControlStore {
    /// Submits `request` as `caller`'s department (see the module doc).
    pub async fn submit_application(
        &self,
        caller: &Principal,
        request: &ApplicationRequest,
        now: OffsetDateTime,
    ) -> Result<Submitted, ApplyError> {
        if caller.role != Role::Operator {
            return Err(ApplyError::wrong_role(
                "apply for data",
                caller,
                "an operator of the department".into(),
            ));
        }
        let normalized = normalize(request)?;
        let mut tx = self.begin_write().await.map_err(StoreError::from)?;
        if let Some((existing, hash)) = by_key(&mut tx, caller, &normalized.key).await? {
            if hash != normalized.body_hash {
                return Err(ApplyError::KeyReused { key: normalized.key, existing: existing.id });
            }
            return Ok(Submitted { application: existing, created: false });
        }
        let stored = in_effect_at(&mut tx, &request.dataset, now).await?.ok_or_else(|| {
            StoreError::NotFound(format!("dataset {} (no catalog version in effect)", request.dataset))
        })?;
        let content = check_against_entry(caller, &stored.entry, &normalized)?;
        let id = self.write_submission(&mut tx, caller, &stored, &normalized, content, now).await?;
        let application = read_in(&mut tx, id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Submitted { application, created: true })
    }

    async fn write_submission(
        &self,
        conn: &mut AnyConnection,
        caller: &Principal,
        stored: &StoredEntry,
        request: &Normalized,
        (columns, rows): (Option<Vec<String>>, Option<String>),
        now: OffsetDateTime,
    ) -> Result<ApplicationId, ApplyError> {
        let entry = &stored.entry;
        let id = ApplicationId(next_id(&mut *conn, Table::Applications).await?);
        let decider =
            if entry.classification.is_cross_industry() { Decider::StAuthority } else { Decider::Provider };
        let (state, due, basis) = match entry.share_type() {
            ShareType::Unconditional => (ApplicationState::Granted, None, None),
            ShareType::NotShared => {
                let basis =
                    entry.legal_basis.clone().unwrap_or_else(|| "not shared (no basis recorded)".into());
                (ApplicationState::Refused, None, Some(basis))
            }
            ShareType::Conditional => {
                let due = self.calendar().add_working_days(china_date(now), FIRST_REVIEW_DAYS)?;
                (ApplicationState::FirstReview, Some(date_text(due)), None)
            }
        };
        let columns_json = columns.as_ref().map(|c| serde_json::Value::from(c.clone()).to_string());
        sqlx::query(
            "INSERT INTO applications (id, dept, client_key, body_hash, submitted_by, submitted_at, dataset, \
             provider, catalog_version, share_type, purpose, methods, columns_json, row_filter, state, decider, \
             due_on, decided_at, decided_by, basis) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(id.0 as i64)
        .bind(caller.dept.as_str().to_owned())
        .bind(request.key.clone())
        .bind(request.body_hash.clone())
        .bind(caller.name.clone())
        .bind(now.unix_timestamp())
        .bind(entry.dataset().as_str().to_owned())
        .bind(entry.provider().as_str().to_owned())
        .bind(stored.catalog_version as i64)
        .bind(entry.share_type().as_str())
        .bind(request.purpose.clone())
        .bind(methods_text(&request.methods))
        .bind(columns_json)
        .bind(rows)
        .bind(state.as_str())
        .bind(decider.as_str())
        .bind(due.clone())
        .bind(state.is_decided().then(|| now.unix_timestamp()))
        .bind(state.is_decided().then(|| "ministry platform".to_owned()))
        .bind(basis.clone())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from)?;
        let facts = json!({ "share-type": entry.share_type().as_str(), "catalog-version": stored.catalog_version,
            "methods": methods_text(&request.methods), "due-on": due, "decider": decider.as_str() });
        let step = Step {
            application: id,
            step: "submitted",
            outcome: "submitted",
            actor: caller,
            acting_as: "applicant",
            delegated: false,
            basis: None,
            note: Some(&request.purpose),
            at: now,
        };
        self.record_step(&mut *conn, &step, EntryKind::ApplicationSubmitted, entry.dataset(), facts).await?;
        match entry.share_type() {
            ShareType::Unconditional => {
                self.grant_in(conn, caller, id, now, "granted-at-once", None).await?;
            }
            ShareType::NotShared => {
                let step = Step {
                    outcome: "refused-not-shared",
                    step: "decision",
                    acting_as: "catalog",
                    basis: basis.as_deref(),
                    note: None,
                    ..step
                };
                self.record_step(conn, &step, EntryKind::ApplicationReviewed, entry.dataset(), json!({}))
                    .await?;
            }
            ShareType::Conditional => {}
        }
        Ok(id)
    }
}

/// The application `id`, read inside the caller's transaction.
pub(crate) async fn read_in(conn: &mut AnyConnection, id: ApplicationId) -> Result<Application, StoreError> {
    let sql = select_applications!("WHERE a.id = $1");
    let row = sqlx::query(sql)
        .bind(i64::try_from(id.0).map_err(|_| StoreError::NotFound(format!("application {}", id.0)))?)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("application {}", id.0)))?;
    application(&row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::DatasetId;

    fn request() -> ApplicationRequest {
        ApplicationRequest {
            dataset: DatasetId::new("vehicle-gps").expect("id"),
            purpose: "  road safety  ".into(),
            methods: vec![ServiceMethod::Download, ServiceMethod::OnlineQuery, ServiceMethod::Download],
            columns: None,
            rows: None,
            key: "k-1".into(),
        }
    }

    #[test]
    fn a_request_is_trimmed_sorted_and_hashed_by_content() {
        let a = normalize(&request()).expect("valid");
        assert_eq!(a.purpose, "road safety");
        assert_eq!(a.methods, [ServiceMethod::OnlineQuery, ServiceMethod::Download]);
        let b = normalize(&ApplicationRequest {
            methods: vec![ServiceMethod::OnlineQuery, ServiceMethod::Download],
            ..request()
        })
        .expect("valid");
        assert_eq!(a.body_hash, b.body_hash, "the same request in another order");
        let c = normalize(&ApplicationRequest { purpose: "another".into(), ..request() }).expect("valid");
        assert_ne!(a.body_hash, c.body_hash);
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            ApplicationRequest { key: String::new(), ..request() },
            ApplicationRequest { key: "a key".into(), ..request() },
            ApplicationRequest { purpose: " ".into(), ..request() },
            ApplicationRequest { methods: vec![], ..request() },
            ApplicationRequest { purpose: "x".repeat(super::super::MAX_TEXT_BYTES + 1), ..request() },
        ] {
            assert!(matches!(normalize(&bad), Err(ApplyError::Invalid(_))), "{bad:?}");
        }
    }
}
