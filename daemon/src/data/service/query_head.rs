//! The head table of a dataset's latest version, opened for an online query: the latest
//! version is usually stored as a delta only, so its table exists on this node only as the head
//! (`crate::data::head`), kept by publishes and rebuilt from the store on any node that holds
//! the chain (a replica or subscriber too).
//!
//! Neighbours: `crate::data::query` verifies and reads the files opened here; `publish` moves
//! the head under the same lock.

use super::{DataService, Refusal};
use crate::data::store::StoredVersion;
use crate::telemetry::ReasonLabel;
use ferry_proto::{DatasetId, ErrorCode};
use std::sync::Arc;

impl DataService {
    /// The latest version of `dataset` and its head table's files, open for reading, in the
    /// manifest's order. The head is checked by BLAKE3 (rebuilt when missing or damaged) and
    /// opened while no publish runs; a publish moves the head by renaming a new directory in
    /// and removing the old one, never writing a head file in place, so the open files keep the
    /// checked bytes however long a query reads them.
    pub async fn open_latest_head(
        &self,
        dataset: &DatasetId,
    ) -> Result<(Arc<StoredVersion>, Vec<std::fs::File>), Refusal> {
        let _serial = self.publish_lock.lock().await;
        let latest = self.store.version(dataset, None)?;
        let head = self.heads.ensure(&self.store, &latest).await.map_err(|e| {
            tracing::warn!(error = %e, %dataset, "cannot get the head table to query");
            Refusal::new(
                ErrorCode::Unavailable,
                format!("{dataset} {}: its table cannot be built on this node: {e}", latest.manifest.version),
            )
        })?;
        if let Some(reason) = head.rebuilt {
            self.metrics.head_rebuilds.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
        }
        let files = head
            .files
            .iter()
            .map(std::fs::File::open)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Refusal::internal("opening the head table", &e))?;
        Ok((latest, files))
    }
}
