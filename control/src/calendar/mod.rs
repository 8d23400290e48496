//! The official working-day calendar (工作日) that review deadlines are counted on: Monday to
//! Friday are working days, Saturday and Sunday are not, except for the public holidays and the
//! make-up working days (调休上班日) that the State Council announces for each year.
//!
//! A [`Calendar`] knows only the years it was given a file for ([`data`]: one TOML file per
//! year, the shipped ones embedded at build time, more from an operator's directory). It never
//! guesses: counting into a year without a file is [`CalendarError::MissingYear`]. Pure: dates
//! in, dates out; the caller turns a time into a date in China Standard Time ([`china_date`]).
//!
//! Neighbours: [`crate::apply`] computes review deadlines with [`Calendar::add_working_days`]
//! and the time left with [`Calendar::working_days_between`].

pub mod data;

use std::collections::{BTreeMap, BTreeSet};

use time::{Date, OffsetDateTime, Weekday};

pub use data::{CalendarFileError, YearFile};

/// The offset of China Standard Time, in which the regulation's days begin and end.
pub const CHINA_OFFSET: time::UtcOffset = time::macros::offset!(+8);

/// The longest count of working days asked for at once (a guard against a runaway loop).
pub const MAX_WORKING_DAYS: u32 = 366;

/// Why a date computation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The computation reaches a year whose holiday arrangements are not known here.
    #[error(
        "the working-day calendar has no file for {year}; add {year}.toml (public holidays and make-up working days) to the calendar directory"
    )]
    MissingYear { year: i32 },
    #[error("{days} working days is more than the {MAX_WORKING_DAYS} a deadline may span")]
    TooFar { days: u32 },
}

/// Working days of the years it has files for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Year {
    holidays: BTreeSet<Date>,
    make_up_days: BTreeSet<Date>,
}

impl Calendar {
    /// A calendar of the given years; a later file of the same year replaces an earlier one.
    pub fn from_years(files: impl IntoIterator<Item = YearFile>) -> Self {
        let mut calendar = Self::default();
        for file in files {
            calendar.insert(file);
        }
        calendar
    }

    /// Adds (or replaces) one year.
    pub fn insert(&mut self, file: YearFile) {
        let year = Year {
            holidays: file.holidays.iter().map(|d| d.date).collect(),
            make_up_days: file.make_up_working_days.iter().map(|d| d.date).collect(),
        };
        self.years.insert(file.year, year);
    }

    /// The years it has a file for, ascending.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.keys().copied()
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: Date) -> Result<bool, CalendarError> {
        let year = self.years.get(&date.year()).ok_or(CalendarError::MissingYear { year: date.year() })?;
        if year.make_up_days.contains(&date) {
            return Ok(true);
        }
        if year.holidays.contains(&date) {
            return Ok(false);
        }
        Ok(!matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday))
    }

    /// The `n`th working day after `start` (`start` itself is not counted, whether or not it
    /// is a working day): a step due "within `n` working days" of `start` is on time through
    /// the end of that day. `n = 0` is `start`.
    pub fn add_working_days(&self, start: Date, n: u32) -> Result<Date, CalendarError> {
        if n > MAX_WORKING_DAYS {
            return Err(CalendarError::TooFar { days: n });
        }
        let mut date = start;
        let mut left = n;
        while left > 0 {
            date = date.next_day().ok_or(CalendarError::MissingYear { year: start.year() + 1 })?;
            if self.is_working_day(date)? {
                left -= 1;
            }
        }
        Ok(date)
    }

    /// The number of working days `d` with `from < d <= to`: how many working days are left
    /// between today (`from`) and a deadline (`to`). Negative when `to` is before `from` (the
    /// working days by which it is overdue, counting `from` when it is one).
    pub fn working_days_between(&self, from: Date, to: Date) -> Result<i64, CalendarError> {
        let (low, high, sign) = if from <= to { (from, to, 1) } else { (to, from, -1) };
        let mut count = 0i64;
        let mut date = low;
        while date < high {
            date = date.next_day().ok_or(CalendarError::MissingYear { year: high.year() })?;
            if self.is_working_day(date)? {
                count += 1;
            }
        }
        Ok(sign * count)
    }
}

/// The date of `at` in China Standard Time.
pub fn china_date(at: OffsetDateTime) -> Date {
    at.to_offset(CHINA_OFFSET).date()
}

#[cfg(test)]
mod tests;
