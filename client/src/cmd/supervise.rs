//! `ferry supervise report|notice`: the S&T authority's and technical support's view of every
//! department (Art. 18, 19, 23, 24), computed by the ministry from its records, exported as
//! CSV or JSON; rectification notices issued against a finding, listed, closed.
//!
//! Neighbours: [`super::catalog`] (the call), `ferry_control::supervise` (the report, its CSV).

use super::catalog::{ask, print_json};
use super::node::NodeFlags;
use clap::{Args, Subcommand, ValueEnum};
use ferry_client::control::{ControlRequest, EXIT_STATUS_HELP};
use ferry_proto::{DatasetId, DeptId};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[command(subcommand)]
    pub command: SuperviseCommand,
}

#[derive(Debug, Subcommand)]
pub enum SuperviseCommand {
    /// The evaluation of every department (or one): findings computed from the records.
    #[command(after_help = EXIT_STATUS_HELP)]
    Report(ReportArgs),
    /// Rectification notices: issue one against a finding, list, close.
    Notice(NoticeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub dept: Option<DeptId>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ReportFormat,
}

/// `ferry supervise notice DEPT --finding F --text T [--dataset D]` issues a notice;
/// `ferry supervise notice list [--dept D]` lists; `ferry supervise notice close ID --note T`
/// closes.
#[derive(Debug, Args)]
pub struct NoticeArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The department to issue a notice against, or `list`, or `close`.
    pub target: String,
    /// The notice to close.
    pub notice: Option<u64>,
    /// The finding code (catalog-not-compiled, data-not-updated, ...).
    #[arg(long)]
    pub finding: Option<String>,
    #[arg(long)]
    pub dataset: Option<DatasetId>,
    #[arg(long)]
    pub text: Option<String>,
    /// `list`: only this department's notices.
    #[arg(long)]
    pub dept: Option<DeptId>,
    /// `close`: how it was rectified.
    #[arg(long)]
    pub note: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn notice_line(n: &Value) -> String {
    let field = |k: &str| n[k].as_str().map_or_else(|| n[k].to_string(), str::to_owned);
    format!(
        "notice {} {} {}{} {} (finding {}): {}\n",
        field("id"),
        field("dept"),
        field("finding"),
        n["dataset"].as_str().map(|d| format!(" on {d}")).unwrap_or_default(),
        field("state"),
        if n["finding-stands"] == true { "stands" } else { "no longer found" },
        field("text")
    )
}

fn show_notices(value: Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&value);
    }
    match &value {
        Value::Array(items) if items.is_empty() => println!("no rectification notices"),
        Value::Array(items) => items.iter().for_each(|n| print!("{}", notice_line(n))),
        one => print!("{}", notice_line(one)),
    }
    Ok(())
}

pub async fn run(args: SuperviseArgs) -> anyhow::Result<()> {
    match args.command {
        SuperviseCommand::Report(a) => {
            let json = a.format == ReportFormat::Json;
            let value = ask(&a.node, &ControlRequest::SuperviseReport { dept: a.dept }, json).await?;
            if json {
                return print_json(&value);
            }
            let report: ferry_control::supervise::SupervisionReport = serde_json::from_value(value)?;
            print!("{}", report.to_csv());
            Ok(())
        }
        SuperviseCommand::Notice(a) => notice(a).await,
    }
}

async fn notice(a: NoticeArgs) -> anyhow::Result<()> {
    let request = match a.target.as_str() {
        "list" => ControlRequest::SuperviseNoticeList { dept: a.dept },
        "close" => {
            let (Some(notice), Some(note)) = (a.notice, a.note) else {
                anyhow::bail!("ferry supervise notice close ID --note TEXT");
            };
            ControlRequest::SuperviseNoticeClose { notice, note }
        }
        dept => {
            let (Some(finding), Some(text)) = (a.finding, a.text) else {
                anyhow::bail!("ferry supervise notice DEPT --finding F --text TEXT [--dataset D]");
            };
            let dept = DeptId::new(dept).map_err(|e| anyhow::anyhow!("{dept:?}: {e}"))?;
            ControlRequest::SuperviseNotice { dept, finding, dataset: a.dataset, text }
        }
    };
    show_notices(ask(&a.node, &request, a.json).await?, a.json)
}
