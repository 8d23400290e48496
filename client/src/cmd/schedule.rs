//! `ferry schedule add|list|remove|run-now`: the scheduled downloads (数据下载) a node runs, as
//! the node answers the `node-schedule-*` calls (`ferry_proto::node_api`). `list` shows each
//! job's last run (outcome, version, bytes fetched, error) and next run; `ferry status` shows the
//! same lines through [`render`].

use super::catalog::{control_session, print_json};
use super::node::NodeFlags;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_client::control::node_call;
use ferry_proto::node_api::{
    NodeRequest, RunOutcome, RunRecord, RunStarted, ScheduleDefinition, ScheduleView,
};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print the node's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a job: pull DATASET from the peer FROM on a cron schedule, into a directory or the store.
    Add(Box<AddArgs>),
    /// Every job with its last run and next run.
    List,
    /// Remove a job added with `add` (jobs of the node config are changed there).
    Remove { name: String },
    /// Run a job now (refused while it runs).
    RunNow {
        name: String,
        /// Wait for the run to end and print it; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The job's name, unique on the node.
    pub name: String,
    #[arg(long)]
    pub dataset: String,
    /// A peer of the node's `[peers]`.
    #[arg(long)]
    pub from: String,
    /// An absolute directory on the node's host, or `store` (the node's own store).
    #[arg(long)]
    pub into: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    #[arg(long)]
    pub cron: String,
    /// IANA time zone of the cron [default: Asia/Shanghai].
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Start each scheduled run up to this long late (e.g. 10m), spread by node and job.
    #[arg(long)]
    pub jitter: Option<String>,
    /// Stop a run not finished this long after it started [default: 1h].
    #[arg(long)]
    pub deadline: Option<String>,
    /// Attempts after a failed one [default: 3].
    #[arg(long)]
    pub retries: Option<u32>,
    /// Wait before the first retry, doubled for each further one [default: 30s].
    #[arg(long)]
    pub backoff: Option<String>,
    /// Do not run once at start for a scheduled time missed while the node was down.
    #[arg(long)]
    pub no_catch_up: bool,
    /// Add the job disabled: it runs only with `run-now`.
    #[arg(long)]
    pub disabled: bool,
    /// The class of its pulls among the node's own and at the serving node: high, normal or
    /// low [default: normal]. An operator's `ferry pull` goes before all of them.
    #[arg(long)]
    pub priority: Option<String>,
}

pub async fn run(args: ScheduleArgs) -> anyhow::Result<()> {
    let request = match args.command {
        ScheduleCommand::Add(add) => NodeRequest::NodeScheduleAdd { schedule: Box::new(definition(*add)) },
        ScheduleCommand::List => NodeRequest::NodeScheduleList {},
        ScheduleCommand::Remove { name } => NodeRequest::NodeScheduleRemove { name },
        ScheduleCommand::RunNow { name, wait: true } => {
            return run_and_wait(&args.node, &name, args.json).await;
        }
        ScheduleCommand::RunNow { name, wait: false } => NodeRequest::NodeScheduleRunNow { name },
    };
    let value = call(&args.node, &request).await?;
    if args.json {
        return print_json(&value);
    }
    match request {
        NodeRequest::NodeScheduleAdd { .. } => {
            let view: ScheduleView = serde_json::from_value(value).context("reading the node's answer")?;
            print!("added\n{}", render(std::slice::from_ref(&view)));
        }
        NodeRequest::NodeScheduleList {} => {
            let views: Vec<ScheduleView> =
                serde_json::from_value(value).context("reading the node's answer")?;
            print!("{}", render(&views));
        }
        NodeRequest::NodeScheduleRunNow { name } => println!("{name}: run started"),
        _ => println!("removed"),
    }
    Ok(())
}

fn definition(add: AddArgs) -> ScheduleDefinition {
    ScheduleDefinition {
        name: add.name,
        dataset: add.dataset,
        from: add.from,
        into: add.into,
        cron: add.cron,
        time_zone: add.time_zone,
        jitter: add.jitter,
        deadline: add.deadline,
        retries: add.retries,
        backoff: add.backoff,
        catch_up: add.no_catch_up.then_some(false),
        enabled: add.disabled.then_some(false),
        priority: add.priority,
    }
}

async fn call(node: &NodeFlags, request: &NodeRequest) -> anyhow::Result<serde_json::Value> {
    let session = control_session(node).await?;
    let answer = node_call(&session, request).await;
    session.close();
    answer.with_context(|| format!("asking {} ({})", node.node, request.to_json()))
}

async fn run_and_wait(node: &NodeFlags, name: &str, json: bool) -> anyhow::Result<()> {
    let started = call(node, &NodeRequest::NodeScheduleRunNow { name: name.to_owned() }).await?;
    let started: RunStarted = serde_json::from_value(started).context("reading the node's answer")?;
    let run = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let views: Vec<ScheduleView> =
            serde_json::from_value(call(node, &NodeRequest::NodeScheduleList {}).await?)?;
        let view = views.into_iter().find(|v| v.name == name).context("the job is gone")?;
        let ended = view.last_run.filter(|r| r.started_ms >= started.started_ms && r.outcome.is_some());
        if let Some(run) = ended.filter(|_| !view.running) {
            break run;
        }
    };
    if json {
        print_json(&serde_json::to_value(&run)?)?;
    } else {
        println!("{name}: {}", last_run(&run));
    }
    if run.outcome != Some(RunOutcome::Succeeded) {
        bail!("the run of {name} did not succeed");
    }
    Ok(())
}

/// The jobs as an operator reads them: one line each, then its last run.
pub fn render(views: &[ScheduleView]) -> String {
    let mut out = String::new();
    if views.is_empty() {
        out.push_str("schedules: none\n");
        return out;
    }
    for v in views {
        let next = match (v.enabled, v.next_run_ms) {
            (false, _) => "disabled".to_owned(),
            (true, Some(ms)) => format!("next {}", timestamp(ms)),
            (true, None) => "no next run".to_owned(),
        };
        let running = if v.running { ", RUNNING" } else { "" };
        let _ = writeln!(
            out,
            "{}: {} from {} into {}, cron \"{}\" ({}), priority {}, {next}{running}",
            v.name,
            v.dataset.as_str(),
            v.from,
            v.into,
            v.cron,
            v.time_zone,
            v.priority
        );
        let last = v.last_run.as_ref().map_or("never run".to_owned(), last_run);
        let _ = writeln!(out, "  last run: {last}");
    }
    out
}

fn last_run(run: &RunRecord) -> String {
    let outcome = run.outcome.map_or("running", |o| o.as_str());
    let mut line = format!("{outcome} ({:?}) started {}", run.trigger, timestamp(run.started_ms));
    if let Some(ended) = run.ended_ms {
        let _ = write!(line, ", took {:.1} s", ended.saturating_sub(run.started_ms) as f64 / 1000.0);
    }
    if let Some(version) = run.version {
        let _ = write!(line, ", holds {version}, fetched {} bytes", run.bytes_fetched);
    }
    if run.attempts > 1 {
        let _ = write!(line, ", {} attempts", run.attempts);
    }
    if let Some(error) = &run.error {
        let code = run.code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default();
        let _ = write!(line, "; {code}{error}");
    }
    line
}

/// Unix milliseconds as RFC 3339 UTC.
pub(crate) fn timestamp(ms: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
    at.ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}
