//! Commands that talk to a node: `list`, `publish`, `replicate`, and the connection flags they
//! share with `pull`.

use anyhow::{Context, bail};
use clap::Args;
use ferry_client::conn::{Connector, Session};
use ferry_client::publish::{publish_file_as, source_format};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::{DatasetId, Message, PublishMode, VersionNo};
use std::path::PathBuf;

/// How to reach a node and who we are.
#[derive(Debug, Clone, Args)]
pub struct NodeFlags {
    /// The node, as NAME@HOST:PORT (NAME is the DNS name in its certificate).
    #[arg(long, env = "FERRY_NODE")]
    pub node: NodeAddr,
    /// The ministry CA certificate (PEM).
    #[arg(long, env = "FERRY_CA")]
    pub ca: PathBuf,
    /// Your certificate (PEM).
    #[arg(long, env = "FERRY_CERT")]
    pub cert: PathBuf,
    /// Your private key (PEM).
    #[arg(long, env = "FERRY_KEY")]
    pub key: PathBuf,
    /// The CA's revocation list (PEM); the node's certificate is checked against it.
    #[arg(long, env = "FERRY_CRL")]
    pub crl: Option<PathBuf>,
}

impl NodeFlags {
    /// Loads our credentials; says on stderr when no CRL is given, since a revoked node is then
    /// trusted (with one, the node's certificate and every manifest's signer are checked).
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        if self.crl.is_none() {
            eprintln!("notice: no --crl (FERRY_CRL) given: revoked certificates are not recognised");
        }
        let paths = TlsPaths {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            crl: self.crl.clone(),
        };
        Ok(Credentials::load(&paths)?)
    }

    pub async fn connect(&self) -> anyhow::Result<(Credentials, Connector, Session)> {
        let creds = self.credentials()?;
        let connector = Connector::new(&creds, self.node.clone())?;
        let session = connector.connect().await?;
        Ok((creds, connector, session))
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (_, _, session) = args.node.connect().await?;
    let Message::DatasetList { datasets } = session.request(&Message::ListDatasets).await? else {
        bail!("the node answered ListDatasets with something else");
    };
    if args.json {
        let rows: Vec<_> = datasets
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id.as_str(), "name": d.name, "publisher": d.publisher.as_str(),
                    "share_type": d.share_type.as_str(), "latest": d.latest.map(VersionNo::get),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<28} {:<14} {:<14} {:>8}  NAME", "DATASET", "PUBLISHER", "SHARE TYPE", "LATEST");
        for d in &datasets {
            let latest = d.latest.map_or("-".into(), |v| v.to_string());
            println!("{:<28} {:<14} {:<14} {:>8}  {}", d.id, d.publisher, d.share_type, latest, d.name);
        }
    }
    session.close();
    Ok(())
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The export to publish: a CSV file with a header row, or a Parquet file.
    pub file: PathBuf,
    /// The dataset definition (TOML: id, name, provider, columns with types and keys, ...).
    #[arg(long)]
    pub definition: PathBuf,
    /// Input format; by default taken from the file's extension.
    #[arg(long, value_parser = ["csv", "parquet"])]
    pub format: Option<String>,
    /// The file holds only new rows of an append-only dataset (e.g. GPS positions).
    #[arg(long)]
    pub append: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let format = source_format(&args.file, args.format.as_deref())?;
    let mode = if args.append { PublishMode::Append } else { PublishMode::Snapshot };
    let definition = std::fs::read_to_string(&args.definition)
        .with_context(|| format!("cannot read {}", args.definition.display()))?;
    let (_, _, session) = args.node.connect().await?;
    let ferry_client::publish::Published { dataset, version, rows, bytes, unchanged } =
        publish_file_as(&session, &args.file, definition, format, mode).await?;
    if args.json {
        let out = serde_json::json!({
            "dataset": dataset.as_str(), "version": version.get(), "rows": rows, "bytes": bytes, "unchanged": unchanged,
        });
        println!("{out}");
    } else if unchanged {
        println!("{dataset} is unchanged since {version}: no new version");
    } else {
        println!("published {dataset} {version}: {rows} rows, {bytes} bytes of Parquet");
    }
    session.close();
    Ok(())
}

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The peer to pull from, by its name in the node's config.
    #[arg(long)]
    pub from: String,
    /// The dataset.
    pub dataset: DatasetId,
    /// The version; the latest by default.
    #[arg(long)]
    pub version: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

pub async fn replicate(args: ReplicateArgs) -> anyhow::Result<()> {
    let version = args.version.map(VersionNo::new).transpose()?;
    let (_, _, session) = args.node.connect().await?;
    let request = Message::Replicate { peer: args.from.clone(), dataset: args.dataset, version };
    let Message::Replicated { dataset, version, bytes_fetched, files } = session.request(&request).await?
    else {
        bail!("the node answered Replicate with something else");
    };
    if args.json {
        let out = serde_json::json!({"dataset": dataset.as_str(), "version": version.get(), "bytes_fetched": bytes_fetched, "files": files});
        println!("{out}");
    } else {
        println!(
            "{} now holds {dataset} {version} from {} ({files} files, {bytes_fetched} bytes fetched)",
            args.node.node.server_name, args.from
        );
    }
    session.close();
    Ok(())
}
