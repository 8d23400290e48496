//! `ferry apply` and `ferry review list|due|approve|refuse|ask-material|supply-material|
//! delegate|delegated`: applications for shared data and their reviews (Art. 12–14), as
//! control calls to the ministry node. Text output is one line per application; `--json`
//! prints the answer as it came.
//!
//! `ferry apply` without `--key` derives the client key from the request itself, so running
//! the same command twice is the same application. Neighbours: [`super::catalog`] (the call
//! and its refusal report), `ferry_control::apply` (the answers' fields).

use super::catalog::{ask, print_json};
use super::node::NodeFlags;
use clap::{Args, Subcommand};
use ferry_client::control::{ControlRequest, EXIT_STATUS_HELP};
use ferry_control::apply::ApplicationState;
use ferry_proto::{DatasetId, DeptId, ServiceMethod};
use serde_json::{Value, json};

/// `ferry apply DATASET`: apply for a dataset as your department.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub dataset: DatasetId,
    /// What the data is for (a new purpose needs a new application, Art. 16).
    #[arg(long)]
    pub purpose: String,
    /// A service method: online-query, subscription or download (repeat for several).
    #[arg(long = "method", required = true)]
    pub methods: Vec<ServiceMethod>,
    /// Conditional data: the columns wanted, comma-separated (the key columns included).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Conditional data: a row filter, e.g. "province = 'gd' AND speed_kmh > 0".
    #[arg(long)]
    pub rows: Option<String>,
    /// The client key that makes a re-sent application the same one (default: derived from
    /// the request). `--key` is the private key of your certificate, as for every command.
    #[arg(long)]
    pub client_key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[command(subcommand)]
    pub command: ReviewCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// List the applications you may see (yours, those for your data; all for supervisors).
    #[command(after_help = EXIT_STATUS_HELP)]
    List(ReviewListArgs),
    /// Pending reviews due within one working day, and overdue ones.
    #[command(after_help = EXIT_STATUS_HELP)]
    Due(JsonArgs),
    /// Approve the pending step: the first review (technical support) or the decision.
    #[command(after_help = EXIT_STATUS_HELP)]
    Approve(ApproveArgs),
    /// Refuse the pending step, citing the legal or policy basis.
    #[command(after_help = EXIT_STATUS_HELP)]
    Refuse(RefuseArgs),
    /// Ask the applicant for supporting material (the decider's clock stops).
    #[command(after_help = EXIT_STATUS_HELP)]
    AskMaterial(AskMaterialArgs),
    /// Supply the material asked for (the decider's clock restarts).
    #[command(after_help = EXIT_STATUS_HELP)]
    SupplyMaterial(SupplyMaterialArgs),
    /// Delegate your department's reviews to technical support (Art. 14), or `--undo` it.
    #[command(after_help = EXIT_STATUS_HELP)]
    Delegate(DelegateArgs),
    /// The decisions technical support took under a provider's delegation.
    #[command(after_help = EXIT_STATUS_HELP)]
    Delegated(DelegatedArgs),
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReviewListArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Only applications in this state: first-review, provider-review, awaiting-material,
    /// granted, refused.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<ApplicationState>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub application: u64,
    #[arg(long)]
    pub note: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefuseArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub application: u64,
    /// The legal or policy basis of the refusal (required).
    #[arg(long)]
    pub basis: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AskMaterialArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub application: u64,
    /// The material asked for.
    #[arg(long)]
    pub what: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SupplyMaterialArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub application: u64,
    /// What was supplied, and where the reviewers find it.
    #[arg(long)]
    pub note: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DelegateArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Take the delegation back.
    #[arg(long)]
    pub undo: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DelegatedArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The provider (default: your department).
    #[arg(long)]
    pub provider: Option<DeptId>,
    /// Since YYYY-MM-DD or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn parse_state(text: &str) -> Result<ApplicationState, String> {
    ApplicationState::parse(text).ok_or_else(|| {
        let known: Vec<&str> = ApplicationState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {text:?}; expected one of {}", known.join(", "))
    })
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

/// One line per application: id, applicant, dataset, state, deadline, content, grant or basis.
pub fn application_line(a: &Value) -> String {
    let content = match (&a["columns"], &a["rows"]) {
        (Value::Null, Value::Null) => String::new(),
        _ => format!(" columns {} rows {:?}", text(a, "columns"), text(a, "rows")),
    };
    let outcome = match (&a["grant"], &a["basis"]) {
        (Value::Null, Value::Null) => String::new(),
        (Value::Null, _) => format!(" basis: {}", text(a, "basis")),
        (_, _) => format!(" grant {}", text(a, "grant")),
    };
    let due = match (&a["due-on"], &a["paused-remaining-days"]) {
        (Value::String(d), _) => format!(" due {d}"),
        (_, Value::Number(n)) => format!(" clock stopped, {n} working days left"),
        _ => String::new(),
    };
    format!(
        "application {} {} {} {} (decider {}) methods {} purpose {:?}{}{}{}\n",
        text(a, "id"),
        text(a, "dept"),
        text(a, "dataset"),
        text(a, "state"),
        text(a, "decider"),
        text(a, "methods"),
        text(a, "purpose"),
        content,
        due,
        outcome
    )
}

