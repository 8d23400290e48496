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

use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
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

/// Picks ahead of the one being copied whose bytes are asked for ([`prefetch`]) …
const PREFETCH_AHEAD: usize = 16;

/// … and values of at most this many bytes are copied as one fixed-size block (then cut to
/// length) where the source has that many bytes from the value on.
const BLOCK_BYTES: usize = 32;

/// `arrays` at `picks` (array, row): what [`arrow::compute::interleave`] gives for text, with the
/// bytes of a null left out.
///
/// A run's rows are picked at random places of its batches (a run's order has nothing to do with
/// the source's), so nearly every value is a cache miss, and arrow's gather waits for each in
/// turn, then copies it with a call to `memmove`. Here the offsets and then the bytes of the
/// value [`PREFETCH_AHEAD`] picks on are asked for while the current one is copied, so the
/// misses overlap, and short values are copied as a fixed block instead of a call.
pub(crate) fn interleave_text(
    arrays: &[&StringArray],
    picks: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    let offsets: Vec<&[i32]> = arrays.iter().map(|a| a.value_offsets()).collect();
    let data: Vec<&[u8]> = arrays.iter().map(|a| a.value_data()).collect();
    let nullable = arrays.iter().any(|a| a.null_count() > 0);
    // Each pick's value as (start in its array's bytes, length); a null's length is 0.
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(picks.len());
    let mut ends: Vec<i32> = Vec::with_capacity(picks.len() + 1);
    ends.push(0);
    let mut total = 0usize;
    for (i, &(a, row)) in picks.iter().enumerate() {
        if let Some(&(ahead, ahead_row)) = picks.get(i + PREFETCH_AHEAD)
            && let Some(o) = offsets.get(ahead)
        {
            prefetch(o.as_ptr().wrapping_add(ahead_row).cast());
        }
        let o = offsets.get(a).ok_or_else(out_of_range)?;
        let (start, end) = match (o.get(row), o.get(row + 1)) {
            (Some(&start), Some(&end)) if start <= end => (start as usize, end as usize),
            _ => return Err(out_of_range()),
        };
        let len = if nullable && arrays[a].is_null(row) { 0 } else { end - start };
        spans.push((start, len));
        total += len;
        ends.push(i32::try_from(total).map_err(|_| ArrowError::OffsetOverflowError(total))?);
    }
    let mut values: Vec<u8> = Vec::with_capacity(total + BLOCK_BYTES);
    for (i, (&(a, _), &(start, len))) in picks.iter().zip(&spans).enumerate() {
        if let (Some(&(ahead, _)), Some(&(ahead_start, _))) =
            (picks.get(i + PREFETCH_AHEAD), spans.get(i + PREFETCH_AHEAD))
            && let Some(bytes) = data.get(ahead)
        {
            prefetch(bytes.as_ptr().wrapping_add(ahead_start));
        }
        let bytes = data[a];
        match bytes.get(start..).and_then(<[u8]>::first_chunk::<BLOCK_BYTES>) {
            Some(block) if len <= BLOCK_BYTES => {
                let at = values.len();
                values.extend_from_slice(block);
                values.truncate(at + len);
            }
            _ => values.extend_from_slice(bytes.get(start..start + len).ok_or_else(out_of_range)?),
        }
    }
    let nulls = nullable.then(|| {
        NullBuffer::new(picks.iter().map(|&(a, row)| arrays[a].is_valid(row)).collect::<BooleanBuffer>())
    });
    // SAFETY: `ends` starts at 0 and never falls (each step a length), and its last value is
    // `values.len()`; each non-null value is a whole value of a `StringArray` (its offsets were
    // checked to lie within its bytes when it was made), so it is UTF-8 and `values` cut at
    // `ends` is UTF-8 value by value; a null's value is empty. These are the invariants
    // `StringArray::new_unchecked` asks for; checking them again would read every byte once more.
    #[allow(unsafe_code)]
    let array = unsafe {
        StringArray::new_unchecked(
            OffsetBuffer::new_unchecked(ScalarBuffer::from(ends)),
            Buffer::from_vec(values),
            nulls,
        )
    };
    Ok(Arc::new(array))
}

