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
//! answer that finds no room joins one queue and is granted room in its turn, by whoever gives
//! room back: nothing else is woken, so a thousand waiting answers cost nothing while they wait.
//!
//! A chunk written to a peer that reads nothing is neither sent nor acknowledged, so its room
//! would be held for as long as the peer likes. Three rules keep one peer from starving the
//! others. No borrower (a peer identity, [`Borrower`]) ever holds more than half the budget, so
//! another peer always finds room. Each borrower has a fair share — the budget divided by the
//! borrowers holding or waiting for room now, always at least one chunk — and a waiting answer
//! of a peer within its share is granted room before any answer of a peer over it, whichever
//! asked first; room that no peer within its share is waiting for goes, in queue order, to
//! those over theirs, so none of it stays idle. And the answer's writer resets a stream whose
//! peer takes nothing for `[limits] stall-timeout`
//! (`ferry_net::wire::FrameWriter::set_stall_timeout`), which drops the chunk QUIC held and
//! gives its room back. A chunk larger than the whole budget reserves all of it and is sent
//! alone.

use crate::telemetry::Metrics;
use bytes::Bytes;
use ferry_net::bandwidth::Priority;
use ferry_proto::{DeptId, JobPriority, Principal};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// The unit of reservation: bytes are rounded up to whole KiB.
const UNIT: u64 = 1024;

/// No one peer ever holds more than this fraction of the budget (here: half), so another always
/// finds room, whatever the first one's answers do.
const MOST_OF_ONE_PEER: u64 = 2;

/// Who a reservation is counted against: a peer identity (department, role, holder name), so
/// that several connections of one certificate holder share one fair share; with the
/// department its bandwidth limit is chosen by, the priority its role gives its answers, and
/// the class one answer's request declared (`GetChunks.priority`). Equal and hashed by the
/// identity alone: one peer's answers of every class share one fair share and one limiter.
#[derive(Debug, Clone)]
pub struct Borrower {
    key: String,
    dept: DeptId,
    priority: Priority,
    declared: Option<JobPriority>,
}

impl PartialEq for Borrower {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Borrower {}

impl std::hash::Hash for Borrower {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl Borrower {
    pub fn of(peer: &Principal) -> Self {
        Self {
            key: format!("{}/{}/{}", peer.dept, peer.role, peer.name),
            dept: peer.dept.clone(),
            priority: crate::data::bandwidth::priority_of(peer),
            declared: None,
        }
    }

    /// The same peer, for an answer whose request declared `declared` (`None`: the role decides).
    pub fn declaring(mut self, declared: Option<JobPriority>) -> Self {
        self.declared = declared;
        self
    }

    pub fn dept(&self) -> &DeptId {
        &self.dept
    }

    /// The answer's class among every peer's answers (the node-wide limiter, the budget's
    /// interactive turn): the role's, or a worse one the request declared. `Interactive` for an
    /// operator's certificate and `Bulk(normal)` for a node's; an operator declaring a class is
    /// bulk of it, a node declaring `low` is bulk low, and a node's `high` stays `normal` here
    /// (it orders the node's own answers only, see [`Borrower::own_priority`]).
    pub fn priority(&self) -> Priority {
        crate::data::bandwidth::bounded_by_role(self.priority, self.declared)
    }

    /// The answer's class among this peer's own answers (its limiter, its place in the budget's
    /// queue behind its other answers): the declared class, else the role's.
    pub fn own_priority(&self) -> Priority {
        self.declared.map_or(self.priority, Priority::Bulk)
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
    units: u64,
}

#[derive(Debug, Default)]
struct State {
    available: u64,
    borrowers: HashMap<Borrower, Use>,
    /// Answers waiting for room, oldest first.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
}

/// What one borrower holds and how many of its answers wait, in all and by class
/// ([`Borrower::own_priority`]'s rank).
#[derive(Debug, Default)]
struct Use {
    held: u64,
    waiting: usize,
    by_class: [usize; 4],
}

/// One answer waiting in the queue; `grant` tells it its room was taken for it.
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    who: Borrower,
    units: u64,
    grant: oneshot::Sender<()>,
    /// Times a round passed it over for a better-class answer of the same peer.
    passed: u32,
}

/// A waiting answer is passed over for better-class answers of its own peer at most this many
/// times in a row, then granted in its turn: a peer's worse classes keep about a tenth.
const MOST_PASSES_FOR_OWN_BETTER: u32 = 9;

impl State {
    /// Borrowers holding or waiting now, plus `who` when it does neither yet.
    fn sharers(&self, who: &Borrower) -> u64 {
        let active = self.borrowers.len() as u64;
        let counted = self.borrowers.contains_key(who);
        (if counted { active } else { active + 1 }).max(1)
    }

