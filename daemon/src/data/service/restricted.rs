//! Serving a conditional grant: the restricted version of a source version — only the columns
//! and rows the grant's [`Restriction`] allows, written by the canonical writer
//! (`ferry_tables::restrict`), described by a manifest of its own that names the source
//! ([`DerivedFrom`]) and signed by this node — built once per (version, restriction) on first
//! request and then served like any version. The full version never leaves the node for such
//! a grant: every read of the dataset is answered from the restricted store.
//!
//! When the restricted version of the source's parent was built before, the new one also
//! stores the delta between the two restricted tables (`ferry_tables::delta::diff`), so a
//! restricted consumer syncs incrementally. Neighbours: [`crate::data::restricted`] (where they
//! are stored, pruned with their source), `crate::net::dispatch` (which grant sees what), and
//! `super::relay`: the ministry's hub, which holds another department's versions but must never
//! sign them, fetches the restricted versions from the provider's node instead of building them.

use super::{DataService, Refusal};
use crate::data::head::download_role;
use crate::data::store::{LocalFiles, NewVersion, Store, StoredVersion};
use crate::data::version::{ToDescribe, describe_files};
use ferry_net::wire::FrameWriter;
use ferry_proto::authz::Access;
use ferry_proto::filter::RowFilter;
use ferry_proto::manifest::{DerivedFrom, MANIFEST_FORMAT};
use ferry_proto::policy::Restriction;
use ferry_proto::{DatasetId, DeltaCounts, ErrorCode, FileEntry, FileRole, Hash32, Manifest};
use ferry_proto::{Role, ServiceMethod, TableFile, VersionKind, VersionNo};
use ferry_tables::canonical::{WriteOptions, WrittenFile};
use ferry_tables::restrict::{RestrictError, restrict};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::ChunksWanted;
use super::budget::Borrower;

/// The grant a restricted read is made under, and its service method: what the ministry's hub
/// names when it fetches the restricted version from the provider's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantRead {
    pub grant: u64,
    pub method: ServiceMethod,
}

/// The restricted tables of one build, written into the stage directory.
struct Built {
    table: Vec<WrittenFile>,
    delta: Option<(Vec<(WrittenFile, FileRole)>, DeltaCounts)>,
}

impl DataService {
    /// Answers `ListVersions` for a restricted reader: the restricted versions built so far,
    /// the latest built first if it was not.
    pub async fn send_restricted_versions(
        &self,
        dataset: DatasetId,
        restriction: &Restriction,
        read: GrantRead,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let (store, _) = self.restricted(&dataset, None, restriction, read).await?;
        self.send_versions_in(&store, dataset, writer).await
    }

    /// Answers `GetManifest` for a restricted reader with the restricted version's manifest.
    pub async fn send_restricted_manifest(
        &self,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        restriction: &Restriction,
        read: GrantRead,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let (store, number) = self.restricted(dataset, version, restriction, read).await?;
        self.send_manifest_in(&store, dataset, Some(number), writer).await
    }

