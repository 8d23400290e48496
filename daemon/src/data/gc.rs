//! Retention and garbage collection of the [`Store`]: versions the dataset's
//! [`RetentionPolicy`] no longer keeps are deleted, and so are files no manifest refers to.
//!
//! # Which versions are kept
//!
//! Versions are taken newest first. The policy keeps a run of the newest versions: it stops at
//! the first one that is beyond `keep-last` (counted in stored versions, the newest being 1) or
//! whose `created_unix_ms` is older than `now - max-age`. The latest version is always kept.
//!
//! Kept versions must stay reconstructible, and a delta version is only its change since its
//! parent. So the oldest version actually kept is the **newest stored snapshot-kind version at or
//! before the oldest version the policy keeps**; it and every version after it stay (their
//! deltas rebuild the kept tables). With versions 1..=7, snapshots at 1 and 5 and `keep-last = 2`,
//! the policy keeps 6 and 7, and GC keeps 5, 6 and 7. If no snapshot lies at or before the
//! policy's oldest version, nothing is removed. A consumer whose version was collected falls
//! back to a snapshot on its own: the planner sees the missing deltas in `ListVersions`.
//!
//! # How a version is removed
//!
//! Under the store's layout lock (commits wait; GC never deletes files of a commit in progress):
//! 1. it leaves the in-memory index — unless a reader holds a [`crate::data::store::Lease`] on it,
//!    checked under the same lock, in which case it is skipped and collected on a later run;
//! 2. its `manifest.signed` is deleted: the version disappears atomically;
//! 3. its files are deleted.
//!
//! A crash after step 2 leaves files without a manifest, which the store never indexes and the
//! next run deletes. Versions are removed oldest first, so at any crash point the visible
//! versions are a subset of the old ones and a superset of the new ones, each complete.
//!
//! # Unreferenced files
//!
//! Each run also sweeps every `v<N>` directory: without a manifest, all its files go (an
//! interrupted commit or removal); with an indexed manifest, files the manifest does not list go.
//! A manifest that is present but failed verification is left alone for an operator.
//! `definition.toml` and anything outside `v<N>` directories is never touched, nor are the
//! provider's head tables (the heads replace themselves, see [`crate::data::head`]).

use crate::config::{RetentionConfig, RetentionPolicy};
use crate::data::blob::BlobError;
use crate::data::store::{
    MANIFEST_NAME, Store, StoreError, StoredVersion, Unindexed, chunk_hashes_key, last_segment,
    version_prefix,
};
use ferry_proto::{DatasetId, VersionKind, VersionNo};
use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one garbage collection run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Versions deleted, oldest first per dataset.
    pub deleted_versions: Vec<(DatasetId, VersionNo)>,
    /// Files deleted that belonged to no visible version (interrupted commits or removals, or
    /// left in a version's directory but not in its manifest).
    pub deleted_orphan_files: u64,
    /// Bytes of every deleted object, manifests included.
    pub deleted_bytes: u64,
    /// Versions the policy removes but a running transfer holds; collected on a later run.
    pub skipped_leased: Vec<(DatasetId, VersionNo)>,
}

/// What the retention rule needs to know of a stored version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionFacts {
    pub version: VersionNo,
    pub kind: VersionKind,
    pub created_unix_ms: i64,
}

impl VersionFacts {
    fn of(stored: &StoredVersion) -> Self {
        let m = &stored.manifest;
        Self { version: m.version, kind: m.kind, created_unix_ms: m.created_unix_ms }
    }
}

