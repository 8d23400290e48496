//! Row prints: what makes two prints differ (and what must not), and a prints file refused for
//! every way it can be wrong.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, LargeStringArray, ListArray,
    StringArray, StringViewArray,
};
use arrow::datatypes::{Int32Type, Int64Type};

use super::*;

fn prints(columns: Vec<(&str, ArrayRef)>) -> Vec<u64> {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let mut printer = RowPrinter::new(&batch.schema(), &[0]).expect("printer");
    let mut out = Vec::new();
    printer.print(&batch, &mut out).expect("print");
    out
}

fn ids(n: i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(0..n))
}

#[test]
fn prints_tell_apart_what_the_diff_tells_apart() {
    let floats: ArrayRef = Arc::new(Float64Array::from(vec![
        Some(0.0),
        Some(-0.0),
        Some(f64::NAN),
        Some(-f64::NAN),
        None,
        Some(1.0),
    ]));
    let p = prints(vec![("id", ids(6)), ("x", floats)]);
    for i in 0..p.len() {
        for j in i + 1..p.len() {
            assert_ne!(p[i], p[j], "rows {i} and {j}: floats compare by bits, null is not a value");
        }
    }
    let text: ArrayRef = Arc::new(StringArray::from(vec![Some(""), None, Some("a"), Some("b")]));
    let p = prints(vec![("id", ids(4)), ("t", text)]);
    assert!(p.iter().enumerate().all(|(i, a)| p[i + 1..].iter().all(|b| a != b)), "{p:?}");
}

#[test]
fn equal_values_print_alike_whatever_their_layout_or_key() {
    let values = vec![Some("north"), None, Some("south"), Some("north")];
    let plain: ArrayRef = Arc::new(StringArray::from(values.clone()));
    let large: ArrayRef = Arc::new(LargeStringArray::from(values.clone()));
    let view: ArrayRef = Arc::new(StringViewArray::from(values.clone()));
    let dict: ArrayRef = Arc::new(values.iter().copied().collect::<DictionaryArray<Int32Type>>());
    let dict64: ArrayRef = Arc::new(values.iter().copied().collect::<DictionaryArray<Int64Type>>());
    let expected = prints(vec![("id", ids(4)), ("region", plain)]);
    for other in [large, view, dict, dict64] {
        assert_eq!(prints(vec![("id", ids(4)), ("region", other)]), expected);
    }
    // The key is not part of the print; a slice prints as the rows it holds.
    let other_keys: ArrayRef = Arc::new(Int64Array::from(vec![7, 8, 9, 10]));
    let region: ArrayRef = Arc::new(StringArray::from(values.clone()));
    assert_eq!(prints(vec![("id", other_keys), ("region", region.clone())]), expected);
    let sliced =
        RecordBatch::try_from_iter(vec![("id", ids(4)), ("region", region)]).expect("batch").slice(1, 3);
    let mut printer = RowPrinter::new(&sliced.schema(), &[0]).expect("printer");
    let mut out = Vec::new();
    printer.print(&sliced, &mut out).expect("print");
    assert_eq!(out, expected[1..]);
}

#[test]
fn column_order_and_nested_values_count() {
    let a: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
    let b: ArrayRef = Arc::new(Int32Array::from(vec![2, 1]));
    let ab = prints(vec![("id", ids(2)), ("a", a.clone()), ("b", b.clone())]);
    assert_ne!(ab[0], ab[1], "swapped values in two columns");
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), Some(2)]),
        Some(vec![Some(12)]),
        None,
        Some(vec![]),
    ]));
    let p = prints(vec![("id", ids(4)), ("l", list)]);
    assert!(p.iter().enumerate().all(|(i, a)| p[i + 1..].iter().all(|b| a != b)), "{p:?}");
}

/// A table of key columns only: every matched row is equal, so every print is the same.
#[test]
fn rows_without_values_print_alike() {
    let p = prints(vec![("id", ids(3))]);
    assert_eq!(p, vec![START; 3]);
}

fn written(dir: &Path, rows: u64) -> (PathBuf, [u8; 32]) {
    let path = dir.join("rows.prints");
    let mut writer = PrintsWriter::create(&path).expect("create");
    let prints: Vec<u64> = (0..rows).map(|i| mix(i + 1)).collect();
    writer.append(&prints[..prints.len() / 2]).expect("append");
    writer.append(&prints[prints.len() / 2..]).expect("append");
    let body = writer.finish().expect("finish");
    assert_eq!(body.rows, rows);
    let binding = binding(&[[1u8; 32], [2u8; 32]]);
    seal(&body, &binding).expect("seal");
    (path, binding)
}

