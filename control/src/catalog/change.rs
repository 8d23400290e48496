//! Change control (Art. 9): who uses a dataset, the 3-month rule's calendar, and the notices
//! consumers get about a coming change of a dataset's information items.
//!
//! A dataset is *in use* when a department other than its provider used it within the last
//! [`IN_USE_WINDOW_DAYS`] days ([`ControlStore::record_use`], fed by the reads the ministry node allows: a manifest fetched by another department).
//! Holders of an active grant count too ([`consumers_in_use`]); a change that drops a column a
//! grant names closes the grant's catalog range ([`crate::grants::change`]).

use ferry_proto::{DatasetId, DeptId, Principal};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::roles::Action;
use crate::store::{ControlStore, StoreError, from_unix, unix};

/// A use older than this many days no longer makes a dataset "in use".
pub const IN_USE_WINDOW_DAYS: i64 = 90;

/// Months between registering a change of a dataset in use and its effective date (Art. 9).
pub const CHANGE_NOTICE_MONTHS: u32 = 3;

/// Months a formal entry has to connect its data (Art. 20).
pub const CONNECTION_MONTHS: u32 = 6;

/// A consumer's notice of a coming change to a dataset's information items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeNotice {
    pub dataset: DatasetId,
    pub catalog_version: u64,
    pub previous_version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
}

/// `at` plus `months` calendar months, in UTC: the same day of the month at the same time,
/// or the month's last day when it is shorter (31 Jan + 1 month = 28 or 29 Feb; 30 Nov + 3
/// months = 28 or 29 Feb). `None` past the calendar's end.
pub fn add_months(at: OffsetDateTime, months: u32) -> Option<OffsetDateTime> {
    let at = at.to_offset(UtcOffset::UTC);
    let index = i64::from(at.year()) * 12 + i64::from(u8::from(at.month()) - 1) + i64::from(months);
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = time::Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    let day = at.day().min(month.length(year));
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(date.with_time(at.time()).assume_utc())
}

pub(crate) fn months_after(at: OffsetDateTime, months: u32) -> Result<OffsetDateTime, StoreError> {
    add_months(at, months)
        .ok_or_else(|| StoreError::TooEarly { earliest: at, reason: "date out of range".into() })
}

/// Departments other than the provider that used `dataset` since `now - 90 days`, and the
/// holders of an active grant on it (they are consumers whether or not they used it lately).
pub(crate) async fn consumers_in_use(
    conn: &mut AnyConnection,
    dataset: &DatasetId,
    provider: &DeptId,
    now: OffsetDateTime,
) -> Result<Vec<DeptId>, StoreError> {
    let since = unix(now - Duration::days(IN_USE_WINDOW_DAYS));
    let rows = sqlx::query(
        "SELECT dept FROM dataset_uses WHERE dataset = $1 AND dept <> $2 AND last_used_at >= $3 \
         UNION SELECT dept FROM grants WHERE dataset = $1 AND dept <> $2 AND state = 'active' ORDER BY dept",
    )
    .bind(dataset.as_str().to_owned())
    .bind(provider.as_str().to_owned())
    .bind(since)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| DeptId::new(row.try_get::<String, _>(0)?).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

impl ControlStore {
    /// Records that `dept` used `dataset` at `at` (a completed transfer); keeps the latest.
    pub async fn record_use(
        &self,
        caller: &Principal,
        dataset: &DatasetId,
        dept: &DeptId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.roles.authorize(caller, Action::RecordUse, None)?;
        sqlx::query(
            "INSERT INTO dataset_uses (dataset, dept, last_used_at) VALUES ($1, $2, $3) \
             ON CONFLICT (dataset, dept) DO UPDATE SET last_used_at = CASE \
             WHEN excluded.last_used_at > dataset_uses.last_used_at THEN excluded.last_used_at \
             ELSE dataset_uses.last_used_at END",
        )
        .bind(dataset.as_str().to_owned())
        .bind(dept.as_str().to_owned())
        .bind(unix(at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The change notices of `dept`, newest first; only `dept` itself may read them.
    pub async fn notices(&self, caller: &Principal, dept: &DeptId) -> Result<Vec<ChangeNotice>, StoreError> {
        self.roles.authorize(caller, Action::ReadNotices, Some(dept))?;
        let rows = sqlx::query(
            "SELECT dataset, catalog_version, previous_version, registered_at, effective_from \
             FROM change_notices WHERE dept = $1 ORDER BY registered_at DESC, dataset, catalog_version",
        )
        .bind(dept.as_str().to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChangeNotice {
                    dataset: DatasetId::new(row.try_get::<String, _>(0)?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    catalog_version: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or_default(),
                    previous_version: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or_default(),
                    registered_at: from_unix(row.try_get(3)?)?,
                    effective_from: from_unix(row.try_get(4)?)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn months_keep_the_day_or_clamp_to_the_month_end() {
        assert_eq!(add_months(datetime!(2026-12-06 06:00 UTC), 3), Some(datetime!(2027-03-06 06:00 UTC)));
        assert_eq!(
            add_months(datetime!(2026-11-30 23:59:59 UTC), 3),
            Some(datetime!(2027-02-28 23:59:59 UTC))
        );
        assert_eq!(add_months(datetime!(2027-11-30 00:00 UTC), 3), Some(datetime!(2028-02-29 00:00 UTC)));
        assert_eq!(add_months(datetime!(2026-08-31 12:00 UTC), 6), Some(datetime!(2027-02-28 12:00 UTC)));
        assert_eq!(add_months(datetime!(2026-01-31 00:00 UTC), 0), Some(datetime!(2026-01-31 00:00 UTC)));
        // A time in another offset counts in UTC: 1 Mar 01:00 +08:00 is 28 Feb 17:00 UTC.
        assert_eq!(add_months(datetime!(2026-03-01 01:00 +08:00), 1), Some(datetime!(2026-03-28 17:00 UTC)));
    }
}
