//! Pull planning: the cheapest way, in bytes, from the version a consumer holds to the one it
//! wants — the chain of deltas, or the nearest stored snapshot plus the deltas after it. Pure:
//! it reads the node's version list and decides.

use ferry_proto::{VersionNo, VersionSummary};
use std::collections::BTreeMap;

/// One step of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetch the table files of this version.
    Table(VersionNo),
    /// Fetch this version's delta and apply it to the previous version's table.
    Delta(VersionNo),
}

/// What to fetch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Bytes the steps fetch.
    pub bytes: u64,
    /// The consumer held a version but its deltas are gone (retention): it starts over from a
    /// snapshot.
    pub fell_back_to_snapshot: bool,
}

/// Plans the way from `have` (a version the consumer holds, if any) to `target`.
/// `None`: the node holds nothing the target can be built from.
pub fn plan(have: Option<VersionNo>, target: VersionNo, versions: &[VersionSummary]) -> Option<Plan> {
    let by_number: BTreeMap<VersionNo, &VersionSummary> = versions.iter().map(|v| (v.version, v)).collect();
    by_number.get(&target)?;
    let have = have.filter(|h| *h <= target);
    if have == Some(target) {
        return Some(Plan { steps: Vec::new(), bytes: 0, fell_back_to_snapshot: false });
    }
    // The deltas of every version in (from, target], or None if one is missing.
    let chain = |from: VersionNo| -> Option<(Vec<Step>, u64)> {
        let (mut steps, mut bytes, mut previous) = (Vec::new(), 0u64, from);
        while previous < target {
            let next = previous.next()?;
            let version = by_number.get(&next)?;
            if version.parent != Some(previous) {
                return None;
            }
            steps.push(Step::Delta(next));
            bytes = bytes.saturating_add(version.delta_bytes);
            previous = next;
        }
        Some((steps, bytes))
    };
    let from_have =
        have.and_then(|h| chain(h).map(|(steps, bytes)| Plan { steps, bytes, fell_back_to_snapshot: false }));
    let from_snapshots = by_number
        .range(..=target)
        .filter(|(n, v)| v.snapshot_bytes > 0 && have.is_none_or(|h| **n > h))
        .filter_map(|(n, v)| {
            let (mut rest, bytes) = chain(*n)?;
            let mut steps = vec![Step::Table(*n)];
            steps.append(&mut rest);
            Some(Plan { steps, bytes: bytes.saturating_add(v.snapshot_bytes), fell_back_to_snapshot: false })
        })
        .min_by_key(|p| p.bytes);
    match (from_have, from_snapshots) {
        (Some(d), Some(s)) => Some(if s.bytes < d.bytes { s } else { d }),
        (Some(d), None) => Some(d),
        (None, Some(mut s)) => {
            s.fell_back_to_snapshot = have.is_some();
            Some(s)
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::VersionKind;

    fn v(n: u64) -> VersionNo {
        VersionNo::new(n).unwrap()
    }

    /// Versions 1..=n: v1 a snapshot of 1000 bytes, then deltas of 10 bytes, with a stored
    /// snapshot every `every` versions.
    fn history(n: u64, every: u64) -> Vec<VersionSummary> {
        (1..=n)
            .map(|i| VersionSummary {
                version: v(i),
                kind: if i == 1 || i % every == 0 { VersionKind::Snapshot } else { VersionKind::Delta },
                parent: (i > 1).then(|| v(i - 1)),
                rows: 100,
                delta_bytes: if i > 1 { 10 } else { 0 },
                snapshot_bytes: if i == 1 || i % every == 0 { 1000 } else { 0 },
            })
            .collect()
    }

    #[test]
    fn holder_of_a_recent_version_takes_the_deltas() {
        let p = plan(Some(v(3)), v(6), &history(6, 5)).unwrap();
        assert_eq!(p.steps, vec![Step::Delta(v(4)), Step::Delta(v(5)), Step::Delta(v(6))]);
        assert_eq!(p.bytes, 30);
        assert!(!p.fell_back_to_snapshot);
    }

    #[test]
    fn newcomer_takes_the_nearest_snapshot_then_deltas() {
        let p = plan(None, v(7), &history(7, 5)).unwrap();
        assert_eq!(p.steps, vec![Step::Table(v(5)), Step::Delta(v(6)), Step::Delta(v(7))]);
        assert_eq!(p.bytes, 1020);
    }

    #[test]
    fn a_long_delta_chain_loses_to_a_snapshot() {
        let mut versions = history(4, 4);
        for version in &mut versions[1..] {
            version.delta_bytes = 600;
        }
        let p = plan(Some(v(1)), v(4), &versions).unwrap();
        assert_eq!(p.steps, vec![Step::Table(v(4))]);
        assert_eq!(p.bytes, 1000);
    }

    #[test]
    fn past_retention_it_falls_back_to_a_snapshot_and_says_so() {
        // Versions 2..=4 were collected; 5 is a snapshot.
        let versions: Vec<_> = history(7, 5).into_iter().filter(|x| x.version.get() >= 5).collect();
        let p = plan(Some(v(2)), v(7), &versions).unwrap();
        assert_eq!(p.steps[0], Step::Table(v(5)));
        assert!(p.fell_back_to_snapshot);
    }

    #[test]
    fn nothing_to_build_from() {
        let versions: Vec<_> = history(7, 100).into_iter().filter(|x| x.version.get() >= 5).collect();
        assert_eq!(plan(None, v(7), &versions), None);
        assert_eq!(plan(None, v(9), &history(7, 5)), None);
    }

    #[test]
    fn holding_the_target_is_an_empty_plan() {
        assert_eq!(plan(Some(v(3)), v(3), &history(3, 5)).unwrap().steps, vec![]);
    }
}
