//! `ferry catalog register|check|show|history|diff|list` and `ferry notices`: the ministry's
//! versioned catalog as a provider or consumer department sees it. `check` runs off line on a
//! file; the others are control calls to the ministry node. Also the helpers the other
//! control-plane commands (`audit`, `receipt`) share: one call with its refusal reported, JSON
//! output, bounded file reads.
//!
//! Neighbours: `ferry_client::control` (the call, answer views, text), [`super::receipt`]
//! (receipts a registration issues), [`super::node::NodeFlags`] (how to reach the node).

use super::node::NodeFlags;
use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_client::conn::{Connector, Session};
use ferry_client::control::view::{self, Diff, Entry, Listed, Notice, Registration, VersionLine};
use ferry_client::control::{
    CommandFailed, ControlCallError, ControlRequest, EXIT_STATUS_HELP, ExitStatus, call, render,
};
use ferry_proto::{DatasetId, DeptId};
use ferry_tables::catalog::{CheckContext, MAX_DOCUMENT_BYTES, check_document};
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub command: CatalogCommand,
}

/// The exit statuses of this off-line check.
const CHECK_EXIT_HELP: &str = "Exit status:
  0  the entry passes
  1  it violates a rule (every violation is printed), or the file cannot be read";

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Register a catalog entry (a new catalog version of its dataset) at the ministry.
    #[command(after_help = EXIT_STATUS_HELP)]
    Register(RegisterArgs),
    /// Run the compliance check on a catalog entry file, off line (no node needed).
    #[command(after_help = CHECK_EXIT_HELP)]
    Check(CheckArgs),
    /// Show one catalog version of an entry (default: the latest): its facts and document.
    #[command(after_help = EXIT_STATUS_HELP)]
    Show(ShowArgs),
    /// List every catalog version of an entry.
    #[command(after_help = EXIT_STATUS_HELP)]
    History(DatasetArgs),
    /// Show what changed between two catalog versions of an entry.
    #[command(after_help = EXIT_STATUS_HELP)]
    Diff(DiffArgs),
    /// List the catalog entries you may see.
    #[command(after_help = EXIT_STATUS_HELP)]
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The catalog entry: a dataset definition (TOML) with a `[catalog]` table.
    pub file: PathBuf,
    /// When this version takes effect: YYYY-MM-DD (its midnight, China Standard Time) or an
    /// RFC 3339 time. Default: at once. A change of the information items of a dataset in use
    /// needs a date at least 3 months ahead.
    #[arg(long, value_parser = parse_time_arg)]
    pub effective_from: Option<String>,
    /// Where to write the receipts the registration issues, as `<receipt id>.receipt.json`.
    #[arg(long, default_value = ".")]
    pub receipts_dir: PathBuf,
    /// Print the node's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The catalog entry file to check.
    pub file: PathBuf,
    /// Check as this department would register it (rule C008: own department only).
    #[arg(long)]
    pub dept: Option<DeptId>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub dataset: DatasetId,
    /// The catalog version; the latest by default.
    #[arg(long)]
    pub version: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub dataset: DatasetId,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub dataset: DatasetId,
    /// The older catalog version.
    pub from: u64,
    /// The newer catalog version.
    pub to: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub json: bool,
}

