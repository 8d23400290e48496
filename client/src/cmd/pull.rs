//! `ferry pull`: fetch a dataset version into a directory, verified and resumable, with a
//! progress bar or `--json` progress lines. SIGINT/SIGTERM stop at a chunk boundary; running the
//! same command again resumes.

use super::node::NodeFlags;
use anyhow::Context;
use clap::Args;
use ferry_client::conn::{ClientError, Connector};
use ferry_client::transfer::{
    self, Provenance, PullError, PullEvent, PullObserver, PullOptions, PullRequest,
};
use ferry_control::api::ControlRequest;
use ferry_net::bandwidth::{RateLimiter, Timetable, Tz};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::Credentials;
use ferry_proto::authz::reason_of;
use ferry_proto::{DatasetId, DeptId, ErrorCode, VersionNo};
use ferry_tables::catalog::CatalogEntry;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// The dataset to pull.
    pub dataset: DatasetId,
    /// The version; the latest by default.
    #[arg(long)]
    pub version: Option<u64>,
    /// Destination root; the version lands in DIR/<dataset>/v<N>/.
    #[arg(long)]
    pub to: PathBuf,
    /// Parallel streams [default: 4 on a short path, 8 from 5 ms minimum round-trip time on].
    #[arg(long)]
    pub streams: Option<usize>,
    /// Cap the transfer rate, in bytes per second (suffixes K, M, G allowed: 4M).
    #[arg(long, value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
    /// A bandwidth timetable, as rclone's --bwlimit: "4M", "08:00,512k 19:00,off" (every day)
    /// or "Mon-08:00,10M Mon-19:00,off" (by weekday); rates in bytes per second with B, K, M, G
    /// (powers of 1024, no suffix = KiB), "off" = unlimited. It changes at its edges mid-pull.
    #[arg(long, value_parser = parse_timetable)]
    pub bwlimit: Option<Timetable>,
    /// The time zone --bwlimit's times are in.
    #[arg(long, default_value = "Asia/Shanghai", value_parser = parse_zone)]
    pub bwlimit_timezone: Tz,
    /// Ask the node not to compress chunks.
    #[arg(long)]
    pub no_compression: bool,
    /// Print progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// The ministry node (NAME@HOST:PORT): before anything is fetched, each version's publisher
    /// is checked against the dataset's provider in its catalog, so a node re-serving a version
    /// cannot pass off one it signed itself.
    #[arg(long, env = "FERRY_MINISTRY")]
    pub ministry: Option<NodeAddr>,
}

/// The catalog's provider of the dataset, asked of the ministry before the pull.
#[derive(Debug)]
struct CatalogProvider {
    dataset: DatasetId,
    provider: DeptId,
}

impl Provenance for CatalogProvider {
    fn check(&self, manifest: &ferry_proto::Manifest) -> Result<(), String> {
        if manifest.dataset == self.dataset && manifest.publisher == self.provider {
            return Ok(());
        }
        Err(format!(
            "dataset {} is provided by {} in the ministry's catalog, but this version was signed by {}",
            manifest.dataset, self.provider, manifest.publisher
        ))
    }
}

/// Looks up the provider of `dataset` in the ministry's catalog.
async fn catalog_provider(
    creds: &Credentials,
    ministry: &NodeAddr,
    dataset: &DatasetId,
) -> anyhow::Result<CatalogProvider> {
    let connector = Connector::new(creds, ministry.clone())?;
    let session = connector.connect().await.context("connecting to the ministry to check the publisher")?;
    let request = ControlRequest::CatalogShow { dataset: dataset.clone(), version: None };
    let entry = ferry_client::control::call(&session, &request).await;
    connector.shutdown().await;
    let entry = entry.with_context(|| format!("looking up {dataset} in the ministry's catalog"))?;
    let document =
        entry.get("document").and_then(|d| d.as_str()).context("the catalog entry has no document")?;
    let parsed = CatalogEntry::parse_toml(document)
        .map_err(|e| anyhow::anyhow!("the catalog entry of {dataset}: {e}"))?;
    Ok(CatalogProvider { dataset: dataset.clone(), provider: parsed.provider().clone() })
}

fn parse_timetable(s: &str) -> Result<Timetable, String> {
    Timetable::parse(s).map_err(|e| e.to_string())
}

