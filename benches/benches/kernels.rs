//! Micro-benchmarks of the kernels on ferry's hot path, with `Throughput` set so criterion
//! reports bytes per second: frame encode/decode of a 1 MiB chunk, chunk verification
//! (BLAKE3 + compare), the zstd compress-or-skip decision on text-like and Parquet-like data, and
//! the row-level delta kernels (diff and apply of two 200k-row vehicle registry snapshots with 1%
//! of rows changed; rows per second, fsyncs included), and a publish's streamed diff of the
//! second against the first by value and by the head's row prints (`delta_cpu`: the CPU time of
//! every thread of the process per diff, since the head is decoded on a thread of its own and
//! the wall time of two threads hides what one of them saves; printed as a time per diff), and
//! the row prints of the 200k rows alone (`prints`).
//! Run: `cargo bench -p ferry-benches --bench kernels`.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_benches::{random_like, text_like};
use ferry_proto::{ChunkEncoding, Message, SourceFormat, frame};
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::source::{PublishOptions, write_sorted_parquet};
use ferry_tables::synth;
use nix::sys::resource::{UsageWho, getrusage};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHUNK: usize = 1 << 20;

fn framing(c: &mut Criterion) {
    let msg = Message::Chunk {
        file: 3,
        index: 17,
        encoding: ChunkEncoding::Raw,
        raw_len: CHUNK as u32,
        data: Bytes::from(random_like(CHUNK)),
    };
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.bench_function("encode_chunk_1MiB", |b| {
        let mut out = BytesMut::with_capacity(CHUNK + 64);
        b.iter(|| {
            out.clear();
            frame::encode(black_box(&msg), &mut out);
        })
    });
    let mut encoded = BytesMut::new();
    frame::encode(&msg, &mut encoded);
    let encoded = encoded.freeze();
    group.bench_function("decode_chunk_1MiB", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            black_box(frame::decode(&mut buf).ok().flatten())
        })
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let data = random_like(CHUNK);
    let expected = *blake3::hash(&data).as_bytes();
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.bench_function("verify_blake3_1MiB", |b| {
        b.iter(|| black_box(blake3::hash(black_box(&data)).as_bytes() == &expected))
    });
    group.finish();
}

/// The serving node's decision, as it makes it.
fn zstd_decision(data: &[u8]) -> bool {
    ferry_net::wire::compress_if_worth(data).is_some()
}

fn compression(c: &mut Criterion) {
    let mut group = c.benchmark_group("zstd_decision");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    let text = text_like(CHUNK);
    let parquet_like = random_like(CHUNK);
    assert!(zstd_decision(&text) && !zstd_decision(&parquet_like));
    group.bench_function("text_compresses", |b| b.iter(|| black_box(zstd_decision(black_box(&text)))));
    group.bench_function("parquet_skips", |b| b.iter(|| black_box(zstd_decision(black_box(&parquet_like)))));
    group.finish();
}

const DELTA_ROWS: usize = 200_000;

/// Publishes two days of the synthetic registry (day 2 = day 1 with 1% of rows changed) into
/// `root/v1` and `root/v2` and returns their files and key columns.
fn delta_versions(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<String>) {
    let def = DatasetDefinition::parse_toml(&synth::vehicle_registry_definition("vehicles", "zhejiang"))
        .expect("synthetic definition parses");
    let day1: Vec<_> = synth::vehicle_registry(7, DELTA_ROWS).collect();
    let day2 = synth::edit_vehicle_registry(&day1, 8, 0.01).expect("registry rows").batches;
    let mut versions = Vec::new();
    for (name, batches) in [("v1", day1), ("v2", day2)] {
        let export = root.join(format!("{name}.parquet"));
        synth::write_parquet(&export, synth::vehicle_registry_schema(), batches).expect("export");
        let out = root.join(name);
        std::fs::create_dir(&out).expect("version dir");
        let files =
            write_sorted_parquet(&def, SourceFormat::Parquet, &export, &out, &PublishOptions::default())
                .expect("publish");
        versions.push(files.into_iter().map(|f| f.path).collect::<Vec<_>>());
    }
    let keys = def.key_columns().iter().map(|c| c.name.clone()).collect();
    let v2 = versions.pop().unwrap_or_default();
    let v1 = versions.pop().unwrap_or_default();
    (v1, v2, keys)
}

