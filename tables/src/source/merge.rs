//! The k-way merge of the external sort ([`super::external`]): sorted runs read back one batch
//! at a time each, merged by their keys in arrow's row format, adjacent equal keys refused, the
//! merged rows gathered into batches for a sink (a canonical writer, or the run of the next pass).
//!
//! More runs than the budget lets one merge read at once ([`merge_all`]'s `fan_in`) are merged in
//! passes: the smallest runs first into a new run, just enough of them that the last pass reads
//! at most `fan_in` runs; the inputs of a pass are removed as soon as it is done.
//!
//! Memory: one decoded batch and its encoded keys per run being merged, plus the batch being
//! gathered (`out_rows` rows) and the used-up batches of runs that rows of it still come from
//! (each until the rows picked from it are gathered).

use std::cmp::Ordering;
use std::collections::VecDeque;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows};

use super::keyorder::{PREFIX_BYTES, PREFIX_WORDS, Prefix, prefix_of};
use super::spill::{Run, RunReader, RunWriter, SpillDir};
use super::{PublishError, format_key};
use crate::definition::DatasetDefinition;

/// What every merge of one sort shares.
pub(crate) struct MergeContext<'a> {
    pub(crate) def: &'a DatasetDefinition,
    pub(crate) schema: SchemaRef,
    pub(crate) key_columns: &'a [usize],
    pub(crate) converter: &'a RowConverter,
    /// Most rows in one merged batch.
    pub(crate) out_rows: usize,
    /// Columns kept as dictionaries ([`super::dictionary`]) …
    pub(crate) dictionaries: &'a [usize],
    /// … and their sort-wide values, which every batch read back is given.
    pub(crate) values: &'a [ArrayRef],
}

impl MergeContext<'_> {
    /// The next batch of `reader` with the sort-wide dictionaries.
    fn next_batch(&self, reader: &mut RunReader) -> Result<Option<RecordBatch>, PublishError> {
        match reader.next_batch()? {
            Some(batch) => Ok(Some(super::dictionary::with_values(batch, self.dictionaries, self.values)?)),
            None => Ok(None),
        }
    }

    fn keys(&self, batch: &RecordBatch) -> Result<Rows, PublishError> {
        let columns: Vec<ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        Ok(self.converter.convert_columns(&columns)?)
    }
}

/// The current batch of one run being merged.
struct Cursor {
    reader: RunReader,
    batch: RecordBatch,
    /// Where `batch` sits in the merge's [`Gathered::batches`].
    slot: usize,
    keys: Rows,
    /// Next row of `batch` to merge.
    pos: usize,
    /// The first bytes of that row's key as integers ([`super::keyorder`]): the heap compares
    /// these, and whole keys only where they tie.
    prefix: Prefix,
}

impl Cursor {
    fn new(reader: RunReader, batch: RecordBatch, slot: usize, keys: Rows) -> Self {
        let mut cursor = Self { reader, batch, slot, keys, pos: 0, prefix: [0; PREFIX_WORDS] };
        cursor.refresh();
        cursor
    }

    fn key(&self) -> arrow::row::Row<'_> {
        self.keys.row(self.pos)
    }

    /// Takes the prefix of the row at `pos`, if there is one.
    fn refresh(&mut self) {
        if self.pos < self.keys.num_rows() {
            self.prefix = prefix_of(self.key().as_ref());
        }
    }
}

/// The key merged last, to refuse the same key again: its prefix and length, and its bytes
/// when the prefix does not hold them all.
#[derive(Default)]
struct LastKey {
    seen: bool,
    prefix: Prefix,
    len: usize,
    rest: Vec<u8>,
}

impl LastKey {
    /// Whether `key` (with `prefix`) equals the last key; then remembers `key`.
    fn repeats(&mut self, prefix: Prefix, key: &[u8]) -> bool {
        let long = key.len() > PREFIX_BYTES;
        let same = self.seen
            && self.prefix == prefix
            && self.len == key.len()
            && (!long || self.rest.as_slice() == key);
        self.seen = true;
        self.prefix = prefix;
        self.len = key.len();
        self.rest.clear();
        if long {
            self.rest.extend_from_slice(key);
        }
        same
    }
}

