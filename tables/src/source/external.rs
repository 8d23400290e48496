//! The external merge sort of a source that is not in key order: rows are read in batches and
//! gathered into runs of at most half the memory budget; each run is sorted by its keys in
//! arrow's row format and, unless the whole source fits in one run, written to a spill file
//! ([`super::spill`]) on a thread of its own while the next run is read, its rows gathered into
//! sorted order with the columns split over the cores ([`super::gather`]). The runs are then
//! merged ([`super::merge`]) into the [`CanonicalWriter`], which encodes on a thread of its own
//! while the merge goes on. A source that fits in one run is sorted in memory and written without
//! touching the disk.
//!
//! Memory (what [`SortOptions::memory_budget`] bounds): while reading, the run being filled and
//! the run being spilled, each at most half the budget — their Arrow batches
//! (`get_array_memory_size`), their keys in row format and the sort's entries (32 bytes a row,
//! [`super::keyorder`]). While merging, one batch of about [`Plan::spill_batch_bytes`] and its
//! keys per run read (`fan_in` runs at most), the batch being gathered, and the
//! [`WRITE_QUEUE_BATCHES`] the writer thread may queue.
//! Beyond the budget: the source reader's current batch and row group, the canonical writer's
//! current row group, and the allocator's slack.
//!
//! Duplicate keys are refused within a run after its sort and across runs by the merge (adjacent
//! equal keys); either way the error names the key.

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::row::{RowConverter, Rows};

use super::dictionary::{self, Interners};
use super::gather::{column_groups, gather_chunks, gather_threads};
use super::keyorder::{ENTRY_BYTES, SortEntry, push_entries, sort_entries};
use super::merge::{MergeContext, merge_all};
use super::spill::{Run, RunWriter, SpillDir};
use super::{PublishError, format_key};

#[cfg(test)]
mod tests;
use crate::canonical::{CanonicalWriter, WrittenFile};
use crate::definition::DatasetDefinition;

/// Memory budget of a sort when the caller names none.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// How much memory sorting a source may hold and where it spills. Neither changes the bytes
/// written: only how they are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortOptions {
    /// Bytes of rows, keys and sort entries the sort may hold at once (see the module doc of
    /// `source::external`); a source whose rows take more than half of it is sorted in runs
    /// spilled to disk.
    pub memory_budget: usize,
    /// Where runs are spilled: a directory `publish-<pid>-<n>` is made in it for one sort and
    /// removed when the sort ends, whether it succeeded or not. `None`: in the output directory.
    pub spill_dir: Option<PathBuf>,
}

impl Default for SortOptions {
    fn default() -> Self {
        Self { memory_budget: DEFAULT_MEMORY_BUDGET, spill_dir: None }
    }
}

/// Spill batches aim at this many bytes at most …
const MAX_SPILL_BATCH_BYTES: usize = 4 << 20;
/// … and at least this many.
const MIN_SPILL_BATCH_BYTES: usize = 16 << 10;

/// Batches the merge may hand ahead to the writer's thread: three row groups' worth at the
/// canonical 8,192 rows a batch, so the merge goes on while the writer waits for the encoding of
/// the row group before (it appends row groups in order) and its last column's encoding holds
/// one core. A 30M-row GPS publish kept ferryd on the two cores 0.785–0.791 of its time with
/// one row group's worth (8), 0.792–0.801 with 24 (five invocations each, alternated; three
/// later ones 0.780–0.803: within the spread).
const WRITE_QUEUE_BATCHES: usize = 24;

/// Most rows of one run: the sort's permutation numbers them with `u32`.
const MAX_RUN_ROWS: usize = (u32::MAX / 2) as usize;

/// The sizes a memory budget gives one sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Most bytes of one run in memory.
    pub(crate) run_bytes: usize,
    /// Bytes a batch of a spilled run aims at.
    pub(crate) spill_batch_bytes: usize,
    /// Most runs one merge reads at once.
    pub(crate) fan_in: usize,
}

