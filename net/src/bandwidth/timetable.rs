//! A weekly bandwidth timetable, written as rclone's `--bwlimit` is: `10M` (all the time),
//! `08:00,512k 19:00,off` (every day) or `Mon-08:00,10M Mon-19:00,off Sat-00:00,off` (by weekday;
//! entries without a day stand for all seven). Each entry sets the rate from its time on, until
//! the next entry; the week wraps around, so before the week's first entry the last one's rate
//! holds.
//!
//! Rates are bytes per second as rclone writes them: a number with an optional suffix `B`
//! (bytes), `K`, `M`, `G`, `T` (powers of 1024, any case, `Ki`/`KiB` too), no suffix meaning KiB
//! as in rclone; `off` is unlimited. Pure: the time is passed in, the zone database is compiled
//! in. [`super::RateLimiter`] applies a timetable to a stream of bytes.

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::SystemTime;

/// The zone a timetable is read in when none is named.
pub const DEFAULT_ZONE: Tz = chrono_tz::Asia::Shanghai;

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// A bandwidth: a number of bytes per second, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    Unlimited,
    BytesPerSecond(NonZeroU64),
}

impl Rate {
    /// The bytes per second, `None` when unlimited.
    pub fn bytes_per_second(self) -> Option<u64> {
        match self {
            Self::Unlimited => None,
            Self::BytesPerSecond(n) => Some(n.get()),
        }
    }

    /// A limit of `bytes` per second; `0` is no limit.
    pub fn from_bytes_per_second(bytes: u64) -> Self {
        NonZeroU64::new(bytes).map_or(Self::Unlimited, Self::BytesPerSecond)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("off"),
            Self::BytesPerSecond(n) => write!(f, "{n}B"),
        }
    }
}

impl FromStr for Rate {
    type Err = TimetableError;

    fn from_str(token: &str) -> Result<Self, TimetableError> {
        parse_rate(token)
    }
}

/// Why a timetable (or a rate, or a zone) does not parse; each names the token at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("an empty bandwidth timetable; write `off` for no limit")]
    Empty,
    #[error("bad rate {token:?}: {reason}")]
    Rate { token: String, reason: &'static str },
    #[error("bad time {token:?}: expected HH:MM from 00:00 to 23:59")]
    Time { token: String },
    #[error("bad weekday {token:?}: expected Mon, Tue, Wed, Thu, Fri, Sat or Sun")]
    Day { token: String },
    #[error("bad entry {token:?}: expected [Day-]HH:MM,RATE")]
    Entry { token: String },
    #[error("entry {token:?} repeats a time already set")]
    Repeated { token: String },
    #[error(
        "{token:?} sets upload and download apart (rclone's UP:DOWN); ferry limits each direction by its own key"
    )]
    SplitDirections { token: String },
    #[error("unknown time zone {token:?}: expected an IANA name such as Asia/Shanghai")]
    Zone { token: String },
}

/// One entry: from `minute` of the week (0 = Monday 00:00) on, `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    minute: u32,
    rate: Rate,
}

/// A change of rate: from `at` on, `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub at: SystemTime,
    pub rate: Rate,
}

/// A weekly bandwidth timetable in a time zone (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// Sorted by minute, no two at the same minute, at least one.
    slots: Vec<Slot>,
    zone: Tz,
    text: String,
}

impl FromStr for Timetable {
    type Err = TimetableError;

    fn from_str(text: &str) -> Result<Self, TimetableError> {
        Self::parse(text)
    }
}

impl fmt::Display for Timetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.zone.name())
    }
}

impl Timetable {
    /// Parses `text` in the [`DEFAULT_ZONE`].
    pub fn parse(text: &str) -> Result<Self, TimetableError> {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let slots = match tokens.as_slice() {
            [] => return Err(TimetableError::Empty),
            [single] if !single.contains(',') => vec![Slot { minute: 0, rate: parse_rate(single)? }],
            entries => parse_entries(entries)?,
        };
        Ok(Self { slots, zone: DEFAULT_ZONE, text: tokens.join(" ") })
    }

    /// One rate all the time.
    pub fn constant(rate: Rate) -> Self {
        Self { slots: vec![Slot { minute: 0, rate }], zone: DEFAULT_ZONE, text: rate.to_string() }
    }

    /// The same timetable read in `zone`.
    pub fn in_zone(self, zone: Tz) -> Self {
        Self { zone, ..self }
    }

    /// The zone the timetable is read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Whether the rate never changes.
    pub fn is_constant(&self) -> bool {
        self.slots.iter().all(|s| s.rate == self.slots[0].rate)
    }

