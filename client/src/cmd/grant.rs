//! `ferry grant list|revoke`, `ferry feedback [list]` and `ferry quality file|answer|list`: the grant
//! lifecycle and the quality of shared data (Art. 15–17), as control calls to the ministry
//! node. Text output is one line per grant or issue; `--json` prints the answer as it came.
//!
//! Neighbours: [`super::catalog`] (the call and its refusal report), `ferry_control::grants`
//! and `ferry_control::quality` (the answers' fields).

use super::catalog::{ask, print_json};
use super::node::NodeFlags;
use clap::{Args, Subcommand, ValueEnum};
use ferry_client::control::{ControlRequest, EXIT_STATUS_HELP};
use ferry_net::conn::NodeAddr;
use ferry_proto::{DatasetId, DeptId};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(subcommand)]
    pub command: GrantCommand,
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// List the grants you hold, the grants on datasets you provide (all, for supervisors).
    #[command(after_help = EXIT_STATUS_HELP)]
    List(GrantListArgs),
    /// Revoke a grant (the dataset's provider or technical support), with a reason.
    #[command(after_help = EXIT_STATUS_HELP)]
    Revoke(GrantRevokeArgs),
    /// Notices to your department about its grants: disuse warnings, revocations, closed ranges.
    #[command(after_help = EXIT_STATUS_HELP)]
    Notices(GrantNoticesArgs),
}

#[derive(Debug, Args)]
pub struct GrantNoticesArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub json: bool,
}

/// One line per grant notice.
pub fn grant_notice_line(n: &Value) -> String {
    format!("{} grant {} {}: {}\n", text(n, "at"), text(n, "grant"), text(n, "kind"), text(n, "text"))
}

#[derive(Debug, Args)]
pub struct GrantListArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub dataset: Option<DatasetId>,
    /// Only the grants this department holds.
    #[arg(long)]
    pub dept: Option<DeptId>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GrantRevokeArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub grant: u64,
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

/// Whether the data met the need.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NeedMetArg {
    Yes,
    Partly,
    No,
}

/// `ferry feedback GRANT`: the holder's feedback on a grant (Art. 17); `ferry feedback list`:
/// the feedback you may read.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FeedbackArgs {
    #[command(subcommand)]
    pub command: Option<FeedbackCommand>,
    #[command(flatten)]
    pub give: FeedbackGiveArgs,
}

#[derive(Debug, Subcommand)]
pub enum FeedbackCommand {
    /// The feedback your department gave, feedback on datasets you provide (all, for supervisors).
    #[command(after_help = EXIT_STATUS_HELP)]
    List(FeedbackListArgs),
}

#[derive(Debug, Args)]
pub struct FeedbackListArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub dataset: Option<DatasetId>,
    #[arg(long)]
    pub json: bool,
}