fn parse_zone(s: &str) -> Result<Tz, String> {
    ferry_net::bandwidth::parse_zone(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.to_ascii_uppercase().chars().last() {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_mul(mult).filter(|r| *r > 0).ok_or_else(|| format!("{s:?} is not a positive rate"))
}

/// Prints one JSON line per event, flushed at once so a supervisor sees it before a crash.
struct JsonLines;

impl PullObserver for JsonLines {
    fn event(&self, event: &PullEvent) {
        let line = match event {
            PullEvent::Started { dataset, version, part, files, total_bytes, resumed_bytes } => {
                serde_json::json!({
                    "event": "started", "dataset": dataset.as_str(), "version": version.get(), "part": part,
                    "files": files, "total_bytes": total_bytes, "resumed_bytes": resumed_bytes,
                })
            }
            PullEvent::Materialized { dataset, version, rows } => serde_json::json!({
                "event": "materialized", "dataset": dataset.as_str(), "version": version.get(), "rows": rows,
            }),
            PullEvent::Chunk { verified_bytes, fetched_bytes, total_bytes, .. } => serde_json::json!({
                "event": "progress", "verified_bytes": verified_bytes, "fetched_bytes": fetched_bytes, "total_bytes": total_bytes,
            }),
            PullEvent::Retry { attempt, reason } => {
                serde_json::json!({"event": "retry", "attempt": attempt, "reason": reason})
            }
            PullEvent::Verifying => serde_json::json!({"event": "verifying"}),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A progress bar on stderr.
struct Bar(ProgressBar);

impl PullObserver for Bar {
    fn event(&self, event: &PullEvent) {
        match event {
            PullEvent::Started { dataset, version, part, total_bytes, resumed_bytes, .. } => {
                self.0.set_length(*total_bytes);
                self.0.set_position(*resumed_bytes);
                self.0.set_message(format!("{dataset} {version} {part}"));
            }
            PullEvent::Materialized { version, rows, .. } => self.0.println(format!(
                "applied the delta of {version}: {rows} rows, identical to the publisher's table"
            )),
            PullEvent::Chunk { verified_bytes, .. } => self.0.set_position(*verified_bytes),
            PullEvent::Retry { attempt, reason } => self.0.println(format!("retry {attempt}: {reason}")),
            PullEvent::Verifying => self.0.set_message("verifying and committing"),
        }
    }
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let version = args.version.map(VersionNo::new).transpose()?;
    let creds = args.node.credentials()?;
    let connector = Connector::new(&creds, args.node.node.clone())?;
    let provenance = match &args.ministry {
        Some(ministry) => {
            Some(Arc::new(catalog_provider(&creds, ministry, &args.dataset).await?) as Arc<dyn Provenance>)
        }
        None => None,
    };
    let defaults = PullOptions::default();
    let opts = PullOptions {
        provenance,
        streams: args.streams.unwrap_or(defaults.streams),
        long_path_streams: args.streams.unwrap_or(defaults.long_path_streams),
        accept_zstd: !args.no_compression,
        rate_limit: args.limit_rate,
        bandwidth: args.bwlimit.map(|t| Arc::new(RateLimiter::new(t.in_zone(args.bwlimit_timezone)))),
        ..PullOptions::default()
    };
    let bar = (!args.json).then(|| {
        let bar = ProgressBar::new(0);
        let style =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let observer: Arc<dyn PullObserver> = match &bar {
        Some(bar) => Arc::new(Bar(bar.clone())),
        None => Arc::new(JsonLines),
    };
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = cancel_tx.send(true);
    });
    let request = PullRequest { dataset: args.dataset, version };
    let result = transfer::sync(&connector, &creds, &request, &args.to, &opts, observer, cancel).await;
    connector.shutdown().await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => {
            if args.json {
                let mut line = serde_json::to_value(&report)?;
                line["event"] = "done".into();
                println!("{line}");
            } else {
                let mb_s = report.fetched_bytes as f64 / report.seconds.max(1e-9) / 1e6;
                if report.already_present {
                    println!("{} {} is already at {}", report.dataset, report.version, report.path.display());
                } else {
                    if report.fell_back_to_snapshot {
                        println!(
                            "the deltas after the local version are no longer on the node: fetched a snapshot"
                        );
                    }
                    let from = report.from.map_or("nothing".to_owned(), |v| v.to_string());
                    let share = 100.0 * report.fetched_bytes as f64 / report.table_bytes.max(1) as f64;
                    println!(
                        "{} {from} -> {}: {}; {} rows. Fetched {} bytes ({share:.1}% of the {}-byte table; {} resumed) in {:.2} s, {mb_s:.0} MB/s -> {}",
                        report.dataset,
                        report.version,
                        report.steps.join(", "),
                        report.rows,
                        report.fetched_bytes,
                        report.table_bytes,
                        report.resumed_bytes,
                        report.seconds,
                        report.path.display()
                    );
                }
            }
            Ok(())
        }
        Err(e) => {
            if let Some((code, message)) = refusal(&e) {
                return Err(refused(code, message, args.json));
            }
            if args.json {
                let kind = match &e {
                    PullError::Corrupt { .. }
                    | PullError::ChunkHashes(_)
                    | PullError::FileMismatch { .. } => "corrupt",
                    PullError::Interrupted { .. } => "interrupted",
                    _ => "failed",
                };
                println!("{}", serde_json::json!({"event": "error", "kind": kind, "message": e.to_string()}));
            }
            Err(e.into())
        }
    }
}

/// The node's refusal behind a failed pull, if that is why it failed.
fn refusal(e: &PullError) -> Option<(ErrorCode, &str)> {
    let client = match e {
        PullError::Client(client) | PullError::RetriesExhausted { last: client, .. } => client,
        _ => return None,
    };
    match client {
        ClientError::Remote { code, message }
            if matches!(code, ErrorCode::PermissionDenied | ErrorCode::Unavailable) =>
        {
            Some((*code, message.as_str()))
        }
        _ => None,
    }
}

/// Says why the node refused, and what to do, in one clear line (or a JSON line).
fn refused(code: ErrorCode, message: &str, json: bool) -> anyhow::Error {
    let reason = reason_of(message).unwrap_or(match code {
        ErrorCode::Unavailable => "unavailable",
        _ => "permission_denied",
    });
    let text = message.strip_prefix(reason).and_then(|m| m.strip_prefix(": ")).unwrap_or(message);
    if json {
        let line =
            serde_json::json!({"event": "error", "kind": "refused", "reason": reason, "message": text});
        println!("{line}");
    }
    anyhow::anyhow!("the node refused the pull ({reason}): {text}")
}
