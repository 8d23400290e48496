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
    /// Query a dataset on a node: rows by a predicate, some columns, a limit (Arrow, CSV, JSON).
    Query(cmd::query::QueryArgs),
    /// Tell your node to pull a dataset version from one of its peers.
    Replicate(cmd::node::ReplicateArgs),
    /// Generate a synthetic transport dataset (vehicle registry or GPS positions).
    Gen(cmd::gen_data::GenArgs),
    /// The ministry's versioned catalog: register, check, show, history, diff, list.
    Catalog(cmd::catalog::CatalogArgs),
    /// Change notices (Art. 9) for datasets your department uses.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Notices(cmd::catalog::NoticesArgs),
    /// The hash-chained audit log: show entries, verify the chain.
    Audit(cmd::audit::AuditArgs),
    /// Back up the ministry's control database online (technical support operators).
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Backup(cmd::backup::BackupArgs),
    /// Catalog receipts (Art. 20): show a dataset's, verify a file off line.
    Receipt(cmd::receipt::ReceiptArgs),
    /// Apply for a dataset (Art. 12): purpose, service methods, for conditional data the content.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Apply(cmd::apply::ApplyArgs),
    /// Reviews of applications: list, due, approve, refuse, ask-material, supply-material, delegate.
    Review(cmd::apply::ReviewArgs),
    /// Why a department may or may not get a dataset, as your node decides it.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Explain(cmd::explain::ExplainArgs),
    /// Grants: list (holder, dataset, purpose, methods, content, range, state, last used), revoke, notices.
    Grant(cmd::grant::GrantArgs),
    /// Feedback on a grant you hold (Art. 17): need met, quality, effect.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Feedback(cmd::grant::FeedbackArgs),
    /// Quality issues against published versions (Art. 15): file, answer, list.
    Quality(cmd::grant::QualityArgs),
    /// Supervision (Art. 18-24): the per-department evaluation as CSV or JSON; rectification notices.
    Supervise(cmd::supervise::SuperviseArgs),
    /// Have your running node re-hash its stored versions now and repair damaged files.
    #[command(after_help = cmd::verify::VERIFY_HELP)]
    Verify(cmd::verify::VerifyArgs),
    /// Scheduled downloads your node runs: add, list (last and next runs), remove, run-now.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Schedule(cmd::schedule::ScheduleArgs),
    /// Datasets your node follows at its peers (each announced version pulled): add, list, remove.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Subscription(cmd::subscription::SubscriptionArgs),
    /// What your node holds and does now: policy serial and age, datasets, transfers.
    #[command(after_help = ferry_client::control::EXIT_STATUS_HELP)]
    Status(cmd::status::StatusArgs),
}

fn main() -> std::process::ExitCode {
    // One malloc arena, set before the runtime starts its threads (see the module's doc).
    ferry_client::malloc::cap_arenas(1);
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line, each cause once, without a backtrace.
            eprintln!("error: {}", ferry_client::report::render_chain(e.chain()));
            // The control-plane commands exit with a status per kind of refusal (see their help).
            let status = e.chain().find_map(ferry_client::control::exit_status);
            status.map_or(std::process::ExitCode::FAILURE, |s| s.code().into())
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
        Command::Catalog(args) => runtime()?.block_on(cmd::catalog::run(args)),
        Command::Notices(args) => runtime()?.block_on(cmd::catalog::notices(args)),
        Command::Backup(args) => runtime()?.block_on(cmd::backup::run(args)),
        Command::Audit(args) => runtime()?.block_on(cmd::audit::run(args)),
        Command::Receipt(args) => runtime()?.block_on(cmd::receipt::run(args)),
        Command::Apply(args) => runtime()?.block_on(cmd::apply::apply(args)),
        Command::Review(args) => runtime()?.block_on(cmd::apply::review(args)),
        Command::Verify(args) => runtime()?.block_on(cmd::verify::run(args)),
        Command::Grant(args) => runtime()?.block_on(cmd::grant::grant(args)),
        Command::Feedback(args) => runtime()?.block_on(cmd::grant::feedback(args)),
        Command::Quality(args) => runtime()?.block_on(cmd::grant::quality(args)),
        Command::Supervise(args) => runtime()?.block_on(cmd::supervise::run(args)),
        Command::Explain(args) => runtime()?.block_on(cmd::explain::run(args)),
        Command::Status(args) => runtime()?.block_on(cmd::status::run(args)),
        Command::Subscription(args) => runtime()?.block_on(cmd::subscription::run(args)),
        Command::Schedule(args) => runtime()?.block_on(cmd::schedule::run(args)),
        Command::Query(args) => runtime()?.block_on(cmd::query::run(args)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}
