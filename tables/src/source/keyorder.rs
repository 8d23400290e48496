//! The order of one run of the external sort ([`super::external`]): each row's key in arrow's
//! row format is sorted by its first [`PREFIX_BYTES`] bytes held as [`PREFIX_WORDS`] big-endian
//! integers beside the row number, and by the whole key only where those are equal.
//!
//! The order is exactly the row format's byte order (what a sort by `Rows::row` gives): a prefix
//! is the key's first bytes padded with zeros, so two prefixes that differ differ first where the
//! keys do (or where the shorter key ended, a key before every longer one it starts). Comparing
//! integers held in the sorted array, instead of following each row number to its key, keeps the
//! sort from reading the keys' buffer at random; keys longer than the prefix that share it still
//! compare in full.
//!
//! Memory: one [`SortEntry`] (48 bytes) a row, counted against the sort's budget.

use arrow::row::Rows;

/// Integers of a key's prefix.
pub(crate) const PREFIX_WORDS: usize = 5;

/// Bytes of a key compared as integers before the whole key: a GPS report's key, a
/// 17-character VIN (28 bytes in the row format, marker and continuation bytes included) and its
/// timestamp (9), is 37 bytes, so its reports of one vehicle are ordered without reading their
/// keys; a vehicle's VIN alone (28) with room to spare.
pub(crate) const PREFIX_BYTES: usize = PREFIX_WORDS * 8;

/// The first [`PREFIX_BYTES`] of a key, as big-endian integers.
pub(crate) type Prefix = [u64; PREFIX_WORDS];

/// A row of a run and the first bytes of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SortEntry {
    prefix: Prefix,
    /// Row number within the run.
    pub(crate) row: u32,
}

/// Bytes a run holds for each of its rows' entries.
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<SortEntry>();

/// The first [`PREFIX_BYTES`] of `key`, zero-padded, as big-endian integers.
pub(crate) fn prefix_of(key: &[u8]) -> Prefix {
    let mut bytes = [0u8; PREFIX_BYTES];
    let n = key.len().min(PREFIX_BYTES);
    bytes[..n].copy_from_slice(&key[..n]);
    let mut prefix = [0u64; PREFIX_WORDS];
    for (word, chunk) in prefix.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        *word = u64::from_be_bytes(w);
    }
    prefix
}

/// Appends the entries of `keys`' rows `from..` (numbered as in `keys`).
pub(crate) fn push_entries(entries: &mut Vec<SortEntry>, keys: &Rows, from: usize) {
    entries.reserve(keys.num_rows().saturating_sub(from));
    for i in from..keys.num_rows() {
        entries.push(SortEntry { prefix: prefix_of(keys.row(i).as_ref()), row: i as u32 });
    }
}

/// Sorts `entries` into the order of their rows' keys in `keys` (row numbers index `keys`).
/// Returns the position in `entries` of the first entry whose key equals the one before it.
pub(crate) fn sort_entries(entries: &mut [SortEntry], keys: &Rows) -> Option<usize> {
    let full = |a: &SortEntry, b: &SortEntry| keys.row(a.row as usize).cmp(&keys.row(b.row as usize));
    entries.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| full(a, b)));
    entries
        .windows(2)
        .position(|pair| pair[0].prefix == pair[1].prefix && full(&pair[0], &pair[1]).is_eq())
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::DataType;
    use arrow::row::{RowConverter, SortField};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The plain sort by whole keys the prefix sort must reproduce.
    fn by_whole_keys(keys: &Rows) -> Vec<u32> {
        let mut order: Vec<u32> = (0..keys.num_rows() as u32).collect();
        order.sort_by(|&a, &b| keys.row(a as usize).cmp(&keys.row(b as usize)));
        order
    }

    fn random_text(rng: &mut ChaCha8Rng) -> Option<String> {
        // Shared prefixes of every length around the prefix's width, trailing NULs, empties, nulls.
        let stems = ["", "LSV", "LSVAB2BM6NH00", "LSVAB2BM6NH0012345678", "a\0", "a"];
        if rng.random_range(0..20) == 0 {
            return None;
        }
        let mut text = stems[rng.random_range(0..stems.len())].to_owned();
        for _ in 0..rng.random_range(0..30) {
            text.push([b'\0', b'0', b'7', b'A', b'z', 0xffu8 >> 1][rng.random_range(0..6)] as char);
        }
        Some(text)
    }

    fn entries_order(keys: &Rows) -> (Vec<u32>, Option<usize>) {
        let mut entries = Vec::new();
        push_entries(&mut entries, keys, 0);
        let duplicate = sort_entries(&mut entries, keys);
        (entries.iter().map(|e| e.row).collect(), duplicate)
    }

    #[test]
    fn the_prefix_sort_gives_the_order_of_whole_keys() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let converter =
            RowConverter::new(vec![SortField::new(DataType::Utf8), SortField::new(DataType::Int64)])
                .expect("converter");
        for round in 0..20 {
            let mut seen = std::collections::HashSet::new();
            let mut texts = Vec::new();
            let mut numbers = Vec::new();
            while texts.len() < 2_000 {
                let (text, number) = (random_text(&mut rng), rng.random_range(-3i64..3));
                if seen.insert((text.clone(), number)) {
                    texts.push(text);
                    numbers.push(number);
                }
            }
            let columns: Vec<ArrayRef> =
                vec![Arc::new(StringArray::from(texts)), Arc::new(Int64Array::from(numbers))];
            let keys = converter.convert_columns(&columns).expect("keys");
            let (order, duplicate) = entries_order(&keys);
            assert_eq!(order, by_whole_keys(&keys), "round {round}");
            assert_eq!(duplicate, None, "round {round}");
        }
    }

    #[test]
    fn a_key_seen_twice_is_found_after_the_sort() {
        let converter = RowConverter::new(vec![SortField::new(DataType::Utf8)]).expect("converter");
        let long = "LSVAB2BM6NH0012345678-same-long-key";
        let texts = vec!["b", long, "a", "LSVAB2BM6NH0012345678-other", long];
        let column: ArrayRef = Arc::new(StringArray::from(texts));
        let keys = converter.convert_columns(&[column]).expect("keys");
        let mut entries = Vec::new();
        push_entries(&mut entries, &keys, 0);
        let at = sort_entries(&mut entries, &keys).expect("the duplicate is found");
        assert_eq!(keys.row(entries[at].row as usize), keys.row(1));
        assert_eq!(keys.row(entries[at - 1].row as usize), keys.row(4));
    }

    /// The prefix's width is chosen for a GPS report's key, `(vin, ts)`: all of it is compared as
    /// integers, so a run's reports of one vehicle never fall back to whole keys.
    #[test]
    fn a_gps_reports_whole_key_fits_the_prefix() {
        use arrow::array::TimestampMillisecondArray;
        use arrow::datatypes::TimeUnit;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("+08:00".into()));
        let converter =
            RowConverter::new(vec![SortField::new(DataType::Utf8), SortField::new(ts)]).expect("converter");
        let vin: ArrayRef = Arc::new(StringArray::from(vec!["LSVAB2BM6NH001234"]));
        let at: ArrayRef =
            Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_000]).with_timezone("+08:00"));
        let keys = converter.convert_columns(&[vin, at]).expect("keys");
        assert!(keys.row(0).as_ref().len() <= PREFIX_BYTES, "{} bytes", keys.row(0).as_ref().len());
    }
}