/// `ferry notices`: change notices (Art. 9) addressed to your department.
#[derive(Debug, Args)]
pub struct NoticesArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CatalogArgs) -> anyhow::Result<()> {
    match args.command {
        CatalogCommand::Register(args) => register(args).await,
        CatalogCommand::Check(args) => check(&args),
        CatalogCommand::Show(args) => {
            let request = ControlRequest::CatalogShow { dataset: args.dataset, version: args.version };
            let value = ask(&args.node, &request, args.json).await?;
            show_value::<Entry>(value, args.json, render::entry)
        }
        CatalogCommand::History(args) => {
            let dataset = args.dataset.to_string();
            let value =
                ask(&args.node, &ControlRequest::CatalogHistory { dataset: args.dataset }, args.json).await?;
            show_value::<Vec<VersionLine>>(value, args.json, |v| render::history(&dataset, v))
        }
        CatalogCommand::Diff(args) => {
            let request = ControlRequest::CatalogDiff { dataset: args.dataset, from: args.from, to: args.to };
            let value = ask(&args.node, &request, args.json).await?;
            show_value::<Diff>(value, args.json, render::diff)
        }
        CatalogCommand::List(args) => {
            let value = ask(&args.node, &ControlRequest::CatalogList {}, args.json).await?;
            show_value::<Vec<Listed>>(value, args.json, |l| render::list(l))
        }
    }
}

/// Change notices, then grant notices (disuse warnings, revocations); with `--json` one object
/// `{"catalog": [...], "grants": [...]}`.
pub async fn notices(args: NoticesArgs) -> anyhow::Result<()> {
    let value = ask(&args.node, &ControlRequest::Notices {}, args.json).await?;
    let grants = ask(&args.node, &ControlRequest::GrantNotices {}, args.json).await?;
    if args.json {
        return print_json(&json!({ "catalog": value, "grants": grants }));
    }
    show_value::<Vec<Notice>>(value, false, |n| render::notices(n))?;
    for notice in grants.as_array().into_iter().flatten() {
        print!("{}", super::grant::grant_notice_line(notice));
    }
    Ok(())
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let document = read_bounded(&args.file, MAX_DOCUMENT_BYTES)?;
    let request = ControlRequest::CatalogRegister { document, effective_from: args.effective_from.clone() };
    let value = ask(&args.node, &request, args.json).await?;
    if args.json {
        print_json(&value)?;
    }
    let registration: Registration = view::parse(value)?;
    if !args.json {
        print!("{}", render::registration(&registration));
    }
    super::receipt::deliver(&registration.receipts, &args.receipts_dir, &args.node, args.json)
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let text = read_bounded(&args.file, MAX_DOCUMENT_BYTES)?;
    let report = check_document(&text, &CheckContext { registrant: args.dept.clone() });
    if args.json {
        print_json(&json!({ "passed": report.passed(), "report": report }))?;
    } else {
        print!("{}", render::violations(&report));
    }
    if report.passed() {
        return Ok(());
    }
    let n = report.violations.len();
    Err(CommandFailed::new(
        ExitStatus::Failed,
        format!("{}: {n} compliance violation(s)", args.file.display()),
    )
    .into())
}

/// Parses an answer as `T` and prints it as text, or prints the raw value as JSON.
pub(super) fn show_value<T: serde::de::DeserializeOwned>(
    value: Value,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        return print_json(&value);
    }
    let parsed: T = view::parse(value)?;
    print!("{}", text(&parsed));
    Ok(())
}

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Connects to the node for control calls; an unreachable node exits as unavailable.
pub(super) async fn control_session(flags: &NodeFlags) -> anyhow::Result<Session> {
    let creds = flags.credentials()?;
    let connector = Connector::new(&creds, flags.node.clone()).map_err(ControlCallError::Transport)?;
    Ok(connector.connect().await.map_err(ControlCallError::Transport)?)
}

/// One control call. A refusal is printed (every violation, the earliest date; or, with
/// `json`, the error object on stdout) and becomes the command's exit status.
pub(super) async fn ask(flags: &NodeFlags, request: &ControlRequest, json: bool) -> anyhow::Result<Value> {
    let session = control_session(flags).await?;
    let result = call(&session, request).await;
    session.close();
    result.map_err(|e| report_refusal(e, json))
}

fn report_refusal(error: ControlCallError, json: bool) -> anyhow::Error {
    let Some(api) = error.api_error() else { return error.into() };
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({ "error": api })).unwrap_or_default());
    } else if let Some(details) = render::refusal_details(api) {
        eprint!("{details}");
    }
    CommandFailed::new(error.exit_status(), render::refusal_summary(api)).into()
}