    fn holds(&self, who: &Borrower) -> u64 {
        self.borrowers.get(who).map_or(0, |u| u.held)
    }

    /// Whether `units` more keep `who` within its fair share of `total`: the budget divided by
    /// the borrowers now, at least one chunk.
    fn within_share(&self, who: &Borrower, units: u64, total: u64) -> bool {
        let mine = self.holds(who);
        mine == 0 || mine + units <= (total / self.sharers(who)).max(units)
    }

    /// Whether `units` more keep `who` within the most one peer may hold (half of `total`, at
    /// least one chunk).
    fn within_cap(&self, who: &Borrower, units: u64, total: u64) -> bool {
        let mine = self.holds(who);
        mine == 0 || mine + units <= (total / MOST_OF_ONE_PEER).max(units)
    }

    /// Whether an answer of a peer within its share (and the cap) waits: it is owed the next room.
    fn owed_within_share(&self, total: u64) -> bool {
        self.queue
            .iter()
            .any(|w| self.within_share(&w.who, w.units, total) && self.within_cap(&w.who, w.units, total))
    }

    fn take(&mut self, who: &Borrower, units: u64) {
        self.available -= units;
        self.borrowers.entry(who.clone()).or_default().held += units;
    }

    fn untake(&mut self, who: &Borrower, units: u64) {
        self.available += units;
        if let Some(used) = self.borrowers.get_mut(who) {
            used.held = used.held.saturating_sub(units);
        }
        self.forget_if_idle(who);
    }

    /// Whether `who` has an answer of a better class than `rank` waiting.
    fn own_better_waiting(&self, who: &Borrower, rank: usize) -> bool {
        self.borrowers.get(who).is_some_and(|u| u.by_class[..rank].iter().any(|&n| n > 0))
    }

    /// Counts a pass for each worse-class answer of `who` among the first `ahead` waiting: an
    /// answer of class `rank` was just granted before them.
    fn passed_over(&mut self, ahead: usize, who: &Borrower, rank: usize) {
        if !self.borrowers.get(who).is_some_and(|u| u.by_class[rank + 1..].iter().any(|&n| n > 0)) {
            return;
        }
        for waiter in self.queue.iter_mut().take(ahead) {
            if &waiter.who == who && waiter.who.own_priority().rank() > rank {
                waiter.passed += 1;
            }
        }
    }

    /// Counts an answer of `who` at `rank` in or out of the waiting.
    fn count_waiting(&mut self, who: &Borrower, rank: usize, joins: bool) {
        let used = self.borrowers.entry(who.clone()).or_default();
        if joins {
            used.waiting += 1;
            used.by_class[rank] += 1;
        } else {
            used.waiting = used.waiting.saturating_sub(1);
            used.by_class[rank] = used.by_class[rank].saturating_sub(1);
        }
    }

    fn forget_if_idle(&mut self, who: &Borrower) {
        if self.borrowers.get(who).is_some_and(|u| u.held == 0 && u.waiting == 0) {
            self.borrowers.remove(who);
        }
    }

    /// Whether an interactive answer of a peer within its share (and the cap) waits.
    fn interactive_owed(&self, total: u64) -> bool {
        self.queue.iter().any(|w| Self::interactive_within_share(self, &w.who, w.units, total))
    }

    fn interactive_within_share(&self, who: &Borrower, units: u64, total: u64) -> bool {
        who.priority() == Priority::Interactive
            && self.within_share(who, units, total)
            && self.within_cap(who, units, total)
    }

