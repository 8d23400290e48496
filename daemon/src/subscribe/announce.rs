//! What a node tells its subscribers: per dataset, the latest version it committed (published
//! here or replicated from a peer), as a `tokio::sync::watch` each subscriber stream follows.
//!
//! The data service feeds it where versions are committed (`data/service/publish.rs`,
//! `data/service/replicate.rs`); [`super::serve`] reads it for each `Subscribe` stream. A
//! dataset's channel is made on first use, from the store's latest version, so a subscriber of a
//! node that committed nothing since it started still learns what it holds.

use crate::data::store::Store;
use ferry_proto::{DatasetId, DeptId, VersionNo};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use tokio::sync::watch;

/// Commit times kept per dataset, for how far behind a subscriber is.
const KEPT_COMMIT_TIMES: usize = 256;

/// A version a node holds, as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub version: VersionNo,
    pub publisher: DeptId,
    /// When this node committed it (Unix milliseconds, this node's clock); for a version held
    /// since before the node started, its publication time.
    pub committed_ms: u64,
}

#[derive(Debug)]
struct DatasetAnnouncements {
    latest: watch::Sender<Option<Announced>>,
    /// Commit time of recent versions, by number.
    committed: BTreeMap<VersionNo, u64>,
}

/// The latest version of each dataset, for the node's subscribers (see the module doc).
#[derive(Debug, Default)]
pub struct Announcements {
    datasets: Mutex<HashMap<DatasetId, DatasetAnnouncements>>,
}

impl Announcements {
    /// A version of `dataset` was committed: subscribers are told when it is newer than what
    /// they were last told.
    pub fn committed(&self, dataset: &DatasetId, announced: Announced) {
        let mut datasets = self.datasets.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = datasets.entry(dataset.clone()).or_insert_with(|| DatasetAnnouncements {
            latest: watch::Sender::new(None),
            committed: BTreeMap::new(),
        });
        entry.committed.insert(announced.version, announced.committed_ms);
        while entry.committed.len() > KEPT_COMMIT_TIMES {
            entry.committed.pop_first();
        }
        entry.latest.send_if_modified(|latest| {
            let newer = latest.as_ref().is_none_or(|l| announced.version > l.version);
            if newer {
                *latest = Some(announced);
            }
            newer
        });
    }

    /// Follows the latest version of `dataset`; the first value is what `store` holds when the
    /// dataset has no channel yet.
    pub fn watch(&self, dataset: &DatasetId, store: &Store) -> watch::Receiver<Option<Announced>> {
        let mut datasets = self.datasets.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = datasets.entry(dataset.clone()).or_insert_with(|| {
            let held = store.version(dataset, None).ok().map(|v| Announced {
                version: v.manifest.version,
                publisher: v.manifest.publisher.clone(),
                committed_ms: u64::try_from(v.manifest.created_unix_ms).unwrap_or(0),
            });
            let mut committed = BTreeMap::new();
            if let Some(held) = &held {
                committed.insert(held.version, held.committed_ms);
            }
            DatasetAnnouncements { latest: watch::Sender::new(held), committed }
        });
        entry.latest.subscribe()
    }

    /// When the first version after `held` this node knows of was committed: how long a
    /// subscriber holding `held` has been behind. `None` when it knows of none.
    pub fn first_missed(&self, dataset: &DatasetId, held: Option<VersionNo>) -> Option<u64> {
        let datasets = self.datasets.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = datasets.get(dataset)?;
        match held {
            Some(held) => entry.committed.range(held..).find(|(v, _)| **v > held).map(|(_, ms)| *ms),
            None => entry.committed.values().next().copied(),
        }
    }
}

/// How far a holder of `held` is behind `latest`: versions and seconds (at `now_ms`).
pub fn lag(
    announcements: &Announcements,
    dataset: &DatasetId,
    held: Option<VersionNo>,
    latest: Option<&Announced>,
    now_ms: u64,
) -> (u64, f64) {
    let Some(latest) = latest else { return (0, 0.0) };
    let held_no = held.map_or(0, VersionNo::get);
    if held_no >= latest.version.get() {
        return (0, 0.0);
    }
    let since = announcements.first_missed(dataset, held).unwrap_or(latest.committed_ms);
    (latest.version.get() - held_no, now_ms.saturating_sub(since) as f64 / 1000.0)
}

/// Now, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> VersionNo {
        VersionNo::new(n).unwrap()
    }

    fn announced(n: u64, ms: u64) -> Announced {
        Announced { version: v(n), publisher: DeptId::new("zj").unwrap(), committed_ms: ms }
    }

    #[test]
    fn only_newer_versions_are_announced_and_lag_counts_from_the_first_missed() {
        let a = Announcements::default();
        let cars = DatasetId::new("cars").unwrap();
        a.committed(&cars, announced(2, 1_000));
        a.committed(&cars, announced(3, 5_000));
        a.committed(&cars, announced(1, 9_000)); // older: not announced
        let latest = a.datasets.lock().unwrap()[&cars].latest.borrow().clone().unwrap();
        assert_eq!(latest.version, v(3));
        assert_eq!(lag(&a, &cars, Some(v(1)), Some(&latest), 11_000), (2, 10.0));
        assert_eq!(lag(&a, &cars, Some(v(2)), Some(&latest), 11_000), (1, 6.0));
        assert_eq!(lag(&a, &cars, Some(v(3)), Some(&latest), 11_000), (0, 0.0));
        assert_eq!(lag(&a, &cars, None, None, 11_000), (0, 0.0));
    }
}
