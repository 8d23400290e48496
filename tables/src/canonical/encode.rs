//! Encodes one canonical file's row groups with their columns spread over threads, producing
//! the bytes [`parquet::arrow::ArrowWriter`] would write for the same chunks.
//!
//! Neighbours: [`super::CanonicalWriter`] cuts the rows into chunks and files and hands each
//! chunk to a [`FileEncoder`]; the [`Pool`] of encoder threads is the writer's, shared by its files.
//!
//! ## Why the bytes are ArrowWriter's
//! `ArrowWriter` splits a chunk at `row_group_rows`, computes each column's leaves and hands
//! them to that leaf's [`ArrowColumnWriter`] (whose state is its own), closes the column writers
//! when the row group is full and appends their chunks in column order. A [`FileEncoder`] does
//! the same steps with the same parquet-rs types: the file writer and the column writers' factory
//! come from an `ArrowWriter` made with the same properties ([`ArrowWriter::into_serialized_writer`],
//! so the footer carries the same Arrow schema, `created_by`, sorting columns, bloom filters,
//! statistics and page index), the row group is cut where `ArrowWriter` cuts it, each column
//! writer receives the same slices in the same order, and the chunks are appended in column
//! order. Only *which thread* runs a column writer changes, which its output cannot depend on.
//! The pinned hashes of `super::tests` check this. In format 3 a row group's column writers
//! may come from a factory whose properties turn some columns' dictionaries off
//! ([`super::dictionary`]); each writes what `ArrowWriter` writes with those properties.
//!
//! ## Threads
//! Rows of a row group are gathered (zero-copy, the chunks the writer made) until it is full;
//! it is then handed to the pool as a [`Job`]: one task per top-level column (its leaves'
//! writers and its [`ColumnHasher`]), taken by whichever thread is free, largest column first
//! (by the previous row group's encoding time). While the pool encodes row group R, the
//! caller's thread goes on producing row group R+1; when R+1 is full the caller takes the
//! remaining tasks of R itself, waits for R, appends it to the file and submits R+1. So at most
//! one row group is encoding per file, and a column's rows reach its hasher in order.
//!
//! ## Memory
//! Per file: the row group being gathered and the one encoding (each at most `row_group_rows`
//! rows of Arrow data, which may keep their caller batches alive), plus the encoded pages of
//! the one encoding (≈ `row_group_rows` × the compressed row width). Independent of the table.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::dictionary;
use super::sink::{HashingFile, WrittenHashes};
use crate::rows_hash::{ColumnHasher, RowsHasher};

/// Most encoder threads of one writer.
pub const MAX_ENCODER_THREADS: usize = 8;

type Result<T> = std::result::Result<T, ParquetError>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One top-level column of one row group: its leaves' writers and its rows hasher.
struct ColumnTask {
    field: FieldRef,
    column: usize,
    writers: Vec<ArrowColumnWriter>,
    hasher: Option<ColumnHasher>,
}

/// What a [`ColumnTask`] gives back.
struct ColumnDone {
    chunks: Vec<ArrowColumnChunk>,
    hasher: Option<ColumnHasher>,
    took: Duration,
}

impl ColumnTask {
    fn run(self, batches: &[RecordBatch]) -> Result<ColumnDone> {
        let started = Instant::now();
        let Self { field, column, mut writers, mut hasher } = self;
        for batch in batches {
            let array = batch.column(column);
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(array);
            }
            let leaves = compute_leaves(&field, array)?;
            if leaves.len() != writers.len() {
                return Err(ParquetError::General(format!(
                    "column `{}` has {} leaves, the writer expects {}",
                    field.name(),
                    leaves.len(),
                    writers.len()
                )));
            }
            for (writer, leaf) in writers.iter_mut().zip(&leaves) {
                writer.write(leaf)?;
            }
        }
        let chunks = writers.into_iter().map(ArrowColumnWriter::close).collect::<Result<Vec<_>>>()?;
        Ok(ColumnDone { chunks, hasher, took: started.elapsed() })
    }
}

/// One row group handed to the pool.
struct Job {
    batches: Vec<RecordBatch>,
    /// Task indices in the order threads take them.
    order: Vec<usize>,
    tasks: Vec<Mutex<Option<ColumnTask>>>,
    next: AtomicUsize,
    results: Mutex<Vec<Option<Result<ColumnDone>>>>,
    finished: Condvar,
}

impl Job {
    /// Runs tasks of this job until none is left to take.
    fn work(&self) {
        loop {
            let at = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = self.order.get(at) else { return };
            let Some(task) = lock(&self.tasks[index]).take() else { continue };
            let done = catch_unwind(AssertUnwindSafe(|| task.run(&self.batches)))
                .unwrap_or_else(|_| Err(ParquetError::General("a column encoder panicked".to_owned())));
            lock(&self.results)[index] = Some(done);
            self.finished.notify_all();
        }
    }

