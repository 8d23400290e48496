//! `ferry-bench`: end-to-end benchmarks of ferry against the peer tools a ministry engineer
//! would use instead, measured in the same run on the same files. Each scenario is a module
//! that records into a [`report::Report`] and ends its output with one `key=value` line.
//!
//! ```sh
//! cargo run --release -p ferry-benches --bin ferry-bench -- delta             # 10M rows, 3 runs
//! cargo run --release -p ferry-benches --bin ferry-bench -- delta --rows 200000 --runs 2
//! cargo run --release -p ferry-benches --bin ferry-bench -- transfer --size-mib 512 --runs 2
//! ```
//!
//! Scenarios: `delta` (row-level delta vs rsync, diff/apply speed and memory, publish speed);
//! `transfer` (a whole version into an empty directory vs curl/nginx, rsync, scp, plain TCP).
//! The hidden `kernel` subcommand is the child process in which `kernel` measures one kernel.

mod delta;
mod fanout;
mod fleet;
mod kernel;
mod memory;
mod netem;
mod peers;
mod publish;
mod query;
mod reliability;
mod replicate;
mod report;
mod restrict;
mod servers;
mod sync;
mod transfer;
mod wan;
mod wire;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version, about = "End-to-end benchmarks of ferry against peer tools")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Snapshot N to N+1 with a share of rows changed: ferry's delta bytes vs rsync's, diff and
    /// apply rows/s and peak memory, publish MB/s.
    Delta(delta::DeltaArgs),
    /// One dataset version (incompressible, several files) into an empty directory: ferry's
    /// sync vs curl from nginx (HTTPS), rsync and scp over ssh, plain TCP; MB/s and CPU s/GB.
    Transfer(transfer::TransferArgs),
    /// One ministry ferryd serving one version to 31 province pullers at once (each its own
    /// department's certificate): aggregate vs single-puller MB/s, slowest vs mean, ferryd RSS.
    Fanout(fanout::FanoutArgs),
    /// Peak RSS of ferryd serving and of `ferry pull` receiving a 20 GiB version (or several
    /// sizes, each on a fresh ferryd), with MB/s.
    Memory(memory::MemoryArgs),
    /// A whole version over an emulated WAN link (wan30: 1 Gbit/s, 30 ms, 0.5 % loss; wan80:
    /// 100 Mbit/s, 80 ms, 2 % loss): ferry pull vs curl/nginx and rsync/ssh (host TCP cc, bbr
    /// here; 16 MiB TCP buffers), MB/s, link fraction, the link's losses and drops (needs root).
    Wan(wan::WanArgs),
    /// Fault sweeps: SIGKILL of the serving or receiving ferryd mid-transfer, partitions and WAN
    /// loss mid-pull, a full disk; one summary line per scenario (see docs/RELIABILITY.md).
    Reliability(reliability::ReliabilityArgs),
    /// Building the restricted version a conditional grant is served (5 of 15 columns, a row
    /// filter) of a 1M-row vehicle registry on a node, beside publishing the full table there.
    Restrict(restrict::RestrictArgs),
    /// Online queries on a 10M-row vehicle registry: key lookups, non-key lookups and key ranges
    /// with a projection, ferry's p50/p99 against DuckDB's on the same files.
    Query(query::QueryArgs),
    /// A 1% delta of a 1M-row registry published at the ministry and taken by 31 subscribed
    /// province nodes: seconds from the publish to each province's commit, the hub's peak RSS.
    Sync(sync::SyncArgs),
    /// A province's export (10M vehicles, or 100M GPS reports) published on a ministry ferryd
    /// end to end, against DuckDB sorting the same export by its key into zstd Parquet.
    Publish(publish::PublishArgs),
    /// One version pulled by `ferry pull`, replicated by a node into its local store and into
    /// Garage (S3), and uploaded to the same Garage by `object_store` itself: replicate_vs_pull,
    /// s3_vs_upload, the receiving node's peak RSS.
    Replicate(replicate::ReplicateArgs),
    /// Runs one kernel and prints its result line (used by the scenarios).
    #[command(hide = true)]
    Kernel(kernel::KernelArgs),
    /// Checks the WAN link emulator (netem): RTT, TCP goodput, UDP loss, relay CPU.
    #[command(hide = true)]
    NetemSelftest(netem::SelftestArgs),
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::Delta(args) => delta::run(&args),
        Scenario::Transfer(args) => transfer::run(&args),
        Scenario::Fanout(args) => fanout::run(&args),
        Scenario::Memory(args) => memory::run(&args),
        Scenario::Wan(args) => wan::run(&args),
        Scenario::Reliability(args) => reliability::run(&args),
        Scenario::Restrict(args) => restrict::run(&args),
        Scenario::Query(args) => query::run(&args),
        Scenario::Sync(args) => sync::run(&args),
        Scenario::Publish(args) => publish::run(&args),
        Scenario::Replicate(args) => replicate::run(&args),
        Scenario::Kernel(args) => kernel::run(&args),
        Scenario::NetemSelftest(args) => netem::selftest(&args),
    }
}