/// The holder's feedback on one grant. Every field is optional to the parser (required unless
/// `list` is given), so `ferry feedback list` parses without them; the node flags are those of
/// [`NodeFlags`].
#[derive(Debug, Args)]
pub struct FeedbackGiveArgs {
    /// The node, as NAME@HOST:PORT (NAME is the DNS name in its certificate).
    #[arg(long, env = "FERRY_NODE", required = true)]
    pub node: Option<NodeAddr>,
    /// The ministry CA certificate (PEM).
    #[arg(long, env = "FERRY_CA", required = true)]
    pub ca: Option<PathBuf>,
    /// Your certificate (PEM).
    #[arg(long, env = "FERRY_CERT", required = true)]
    pub cert: Option<PathBuf>,
    /// Your private key (PEM).
    #[arg(long, env = "FERRY_KEY", required = true)]
    pub key: Option<PathBuf>,
    /// The CA's revocation list (PEM); the node's certificate is checked against it.
    #[arg(long, env = "FERRY_CRL")]
    pub crl: Option<PathBuf>,
    #[arg(required = true)]
    pub grant: Option<u64>,
    #[arg(long, value_enum, required = true)]
    pub need_met: Option<NeedMetArg>,
    /// Quality of the data, 1 (poor) to 5 (excellent).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5), required = true)]
    pub quality: Option<u8>,
    /// What the use achieved.
    #[arg(long, required = true)]
    pub effect: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QualityArgs {
    #[command(subcommand)]
    pub command: QualityCommand,
}

#[derive(Debug, Subcommand)]
pub enum QualityCommand {
    /// File a quality issue against a published version (holders and users of the dataset).
    #[command(after_help = EXIT_STATUS_HELP)]
    File(QualityFileArgs),
    /// Answer a quality issue (the dataset's provider).
    #[command(after_help = EXIT_STATUS_HELP)]
    Answer(QualityAnswerArgs),
    /// List the issues you filed, those on your datasets (all, for supervisors).
    #[command(after_help = EXIT_STATUS_HELP)]
    List(QualityListArgs),
}

#[derive(Debug, Args)]
pub struct QualityFileArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub dataset: DatasetId,
    #[arg(long)]
    pub version: u64,
    #[arg(long)]
    pub text: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QualityAnswerArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub issue: u64,
    #[arg(long)]
    pub text: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QualityListArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub dataset: Option<DatasetId>,
    /// Only unanswered issues.
    #[arg(long)]
    pub unanswered: bool,
    #[arg(long)]
    pub json: bool,
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// One line per grant: holder, dataset, purpose, methods, content, range, state, last used.
fn grant_line(g: &Value) -> String {
    let content = match (&g["columns"], &g["rows"]) {
        (Value::Null, Value::Null) => "whole dataset".to_owned(),
        _ => format!("columns {} rows {}", text(g, "columns"), text(g, "rows")),
    };
    let range = format!(
        "catalog v{}..{}",
        text(g, "catalog-from"),
        g["catalog-to"].as_u64().map_or(String::new(), |v| format!("v{v}"))
    );
    let mut state = text(g, "state");
    if let Some(after) = g["revoke-after"].as_str() {
        state.push_str(&format!(" (unused: revoked after {after} unless used)"));
    }
    format!(
        "grant {} {} {} purpose {:?} methods {} {} {} {} last used {}\n",
        text(g, "id"),
        text(g, "holder"),
        text(g, "dataset"),
        text(g, "purpose"),
        text(g, "methods"),
        content,
        range,
        state,
        text(g, "last-used-at")
    )
}

fn issue_line(i: &Value) -> String {
    format!(
        "issue {} {} v{} from {} {} due {}{}: {}\n",
        text(i, "id"),
        text(i, "dataset"),
        text(i, "version"),
        text(i, "filed-by-dept"),
        text(i, "state"),
        text(i, "due-on"),
        i["answer"].as_str().map(|a| format!(", answered: {a}")).unwrap_or_default(),
        text(i, "text")
    )
}

fn show(value: Value, json: bool, line: fn(&Value) -> String, empty: &str) -> anyhow::Result<()> {
    if json {
        return print_json(&value);
    }
    match &value {
        Value::Array(items) if items.is_empty() => println!("{empty}"),
        Value::Array(items) => items.iter().for_each(|v| print!("{}", line(v))),
        one => print!("{}", line(one)),
    }
    Ok(())
}

pub async fn grant(args: GrantArgs) -> anyhow::Result<()> {
    match args.command {
        GrantCommand::List(a) => {
            let request = ControlRequest::GrantList { dataset: a.dataset, dept: a.dept };
            show(ask(&a.node, &request, a.json).await?, a.json, grant_line, "no grants")
        }
        GrantCommand::Revoke(a) => {
            let request = ControlRequest::GrantRevoke { grant: a.grant, reason: a.reason };
            show(ask(&a.node, &request, a.json).await?, a.json, grant_line, "")
        }
        GrantCommand::Notices(a) => show(
            ask(&a.node, &ControlRequest::GrantNotices {}, a.json).await?,
            a.json,
            grant_notice_line,
            "no grant notices for your department",
        ),
    }
}

/// One line per feedback.
pub fn feedback_line(f: &Value) -> String {
    format!(
        "{} grant {} {} by {} ({}): need met {}, quality {}/5: {}\n",
        text(f, "given-at"),
        text(f, "grant"),
        text(f, "dataset"),
        text(f, "holder"),
        text(f, "given-by"),
        text(f, "need-met"),
        text(f, "quality"),
        text(f, "effect")
    )
}

pub async fn feedback(args: FeedbackArgs) -> anyhow::Result<()> {
    if let Some(FeedbackCommand::List(a)) = args.command {
        let request = ControlRequest::FeedbackList { dataset: a.dataset };
        return show(ask(&a.node, &request, a.json).await?, a.json, feedback_line, "no feedback");
    }
    let a = args.give;
    let missing =
        || anyhow::anyhow!("name the node, your credentials and the grant, or `ferry feedback list`");
    let node = NodeFlags {
        node: a.node.ok_or_else(missing)?,
        ca: a.ca.ok_or_else(missing)?,
        cert: a.cert.ok_or_else(missing)?,
        key: a.key.ok_or_else(missing)?,
        crl: a.crl,
    };
    let need_met = match a.need_met.ok_or_else(missing)? {
        NeedMetArg::Yes => ferry_control::quality::NeedMet::Yes,
        NeedMetArg::Partly => ferry_control::quality::NeedMet::Partly,
        NeedMetArg::No => ferry_control::quality::NeedMet::No,
    };
    let request = ControlRequest::Feedback {
        grant: a.grant.ok_or_else(missing)?,
        need_met,
        quality: a.quality.ok_or_else(missing)?,
        effect: a.effect.ok_or_else(missing)?,
    };
    let value = ask(&node, &request, a.json).await?;
    if a.json {
        return print_json(&value);
    }
    println!("feedback {} recorded on grant {}", text(&value, "id"), text(&value, "grant"));
    Ok(())
}

pub async fn quality(args: QualityArgs) -> anyhow::Result<()> {
    let (node, json, request) = match args.command {
        QualityCommand::File(a) => (
            a.node,
            a.json,
            ControlRequest::QualityFile { dataset: a.dataset, version: a.version, text: a.text },
        ),
        QualityCommand::Answer(a) => {
            (a.node, a.json, ControlRequest::QualityAnswer { issue: a.issue, text: a.text })
        }
        QualityCommand::List(a) => {
            (a.node, a.json, ControlRequest::QualityList { dataset: a.dataset, unanswered: a.unanswered })
        }
    };
    show(ask(&node, &request, json).await?, json, issue_line, "no quality issues")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Feedback(FeedbackArgs),
    }

