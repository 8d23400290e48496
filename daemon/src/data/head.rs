//! The provider's head: the table at the latest version of each dataset this node publishes,
//! kept as local Parquet files under the state directory so the next publish can diff against
//! it. Before each use every head file is checked by its BLAKE3 against the latest manifest's
//! table hashes (a size check would let a flipped bit poison every later delta). When the head
//! is missing or stale (a new state directory, a crash between commit and head update) or
//! damaged, it is rebuilt from the store: the nearest stored snapshot plus the deltas after it,
//! each checked against its manifest. The head is a cache checked at every use, so it is not
//! fsynced: a head torn by a power loss is found damaged and rebuilt.
//!
//! Beside its table files a head may keep the table's row prints ([`PRINTS_FILE`],
//! `ferry_tables::delta::prints`), written by the publish that made it: with them the next
//! diff reads the head's key columns only. They are checked whole before use ([`Heads::prints`])
//! and are a cache too: a head rebuilt from the store, or one whose prints are missing, damaged
//! or of another table, is diffed by value (and the publish leaves prints for the next one).

use super::store::{Store, StoreError, StoredVersion};
use ferry_proto::{DatasetId, FileEntry, FileRole, Manifest, TableFile, VersionKind, VersionNo};
use ferry_tables::canonical::WriteOptions;
use ferry_tables::delta::prints;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Why the head could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("rebuilding the table of {dataset} {version}: {detail}")]
    Rebuild { dataset: DatasetId, version: VersionNo, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HeadError + '_ {
    move |source| HeadError::Io { path: path.to_owned(), source }
}

/// Why [`Heads::ensure`] rebuilt a head from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// No head of the latest version was kept (new state directory, interrupted publish).
    Missing,
    /// A head file was there but its BLAKE3 differs from the manifest's: the disk damaged it.
    Corrupt,
}

impl Rebuilt {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Corrupt => "corrupt",
        }
    }
}

/// The head table of a version, ready to diff against.
#[derive(Debug)]
pub struct Head {
    /// The table's files, in the manifest's order.
    pub files: Vec<PathBuf>,
    /// Whether, and why, it was rebuilt from the store first.
    pub rebuilt: Option<Rebuilt>,
}

/// Heads of the datasets this node publishes, under `<state>/heads`.
#[derive(Debug)]
pub struct Heads {
    dir: PathBuf,
}

