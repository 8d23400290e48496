//! A token bucket that follows a [`Timetable`]: callers ask for room for a number of bytes before
//! they send or fetch them, and wait while the bucket is in debt. One limiter is shared by every
//! stream it bounds (all streams of a pull; all answers to one peer; all answers of a node).
//!
//! The rate is looked up on the wall clock ([`WallClock`], injectable) and kept until the
//! timetable's next edge, so a limiter changes its rate at the edge without anyone restarting
//! it; a waiter sleeps at most [`RECHECK`] at a time, so it sees the change within that.
//!
//! Room is granted when the bucket owes nothing, and the whole request is then taken, possibly
//! into debt: a chunk larger than the bucket still goes, and the next waits for the debt to be
//! repaid, so the average rate is the limit. The bucket keeps at most [`BURST`] of unused rate.
//!
//! Priorities, best first: [`Priority::Interactive`], then [`Priority::Bulk`] of class `high`,
//! `normal`, `low` ([`JobPriority`]). While a request of a better class waits, requests of worse
//! classes wait behind it, except that each worse class waiting is owed one byte for every
//! [`BULK_SHARE_OF_INTERACTIVE`] bytes the best waiting class takes meanwhile, so it keeps
//! moving at about a tenth of the limit (no class starves).

use super::timetable::{Rate, Timetable};
use ferry_proto::JobPriority;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The longest a waiter sleeps before it looks at the rate and the queue again.
pub const RECHECK: Duration = Duration::from_millis(100);

/// Unused rate the bucket keeps, in time at the current rate.
pub const BURST: Duration = Duration::from_millis(50);

/// Bytes the best waiting class takes for each byte owed to each worse class waiting behind it.
pub const BULK_SHARE_OF_INTERACTIVE: f64 = 9.0;

/// Most bytes bulk may be owed: a few chunks, so a long interactive pull cannot build up a
/// large allowance that bulk then spends all at once.
const MOST_OWED_TO_BULK: f64 = (16u64 << 20) as f64;

/// Where a limiter reads the time of day its timetable is evaluated at.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system's clock moved by a fixed offset: a timetable can be tried against a chosen time
/// of day (a test puts an edge a few seconds ahead).
#[derive(Debug, Clone, Copy)]
pub struct ShiftedClock {
    /// The clock reads this instant when the system's reads `base`.
    reads: SystemTime,
    base: SystemTime,
}

impl ShiftedClock {
    /// A clock that reads `now` at the moment of the call and runs on from there.
    pub fn reading(now: SystemTime) -> Self {
        Self { reads: now, base: SystemTime::now() }
    }
}

impl WallClock for ShiftedClock {
    fn now(&self) -> SystemTime {
        let elapsed = SystemTime::now().duration_since(self.base).unwrap_or_default();
        self.reads + elapsed
    }
}

/// How urgently a transfer's bytes are wanted (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// An operator waiting at a terminal.
    Interactive,
    /// Replication, subscriptions, scheduled downloads, in their job's class.
    Bulk(JobPriority),
}

impl Priority {
    /// Bulk of class `normal`: what a node's transfers are unless their job says otherwise.
    pub const BULK: Self = Self::Bulk(JobPriority::Normal);

    /// The class's rank, best first: 0 for interactive, 1 to 3 for bulk high, normal, low.
    pub fn rank(self) -> usize {
        match self {
            Self::Interactive => 0,
            Self::Bulk(JobPriority::High) => 1,
            Self::Bulk(JobPriority::Normal) => 2,
            Self::Bulk(JobPriority::Low) => 3,
        }
    }

    /// The class a read declares to the serving node (`GetChunks.priority`): a bulk class other
    /// than `normal`. `None` otherwise: the serving node's role rule gives the same, and a node
    /// of an older version is sent the frame it knows.
    pub fn declared(self) -> Option<JobPriority> {
        match self {
            Self::Bulk(class) if class != JobPriority::Normal => Some(class),
            _ => None,
        }
    }
}