/// `arrays` (all of one fixed-width type) at `picks`, as [`arrow::compute::interleave`] gives
/// them, asking for the value [`PREFETCH_AHEAD`] picks on while the current one is read (see
/// [`interleave_text`]); `None` for a type this does not cover.
pub(crate) fn interleave_fixed(
    arrays: &[&dyn Array],
    picks: &[(usize, usize)],
) -> Option<Result<ArrayRef, ArrowError>> {
    fn typed<T: ArrowPrimitiveType>(
        arrays: &[&dyn Array],
        picks: &[(usize, usize)],
    ) -> Option<Result<ArrayRef, ArrowError>> {
        let arrays: Option<Vec<&PrimitiveArray<T>>> =
            arrays.iter().map(|a| a.as_primitive_opt::<T>()).collect();
        Some(interleave_primitive(&arrays?, picks))
    }
    match arrays.first()?.data_type() {
        DataType::Int8 => typed::<Int8Type>(arrays, picks),
        DataType::Int16 => typed::<Int16Type>(arrays, picks),
        DataType::Int32 => typed::<Int32Type>(arrays, picks),
        DataType::Int64 => typed::<Int64Type>(arrays, picks),
        DataType::UInt8 => typed::<UInt8Type>(arrays, picks),
        DataType::UInt16 => typed::<UInt16Type>(arrays, picks),
        DataType::UInt32 => typed::<UInt32Type>(arrays, picks),
        DataType::UInt64 => typed::<UInt64Type>(arrays, picks),
        DataType::Float32 => typed::<Float32Type>(arrays, picks),
        DataType::Float64 => typed::<Float64Type>(arrays, picks),
        DataType::Date32 => typed::<Date32Type>(arrays, picks),
        DataType::Date64 => typed::<Date64Type>(arrays, picks),
        DataType::Timestamp(TimeUnit::Second, _) => typed::<TimestampSecondType>(arrays, picks),
        DataType::Timestamp(TimeUnit::Millisecond, _) => typed::<TimestampMillisecondType>(arrays, picks),
        DataType::Timestamp(TimeUnit::Microsecond, _) => typed::<TimestampMicrosecondType>(arrays, picks),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => typed::<TimestampNanosecondType>(arrays, picks),
        _ => None,
    }
}

/// [`interleave_fixed`] of one type; the result has the first array's type (a timestamp's zone).
pub(crate) fn interleave_primitive<T: ArrowPrimitiveType>(
    arrays: &[&PrimitiveArray<T>],
    picks: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    let Some(first) = arrays.first() else {
        return Err(ArrowError::InvalidArgumentError("nothing to gather from".to_owned()));
    };
    let values: Vec<&[T::Native]> = arrays.iter().map(|a| a.values().as_ref()).collect();
    let mut out: Vec<T::Native> = Vec::with_capacity(picks.len());
    for (i, &(a, row)) in picks.iter().enumerate() {
        if let Some(&(ahead, ahead_row)) = picks.get(i + PREFETCH_AHEAD)
            && let Some(v) = values.get(ahead)
        {
            prefetch(v.as_ptr().wrapping_add(ahead_row).cast());
        }
        let value = values.get(a).and_then(|v| v.get(row)).ok_or_else(out_of_range)?;
        out.push(*value);
    }
    let nulls = arrays.iter().any(|a| a.null_count() > 0).then(|| {
        NullBuffer::new(picks.iter().map(|&(a, row)| arrays[a].is_valid(row)).collect::<BooleanBuffer>())
    });
    let array = PrimitiveArray::<T>::try_new(ScalarBuffer::from(out), nulls)?
        .with_data_type(first.data_type().clone());
    Ok(Arc::new(array))
}

fn out_of_range() -> ArrowError {
    ArrowError::InvalidArgumentError("a gathered row is out of range".to_owned())
}

