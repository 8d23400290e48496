//! Tests of the canonical writer: bytes depend on rows only, and the bytes of fixed tables are
//! pinned (golden BLAKE3 hashes), so that a change of how the writer encodes cannot go unnoticed.

use arrow::array::{Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::*;
use crate::synth;

fn hashes(files: &[WrittenFile]) -> Vec<(String, u64, blake3::Hash)> {
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(&f.path).expect("read");
            assert_eq!(bytes.len() as u64, f.size);
            (f.name.as_str().to_owned(), f.rows, blake3::hash(&bytes))
        })
        .collect()
}

fn write_in_slices(
    dir: &Path,
    table: &RecordBatch,
    sizes: &[usize],
    opts: &WriteOptions,
) -> Vec<WrittenFile> {
    let keys = ["vin".to_owned()];
    let mut writer = CanonicalWriter::new(dir, "part", table.schema(), &keys, opts).expect("writer");
    let (mut offset, mut i) = (0, 0);
    while offset < table.num_rows() {
        let len = sizes[i % sizes.len()].min(table.num_rows() - offset);
        writer.write(&table.slice(offset, len)).expect("write");
        offset += len;
        i += 1;
    }
    writer.finish().expect("finish")
}

/// Large enough that data pages and dictionaries hit their size limits mid row group, which
/// is where an unchunked writer's output would depend on the caller's batches.
#[test]
fn bytes_depend_only_on_rows_not_on_batching() {
    let batches: Vec<RecordBatch> = synth::vehicle_registry(5, 60_000).collect();
    let table = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    for format in WRITABLE_FORMATS {
        let opts =
            WriteOptions { rows_per_file: 50_000, row_group_rows: 40_000, format, ..WriteOptions::default() };
        let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let whole = write_in_slices(a.path(), &table, &[usize::MAX], &opts);
        let sliced = write_in_slices(b.path(), &table, &[1, 4_999, 777, 12_289, 3], &opts);
        assert_eq!(whole.iter().map(|f| f.rows).collect::<Vec<_>>(), [50_000, 10_000]);
        assert_eq!(hashes(&whole), hashes(&sliced), "format {format}");
        let names: Vec<String> = std::fs::read_dir(b.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}

/// Format 3 writes a column plain in a row group where its values hardly repeat, with a
/// dictionary where they do, row group by row group; the rows read back as written, and the
/// files are smaller than format 2's for the vehicle registry.
#[test]
fn format_3_keeps_dictionaries_where_values_repeat() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let batches: Vec<RecordBatch> = synth::vehicle_registry(5, 70_000).collect();
    let table = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let three = write_in_slices(a.path(), &table, &[8_192], &WriteOptions::default());
    let two =
        write_in_slices(b.path(), &table, &[8_192], &WriteOptions { format: 2, ..WriteOptions::default() });
    let size = |files: &[WrittenFile]| files.iter().map(|f| f.size).sum::<u64>();
    assert!(size(&three) < size(&two), "format 3 {} bytes, format 2 {}", size(&three), size(&two));
    let schema = synth::vehicle_registry_schema();
    let column = |name: &str| schema.index_of(name).expect("column");
    // Which column chunks of each row group have a dictionary page.
    let mut dictionaries = Vec::new();
    let mut read = Vec::new();
    for file in &three {
        let reader = SerializedFileReader::new(File::open(&file.path).expect("open")).expect("reader");
        for group in reader.metadata().row_groups() {
            let has = |name: &str| group.column(column(name)).dictionary_page_offset().is_some();
            dictionaries.push([has("vin"), has("plate"), has("fuel"), has("status"), has("registered_on")]);
        }
        let rows = ParquetRecordBatchReaderBuilder::try_new(File::open(&file.path).expect("open"))
            .expect("builder")
            .build()
            .expect("reader");
        read.extend(rows.map(|b| b.expect("batch")));
    }
    // 65,536 rows: the dates of first registration (some 7,000 days) repeat; 4,464 rows: hardly.
    assert_eq!(dictionaries, [[false, false, true, true, true], [false, false, true, true, false]]);
    assert_eq!(concat_batches(&schema, &read).expect("concat"), table);
}

/// A manifest's writer names the format a consumer rebuilds its table in, when this writer
/// still writes it.
#[test]
fn the_format_of_a_manifest_is_the_one_its_writer_names() {
    let layout =
        ferry_proto::TableLayout { rows_per_file: 10, row_group_rows: 5, batch_rows: 2, zstd_level: 4 };
    let of = |writer: Option<&str>| WriteOptions::for_manifest(layout, writer).format;
    assert_eq!(of(Some("ferry-canonical/2 parquet-rs/60.2.0")), 2);
    assert_eq!(of(Some("ferry-canonical/3 parquet-rs/60.2.0")), 3);
    assert_eq!(of(Some("ferry-canonical/1 parquet-rs/55.0.0")), CANONICAL_FORMAT);
    assert_eq!(of(Some("ferry-canonical/x parquet-rs/60.2.0")), CANONICAL_FORMAT);
    assert_eq!(of(Some("parquet-rs version 99.0.0")), CANONICAL_FORMAT);
    assert_eq!(of(None), CANONICAL_FORMAT);
    let two = WriteOptions::for_manifest(layout, Some("ferry-canonical/2 parquet-rs/60.2.0"));
    assert_eq!((two.rows_per_file, two.row_group_rows, two.batch_rows, two.zstd_level), (10, 5, 2, 4));
    assert!(two.writer().starts_with("ferry-canonical/2 parquet-rs/"), "{}", two.writer());
}

/// Each file's hashes, taken as the writer wrote it, are those of the file read back: its size,
/// whole-file BLAKE3 and the BLAKE3 of each chunk (the last one short); without a chunk size,
/// the whole file's only. Asking for them does not change the bytes.
#[test]
fn written_hashes_are_those_of_the_files_read_back() {
    let batches: Vec<RecordBatch> = synth::vehicle_registry(6, 30_000).collect();
    let table = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let opts = WriteOptions { rows_per_file: 12_000, row_group_rows: 5_000, ..WriteOptions::default() };
    let keys = ["vin".to_owned()];
    let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let chunk = 64 * 1024;
    let mut writer = CanonicalWriter::new(a.path(), "part", table.schema(), &keys, &opts)
        .expect("writer")
        .with_chunk_hashes(Some(chunk));
    writer.write(&table).expect("write");
    let chunked = writer.finish().expect("finish");
    assert_eq!(chunked.len(), 3);
    for f in &chunked {
        let bytes = std::fs::read(&f.path).expect("read");
        let chunks: Vec<blake3::Hash> = bytes.chunks(chunk as usize).map(blake3::hash).collect();
        assert!(chunks.len() > 1, "{} is one chunk", f.name);
        let read_back = WrittenHashes {
            size: bytes.len() as u64,
            blake3: blake3::hash(&bytes),
            chunks: Some((chunk, chunks)),
        };
        assert_eq!(f.hashes, read_back, "{}", f.name);
        assert_eq!(f.size, f.hashes.size);
    }
    let plain = write_in_slices(b.path(), &table, &[7_001], &opts);
    assert_eq!(hashes(&plain), hashes(&chunked));
    for (p, c) in plain.iter().zip(&chunked) {
        assert_eq!(
            (p.hashes.size, p.hashes.blake3, &p.hashes.chunks),
            (c.hashes.size, c.hashes.blake3, &None)
        );
    }
}

/// The writer's name and the rows hash: another writer (here another `created_by`) writes
/// other bytes for the same rows, and the same rows hash, which reading the file back agrees with.
#[test]
fn another_writer_writes_other_bytes_with_the_same_rows_hash() {
    let batches: Vec<RecordBatch> = synth::vehicle_registry(7, 3_000).collect();
    let table = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let opts = WriteOptions { rows_per_file: 2_000, ..WriteOptions::default() };
    let foreign = WriteOptions { foreign_writer: Some("parquet-rs version 99.0.0".into()), ..opts.clone() };
    assert!(opts.writer().starts_with("ferry-canonical/3 parquet-rs/"), "{}", opts.writer());
    assert_ne!(opts.writer(), foreign.writer());
    let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let ours = write_in_slices(a.path(), &table, &[usize::MAX], &opts);
    let theirs = write_in_slices(b.path(), &table, &[777], &foreign);
    assert_eq!(ours.len(), 2);
    for ((x, y), (hx, hy)) in ours.iter().zip(&theirs).zip(hashes(&ours).iter().zip(&hashes(&theirs))) {
        assert_ne!(hx.2, hy.2, "the bytes differ");
        assert!(x.rows_blake3.is_some());
        assert_eq!(x.rows_blake3, y.rows_blake3);
        assert_eq!(crate::rows_hash::hash_parquet_file(&y.path).expect("read back"), x.rows_blake3);
    }
}

fn tiny_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

#[test]
fn zero_rows_write_one_empty_file() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = CanonicalWriter::new(
        dir.path(),
        "upserts",
        tiny_schema(),
        &["id".to_owned()],
        &WriteOptions::default(),
    )
    .expect("writer");
    let files = writer.finish().expect("finish");
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].name.as_str(), files[0].rows), ("upserts-00000.parquet", 0));
    let file = File::open(&files[0].path).expect("open");
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
    assert_eq!(reader.schema(), &tiny_schema());
}