/// Number of [`Priority`] classes.
const CLASSES: usize = 4;

/// A bandwidth limit shared by several streams (see the module doc).
#[derive(Debug)]
pub struct RateLimiter {
    timetable: Timetable,
    clock: Arc<dyn WallClock>,
    bucket: Mutex<Bucket>,
    delayed: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative while the bucket is in debt.
    tokens: f64,
    refilled: Instant,
    rate: Rate,
    /// When `rate` is next looked up again: the timetable's next edge.
    until: Option<SystemTime>,
    /// Wall time of the last look-up, to notice a clock set back.
    looked_up: SystemTime,
    /// Requests waiting, by class rank.
    waiting: [usize; CLASSES],
    /// Bytes each class may take ahead of waiting requests of better classes.
    owed: [f64; CLASSES],
}

impl RateLimiter {
    /// A limiter following `timetable` on the system clock.
    pub fn new(timetable: Timetable) -> Self {
        Self::with_clock(timetable, Arc::new(SystemClock))
    }

    /// A limiter following `timetable` on `clock`.
    pub fn with_clock(timetable: Timetable, clock: Arc<dyn WallClock>) -> Self {
        let bucket = Bucket {
            tokens: 0.0,
            refilled: Instant::now(),
            rate: Rate::Unlimited,
            until: None,
            looked_up: SystemTime::UNIX_EPOCH,
            waiting: [0; CLASSES],
            owed: [0.0; CLASSES],
        };
        let limiter = Self { timetable, clock, bucket: Mutex::new(bucket), delayed: AtomicU64::new(0) };
        limiter.look_up(&mut limiter.lock(), Instant::now());
        limiter
    }

    /// A fixed limit of `bytes` per second.
    pub fn fixed(bytes_per_second: u64) -> Self {
        Self::new(Timetable::constant(Rate::from_bytes_per_second(bytes_per_second)))
    }

    pub fn timetable(&self) -> &Timetable {
        &self.timetable
    }

    /// The rate in effect now.
    pub fn current_rate(&self) -> Rate {
        let mut bucket = self.lock();
        self.look_up(&mut bucket, Instant::now());
        bucket.rate
    }

