//! Micro-benchmarks of the kernels on ferry's hot path, with `Throughput` set so criterion
//! reports bytes per second: frame encode/decode of a 1 MiB chunk, chunk verification
//! (BLAKE3 + compare), the zstd compress-or-skip decision on text-like and Parquet-like data, and
//! the row-level delta kernels (diff and apply of two 200k-row vehicle registry snapshots with 1%
//! of rows changed; rows per second, fsyncs included).
//! Run: `cargo bench -p ferry-benches --bench kernels`.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_benches::{random_like, text_like};
use ferry_proto::{ChunkEncoding, Message, SourceFormat, frame};
use ferry_tables::definition::DatasetDefinition;
use ferry_tables::source::{PublishOptions, write_sorted_parquet};
use ferry_tables::synth;
use std::hint::black_box;
use std::path::{Path, PathBuf};

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

criterion_group!(kernels, framing, verify, compression, delta);
criterion_main!(kernels);