/// Merges `runs` in passes of at most `fan_in` runs (at least 2) into `sink`; intermediate runs
/// go into `spill`. Returns the number of passes, the last (into `sink`) included.
pub(crate) fn merge_all(
    ctx: &MergeContext<'_>,
    spill: &mut SpillDir,
    runs: Vec<Run>,
    fan_in: usize,
    sink: &mut dyn FnMut(RecordBatch) -> Result<(), PublishError>,
) -> Result<usize, PublishError> {
    let fan_in = fan_in.max(2);
    let mut runs: VecDeque<Run> = runs.into();
    let mut passes = 1;
    while runs.len() > fan_in {
        passes += 1;
        // Merging `k` runs into one leaves `len - k + 1`; no pass reads more than it must.
        let k = fan_in.min(runs.len() - fan_in + 1);
        runs.make_contiguous().sort_by_key(|run| run.rows);
        let group: Vec<Run> = runs.drain(..k).collect();
        let mut writer = RunWriter::create(spill.next_run_path(), &ctx.schema)?;
        merge_runs(ctx, &group, &mut |batch| writer.write(&batch))?;
        runs.push_back(writer.finish()?);
        for run in group {
            // Best effort: the spill directory goes as a whole at the end.
            let _ = std::fs::remove_file(&run.path);
        }
    }
    let runs: Vec<Run> = runs.into();
    merge_runs(ctx, &runs, sink)?;
    Ok(passes)
}

/// Merges `runs` (each strictly ascending) into `sink`, refusing a key seen twice. Every batch
/// handed to `sink` holds `out_rows` rows but the last: a run's batch that is used up stays with
/// the rows picked from it until they are gathered, so a sink that cuts fixed-size chunks (the
/// canonical writer) takes each batch whole instead of joining two short ones.
pub(crate) fn merge_runs(
    ctx: &MergeContext<'_>,
    runs: &[Run],
    sink: &mut dyn FnMut(RecordBatch) -> Result<(), PublishError>,
) -> Result<(), PublishError> {
    let mut cursors = Vec::with_capacity(runs.len());
    let mut gathered = Gathered::default();
    for run in runs {
        let mut reader = RunReader::open(run)?;
        if let Some(batch) = ctx.next_batch(&mut reader)? {
            let keys = ctx.keys(&batch)?;
            let slot = gathered.add(&batch);
            cursors.push(Cursor::new(reader, batch, slot, keys));
        }
    }
    let mut heap: Vec<usize> = (0..cursors.len()).collect();
    for i in (0..heap.len() / 2).rev() {
        sift_down(&mut heap, i, &cursors);
    }
    let mut last_key = LastKey::default();
    while let Some(&top) = heap.first() {
        let cursor = &cursors[top];
        let key = cursor.key();
        if last_key.repeats(cursor.prefix, key.as_ref()) {
            let key = format_key(ctx.def, &cursor.batch, ctx.key_columns, cursor.pos)?;
            return Err(PublishError::DuplicateKey { key });
        }
        gathered.picks.push((cursor.slot, cursor.pos));
        cursors[top].pos += 1;
        cursors[top].refresh();
        if cursors[top].pos >= cursors[top].batch.num_rows() {
            // The run's batch is used up; its picked rows keep it in `gathered` until flushed.
            let cursor = &mut cursors[top];
            match ctx.next_batch(&mut cursor.reader)? {
                Some(batch) => {
                    cursor.keys = ctx.keys(&batch)?;
                    cursor.slot = gathered.add(&batch);
                    cursor.batch = batch;
                    cursor.pos = 0;
                    cursor.refresh();
                }
                None => {
                    // An empty slice keeps the batch's dictionaries, shared with the other runs'.
                    cursor.batch = cursor.batch.slice(0, 0);
                    cursor.keys = ctx.converter.empty_rows(0, 0);
                    let last = heap.len() - 1;
                    heap.swap(0, last);
                    heap.pop();
                }
            }
        }
        sift_down(&mut heap, 0, &cursors);
        if gathered.picks.len() >= ctx.out_rows {
            gathered.flush(&mut cursors, sink)?;
        }
    }
    gathered.flush(&mut cursors, sink)
}

/// The rows picked since the last flush, as (batch, row), and the batches they refer to: every
/// cursor's current batch and the used-up ones rows were picked from.
#[derive(Default)]
struct Gathered {
    batches: Vec<RecordBatch>,
    picks: Vec<(usize, usize)>,
}

impl Gathered {
    fn add(&mut self, batch: &RecordBatch) -> usize {
        self.batches.push(batch.clone());
        self.batches.len() - 1
    }

    /// Gathers the picks into one batch for `sink`, then keeps only the cursors' batches.
    fn flush(
        &mut self,
        cursors: &mut [Cursor],
        sink: &mut dyn FnMut(RecordBatch) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        if self.picks.is_empty() {
            return Ok(());
        }
        let Some(first) = self.batches.first() else { return Ok(()) };
        let schema = first.schema();
        let columns = (0..first.num_columns())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|batch| batch.column(c).as_ref()).collect();
                super::dictionary::interleave_column(&arrays, &self.picks)
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(self.picks.len()));
        let batch = RecordBatch::try_new_with_options(schema, columns, &options)?;
        self.picks.clear();
        self.batches.clear();
        for cursor in cursors.iter_mut() {
            cursor.slot = self.add(&cursor.batch);
        }
        sink(batch)
    }
}