impl Plan {
    pub(crate) fn for_budget(budget: usize) -> Self {
        // Small enough batches that one merge reads about 200 runs: a run holds under 1M rows of
        // a narrow table (its batches, keys in row format and sort entries share half the
        // budget), and a pass before the one into the writer rewrites its runs on one core while
        // the other waits (100M GPS reports spill 129 runs: at budget/128, a fan-in of 51, two
        // passes of 51 and 29 runs rewrote about 60% of the rows in 8–11 s).
        let spill_batch_bytes = (budget / 512).clamp(MIN_SPILL_BATCH_BYTES, MAX_SPILL_BATCH_BYTES);
        // A run's batch and its keys, each about `spill_batch_bytes`, with a fifth kept back
        // for the batch being gathered and the writer's queue.
        let fan_in = (budget * 4 / 5 / (2 * spill_batch_bytes)).max(2);
        Self { run_bytes: (budget / 2).max(1), spill_batch_bytes, fan_in }
    }
}

/// How a sort went: runs spilled (0 when the source fitted in memory) and merge passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SortStats {
    pub(crate) runs: usize,
    pub(crate) passes: usize,
}

/// Rows of one run and their keys, in the order read.
struct RunBuffer {
    batches: Vec<RecordBatch>,
    keys: Rows,
    /// Each row's number and key prefix, sorted by [`sort`](Self::sort).
    entries: Vec<SortEntry>,
    /// Row number (within the run) of each batch's first row.
    starts: Vec<usize>,
    rows: usize,
    batch_bytes: usize,
    /// The sort-wide dictionaries of the kept columns as they stood when the run was closed.
    dictionaries: Vec<ArrayRef>,
}

impl RunBuffer {
    fn new(converter: &RowConverter) -> Self {
        Self {
            batches: Vec::new(),
            keys: converter.empty_rows(0, 0),
            entries: Vec::new(),
            starts: Vec::new(),
            rows: 0,
            batch_bytes: 0,
            dictionaries: Vec::new(),
        }
    }

    /// Gives every batch's kept columns (`columns`) the run's dictionaries, so they are gathered
    /// by their keys alone.
    fn share_dictionaries(&mut self, columns: &[usize]) -> Result<(), PublishError> {
        if columns.is_empty() {
            return Ok(());
        }
        for batch in &mut self.batches {
            let taken = std::mem::replace(batch, RecordBatch::new_empty(batch.schema()));
            *batch = dictionary::with_values(taken, columns, &self.dictionaries)?;
        }
        Ok(())
    }

    fn push(
        &mut self,
        converter: &RowConverter,
        key_columns: &[usize],
        batch: RecordBatch,
    ) -> Result<(), PublishError> {
        let columns: Vec<ArrayRef> = key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        converter.append(&mut self.keys, &columns)?;
        push_entries(&mut self.entries, &self.keys, self.rows);
        self.starts.push(self.rows);
        self.rows += batch.num_rows();
        self.batch_bytes += batch.get_array_memory_size();
        self.batches.push(batch);
        Ok(())
    }

    /// Bytes counted against the budget: batches, keys and their sort entries.
    fn bytes(&self) -> usize {
        self.batch_bytes + self.keys.size() + ENTRY_BYTES * self.rows
    }

    fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Puts the rows in key order ([`super::keyorder`]); fails on the first key seen twice,
    /// naming it.
    fn sort(&mut self, def: &DatasetDefinition, key_columns: &[usize]) -> Result<(), PublishError> {
        if let Some(at) = sort_entries(&mut self.entries, &self.keys) {
            let (batch, row) = self.locate(self.entries[at].row as usize);
            return Err(PublishError::DuplicateKey {
                key: format_key(def, &self.batches[batch], key_columns, row)?,
            });
        }
        Ok(())
    }

    /// (batch, row) of row `row` of the run.
    fn locate(&self, row: usize) -> (usize, usize) {
        let batch = self.starts.partition_point(|&start| start <= row) - 1;
        (batch, row - self.starts[batch])
    }