    /// Grants room to waiting answers in queue order: first to interactive answers of peers
    /// within their share, then to any answer of a peer within its share, passing over the
    /// others; only when none of those waits does room go, still in order, to answers of peers
    /// over their share (up to the cap), so no room stays idle. An answer that does not fit
    /// stops its round, and an interactive one every later round: room is kept for it rather
    /// than spent on later ones. Bulk answers still progress: an interactive peer's share is
    /// bounded like any other's, and over it, it is passed over.
    fn grant_waiters(&mut self, total: u64) {
        if self.grant_round(total, Self::interactive_within_share) {
            return;
        }
        self.grant_round(total, Self::within_share);
        if !self.owed_within_share(total) {
            self.grant_round(total, Self::within_cap);
        }
    }

    /// One round over the queue; `true` when it stopped at an answer that did not fit.
    fn grant_round(&mut self, total: u64, eligible: fn(&Self, &Borrower, u64, u64) -> bool) -> bool {
        let mut i = 0;
        while i < self.queue.len() {
            let (who, units) = (&self.queue[i].who, self.queue[i].units);
            if self.queue[i].passed < MOST_PASSES_FOR_OWN_BETTER
                && self.own_better_waiting(who, who.own_priority().rank())
            {
                i += 1;
                continue;
            }
            if !eligible(self, who, units, total) || !self.within_cap(who, units, total) {
                i += 1;
                continue;
            }
            if self.available < units {
                return true;
            }
            let Some(waiter) = self.queue.remove(i) else { break };
            let rank = waiter.who.own_priority().rank();
            self.count_waiting(&waiter.who, rank, false);
            self.passed_over(i, &waiter.who, rank);
            self.take(&waiter.who, waiter.units);
            // The answer stopped waiting (its future was dropped) in between: room back.
            if waiter.grant.send(()).is_err() {
                self.untake(&waiter.who, waiter.units);
            }
        }
        false
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a few arithmetic steps; a panic cannot tear it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Room for `units` now if the budget has it, `who` stays within the cap, and no waiting
    /// answer is owed it first (for an interactive `who` within its share, an interactive one
    /// within its share; for another `who` within its share, any within its share; for `who`
    /// over its share, any); otherwise a place in the queue.
    fn take_or_queue(&self, who: &Borrower, units: u64) -> Result<(), Queued<'_>> {
        let mut state = self.lock();
        let total = self.units;
        let owed = if state.interactive_within_share(who, units, total) {
            // Bulk answers waiting do not hold an interactive one up.
            state.interactive_owed(total)
        } else if state.within_share(who, units, total) {
            state.owed_within_share(total)
        } else {
            state.queue.iter().any(|w| state.within_cap(&w.who, w.units, total))
        };
        // A better-class answer of the same peer waiting goes first too.
        let owed = owed || state.own_better_waiting(who, who.own_priority().rank());
        if !owed && state.available >= units && state.within_cap(who, units, total) {
            state.take(who, units);
            return Ok(());
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let (grant, granted) = oneshot::channel();
        state.count_waiting(who, who.own_priority().rank(), true);
        state.queue.push_back(Waiter { ticket, who: who.clone(), units, grant, passed: 0 });
        Err(Queued { shared: self, who: who.clone(), units, ticket, granted, done: false })
    }

    fn give_back(&self, who: &Borrower, units: u64) {
        let mut state = self.lock();
        state.untake(who, units);
        state.grant_waiters(self.units);
    }
}

/// An answer's place in the queue. Dropped before its grant arrived (the answer was cancelled),
/// it leaves the queue, or gives back room granted to it in the meantime.
struct Queued<'a> {
    shared: &'a Shared,
    who: Borrower,
    units: u64,
    ticket: u64,
    granted: oneshot::Receiver<()>,
    /// The grant was received and turned into a [`Reservation`].
    done: bool,
}

impl Queued<'_> {
    async fn wait(mut self) {
        // The sender lives in the queue until it grants; the queue is never dropped first.
        let _ = (&mut self.granted).await;
        self.done = true;
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if let Some(at) = state.queue.iter().position(|w| w.ticket == self.ticket) {
            state.queue.remove(at);
            state.count_waiting(&self.who, self.who.own_priority().rank(), false);
            state.forget_if_idle(&self.who);
        } else if self.granted.try_recv().is_ok() {
            state.untake(&self.who, self.units);
        }
        // One fewer borrower, or room back: the others' turn.
        state.grant_waiters(self.shared.units);
    }
}

impl ServeBudget {
    /// A budget of `bytes` (at least one KiB), reported through `metrics`.
    pub fn new(bytes: u64, metrics: &Metrics) -> Self {
        let units = (bytes / UNIT).max(1);
        metrics.serve_budget.set(i64::try_from(units * UNIT).unwrap_or(i64::MAX));
        let state = State { available: units, ..State::default() };
        Self {
            shared: Arc::new(Shared { state: Mutex::new(state), units }),
            units,
            held: metrics.serve_held.clone(),
            waits: metrics.serve_budget_waits.clone(),
        }
    }