    /// Bytes whose room had to be waited for, since the limiter was made.
    pub fn delayed_bytes(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` may go at `priority`, and counts them as gone.
    pub async fn acquire(&self, bytes: u64, priority: Priority) {
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let wait = match self.try_take(bytes as f64, priority) {
                Ok(()) => break,
                Err(wait) => wait,
            };
            if waiting.is_none() {
                waiting = Some(Waiting::new(self, priority));
            }
            tokio::time::sleep(wait.clamp(Duration::from_millis(1), RECHECK)).await;
        }
        if waiting.is_some() {
            self.delayed.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Takes `bytes` if the bucket owes nothing and no request of a better class goes first;
    /// else the time to wait before trying again.
    fn try_take(&self, bytes: f64, priority: Priority) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.lock();
        self.look_up(&mut b, now);
        let Some(rate) = b.rate.bytes_per_second().map(|r| r as f64) else { return Ok(()) };
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate * BURST.as_secs_f64());
        b.refilled = now;
        let rank = priority.rank();
        let behind = b.waiting[..rank].iter().any(|&w| w > 0);
        if behind && b.owed[rank] < bytes {
            return Err(Duration::from_secs_f64(bytes / rate));
        }
        if b.tokens < 0.0 {
            return Err(Duration::from_secs_f64(-b.tokens / rate));
        }
        b.tokens -= bytes;
        if behind {
            b.owed[rank] -= bytes;
        } else {
            // The best class waiting takes: every worse class waiting is owed its share.
            for worse in rank + 1..CLASSES {
                if b.waiting[worse] > 0 {
                    b.owed[worse] =
                        (b.owed[worse] + bytes / BULK_SHARE_OF_INTERACTIVE).min(MOST_OWED_TO_BULK);
                }
            }
        }
        Ok(())
    }

    /// Looks the rate up again when the timetable's edge has come (or the clock went back).
    fn look_up(&self, b: &mut Bucket, now: Instant) {
        let wall = self.clock.now();
        if b.looked_up != SystemTime::UNIX_EPOCH
            && b.until.is_none_or(|edge| wall < edge)
            && wall >= b.looked_up
        {
            b.looked_up = wall;
            return;
        }
        let rate = self.timetable.rate_at(wall);
        if rate != b.rate {
            // A new limit starts with an empty bucket and no debt of the old one.
            b.tokens = 0.0;
            b.refilled = now;
            tracing::debug!(timetable = %self.timetable, %rate, "bandwidth limit changes");
        }
        b.rate = rate;
        b.until = self.timetable.next_edge(wall).map(|e| e.at);
        b.looked_up = wall;
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // Every change under the lock is arithmetic; a panic cannot tear it.
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a request among the waiting while it waits.
struct Waiting<'a> {
    limiter: &'a RateLimiter,
    priority: Priority,
}

impl<'a> Waiting<'a> {
    fn new(limiter: &'a RateLimiter, priority: Priority) -> Self {
        limiter.lock().waiting[priority.rank()] += 1;
        Self { limiter, priority }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut b = self.limiter.lock();
        let rank = self.priority.rank();
        b.waiting[rank] = b.waiting[rank].saturating_sub(1);
        if b.waiting[rank] == 0 {
            b.owed[rank] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bandwidth::timetable::{DEFAULT_ZONE, local_time};
    use chrono::NaiveDate;

    /// A wall clock the test sets.
    #[derive(Debug)]
    struct Manual(Mutex<SystemTime>);

    impl WallClock for Manual {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    fn monday(hour: u32, minute: u32) -> SystemTime {
        local_time(DEFAULT_ZONE, NaiveDate::from_ymd_opt(2026, 12, 7).unwrap(), hour, minute).unwrap()
    }

    /// Bytes `limiter` lets through in `span` of (paused) time, asking `chunk` bytes at a time.
    async fn through(limiter: &RateLimiter, chunk: u64, span: Duration, priority: Priority) -> u64 {
        let end = Instant::now() + span;
        let mut sent = 0;
        while Instant::now() < end {
            limiter.acquire(chunk, priority).await;
            sent += chunk;
        }
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_limit_holds_the_average_rate_whatever_the_chunk_size() {
        for chunk in [1024u64, 1 << 20, 8 << 20] {
            let limiter = RateLimiter::fixed(4 << 20);
            let sent = through(&limiter, chunk, Duration::from_secs(10), Priority::BULK).await;
            let rate = sent as f64 / 10.0 / f64::from(4 << 20);
            assert!((0.95..=1.05 + chunk as f64 / f64::from(40 << 20)).contains(&rate), "{chunk}: {rate}");
            assert!(limiter.delayed_bytes() > 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_lets_everything_through_at_once() {
        let limiter = RateLimiter::new(Timetable::parse("off").unwrap());
        let started = Instant::now();
        for _ in 0..1000 {
            limiter.acquire(1 << 20, Priority::BULK).await;
        }
        assert_eq!(Instant::now(), started, "no waiting");
        assert_eq!(limiter.delayed_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_changes_at_the_timetables_edge() {
        let clock = Arc::new(Manual(Mutex::new(monday(7, 59))));
        let timetable = Timetable::parse("08:00,1M 19:00,off").unwrap();
        let limiter = RateLimiter::with_clock(timetable, clock.clone());
        assert_eq!(limiter.current_rate(), Rate::Unlimited);
        let before = Instant::now();
        limiter.acquire(100 << 20, Priority::BULK).await;
        assert_eq!(Instant::now(), before, "off before 08:00");
        *clock.0.lock().unwrap() = monday(8, 0);
        let sent = through(&limiter, 64 << 10, Duration::from_secs(4), Priority::BULK).await;
        let rate = sent as f64 / 4.0 / f64::from(1 << 20);
        assert!((0.95..=1.05).contains(&rate), "1M from 08:00: {rate}");
        // A waiter in debt sees the edge to off within RECHECK.
        limiter.acquire(8 << 20, Priority::BULK).await;
        let waiting = Instant::now();
        *clock.0.lock().unwrap() = monday(19, 0);
        limiter.acquire(1 << 20, Priority::BULK).await;
        assert!(Instant::now() - waiting <= RECHECK, "off again at 19:00");
        assert_eq!(limiter.current_rate(), Rate::Unlimited);
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_goes_first_and_bulk_keeps_a_tenth() {
        let limiter = Arc::new(RateLimiter::fixed(10 << 20));
        let span = Duration::from_secs(10);
        let bulk = {
            let limiter = limiter.clone();
            tokio::spawn(async move { through(&limiter, 256 << 10, span, Priority::BULK).await })
        };
        let interactive = {
            let limiter = limiter.clone();
            tokio::spawn(async move { through(&limiter, 256 << 10, span, Priority::Interactive).await })
        };
        let (bulk, interactive) = (bulk.await.unwrap() as f64, interactive.await.unwrap() as f64);
        let total = f64::from(10 << 20) * 10.0;
        assert!(interactive / total > 0.8, "interactive {:.2} of the limit", interactive / total);
        assert!(bulk / total > 0.05, "bulk still moves: {:.2}", bulk / total);
        assert!((bulk + interactive) / total < 1.05);
    }

    /// Shares of the limit `classes` get, pulling at once for 10 s of paused time.
    async fn shares(classes: &[Priority]) -> Vec<f64> {
        let limiter = Arc::new(RateLimiter::fixed(10 << 20));
        let span = Duration::from_secs(10);
        let tasks: Vec<_> = classes
            .iter()
            .map(|&priority| {
                let limiter = limiter.clone();
                tokio::spawn(async move { through(&limiter, 256 << 10, span, priority).await })
            })
            .collect();
        let mut shares = Vec::new();
        for task in tasks {
            shares.push(task.await.unwrap() as f64 / (f64::from(10 << 20) * 10.0));
        }
        shares
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_job_goes_before_a_low_one_which_keeps_a_tenth() {
        let got = shares(&[Priority::Bulk(JobPriority::Low), Priority::Bulk(JobPriority::High)]).await;
        let (low, high) = (got[0], got[1]);
        assert!(high > 0.8, "high {high:.2} of the limit");
        assert!(low > 0.05, "low still moves: {low:.2}");
        assert!(high + low < 1.05);
    }

    #[tokio::test(start_paused = true)]
    async fn every_worse_class_keeps_moving_behind_the_best_one() {
        let all = [
            Priority::Bulk(JobPriority::Low),
            Priority::BULK,
            Priority::Bulk(JobPriority::High),
            Priority::Interactive,
        ];
        let got = shares(&all).await;
        let (low, normal, high, interactive) = (got[0], got[1], got[2], got[3]);
        assert!(interactive > 0.6, "interactive {interactive:.2}");
        for (class, share) in [("high", high), ("normal", normal), ("low", low)] {
            assert!((0.04..0.15).contains(&share), "{class} keeps about a tenth: {share:.2}");
        }
        assert!(got.iter().sum::<f64>() < 1.05);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bulk_request_alone_has_the_whole_limit() {
        let limiter = RateLimiter::fixed(10 << 20);
        let sent = through(&limiter, 256 << 10, Duration::from_secs(5), Priority::BULK).await as f64;
        assert!(sent / (f64::from(10 << 20) * 5.0) > 0.95);
    }

    #[test]
    fn a_shifted_clock_reads_the_chosen_time_and_runs_on() {
        let clock = ShiftedClock::reading(monday(7, 59));
        let read = clock.now().duration_since(monday(7, 59)).unwrap();
        assert!(read < Duration::from_secs(1));
    }
}