#[test]
fn bad_arguments_and_batches_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = WriteOptions::default();
    let keys = ["id".to_owned()];
    let err = CanonicalWriter::new(dir.path(), "../x", tiny_schema(), &keys, &opts).expect_err("prefix");
    assert!(matches!(err, TableError::InvalidArgument { .. }), "{err}");
    let err =
        CanonicalWriter::new(dir.path(), "p", tiny_schema(), &["nope".to_owned()], &opts).expect_err("key");
    assert!(matches!(err, TableError::InvalidArgument { .. }), "{err}");
    for format in [0, 1, CANONICAL_FORMAT + 1] {
        let unknown = WriteOptions { format, ..WriteOptions::default() };
        let err = CanonicalWriter::new(dir.path(), "p", tiny_schema(), &keys, &unknown).expect_err("format");
        assert!(matches!(err, TableError::InvalidArgument { .. }), "{err}");
    }
    let bad_level = WriteOptions { zstd_level: 99, ..WriteOptions::default() };
    let err = CanonicalWriter::new(dir.path(), "p", tiny_schema(), &keys, &bad_level).expect_err("level");
    assert!(matches!(err, TableError::Parquet { .. }), "{err}");
    let mut writer = CanonicalWriter::new(dir.path(), "p", tiny_schema(), &keys, &opts).expect("writer");
    let other =
        RecordBatch::try_from_iter(vec![("id", Arc::new(Int32Array::from(vec![1])) as _)]).expect("batch");
    let err = writer.write(&other).expect_err("schema");
    assert!(matches!(err, TableError::SchemaMismatch { .. }), "{err}");
}