    /// Gathers the rows in their sorted order into batches of at most `chunk_rows` rows for
    /// `sink`, the columns split over [`gather_threads`] threads.
    fn gather(
        &self,
        chunk_rows: usize,
        sink: &mut dyn FnMut(RecordBatch) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        let chunk_rows = chunk_rows.max(1);
        let groups = column_groups(&self.batches, gather_threads());
        let picks_of = |chunk: usize, picks: &mut Vec<(usize, usize)>| {
            let end = (chunk * chunk_rows + chunk_rows).min(self.entries.len());
            picks.extend(self.entries[chunk * chunk_rows..end].iter().map(|e| self.locate(e.row as usize)));
        };
        gather_chunks(&self.batches, &groups, self.entries.len().div_ceil(chunk_rows), &picks_of, sink)
    }

    /// Rows per spilled batch so that one holds about `target` bytes.
    fn rows_for(&self, target: usize) -> usize {
        let per_row = (self.batch_bytes / self.rows.max(1)).max(1);
        (target / per_row).max(1)
    }
}

/// Everything one sort needs besides its source.
pub(crate) struct ExternalSort<'a> {
    pub(crate) def: &'a DatasetDefinition,
    pub(crate) key_columns: Vec<usize>,
    pub(crate) converter: RowConverter,
    pub(crate) plan: Plan,
    /// Where the spill directory is made.
    pub(crate) spill_parent: PathBuf,
    /// Rows per batch handed to the canonical writer (its own chunk size).
    pub(crate) out_rows: usize,
    /// Text columns read as dictionaries and kept so until the writer ([`super::dictionary`]).
    pub(crate) dictionaries: Vec<usize>,
}

impl ExternalSort<'_> {
    /// Sorts the batches `read` gives (it calls its argument with each batch and stops when told
    /// to) and writes them into `writer`.
    pub(crate) fn run(
        &self,
        read: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<bool, PublishError>) -> Result<bool, PublishError>,
        writer: CanonicalWriter,
    ) -> Result<(Vec<WrittenFile>, SortStats), PublishError> {
        let mut spill: Option<SpillDir> = None;
        let (runs, mut last) = self.make_runs(read, &mut spill)?;
        let batch_rows = self.out_rows;
        let plain_schema = self.def.arrow_schema();
        let kept = &self.dictionaries;
        let to_plain = |batch| Ok::<_, PublishError>(dictionary::to_plain(batch, kept, &plain_schema)?);
        match spill {
            None => {
                last.sort(self.def, &self.key_columns)?;
                last.share_dictionaries(kept)?;
                let files = write_through(writer, |sink| {
                    last.gather(batch_rows, &mut |batch| sink(to_plain(batch)?))
                })?;
                Ok((files, SortStats::default()))
            }
            Some(mut spill) => {
                let values = std::mem::take(&mut last.dictionaries);
                drop(last);
                let ctx = MergeContext {
                    def: self.def,
                    schema: dictionary::sort_schema(self.def, kept),
                    key_columns: &self.key_columns,
                    converter: &self.converter,
                    out_rows: batch_rows,
                    dictionaries: kept,
                    values: &values,
                };
                let mut stats = SortStats { runs: runs.len(), passes: 0 };
                let files = write_through(writer, |sink| {
                    let mut sink = |batch| sink(to_plain(batch)?);
                    stats.passes = merge_all(&ctx, &mut spill, runs, self.plan.fan_in, &mut sink)?;
                    // The runs are removed here, while the writer's thread still encodes what the
                    // merge queued, not after it.
                    drop(spill);
                    Ok(())
                })?;
                Ok((files, stats))
            }
        }
    }

    /// Reads the source into runs; every full run is spilled (on a thread of its own, while the
    /// next is read). Returns the spilled runs and the last run, which is spilled too once any
    /// other was (then it comes back empty); the last run carries the final dictionaries.
    fn make_runs(
        &self,
        read: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<bool, PublishError>) -> Result<bool, PublishError>,
        spill: &mut Option<SpillDir>,
    ) -> Result<(Vec<Run>, RunBuffer), PublishError> {
        std::thread::scope(|scope| {
            let (sender, receiver) = sync_channel::<(RunBuffer, PathBuf)>(0);
            let spiller = std::thread::Builder::new()
                .name("ferry-sort-spill".to_owned())
                .spawn_scoped(scope, move || {
                    let mut runs = Vec::new();
                    for (buffer, path) in receiver {
                        runs.push(self.spill_run(buffer, path)?);
                    }
                    Ok::<_, PublishError>(runs)
                })
                .map_err(super::io_error("starting the sort's spill thread"))?;
            let mut current = RunBuffer::new(&self.converter);
            let mut interners = Interners::new(&self.dictionaries);
            let mut spill_failed = false;
            let send = move |mut buffer: RunBuffer,
                             interners: &mut Interners,
                             spill: &mut Option<SpillDir>|
                  -> Result<bool, PublishError> {
                buffer.dictionaries = interners.snapshots();
                let dir = match spill {
                    Some(dir) => dir,
                    None => spill.insert(SpillDir::create(&self.spill_parent)?),
                };
                Ok(sender.send((buffer, dir.next_run_path())).is_ok())
            };
            let read_result = read(&mut |batch| {
                let batch = if interners.is_empty() { batch } else { interners.intern(batch)? };
                current.push(&self.converter, &self.key_columns, batch)?;
                let bytes = current.bytes() + interners.bytes();
                if bytes >= self.plan.run_bytes || current.rows >= MAX_RUN_ROWS {
                    let full = std::mem::replace(&mut current, RunBuffer::new(&self.converter));
                    if !send(full, &mut interners, spill)? {
                        spill_failed = true;
                        return Ok(false);
                    }
                }
                Ok(true)
            });
            let mut last = match (&read_result, spill.is_some() && !current.is_empty()) {
                (Ok(_), true) if !spill_failed => {
                    let full = std::mem::replace(&mut current, RunBuffer::new(&self.converter));
                    send(full, &mut interners, spill)?;
                    current
                }
                _ => current,
            };
            last.dictionaries = interners.snapshots();
            drop(send);
            let runs = spiller.join().map_err(|_| PublishError::Io {
                context: "sorting a run".to_owned(),
                source: std::io::Error::other("the spill thread panicked"),
            })?;
            read_result?;
            Ok((runs?, last))
        })
    }

    /// Sorts one run and writes it to `path` in batches of about the plan's spill batch size.
    fn spill_run(&self, mut buffer: RunBuffer, path: PathBuf) -> Result<Run, PublishError> {
        buffer.sort(self.def, &self.key_columns)?;
        buffer.share_dictionaries(&self.dictionaries)?;
        let mut writer = RunWriter::create(path, &dictionary::sort_schema(self.def, &self.dictionaries))?;
        let rows = buffer.rows_for(self.plan.spill_batch_bytes);
        buffer.gather(rows, &mut |batch| writer.write(&batch))?;
        writer.finish()
    }
}

