//! The deadline edges of the shipped 2025 and 2026 calendars, and the checks on a year's file.

use super::*;
use time::macros::date;

fn shipped() -> Calendar {
    Calendar::shipped().expect("shipped calendar files parse")
}

#[test]
fn the_first_review_of_the_day_before_spring_festival_counts_the_make_up_saturday() {
    let calendar = shipped();
    // Fri 13 Feb 2026; Sat 14 Feb is a make-up working day; 15-23 Feb are the holiday.
    assert_eq!(calendar.add_working_days(date!(2026 - 02 - 13), 1), Ok(date!(2026 - 02 - 14)));
    assert_eq!(calendar.add_working_days(date!(2026 - 02 - 13), 3), Ok(date!(2026 - 02 - 25)));
    // The provider's 7 days from Wed 25 Feb include the make-up Saturday 28 Feb.
    assert_eq!(calendar.add_working_days(date!(2026 - 02 - 25), 7), Ok(date!(2026 - 03 - 05)));
    assert_eq!(calendar.working_days_between(date!(2026 - 02 - 13), date!(2026 - 02 - 25)), Ok(3));
    assert_eq!(calendar.working_days_between(date!(2026 - 02 - 25), date!(2026 - 02 - 13)), Ok(-3));
    for rest in [date!(2026 - 02 - 16), date!(2026 - 02 - 23), date!(2026 - 03 - 01)] {
        assert_eq!(calendar.is_working_day(rest), Ok(false), "{rest}");
    }
}

#[test]
fn national_day_2026_and_its_make_up_days() {
    let calendar = shipped();
    // Wed 30 Sep: 1-7 Oct are the holiday, Sat 10 Oct is a make-up working day.
    assert_eq!(calendar.add_working_days(date!(2026 - 09 - 30), 3), Ok(date!(2026 - 10 - 10)));
    // Fri 18 Sep: Sun 20 Sep is a make-up working day.
    assert_eq!(calendar.add_working_days(date!(2026 - 09 - 18), 1), Ok(date!(2026 - 09 - 20)));
    // Mid-autumn (Fri 25 Sep) is a day of rest.
    assert_eq!(calendar.add_working_days(date!(2026 - 09 - 24), 1), Ok(date!(2026 - 09 - 28)));
}

#[test]
fn a_start_on_a_holiday_counts_from_the_next_working_day() {
    let calendar = shipped();
    assert_eq!(calendar.add_working_days(date!(2026 - 10 - 03), 1), Ok(date!(2026 - 10 - 08)));
    assert_eq!(calendar.add_working_days(date!(2026 - 10 - 03), 0), Ok(date!(2026 - 10 - 03)));
    // New Year 2026: 1-3 Jan rest, Sun 4 Jan a make-up working day, across the year end.
    assert_eq!(calendar.add_working_days(date!(2025 - 12 - 31), 1), Ok(date!(2026 - 01 - 04)));
}

#[test]
fn a_deadline_into_a_year_without_a_file_is_refused() {
    let calendar = shipped();
    assert_eq!(calendar.add_working_days(date!(2026 - 12 - 29), 2), Ok(date!(2026 - 12 - 31)));
    assert_eq!(
        calendar.add_working_days(date!(2026 - 12 - 30), 3),
        Err(CalendarError::MissingYear { year: 2027 })
    );
    assert_eq!(
        calendar.working_days_between(date!(2026 - 12 - 30), date!(2027 - 01 - 04)),
        Err(CalendarError::MissingYear { year: 2027 })
    );
    assert_eq!(
        calendar.is_working_day(date!(2024 - 06 - 03)),
        Err(CalendarError::MissingYear { year: 2024 })
    );
    assert_eq!(
        calendar.add_working_days(date!(2026 - 01 - 05), 400),
        Err(CalendarError::TooFar { days: 400 })
    );
}

#[test]
fn an_operator_adds_a_year_by_adding_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("2027.toml"),
        "year = 2027\nholidays = [{ date = 2027-01-01, name = \"New Year's Day\" }]\n",
    )
    .expect("write");
    let calendar = Calendar::shipped_and_dir(dir.path()).expect("calendar");
    assert_eq!(calendar.years().collect::<Vec<_>>(), [2025, 2026, 2027]);
    assert_eq!(calendar.add_working_days(date!(2026 - 12 - 30), 3), Ok(date!(2027 - 01 - 05)));
}

#[test]
fn a_bad_year_file_is_refused_with_its_name() {
    for (name, text, needle) in [
        ("2027.toml", "year = 2027\nholidays = [{ date = 2026-10-01, name = \"x\" }]", "not in 2027"),
        ("2028.toml", "year = 2027\n", "must be named 2027.toml"),
        (
            "2027.toml",
            "year = 2027\nholidays = [{ date = 2027-10-09, name = \"x\" }]\nmake-up-working-days = [{ date = 2027-10-09, name = \"x\" }]",
            "both",
        ),
        ("2027.toml", "year = 2027\nholidays = [{ date = 2027-10-09T08:00:00, name = \"x\" }]", "plain date"),
        ("2027.toml", "year = 2027\nholiday = []", "unknown field"),
    ] {
        let error = YearFile::parse(name, text).expect_err(name).to_string();
        assert!(error.contains(name) && error.contains(needle), "{error}");
    }
}
