//! Bandwidth limits: a weekly timetable in rclone's `--bwlimit` notation ([`Timetable`], pure:
//! the time is passed in) and the shared token bucket that applies one to bytes on the wire
//! ([`RateLimiter`], with [`Priority`] between interactive and bulk transfers).
//!
//! Both ends use them: the `ferry` client and a node's own pulls pace the chunks they fetch
//! (`ferry_client::transfer`), and a node paces the chunks it serves, per peer and node-wide
//! (`ferry-daemon`'s `data::bandwidth`).

mod limiter;
mod timetable;

pub use limiter::{
    BULK_SHARE_OF_INTERACTIVE, BURST, Priority, RECHECK, RateLimiter, ShiftedClock, SystemClock, WallClock,
};
pub use timetable::{DEFAULT_ZONE, Edge, Rate, Timetable, TimetableError, local_time, parse_zone};

/// The zone database's type, so callers need not depend on `chrono-tz` to name a zone.
pub use chrono_tz::Tz;