impl Heads {
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join("heads") }
    }

    fn version_dir(&self, dataset: &DatasetId, version: VersionNo) -> PathBuf {
        self.dir.join(dataset.as_str()).join(format!("v{}", version.get()))
    }

    /// The row prints kept with the head of `m` (whose table [`Self::ensure`] checked), and
    /// their row count, if they are there, whole, and bound to `m`'s table files; `None` (and
    /// why, in the log) otherwise: the diff then compares values.
    pub async fn prints(&self, m: &Manifest) -> Option<(PathBuf, u64)> {
        let path = self.version_dir(&m.dataset, m.version).join(PRINTS_FILE);
        let binding = prints::binding(m.table.iter().map(|f| &f.blake3.0));
        let (rows, at) = (m.row_count, path.clone());
        let checked = tokio::task::spawn_blocking(move || prints::check(&at, rows, &binding)).await;
        match checked {
            Ok(Ok(())) => Some((path, rows)),
            Ok(Err(ferry_tables::error::TableError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::debug!(dataset = %m.dataset, version = %m.version, "the head keeps no row prints; diffing by value");
                None
            }
            Ok(Err(e)) => {
                tracing::info!(dataset = %m.dataset, version = %m.version, error = %e, "the head's row prints cannot be used; diffing by value");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the check of the head's row prints failed; diffing by value");
                None
            }
        }
    }

    /// The table files of `latest`, each checked by its BLAKE3, rebuilt from the store when
    /// missing or damaged.
    pub async fn ensure(&self, store: &Store, latest: &StoredVersion) -> Result<Head, HeadError> {
        let m = &latest.manifest;
        let dir = self.version_dir(&m.dataset, m.version);
        let files: Vec<PathBuf> = m.table.iter().map(|f| dir.join(f.name.as_str())).collect();
        let (table, paths) = (m.table.clone(), files.clone());
        let found = tokio::task::spawn_blocking(move || check_head(&table, &paths))
            .await
            .map_err(|e| HeadError::Io { path: dir.clone(), source: std::io::Error::other(e) })?;
        let rebuilt = match found {
            HeadCheck::Intact => return Ok(Head { files, rebuilt: None }),
            HeadCheck::Missing => {
                tracing::info!(dataset = %m.dataset, version = %m.version, "rebuilding the head table from the store");
                Rebuilt::Missing
            }
            HeadCheck::Corrupt(file) => {
                tracing::warn!(
                    dataset = %m.dataset, version = %m.version, file = %file.display(),
                    "the head table does not match its manifest's BLAKE3 (damaged on disk); rebuilding it from the store"
                );
                Rebuilt::Corrupt
            }
        };
        let scratch = self.dir.join(".rebuild").join(m.dataset.as_str());
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        tokio::fs::create_dir_all(&scratch).await.map_err(io(&scratch))?;
        let built = self.rebuild(store, latest, &scratch).await;
        let built = match built {
            Ok(dir) => dir,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&scratch).await;
                return Err(e);
            }
        };
        self.install(&m.dataset, m.version, &built)?.remove();
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        Ok(Head { files, rebuilt: Some(rebuilt) })
    }

    /// Materializes the table of `latest` under `scratch`; returns the directory holding it.
    async fn rebuild(
        &self,
        store: &Store,
        latest: &StoredVersion,
        scratch: &Path,
    ) -> Result<PathBuf, HeadError> {
        let m = &latest.manifest;
        let rebuild_error =
            |detail: String| HeadError::Rebuild { dataset: m.dataset.clone(), version: m.version, detail };
        let versions = store.versions(&m.dataset)?;
        let chain_start = versions
            .iter()
            .rev()
            .filter(|v| v.manifest.version <= m.version)
            .find(|v| v.manifest.kind == VersionKind::Snapshot)
            .ok_or_else(|| rebuild_error("no stored snapshot to start from".into()))?;
        let start = chain_start.manifest.version;
        // Garbage collection leaves the chain alone while it is read.
        let _leases = versions
            .iter()
            .filter(|v| v.manifest.version >= start && v.manifest.version <= m.version)
            .map(|v| store.lease(&m.dataset, v.manifest.version))
            .collect::<Result<Vec<_>, _>>()?;
        let mut table_dir = scratch.join(format!("v{}", start.get()));
        download_role(store, chain_start, FileRole::Snapshot, &table_dir).await?;
        let mut base_manifest = chain_start.manifest.clone();
        for version in
            versions.iter().filter(|v| v.manifest.version > start && v.manifest.version <= m.version)
        {
            let vm = &version.manifest;
            let delta_dir = scratch.join(format!("delta-v{}", vm.version.get()));
            download_role(store, version, FileRole::Upserts, &delta_dir).await?;
            download_role(store, version, FileRole::Deletes, &delta_dir).await?;
            let out = scratch.join(format!("v{}", vm.version.get()));
            let base: Vec<PathBuf> =
                base_manifest.table.iter().map(|f| table_dir.join(f.name.as_str())).collect();
            let pick =
                |role| vm.files_with(role).map(|f| delta_dir.join(f.name.as_str())).collect::<Vec<_>>();
            let (upserts, deletes) = (pick(FileRole::Upserts), pick(FileRole::Deletes));
            let (keys, opts, out2) = (
                vm.key_columns.clone(),
                WriteOptions::for_manifest(vm.layout, vm.writer.as_deref()),
                out.clone(),
            );
            let applied = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&out2).map_err(|e| e.to_string())?;
                ferry_tables::delta::apply(&base, &upserts, &deletes, &keys, &out2, &opts)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| rebuild_error(e.to_string()))?
            .map_err(rebuild_error)?;
            for (written, expected) in applied.iter().zip(&vm.table) {
                let hash = blake3::hash(&std::fs::read(&written.path).map_err(io(&written.path))?);
                if hash.as_bytes() != &expected.blake3.0 {
                    return Err(rebuild_error(format!("{} does not match the manifest", expected.name)));
                }
            }
            table_dir = out;
            base_manifest = vm.clone();
        }
        Ok(table_dir)
    }

    /// Makes `files_dir` (holding exactly the table files) the head of `dataset` at `version`;
    /// returns the older heads it replaces, for the caller to remove (a publish does so after
    /// answering: unlinking a table's dozens of files took 0.12 s of a 10M-row publish). Left
    /// in place, they are removed by the next install.
    pub fn install(
        &self,
        dataset: &DatasetId,
        version: VersionNo,
        files_dir: &Path,
    ) -> Result<Superseded, HeadError> {
        let target = self.version_dir(dataset, version);
        let parent = self.dir.join(dataset.as_str());
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(files_dir, &target).map_err(io(&target))?;
        let entries = std::fs::read_dir(&parent).map_err(io(&parent))?.flatten();
        Ok(Superseded(entries.map(|e| e.path()).filter(|p| *p != target).collect()))
    }
}