    /// Whether no entry limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.slots.iter().all(|s| s.rate == Rate::Unlimited)
    }

    /// The rate in effect at `at`.
    pub fn rate_at(&self, at: SystemTime) -> Rate {
        self.slots[self.index_at(minute_of_week(&self.local(at)))].rate
    }

    /// The next time after `at` when the rate changes, and the rate from then on; `None` when it
    /// never changes.
    pub fn next_edge(&self, at: SystemTime) -> Option<Edge> {
        if self.is_constant() {
            return None;
        }
        let local = self.local(at);
        let now = minute_of_week(&local);
        let current = self.index_at(now);
        let count = self.slots.len();
        // The next slot whose rate differs, within one week.
        let slot = (1..count)
            .map(|step| self.slots[(current + step) % count])
            .find(|s| s.rate != self.slots[current].rate)?;
        // Another slot than the current one: never at this minute, so at least one ahead.
        let minutes = (slot.minute + MINUTES_PER_WEEK - now) % MINUTES_PER_WEEK;
        Some(Edge { at: self.wall_time_after(&local, minutes), rate: slot.rate })
    }

    /// The instant `minutes` local minutes after the start of `local`'s minute; a local time
    /// that does not exist (a daylight-saving gap) moves to the first one after it.
    fn wall_time_after(&self, local: &DateTime<Tz>, minutes: u32) -> SystemTime {
        let start = local.naive_local().with_second(0).and_then(|t| t.with_nanosecond(0));
        let naive = start.unwrap_or(local.naive_local()) + Days::minutes(i64::from(minutes));
        let resolved =
            (0..=2).find_map(|hours| self.zone.from_local_datetime(&(naive + Days::hours(hours))).earliest());
        resolved.map_or_else(|| SystemTime::from(local.to_utc()), SystemTime::from)
    }

    fn local(&self, at: SystemTime) -> DateTime<Tz> {
        DateTime::<chrono::Utc>::from(at).with_timezone(&self.zone)
    }

    /// The slot in effect at minute `now` of the week: the last at or before it, else the
    /// week's last (the week wraps).
    fn index_at(&self, now: u32) -> usize {
        self.slots.partition_point(|s| s.minute <= now).checked_sub(1).unwrap_or(self.slots.len() - 1)
    }
}

/// Minutes since Monday 00:00 of `local`'s week.
fn minute_of_week(local: &DateTime<Tz>) -> u32 {
    local.weekday().num_days_from_monday() * MINUTES_PER_DAY + local.hour() * 60 + local.minute()
}

/// Parses a zone name such as `Asia/Shanghai` or `UTC`.
pub fn parse_zone(token: &str) -> Result<Tz, TimetableError> {
    token.parse().map_err(|_| TimetableError::Zone { token: token.to_owned() })
}

fn parse_entries(entries: &[&str]) -> Result<Vec<Slot>, TimetableError> {
    let mut slots: Vec<Slot> = Vec::new();
    for token in entries {
        let (when, rate) = token.split_once(',').ok_or_else(|| entry_error(token))?;
        let rate = parse_rate(rate)?;
        let (days, time) = match when.split_once('-') {
            Some((day, time)) => (vec![parse_day(day)?], time),
            None => ((0..7).collect(), when),
        };
        let minute = parse_time(time)?;
        for day in days {
            let at = day * MINUTES_PER_DAY + minute;
            if slots.iter().any(|s| s.minute == at) {
                return Err(TimetableError::Repeated { token: (*token).to_owned() });
            }
            slots.push(Slot { minute: at, rate });
        }
    }
    slots.sort_by_key(|s| s.minute);
    Ok(slots)
}

fn entry_error(token: &str) -> TimetableError {
    TimetableError::Entry { token: token.to_owned() }
}

/// `Mon` .. `Sun` (or the full English name, any case) as days from Monday.
fn parse_day(token: &str) -> Result<u32, TimetableError> {
    const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let lower = token.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| lower.len() >= 3 && d.starts_with(&lower))
        .map(|d| d as u32)
        .ok_or_else(|| TimetableError::Day { token: token.to_owned() })
}

/// `HH:MM` as minutes since midnight.
fn parse_time(token: &str) -> Result<u32, TimetableError> {
    let bad = || TimetableError::Time { token: token.to_owned() };
    let (h, m) = token.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let time = NaiveTime::from_hms_opt(h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, 0);
    time.map(|t| t.hour() * 60 + t.minute()).ok_or_else(bad)
}