/// Whether cursor `a`'s key comes before cursor `b`'s (ties by run, so the order is total).
fn before(cursors: &[Cursor], a: usize, b: usize) -> bool {
    let (x, y) = (&cursors[a], &cursors[b]);
    match x.prefix.cmp(&y.prefix).then_with(|| x.key().cmp(&y.key())) {
        Ordering::Less => true,
        Ordering::Equal => a < b,
        Ordering::Greater => false,
    }
}

/// Restores the min-heap property of `heap` (cursor indices) below `i`.
fn sift_down(heap: &mut [usize], mut i: usize, cursors: &[Cursor]) {
    loop {
        let (left, right) = (2 * i + 1, 2 * i + 2);
        let mut least = i;
        if left < heap.len() && before(cursors, heap[left], heap[least]) {
            least = left;
        }
        if right < heap.len() && before(cursors, heap[right], heap[least]) {
            least = right;
        }
        if least == i {
            return;
        }
        heap.swap(i, least);
        i = least;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::row::SortField;

    use super::*;
    use crate::source::spill::SpillDir;

    const IDS: &str = r#"
id = "ids"
name = "Ids"
provider = "zhejiang"
share-type = "conditional"
update-cycle = "daily"
[[columns]]
name = "id"
type = "int64"
key = true
[[columns]]
name = "name"
type = "utf8"
"#;

    fn batch(ids: &[i64]) -> RecordBatch {
        let names: Vec<String> = ids.iter().map(|id| format!("n{id}")).collect();
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ])
        .expect("batch")
    }

    /// A run of the ids `from, from + step, …` below `to`, in batches of `rows`.
    fn run(dir: &mut SpillDir, from: i64, step: usize, to: i64, rows: usize) -> Run {
        let ids: Vec<i64> = (from..to).step_by(step).collect();
        let mut writer = RunWriter::create(dir.next_run_path(), &batch(&[]).schema()).expect("writer");
        for part in ids.chunks(rows) {
            writer.write(&batch(part)).expect("write");
        }
        writer.finish().expect("finish")
    }

    #[test]
    fn every_merged_batch_is_full_but_the_last_whatever_the_runs_batches() {
        let def = DatasetDefinition::parse_toml(IDS).expect("def");
        let parent = tempfile::tempdir().expect("dir");
        let mut dir = SpillDir::create(&parent.path().join("spill")).expect("spill dir");
        // Batches of 3, 5 and 7 rows run out at different places in every merged batch.
        let runs =
            vec![run(&mut dir, 0, 3, 300, 3), run(&mut dir, 1, 3, 300, 5), run(&mut dir, 2, 3, 300, 7)];
        let schema = batch(&[]).schema();
        let converter =
            RowConverter::new(vec![SortField::new(arrow::datatypes::DataType::Int64)]).expect("converter");
        let ctx = MergeContext {
            def: &def,
            schema,
            key_columns: &[0],
            converter: &converter,
            out_rows: 8,
            dictionaries: &[],
            values: &[],
        };
        let mut merged = Vec::new();
        merge_runs(&ctx, &runs, &mut |batch| {
            merged.push(batch);
            Ok(())
        })
        .expect("merge");
        let sizes: Vec<usize> = merged.iter().map(RecordBatch::num_rows).collect();
        let (last, full) = sizes.split_last().expect("batches");
        assert!(full.iter().all(|&rows| rows == 8), "{sizes:?}");
        assert_eq!(*last, 300 % 8, "{sizes:?}");
        let all = arrow::compute::concat_batches(&merged[0].schema(), &merged).expect("concat");
        assert_eq!(all, batch(&(0..300).collect::<Vec<_>>()));
    }

    fn repeats(last: &mut LastKey, key: &[u8]) -> bool {
        last.repeats(prefix_of(key), key)
    }

    #[test]
    fn the_last_key_is_matched_whole_beyond_its_prefix() {
        let mut last = LastKey::default();
        let long: Vec<u8> = (0..40).collect();
        let mut other = long.clone();
        other[35] = 99;
        assert!(!repeats(&mut last, b"short"));
        assert!(repeats(&mut last, b"short"));
        assert!(!repeats(&mut last, b"short\0"), "a longer key with the same padded prefix");
        assert!(!repeats(&mut last, &long));
        assert!(!repeats(&mut last, &other), "the same prefix, another key");
        assert!(repeats(&mut last, &other));
        assert!(!repeats(&mut last, &long[..PREFIX_BYTES]));
        assert!(repeats(&mut last, &long[..PREFIX_BYTES]));
    }
}
