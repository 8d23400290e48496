//! The calendar's data files: one TOML file per year, `<year>.toml`, listing that year's
//! public holidays and make-up working days, each a date with the holiday's name:
//!
//! ```toml
//! year = 2026
//! holidays = [ { date = 2026-10-01, name = "National Day" }, ... ]
//! make-up-working-days = [ { date = 2026-10-10, name = "National Day" } ]
//! ```
//!
//! The years shipped in `deploy/calendar/` are embedded at build time ([`Calendar::shipped`]);
//! an operator adds a year (or corrects one) by putting its file in the calendar directory
//! ([`Calendar::shipped_and_dir`]). A file is checked before it is used: its dates lie in its
//! year, no date is both a holiday and a make-up day, and its name matches its `year`.
//! Neighbours: [`super::Calendar`] counts on what this reads.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::Date;

use super::Calendar;

/// The files shipped with this build, as (name, text).
const SHIPPED: [(&str, &str); 2] = [
    ("2025.toml", include_str!("../../../deploy/calendar/2025.toml")),
    ("2026.toml", include_str!("../../../deploy/calendar/2026.toml")),
];

/// Largest calendar file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// One year's file, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YearFile {
    pub year: i32,
    pub holidays: Vec<NamedDate>,
    pub make_up_working_days: Vec<NamedDate>,
}

/// A date and the holiday it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDate {
    pub date: Date,
    pub name: String,
}

/// Why a calendar file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CalendarFileError {
    #[error("calendar file {file}: {detail}")]
    Invalid { file: String, detail: String },
    #[error("calendar directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    year: i32,
    #[serde(default)]
    holidays: Vec<RawDate>,
    #[serde(default)]
    make_up_working_days: Vec<RawDate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDate {
    date: toml::value::Datetime,
    name: String,
}

impl YearFile {
    /// Parses and checks the text of `file` (its name, `<year>.toml`, for messages and the
    /// year check).
    pub fn parse(file: &str, text: &str) -> Result<Self, CalendarFileError> {
        let invalid = |detail: String| CalendarFileError::Invalid { file: file.to_owned(), detail };
        let raw: RawFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        if file.strip_suffix(".toml").is_some_and(|stem| stem != raw.year.to_string()) {
            return Err(invalid(format!("the file of year {} must be named {}.toml", raw.year, raw.year)));
        }
        let dates = |list: Vec<RawDate>| -> Result<Vec<NamedDate>, CalendarFileError> {
            list.into_iter()
                .map(|d| {
                    let date = local_date(&d.date)
                        .ok_or_else(|| invalid(format!("{} is not a plain date", d.date)))?;
                    if date.year() != raw.year {
                        return Err(invalid(format!("{date} is not in {}", raw.year)));
                    }
                    Ok(NamedDate { date, name: d.name })
                })
                .collect()
        };
        let holidays = dates(raw.holidays)?;
        let make_up_working_days = dates(raw.make_up_working_days)?;
        if let Some(both) = holidays.iter().find(|h| make_up_working_days.iter().any(|m| m.date == h.date)) {
            return Err(invalid(format!("{} is both a holiday and a make-up working day", both.date)));
        }
        Ok(Self { year: raw.year, holidays, make_up_working_days })
    }
}

fn local_date(value: &toml::value::Datetime) -> Option<Date> {
    if value.time.is_some() || value.offset.is_some() {
        return None;
    }
    let date = value.date?;
    let month = time::Month::try_from(date.month).ok()?;
    Date::from_calendar_date(i32::from(date.year), month, date.day).ok()
}

impl Calendar {
    /// The years shipped with this build.
    pub fn shipped() -> Result<Self, CalendarFileError> {
        let files: Result<Vec<YearFile>, _> =
            SHIPPED.iter().map(|(name, text)| YearFile::parse(name, text)).collect();
        Ok(Self::from_years(files?))
    }

    /// The shipped years plus every `<year>.toml` of `dir` (a year in `dir` replaces the
    /// shipped one). Any unreadable or invalid file refuses the whole directory.
    pub fn shipped_and_dir(dir: &Path) -> Result<Self, CalendarFileError> {
        let mut calendar = Self::shipped()?;
        let io = |source| CalendarFileError::Io { path: dir.to_owned(), source };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        paths.sort();
        for path in paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let io = |source| CalendarFileError::Io { path: path.clone(), source };
            let size = std::fs::metadata(&path).map_err(io)?.len();
            if size > MAX_FILE_BYTES {
                return Err(CalendarFileError::Invalid {
                    file: name,
                    detail: format!("{size} bytes; the limit is {MAX_FILE_BYTES}"),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(io)?;
            calendar.insert(YearFile::parse(&name, &text)?);
        }
        Ok(calendar)
    }
}
