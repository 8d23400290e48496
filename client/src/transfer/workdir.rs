//! The puller's own directories under a destination root, and how files in them are opened.
//!
//! Names: every working directory is named injectively by dataset id and version number
//! (`<dataset>@<N>`; an id has no `@`), and ferry's bookkeeping inside a staging directory
//! lives under `.ferry/`, a name no manifest file can take (`ferry_proto::RESERVED_NAMES`).
//! So no file of a version meets the journal, and no two pulls meet in one directory.
//!
//! Links: a staging directory is written only if it, and every directory a staged file needs,
//! is a real directory owned by this process's user, and every file in it is opened with
//! `O_NOFOLLOW`: a link planted there (by another user, or left behind) makes the pull stop
//! with [`PullError::UnsafeStaging`] instead of writing where it points.
//!
//! Used by `commit` (staging, journal, commit) and `sync` (delta and apply directories).

use super::{PullError, io_error};
use ferry_proto::{DatasetId, VersionNo};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Under the destination root: pulls in progress, one staging directory each.
pub const PARTIAL_ROOT: &str = ".ferry-partial";
/// Under the destination root: fetched deltas waiting to be applied.
pub const DELTAS_ROOT: &str = ".ferry-deltas";
/// Inside a staging directory: the puller's own files (reserved in manifests).
pub const BOOKKEEPING: &str = ".ferry";
const JOURNAL_NAME: &str = "journal";

/// Directory where a pull of that version is staged under `root`.
pub fn staging_dir(root: &Path, dataset: &DatasetId, version: VersionNo) -> PathBuf {
    root.join(PARTIAL_ROOT).join(format!("{dataset}@{}", version.get()))
}

/// Directory where a delta of that version is applied under `root`. Beside the staging
/// directories, and distinct from each of them and from every other dataset's and version's.
pub fn apply_dir(root: &Path, dataset: &DatasetId, version: VersionNo) -> PathBuf {
    root.join(PARTIAL_ROOT).join(format!("{dataset}@{}.apply", version.get()))
}

/// Directory where the fetched delta of that version waits to be applied.
pub fn delta_dir(root: &Path, dataset: &DatasetId, version: VersionNo) -> PathBuf {
    root.join(DELTAS_ROOT).join(dataset.as_str()).join(format!("v{}", version.get()))
}

/// The resume journal of a staging directory.
pub fn journal_path(staging: &Path) -> PathBuf {
    staging.join(BOOKKEEPING).join(JOURNAL_NAME)
}

/// Creates `dir` unless it exists (its parent must), then checks that it is a real directory
/// owned by this process's user.
pub fn own_dir(dir: &Path) -> Result<(), PullError> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_error(dir))?;
    let unsafe_dir = |reason| Err(PullError::UnsafeStaging { path: dir.to_owned(), reason });
    if meta.file_type().is_symlink() {
        return unsafe_dir("is a symbolic link");
    }
    if !meta.is_dir() {
        return unsafe_dir("is not a directory");
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return unsafe_dir("belongs to another user");
    }
    Ok(())
}

/// [`own_dir`] for each directory from `base` (which must exist) down to `base/relative`.
///
/// A commit removes the staging root once it is empty, so another pull may remove a directory
/// this walk has just made: the walk then starts again (a few times).
pub fn own_dirs(base: &Path, relative: &Path) -> Result<(), PullError> {
    let mut attempts = 0;
    loop {
        let mut dir = base.to_path_buf();
        let walked = relative.components().try_for_each(|component| {
            dir.push(component);
            own_dir(&dir)
        });
        match walked {
            Err(PullError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempts < 3 =>
            {
                attempts += 1;
            }
            other => return other,
        }
    }
}

/// [`own_dirs`] from `root` down to `dir`, a working directory under it.
pub fn own_below(root: &Path, dir: &Path) -> Result<(), PullError> {
    let relative = dir.strip_prefix(root).map_err(|_| PullError::UnsafeStaging {
        path: dir.to_owned(),
        reason: "is not under the destination",
    })?;
    own_dirs(root, relative)
}

/// Opens a file in a checked directory without following a link in its place.
pub fn open(path: &Path, options: &mut OpenOptions) -> Result<File, PullError> {
    options.custom_flags(NO_FOLLOW).open(path).map_err(error(path))
}

/// Flags for opening a file in a working directory: a link in its place fails with `ELOOP`.
pub const NO_FOLLOW: i32 = nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC;

/// The error of an open with [`NO_FOLLOW`]: a link is [`PullError::UnsafeStaging`].
pub fn error(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |e| {
        if e.raw_os_error() == Some(nix::libc::ELOOP) {
            PullError::UnsafeStaging { path: path.to_owned(), reason: "is a symbolic link" }
        } else {
            io_error(path)(e)
        }
    }
}

/// Opens a file in a checked directory for reading, without following a link.
pub fn open_read(path: &Path) -> Result<File, PullError> {
    open(path, OpenOptions::new().read(true))
}

/// Writes `data` to a new or truncated file in a checked directory, without following a link.
pub fn write(path: &Path, data: &[u8]) -> Result<(), PullError> {
    use std::io::Write;
    let mut file = open(path, OpenOptions::new().write(true).create(true).truncate(true))?;
    file.write_all(data).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> VersionNo {
        VersionNo::new(n).unwrap()
    }

    /// Issue 18 §4: the apply directory was the staging name cut at its last dot, which
    /// `roads.v1` and `roads.v2`, and every version of either, shared.
    #[test]
    fn working_directories_are_distinct_per_dataset_and_version() {
        let root = Path::new("/dest");
        let ids = ["roads", "roads.v1", "roads.v2", "roads.v1.apply", "roads-1", "a.b.c"];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let dataset = DatasetId::new(id).unwrap();
            for n in [1, 2, 12] {
                for dir in [staging_dir(root, &dataset, v(n)), apply_dir(root, &dataset, v(n))] {
                    assert!(seen.insert(dir.clone()), "{} is used twice", dir.display());
                }
            }
        }
    }

    #[test]
    fn links_and_foreign_entries_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(matches!(own_dir(&link), Err(PullError::UnsafeStaging { reason: "is a symbolic link", .. })));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(own_dir(&file), Err(PullError::UnsafeStaging { reason: "is not a directory", .. })));
        let target = outside.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let file_link = tmp.path().join("staged");
        std::os::unix::fs::symlink(&target, &file_link).unwrap();
        assert!(matches!(write(&file_link, b"overwritten"), Err(PullError::UnsafeStaging { .. })));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        own_dirs(tmp.path(), Path::new("a/b/c")).unwrap();
        assert!(tmp.path().join("a/b/c").is_dir());
        write(&tmp.path().join("a/b/c/f"), b"ok").unwrap();
        assert_eq!(std::fs::read(tmp.path().join("a/b/c/f")).unwrap(), b"ok");
    }
}
