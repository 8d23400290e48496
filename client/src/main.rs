//! `ferry`: the operator and user CLI. Parses flags and hands each command to its module.

mod cmd;

use clap::{Parser, Subcommand};

/// ferry: verified, resumable exchange of transport datasets between the ministry and provinces.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a ministry and two provinces on loopback and exchange a generated dataset.
    Demo(cmd::demo::DemoArgs),
    /// Manage the ministry's certificate authority and certificates.
    Pki(cmd::pki::PkiArgs),
    /// List the datasets a node holds.
    List(cmd::node::ListArgs),
    /// Publish a CSV or Parquet export as a new dataset version on your node.
    Publish(cmd::node::PublishArgs),
    /// Pull a dataset version from a node into a directory.
    Pull(cmd::pull::PullArgs),
    /// Tell your node to pull a dataset version from one of its peers.
    Replicate(cmd::node::ReplicateArgs),
    /// Generate a synthetic transport dataset (vehicle registry or GPS positions).
    Gen(cmd::gen_data::GenArgs),
}

fn main() -> std::process::ExitCode {
    // One malloc arena, set before the runtime starts its threads (see the module's doc).
    ferry_client::malloc::cap_arenas(1);
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Pki(args) => cmd::pki::run(args),
        Command::Gen(args) => cmd::gen_data::run(args),
        Command::Demo(args) => runtime()?.block_on(cmd::demo::run(args)),
        Command::List(args) => runtime()?.block_on(cmd::node::list(args)),
        Command::Publish(args) => runtime()?.block_on(cmd::node::publish(args)),
        Command::Pull(args) => runtime()?.block_on(cmd::pull::run(args)),
        Command::Replicate(args) => runtime()?.block_on(cmd::node::replicate(args)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}
