//! Reading the audit log back: entries filtered by dataset, department, kind and time,
//! newest first, a page at a time (`ferry audit show`).
//!
//! Neighbours: [`crate::audit::store`] holds the column list; [`crate::audit::entry`] parses rows.

use super::AuditError;
use super::entry::{AuditEntry, EntryKind};
use super::store::{entry_columns, raw_from_row};
use ferry_proto::{DatasetId, DeptId};
use sqlx::{AnyPool, AssertSqlSafe};

/// Entries returned when a filter names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most entries one call returns.
pub const MAX_LIMIT: u32 = 10_000;

/// Which entries to show. Every `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShowFilter {
    pub dataset: Option<DatasetId>,
    /// The acting department.
    pub department: Option<DeptId>,
    pub kind: Option<EntryKind>,
    /// Entries at or after this unix time (ms).
    pub from_ms: Option<i64>,
    /// Entries before this unix time (ms).
    pub until_ms: Option<i64>,
    /// Only entries before this seq: pass the last seq of a page to get the next one.
    pub before_seq: Option<u64>,
    /// At most this many (0 means [`DEFAULT_LIMIT`]; capped at [`MAX_LIMIT`]).
    pub limit: u32,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// The query for `filter`: only placeholders are spliced into the SQL, never values.
fn build(filter: &ShowFilter) -> (String, Vec<Bind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    let mut push = |clause: &str, bind: Bind| {
        binds.push(bind);
        clauses.push(format!("{clause} ${}", binds.len()));
    };
    if let Some(dataset) = &filter.dataset {
        push("dataset =", Bind::Text(dataset.as_str().to_owned()));
    }
    if let Some(dept) = &filter.department {
        push("actor_dept =", Bind::Text(dept.as_str().to_owned()));
    }
    if let Some(kind) = filter.kind {
        push("kind =", Bind::Text(kind.as_str().to_owned()));
    }
    if let Some(from) = filter.from_ms {
        push("time_ms >=", Bind::Int(from));
    }
    if let Some(until) = filter.until_ms {
        push("time_ms <", Bind::Int(until));
    }
    if let Some(before) = filter.before_seq {
        push("seq <", Bind::Int(i64::try_from(before).unwrap_or(i64::MAX)));
    }
    let limit = match filter.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let filter_sql =
        if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let sql =
        format!("SELECT {} FROM audit_entries{filter_sql} ORDER BY seq DESC LIMIT {limit}", entry_columns!());
    (sql, binds)
}

/// The entries of the log in `pool` that match `filter`, newest first.
pub async fn show_pool(pool: &AnyPool, filter: &ShowFilter) -> Result<Vec<AuditEntry>, AuditError> {
    let (sql, binds) = build(filter);
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind(text),
            Bind::Int(n) => query.bind(n),
        };
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(|row| Ok(raw_from_row(row)?.parse()?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_becomes_placeholders_in_order() {
        let filter = ShowFilter {
            dataset: Some(DatasetId::new("bus-routes").expect("id")),
            from_ms: Some(5),
            limit: 20_000,
            ..ShowFilter::default()
        };
        let (sql, binds) = build(&filter);
        assert!(
            sql.ends_with(
                " FROM audit_entries WHERE dataset = $1 AND time_ms >= $2 ORDER BY seq DESC LIMIT 10000"
            ),
            "{sql}"
        );
        assert_eq!(binds.len(), 2);
    }

    #[test]
    fn empty_filter_has_no_where_and_the_default_limit() {
        let (sql, binds) = build(&ShowFilter::default());
        assert!(sql.ends_with(" FROM audit_entries ORDER BY seq DESC LIMIT 100"), "{sql}");
        assert!(binds.is_empty());
    }
}
