//! Catalog changes and the grants they touch (Art. 9 change control for grant holders).
//!
//! Holders of active grants count as consumers of a dataset in use
//! ([`crate::catalog::change`] widens its consumer query with them), so a change of the
//! information items waits 3 months and they get the change notice. When the new version drops
//! a column that a grant's content names (its permitted columns, or its row filter), the grant
//! cannot carry over: its catalog range is closed at the last version before the change, and
//! its holder is told (a new application asks for the new items). Grants that name no dropped
//! column — or name no columns at all — keep covering later versions. This runs inside the
//! registration's transaction, which also bumps the policy serial and audits the change (the
//! closed grants are in its entry).
//!
//! Neighbours: [`crate::catalog::register`] calls [`close_ranges`].

use ferry_proto::DatasetId;
use ferry_tables::catalog::CatalogEntry;
use sqlx::AnyConnection;
use time::OffsetDateTime;

use super::GrantId;
use super::list::{GrantState, all_grants};
use super::notices::{GrantNotice, GrantNoticeKind, insert_notice};
use crate::store::StoreError;

/// The columns of `before` that `after` no longer has.
pub fn dropped_columns(before: &CatalogEntry, after: &CatalogEntry) -> Vec<String> {
    before
        .definition
        .columns
        .iter()
        .filter(|c| !after.definition.columns.iter().any(|a| a.name == c.name))
        .map(|c| c.name.clone())
        .collect()
}

/// Whether a row filter's text mentions `column` as an identifier (string literals aside, a
/// conservative reading: a filter naming the column closes the range).
fn filter_names(filter: &str, column: &str) -> bool {
    let mut in_literal = false;
    let mut token = String::new();
    for ch in filter.chars().chain(std::iter::once(' ')) {
        if ch == '\'' {
            in_literal = !in_literal;
            token.clear();
        } else if !in_literal && (ch.is_ascii_alphanumeric() || ch == '_') {
            token.push(ch);
        } else {
            if token == column {
                return true;
            }
            token.clear();
        }
    }
    false
}

/// Closes, at `last_covered`, the catalog range of every active grant on `dataset` made
/// before catalog version `last_covered + 1` whose content names one of `dropped`; tells each
/// holder. Returns the grants closed.
pub(crate) async fn close_ranges(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
    last_covered: u64,
    dropped: &[String],
    now: OffsetDateTime,
) -> Result<Vec<GrantId>, StoreError> {
    if dropped.is_empty() {
        return Ok(Vec::new());
    }
    let grants = all_grants(&mut *conn).await?;
    let mut closed = Vec::new();
    for grant in grants.iter().filter(|g| {
        &g.dataset == dataset
            && g.state == GrantState::Active
            && g.catalog_to.is_none()
            && g.catalog_from <= last_covered
    }) {
        let names = |column: &String| {
            grant.columns.as_ref().is_some_and(|cols| cols.contains(column))
                || grant.rows.as_deref().is_some_and(|rows| filter_names(rows, column))
        };
        let named: Vec<&String> = dropped.iter().filter(|c| names(c)).collect();
        if named.is_empty() {
            continue;
        }
        let to = i64::try_from(last_covered).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("UPDATE grants SET catalog_to = $2 WHERE id = $1 AND catalog_to IS NULL")
            .bind(grant.id.sql()?)
            .bind(to)
            .execute(&mut *conn)
            .await?;
        let text = format!(
            "catalog version {} of {} drops {}, which grant {} names; the grant covers catalog versions up to {} \
             (apply again for the new items)",
            last_covered + 1,
            dataset,
            named.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
            grant.id,
            last_covered
        );
        let notice = GrantNotice {
            grant: grant.id,
            dataset: dataset.clone(),
            kind: GrantNoticeKind::RangeClosed,
            at: now,
            deadline: None,
            text,
        };
        insert_notice(&mut *conn, &grant.holder, &notice).await?;
        closed.push(grant.id);
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_names_a_column_outside_its_literals() {
        assert!(filter_names("city = 'gz' AND odometer_km > 5", "odometer_km"));
        assert!(!filter_names("city = 'odometer_km'", "odometer_km"));
        assert!(!filter_names("odometer_km_total > 5", "odometer_km"));
        assert!(filter_names("odometer_km", "odometer_km"));
    }
}
