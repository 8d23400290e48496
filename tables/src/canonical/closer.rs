//! The last steps of each written file, on a thread of its own: fsync the temporary file, check
//! its length against the bytes hashed, rename it to its name. The writer opens and encodes the
//! next file meanwhile: an fsync takes 10–20 ms for a file of some MiB, and a table of 10M rows
//! is about 40 files, during whose fsyncs the encoders would otherwise wait.
//!
//! What a caller of [`super::CanonicalWriter`] sees is unchanged: `finish` returns once every
//! file is synced and renamed (and then syncs the directory), with the first failure if any;
//! a file is renamed only after its fsync, so a name always holds synced bytes. Files are
//! closed in the order they were written; after a failure the files queued behind it are not
//! renamed, their temporary files removed.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::TableError;

/// Files written but not yet synced that the writer may run ahead by.
const QUEUED_FILES: usize = 4;

/// A written temporary file to sync and rename to `path`.
pub(super) struct Closing {
    pub(super) file: File,
    pub(super) tmp: PathBuf,
    pub(super) path: PathBuf,
    /// Bytes written and hashed: the file must hold exactly these.
    pub(super) size: u64,
}

/// How the closing thread ended: files renamed (the first ones handed to it, in order) and the
/// first failure, until it is reported.
struct Closed {
    renamed: usize,
    failure: Option<TableError>,
}

/// The closing thread of one writer, started with its first file.
#[derive(Default)]
pub(super) struct Closer {
    sender: Option<SyncSender<Closing>>,
    thread: Option<JoinHandle<Closed>>,
    /// Set by the thread when a file could not be closed: the writer stops at its next file.
    failed: Arc<AtomicBool>,
    /// Files handed over so far.
    handed: usize,
    /// How the thread ended, once it was waited for; no file is handed over after that.
    joined: Option<Closed>,
}

impl Closer {
    /// Hands `closing` to the thread. Fails (with the failure that stopped it) if an earlier
    /// file could not be closed; `closing`'s temporary file is then removed.
    pub(super) fn close(&mut self, closing: Closing) -> Result<(), TableError> {
        if self.joined.is_some() || self.failed.load(Ordering::Acquire) {
            return Err(self.refuse(closing));
        }
        if self.sender.is_none() {
            let (sender, receiver) = sync_channel(QUEUED_FILES);
            let failed = Arc::clone(&self.failed);
            let started = std::thread::Builder::new()
                .name("ferry-close".to_owned())
                .spawn(move || close_all(&receiver, &failed));
            match started {
                Ok(thread) => {
                    self.sender = Some(sender);
                    self.thread = Some(thread);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&closing.tmp);
                    return Err(TableError::io(&closing.tmp)(e));
                }
            }
        }
        let Some(sender) = &self.sender else { unreachable!("started above") };
        match sender.send(closing) {
            Ok(()) => {
                self.handed += 1;
                Ok(())
            }
            // The thread is gone (it panicked).
            Err(returned) => Err(self.refuse(returned.0)),
        }
    }

    /// Removes the temporary file of a file not handed over and says why.
    fn refuse(&mut self, closing: Closing) -> TableError {
        let _ = std::fs::remove_file(&closing.tmp);
        self.join().failure.take().unwrap_or_else(|| stopped(closing.tmp))
    }

    /// Waits until every file handed over is synced and renamed; the first failure if one was
    /// not (the files after it are not renamed).
    pub(super) fn finish(&mut self) -> Result<(), TableError> {
        let handed = self.handed;
        let closed = self.join();
        match closed.failure.take() {
            Some(failure) => Err(failure),
            // A failure already reported by `close`.
            None if closed.renamed < handed => Err(stopped(PathBuf::from("a canonical file"))),
            None => Ok(()),
        }
    }

    /// Waits for the thread; returns how many of the files handed over were renamed.
    pub(super) fn renamed(&mut self) -> usize {
        self.join().renamed
    }

    fn join(&mut self) -> &mut Closed {
        let handed = self.handed;
        let sender = &mut self.sender;
        let thread = &mut self.thread;
        self.joined.get_or_insert_with(|| {
            // Hanging up ends the thread's loop once it has closed what it was given.
            *sender = None;
            match thread.take() {
                None => Closed { renamed: handed, failure: None },
                Some(thread) => thread.join().unwrap_or_else(|_| Closed {
                    renamed: 0,
                    failure: Some(stopped(PathBuf::from("a canonical file"))),
                }),
            }
        })
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        // No thread renames into a directory its writer's owner may be removing.
        let _ = self.join();
    }
}

fn stopped(path: PathBuf) -> TableError {
    TableError::Io { path, source: std::io::Error::other("the thread closing written files stopped") }
}

/// Syncs, checks and renames each file in turn until the writer hangs up. After a failure it
/// says so (`failed`) and removes the temporary files of every file handed over after it.
fn close_all(receiver: &Receiver<Closing>, failed: &AtomicBool) -> Closed {
    let mut renamed = 0;
    let mut failure = None;
    for closing in receiver.iter() {
        if failure.is_none() {
            match close_one(&closing) {
                Ok(()) => {
                    renamed += 1;
                    continue;
                }
                Err(e) => {
                    failure = Some(e);
                    failed.store(true, Ordering::Release);
                }
            }
        }
        // Best effort: the error that matters is the first.
        let _ = std::fs::remove_file(&closing.tmp);
    }
    Closed { renamed, failure }
}

fn close_one(closing: &Closing) -> Result<(), TableError> {
    let Closing { file, tmp, path, size } = closing;
    file.sync_all().map_err(TableError::io(tmp))?;
    let on_disk = file.metadata().map_err(TableError::io(tmp))?.len();
    if on_disk != *size {
        let why = format!("{} holds {on_disk} bytes after {size} were written", tmp.display());
        return Err(TableError::io(tmp)(std::io::Error::other(why)));
    }
    std::fs::rename(tmp, path).map_err(TableError::io(tmp))
}
