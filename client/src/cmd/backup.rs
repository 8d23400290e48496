//! `ferry backup DEST`: an online backup of the ministry's control database, taken by the
//! ministry node while it keeps serving (SQLite: `VACUUM INTO` a new file at DEST on the ministry
//! host; a PostgreSQL store answers that `pg_dump` is the tool). Technical support operators only.

use super::catalog::{ask, print_json};
use super::node::NodeFlags;
use clap::Args;
use ferry_client::control::ControlRequest;

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Where the ministry node writes the copy: a path on the ministry host that does not exist yet.
    pub destination: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let request = ControlRequest::Backup { destination: args.destination.clone() };
    let value = ask(&args.node, &request, args.json).await?;
    if args.json {
        return print_json(&value);
    }
    println!("control database backed up to {} on the ministry host", args.destination);
    Ok(())
}