#[test]
fn abandoned_writer_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = WriteOptions { batch_rows: 1, ..WriteOptions::default() };
    let mut writer =
        CanonicalWriter::new(dir.path(), "part", tiny_schema(), &["id".to_owned()], &opts).expect("writer");
    let batch = RecordBatch::try_new(
        tiny_schema(),
        vec![Arc::new(Int32Array::from(vec![1, 2])), Arc::new(StringArray::from(vec![Some("a"), None]))],
    )
    .expect("batch");
    writer.write(&batch).expect("write");
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1, "the .tmp file exists");
    drop(writer);
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
}

/// A writer of one-row files whose second file cannot take its name (a directory holds it):
/// the rows 1, 2, 3, one file each.
fn write_three_files_the_second_unnameable(dir: &Path) -> (CanonicalWriter, Vec<Result<(), TableError>>) {
    let blocker = dir.join("part-00001.parquet");
    std::fs::create_dir(&blocker).expect("dir");
    std::fs::write(blocker.join("keep"), b"x").expect("file");
    let opts = WriteOptions { rows_per_file: 1, batch_rows: 1, ..WriteOptions::default() };
    let mut writer =
        CanonicalWriter::new(dir, "part", tiny_schema(), &["id".to_owned()], &opts).expect("writer");
    let writes = (1..=3)
        .map(|id| {
            let batch = RecordBatch::try_new(
                tiny_schema(),
                vec![Arc::new(Int32Array::from(vec![id])), Arc::new(StringArray::from(vec![Some("a")]))],
            )
            .expect("batch");
            writer.write(&batch)
        })
        .collect();
    (writer, writes)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Files are synced and renamed on a thread of their own: a file that cannot be renamed fails
/// `finish` with its error, the file before it stays named, the one after it is not renamed and
/// no temporary file is left.
#[test]
fn a_file_that_cannot_be_closed_fails_the_writer_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (writer, writes) = write_three_files_the_second_unnameable(dir.path());
    // The writer may learn of the failure at a later file or only at the end; either way it
    // does not finish.
    let failed_write = writes.into_iter().find_map(Result::err);
    let err = match failed_write {
        Some(e) => {
            assert!(writer.finish().is_err(), "a writer that failed to close a file finished");
            e
        }
        None => writer.finish().expect_err("the second file cannot be renamed"),
    };
    assert!(matches!(&err, TableError::Io { path, .. } if path.ends_with("part-00001.parquet.tmp")), "{err}");
    assert_eq!(names_in(dir.path()), ["part-00000.parquet", "part-00001.parquet"]);
    assert!(dir.path().join("part-00001.parquet").is_dir());
}

