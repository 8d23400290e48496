//! `ferry audit show|verify`: the hash-chained audit log. On line they ask the ministry node
//! (technical support and the S&T authority may); with `--db PATH` they read a node's own log
//! file off line, read-only (a province keeps `audit.db` in its state directory). `verify` names
//! the first bad entry and exits 1 unless the log is intact.
//!
//! Neighbours: `ferry_control::audit` (`verify_file`, `show_pool`), `ferry_control::keys::CaVerifier`
//! (checkpoint signatures against the CA), [`super::catalog`] (the shared call and output helpers).

use super::catalog::{ask, parse_time_arg, print_json, show_value};
use super::node::NodeFlags;
use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_client::control::view::{self, AuditLine, Verification};
use ferry_client::control::{CommandFailed, ControlRequest, EXIT_STATUS_HELP, ExitStatus, render};
use ferry_control::audit::{ShowFilter, StoredCheckpoint, show_pool, verify_file};
use ferry_control::keys::CaVerifier;
use ferry_net::conn::NodeAddr;
use ferry_net::sign::TrustAnchors;
use ferry_proto::{DatasetId, DeptId, Role};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The exit statuses of `audit verify` (on line and off line).
const VERIFY_EXIT_HELP: &str = "Exit status:
  0  the log is intact
  1  it is not (the first bad entry is printed), or the check could not run
  2  bad command line
  5  forbidden: only technical support and the S&T authority read the ministry's log
  8  node unavailable: retry later";

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show audit entries, newest first, filtered by dataset, department and time.
    #[command(after_help = EXIT_STATUS_HELP)]
    Show(ShowArgs),
    /// Verify the whole chain and its signed checkpoints; name the first bad entry.
    #[command(after_help = VERIFY_EXIT_HELP)]
    Verify(VerifyArgs),
}

/// Where the log is: the ministry node (the connection flags), or a database file (`--db`).
#[derive(Debug, Clone, Args)]
pub struct LogSource {
    /// Read this audit database file off line, read-only, instead of asking the ministry.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The ministry node, as NAME@HOST:PORT.
    #[arg(long, env = "FERRY_NODE")]
    pub node: Option<NodeAddr>,
    /// The ministry CA certificate (PEM); off line, checkpoint signatures are checked against it.
    #[arg(long, env = "FERRY_CA")]
    pub ca: Option<PathBuf>,
    /// Your certificate (PEM), on line.
    #[arg(long, env = "FERRY_CERT")]
    pub cert: Option<PathBuf>,
    /// Your private key (PEM), on line.
    #[arg(long, env = "FERRY_KEY")]
    pub key: Option<PathBuf>,
    /// The CA's revocation list (PEM).
    #[arg(long, env = "FERRY_CRL")]
    pub crl: Option<PathBuf>,
}

impl LogSource {
    /// The connection flags, when the log is asked for on line.
    fn node_flags(&self) -> Result<NodeFlags, CommandFailed> {
        match (&self.node, &self.ca, &self.cert, &self.key) {
            (Some(node), Some(ca), Some(cert), Some(key)) => Ok(NodeFlags {
                node: node.clone(),
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                crl: self.crl.clone(),
            }),
            _ => Err(CommandFailed::new(
                ExitStatus::Usage,
                "give --node, --ca, --cert and --key (or FERRY_NODE, FERRY_CA, FERRY_CERT, FERRY_KEY) to ask \
                 the ministry, or --db PATH to read a log file off line",
            )),
        }
    }
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub source: LogSource,
    /// Only entries about this dataset.
    #[arg(long)]
    pub dataset: Option<DatasetId>,
    /// Only entries of this acting department.
    #[arg(long = "dept")]
    pub department: Option<DeptId>,
    /// Entries at or after this time (YYYY-MM-DD, China Standard Time, or RFC 3339).
    #[arg(long, value_parser = parse_time_arg)]
    pub since: Option<String>,
    /// Entries before this time (YYYY-MM-DD, China Standard Time, or RFC 3339).
    #[arg(long, value_parser = parse_time_arg)]
    pub until: Option<String>,
    /// At most this many entries [default: 100].
    #[arg(long)]
    pub limit: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: LogSource,
    /// Off line: accept checkpoints signed only by this department's keys (default: any
    /// ministry, province or control-plane key of the CA).
    #[arg(long)]
    pub signer_dept: Option<DeptId>,
    /// Off line: checkpoints exported earlier (JSON list), checked against the log so a
    /// truncation behind the log's own checkpoints is caught.
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Show(args) => show(args).await,
        AuditCommand::Verify(args) => verify(args).await,
    }
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let value = match &args.source.db {
        Some(db) => show_file(db, &args).await?,
        None => {
            let request = ControlRequest::AuditShow {
                dataset: args.dataset.clone(),
                department: args.department.clone(),
                since: args.since.clone(),
                until: args.until.clone(),
                limit: args.limit,
            };
            ask(&args.source.node_flags()?, &request, args.json).await?
        }
    };
    show_value::<Vec<AuditLine>>(value, args.json, |entries| render::audit_entries(entries))
}