#[test]
fn sealed_prints_are_read_back_in_batches() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, binding) = written(dir.path(), 1000);
    check(&path, 1000, &binding).expect("check");
    let mut reader = PrintsReader::open(&path, 1000).expect("open");
    let mut all = reader.read(999).expect("read");
    assert!(reader.finish().is_err(), "one print left");
    all.extend(reader.read(1).expect("read"));
    assert!(reader.read(1).is_err(), "past the end");
    reader.finish().expect("all read");
    assert_eq!(all, (0..1000).map(|i| mix(i + 1)).collect::<Vec<_>>());
}

#[test]
fn prints_are_refused_unless_whole_and_of_this_table() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, binding) = written(dir.path(), 100);
    let refused = |path: &Path, rows: u64, binding: &[u8; 32], why: &str| {
        let e = check(path, rows, binding).expect_err(why);
        assert!(matches!(e, TableError::InvalidArgument { .. } | TableError::Io { .. }), "{why}: {e}");
    };
    refused(&path, 101, &binding, "another row count");
    refused(&path, 100, &super::binding(&[[1u8; 32]]), "another table");
    refused(&dir.path().join("absent"), 100, &binding, "no file");
    let good = std::fs::read(&path).expect("read");
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit in a print", {
            let mut b = good.clone();
            b[17] ^= 4;
            b
        }),
        ("a flipped bit in the trailer's hash", {
            let mut b = good.clone();
            let at = b.len() - 20;
            b[at] ^= 1;
            b
        }),
        ("another format", {
            let mut b = good.clone();
            let at = b.len() - TRAILER + 8;
            b[at] = 9;
            b
        }),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("unsealed", good[..good.len() - TRAILER].to_vec()),
        ("empty", Vec::new()),
    ];
    for (why, bytes) in variants {
        std::fs::write(&path, &bytes).expect("write");
        refused(&path, 100, &binding, why);
    }
    std::fs::write(&path, &good).expect("write");
    check(&path, 100, &binding).expect("the original again");
}

#[test]
fn a_body_of_other_rows_is_not_sealed() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p");
    let mut writer = PrintsWriter::create(&path).expect("create");
    writer.append(&[1, 2, 3]).expect("append");
    let body = writer.finish().expect("finish");
    std::fs::write(&path, [0u8; 16]).expect("shorten");
    assert!(seal(&body, &[0; 32]).is_err());
}

/// Rows of most column types, with nulls, as the pinned test below prints them.
fn pinned_batch() -> RecordBatch {
    use arrow::array::{BinaryArray, BooleanArray, Date32Array, Decimal128Array, Int16Array, UInt8Array};
    let dict: ArrayRef = Arc::new(
        vec![Some("bus"), None, Some("car"), Some("bus")].into_iter().collect::<DictionaryArray<Int32Type>>(),
    );
    RecordBatch::try_from_iter(vec![
        ("id", ids(4)),
        (
            "text",
            Arc::new(StringArray::from(vec![
                Some("京A12345"),
                Some(""),
                None,
                Some("a much longer value than sixteen bytes"),
            ])) as ArrayRef,
        ),
        ("kind", dict),
        ("small", Arc::new(Int16Array::from(vec![Some(-1), Some(0), Some(7), None])) as ArrayRef),
        ("byte", Arc::new(UInt8Array::from(vec![1u8, 2, 3, 255])) as ArrayRef),
        ("day", Arc::new(Date32Array::from(vec![Some(19_000), None, Some(0), Some(-5)])) as ArrayRef),
        ("x", Arc::new(Float64Array::from(vec![Some(-0.0), Some(f64::NAN), Some(1.5), None])) as ArrayRef),
        ("flag", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)])) as ArrayRef),
        (
            "blob",
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01"[..]), None, Some(&b""[..]), Some(&b"xyz"[..])]))
                as ArrayRef,
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from(vec![Some(12_345_i128), None, Some(-1), Some(i128::MAX)])
                    .with_precision_and_scale(38, 2)
                    .expect("decimal"),
            ) as ArrayRef,
        ),
    ])
    .expect("batch")
}

/// The digest is part of the prints file's format ([`PRINTS_FORMAT`]): prints a node kept must
/// print alike after an upgrade, or every next diff would find every row changed. A change to
/// these values needs a new format number.
#[test]
fn the_digest_of_known_rows_is_pinned() {
    let batch = pinned_batch();
    let mut printer = RowPrinter::new(&batch.schema(), &[0]).expect("printer");
    let mut out = Vec::new();
    printer.print(&batch, &mut out).expect("print");
    let pinned: Vec<u64> =
        vec![0xa6a0_66f4_c4d6_4f58, 0x4370_47b7_8540_2e50, 0x9714_664b_4b17_ba37, 0x3e41_7a93_f805_21b7];
    assert_eq!(out, pinned, "{out:#018x?}");
}
