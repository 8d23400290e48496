//! A publish's diff fed by the sorted stream itself: the rows of the new table reach the diff
//! as the table's writer takes them ([`RowTap`]), in key order, so the table just written is
//! never read back and decoded. The head side is read from its files as [`super::diff`] reads it.
//!
//! Neighbours: [`crate::source::write_sorted_parquet_tapped`] shows its writers' rows to the taps
//! a [`TapSender`] makes; [`diff_stream`] runs the merge of [`super::diff`] ([`super::diff_cursors`])
//! over them on the caller's thread, so the delta's files are the bytes [`super::diff`] writes
//! for the same tables (the canonical writer's bytes do not depend on batching).
//!
//! The stream is checked as files are: each key above the one before it (the sort already
//! refuses duplicates; this proves it again), the writer's schema equal to the head's. A writer
//! abandoned after some rows (a source that looked sorted until a row out of order) restarts the
//! diff: what it wrote is removed and the head is read again from its start. A writer that
//! failed (its tap dropped without finishing) cuts the stream: [`StreamDiffError::Cut`], the
//! writer's own error says why, and nothing of the delta is left.
//!
//! Row prints ([`super::prints`]): the diff computes the print of each new row and writes them
//! beside the delta, to be kept with the new table as the next head's. When the head's own
//! prints are given ([`DiffBase::prints`], checked by the caller), the head is read by its key
//! columns only and matched rows compare by print; without them, by value.
//!
//! Memory: the channel's `depth` batches, plus the diff's own (see [`super`]), plus the prints
//! of the current batch of each side and the prints file's 1 MiB write buffer.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};

use super::prints::{PrintedBatches, PrintsBody, PrintsReader, PrintsWriter, RowPrinter};
use super::{Compare, Cursor, DeltaFiles, DeltaWriters, PREFETCH_BATCHES, diff_cursors};
use crate::canonical::{RowTap, WriteOptions};
use crate::error::TableError;
use crate::sorted::{KeyedBatch, SortedFilesReader, key_positions};

/// What stands for the new table's path in messages about the stream.
const STREAM_NAME: &str = "<the sorted table being written>";

/// What a writer's tap tells the diff.
enum TapMessage {
    Rows(RecordBatch),
    /// The writer finished: the stream is whole.
    End,
    /// The writer was abandoned after rows were sent: start again with the next writer's.
    Restart,
}

/// Makes the taps of the table writers whose rows [`diff_stream`] diffs (one channel for all).
#[derive(Clone)]
pub struct TapSender {
    sender: SyncSender<TapMessage>,
}

/// The diff's end of a [`tap_channel`].
pub struct TapReceiver {
    receiver: Receiver<TapMessage>,
}

/// A channel from table writers' taps to [`diff_stream`], holding at most `depth` batches.
pub fn tap_channel(depth: usize) -> (TapSender, TapReceiver) {
    let (sender, receiver) = sync_channel(depth.max(1));
    (TapSender { sender }, TapReceiver { receiver })
}

impl TapSender {
    /// The tap of one table writer.
    pub fn tap(&self) -> Box<dyn RowTap> {
        Box::new(StreamTap { sender: self.sender.clone(), sent: false })
    }
}

struct StreamTap {
    sender: SyncSender<TapMessage>,
    sent: bool,
}

fn diff_stopped() -> TableError {
    TableError::invalid("the diff of the sorted table stopped")
}

impl RowTap for StreamTap {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), TableError> {
        self.sent = true;
        self.sender.send(TapMessage::Rows(batch.clone())).map_err(|_| diff_stopped())
    }

    fn finish(&mut self) -> Result<(), TableError> {
        self.sender.send(TapMessage::End).map_err(|_| diff_stopped())
    }

    fn abandon(&mut self) {
        if self.sent {
            // A diff that stopped has nothing to restart.
            let _ = self.sender.send(TapMessage::Restart);
        }
    }
}

/// Why [`diff_stream`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamDiffError {
    /// The table's writer failed before it finished (its own error says why).
    #[error("the sorted table was not written to its end")]
    Cut,
    /// The head, the stream or the delta's files failed (as [`super::diff`] would).
    #[error(transparent)]
    Table(#[from] TableError),
}

