//! A node-wide bound on served chunk bytes that QUIC still holds, shared fairly between peers.
//!
//! QUIC keeps every byte sent until the peer acknowledges it, and a served chunk's buffer is
//! shared with QUIC rather than copied. One connection's flow-control windows bound what one
//! puller can hold (on loopback 4 MiB, plus the chunks being written), but nothing bounded the
//! sum over connections: 31 provinces pulling at once kept 583–640 MiB resident in the
//! ministry's `ferryd`.
//!
//! The budget is counted in KiB. An answer reserves a chunk's bytes before reading it; the
//! reservation travels with the chunk's buffer ([`Reservation::attach`]) and is given back when
//! QUIC drops the buffer after the peer's acknowledgement, or when the stream is reset. An
//! answer that finds the budget spent waits for room.
//!
//! A chunk written to a peer that reads nothing is neither sent nor acknowledged, so its room
//! would be held for as long as the peer likes. Two rules keep one peer from starving the
//! others: each borrower (a peer identity, [`Borrower`]) may hold at most its fair share — the
//! budget divided by the borrowers holding or waiting for room now, and always at least one
//! chunk — while others wait; and the answer's writer resets a stream whose peer takes nothing
//! for `[limits] stall-timeout` (`ferry_net::wire::FrameWriter::set_stall_timeout`), which
//! drops the chunk QUIC held and gives its room back. A chunk larger than the whole budget
//! reserves all of it and is sent alone.

use crate::telemetry::Metrics;
use bytes::Bytes;
use ferry_proto::Principal;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The unit of reservation: bytes are rounded up to whole KiB.
const UNIT: u64 = 1024;

/// Who a reservation is counted against: a peer identity (department, role, holder name), so
/// that several connections of one certificate holder share one fair share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Borrower(String);

impl Borrower {
    pub fn of(peer: &Principal) -> Self {
        Self(format!("{}/{}/{}", peer.dept, peer.role, peer.name))
    }
}

/// Node-wide budget of chunk bytes handed to QUIC and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct ServeBudget {
    shared: Arc<Shared>,
    units: u64,
    held: Gauge,
    waits: Counter,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken whenever room is given back or a borrower stops waiting.
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    available: u64,
    borrowers: HashMap<Borrower, Use>,
}

/// What one borrower holds and how many of its answers wait.
#[derive(Debug, Default)]
struct Use {
    held: u64,
    waiting: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a few arithmetic steps; a panic cannot tear it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `units` for `who` if the budget has them and `who` stays within its share.
    fn try_take(&self, who: &Borrower, units: u64, total: u64) -> bool {
        let mut state = self.lock();
        let active = state.borrowers.values().filter(|u| u.held > 0 || u.waiting > 0).count() as u64;
        let mine = state.borrowers.get(who).map_or(0, |u| u.held);
        // Counting `who` itself when it holds and waits for nothing yet.
        let active = if mine == 0 && state.borrowers.get(who).is_none_or(|u| u.waiting == 0) {
            active + 1
        } else {
            active
        };
        let share = (total / active.max(1)).max(units);
        if state.available < units || (mine > 0 && mine + units > share) {
            return false;
        }
        state.available -= units;
        state.borrowers.entry(who.clone()).or_default().held += units;
        true
    }

    fn give_back(&self, who: &Borrower, units: u64) {
        let mut state = self.lock();
        state.available += units;
        if let Some(used) = state.borrowers.get_mut(who) {
            used.held = used.held.saturating_sub(units);
            if used.held == 0 && used.waiting == 0 {
                state.borrowers.remove(who);
            }
        }
        drop(state);
        self.freed.notify_waiters();
    }

    fn set_waiting(&self, who: &Borrower, waiting: bool) {
        let mut state = self.lock();
        let used = state.borrowers.entry(who.clone()).or_default();
        if waiting {
            used.waiting += 1;
        } else {
            used.waiting = used.waiting.saturating_sub(1);
            if used.held == 0 && used.waiting == 0 {
                state.borrowers.remove(who);
            }
        }
        drop(state);
        if !waiting {
            // One fewer borrower: the others' shares grew.
            self.freed.notify_waiters();
        }
    }
}

/// Counts an answer of `who` as waiting while alive (also when the wait is cancelled).
struct Waiting<'a> {
    shared: &'a Shared,
    who: &'a Borrower,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.set_waiting(self.who, false);
    }
}

impl ServeBudget {
    /// A budget of `bytes` (at least one KiB), reported through `metrics`.
    pub fn new(bytes: u64, metrics: &Metrics) -> Self {
        let units = (bytes / UNIT).max(1);
        metrics.serve_budget.set(i64::try_from(units * UNIT).unwrap_or(i64::MAX));
        let state = State { available: units, borrowers: HashMap::new() };
        Self {
            shared: Arc::new(Shared { state: Mutex::new(state), freed: Notify::new() }),
            units,
            held: metrics.serve_held.clone(),
            waits: metrics.serve_budget_waits.clone(),
        }
    }