async fn show_file(db: &Path, args: &ShowArgs) -> anyhow::Result<Value> {
    let filter = ShowFilter {
        dataset: args.dataset.clone(),
        department: args.department.clone(),
        kind: None,
        from_ms: args.since.as_deref().map(unix_ms).transpose()?,
        until_ms: args.until.as_deref().map(unix_ms).transpose()?,
        before_seq: None,
        limit: args.limit.unwrap_or(0),
    };
    check_is_file(db)?;
    let pool = ferry_control::db::open_read_only(db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let entries = show_pool(&pool, &filter).await;
    pool.close().await;
    let entries = entries.with_context(|| format!("cannot read the audit log {}", db.display()))?;
    Ok(serde_json::to_value(entries)?)
}

fn check_is_file(db: &Path) -> Result<(), CommandFailed> {
    if db.is_file() {
        Ok(())
    } else {
        Err(CommandFailed::new(ExitStatus::Usage, format!("{} is not a file", db.display())))
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let value = match &args.source.db {
        Some(db) => verify_offline(db, &args).await?,
        None => ask(&args.source.node_flags()?, &ControlRequest::AuditVerify {}, args.json).await?,
    };
    if args.json {
        print_json(&value)?;
    }
    let report: Verification = view::parse(value)?;
    if !args.json {
        print!("{}", render::verification(&report));
    }
    match report.problems.first() {
        None => Ok(()),
        Some(first) => {
            let message = format!("the audit log is not intact: first bad entry {}", first.seq);
            Err(CommandFailed::new(ExitStatus::Failed, message).into())
        }
    }
}

async fn verify_offline(db: &Path, args: &VerifyArgs) -> anyhow::Result<Value> {
    let ca = args.source.ca.as_deref().ok_or_else(|| {
        CommandFailed::new(
            ExitStatus::Usage,
            "off line, give the CA certificate (--ca or FERRY_CA) to check checkpoints",
        )
    })?;
    let trust = TrustAnchors::load(ca, args.source.crl.as_deref())?;
    let roles = vec![Role::Ministry, Role::Province, Role::Control];
    let verifier = CaVerifier::new(trust, roles, args.signer_dept.clone());
    let anchors = match &args.checkpoints {
        Some(path) => read_checkpoints(path)?,
        None => Vec::new(),
    };
    check_is_file(db)?;
    let report = verify_file(db, &verifier, &anchors)
        .await
        .with_context(|| format!("cannot verify the audit log {}", db.display()))?;
    Ok(serde_json::to_value(report)?)
}

fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<StoredCheckpoint>> {
    let text = super::catalog::read_bounded(path, 64 * 1024 * 1024)?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON list of checkpoints", path.display()))
}

/// A `--since`/`--until` value (already checked by [`parse_time_arg`]) as unix milliseconds.
fn unix_ms(text: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let at = match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => {
            let date = super::catalog::parse_date(text).with_context(|| format!("{text:?} is not a date"))?;
            date.midnight().assume_offset(time::UtcOffset::from_hms(8, 0, 0)?)
        }
    };
    Ok(i64::try_from(at.unix_timestamp_nanos() / 1_000_000)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AuditCommand,
    }

    fn parse(args: &[&str]) -> AuditCommand {
        Cli::try_parse_from(std::iter::once("audit").chain(args.iter().copied())).expect("parses").command
    }

    #[test]
    fn verify_off_line_needs_no_node_and_on_line_names_what_is_missing() {
        let AuditCommand::Verify(args) = parse(&["verify", "--db", "audit.db", "--ca", "ca.pem"]) else {
            panic!("verify")
        };
        assert_eq!(args.source.db, Some(PathBuf::from("audit.db")));
        let AuditCommand::Verify(online) = parse(&["verify", "--node", "ministry@127.0.0.1:4433"]) else {
            panic!("verify")
        };
        // Environment variables may fill the flags on a developer's machine; the test only
        // asserts the refusal when they are absent.
        if online.source.cert.is_none() {
            let error = online.source.node_flags().unwrap_err();
            assert_eq!(error.status, ExitStatus::Usage);
            assert!(error.message.contains("--db PATH"), "{}", error.message);
        }
    }

    #[test]
    fn show_filters_parse_and_times_become_milliseconds() {
        let argv =
            ["show", "--db", "a.db", "--dataset", "vehicles", "--dept", "zhejiang", "--since", "2026-12-06"];
        let AuditCommand::Show(args) = parse(&argv) else { panic!("show") };
        assert_eq!(args.department.as_ref().map(DeptId::as_str), Some("zhejiang"));
        // 2026-12-06 00:00 +08:00 = 2026-12-05 16:00 UTC.
        assert_eq!(
            unix_ms(args.since.as_deref().expect("since")).expect("ms"),
            1_796_515_200_000 - 8 * 3_600_000
        );
        assert_eq!(unix_ms("1970-01-01T00:00:01Z").expect("ms"), 1000);
        assert!(Cli::try_parse_from(["audit", "show", "--since", "yesterday"]).is_err());
    }

    #[tokio::test]
    async fn a_tampered_log_file_fails_verification_at_the_changed_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("audit.db");
        let log = write_log(&db, 5).await;
        drop(log);
        let args = |json| VerifyArgs {
            source: LogSource {
                db: Some(db.clone()),
                node: None,
                ca: Some(ca(dir.path())),
                cert: None,
                key: None,
                crl: None,
            },
            signer_dept: None,
            checkpoints: None,
            json,
        };
        verify(args(false)).await.expect("an intact log verifies");
        let pool = ferry_control::db::open(db.to_str().expect("utf-8")).await.expect("open");
        sqlx::query("UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 3")
            .execute(&pool)
            .await
            .expect("tamper");
        pool.close().await;
        let error = verify(args(true)).await.unwrap_err();
        assert_eq!(error.chain().find_map(ferry_client::control::exit_status), Some(ExitStatus::Failed));
        assert!(error.to_string().contains("first bad entry 3"), "{error}");
    }

    /// A CA in `dir` (its certificate at `dir/ca/ca.pem`).
    fn ca(dir: &Path) -> PathBuf {
        dir.join("ca").join("ca.pem")
    }

    /// A province's log of `n` entries at `db`, its checkpoints signed by a province key of a
    /// new CA in the same directory.
    async fn write_log(db: &Path, n: i64) -> std::sync::Arc<ferry_control::audit::AuditLog> {
        use ferry_client::pki::{IssueRequest, init, issue};
        use ferry_control::audit::{Actor, AuditLog, CheckpointPolicy, EntryKind, NewEntry, Outcome};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = db.parent().expect("dir");
        init(&dir.join("ca"), "test CA", time::Duration::days(1)).expect("CA");
        let now = time::OffsetDateTime::now_utc();
        let request = IssueRequest {
            dept: DeptId::new("zhejiang").expect("dept"),
            role: Role::Province,
            name: "zhejiang".into(),
            dns_names: vec!["zhejiang".into()],
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(1),
        };
        let (cert, key) = (dir.join("node.pem"), dir.join("node.key"));
        issue(&dir.join("ca"), &request, &cert, &key).expect("issued");
        let signer =
            ferry_control::keys::CertSigner(ferry_net::sign::DocumentSigner::load(&cert, &key).expect("key"));
        let policy = CheckpointPolicy { every_entries: 2, every: std::time::Duration::from_secs(3600) };
        let log = AuditLog::open(db.to_str().expect("utf-8"), std::sync::Arc::new(signer), policy)
            .await
            .expect("log");
        for i in 0..n {
            let actor = Actor {
                department: DeptId::new("zhejiang").expect("dept"),
                role: Role::Province,
                name: "zhejiang".into(),
                cert_serial: "01".into(),
            };
            let entry = NewEntry {
                time_ms: 1_796_000_000_000 + i,
                kind: EntryKind::ReadAllowed,
                actor,
                dataset: Some(DatasetId::new("vehicles").expect("id")),
                outcome: Outcome::Accepted,
                reason: String::new(),
                detail: serde_json::json!({}),
            };
            log.append(entry).await.expect("append");
        }
        std::sync::Arc::new(log)
    }
}