    /// Helps with the remaining tasks, then waits for the others' and returns every result.
    fn wait(&self) -> Vec<Result<ColumnDone>> {
        self.work();
        let mut results = lock(&self.results);
        while results.iter().any(Option::is_none) {
            results = self.finished.wait(results).unwrap_or_else(PoisonError::into_inner);
        }
        results.drain(..).flatten().collect()
    }
}

/// Encoder threads, started at the first row group and stopped when the pool is dropped.
#[derive(Default)]
pub(super) struct Pool {
    senders: Vec<Sender<Arc<Job>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Threads to start: one per core (the caller's thread helps only when it must wait).
    fn threads() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_ENCODER_THREADS)
    }

    fn submit(&mut self, job: &Arc<Job>) {
        if self.senders.is_empty() {
            for i in 0..Self::threads() {
                let (sender, receiver) = channel::<Arc<Job>>();
                let spawned = std::thread::Builder::new()
                    .name(format!("ferry-encode-{i}"))
                    .spawn(move || receiver.into_iter().for_each(|job| job.work()));
                // Without threads the caller's own thread encodes every task when it waits.
                if let Ok(handle) = spawned {
                    self.senders.push(sender);
                    self.handles.push(handle);
                }
            }
        }
        // A thread that is gone leaves its share to the others and to the caller.
        self.senders.retain(|sender| sender.send(Arc::clone(job)).is_ok());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.senders.clear();
        for handle in self.handles.drain(..) {
            // A panicking task was already turned into an error; nothing else can panic.
            let _ = handle.join();
        }
    }
}

/// Writes one Parquet file from chunks, encoding row groups on a [`Pool`] (module doc).
pub(super) struct FileEncoder {
    writer: SerializedFileWriter<HashingFile>,
    factory: ArrowRowGroupWriterFactory,
    fields: Vec<FieldRef>,
    /// Parquet leaves of each top-level column, in order.
    leaves: Vec<usize>,
    max_rows: usize,
    gathering: Vec<RecordBatch>,
    gathered_rows: usize,
    encoding: Option<Arc<Job>>,
    /// The columns' hashers while no job holds them; `None` entries when the schema has a
    /// column the rows hash does not cover.
    hashers: Vec<Option<ColumnHasher>>,
    hashable: bool,
    rows: u64,
    /// Encoding time of each column in the last row group (orders the next one's tasks).
    cost: Vec<Duration>,
    /// Format 3: the column writers' factories of the dictionary choices met so far.
    choice: Option<DictionaryChoice>,
}

/// Format 3's row groups: column writers whose dictionaries follow [`dictionary::pays`].
struct DictionaryChoice {
    props: WriterProperties,
    schema: SchemaRef,
    /// By the choice of each top-level column (`true`: dictionary as the file's properties say).
    factories: HashMap<Vec<bool>, ArrowRowGroupWriterFactory>,
}

impl DictionaryChoice {
    /// The factory of column writers with the dictionaries of the columns `choice` refuses off.
    fn factory(
        &mut self,
        choice: Vec<bool>,
        root: &SerializedFileWriter<HashingFile>,
    ) -> Result<&ArrowRowGroupWriterFactory> {
        let entry = match self.factories.entry(choice) {
            Entry::Occupied(known) => return Ok(known.into_mut()),
            Entry::Vacant(new) => new,
        };
        let mut builder = self.props.clone().into_builder();
        for (field, _) in self.schema.fields().iter().zip(entry.key()).filter(|(_, pays)| !**pays) {
            builder =
                builder.set_column_dictionary_enabled(ColumnPath::new(vec![field.name().clone()]), false);
        }
        // A factory takes its properties from a file writer; this one writes only the magic
        // bytes, to nowhere.
        let props = Arc::new(builder.build());
        let shell = SerializedFileWriter::new(std::io::sink(), root.schema_descr().root_schema_ptr(), props)?;
        Ok(entry.insert(ArrowRowGroupWriterFactory::try_new(&shell, Arc::clone(&self.schema))?))
    }
}