/// The file of a head directory holding its table's row prints.
pub const PRINTS_FILE: &str = "rows.prints";

/// Head directories an install replaced, not yet removed.
#[must_use = "the replaced heads stay on disk until removed"]
#[derive(Debug, Default)]
pub struct Superseded(Vec<PathBuf>);

impl Superseded {
    /// Removes them (best effort: what is left, the next install removes).
    pub fn remove(self) {
        for dir in self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What [`check_head`] found.
#[derive(Debug, PartialEq, Eq)]
enum HeadCheck {
    Intact,
    /// A file is absent (or unreadable, or of another size: another version's).
    Missing,
    /// This file has the right size and the wrong BLAKE3.
    Corrupt(PathBuf),
}

/// Checks each head file against its table entry: size, then the whole file's BLAKE3.
fn check_head(table: &[TableFile], files: &[PathBuf]) -> HeadCheck {
    for (entry, path) in table.iter().zip(files) {
        let Ok(mut file) = std::fs::File::open(path) else { return HeadCheck::Missing };
        if !file.metadata().is_ok_and(|md| md.is_file() && md.len() == entry.size) {
            return HeadCheck::Missing;
        }
        let mut hasher = blake3::Hasher::new();
        if hasher.update_reader(&mut file).is_err() || hasher.finalize().as_bytes() != &entry.blake3.0 {
            return HeadCheck::Corrupt(path.clone());
        }
    }
    HeadCheck::Intact
}

/// Downloads the stored files of one role into `dir`, chunk by chunk, checking each file's
/// whole hash.
pub async fn download_role(
    store: &Store,
    version: &Arc<StoredVersion>,
    role: FileRole,
    dir: &Path,
) -> Result<(), HeadError> {
    tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    for (index, entry) in version.manifest.files.iter().enumerate() {
        if entry.role == role {
            download_file(store, version, index as u32, entry, &dir.join(entry.name.as_str())).await?;
        }
    }
    Ok(())
}

async fn download_file(
    store: &Store,
    version: &StoredVersion,
    index: u32,
    entry: &FileEntry,
    path: &Path,
) -> Result<(), HeadError> {
    let mut file = tokio::fs::File::create(path).await.map_err(io(path))?;
    let mut hasher = blake3::Hasher::new();
    for chunk in 0..version.manifest.chunk_count(entry.size) as u32 {
        let bytes = store.read_chunk(version, index, chunk).await?;
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(io(path))?;
    }
    file.flush().await.map_err(io(path))?;
    if hasher.finalize().as_bytes() != &entry.blake3.0 {
        return Err(HeadError::Rebuild {
            dataset: version.manifest.dataset.clone(),
            version: version.manifest.version,
            detail: format!("stored file {} does not match its manifest", entry.name),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{Hash32, RelPath};

    fn entry(name: &str, bytes: &[u8]) -> TableFile {
        TableFile {
            name: RelPath::parse(name).expect("name"),
            size: bytes.len() as u64,
            rows: 1,
            blake3: Hash32(*blake3::hash(bytes).as_bytes()),
            rows_blake3: None,
        }
    }

    #[test]
    fn head_files_are_checked_by_hash_not_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("part-00000.parquet");
        std::fs::write(&path, &bytes).expect("write");
        let table = [entry("part-00000.parquet", &bytes)];
        let files = [path.clone()];
        assert_eq!(check_head(&table, &files), HeadCheck::Intact);

        let mut flipped = bytes.clone();
        flipped[5_000] ^= 0x01;
        std::fs::write(&path, &flipped).expect("flip a bit");
        assert_eq!(check_head(&table, &files), HeadCheck::Corrupt(path.clone()), "same size, one bit off");

        std::fs::write(&path, &bytes[..9_999]).expect("shorten");
        assert_eq!(check_head(&table, &files), HeadCheck::Missing, "another size: not this version's");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(check_head(&table, &files), HeadCheck::Missing);
    }
}