/// An abandoned writer returns only the files it renamed, for the caller to remove.
#[test]
fn an_abandoned_writer_returns_the_files_it_named() {
    let dir = tempfile::tempdir().expect("dir");
    let (writer, _) = write_three_files_the_second_unnameable(dir.path());
    let completed = writer.abandon();
    assert_eq!(completed, [dir.path().join("part-00000.parquet")]);
    assert_eq!(names_in(dir.path()), ["part-00000.parquet", "part-00001.parquet"]);
}

/// One BLAKE3 over every written file's name, rows, bytes and rows hash: the fingerprint of a
/// whole written table.
fn fingerprint(files: &[WrittenFile]) -> String {
    let mut all = blake3::Hasher::new();
    for (name, rows, hash) in hashes(files) {
        all.update(name.as_bytes());
        all.update(&rows.to_le_bytes());
        all.update(hash.as_bytes());
    }
    for f in files {
        all.update(f.rows_blake3.as_ref().map_or(&[0u8; 32], |h| h.as_bytes()));
    }
    all.finalize().to_hex().to_string()
}

/// A table of every flavour the encoder treats apart: a non-null key, nullable strings and
/// floats, booleans, dates, and a nested list (several Parquet leaves per Arrow column would
/// come from a struct; a list has repetition levels), built from arithmetic only.
pub(super) fn mixed_table(rows: usize) -> RecordBatch {
    use arrow::array::{BooleanArray, Date32Array, Float64Array, Int64Array, ListArray};
    use arrow::datatypes::Int32Type;
    let n = rows as i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, false),
        Field::new_list("tags", Field::new_list_field(DataType::Int32, true), true),
    ]));
    let names: Vec<Option<String>> =
        (0..n).map(|i| (i % 7 != 3).then(|| format!("name-{}", (i * 7919) % 5003))).collect();
    let xs: Vec<Option<f64>> = (0..n).map(|i| (i % 11 != 0).then_some((i as f64).sqrt())).collect();
    let oks: Vec<Option<bool>> = (0..n).map(|i| (i % 5 != 1).then_some(i % 3 == 0)).collect();
    let days: Vec<i32> = (0..n).map(|i| 18_000 + (i % 4_000) as i32).collect();
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>((0..n).map(|i| {
        (i % 13 != 0).then(|| (0..i % 4).map(|j| (j != 2).then_some((i * j) as i32)).collect::<Vec<_>>())
    }));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from(names)),
            Arc::new(Float64Array::from(xs)),
            Arc::new(BooleanArray::from(oks)),
            Arc::new(Date32Array::from(days)),
            Arc::new(tags),
        ],
    )
    .expect("mixed table")
}

fn write_table(table: &RecordBatch, key: &str, opts: &WriteOptions, sizes: &[usize]) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let keys = [key.to_owned()];
    let mut writer = CanonicalWriter::new(dir.path(), "part", table.schema(), &keys, opts).expect("writer");
    let (mut offset, mut i) = (0, 0);
    while offset < table.num_rows() {
        let len = sizes[i % sizes.len()].min(table.num_rows() - offset);
        writer.write(&table.slice(offset, len)).expect("write");
        offset += len;
        i += 1;
    }
    fingerprint(&writer.finish().expect("finish"))
}