fn due_line(d: &Value) -> String {
    let left = d["working-days-left"].as_i64().unwrap_or_default();
    let when = if d["overdue"].as_bool().unwrap_or_default() {
        format!("OVERDUE by {} working day(s)", -left)
    } else {
        format!("{left} working day(s) left")
    };
    format!("{when}: {}", application_line(&d["application"]))
}

fn delegated_line(d: &Value) -> String {
    format!(
        "{} application {} {} for {}: {} by {}{}\n",
        text(d, "at"),
        text(d, "application"),
        text(d, "dataset"),
        text(d, "applicant"),
        text(d, "outcome"),
        text(d, "decided-by"),
        d["basis"].as_str().map(|b| format!(" basis: {b}")).unwrap_or_default()
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

/// The key of a request without `--key`: a hash of what it asks, so a re-run is the same one.
fn derived_key(args: &ApplyArgs) -> String {
    let mut methods: Vec<&str> = args.methods.iter().map(|m| m.as_str()).collect();
    methods.sort_unstable();
    let body = json!({
        "dataset": args.dataset.as_str(), "purpose": args.purpose.trim(), "methods": methods,
        "columns": args.columns, "rows": args.rows,
    });
    format!("cli-{}", &blake3::hash(body.to_string().as_bytes()).to_hex()[..32])
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let key = args.client_key.clone().unwrap_or_else(|| derived_key(&args));
    let request = ControlRequest::Apply {
        dataset: args.dataset,
        purpose: args.purpose,
        methods: args.methods,
        columns: args.columns,
        rows: args.rows,
        key,
    };
    let value = ask(&args.node, &request, args.json).await?;
    if args.json {
        return print_json(&value);
    }
    if value["created"] == Value::Bool(false) {
        println!("(already submitted under this key; nothing new)");
    }
    print!("{}", application_line(&value["application"]));
    Ok(())
}

pub async fn review(args: ReviewArgs) -> anyhow::Result<()> {
    let (node, json, request, line): (NodeFlags, bool, ControlRequest, fn(&Value) -> String) = match args
        .command
    {
        ReviewCommand::List(a) => {
            (a.node, a.json, ControlRequest::ReviewList { state: a.state }, application_line)
        }
        ReviewCommand::Due(a) => (a.node, a.json, ControlRequest::ReviewDue {}, due_line),
        ReviewCommand::Approve(a) => (
            a.node,
            a.json,
            ControlRequest::ReviewApprove { application: a.application, note: a.note },
            application_line,
        ),
        ReviewCommand::Refuse(a) => (
            a.node,
            a.json,
            ControlRequest::ReviewRefuse { application: a.application, basis: a.basis },
            application_line,
        ),
        ReviewCommand::AskMaterial(a) => (
            a.node,
            a.json,
            ControlRequest::ReviewAskMaterial { application: a.application, what: a.what },
            application_line,
        ),
        ReviewCommand::SupplyMaterial(a) => (
            a.node,
            a.json,
            ControlRequest::ReviewSupplyMaterial { application: a.application, note: a.note },
            application_line,
        ),
        ReviewCommand::Delegate(a) => {
            let value = ask(&a.node, &ControlRequest::ReviewDelegate { delegate: !a.undo }, a.json).await?;
            if a.json {
                return print_json(&value);
            }
            let what = if a.undo { "taken back" } else { "delegated to technical support" };
            println!("reviews of {}: {what}", text(&value, "provider"));
            return Ok(());
        }
        ReviewCommand::Delegated(a) => (
            a.node,
            a.json,
            ControlRequest::ReviewDelegated { provider: a.provider, since: a.since },
            delegated_line,
        ),
    };
    show(ask(&node, &request, json).await?, json, line, "nothing to list")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_line_names_its_deadline_and_outcome() {
        let pending = json!({"id": 3, "dept": "guangdong", "dataset": "vehicle-gps", "state": "provider-review",
            "decider": "provider", "methods": ["download"], "purpose": "safety", "columns": ["vin", "ts"],
            "rows": "speed_kmh > 0", "due-on": "2026-03-05"});
        let line = application_line(&pending);
        assert!(line.contains("application 3 guangdong vehicle-gps provider-review"), "{line}");
        assert!(line.contains("columns vin,ts rows \"speed_kmh > 0\" due 2026-03-05"), "{line}");
        let overdue = json!({"working-days-left": -2, "overdue": true, "application": pending});
        assert!(due_line(&overdue).starts_with("OVERDUE by 2 working day(s): application 3"));
        let refused = json!({"id": 4, "state": "refused", "basis": "law X"});
        assert!(application_line(&refused).ends_with("basis: law X\n"));
    }

    #[test]
    fn a_derived_key_depends_on_the_request_only() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            apply: ApplyArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ferry", "--node", "m@127.0.0.1:1", "--ca", "c", "--cert", "c", "--key", "k"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).apply
        };
        let a = parse(&["vehicle-gps", "--purpose", "p", "--method", "download", "--method", "subscription"]);
        let b = parse(&["vehicle-gps", "--purpose", "p", "--method", "subscription", "--method", "download"]);
        let c = parse(&["vehicle-gps", "--purpose", "q", "--method", "download"]);
        assert_eq!(derived_key(&a), derived_key(&b));
        assert_ne!(derived_key(&a), derived_key(&c));
        assert_eq!(a.methods, [ServiceMethod::Download, ServiceMethod::Subscription]);
    }
}
