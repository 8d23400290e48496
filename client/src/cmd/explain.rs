//! `ferry explain DEPT DATASET [--method M] [--json]`: why a department may or may not get a
//! dataset, as the node given by `--node` decides it (its catalog entry in effect, the grants in
//! its policy, each method's decision, how old its policy is). The ministry's node also lists
//! the pending applications; asked of a province, `--ministry` fetches them from the ministry.
//! The answer is `ferry_control::explain`'s, computed by the node with the decision it enforces.

use super::catalog::{control_session, print_json};
use super::node::NodeFlags;
use anyhow::Context;
use clap::Args;
use ferry_client::conn::Connector;
use ferry_client::control::{ControlCallError, decode_answer};
use ferry_control::explain::{ExplainRequest, Explanation, render};
use ferry_net::conn::NodeAddr;
use ferry_proto::{DatasetId, DeptId, Message, ServiceMethod};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The department that would read.
    pub dept: DeptId,
    pub dataset: DatasetId,
    /// One service method (online-query, subscription, download); every method offered by default.
    #[arg(long)]
    pub method: Option<ServiceMethod>,
    /// The ministry node (NAME@HOST:PORT), for the pending applications when --node is a province.
    #[arg(long, env = "FERRY_MINISTRY")]
    pub ministry: Option<NodeAddr>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let query = ExplainRequest::Explain {
        dept: args.dept.clone(),
        dataset: args.dataset.clone(),
        method: args.method,
    };
    let session = control_session(&args.node).await?;
    let answer = ask(&session, &query).await;
    session.close();
    let mut explanation = answer.with_context(|| format!("asking {} to explain", args.node.node))?;
    if explanation.applications.is_none()
        && let Some(ministry) = &args.ministry
    {
        let creds = args.node.credentials()?;
        let connector = Connector::new(&creds, ministry.clone()).map_err(ControlCallError::Transport)?;
        let session = connector.connect().await.map_err(ControlCallError::Transport)?;
        let at_ministry = ask(&session, &query).await;
        session.close();
        explanation.applications =
            at_ministry.context("asking the ministry for pending applications")?.applications;
    }
    if args.json {
        return print_json(&serde_json::to_value(&explanation)?);
    }
    print!("{}", render(&explanation));
    Ok(())
}

async fn ask(session: &ferry_client::conn::Session, query: &ExplainRequest) -> anyhow::Result<Explanation> {
    let frame = Message::ControlCall { request: query.to_json() };
    let answer = session.request(&frame).await.map_err(ControlCallError::Transport)?;
    let value = decode_answer(answer)?;
    serde_json::from_value(value).context("the node's explanation is malformed")
}