    /// Answers `GetChunks` for a restricted reader from the restricted version's files.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_restricted_chunks(
        &self,
        who: &Borrower,
        dataset: &DatasetId,
        version: VersionNo,
        restriction: &Restriction,
        read: GrantRead,
        wanted: ChunksWanted,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        let (store, _) = self.restricted(dataset, Some(version), restriction, read).await?;
        self.send_chunks_in(&store, who, dataset, version, wanted, writer).await
    }

    /// The restricted store holding `dataset` at `version` (`None`: the latest source version)
    /// under `restriction`, the version built first if it was not — or, at the ministry's hub
    /// for a version another department published, fetched from the provider's node for `read`
    /// (`super::relay`). Concurrent requests for the same version wait for one build or fetch.
    pub async fn restricted(
        &self,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        restriction: &Restriction,
        read: GrantRead,
    ) -> Result<(Arc<Store>, VersionNo), Refusal> {
        let source = self.store.version(dataset, version)?;
        let number = source.manifest.version;
        let id = restriction.id();
        let store = self.restricted.store(&id).await?;
        if store.version(dataset, Some(number)).is_ok() {
            return Ok((store, number));
        }
        let flight = self.restricted.flight(dataset, number, &id);
        let _one_build = flight.lock().await;
        let me = self.creds.principal();
        if store.version(dataset, Some(number)).is_err()
            && source.manifest.publisher != me.dept
            && me.role == Role::Ministry
        {
            // The hub never signs what it did not publish: the provider's node built it.
            self.fetch_restricted(&store, &source, restriction, read).await?;
        } else if store.version(dataset, Some(number)).is_err() {
            let started = Instant::now();
            self.build_restricted(&store, &source, restriction).await?;
            self.metrics.restricted_builds.inc();
            self.metrics.restricted_build_seconds.observe(started.elapsed().as_secs_f64());
            tracing::info!(
                %dataset, version = %number, restriction = %id,
                seconds = started.elapsed().as_secs_f64(), "built a restricted version"
            );
        }
        Ok((store, number))
    }

    async fn build_restricted(
        &self,
        derived: &Store,
        source: &Arc<StoredVersion>,
        restriction: &Restriction,
    ) -> Result<(), Refusal> {
        let m = &source.manifest;
        if m.publisher != self.creds.principal().dept {
            // Its consumers accept a restricted version only from the source's publisher.
            return Err(Refusal::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{} {} was published by {}; ask one of its nodes for what the grant allows",
                    m.dataset, m.version, m.publisher
                ),
            ));
        }
        let root = self.settings.state_dir.join("restricted");
        std::fs::create_dir_all(&root).map_err(internal)?;
        let scratch = tempfile::Builder::new().prefix("build-").tempdir_in(&root).map_err(internal)?;
        let input = self.source_table(source, &scratch.path().join("source")).await?;
        let parent = match m.parent {
            Some(p) => derived.version(&m.dataset, Some(p)).ok(),
            None => None,
        };
        let parent_files = match &parent {
            Some(pv) => {
                let _lease = derived.lease(&pv.manifest.dataset, pv.manifest.version)?;
                let dir = scratch.path().join("parent");
                download_role(derived, pv, FileRole::Snapshot, &dir).await.map_err(head_failure)?;
                Some(pv.manifest.table.iter().map(|f| dir.join(f.name.as_str())).collect::<Vec<_>>())
            }
            None => None,
        };
        let stage = scratch.path().join("stage");
        let (keys, opts) = (m.key_columns.clone(), WriteOptions::from(m.layout));
        let (job_stage, job_restriction) = (stage.clone(), restriction.clone());
        let built = tokio::task::spawn_blocking(move || {
            write_restricted(&input, parent_files, &keys, &job_restriction, &job_stage, &opts)
        })
        .await
        .map_err(|e| internal(std::io::Error::other(e.to_string())))??;
        let manifest = self.restricted_manifest(source, restriction, built).await?;
        let (signed, signer) = self.signer.sign_as(manifest.to_json());
        let new = NewVersion { signed, manifest, signer };
        derived.commit_version(&stage, new, LocalFiles::Move).await?;
        Ok(())
    }

    /// The source version's table files in `dir`: downloaded from the store for a snapshot,
    /// copied from the head (the latest table, which only a delta describes) otherwise.
    async fn source_table(&self, source: &Arc<StoredVersion>, dir: &Path) -> Result<Vec<PathBuf>, Refusal> {
        let m = &source.manifest;
        let _lease = self.store.lease(&m.dataset, m.version)?;
        let paths: Vec<PathBuf> = m.table.iter().map(|f| dir.join(f.name.as_str())).collect();
        if m.kind == VersionKind::Snapshot {
            download_role(&self.store, source, FileRole::Snapshot, dir).await.map_err(head_failure)?;
            return Ok(paths);
        }
        let latest = self.store.version(&m.dataset, None)?;
        if latest.manifest.version != m.version {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!(
                    "{} {} is stored as a delta only; its restricted version can be built while it is the latest",
                    m.dataset, m.version
                ),
            ));
        }
        // The head moves with each publish: read it while no publish runs.
        let _serial = self.publish_lock.lock().await;
        let head = self.heads.ensure(&self.store, &latest).await.map_err(head_failure)?;
        std::fs::create_dir_all(dir).map_err(internal)?;
        for (from, to) in head.files.iter().zip(&paths) {
            std::fs::copy(from, to).map_err(internal)?;
        }
        Ok(paths)
    }

    /// The manifest of a restricted version of `source` made of `built`.
    async fn restricted_manifest(
        &self,
        source: &StoredVersion,
        restriction: &Restriction,
        built: Built,
    ) -> Result<Manifest, Refusal> {
        let m = &source.manifest;
        let chunk_size = m.chunk_size;
        let (table_written, delta) = (built.table, built.delta);
        let delta_written: Vec<(WrittenFile, FileRole)> =
            delta.as_ref().map(|(files, _)| files.clone()).unwrap_or_default();
        let table_for_entries = table_written.clone();
        let (mut files, delta_entries) = tokio::task::spawn_blocking(move || {
            let table_files = table_for_entries.len();
            let files = table_for_entries.into_iter().map(|w| (w, FileRole::Snapshot)).chain(delta_written);
            let files = files.map(|(w, role)| ToDescribe {
                path: w.path,
                name: w.name,
                rows: w.rows,
                role,
                chunks: true,
                written: Some(w.hashes),
            });
            // The table and the delta together, on every core (as a publish's).
            let mut table: Vec<FileEntry> =
                describe_files(files.collect(), chunk_size)?.into_iter().map(|d| d.entry).collect();
            let delta = table.split_off(table_files);
            Ok::<_, std::io::Error>((table, delta))
        })
        .await
        .map_err(|e| internal(std::io::Error::other(e.to_string())))?
        .map_err(internal)?;
        let table: Vec<TableFile> = files
            .iter()
            .zip(&table_written)
            .map(|(f, w)| TableFile {
                name: f.name.clone(),
                size: f.size,
                rows: f.rows,
                blake3: f.blake3,
                rows_blake3: w.rows_blake3.map(|h| Hash32(*h.as_bytes())),
            })
            .collect();
        files.extend(delta_entries);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataset: m.dataset.clone(),
            version: m.version,
            kind: VersionKind::Snapshot,
            parent: delta.as_ref().and(m.parent),
            publisher: self.creds.principal().dept.clone(),
            created_unix_ms: now_unix_ms(),
            schema_fingerprint: m.schema_fingerprint.clone(),
            definition_version: m.definition_version,
            share_type: m.share_type,
            catalog_version: m.catalog_version,
            key_columns: m.key_columns.clone(),
            layout: m.layout,
            writer: Some(WriteOptions::from(m.layout).writer()),
            row_count: table.iter().map(|f| f.rows).sum(),
            chunk_size,
            files,
            table,
            delta: delta.map(|(_, counts)| counts),
            derived_from: Some(DerivedFrom {
                dataset: m.dataset.clone(),
                version: m.version,
                source_publisher: m.publisher.clone(),
                source_manifest: Hash32(source.signed.blake3),
                restriction_id: restriction.id(),
                restriction: restriction.clone(),
            }),
        };
        manifest.validate().map_err(|e| internal(std::io::Error::other(e.to_string())))?;
        Ok(manifest)
    }
}

