//! `ferry status [--json]`: what one node holds and does now — its policy replica's serial and
//! age, the datasets it stores with their latest version, the transfers in progress — as the
//! node answers the `node-status` call (`ferry_proto::node_api`). `--fleet` asks the ministry's
//! control plane for the fleet view instead ([`super::fleet`]).

use super::catalog::{control_session, print_json};
use super::node::NodeFlags;
use anyhow::Context;
use clap::Args;
use ferry_client::control::node_call;
use ferry_proto::node_api::{NodeRequest, NodeStatus};
use std::fmt::Write as _;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// At the ministry: every province x dataset, the version held and how far behind it is.
    #[arg(long)]
    pub fleet: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    if args.fleet {
        return super::fleet::run(&args.node, args.json).await;
    }
    let session = control_session(&args.node).await?;
    let answer = node_call(&session, &NodeRequest::NodeStatus {}).await;
    session.close();
    let value = answer.with_context(|| format!("asking {} for its status", args.node.node))?;
    if args.json {
        return print_json(&value);
    }
    let status: NodeStatus = serde_json::from_value(value).context("reading the node's status")?;
    print!("{}", render(&status));
    Ok(())
}

/// The status as an operator reads it.
pub fn render(status: &NodeStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node {} ({}), up {} s", status.node, status.dept, status.uptime_s);
    match &status.policy {
        None => out.push_str("policy: none (this node enforces no catalog)\n"),
        Some(p) => {
            let serial = p.serial.map_or("none".to_owned(), |s| s.to_string());
            let age = p.age_s.map_or("-".to_owned(), |a| format!("{a} s"));
            let stale = if p.stale { "  STALE: reads are refused" } else { "" };
            let _ = writeln!(out, "policy: serial {serial}, confirmed {age} ago{stale}");
        }
    }
    let _ = writeln!(
        out,
        "transfers: {} serving, {} pulling",
        status.transfers.serving, status.transfers.replicating
    );
    if status.datasets.is_empty() {
        out.push_str("datasets: none stored\n");
    } else {
        out.push_str("datasets:\n");
        for d in &status.datasets {
            let latest = d.latest.map_or("-".to_owned(), |v| v.to_string());
            let _ = writeln!(out, "  {:<32} v{latest:<6} published by {}", d.dataset.as_str(), d.publisher);
        }
    }
    if !status.schedules.is_empty() {
        // Under a heading and indented, as the datasets and subscriptions are.
        out.push_str("schedules:\n");
        for line in super::schedule::render(&status.schedules).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !status.subscriptions.is_empty() {
        out.push_str(&super::subscription::render(&status.subscriptions));
    }
    out
}