/// The versions `policy` removes from `versions` (sorted oldest first) at `now_unix_ms`, oldest
/// first. See the module documentation for the rule.
pub fn removable(versions: &[VersionFacts], policy: &RetentionPolicy, now_unix_ms: i64) -> Vec<VersionNo> {
    let Some(mut oldest_kept) = versions.len().checked_sub(1) else { return Vec::new() };
    let cutoff = policy
        .max_age
        .map(|age| now_unix_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    for (index, v) in versions.iter().enumerate().rev().skip(1) {
        let newest_count = (versions.len() - index) as u64;
        let within_count = policy.keep_last.is_none_or(|n| newest_count <= n);
        let young_enough = cutoff.is_none_or(|c| v.created_unix_ms >= c);
        if !(within_count && young_enough) {
            break;
        }
        oldest_kept = index;
    }
    let Some(start) = versions[..=oldest_kept].iter().rposition(|v| v.kind == VersionKind::Snapshot) else {
        return Vec::new();
    };
    versions[..start].iter().map(|v| v.version).collect()
}

fn unix_ms(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Runs garbage collection once over every dataset in the store, with the policies of
    /// `retention` at time `now`. Stops at the first storage error; what is left is collected on
    /// the next run.
    pub async fn collect(
        &self,
        retention: &RetentionConfig,
        now: SystemTime,
    ) -> Result<GcReport, StoreError> {
        let now_ms = unix_ms(now);
        let mut report = GcReport::default();
        for prefix in self.blobs().list_dirs("datasets").await? {
            let Ok(dataset) = DatasetId::new(last_segment(&prefix)) else { continue };
            let policy = retention.policy(&dataset);
            let facts: Vec<VersionFacts> = match self.versions(&dataset) {
                Ok(versions) => versions.iter().map(|v| VersionFacts::of(v)).collect(),
                Err(_) => Vec::new(),
            };
            for version in removable(&facts, &policy, now_ms) {
                self.remove_version(&dataset, version, &mut report).await?;
            }
            self.sweep(&dataset, &prefix, &mut report).await?;
        }
        Ok(report)
    }

    /// Removes one version: index, then manifest, then files (see the module documentation).
    async fn remove_version(
        &self,
        dataset: &DatasetId,
        version: VersionNo,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let _layout = self.lock_layout().await;
        let stored = match self.unindex_unless_leased(dataset, version)? {
            Unindexed::Removed(stored) => stored,
            Unindexed::Leased => {
                tracing::info!(%dataset, %version, "a transfer holds this version; collecting it later");
                report.skipped_leased.push((dataset.clone(), version));
                return Ok(());
            }
            Unindexed::Absent => return Ok(()),
        };
        let prefix = version_prefix(dataset, version);
        let manifest_key = format!("{prefix}/{MANIFEST_NAME}");
        if let Err(e) = self.blobs().delete(&manifest_key).await {
            // Still visible in storage: keep serving it.
            self.reindex(stored)?;
            return Err(e.into());
        }
        report.deleted_bytes += stored.signed.len;
        let sizes: HashMap<String, u64> =
            stored.manifest.files.iter().map(|f| (format!("{prefix}/{}", f.name), f.size)).collect();
        for key in self.blobs().list(&prefix).await? {
            let size = match sizes.get(&key) {
                Some(size) => *size,
                None => self.size_or_zero(&key).await?,
            };
            self.blobs().delete(&key).await?;
            report.deleted_bytes += size;
        }
        tracing::info!(%dataset, %version, "removed by retention");
        report.deleted_versions.push((dataset.clone(), version));
        Ok(())
    }

    /// Deletes files no visible version refers to, one `v<N>` directory at a time.
    async fn sweep(
        &self,
        dataset: &DatasetId,
        prefix: &str,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        for vprefix in self.blobs().list_dirs(prefix).await? {
            let Some(version) = last_segment(&vprefix)
                .strip_prefix('v')
                .and_then(|n| n.parse().ok())
                .and_then(|n| VersionNo::new(n).ok())
            else {
                continue;
            };
            let _layout = self.lock_layout().await;
            let keys = self.blobs().list(&vprefix).await?;
            let manifest_key = format!("{vprefix}/{MANIFEST_NAME}");
            let referenced: HashSet<String> = match self.version(dataset, Some(version)) {
                Ok(stored) => {
                    let m = &stored.manifest;
                    let files = m.files.iter().map(|f| format!("{vprefix}/{}", f.name));
                    let hashes = (0..m.files.len()).map(|i| chunk_hashes_key(dataset, version, i));
                    files.chain(hashes).collect()
                }
                Err(_) if keys.contains(&manifest_key) => {
                    tracing::warn!(%dataset, %version, "leaving a version whose manifest does not verify");
                    continue;
                }
                Err(_) => HashSet::new(),
            };
            for key in keys.iter().filter(|k| **k != manifest_key && !referenced.contains(*k)) {
                let size = self.size_or_zero(key).await?;
                self.blobs().delete(key).await?;
                report.deleted_orphan_files += 1;
                report.deleted_bytes += size;
            }
        }
        Ok(())
    }

    async fn size_or_zero(&self, key: &str) -> Result<u64, StoreError> {
        match self.blobs().size(key).await {
            Ok(size) => Ok(size),
            Err(BlobError::NotFound { .. }) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
