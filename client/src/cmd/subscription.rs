//! `ferry subscription add|list|remove`: the peers' datasets a node follows (数据订阅), as the
//! node answers the `node-subscription-*` calls (`ferry_proto::node_api`). `list` shows each
//! subscription's held and announced versions, its lag and its state; `ferry status` shows the
//! same lines through [`render`].

use super::catalog::{control_session, print_json};
use super::node::NodeFlags;
use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_client::control::node_call;
use ferry_proto::DatasetId;
use ferry_proto::node_api::{NodeRequest, SubscriptionDefinition, SubscriptionView};
use std::fmt::Write as _;

#[derive(Debug, Args)]
pub struct SubscriptionArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print the node's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: SubscriptionCommand,
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Follow DATASET at the peer FROM: each version it announces is pulled (as a delta when
    /// possible) and committed, into the node's store or a directory.
    Add {
        dataset: String,
        /// A peer of the node's `[peers]`.
        #[arg(long)]
        from: String,
        /// An absolute directory on the node's host [default: the node's own store].
        #[arg(long)]
        into: Option<String>,
        /// The class of its pulls among the node's own and at the serving node: high, normal
        /// or low [default: normal].
        #[arg(long)]
        priority: Option<String>,
    },
    /// Every subscription with the version held, the version announced, and how far behind.
    List,
    /// Stop following DATASET (subscriptions of the node config are changed there).
    Remove {
        dataset: String,
        /// Which one, when the dataset is followed into a directory.
        #[arg(long)]
        into: Option<String>,
    },
}

pub async fn run(args: SubscriptionArgs) -> anyhow::Result<()> {
    let dataset = |name: &str| DatasetId::new(name).with_context(|| format!("dataset name {name:?}"));
    let request = match &args.command {
        SubscriptionCommand::Add { dataset: name, from, into, priority } => {
            let subscription = SubscriptionDefinition {
                dataset: dataset(name)?,
                from: from.clone(),
                into: into.clone(),
                priority: priority.clone(),
            };
            NodeRequest::NodeSubscriptionAdd { subscription }
        }
        SubscriptionCommand::List => NodeRequest::NodeSubscriptionList {},
        SubscriptionCommand::Remove { dataset: name, into } => {
            NodeRequest::NodeSubscriptionRemove { dataset: dataset(name)?, into: into.clone() }
        }
    };
    let session = control_session(&args.node).await?;
    let answer = node_call(&session, &request).await;
    session.close();
    let value = answer.with_context(|| format!("asking {} about its subscriptions", args.node.node))?;
    if args.json {
        return print_json(&value);
    }
    let views: Vec<SubscriptionView> = match args.command {
        SubscriptionCommand::List => serde_json::from_value(value).context("reading the subscriptions")?,
        _ => vec![serde_json::from_value(value).context("reading the subscription")?],
    };
    print!("{}", render(&views));
    Ok(())
}

/// Subscriptions as an operator reads them.
pub fn render(views: &[SubscriptionView]) -> String {
    let mut out = String::from("subscriptions:\n");
    if views.is_empty() {
        out.push_str("  none\n");
    }
    let version = |v: Option<ferry_proto::VersionNo>| v.map_or("-".to_owned(), |v| format!("v{v}"));
    for v in views {
        let into = v.into.as_deref().map_or(String::new(), |dir| format!(" into {dir}"));
        let _ = write!(
            out,
            "  {:<32} from {}{into}, priority {}: holds {}, announced {}, {} behind ({:.0} s), {:?}",
            v.dataset.as_str(),
            v.source,
            v.priority,
            version(v.held),
            version(v.announced),
            v.lag_versions,
            v.seconds_behind,
            v.state,
        );
        if let Some(error) = &v.last_error {
            let _ = write!(out, ": {error}");
        }
        out.push('\n');
    }
    out
}
