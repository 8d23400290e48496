//! `ferry query DATASET [--where PREDICATE] [--columns a,b] [--format arrow|csv|json]
//! [--limit N] [--version N] [--out FILE]`: an online query (联机查询) answered by the node from
//! its Parquet files, written to FILE (or stdout) as it arrives; the row count and whether the
//! result was truncated go to stderr. The predicate language is the row filter's
//! (`ferry_proto::filter`): `=`, `!=`, `<`, `>`, `<=`, `>=`, `BETWEEN`, `IN (...)`,
//! `IS [NOT] NULL`, joined by `AND`.

use super::catalog::control_session;
use super::node::NodeFlags;
use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_client::query::start;
use ferry_proto::query::{QueryFormat, QuerySpec};
use ferry_proto::{DatasetId, VersionNo};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// An Arrow IPC stream.
    Arrow,
    Csv,
    /// JSON lines, one object per row.
    Json,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The dataset to query.
    pub dataset: DatasetId,
    /// Which rows, e.g. "plate = '京A12345'" or "seats BETWEEN 2 AND 5 AND company IS NULL".
    #[arg(long = "where", value_name = "PREDICATE")]
    pub predicate: Option<String>,
    /// Which columns, comma-separated, in this order; all you may see by default.
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: FormatArg,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// The version; the latest by default.
    #[arg(long)]
    pub version: Option<u64>,
    /// Write the result here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let format = match args.format {
        FormatArg::Arrow => QueryFormat::ArrowIpc,
        FormatArg::Csv => QueryFormat::Csv,
        FormatArg::Json => QueryFormat::Json,
    };
    let spec = QuerySpec::new(args.predicate.as_deref(), args.columns.clone(), args.limit, format)?;
    let version = args.version.map(VersionNo::new).transpose().context("--version")?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let session = control_session(&args.node).await?;
    let result = async {
        let mut stream = start(&session, &args.dataset, version, &spec).await?;
        while let Some(piece) = stream.next_piece().await? {
            out.write_all(&piece)?;
        }
        out.flush()?;
        anyhow::Ok(stream.done())
    }
    .await;
    session.close();
    let done = result.with_context(|| format!("querying {} on {}", args.dataset, args.node.node))?;
    if let Some(done) = done {
        let truncated =
            if done.truncated { " (truncated: the limit or the node's bound stopped it)" } else { "" };
        eprintln!("{} rows{truncated}", done.rows);
    }
    Ok(())
}
