//! ferry's benchmarks. `benches/kernels.rs` holds the criterion micro-benchmarks of the hot
//! kernels (framing, chunk verification, the zstd decision); the end-to-end comparison against
//! peer tools arrives as the `ferry-bench` binary.

/// Deterministic, mildly compressible bytes (like CSV) for benchmarks.
pub fn text_like(len: usize) -> Vec<u8> {
    let line = b"1100001,\xe4\xba\xacA12345,LSVAM4187C2184847,2024-05-01,\xe6\xad\xa3\xe5\xb8\xb8\n";
    line.iter().cycle().take(len).copied().collect()
}

/// Deterministic incompressible bytes (like zstd Parquet pages) for benchmarks.
pub fn random_like(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