/// Asks the CPU to bring the cache line at `at` in; a hint, which never faults.
#[inline(always)]
fn prefetch(at: *const u8) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    // SAFETY: `_mm_prefetch` needs SSE, which this build targets (the `cfg`); a prefetch reads
    // nothing and does not fault, whatever the address.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = at;
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
    fn text_is_gathered_as_arrow_gathers_it() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let value = |rng: &mut rand_chacha::ChaCha8Rng| -> Option<String> {
            // Empty, short, around the block's width, long; some of several bytes a character.
            let len = [0, 1, 5, 31, 32, 33, 70][rng.random_range(0..7)];
            (rng.random_range(0..6) > 0).then(|| {
                (0..len)
                    .map(|i| if (i + len) % 5 == 0 { '车' } else { char::from(b'a' + (i % 26) as u8) })
                    .collect()
            })
        };
        let whole: Vec<StringArray> =
            (0..4).map(|_| (0..50).map(|_| value(&mut rng)).collect::<StringArray>()).collect();
        // Slices keep the bytes before and after them, so offsets do not start at 0.
        let mut arrays: Vec<StringArray> = whole.iter().map(|a| a.slice(3, 40)).collect();
        arrays.push((0..10).map(|i| Some(format!("{i}"))).collect());
        let refs: Vec<&StringArray> = arrays.iter().collect();
        let dyns: Vec<&dyn Array> = arrays.iter().map(|a| a as &dyn Array).collect();
        let picks: Vec<(usize, usize)> = (0..500)
            .map(|_| {
                let a = rng.random_range(0..arrays.len());
                (a, rng.random_range(0..arrays[a].len()))
            })
            .collect();
        for n in [0, 1, 15, 17, 500] {
            let got = interleave_text(&refs, &picks[..n]).expect("gathered");
            let expected = arrow::compute::interleave(&dyns, &picks[..n]).expect("arrow");
            assert_eq!(got.as_ref(), expected.as_ref(), "{n} picks");
            got.to_data().validate_full().expect("valid");
        }
        // Only the texts without nulls: the result carries none either.
        let plain = [&arrays[4]];
        let got = interleave_text(&plain, &[(0, 9), (0, 0)]).expect("gathered");
        assert_eq!(got.null_count(), 0);
        assert!(got.nulls().is_none());
        assert!(interleave_text(&plain, &[(0, 10)]).is_err(), "a row past the end");
        assert!(interleave_text(&plain, &[(1, 0)]).is_err(), "an array that is not there");
    }

    #[test]
    fn fixed_width_values_are_gathered_as_arrow_gathers_them() {
        use arrow::array::{Int16Array, TimestampMicrosecondArray};
        let dates: Vec<Int16Array> = (0..3)
            .map(|a| (0..30).map(|i| (i % 4 != 0 || a == 2).then_some(a * 100 + i)).collect())
            .collect();
        let sliced: Vec<Int16Array> = dates.iter().map(|d| d.slice(5, 20)).collect();
        let times: Vec<ArrayRef> = (0..2)
            .map(|a| {
                Arc::new(
                    TimestampMicrosecondArray::from(vec![a * 10, a * 10 + 1, a * 10 + 2])
                        .with_timezone("+08:00"),
                ) as ArrayRef
            })
            .collect();
        let picks: Vec<(usize, usize)> = (0..60).map(|i| ((i * 7) % 3, (i * 11) % 20)).collect();
        let dyns: Vec<&dyn Array> = sliced.iter().map(|a| a as &dyn Array).collect();
        for n in [0, 1, 16, 17, 60] {
            let got = interleave_fixed(&dyns, &picks[..n]).expect("covered").expect("gathered");
            let expected = arrow::compute::interleave(&dyns, &picks[..n]).expect("arrow");
            assert_eq!(got.as_ref(), expected.as_ref(), "{n} picks");
        }
        let dyns: Vec<&dyn Array> = times.iter().map(AsRef::as_ref).collect();
        let picks = [(1, 2), (0, 0), (1, 0)];
        let got = interleave_fixed(&dyns, &picks).expect("covered").expect("gathered");
        assert_eq!(got.as_ref(), arrow::compute::interleave(&dyns, &picks).expect("arrow").as_ref());
        assert_eq!(got.data_type(), times[0].data_type(), "the zone is kept");
        assert!(got.nulls().is_none());
        assert!(interleave_fixed(&dyns, &[(0, 3)]).expect("covered").is_err(), "a row past the end");
        let texts = StringArray::from(vec!["a"]);
        assert!(interleave_fixed(&[&texts as &dyn Array], &[(0, 0)]).is_none(), "not fixed-width");
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
