//! Staging files of a pull and the atomic commit: whole-file hash check, fsync, one rename.
//! Every file here is opened through [`super::workdir`], which follows no link.

use super::journal::{DoneSet, Journal};
use super::workdir::{self, BOOKKEEPING, journal_path};
use super::{PullError, Wanted, io_error};
use ferry_proto::{Hash32, Manifest, SignedManifest};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The signed manifest in a pulled version's directory; with the right bytes it marks a finished pull.
pub const SIGNED_NAME: &str = "manifest.signed";
const JSON_NAME: &str = "manifest.json";

/// The files of a version being pulled, open for positional writes, and its journal.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    /// One handle per manifest file; `None` for files this pull does not fetch.
    files: Vec<Option<File>>,
    /// The same files opened for direct I/O, where the file system allows it.
    direct: Vec<Option<File>>,
    /// Cleared when a direct write is refused: every later write is buffered.
    direct_ok: AtomicBool,
    wanted: Wanted,
    journal: Mutex<Journal>,
    done: DoneSet,
    /// Hex BLAKE3 of the manifest body: names the manifest the journal belongs to.
    manifest_hash: String,
    /// Per manifest file, the hash of each chunk this run verified and wrote (zero where none
    /// was), so the node importing the copy need not read it again ([`VerifiedHashes`]).
    hashes: Vec<Mutex<Vec<Hash32>>>,
}

/// The chunk hashes a pull verified, by manifest file: `Some` for a file every chunk of which
/// this run hashed in memory, matched against its page of hashes checked against the signed
/// manifest, and wrote; `None` for a file it did not fetch or fetched partly (chunks journaled
/// by an earlier run: the commit re-hashed that file whole, but not chunk by chunk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedHashes {
    files: Vec<Option<Vec<Hash32>>>,
}

impl VerifiedHashes {
    /// The hashes of each manifest file's chunks, in order, where all are known.
    pub fn files(&self) -> &[Option<Vec<Hash32>>] {
        &self.files
    }
}

/// Whether `dir` already holds exactly this signed manifest (a finished earlier pull).
pub fn already_committed(dir: &Path, signed: &SignedManifest) -> bool {
    fs::read(dir.join(SIGNED_NAME)).is_ok_and(|stored| stored == signed.encode())
}