/// The bytes of fixed tables, pinned: format 2's recorded from the single-threaded `ArrowWriter`
/// before columns were encoded in parallel. Existing manifests hold hashes of such files, so
/// these must never change without a new [`CANONICAL_FORMAT`], and a format stays pinned while
/// it is in [`WRITABLE_FORMATS`]. The layouts cut row groups and files in the middle of a
/// `batch_rows` chunk, and leave short last row groups and files.
#[test]
fn bytes_of_fixed_tables_are_pinned() {
    let batches: Vec<RecordBatch> = synth::vehicle_registry(11, 100_000).collect();
    let vehicles = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let mixed = mixed_table(50_000);
    let two = WriteOptions { format: 2, ..WriteOptions::default() };
    let odd = WriteOptions { rows_per_file: 70_000, row_group_rows: 30_000, ..two.clone() };
    let small = WriteOptions {
        rows_per_file: 7_000,
        row_group_rows: 2_500,
        batch_rows: 1_000,
        zstd_level: 5,
        ..two.clone()
    };
    let three = WriteOptions::default();
    let odd3 = WriteOptions { format: 3, ..odd.clone() };
    let small3 = WriteOptions { format: 3, ..small.clone() };
    let cases = [
        ("vehicles, default layout", write_table(&vehicles, "vin", &two, &[usize::MAX])),
        ("vehicles, odd layout", write_table(&vehicles, "vin", &odd, &[10_007, 3])),
        ("mixed, default layout", write_table(&mixed, "id", &two, &[usize::MAX])),
        ("mixed, small layout", write_table(&mixed.slice(0, 20_000), "id", &small, &[777])),
        ("mixed, empty", write_table(&mixed.slice(0, 0), "id", &small, &[1])),
        ("format 3, vehicles, default layout", write_table(&vehicles, "vin", &three, &[usize::MAX])),
        ("format 3, vehicles, odd layout", write_table(&vehicles, "vin", &odd3, &[10_007, 3])),
        ("format 3, mixed, default layout", write_table(&mixed, "id", &three, &[usize::MAX])),
        ("format 3, mixed, small layout", write_table(&mixed.slice(0, 20_000), "id", &small3, &[777])),
        ("format 3, mixed, empty", write_table(&mixed.slice(0, 0), "id", &small3, &[1])),
    ];
    let expected = [
        "vehicles, default layout: 89eac10e286db2b2064771e946df9453d4cf3f198940172ab90c6f6f468102dc",
        "vehicles, odd layout: 3637b4286b3ed38bf982a6b8f7ed24f70da0b64e8f726bd666d8b2af58bff3dc",
        "mixed, default layout: 7fad81c7feb0d0915492e6c1c125acdcad88b562ec5b6c5b7d7b0ad707953c74",
        "mixed, small layout: 6ca1ea4ec3dd378d76c4564726dc6e78abde8f464b2ac7965c944a73469ab6a0",
        "mixed, empty: 5c8805dce072934cc48bd126feb36cbaf4f44525fa1063c4343bd620b497ddaf",
        "format 3, vehicles, default layout: bee0f1b029712869d786587008875ab6bf81eb1b440f954b668d9d26ae5e8fa8",
        "format 3, vehicles, odd layout: 6f757a2f962a1f536862a2f3889b4f4da6a0267643ff4f9a94de45e8cdf33e13",
        "format 3, mixed, default layout: 7536de49b16e3b1fc10a73255329afc2605e1521728917dcae0d86bd9e1741ba",
        "format 3, mixed, small layout: 7f6642d949212c2679aa6f11d805de76521a00bba47e2f6cc505b82381deb588",
        "format 3, mixed, empty: 5c8805dce072934cc48bd126feb36cbaf4f44525fa1063c4343bd620b497ddaf",
    ];
    let got: Vec<String> = cases.iter().map(|(name, hash)| format!("{name}: {hash}")).collect();
    assert_eq!(got, expected, "{got:#?}");
}
