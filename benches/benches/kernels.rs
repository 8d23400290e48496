//! Micro-benchmarks of the kernels on ferry's hot path, with `Throughput` set so criterion
//! reports bytes per second: frame encode/decode of a 1 MiB chunk, chunk verification
//! (BLAKE3 + compare), and the zstd compress-or-skip decision on text-like and Parquet-like data.
//! Run: `cargo bench -p ferry-benches --bench kernels`.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_benches::{random_like, text_like};
use ferry_proto::{ChunkEncoding, Message, frame};
use std::hint::black_box;

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
    ferry_client::wire::compress_if_worth(data).is_some()
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

criterion_group!(kernels, framing, verify, compression);
criterion_main!(kernels);