/// Runs `produce` with a sink that hands its batches to `writer` on a thread of its own (at most
/// [`WRITE_QUEUE_BATCHES`] queued), then finishes the files. On any error the writer is dropped, which
/// removes its temporary file; files it completed stay in its directory.
fn write_through(
    writer: CanonicalWriter,
    produce: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<(), PublishError>) -> Result<(), PublishError>,
) -> Result<Vec<WrittenFile>, PublishError> {
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel::<RecordBatch>(WRITE_QUEUE_BATCHES);
        let encoder = std::thread::Builder::new()
            .name("ferry-sort-write".to_owned())
            .spawn_scoped(scope, move || {
                let mut writer = writer;
                for batch in receiver {
                    writer.write(&batch)?;
                }
                Ok::<_, PublishError>(writer)
            })
            .map_err(super::io_error("starting the sort's writer thread"))?;
        let mut stopped = false;
        let produced = produce(&mut |batch| {
            if sender.send(batch).is_err() {
                stopped = true;
                return Err(PublishError::Io {
                    context: "writing the sorted table".to_owned(),
                    source: std::io::Error::other("the writer stopped"),
                });
            }
            Ok(())
        });
        drop(sender);
        let writer = encoder.join().map_err(|_| PublishError::Io {
            context: "writing the sorted table".to_owned(),
            source: std::io::Error::other("the writer thread panicked"),
        })?;
        // The writer's own error says more than the producer's "the writer stopped".
        let writer = match (writer, produced) {
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(writer), Ok(())) => writer,
        };
        debug_assert!(!stopped);
        Ok(writer.finish()?)
    })
}