/// How the stream ended, as [`StreamBatches`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    Restarted,
    Cut,
}

/// The new rows' prints being written, then what became of them.
enum NewPrints {
    Writing(Box<PrintsWriter>),
    Done(Result<PrintsBody, TableError>),
}

/// The stream's batches with their keys and prints, checked in order.
struct StreamBatches {
    receiver: Rc<Receiver<TapMessage>>,
    converter: RowConverter,
    key_indices: Vec<usize>,
    last_key: Option<OwnedRow>,
    rows: u64,
    state: Rc<Cell<StreamState>>,
    printer: RowPrinter,
    prints: Rc<RefCell<NewPrints>>,
}

impl StreamBatches {
    /// The prints of `batch`, written to the new prints file while it is being written (a
    /// failure there keeps the diff going: the next publish then diffs by value).
    fn prints(&mut self, batch: &RecordBatch) -> Result<Vec<u64>, TableError> {
        let mut prints = Vec::with_capacity(batch.num_rows());
        self.printer.print(batch, &mut prints)?;
        let mut state = self.prints.borrow_mut();
        if let NewPrints::Writing(writer) = &mut *state
            && let Err(e) = writer.append(&prints)
        {
            *state = NewPrints::Done(Err(e));
        }
        Ok(prints)
    }

    /// The stream ended whole: the new prints are finished.
    fn finish_prints(&self) {
        let mut state = self.prints.borrow_mut();
        let done = match std::mem::replace(&mut *state, NewPrints::Done(Err(diff_stopped()))) {
            NewPrints::Writing(writer) => writer.finish(),
            NewPrints::Done(done) => done,
        };
        *state = NewPrints::Done(done);
    }

    fn keyed(&mut self, batch: RecordBatch) -> Result<KeyedBatch, TableError> {
        let columns: Vec<ArrayRef> = self.key_indices.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.converter.convert_columns(&columns)?;
        let out_of_order =
            |at: usize| TableError::KeysOutOfOrder { file: STREAM_NAME.into(), row: at as u64 };
        let first_row = self.rows;
        if let Some(last) = &self.last_key
            && last.row() >= keys.row(0)
        {
            return Err(out_of_order(first_row as usize));
        }
        for i in 1..keys.num_rows() {
            if keys.row(i - 1) >= keys.row(i) {
                return Err(out_of_order(first_row as usize + i));
            }
        }
        self.last_key = Some(keys.row(keys.num_rows() - 1).owned());
        self.rows += batch.num_rows() as u64;
        let prints = Some(self.prints(&batch)?);
        Ok(KeyedBatch { batch, keys, file: 0, first_row, prints })
    }

    fn end(&self, state: StreamState) -> Option<Result<KeyedBatch, TableError>> {
        self.state.set(state);
        Some(Err(TableError::invalid("the sorted stream did not end")))
    }
}

impl Iterator for StreamBatches {
    type Item = Result<KeyedBatch, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            return match self.receiver.recv() {
                Ok(TapMessage::Rows(batch)) if batch.num_rows() == 0 => continue,
                Ok(TapMessage::Rows(batch)) => Some(self.keyed(batch)),
                Ok(TapMessage::End) => {
                    self.finish_prints();
                    None
                }
                Ok(TapMessage::Restart) => self.end(StreamState::Restarted),
                Err(_) => self.end(StreamState::Cut),
            };
        }
    }
}

/// The head a publish diffs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffBase {
    /// Its key-sorted files, in order.
    pub files: Vec<PathBuf>,
    /// Its row prints, already checked against its files ([`super::prints::check`]), and its
    /// row count; `None`: the diff compares values.
    pub prints: Option<(PathBuf, u64)>,
}

/// What [`diff_stream`] wrote.
#[derive(Debug)]
pub struct StreamDiff {
    pub delta: DeltaFiles,
    /// The new table's row prints (to [`super::prints::seal`] and keep with it), or why there
    /// are none.
    pub prints: Result<PrintsBody, TableError>,
}