    /// Reserves room for a chunk of `len` bytes for `who`, waiting while the budget is spent or
    /// `who` holds its share.
    pub async fn reserve(&self, who: &Borrower, len: usize) -> Reservation {
        let units = (len as u64).div_ceil(UNIT).clamp(1, self.units);
        let mut waiting = None;
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            // Registered before trying, so a give-back between the try and the wait is seen.
            freed.as_mut().enable();
            if self.shared.try_take(who, units, self.units) {
                break;
            }
            if waiting.is_none() {
                self.waits.inc();
                self.shared.set_waiting(who, true);
                waiting = Some(Waiting { shared: &self.shared, who });
            }
            freed.await;
        }
        drop(waiting);
        let bytes = i64::try_from(units * UNIT).unwrap_or(i64::MAX);
        self.held.inc_by(bytes);
        Reservation { shared: self.shared.clone(), who: who.clone(), units, held: self.held.clone(), bytes }
    }

    /// Bytes reserved now.
    pub fn held_bytes(&self) -> u64 {
        (self.units - self.shared.lock().available) * UNIT
    }

    /// Bytes `who` has reserved now.
    pub fn held_by(&self, who: &Borrower) -> u64 {
        self.shared.lock().borrowers.get(who).map_or(0, |u| u.held) * UNIT
    }
}

/// Room for one chunk in the [`ServeBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    who: Borrower,
    units: u64,
    held: Gauge,
    bytes: i64,
}

impl Reservation {
    /// `data`, carrying this reservation: it is given back when the last clone of the result is
    /// dropped, that is when QUIC has the chunk acknowledged (or the stream reset, or the
    /// connection gone).
    pub fn attach(self, data: Bytes) -> Bytes {
        Bytes::from_owner(Reserved { data, _reservation: self })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.give_back(&self.who, self.units);
        self.held.dec_by(self.bytes);
    }
}

struct Reserved {
    data: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Reserved {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(name: &str) -> Borrower {
        Borrower(format!("dept/operator/{name}"))
    }

    fn budget(bytes: u64) -> (ServeBudget, Arc<Metrics>) {
        let metrics = Metrics::new();
        (ServeBudget::new(bytes, &metrics), metrics)
    }

    #[tokio::test]
    async fn a_reservation_is_held_until_the_last_clone_of_its_chunk_is_dropped() {
        let (budget, metrics) = budget(3 << 20);
        let chunk = budget.reserve(&peer("a"), 1 << 20).await.attach(Bytes::from(vec![5u8; 1 << 20]));
        assert_eq!(&chunk[..3], &[5, 5, 5], "the bytes are the chunk's");
        assert_eq!(chunk.len(), 1 << 20);
        let part = chunk.slice(100..200);
        drop(chunk);
        assert_eq!(budget.held_bytes(), 1 << 20, "a slice QUIC still holds keeps the room");
        assert_eq!(metrics.serve_held.get(), 1 << 20);
        drop(part);
        assert_eq!(budget.held_bytes(), 0);
        assert_eq!(metrics.serve_held.get(), 0);
        assert_eq!(metrics.serve_budget.get(), 3 << 20);
    }

    #[tokio::test]
    async fn a_spent_budget_makes_the_next_chunk_wait_until_room_is_given_back() {
        let (budget, metrics) = budget(2 << 20);
        let first = budget.reserve(&peer("a"), 1 << 20).await.attach(Bytes::from(vec![0u8; 1 << 20]));
        let second = budget.reserve(&peer("a"), 1 << 20).await;
        assert_eq!(metrics.serve_budget_waits.get(), 0);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(&peer("a"), 1 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room: the third chunk waits");
        assert_eq!(metrics.serve_budget_waits.get(), 1);
        drop(first);
        let third =
            tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("room given back").unwrap();
        assert_eq!(budget.held_bytes(), 2 << 20);
        drop((second, third));
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let (budget, _metrics) = budget(1 << 20);
        let big = tokio::time::timeout(Duration::from_secs(5), budget.reserve(&peer("a"), 4 << 20))
            .await
            .expect("no hang");
        assert_eq!(budget.held_bytes(), 1 << 20);
        drop(big);
        // Odd sizes round up to whole KiB and come back whole.
        let odd = budget.reserve(&peer("a"), 1).await;
        assert_eq!(budget.held_bytes(), 1024);
        drop(odd);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_peer_holding_the_whole_budget_gets_no_more_while_another_waits() {
        let (budget, _metrics) = budget(4 << 20);
        let (hog, honest) = (peer("hog"), peer("honest"));
        let mut hogged = Vec::new();
        for _ in 0..4 {
            hogged.push(budget.reserve(&hog, 1 << 20).await);
        }
        assert_eq!(budget.held_by(&hog), 4 << 20, "alone, a peer may use the whole budget");
        let waiting_honest = tokio::spawn({
            let (budget, honest) = (budget.clone(), honest.clone());
            async move { budget.reserve(&honest, 1 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting_hog = tokio::spawn({
            let (budget, hog) = (budget.clone(), hog.clone());
            async move { budget.reserve(&hog, 1 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The hog gives back one chunk (its stream reset): the room goes to the peer under its
        // share, not to the hog's next answer.
        hogged.pop();
        let granted =
            tokio::time::timeout(Duration::from_secs(5), waiting_honest).await.expect("room").unwrap();
        assert_eq!(budget.held_by(&honest), 1 << 20);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting_hog.is_finished(), "the hog is over its half share");
        hogged.truncate(1);
        let more =
            tokio::time::timeout(Duration::from_secs(5), waiting_hog).await.expect("within share").unwrap();
        assert_eq!(budget.held_by(&hog), 2 << 20, "back within its half");
        drop((granted, more, hogged));
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_is_not_counted_as_a_borrower() {
        let (budget, _metrics) = budget(1 << 20);
        let all = budget.reserve(&peer("a"), 1 << 20).await;
        let cancelled =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve(&peer("b"), 1024)).await;
        assert!(cancelled.is_err());
        drop(all);
        assert!(budget.shared.lock().borrowers.is_empty(), "nothing left of a or b");
    }
}
