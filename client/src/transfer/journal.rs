//! The resume journal of one staged version: which chunks are verified and written.
//!
//! Text, append-only: a header line binding the journal to one manifest body, then one line per
//! verified chunk (`<file> <chunk>`). A chunk is journaled only after its bytes were verified
//! and written, so after a kill of the puller at most the chunks in flight are fetched again.
//! A torn last line (killed mid-write) is ignored. The whole-file hash check before commit
//! catches anything a power loss took from the page cache.
//!
//! It lives at `.ferry/journal` in the staging directory ([`super::workdir::journal_path`]),
//! where no file of a version can be, and is opened without following a link: a link in its
//! place fails the open with `ELOOP`.

use super::workdir::NO_FOLLOW;
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const MAGIC: &str = "ferry-journal 1";

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: std::fs::File,
}

/// Chunks a journal says are done, as (file index, chunk index).
pub type DoneSet = HashSet<(u32, u32)>;

impl Journal {
    /// Opens the journal at `path` for the manifest whose body hashes to `manifest_hash`.
    /// Returns the chunks already done; a journal for another manifest is started afresh.
    pub fn open(path: &Path, manifest_hash: &str) -> std::io::Result<(Self, DoneSet)> {
        let header = format!("{MAGIC} {manifest_hash}");
        let mut done = DoneSet::new();
        let mut matches = false;
        if let Ok(existing) = OpenOptions::new().read(true).custom_flags(NO_FOLLOW).open(path) {
            let mut lines = BufReader::new(existing).lines();
            if let Some(Ok(first)) = lines.next() {
                matches = first == header;
            }
            if matches {
                for line in lines.map_while(Result::ok) {
                    if let Some((f, c)) = line.split_once(' ')
                        && let (Ok(f), Ok(c)) = (f.parse(), c.parse())
                    {
                        done.insert((f, c));
                    }
                }
            }
        }
        let file = if matches {
            OpenOptions::new().append(true).custom_flags(NO_FOLLOW).open(path)?
        } else {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(NO_FOLLOW)
                .open(path)?;
            writeln!(file, "{header}")?;
            file.sync_data()?;
            file
        };
        Ok((Self { file }, done))
    }

    /// Records a verified, written chunk.
    pub fn record(&mut self, file: u32, chunk: u32) -> std::io::Result<()> {
        // One write call per line, so a kill leaves at most one torn line.
        self.file.write_all(format!("{file} {chunk}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_records_and_ignores_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut j, done) = Journal::open(&path, "abc").unwrap();
        assert!(done.is_empty());
        j.record(0, 1).unwrap();
        j.record(2, 7).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"3 ").unwrap();
        let (_, done) = Journal::open(&path, "abc").unwrap();
        assert_eq!(done, DoneSet::from([(0, 1), (2, 7)]));
    }

    #[test]
    fn journal_of_another_manifest_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut j, _) = Journal::open(&path, "abc").unwrap();
        j.record(0, 0).unwrap();
        drop(j);
        let (_, done) = Journal::open(&path, "def").unwrap();
        assert!(done.is_empty());
    }

    #[test]
    fn a_link_in_the_journals_place_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let path = dir.path().join("journal");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = Journal::open(&path, "abc").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}
