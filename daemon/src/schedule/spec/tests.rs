//! Parsing of job definitions (bad input named by field), the next run in a time zone, the
//! decision after downtime, backoff and jitter.

use super::*;

fn definition(cron: &str) -> ScheduleDefinition {
    ScheduleDefinition {
        name: "nightly".into(),
        dataset: "vehicle-registry".into(),
        from: "ministry".into(),
        into: "/srv/ferry/in".into(),
        cron: cron.into(),
        time_zone: None,
        jitter: None,
        deadline: None,
        retries: None,
        backoff: None,
        catch_up: None,
        enabled: None,
        priority: None,
    }
}

fn parse(d: &ScheduleDefinition) -> Result<ScheduleSpec, SpecError> {
    ScheduleSpec::parse(d, |peer| peer == "ministry", None)
}

/// `YYYY-MM-DDTHH:MM:SSZ` as a `SystemTime`.
fn utc(text: &str) -> SystemTime {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc).into()
}

#[test]
fn a_definition_gets_the_documented_defaults() {
    let spec = parse(&definition("0 3 * * *")).unwrap();
    assert_eq!(spec.time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!((spec.deadline, spec.retries, spec.backoff), (DEFAULT_DEADLINE, 3, DEFAULT_BACKOFF));
    assert_eq!(spec.jitter, Duration::ZERO);
    assert!(spec.catch_up && spec.enabled);
    assert_eq!(spec.into, Target::Directory("/srv/ferry/in".into()));
    let mut store = definition("0 3 * * *");
    store.into = "store".into();
    assert_eq!(parse(&store).unwrap().into, Target::Store);
}

/// A change to a good definition, the field refused and words of the reason.
type BadCase = (Box<dyn Fn(&mut ScheduleDefinition)>, &'static str, &'static str);

#[test]
fn bad_input_names_the_field_and_why() {
    let cases: Vec<BadCase> = vec![
        (Box::new(|d| d.cron = "61 * * * *".into()), "cron", "61"),
        (Box::new(|d| d.cron = "every night".into()), "cron", "2 fields"),
        (Box::new(|d| d.cron = "* * *".into()), "cron", "five"),
        (Box::new(|d| d.cron = "0 0 * * MONDAY".into()), "cron", "not a cron expression"),
        (Box::new(|d| d.cron = "0 0 30 2 *".into()), "cron", "never fires"),
        (Box::new(|d| d.time_zone = Some("Mars/Olympus".into())), "time-zone", "Mars/Olympus"),
        (Box::new(|d| d.from = "hub".into()), "from", "not a peer"),
        (Box::new(|d| d.into = "relative/dir".into()), "into", "absolute"),
        (Box::new(|d| d.jitter = Some("soon".into())), "jitter", "not a duration"),
        (Box::new(|d| d.deadline = Some("0s".into())), "deadline", "longer than zero"),
        (Box::new(|d| d.name = "two words".into()), "name", "letters"),
        (Box::new(|d| d.dataset = "Vehicles!".into()), "dataset", ""),
        (Box::new(|d| d.retries = Some(1000)), "retries", "100"),
        (Box::new(|d| d.priority = Some("urgent".into())), "priority", "\"urgent\" is not a priority"),
    ];
    for (change, field, says) in cases {
        let mut d = definition("0 3 * * *");
        change(&mut d);
        let err = parse(&d).unwrap_err();
        assert_eq!(err.field, field, "{d:?}: {err}");
        assert!(err.to_string().contains(says), "{d:?}: {err}");
        assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
    }
}

#[test]
fn a_relative_directory_in_the_config_is_resolved_against_its_directory() {
    let mut d = definition("0 3 * * *");
    d.into = "downloads".into();
    let spec = ScheduleSpec::parse(&d, |_| true, Some(Path::new("/etc/ferry"))).unwrap();
    assert_eq!(spec.into, Target::Directory("/etc/ferry/downloads".into()));
}

#[test]
fn the_next_run_is_computed_in_the_jobs_time_zone_across_days() {
    // 03:00 in Shanghai (UTC+8, no daylight saving) is 19:00 UTC the day before.
    let spec = parse(&definition("0 3 * * *")).unwrap();
    assert_eq!(spec.next_after(utc("2026-12-06T18:00:00Z")), Some(utc("2026-12-06T19:00:00Z")));
    // Exactly at a run, the next is the following day's; across a month and a year's end too.
    assert_eq!(spec.next_after(utc("2026-12-06T19:00:00Z")), Some(utc("2026-12-07T19:00:00Z")));
    assert_eq!(spec.next_after(utc("2026-12-31T20:00:00Z")), Some(utc("2027-01-01T19:00:00Z")));
    // The same cron in UTC fires eight hours later.
    let mut d = definition("0 3 * * *");
    d.time_zone = Some("UTC".into());
    let spec = parse(&d).unwrap();
    assert_eq!(spec.next_after(utc("2026-12-06T18:00:00Z")), Some(utc("2026-12-07T03:00:00Z")));
    // Weekdays are the zone's: Monday 01:30 in Shanghai is Sunday 17:30 UTC.
    let spec = parse(&definition("30 1 * * MON")).unwrap();
    assert_eq!(spec.next_after(utc("2026-12-06T00:00:00Z")), Some(utc("2026-12-06T17:30:00Z")));
    // Six fields: seconds first.
    let spec = parse(&definition("*/10 * * * * *")).unwrap();
    assert_eq!(spec.next_after(utc("2026-12-06T00:00:03Z")), Some(utc("2026-12-06T00:00:10Z")));
}

#[test]
fn after_downtime_a_missed_run_is_caught_up_once_when_configured() {
    let spec = parse(&definition("0 3 * * *")).unwrap();
    let planned = utc("2026-12-06T19:00:00Z");
    // Down from before the planned run until two days later: three runs missed, one catch-up.
    let now = utc("2026-12-08T20:00:00Z");
    let resumed = resume(&spec, Some(planned), now);
    assert_eq!(resumed, Resume { missed: 3, run_now: true, next: Some(utc("2026-12-09T19:00:00Z")) });
    // Back before the planned run: nothing missed.
    let early = resume(&spec, Some(planned), utc("2026-12-06T18:59:59Z"));
    assert_eq!(early, Resume { missed: 0, run_now: false, next: Some(planned) });
    // A job never planned before (new) misses nothing.
    assert_eq!(resume(&spec, None, now).missed, 0);

    let mut d = definition("0 3 * * *");
    d.catch_up = Some(false);
    let no_catch_up = resume(&parse(&d).unwrap(), Some(planned), now);
    assert_eq!((no_catch_up.missed, no_catch_up.run_now), (3, false), "counted, not run");
    d.enabled = Some(false);
    assert_eq!(
        resume(&parse(&d).unwrap(), Some(planned), now),
        Resume { missed: 0, run_now: false, next: None }
    );
}

#[test]
fn missed_runs_of_a_frequent_cron_are_counted_up_to_a_bound() {
    let spec = parse(&definition("* * * * * *")).unwrap();
    let from = utc("2026-12-06T00:00:00Z");
    assert_eq!(spec.occurrences_between(from, utc("2026-12-06T00:00:09Z")), 10);
    assert_eq!(spec.occurrences_between(from, utc("2026-12-20T00:00:00Z")), MAX_MISSED_COUNTED);
}

#[test]
fn backoff_doubles_from_the_first_retry_up_to_its_cap() {
    let base = Duration::from_secs(30);
    let waits: Vec<u64> = (2..=5).map(|a| backoff_before(base, a).as_secs()).collect();
    assert_eq!(waits, [30, 60, 120, 240]);
    assert_eq!(backoff_before(base, 40), MAX_BACKOFF);
}

#[test]
fn jitter_is_spread_below_its_bound_and_stable_for_one_run() {
    let mut d = definition("0 3 * * *");
    let due = utc("2026-12-06T19:00:00Z");
    assert_eq!(parse(&d).unwrap().jitter_for("gd", due), Duration::ZERO);
    d.jitter = Some("10m".into());
    let spec = parse(&d).unwrap();
    let waits: Vec<Duration> = ["gd", "zj", "sc", "hb"].iter().map(|n| spec.jitter_for(n, due)).collect();
    assert!(waits.iter().all(|w| *w < Duration::from_secs(600)), "{waits:?}");
    assert_eq!(spec.jitter_for("gd", due), waits[0], "the same run waits the same");
    assert!(waits.windows(2).any(|w| w[0] != w[1]), "nodes are spread: {waits:?}");
}