fn delta(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("tempdir");
    let (v1, v2, keys) = delta_versions(root.path());
    let opts = PublishOptions::default().write_options();
    let delta_dir = root.path().join("delta");
    let out_dir = root.path().join("out");
    std::fs::create_dir(&delta_dir).expect("dir");
    std::fs::create_dir(&out_dir).expect("dir");
    let files = ferry_tables::delta::diff(&v1, &v2, &keys, &delta_dir, &opts).expect("diff");
    let upserts: Vec<PathBuf> = files.upserts.iter().map(|f| f.path.clone()).collect();
    let deletes: Vec<PathBuf> = files.deletes.iter().map(|f| f.path.clone()).collect();
    let mut group = c.benchmark_group("delta");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DELTA_ROWS as u64));
    group.bench_function("diff_200k_rows_1pct", |b| {
        b.iter(|| black_box(ferry_tables::delta::diff(&v1, &v2, &keys, &delta_dir, &opts).expect("diff")))
    });
    group.bench_function("apply_200k_rows_1pct", |b| {
        b.iter(|| {
            black_box(
                ferry_tables::delta::apply(&v1, &upserts, &deletes, &keys, &out_dir, &opts).expect("apply"),
            )
        })
    });
    group.finish();
}

/// CPU time (user and system, every thread) of this process so far.
fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    time(usage.user_time()) + time(usage.system_time())
}

/// The rows of `files`, in batches of the canonical writer's 8,192 rows.
fn read_rows(files: &[PathBuf]) -> Vec<arrow::array::RecordBatch> {
    let mut batches = Vec::new();
    for path in files {
        let file = std::fs::File::open(path).expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .with_batch_size(8192)
            .build()
            .expect("reader");
        batches.extend(reader.map(|b| b.expect("batch")));
    }
    batches
}

/// A publish's diff fed the new table's rows by its writer's tap ([`diff_stream`]), against a
/// head read whole and compared by value, and against the same head read by its key columns
/// and compared by its row prints; each timed by the process's CPU time.
fn streamed_diff(c: &mut Criterion) {
    use ferry_tables::delta::prints::{PrintsWriter, RowPrinter, binding, seal};
    use ferry_tables::delta::{DiffBase, diff_stream, tap_channel};
    let root = tempfile::tempdir().expect("tempdir");
    let (v1, v2, keys) = delta_versions(root.path());
    let opts = PublishOptions::default().write_options();
    let (head_rows, new_rows) = (read_rows(&v1), read_rows(&v2));
    let schema = new_rows[0].schema();
    let key_indices: Vec<usize> = keys.iter().map(|k| schema.index_of(k).expect("key")).collect();
    // The head's prints, as the publish that wrote it would have kept them.
    let mut printer = RowPrinter::new(&schema, &key_indices).expect("printer");
    let prints_path = root.path().join("head.prints");
    let mut writer = PrintsWriter::create(&prints_path).expect("prints");
    let mut prints = Vec::new();
    for batch in &head_rows {
        prints.clear();
        printer.print(batch, &mut prints).expect("print");
        writer.append(&prints).expect("append");
    }
    let body = writer.finish().expect("finish");
    let hashes: Vec<[u8; 32]> =
        v1.iter().map(|p| *blake3::hash(&std::fs::read(p).expect("read")).as_bytes()).collect();
    seal(&body, &binding(&hashes)).expect("seal");
    let by_values = DiffBase { files: v1.clone(), prints: None };
    let by_prints = DiffBase { files: v1.clone(), prints: Some((prints_path, body.rows)) };
    let out = root.path().join("streamed");
    std::fs::create_dir(&out).expect("dir");
    let new_prints = root.path().join("new.prints");
    let run = |base: &DiffBase| {
        let (sender, receiver) = tap_channel(4);
        let rows = &new_rows;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut tap = sender.tap();
                for batch in rows {
                    tap.write(batch).expect("tap");
                }
                tap.finish().expect("end");
            });
            diff_stream(base, receiver, schema.clone(), &keys, &out, &opts, &new_prints).expect("diff")
        })
    };
    let mut group = c.benchmark_group("prints");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DELTA_ROWS as u64));
    group.bench_function("print_200k_rows", |b| {
        b.iter(|| {
            prints.clear();
            for batch in &new_rows {
                printer.print(batch, &mut prints).expect("print");
            }
            black_box(prints.len())
        })
    });
    group.finish();
    let expected = run(&by_values).delta.stats;
    assert_eq!(run(&by_prints).delta.stats, expected, "both ways find the same changes");
    let mut group = c.benchmark_group("delta_cpu");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DELTA_ROWS as u64));
    for (name, base) in
        [("diff_stream_200k_by_values", &by_values), ("diff_stream_200k_by_prints", &by_prints)]
    {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = cpu_time();
                for _ in 0..iters {
                    black_box(run(base));
                }
                cpu_time() - start
            })
        });
    }
    group.finish();
}

criterion_group!(kernels, framing, verify, compression, delta, streamed_diff);
criterion_main!(kernels);
