//! Spill files of the external sort ([`super::external`]): a directory of its own for one sort
//! ([`SpillDir`], removed when dropped, whatever happened) and sorted runs in it, written and read
//! back as Arrow IPC streams ([`RunWriter`], [`RunReader`]).
//!
//! A run holds rows of the dataset's schema in strictly ascending key order, in batches of about
//! the same number of rows; nothing else (keys are encoded again when a run is read, which costs
//! less than storing them). Runs live only as long as one publish: no format promise is made.
//!
//! Run files are written and read without a buffer of their own: arrow writes each array buffer
//! of a batch as it is (whole buffers, a few hundred KiB each) and reads each batch's body with
//! one read, so a buffer in between would only add a copy of every byte.
//!
//! Errors keep the I/O error of a full disk as an I/O error ([`PublishError::Io`]), so that the
//! node can answer "out of space" for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use super::{PublishError, io_error};

/// Numbers spill directories of this process.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A directory of one sort's runs, made under a parent and removed (with every run) on drop.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
    next_run: u64,
}

impl SpillDir {
    /// Makes `<parent>/publish-<pid>-<n>` (and `parent` if missing).
    pub(crate) fn create(parent: &Path) -> Result<Self, PublishError> {
        std::fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("publish-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(io_error(format!("creating {}", path.display())))?;
        Ok(Self { path, next_run: 0 })
    }

    /// A path for the next run.
    pub(crate) fn next_run_path(&mut self) -> PathBuf {
        let path = self.path.join(format!("run-{:05}.arrows", self.next_run));
        self.next_run += 1;
        path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        // Best effort: a directory left behind is removed at the node's next start.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A sorted run on disk: its file and how many rows it holds.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) path: PathBuf,
    pub(crate) rows: u64,
}

/// Writes the batches of one run.
pub(crate) struct RunWriter {
    path: PathBuf,
    writer: StreamWriter<File>,
    rows: u64,
}

/// Maps an arrow error of a spill file to [`PublishError::Io`] when it is an I/O failure.
pub(crate) fn spill_error(what: &str, path: &Path) -> impl FnOnce(ArrowError) -> PublishError {
    let context = format!("{what} spill file {}", path.display());
    move |e| match e {
        ArrowError::IoError(_, source) => PublishError::Io { context, source },
        other => PublishError::Table(other),
    }
}

impl RunWriter {
    pub(crate) fn create(path: PathBuf, schema: &SchemaRef) -> Result<Self, PublishError> {
        let file =
            File::create(&path).map_err(io_error(format!("creating spill file {}", path.display())))?;
        let writer = StreamWriter::try_new(file, schema).map_err(spill_error("writing", &path))?;
        Ok(Self { path, writer, rows: 0 })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), PublishError> {
        self.writer.write(batch).map_err(spill_error("writing", &self.path))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Ends the stream and flushes it to the kernel (not fsynced: a run does not outlive the sort).
    pub(crate) fn finish(mut self) -> Result<Run, PublishError> {
        self.writer.finish().map_err(spill_error("writing", &self.path))?;
        self.writer.into_inner().map_err(spill_error("writing", &self.path))?;
        Ok(Run { path: self.path, rows: self.rows })
    }
}

/// Reads the batches of one run back, one at a time.
pub(crate) struct RunReader {
    path: PathBuf,
    reader: StreamReader<File>,
}

impl RunReader {
    pub(crate) fn open(run: &Run) -> Result<Self, PublishError> {
        let path = run.path.clone();
        let file = File::open(&path).map_err(io_error(format!("opening spill file {}", path.display())))?;
        let reader = StreamReader::try_new(file, None).map_err(spill_error("reading", &path))?;
        Ok(Self { path, reader })
    }

    /// The next batch, `None` at the end of the run.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>, PublishError> {
        loop {
            match self.reader.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(spill_error("reading", &self.path)(e)),
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => return Ok(Some(batch)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    #[test]
    fn runs_round_trip_and_the_directory_goes_with_its_guard() {
        let parent = tempfile::tempdir().expect("dir");
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])) as ArrayRef),
        ])
        .expect("batch");
        let mut dir = SpillDir::create(&parent.path().join("spill")).expect("spill dir");
        let path = dir.next_run_path();
        let mut writer = RunWriter::create(path.clone(), &batch.schema()).expect("writer");
        writer.write(&batch).expect("write");
        writer.write(&batch.slice(0, 0)).expect("write empty");
        writer.write(&batch.slice(1, 2)).expect("write slice");
        let run = writer.finish().expect("finish");
        assert_eq!(run.rows, 5);
        let mut reader = RunReader::open(&run).expect("open");
        assert_eq!(reader.next_batch().expect("read"), Some(batch.clone()));
        assert_eq!(reader.next_batch().expect("read"), Some(batch.slice(1, 2)));
        assert_eq!(reader.next_batch().expect("read"), None);
        assert!(path.exists());
        drop(dir);
        assert_eq!(std::fs::read_dir(parent.path().join("spill")).expect("list").count(), 0);
    }
}