/// The blocking part of a build: restrict the source table, diff against the restricted parent.
fn write_restricted(
    input: &[PathBuf],
    parent: Option<Vec<PathBuf>>,
    keys: &[String],
    restriction: &Restriction,
    stage: &Path,
    opts: &WriteOptions,
) -> Result<Built, Refusal> {
    std::fs::create_dir_all(stage).map_err(internal)?;
    let filter = match &restriction.rows {
        Some(text) => Some(RowFilter::parse(text).map_err(|e| does_not_fit(&e.to_string()))?),
        None => None,
    };
    let columns = restriction.columns.as_deref();
    let restricted =
        restrict(input, keys, columns, filter.as_ref(), stage, "part", opts).map_err(|e| match e {
            RestrictError::Table(t) => internal(std::io::Error::other(t.to_string())),
            other => does_not_fit(&other.to_string()),
        })?;
    let delta = match parent {
        Some(old) => {
            let new: Vec<PathBuf> = restricted.files.iter().map(|f| f.path.clone()).collect();
            let d = ferry_tables::delta::diff(&old, &new, keys, stage, opts)
                .map_err(|e| internal(std::io::Error::other(e.to_string())))?;
            let counts = DeltaCounts {
                inserted: d.stats.inserted,
                updated: d.stats.updated,
                deleted: d.stats.deleted,
            };
            let mut files: Vec<(WrittenFile, FileRole)> =
                d.upserts.into_iter().map(|f| (f, FileRole::Upserts)).collect();
            files.extend(d.deletes.into_iter().map(|f| (f, FileRole::Deletes)));
            Some((files, counts))
        }
        None => None,
    };
    Ok(Built { table: restricted.files, delta })
}

/// The grant's restriction does not fit the version (a column it names is gone, a literal of
/// the wrong type, the key left out): the reader's grant needs to be reviewed.
fn does_not_fit(detail: &str) -> Refusal {
    Refusal::new(
        ErrorCode::PermissionDenied,
        format!(
            "the grant's restriction does not fit this version ({detail}); ask the provider to review the grant"
        ),
    )
}

fn head_failure(e: crate::data::head::HeadError) -> Refusal {
    Refusal::internal("reading the source of a restricted version", &e)
}

fn internal(e: std::io::Error) -> Refusal {
    Refusal::internal("building a restricted version", &e)
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl DataService {
    /// Answers `ListVersions` with what `access` lets the reader see.
    pub async fn send_versions_for(
        &self,
        access: &Access,
        method: ServiceMethod,
        dataset: DatasetId,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        match access {
            Access::Full => self.send_versions(dataset, writer).await,
            Access::Restricted { restriction, grant } => {
                let read = GrantRead { grant: *grant, method };
                self.send_restricted_versions(dataset, restriction, read, writer).await
            }
        }
    }

    /// Answers `GetManifest` with what `access` lets the reader see.
    pub async fn send_manifest_for(
        &self,
        access: &Access,
        method: ServiceMethod,
        dataset: &DatasetId,
        version: Option<VersionNo>,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        match access {
            Access::Full => self.send_manifest(dataset, version, writer).await,
            Access::Restricted { restriction, grant } => {
                let read = GrantRead { grant: *grant, method };
                self.send_restricted_manifest(dataset, version, restriction, read, writer).await
            }
        }
    }

    /// Answers `GetChunks` with what `access` lets the reader see.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_chunks_for(
        &self,
        access: &Access,
        method: ServiceMethod,
        who: &Borrower,
        dataset: &DatasetId,
        version: VersionNo,
        wanted: ChunksWanted,
        writer: &mut FrameWriter,
    ) -> Result<u64, Refusal> {
        match access {
            Access::Full => self.send_chunks(who, dataset, version, wanted, writer).await,
            Access::Restricted { restriction, grant } => {
                let read = GrantRead { grant: *grant, method };
                self.send_restricted_chunks(who, dataset, version, restriction, read, wanted, writer).await
            }
        }
    }
}
