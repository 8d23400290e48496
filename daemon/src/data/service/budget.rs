//! A node-wide bound on served chunk bytes that QUIC still holds.
//!
//! QUIC keeps every byte sent until the peer acknowledges it, and a served chunk's buffer is
//! shared with QUIC rather than copied. One connection's flow-control windows bound what one
//! puller can hold (on loopback 4 MiB, plus the chunks being written), but nothing bounded the
//! sum over connections: 31 provinces pulling at once kept 583–640 MiB resident in the
//! ministry's `ferryd`.
//!
//! The budget is a first-come-first-served semaphore counted in KiB. An answer reserves a chunk's
//! bytes before reading it; the reservation travels with the chunk's buffer
//! ([`Reservation::attach`]) and is given back when QUIC drops the buffer after the peer's
//! acknowledgement. An answer that finds the budget spent waits for other answers' chunks to be
//! acknowledged. Acknowledgements do not depend on the peer's application reading, so the wait
//! always ends while peers are alive; a dead peer's chunks are dropped with its connection. A
//! chunk larger than the whole budget reserves all of it and is sent alone.

use crate::telemetry::Metrics;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The unit of reservation: bytes are rounded up to whole KiB.
const UNIT: u64 = 1024;

/// Node-wide budget of chunk bytes handed to QUIC and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct ServeBudget {
    permits: Arc<Semaphore>,
    units: u32,
    held: Gauge,
    waits: Counter,
}

impl ServeBudget {
    /// A budget of `bytes` (at least one KiB), reported through `metrics`.
    pub fn new(bytes: u64, metrics: &Metrics) -> Self {
        let units = u32::try_from((bytes / UNIT).max(1)).unwrap_or(u32::MAX);
        metrics.serve_budget.set(i64::from(units) * UNIT as i64);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
            held: metrics.serve_held.clone(),
            waits: metrics.serve_budget_waits.clone(),
        }
    }

    /// Reserves room for a chunk of `len` bytes, waiting while the budget is spent.
    pub async fn reserve(&self, len: usize) -> Reservation {
        let units = u32::try_from((len as u64).div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.units);
        let permit = match self.permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::NoPermits) => {
                self.waits.inc();
                self.permits.clone().acquire_many_owned(units).await.ok()
            }
            // The semaphore is never closed.
            Err(TryAcquireError::Closed) => None,
        };
        let bytes = i64::from(units) * UNIT as i64;
        self.held.inc_by(bytes);
        Reservation { _permit: permit, held: self.held.clone(), bytes }
    }

    /// Bytes reserved now.
    pub fn held_bytes(&self) -> u64 {
        u64::from(self.units - self.permits.available_permits() as u32) * UNIT
    }
}

/// Room for one chunk in the [`ServeBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
    held: Gauge,
    bytes: i64,
}

impl Reservation {
    /// `data`, carrying this reservation: it is given back when the last clone of the result is
    /// dropped, that is when QUIC has the chunk acknowledged (or the connection is gone).
    pub fn attach(self, data: Bytes) -> Bytes {
        Bytes::from_owner(Reserved { data, _reservation: self })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
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

    fn budget(bytes: u64) -> (ServeBudget, Arc<Metrics>) {
        let metrics = Metrics::new();
        (ServeBudget::new(bytes, &metrics), metrics)
    }

    #[tokio::test]
    async fn a_reservation_is_held_until_the_last_clone_of_its_chunk_is_dropped() {
        let (budget, metrics) = budget(3 << 20);
        let chunk = budget.reserve(1 << 20).await.attach(Bytes::from(vec![5u8; 1 << 20]));
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
        let first = budget.reserve(1 << 20).await.attach(Bytes::from(vec![0u8; 1 << 20]));
        let second = budget.reserve(1 << 20).await;
        assert_eq!(metrics.serve_budget_waits.get(), 0);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(1 << 20).await }
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
        let big =
            tokio::time::timeout(Duration::from_secs(5), budget.reserve(4 << 20)).await.expect("no hang");
        assert_eq!(budget.held_bytes(), 1 << 20);
        drop(big);
        // Odd sizes round up to whole KiB and come back whole.
        let odd = budget.reserve(1).await;
        assert_eq!(budget.held_bytes(), 1024);
        drop(odd);
        assert_eq!(budget.held_bytes(), 0);
    }
}
