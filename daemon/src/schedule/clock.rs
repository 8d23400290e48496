//! The scheduler's clock, injected so tests can move time: the node runs on [`SystemClock`];
//! a test hands the scheduler a [`ManualClock`] and sets it. Only "which scheduled time is due"
//! reads it; waiting (deadlines, backoff, the loop's naps) is tokio's.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Wall-clock time for the scheduler.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until set or advanced.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(at: SystemTime) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