    fn parse(args: &[&str]) -> Result<FeedbackArgs, clap::Error> {
        let node = ["--node", "mot@127.0.0.1:4433", "--ca", "ca.pem", "--cert", "me.pem", "--key", "me.key"];
        let argv = ["ferry", "feedback"].iter().chain(args).chain(node.iter());
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Top::Feedback(a) => a,
        })
    }

    #[test]
    fn feedback_gives_on_a_grant_or_lists() {
        let given =
            parse(&["7", "--need-met", "partly", "--quality", "4", "--effect", "faster checks"]).unwrap();
        assert!(given.command.is_none());
        assert_eq!((given.give.grant, given.give.quality), (Some(7), Some(4)));
        assert!(given.give.node.is_some() && given.give.key.is_some());

        let listed = parse(&["list", "--dataset", "vehicle-gps", "--json"]).unwrap();
        let Some(FeedbackCommand::List(list)) = listed.command else { panic!("{listed:?}") };
        assert_eq!(list.dataset.as_ref().map(|d| d.as_str()), Some("vehicle-gps"));
        assert!(list.json);

        let incomplete = parse(&["7", "--quality", "4"]).unwrap_err();
        assert!(incomplete.to_string().contains("--need-met"), "{incomplete}");
        assert!(parse(&["list", "7"]).is_err(), "list takes no grant");
    }
}