impl Staging {
    /// Opens (or resumes) the staging directory for `manifest` and writes the signed manifest
    /// into it (synced only by the commit), so that a pull need not keep the signed form in
    /// memory while it transfers. File names were validated when the manifest was parsed, so
    /// joining them under `dir` cannot escape it, and none is under `.ferry/`, where the
    /// journal is. `dir` must exist and be checked ([`workdir::own_below`]).
    pub fn open(
        dir: &Path,
        signed: &SignedManifest,
        manifest: &Manifest,
        wanted: Wanted,
    ) -> Result<Self, PullError> {
        workdir::own_dir(&dir.join(BOOKKEEPING))?;
        let named_journal = manifest.files.iter().any(|f| f.name.as_str() == LEGACY_JOURNAL);
        if !named_journal {
            adopt_legacy_journal(dir)?;
        }
        let manifest_hash = blake3::hash(&signed.body).to_hex().to_string();
        let journal_path = journal_path(dir);
        let (journal, done) =
            Journal::open(&journal_path, &manifest_hash).map_err(workdir::error(&journal_path))?;
        write_manifest_files(dir, signed)?;
        let mut files = Vec::with_capacity(manifest.files.len());
        let mut direct = Vec::with_capacity(manifest.files.len());
        let mut hashes = Vec::with_capacity(manifest.files.len());
        for entry in &manifest.files {
            if !wanted.includes(entry.role) {
                files.push(None);
                direct.push(None);
                hashes.push(Mutex::default());
                continue;
            }
            let chunks = usize::try_from(manifest.chunk_count(entry.size)).unwrap_or(0);
            hashes.push(Mutex::new(vec![Hash32([0; 32]); chunks]));
            let path = staged_path(dir, entry.name.as_str());
            if let Some(parent) = Path::new(entry.name.as_str()).parent() {
                workdir::own_dirs(dir, parent)?;
            }
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            let file = workdir::open(&path, &mut options)?;
            file.set_len(entry.size).map_err(io_error(&path))?;
            files.push(Some(file));
            direct.push(super::direct::open(&path));
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
            direct,
            direct_ok: AtomicBool::new(true),
            wanted,
            journal: Mutex::new(journal),
            done,
            manifest_hash,
            hashes,
        })
    }

    /// The chunk hashes this run verified, for every file none of whose chunks was journaled by
    /// an earlier run (`resumed`): all of such a file's chunks were fetched, verified and
    /// written by this run. Call once every chunk is written.
    pub fn verified_hashes(&self, resumed: &std::collections::HashSet<u32>) -> VerifiedHashes {
        let files = (0u32..)
            .zip(&self.hashes)
            .map(|(index, hashes)| {
                let fetched = self.files.get(index as usize).is_some_and(Option::is_some);
                let hashes = hashes.lock().map(|h| h.clone()).ok()?;
                (fetched && !resumed.contains(&index)).then_some(hashes)
            })
            .collect();
        VerifiedHashes { files }
    }

    /// Which files this pull fetches.
    pub fn wanted(&self) -> Wanted {
        self.wanted
    }

    /// Chunks an earlier run verified.
    pub fn done(&self) -> &DoneSet {
        &self.done
    }

    /// Bytes an earlier run verified.
    pub fn done_bytes(&self, manifest: &Manifest) -> u64 {
        self.done
            .iter()
            .filter_map(|&(f, c)| {
                let entry = manifest.files.get(f as usize)?;
                manifest.chunk_span(entry, c).map(|(_, len)| u64::from(len))
            })
            .sum()
    }

    /// Writes a verified chunk at its offset, keeps its hash and journals it. Blocking: call off
    /// the runtime.
    ///
    /// The aligned part of a chunk in an aligned buffer (see [`super::direct`]) goes to the disk
    /// directly; the rest, or all of it where direct I/O is refused, through the page cache.
    pub fn write_chunk(
        &self,
        file: u32,
        chunk: u32,
        offset: u64,
        data: &[u8],
        hash: &Hash32,
    ) -> std::io::Result<()> {
        let handle = self
            .files
            .get(file as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| std::io::Error::other(format!("file number {file} is not being fetched")))?;
        let mut rest = data;
        let mut at = offset;
        let direct = self.direct.get(file as usize).and_then(Option::as_ref);
        let direct_len = super::direct::direct_len(data, offset);
        if let Some(direct) = direct.filter(|_| direct_len > 0 && self.direct_ok.load(Ordering::Relaxed)) {
            match direct.write_all_at(&data[..direct_len], offset) {
                Ok(()) => {
                    rest = &data[direct_len..];
                    at = offset + direct_len as u64;
                }
                // Refused (alignment this file system wants, or no direct I/O after all): the
                // whole chunk goes through the page cache, and so do all later ones.
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if !rest.is_empty() {
            handle.write_all_at(rest, at)?;
            start_writeback(handle, at, rest.len());
        }
        if let Some(Ok(mut hashes)) = self.hashes.get(file as usize).map(Mutex::lock)
            && let Some(kept) = hashes.get_mut(chunk as usize)
        {
            *kept = *hash;
        }
        // Invariant: a poisoned lock means another writer panicked; journaling is then unsafe.
        let mut journal = self.journal.lock().map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        journal.record(file, chunk)
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting. The
/// commit's fsync then finds most of a version already on disk instead of flushing it all at
/// the end (a 2 GiB version is below the kernel's own writeback threshold on most machines, so
/// nothing would start before the fsync). `POSIX_FADV_DONTNEED` starts that writeback on Linux;
/// the pages stay cached until it completes. Advice only: a failure changes nothing.
fn start_writeback(file: &File, offset: u64, len: usize) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let _ = posix_fadvise(file, offset as i64, len as i64, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// Where a staging directory of an earlier build kept its journal, beside the files.
const LEGACY_JOURNAL: &str = "journal";

/// Moves the journal of a pull an earlier build left (`<dir>/journal`) to where this build
/// keeps it, so the pull resumes and the old file does not end up in the version. Called only
/// when no file of the version has that name.
fn adopt_legacy_journal(dir: &Path) -> Result<(), PullError> {
    let legacy = dir.join(LEGACY_JOURNAL);
    let is_file = fs::symlink_metadata(&legacy).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return Ok(());
    }
    let current = journal_path(dir);
    if fs::symlink_metadata(&current).is_ok() {
        fs::remove_file(&legacy).map_err(io_error(&legacy))
    } else {
        fs::rename(&legacy, &current).map_err(io_error(&legacy))
    }
}

fn staged_path(dir: &Path, name: &str) -> PathBuf {
    name.split('/').fold(dir.to_path_buf(), |p, c| p.join(c))
}

/// BLAKE3 of a file in a working directory (not followed if it is a link).
pub(crate) fn hash_file(path: &Path) -> Result<blake3::Hash, PullError> {
    let mut file = workdir::open_read(path)?;
    hash_open_file(&mut file).map_err(io_error(path))
}

fn hash_open_file(file: &mut File) -> std::io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

fn sync_dir(dir: &Path) -> Result<(), PullError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// Syncs every staged file, writes the manifest and renames the staging directory to
/// `final_dir`. Files holding chunks journaled by an earlier run (`resumed`) are first checked
/// against their whole-file hash: those chunks were verified before a crash that may have taken
/// them from the page cache. Chunks fetched by this run were hashed in memory just before they
/// were written. A mismatching file's chunks are dropped from the journal so the next run
/// fetches them again.
pub async fn commit(
    staged: Arc<Staging>,
    final_dir: &Path,
    manifest: Arc<Manifest>,
    resumed: std::collections::HashSet<u32>,
) -> Result<(), PullError> {
    let final_dir = final_dir.to_owned();
    tokio::task::spawn_blocking(move || commit_blocking(&staged, &final_dir, &manifest, &resumed))
        .await
        .map_err(|e| PullError::Io { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) })?
}

fn commit_blocking(
    staged: &Staging,
    final_dir: &Path,
    manifest: &Manifest,
    resumed: &std::collections::HashSet<u32>,
) -> Result<(), PullError> {
    let staging = staged.dir.as_path();
    for (index, entry) in manifest.files.iter().enumerate() {
        if !staged.wanted.includes(entry.role) {
            continue;
        }
        let path = staged_path(staging, entry.name.as_str());
        let recheck = resumed.contains(&(index as u32));
        if recheck && hash_file(&path)?.as_bytes() != &entry.blake3.0 {
            forget_file(staging, &staged.manifest_hash, index as u32)?;
            return Err(PullError::FileMismatch { file: entry.name.to_string() });
        }
        workdir::open_read(&path)?.sync_all().map_err(io_error(&path))?;
    }
    let journal_path = journal_path(staging);
    fs::remove_file(&journal_path).map_err(io_error(&journal_path))?;
    let bookkeeping = staging.join(BOOKKEEPING);
    fs::remove_dir(&bookkeeping).map_err(io_error(&bookkeeping))?;
    sync_manifest_and_rename(staging, final_dir)
}

/// Writes the manifest into `dir` (already holding verified files), syncs, and renames it to
/// `final_dir` atomically. Used for materialized versions.
pub fn write_manifest_and_rename(
    dir: &Path,
    final_dir: &Path,
    signed: &SignedManifest,
) -> Result<(), PullError> {
    write_manifest_files(dir, signed)?;
    sync_manifest_and_rename(dir, final_dir)
}

/// Writes `manifest.signed` and `manifest.json` into `dir`, unsynced.
fn write_manifest_files(dir: &Path, signed: &SignedManifest) -> Result<(), PullError> {
    workdir::write(&dir.join(SIGNED_NAME), &signed.encode())?;
    workdir::write(&dir.join(JSON_NAME), &signed.body)
}

/// Syncs the manifest files [`write_manifest_files`] wrote and `dir` itself, then renames `dir`
/// to `final_dir`: the version appears whole or not at all.
fn sync_manifest_and_rename(dir: &Path, final_dir: &Path) -> Result<(), PullError> {
    for name in [SIGNED_NAME, JSON_NAME] {
        let path = dir.join(name);
        workdir::open_read(&path)?.sync_all().map_err(io_error(&path))?;
    }
    sync_dir(dir)?;
    publish_dir(dir, final_dir)
}

fn publish_dir(staging: &Path, final_dir: &Path) -> Result<(), PullError> {
    let parent = final_dir.parent().unwrap_or(final_dir);
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    if final_dir.exists() {
        // A different manifest for the same version number: keep the old one aside, never mix.
        let aside = final_dir.with_extension(format!("replaced-{}", std::process::id()));
        fs::rename(final_dir, &aside).map_err(io_error(final_dir))?;
    }
    fs::rename(staging, final_dir).map_err(io_error(final_dir))?;
    sync_dir(parent)?;
    if let Some(partial_root) = staging.parent() {
        let _ = fs::remove_dir(partial_root); // only succeeds when no other pull is staged
    }
    Ok(())
}

/// Rewrites the journal without the chunks of one file.
fn forget_file(staging: &Path, manifest_hash: &str, file: u32) -> Result<(), PullError> {
    let path = journal_path(staging);
    let (_, done) = Journal::open(&path, manifest_hash).map_err(workdir::error(&path))?;
    fs::remove_file(&path).map_err(io_error(&path))?;
    let (mut journal, _) = Journal::open(&path, manifest_hash).map_err(workdir::error(&path))?;
    for (f, c) in done.into_iter().filter(|&(f, _)| f != file) {
        journal.record(f, c).map_err(io_error(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_left_beside_the_files_by_an_earlier_build_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path();
        fs::create_dir(staging.join(BOOKKEEPING)).unwrap();
        fs::write(staging.join(LEGACY_JOURNAL), b"ferry-journal 1 abc\n0 0\n").unwrap();
        adopt_legacy_journal(staging).unwrap();
        assert!(!staging.join(LEGACY_JOURNAL).exists());
        assert_eq!(fs::read(journal_path(staging)).unwrap(), b"ferry-journal 1 abc\n0 0\n");
        // Both there: the current one wins.
        fs::write(staging.join(LEGACY_JOURNAL), b"old").unwrap();
        adopt_legacy_journal(staging).unwrap();
        assert!(!staging.join(LEGACY_JOURNAL).exists());
        assert_eq!(fs::read(journal_path(staging)).unwrap(), b"ferry-journal 1 abc\n0 0\n");
        // A link in its place is left alone (and is refused when anything opens it).
        std::os::unix::fs::symlink("/nonexistent", staging.join(LEGACY_JOURNAL)).unwrap();
        adopt_legacy_journal(staging).unwrap();
        assert!(fs::symlink_metadata(staging.join(LEGACY_JOURNAL)).unwrap().file_type().is_symlink());
    }
}