/// Reads a text file of at most `max` bytes (one more is read, so the check that follows can
/// say the file is too large without reading all of it).
pub(super) fn read_bounded(path: &Path, max: usize) -> anyhow::Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Accepts `YYYY-MM-DD` or an RFC 3339 time, and passes it on as written (the node reads
/// both; a bare date is its midnight in China Standard Time).
pub(super) fn parse_time_arg(text: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(text, &Rfc3339).is_ok() || parse_date(text).is_some() {
        return Ok(text.to_owned());
    }
    Err(format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time (2027-03-06T00:00:00+08:00)"))
}

/// `YYYY-MM-DD` as a calendar date.
pub(super) fn parse_date(text: &str) -> Option<time::Date> {
    let mut parts = text.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: CatalogCommand,
    }

    const NODE: [&str; 8] =
        ["--node", "ministry@127.0.0.1:4433", "--ca", "ca.pem", "--cert", "me.pem", "--key", "me.key"];

    fn parse(args: &[&str]) -> Result<CatalogCommand, clap::Error> {
        let argv = std::iter::once("catalog").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.command)
    }

    #[test]
    fn register_takes_a_date_or_an_rfc3339_time_and_refuses_other_text() {
        let mut args = vec!["register", "entry.toml", "--effective-from", "2027-03-06"];
        args.extend(NODE);
        let CatalogCommand::Register(register) = parse(&args).expect("parses") else { panic!("register") };
        assert_eq!(register.effective_from.as_deref(), Some("2027-03-06"));
        assert_eq!(register.receipts_dir, PathBuf::from("."));
        args[3] = "2027-03-06T00:00:00+08:00";
        assert!(parse(&args).is_ok());
        args[3] = "2027-02-30";
        assert!(parse(&args).is_err());
        args[3] = "next spring";
        assert_eq!(parse(&args).unwrap_err().kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn check_needs_no_node_and_diff_takes_two_versions() {
        let CatalogCommand::Check(check) =
            parse(&["check", "entry.toml", "--dept", "zhejiang"]).expect("parses")
        else {
            panic!("check")
        };
        assert_eq!(check.dept.as_ref().map(DeptId::as_str), Some("zhejiang"));
        let mut args = vec!["diff", "vehicles", "1", "2", "--json"];
        args.extend(NODE);
        let CatalogCommand::Diff(diff) = parse(&args).expect("parses") else { panic!("diff") };
        assert_eq!((diff.from, diff.to, diff.json), (1, 2, true));
    }

    #[test]
    fn the_help_documents_the_exit_statuses() {
        let help = <Cli as clap::CommandFactory>::command()
            .find_subcommand_mut("register")
            .expect("register")
            .render_long_help()
            .to_string();
        assert!(help.contains("3  compliance check failed"), "{help}");
        assert!(help.contains("8  node or control store unavailable"), "{help}");
    }

    #[test]
    fn an_offline_check_fails_on_a_bad_file_and_passes_the_demo_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "id = \"x\"\n").expect("write");
        let args = CheckArgs { file: bad, dept: None, json: false };
        let error = check(&args).unwrap_err();
        let status = error.chain().find_map(ferry_client::control::exit_status);
        assert_eq!(status, Some(ExitStatus::Failed));
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/catalog/vehicle-registry.toml");
        let args = CheckArgs { file: demo, dept: Some(DeptId::new("ministry").expect("dept")), json: true };
        check(&args).expect("the demo entry passes as its provider");
    }

    #[test]
    fn bounded_reads_stop_one_byte_past_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("big.toml");
        std::fs::write(&path, "x".repeat(100)).expect("write");
        assert_eq!(read_bounded(&path, 10).expect("reads").len(), 11);
        assert!(read_bounded(&dir.path().join("absent"), 10).is_err());
    }
}