impl FileEncoder {
    /// An encoder of one file; `choose_dictionaries` (format 3) lets each row group's columns
    /// be written plain where [`dictionary::pays`] says a dictionary does not pay.
    pub(super) fn new(
        file: HashingFile,
        schema: &SchemaRef,
        props: WriterProperties,
        choose_dictionaries: bool,
    ) -> Result<Self> {
        let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let choice = choose_dictionaries.then(|| DictionaryChoice {
            props: props.clone(),
            schema: Arc::clone(schema),
            factories: HashMap::new(),
        });
        let writer = ArrowWriter::try_new(file, Arc::clone(schema), Some(props))?;
        let (writer, factory) = writer.into_serialized_writer()?;
        let descr = writer.schema_descr();
        let mut leaves = vec![0; schema.fields().len()];
        for leaf in 0..descr.num_columns() {
            if let Some(count) = leaves.get_mut(descr.get_column_root_idx(leaf)) {
                *count += 1;
            }
        }
        let (hashers, hashable) = match RowsHasher::new(schema).into_columns() {
            Some(columns) => (columns.into_iter().map(Some).collect(), true),
            None => ((0..leaves.len()).map(|_| None).collect(), false),
        };
        Ok(Self {
            writer,
            factory,
            fields: schema.fields().iter().cloned().collect(),
            cost: vec![Duration::ZERO; leaves.len()],
            leaves,
            max_rows,
            gathering: Vec::new(),
            gathered_rows: 0,
            encoding: None,
            hashers,
            hashable,
            rows: 0,
            choice,
        })
    }

    /// Adds a chunk, cutting row groups where `ArrowWriter` would.
    pub(super) fn write(&mut self, chunk: &RecordBatch, pool: &mut Pool) -> Result<()> {
        let mut offset = 0;
        while offset < chunk.num_rows() {
            let take = (self.max_rows - self.gathered_rows).min(chunk.num_rows() - offset);
            let part = if take == chunk.num_rows() { chunk.clone() } else { chunk.slice(offset, take) };
            self.gathering.push(part);
            self.gathered_rows += take;
            offset += take;
            if self.gathered_rows >= self.max_rows {
                self.submit(pool)?;
            }
        }
        Ok(())
    }

    /// Encodes the last rows, writes the footer and returns the file, the hashes of its bytes
    /// and its rows hash.
    pub(super) fn finish(mut self, pool: &mut Pool) -> Result<(File, WrittenHashes, Option<blake3::Hash>)> {
        self.submit(pool)?;
        self.append_encoded()?;
        let (file, hashes) = self.writer.into_inner()?.finish()?;
        let columns = self.hashable.then(|| self.hashers.into_iter().flatten().collect());
        Ok((file, hashes, RowsHasher::from_columns(columns, self.rows).finish()))
    }

