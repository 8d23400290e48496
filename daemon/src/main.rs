//! `ferryd`: cap malloc arenas and fix the mmap threshold, parse flags, init tracing, load config,
//! start the node, drain on SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// The ferry node daemon. Logs go to stderr; stdout carries one line with the bound addresses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Node configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> std::process::ExitCode {
    // Before the runtime starts its threads (see the module's doc for why).
    let arenas = ferry_client::malloc::cap_arenas(ferry_client::malloc::per_core());
    let mmap_threshold = ferry_client::malloc::fix_mmap_threshold(ferry_client::malloc::NODE_MMAP_THRESHOLD);
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferryd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, arenas, mmap_threshold)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = ferry_client::report::render_chain(e.chain());
            tracing::error!("{line}");
            eprintln!("ferryd: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, arenas: Option<usize>, mmap_threshold: Option<usize>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into());
    if args.log_json {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    if let Some(arenas) = arenas {
        tracing::debug!(arenas, "malloc arenas capped at the available cores");
    }
    if let Some(bytes) = mmap_threshold {
        tracing::debug!(bytes, "malloc maps blocks of this size and more on their own");
    }
    let config = ferry_daemon::config::Config::load(&args.config)?;
    let node = ferry_daemon::node::start(config).await.context("cannot start the node")?;
    // Tell whoever started us where we listen (useful with port 0).
    println!("listening quic={} admin={}", node.addr, node.admin_addr.map_or("-".into(), |a| a.to_string()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
    node.shutdown().await;
    Ok(())
}