/// A rate as rclone writes it (see the module doc).
fn parse_rate(token: &str) -> Result<Rate, TimetableError> {
    let bad = |reason| TimetableError::Rate { token: token.to_owned(), reason };
    if token.eq_ignore_ascii_case("off") {
        return Ok(Rate::Unlimited);
    }
    if token.contains(':') {
        return Err(TimetableError::SplitDirections { token: token.to_owned() });
    }
    let split = token.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(token.len());
    let (number, suffix) = token.split_at(split);
    let unit: u64 = match suffix.to_ascii_lowercase().as_str() {
        "b" => 1,
        "" | "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        _ => return Err(bad("expected a number with B, K, M, G or T, or off")),
    };
    let value: f64 = number.parse().map_err(|_| bad("expected a number with B, K, M, G or T, or off"))?;
    let bytes = value * unit as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    NonZeroU64::new(bytes.round() as u64)
        .map(Rate::BytesPerSecond)
        .ok_or_else(|| bad("a rate of zero would stop every transfer; write off for no limit"))
}

/// The instant of `date` at `hour:minute` in `zone` (for tests and callers that think in local
/// wall time).
pub fn local_time(zone: Tz, date: NaiveDate, hour: u32, minute: u32) -> Option<SystemTime> {
    let naive = date.and_hms_opt(hour, minute, 0)?;
    zone.from_local_datetime(&naive).earliest().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(n: u64) -> Rate {
        Rate::from_bytes_per_second(n << 20)
    }

    /// 2026-12-07 is a Monday.
    fn shanghai(day: u32, hour: u32, minute: u32) -> SystemTime {
        let date = NaiveDate::from_ymd_opt(2026, 12, 7 + day).unwrap();
        local_time(DEFAULT_ZONE, date, hour, minute).unwrap()
    }

    #[test]
    fn rates_are_read_as_rclone_writes_them() {
        for (text, bytes) in [
            ("10M", 10 << 20),
            ("512k", 512 << 10),
            ("512", 512 << 10),
            ("1.5G", 3 << 29),
            ("100B", 100),
            ("2MiB", 2 << 20),
            ("4Mi", 4 << 20),
        ] {
            assert_eq!(parse_rate(text).unwrap(), Rate::from_bytes_per_second(bytes), "{text}");
        }
        assert_eq!(parse_rate("off").unwrap(), Rate::Unlimited);
        assert_eq!(parse_rate("OFF").unwrap(), Rate::Unlimited);
    }

    #[test]
    fn a_bad_rate_names_its_token() {
        for bad in ["10X", "M", "1.2.3M", "-5M", "0", "0k", "ten"] {
            let err = parse_rate(bad).unwrap_err();
            assert!(matches!(&err, TimetableError::Rate { token, .. } if token == bad), "{bad}: {err}");
            assert!(err.to_string().contains(bad));
        }
        assert!(matches!(parse_rate("10M:1M"), Err(TimetableError::SplitDirections { .. })));
        assert!(matches!(parse_rate("99999999999T"), Err(TimetableError::Rate { reason: "too large", .. })));
    }

    #[test]
    fn a_plain_rate_holds_all_the_time() {
        let t = Timetable::parse("10M").unwrap();
        assert!(t.is_constant());
        assert_eq!(t.rate_at(shanghai(3, 12, 0)), mib(10));
        assert_eq!(t.next_edge(shanghai(3, 12, 0)), None);
        assert!(Timetable::parse("off").unwrap().is_unlimited());
    }

    #[test]
    fn daily_entries_apply_every_day_and_wrap_past_midnight() {
        let t = Timetable::parse("08:00,512k 19:00,off").unwrap();
        let k512 = Rate::from_bytes_per_second(512 << 10);
        assert_eq!(t.rate_at(shanghai(2, 8, 0)), k512);
        assert_eq!(t.rate_at(shanghai(6, 18, 59)), k512);
        assert_eq!(t.rate_at(shanghai(4, 19, 0)), Rate::Unlimited);
        assert_eq!(t.rate_at(shanghai(0, 3, 0)), Rate::Unlimited, "before Monday 08:00: Sunday's 19:00");
        let edge = t.next_edge(shanghai(1, 7, 59)).unwrap();
        assert_eq!(edge, Edge { at: shanghai(1, 8, 0), rate: k512 });
        let edge = t.next_edge(shanghai(6, 20, 0)).unwrap();
        assert_eq!(edge.at, shanghai(7, 8, 0), "Sunday evening: next Monday morning");
    }

    #[test]
    fn weekday_entries_hold_until_the_next_entry_of_the_week() {
        let t = Timetable::parse("Mon-08:00,10M Mon-19:00,off Fri-08:00,1M sat-00:00,off").unwrap();
        assert_eq!(t.rate_at(shanghai(0, 9, 0)), mib(10));
        assert_eq!(t.rate_at(shanghai(2, 9, 0)), Rate::Unlimited, "Wednesday: Monday 19:00's off");
        assert_eq!(t.rate_at(shanghai(4, 23, 59)), mib(1));
        assert_eq!(t.rate_at(shanghai(6, 12, 0)), Rate::Unlimited);
        let edge = t.next_edge(shanghai(1, 12, 0)).unwrap();
        assert_eq!(edge, Edge { at: shanghai(4, 8, 0), rate: mib(1) });
        // Seconds into the minute of an edge: the edge has passed.
        let just_after = shanghai(0, 8, 0) + std::time::Duration::from_secs(30);
        assert_eq!(t.rate_at(just_after), mib(10));
        assert_eq!(t.next_edge(just_after).unwrap().at, shanghai(0, 19, 0));
    }

    #[test]
    fn daily_and_weekday_entries_mix_and_equal_neighbours_are_no_edge() {
        let t = Timetable::parse("08:00,4M Sun-09:00,off 19:00,off").unwrap();
        assert_eq!(t.rate_at(shanghai(6, 8, 30)), mib(4));
        assert_eq!(t.rate_at(shanghai(6, 9, 30)), Rate::Unlimited);
        assert_eq!(t.rate_at(shanghai(5, 9, 30)), mib(4));
        // Sunday 09:00 (off) -> Sunday 19:00 (off): the next change is Monday 08:00.
        assert_eq!(t.next_edge(shanghai(6, 9, 30)).unwrap().at, shanghai(7, 8, 0));
        let t = Timetable::parse("Mon-08:00,4M Mon-12:00,4M Mon-19:00,off").unwrap();
        assert_eq!(t.next_edge(shanghai(0, 9, 0)).unwrap().at, shanghai(0, 19, 0));
    }

    type IsKind = fn(&TimetableError) -> bool;

    #[test]
    fn bad_entries_name_their_token() {
        let cases: [(&str, IsKind, &str); 6] = [
            ("08:00,1M 25:00,off", |e| matches!(e, TimetableError::Time { .. }), "25:00"),
            ("Mun-08:00,1M", |e| matches!(e, TimetableError::Day { .. }), "Mun"),
            ("08:00 1M", |e| matches!(e, TimetableError::Entry { .. }), "08:00"),
            ("08:00,1M 08:00,2M", |e| matches!(e, TimetableError::Repeated { .. }), "08:00,2M"),
            ("08:00,1M Mon-08:00,off", |e| matches!(e, TimetableError::Repeated { .. }), "Mon-08:00,off"),
            ("8:0,1M", |e| matches!(e, TimetableError::Time { .. }), "8:0"),
        ];
        for (text, kind, token) in cases {
            let err = Timetable::parse(text).unwrap_err();
            assert!(kind(&err), "{text}: {err:?}");
            assert!(err.to_string().contains(token), "{text}: {err}");
        }
        assert_eq!(Timetable::parse("  "), Err(TimetableError::Empty));
        assert!(matches!(parse_zone("Mars/Olympus"), Err(TimetableError::Zone { .. })));
    }

    #[test]
    fn the_zone_is_explicit() {
        let t = Timetable::parse("08:00,1M 19:00,off").unwrap().in_zone(parse_zone("UTC").unwrap());
        // 08:30 in Shanghai is 00:30 UTC: off in a UTC timetable, limited in a Shanghai one.
        assert_eq!(t.rate_at(shanghai(1, 8, 30)), Rate::Unlimited);
        assert_eq!(Timetable::parse("08:00,1M 19:00,off").unwrap().rate_at(shanghai(1, 8, 30)), mib(1));
        assert_eq!(t.to_string(), "08:00,1M 19:00,off (UTC)");
    }

    #[test]
    fn a_daylight_saving_gap_moves_the_edge_to_the_first_time_that_exists() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let t = Timetable::parse("02:30,1M 05:00,off").unwrap().in_zone(berlin);
        // 2026-03-29 has no 02:30 in Berlin (clocks go from 02:00 to 03:00).
        let before = local_time(berlin, NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), 1, 0).unwrap();
        let edge = t.next_edge(before).unwrap();
        let expected = local_time(berlin, NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), 3, 30).unwrap();
        assert_eq!(edge.at, expected);
    }
}
