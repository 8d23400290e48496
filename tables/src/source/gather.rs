//! Gathers rows of a set of batches into new batches in a given order, with the columns split
//! over threads: what the external sort ([`super::external`]) does with a sorted run before it
//! spills it (or, when the source fitted in one run, before the canonical writer encodes it).
//!
//! Copying the rows is most of a run's spill (the values of each column moved to their sorted
//! places); one thread doing it for every column left the other core idle while the source was
//! read. Each thread gathers its own group of columns for every chunk, in chunk order; the
//! caller's thread gathers the first group, puts the columns of each chunk together and hands the
//! batch to the sink (the spill file's writer). The batches are the ones one thread would make:
//! the same rows, columns and chunk boundaries.
//!
//! Memory: besides the batches the sink receives, at most [`QUEUED_CHUNKS`] chunks' columns
//! gathered ahead by each helper thread.

use std::sync::mpsc::sync_channel;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::error::ArrowError;

use super::PublishError;

/// Puts the (batch, row) picks of chunk `i` into the vector it is given, in order.
pub(crate) type PicksOf<'a> = dyn Fn(usize, &mut Vec<(usize, usize)>) + Sync + 'a;

/// Chunks a helper thread may gather ahead of the caller's.
const QUEUED_CHUNKS: usize = 2;

/// Most threads one gather uses.
const MAX_GATHER_THREADS: usize = 4;

/// Threads a gather uses on this machine (one a core, at most [`MAX_GATHER_THREADS`]).
pub(crate) fn gather_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_GATHER_THREADS)
}

/// Splits the columns of `batches` into at most `threads` non-empty groups of about equal bytes
/// (largest column first, each to the lightest group), each group in column order.
pub(crate) fn column_groups(batches: &[RecordBatch], threads: usize) -> Vec<Vec<usize>> {
    let columns = batches.first().map_or(0, RecordBatch::num_columns);
    let mut sizes: Vec<(usize, usize)> = (0..columns)
        .map(|c| (batches.iter().map(|b| b.column(c).get_array_memory_size()).sum(), c))
        .collect();
    sizes.sort_by(|a, b| b.cmp(a));
    let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); threads.clamp(1, columns.max(1))];
    for (size, column) in sizes {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lightest.0 += size;
            lightest.1.push(column);
        }
    }
    let mut groups: Vec<Vec<usize>> = groups
        .into_iter()
        .map(|(_, mut group)| {
            group.sort_unstable();
            group
        })
        .filter(|group| !group.is_empty())
        .collect();
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    groups
}

/// The columns `group` of `batches` at `picks` (batch, row).
fn gather_columns(
    batches: &[RecordBatch],
    group: &[usize],
    picks: &[(usize, usize)],
) -> Result<Vec<ArrayRef>, ArrowError> {
    group
        .iter()
        .map(|&c| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            super::dictionary::interleave_column(&arrays, picks)
        })
        .collect()
}