    /// Reserves room for a chunk of `len` bytes for `who`, waiting in turn while the budget is
    /// spent or `who` holds its share.
    pub async fn reserve(&self, who: &Borrower, len: usize) -> Reservation {
        let units = (len as u64).div_ceil(UNIT).clamp(1, self.units);
        if let Err(queued) = self.shared.take_or_queue(who, units) {
            self.waits.inc();
            queued.wait().await;
        }
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

    /// A node's identity: its answers are bulk.
    fn peer(name: &str) -> Borrower {
        let dept = DeptId::new("dept").unwrap();
        Borrower { key: format!("dept/province/{name}"), dept, priority: Priority::BULK, declared: None }
    }

    /// An operator's identity: its answers are interactive.
    fn operator(name: &str) -> Borrower {
        let dept = DeptId::new("dept").unwrap();
        Borrower {
            key: format!("dept/operator/{name}"),
            dept,
            priority: Priority::Interactive,
            declared: None,
        }
    }

    fn budget(bytes: u64) -> (ServeBudget, Arc<Metrics>) {
        let metrics = Metrics::new();
        (ServeBudget::new(bytes, &metrics), metrics)
    }

    const MIB: usize = 1 << 20;

    /// `who`'s reservation of `len` bytes, started now and left waiting in the background.
    fn spawn_reserve(
        budget: &ServeBudget,
        who: &Borrower,
        len: usize,
    ) -> tokio::task::JoinHandle<Reservation> {
        let (budget, who) = (budget.clone(), who.clone());
        tokio::spawn(async move { budget.reserve(&who, len).await })
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn granted(waiting: tokio::task::JoinHandle<Reservation>) -> Reservation {
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("room granted").unwrap()
    }

    #[tokio::test]
    async fn a_reservation_is_held_until_the_last_clone_of_its_chunk_is_dropped() {
        let (budget, metrics) = budget(3 << 20);
        let chunk = budget.reserve(&peer("a"), MIB).await.attach(Bytes::from(vec![5u8; MIB]));
        assert_eq!(&chunk[..3], &[5, 5, 5], "the bytes are the chunk's");
        assert_eq!(chunk.len(), MIB);
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
        let (budget, metrics) = budget(4 << 20);
        let (a, b) = (peer("a"), peer("b"));
        let first = budget.reserve(&a, MIB).await.attach(Bytes::from(vec![0u8; MIB]));
        let second = budget.reserve(&a, MIB).await;
        let (third, fourth) = (budget.reserve(&b, MIB).await, budget.reserve(&b, MIB).await);
        assert_eq!(metrics.serve_budget_waits.get(), 0);
        let waiting = spawn_reserve(&budget, &a, MIB);
        settle().await;
        assert!(!waiting.is_finished(), "no room: the fifth chunk waits");
        assert_eq!(metrics.serve_budget_waits.get(), 1);
        drop(first);
        let fifth = granted(waiting).await;
        assert_eq!(budget.held_bytes(), 4 << 20);
        drop((second, third, fourth, fifth));
        assert_eq!(budget.held_bytes(), 0);
        assert!(budget.shared.lock().borrowers.is_empty());
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let (budget, _metrics) = budget(MIB as u64);
        let big = tokio::time::timeout(Duration::from_secs(5), budget.reserve(&peer("a"), 4 * MIB))
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
    async fn a_peer_alone_holds_half_the_budget_and_a_newcomer_finds_room_at_once() {
        let (budget, _metrics) = budget(4 << 20);
        let (hog, honest) = (peer("hog"), peer("honest"));
        let mut hogged = vec![budget.reserve(&hog, MIB).await, budget.reserve(&hog, MIB).await];
        let over = spawn_reserve(&budget, &hog, MIB);
        settle().await;
        assert!(!over.is_finished(), "alone, a peer may hold half the budget, no more");
        assert_eq!(budget.held_by(&hog), 2 << 20);
        // The honest peer gets its half at once, though the hog asked first.
        let mine = tokio::time::timeout(Duration::from_secs(1), async {
            (budget.reserve(&honest, MIB).await, budget.reserve(&honest, MIB).await)
        })
        .await
        .expect("the other half is the newcomer's");
        assert_eq!(budget.held_by(&honest), 2 << 20);
        // Room the hog gives back is its own again (it is the only one waiting).
        hogged.pop();
        hogged.push(granted(over).await);
        drop((mine, hogged));
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn room_given_back_goes_to_a_peer_under_its_share_before_one_at_it_that_asked_first() {
        let (budget, _metrics) = budget(4 << 20);
        let (hog, honest, third) = (peer("hog"), peer("honest"), peer("third"));
        let (hogged, kept) = (budget.reserve(&hog, MIB).await, budget.reserve(&hog, MIB).await);
        let mut thirds = vec![budget.reserve(&third, MIB).await, budget.reserve(&third, MIB).await];
        let hog_waits = spawn_reserve(&budget, &hog, MIB);
        settle().await;
        let honest_waits = spawn_reserve(&budget, &honest, MIB);
        settle().await;
        // Three borrowers: a share is a third of 4 MiB; the hog holds 2, the honest peer none.
        thirds.pop();
        let honest_chunk = granted(honest_waits).await;
        settle().await;
        assert!(!hog_waits.is_finished(), "the hog is over its share: passed over");
        assert_eq!(budget.held_by(&honest), 1 << 20);
        // The third peer leaves: two borrowers, the hog holds its half and gets no more.
        drop(thirds);
        settle().await;
        assert!(!hog_waits.is_finished(), "the hog holds its half");
        drop(hogged);
        let hog_more = granted(hog_waits).await;
        assert_eq!(budget.held_by(&hog), 2 << 20);
        drop((hog_more, honest_chunk, kept));
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn room_no_peer_within_its_share_asks_for_goes_to_one_over_it() {
        let (budget, _metrics) = budget(8 << 20);
        let (a, b, c) = (peer("a"), peer("b"), peer("c"));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(budget.reserve(&a, MIB).await);
        }
        held.push(budget.reserve(&b, MIB).await);
        held.push(budget.reserve(&c, MIB).await);
        // Three borrowers: a's share is 8/3 MiB and it holds 3, but no one else waits.
        let fourth = tokio::time::timeout(Duration::from_secs(1), budget.reserve(&a, MIB))
            .await
            .expect("room no one else asks for is not kept idle");
        assert_eq!(budget.held_by(&a), 4 << 20);
        let fifth = spawn_reserve(&budget, &a, MIB);
        settle().await;
        assert!(!fifth.is_finished(), "half the budget is the most one peer holds");
        drop((fourth, held));
        drop(granted(fifth).await);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn waiting_answers_are_granted_in_the_order_they_asked() {
        let (budget, _metrics) = budget(2 << 20);
        let (a, b) = (peer("a"), peer("b"));
        let held = (budget.reserve(&a, MIB).await, budget.reserve(&b, MIB).await);
        let mut queue = Vec::new();
        for i in 0..6 {
            let who = if i % 2 == 0 { &a } else { &b };
            queue.push(spawn_reserve(&budget, who, MIB));
            settle().await;
        }
        drop(held.0);
        let first = granted(queue.remove(0)).await;
        settle().await;
        assert!(queue.iter().all(|w| !w.is_finished()), "one chunk of room: the oldest answer only");
        drop(held.1);
        let second = granted(queue.remove(0)).await;
        assert_eq!((budget.held_by(&a), budget.held_by(&b)), (1 << 20, 1 << 20));
        drop((first, second));
        for w in queue {
            drop(granted(w).await);
        }
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn an_interactive_answer_is_granted_room_before_bulk_ones_that_asked_first() {
        let (budget, _metrics) = budget(2 << 20);
        let (a, b, bulk, op) = (peer("a"), peer("b"), peer("bulk"), operator("op"));
        let held = (budget.reserve(&a, MIB).await, budget.reserve(&b, MIB).await);
        let bulk_waits = spawn_reserve(&budget, &bulk, MIB);
        settle().await;
        let op_waits = spawn_reserve(&budget, &op, MIB);
        settle().await;
        drop(held.0);
        let op_chunk = granted(op_waits).await;
        settle().await;
        assert!(!bulk_waits.is_finished(), "the interactive answer went first");
        // Over its share now, the operator's next answer waits behind the bulk one.
        let op_again = spawn_reserve(&budget, &op, MIB);
        settle().await;
        drop(held.1);
        let bulk_chunk = granted(bulk_waits).await;
        settle().await;
        assert!(!op_again.is_finished(), "bulk still progresses");
        drop((op_chunk, bulk_chunk));
        drop(granted(op_again).await);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_peers_high_answer_goes_before_its_low_one_which_is_not_passed_over_for_ever() {
        let (budget, _metrics) = budget(2 << 20);
        let node = peer("n");
        let (high, low) =
            (node.clone().declaring(Some(JobPriority::High)), node.clone().declaring(Some(JobPriority::Low)));
        assert_eq!(high.priority(), Priority::BULK, "a node's high orders its own answers only");
        let held = budget.reserve(&node, MIB).await;
        let low_waits = spawn_reserve(&budget, &low, MIB);
        settle().await;
        let high_waits = spawn_reserve(&budget, &high, MIB);
        settle().await;
        drop(held);
        // The high answer asked later and goes first; each time the peer's room comes back
        // with another high answer waiting, the low one is passed over, a bounded number of times.
        let mut chunk = granted(high_waits).await;
        let mut passes = 1;
        loop {
            let next = spawn_reserve(&budget, &high, MIB);
            settle().await;
            drop(chunk);
            settle().await;
            if low_waits.is_finished() {
                drop(granted(low_waits).await);
                drop(granted(next).await);
                break;
            }
            passes += 1;
            assert!(passes <= MOST_PASSES_FOR_OWN_BETTER, "the low answer was passed over {passes} times");
            chunk = granted(next).await;
        }
        assert_eq!(passes, MOST_PASSES_FOR_OWN_BETTER);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let (budget, _metrics) = budget(MIB as u64);
        let all = budget.reserve(&peer("a"), MIB).await;
        let cancelled =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve(&peer("b"), 1024)).await;
        assert!(cancelled.is_err());
        assert!(budget.shared.lock().queue.is_empty(), "the cancelled answer left the queue");
        drop(all);
        assert!(budget.shared.lock().borrowers.is_empty(), "nothing left of a or b");
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn room_granted_to_an_answer_cancelled_before_it_ran_comes_back() {
        let (budget, _metrics) = budget(MIB as u64);
        let all = budget.reserve(&peer("a"), MIB).await;
        let Err(waiting) = budget.shared.take_or_queue(&peer("b"), 1) else {
            panic!("no room: b must wait");
        };
        drop(all);
        assert_eq!(budget.held_by(&peer("b")), 1024, "granted while its answer was not polled");
        drop(waiting);
        assert_eq!(budget.held_bytes(), 0);
        assert!(budget.shared.lock().borrowers.is_empty());
    }
}