/// Diffs `old` (the head) against the rows the taps of `new` are shown, rows of `schema`
/// sorted by `key_columns`, and writes the delta into `out_dir` as [`super::diff`] does (the
/// same files, byte for byte), and the new rows' prints to `prints_to`. Returns when the
/// tapped writer finished, or failed ([`StreamDiffError::Cut`]). Run it on a thread of its
/// own beside the writer: the taps block while the channel is full.
pub fn diff_stream(
    old: &DiffBase,
    new: TapReceiver,
    schema: SchemaRef,
    key_columns: &[String],
    out_dir: &Path,
    opts: &WriteOptions,
    prints_to: &Path,
) -> Result<StreamDiff, StreamDiffError> {
    let receiver = Rc::new(new.receiver);
    let key_indices = key_positions(&schema, key_columns, Path::new(STREAM_NAME))?;
    let fields: Vec<SortField> =
        key_indices.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
    loop {
        let state = Rc::new(Cell::new(StreamState::Open));
        let prints = Rc::new(RefCell::new(match PrintsWriter::create(prints_to) {
            Ok(writer) => NewPrints::Writing(Box::new(writer)),
            Err(e) => NewPrints::Done(Err(e)),
        }));
        let batches = StreamBatches {
            receiver: Rc::clone(&receiver),
            converter: RowConverter::new(fields.clone()).map_err(TableError::from)?,
            key_indices: key_indices.clone(),
            last_key: None,
            rows: 0,
            state: Rc::clone(&state),
            printer: RowPrinter::new(&schema, &key_indices)?,
            prints: Rc::clone(&prints),
        };
        let result = diff_once(old, batches, &schema, key_columns, out_dir, opts);
        match (result, state.get()) {
            (Ok(delta), StreamState::Open) => {
                let prints = match std::mem::replace(
                    &mut *prints.borrow_mut(),
                    NewPrints::Done(Err(diff_stopped())),
                ) {
                    NewPrints::Done(done) => done,
                    NewPrints::Writing(_) => {
                        Err(TableError::invalid("the new rows' prints were not finished"))
                    }
                };
                return Ok(StreamDiff { delta, prints });
            }
            (_, StreamState::Restarted) => continue,
            (_, StreamState::Cut) => return Err(StreamDiffError::Cut),
            (Err(e), StreamState::Open) => return Err(e.into()),
        }
    }
}

/// The old side of a diff: by its key columns and prints when it has them, else whole.
fn open_base(
    old: &DiffBase,
    key_columns: &[String],
    opts: &WriteOptions,
) -> Result<(Cursor, Compare), TableError> {
    let Some((prints, rows)) = &old.prints else {
        return Ok((Cursor::open(&old.files, key_columns, opts.batch_rows)?, Compare::Values));
    };
    let reader =
        SortedFilesReader::open_keys(&old.files, key_columns, opts.batch_rows)?.prefetch(PREFETCH_BATCHES)?;
    let file_schema = reader.file_schema().clone();
    let (schema, key_indices) = (reader.schema().clone(), reader.key_indices().to_vec());
    let first_path = reader.paths().first().cloned().unwrap_or_default();
    let printed =
        PrintedBatches { batches: Box::new(reader), prints: PrintsReader::open(prints, *rows)?, done: false };
    let cursor = Cursor::of(Box::new(printed), schema, key_indices, first_path)?;
    Ok((cursor, Compare::Prints { file_schema }))
}

/// One attempt of [`diff_stream`]; on failure its files are removed.
fn diff_once(
    old: &DiffBase,
    batches: StreamBatches,
    schema: &SchemaRef,
    key_columns: &[String],
    out_dir: &Path,
    opts: &WriteOptions,
) -> Result<DeltaFiles, TableError> {
    let key_indices = batches.key_indices.clone();
    let (old, compare) = open_base(old, key_columns, opts)?;
    let file_schema = match &compare {
        Compare::Prints { file_schema } => file_schema.clone(),
        Compare::Values => old.schema().clone(),
    };
    let file_keys = key_positions(&file_schema, key_columns, &old.first_path())?;
    let mut writers = DeltaWriters::new(&file_schema, &file_keys, key_columns, out_dir, opts)?;
    let new = Cursor::of(Box::new(batches), schema.clone(), key_indices, PathBuf::from(STREAM_NAME));
    let stats = new.and_then(|new| diff_cursors(old, new, &mut writers, compare));
    match stats {
        Ok(stats) => writers.finish(stats),
        Err(e) => {
            writers.discard();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