/// Gathers `chunks` batches from `batches` (all of one schema, at least one) into `sink`; chunk
/// `i`'s rows are what `picks_of(i, picks)` puts into `picks` as (batch, row), in order. The
/// columns are gathered by `groups.len()` threads (see [`column_groups`]).
pub(crate) fn gather_chunks(
    batches: &[RecordBatch],
    groups: &[Vec<usize>],
    chunks: usize,
    picks_of: &PicksOf<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<(), PublishError>,
) -> Result<(), PublishError> {
    let Some(first) = batches.first() else { return Ok(()) };
    let schema = first.schema();
    let (own, others) = groups.split_first().map_or((&[][..], &[][..]), |(g, rest)| (g.as_slice(), rest));
    std::thread::scope(|scope| {
        let mut helpers = Vec::with_capacity(others.len());
        for group in others {
            let (sender, receiver) = sync_channel::<Result<Vec<ArrayRef>, ArrowError>>(QUEUED_CHUNKS);
            let helper = std::thread::Builder::new()
                .name("ferry-sort-gather".to_owned())
                .spawn_scoped(scope, move || {
                    let mut picks = Vec::new();
                    for chunk in 0..chunks {
                        picks.clear();
                        picks_of(chunk, &mut picks);
                        if sender.send(gather_columns(batches, group, &picks)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(super::io_error("starting a gather thread"))?;
            helpers.push((helper, receiver, group));
        }
        let result = (|| {
            let mut picks = Vec::new();
            for chunk in 0..chunks {
                picks.clear();
                picks_of(chunk, &mut picks);
                let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
                place(&mut columns, own, gather_columns(batches, own, &picks)?);
                for (_, receiver, group) in &helpers {
                    let gathered = receiver.recv().map_err(|_| gather_thread_failed())??;
                    place(&mut columns, group, gathered);
                }
                let columns: Option<Vec<ArrayRef>> = columns.into_iter().collect();
                let columns = columns.ok_or_else(gather_thread_failed)?;
                sink(RecordBatch::try_new(schema.clone(), columns)?)?;
            }
            Ok(())
        })();
        let mut panicked = false;
        for (helper, receiver, _) in helpers {
            // Unblocks a helper waiting to hand over a chunk nobody will take.
            drop(receiver);
            panicked |= helper.join().is_err();
        }
        if panicked {
            return Err(gather_thread_failed());
        }
        result
    })
}

fn place(columns: &mut [Option<ArrayRef>], group: &[usize], arrays: Vec<ArrayRef>) {
    for (&c, array) in group.iter().zip(arrays) {
        columns[c] = Some(array);
    }
}

fn gather_thread_failed() -> PublishError {
    PublishError::Io {
        context: "gathering sorted rows".to_owned(),
        source: std::io::Error::other("a gather thread stopped"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn batch(ids: Vec<i64>, names: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("name", Arc::new(StringArray::from(names)) as ArrayRef),
            ("again", Arc::new(Int64Array::from(vec![7; 3])) as ArrayRef),
        ])
        .expect("batch")
    }

    #[test]
    fn threads_gather_what_one_thread_gathers() {
        let batches = vec![
            batch(vec![1, 2, 3], vec![Some("a"), None, Some("ccc")]),
            batch(vec![4, 5, 6], vec![Some("dd"), Some(""), None]),
        ];
        let order = [(1, 2), (0, 0), (1, 0), (0, 2), (0, 1), (1, 1)];
        let picks_of = |chunk: usize, picks: &mut Vec<(usize, usize)>| {
            picks.extend_from_slice(&order[chunk * 4..(chunk * 4 + 4).min(order.len())]);
        };
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let expected = vec![
            arrow::compute::interleave_record_batch(&refs, &order[..4]).expect("one thread"),
            arrow::compute::interleave_record_batch(&refs, &order[4..]).expect("one thread"),
        ];
        for threads in 1..=4 {
            let groups = column_groups(&batches, threads);
            assert_eq!(groups.len(), threads.min(3), "{groups:?}");
            let mut got = Vec::new();
            gather_chunks(&batches, &groups, 2, &picks_of, &mut |b| {
                got.push(b);
                Ok(())
            })
            .expect("gathered");
            assert_eq!(got, expected, "{threads} threads");
        }
    }

    #[test]
    fn a_failing_sink_stops_the_helpers() {
        let batches = vec![batch(vec![1, 2, 3], vec![Some("a"), None, Some("c")])];
        let groups = column_groups(&batches, 3);
        let picks_of = |_: usize, picks: &mut Vec<(usize, usize)>| picks.push((0, 1));
        let mut calls = 0;
        let result = gather_chunks(&batches, &groups, 1_000, &picks_of, &mut |_| {
            calls += 1;
            Err(PublishError::Source { message: "stop".to_owned() })
        });
        assert!(matches!(result, Err(PublishError::Source { .. })), "{result:?}");
        assert_eq!(calls, 1);
    }
}