    /// Hands the gathered row group to the pool (after appending the one encoding before it).
    fn submit(&mut self, pool: &mut Pool) -> Result<()> {
        if self.gathered_rows == 0 {
            return Ok(());
        }
        self.append_encoded()?;
        let index = self.writer.flushed_row_groups().len();
        let factory = match self.choice.as_mut() {
            Some(choice) => {
                let pays: Vec<bool> =
                    (0..self.fields.len()).map(|column| dictionary::pays(&self.gathering, column)).collect();
                if pays.iter().all(|p| *p) { &self.factory } else { choice.factory(pays, &self.writer)? }
            }
            None => &self.factory,
        };
        let mut writers = factory.create_column_writers(index)?.into_iter();
        let mut tasks = Vec::with_capacity(self.fields.len());
        for (column, field) in self.fields.iter().enumerate() {
            tasks.push(Mutex::new(Some(ColumnTask {
                field: Arc::clone(field),
                column,
                writers: writers.by_ref().take(self.leaves[column]).collect(),
                hasher: self.hashers[column].take(),
            })));
        }
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.cost[i]));
        let job = Arc::new(Job {
            batches: std::mem::take(&mut self.gathering),
            order,
            results: Mutex::new((0..tasks.len()).map(|_| None).collect()),
            tasks,
            next: AtomicUsize::new(0),
            finished: Condvar::new(),
        });
        self.rows += self.gathered_rows as u64;
        self.gathered_rows = 0;
        pool.submit(&job);
        self.encoding = Some(job);
        Ok(())
    }

    /// Waits for the row group being encoded, if any, and appends it to the file.
    fn append_encoded(&mut self) -> Result<()> {
        let Some(job) = self.encoding.take() else { return Ok(()) };
        let results = job.wait();
        let mut group = self.writer.next_row_group()?;
        for (column, done) in results.into_iter().enumerate() {
            let done = done?;
            self.hashers[column] = done.hasher;
            self.cost[column] = done.took;
            for chunk in done.chunks {
                chunk.append_to_row_group(&mut group)?;
            }
        }
        group.close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::compute::concat_batches;

    use super::*;
    use crate::canonical::{WRITABLE_FORMATS, WriteOptions, tests::mixed_table, writer_properties};
    use crate::synth;

    /// Format 3's choice for each column of `table`, which must be the same in each of its row
    /// groups of `rows` rows.
    fn uniform_choice(table: &RecordBatch, rows: usize) -> Vec<bool> {
        let groups: Vec<Vec<bool>> = (0..table.num_rows().max(1))
            .step_by(rows)
            .map(|s| {
                let group = table.slice(s, rows.min(table.num_rows() - s));
                (0..table.num_columns()).map(|c| dictionary::pays(std::slice::from_ref(&group), c)).collect()
            })
            .collect();
        assert!(groups.windows(2).all(|w| w[0] == w[1]), "the row groups choose differently: {groups:?}");
        groups.into_iter().next().unwrap_or_default()
    }

    /// The bytes and rows hash of `table` cut into `chunk` rows, by `ArrowWriter` on one thread
    /// and by a [`FileEncoder`] on the pool. In format 3 `ArrowWriter` is told the choice of
    /// dictionaries (one for the whole table) the encoder makes for each row group.
    fn both_ways(
        table: &RecordBatch,
        key: &str,
        opts: &WriteOptions,
        chunk: usize,
    ) -> [(Vec<u8>, String); 2] {
        let dir = tempfile::tempdir().expect("dir");
        let props = writer_properties(dir.path(), &table.schema(), &[key.to_owned()], opts).expect("props");
        let mut reference_props = props.clone().into_builder();
        if opts.format >= 3 {
            let choice = uniform_choice(table, opts.row_group_rows);
            for (field, pays) in table.schema().fields().iter().zip(choice) {
                if !pays {
                    reference_props = reference_props
                        .set_column_dictionary_enabled(ColumnPath::new(vec![field.name().clone()]), false);
                }
            }
        }
        let reference_props = reference_props.build();
        let chunks: Vec<RecordBatch> = (0..table.num_rows())
            .step_by(chunk)
            .map(|s| table.slice(s, chunk.min(table.num_rows() - s)))
            .collect();
        let (one, many) = (dir.path().join("one"), dir.path().join("many"));
        let file = File::create(&one).expect("create");
        let mut writer = ArrowWriter::try_new(file, table.schema(), Some(reference_props)).expect("writer");
        let mut hasher = RowsHasher::new(&table.schema());
        for c in &chunks {
            writer.write(c).expect("write");
            hasher.update(c);
        }
        writer.close().expect("close");
        let reference = (std::fs::read(&one).expect("read"), format!("{:?}", hasher.finish()));
        let mut pool = Pool::default();
        let file = HashingFile::new(File::create(&many).expect("create"), Some(64 * 1024));
        let mut encoder = FileEncoder::new(file, &table.schema(), props, opts.format >= 3).expect("encoder");
        for c in &chunks {
            encoder.write(c, &mut pool).expect("write");
        }
        let (_, written, hash) = encoder.finish(&mut pool).expect("finish");
        let bytes = std::fs::read(&many).expect("read");
        // Every byte the Parquet writer wrote reached the hashes, the footer's last included.
        let chunk_hashes = bytes.chunks(64 * 1024).map(blake3::hash).collect();
        let read_back = WrittenHashes {
            size: bytes.len() as u64,
            blake3: blake3::hash(&bytes),
            chunks: Some((64 * 1024, chunk_hashes)),
        };
        assert_eq!(written, read_back);
        [reference, (bytes, format!("{hash:?}"))]
    }

    /// The parallel encoder writes `ArrowWriter`'s bytes for the same chunks and properties,
    /// with row groups cut inside chunks, short last row groups, nested and nullable columns, in
    /// format 2 and in format 3 (whose choice of dictionaries `ArrowWriter` is told).
    #[test]
    fn parallel_encoding_writes_arrow_writers_bytes() {
        let batches: Vec<RecordBatch> = synth::vehicle_registry(3, 70_000).collect();
        let all = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
        let mut cases = Vec::new();
        for format in WRITABLE_FORMATS {
            let default = WriteOptions { format, ..WriteOptions::default() };
            let odd = WriteOptions { row_group_rows: 30_000, ..default.clone() };
            // Format 3 chooses each row group's dictionaries by its values, `ArrowWriter` one
            // choice for a file: whole row groups of one kind (the choice per row group and
            // chunking are the canonical tests').
            let vehicles = if format >= 3 { all.slice(0, 60_000) } else { all.clone() };
            let small = WriteOptions { row_group_rows: 2_500, zstd_level: 1, ..default.clone() };
            cases.extend([
                (vehicles.clone(), "vin", default.clone(), 8_192),
                (vehicles.clone(), "vin", odd, 8_192),
                (mixed_table(30_000), "id", default.clone(), 8_192),
                (mixed_table(9_000), "id", small, 1_000),
                (mixed_table(0), "id", default, 1),
            ]);
        }
        for (i, (table, key, opts, chunk)) in cases.iter().enumerate() {
            let [(one, one_hash), (many, many_hash)] = both_ways(table, key, opts, *chunk);
            assert!(one == many, "case {i}: bytes differ ({} vs {} bytes)", one.len(), many.len());
            assert_eq!(one_hash, many_hash, "case {i}");
        }
    }
}
