//! `ferry pki`: run the ministry's certificate authority (init, issue, revoke, list).
//!
//! A thin shell over [`ferry_client::pki`]: parse flags, call, print a few lines (or JSON).

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use ferry_client::pki::{self, IssueRequest, IssuedRecord, RevocationReason};
use ferry_proto::{DeptId, Role};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Manage the ministry certificate authority.
#[derive(Debug, Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    cmd: PkiCommand,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a new CA (root certificate, key, empty CRL) in a directory.
    Init {
        /// PKI directory (created, mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// Common name of the root certificate.
        #[arg(long)]
        name: String,
        /// Validity of the root certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate for a node or an operator.
    Issue(IssueArgs),
    /// Revoke a certificate and publish a new CRL.
    Revoke(RevokeArgs),
    /// List every certificate the CA issued.
    List {
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// PKI directory.
    #[arg(long)]
    dir: PathBuf,
    /// Department id written into the certificate.
    #[arg(long)]
    dept: DeptId,
    /// ministry, province, operator, or control (the control plane's document-signing key,
    /// never a TLS peer).
    #[arg(long)]
    role: Role,
    /// Common name: the node name or the person.
    #[arg(long)]
    name: String,
    /// DNS name clients verify the node by (repeatable); nodes use their node name.
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// Validity in days from --not-before.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Start of validity, RFC 3339 (default: one hour ago, to tolerate clock skew).
    #[arg(long, value_parser = parse_rfc3339)]
    not_before: Option<OffsetDateTime>,
    /// Where to write the certificate (PEM); must not exist.
    #[arg(long)]
    cert: PathBuf,
    /// Where to write the private key (PEM, mode 0600); must not exist.
    #[arg(long)]
    key: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(true).args(["serial", "cert"])))]
struct RevokeArgs {
    /// PKI directory.
    #[arg(long)]
    dir: PathBuf,
    /// Serial number (hex, as `ferry pki list` or `openssl x509 -serial` shows it). A serial
    /// this CA signed outside its registry is revoked too.
    #[arg(long)]
    serial: Option<String>,
    /// The certificate file to revoke; it must be signed by this CA. With --serial, the two
    /// must name the same certificate.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation or
    /// privilege-withdrawn.
    #[arg(long, default_value = "unspecified")]
    reason: RevocationReason,
}

fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("expected RFC 3339 (2025-01-31T00:00:00Z): {e}"))
}

/// RFC 3339 to the second (certificates carry no finer time).
fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub fn run(args: PkiArgs) -> anyhow::Result<()> {
    match args.cmd {
        PkiCommand::Init { dir, name, days } => init(&dir, &name, days),
        PkiCommand::Issue(args) => issue(args),
        PkiCommand::Revoke(args) => revoke(args),
        PkiCommand::List { dir, json } => list(&dir, json),
    }
}

fn init(dir: &Path, name: &str, days: u32) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let ca = pki::init(dir, name, Duration::days(i64::from(days)))?;
    writeln!(out, "created CA {:?} (serial {}, valid until {})", ca.name, ca.serial, rfc3339(ca.not_after))?;
    writeln!(out, "  distribute {} and {} to every node", ca.ca_cert.display(), ca.crl.display())?;
    writeln!(out, "  keep {} secret", dir.join(pki::CA_KEY_FILE).display())?;
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let not_before = args.not_before.unwrap_or_else(|| OffsetDateTime::now_utc() - pki::CLOCK_SKEW_ALLOWANCE);
    let not_after = not_before
        .checked_add(Duration::days(i64::from(args.days)))
        .context("--days reaches past the year 9999")?;
    let req = IssueRequest {
        dept: args.dept,
        role: args.role,
        name: args.name,
        dns_names: args.dns,
        not_before,
        not_after,
    };
    let issued = pki::issue(&args.dir, &req, &args.cert, &args.key)?;
    writeln!(
        out,
        "issued {} certificate for {} of {}: serial {}, valid {} to {}",
        issued.role,
        issued.name,
        issued.dept,
        issued.serial,
        rfc3339(not_before),
        rfc3339(not_after)
    )?;
    writeln!(out, "  certificate: {}", issued.cert_path.display())?;
    writeln!(out, "  key:         {} (mode 0600; keep it secret)", issued.key_path.display())?;
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let now = OffsetDateTime::now_utc();
    let done = match (&args.serial, &args.cert) {
        (serial, Some(cert)) => {
            let signed = pki::serial_signed_by_this_ca(&args.dir, cert)?;
            if let Some(serial) = serial.as_deref().filter(|s| !pki::same_serial(s, &signed)) {
                anyhow::bail!("{} has serial {signed}, not {serial}", cert.display());
            }
            pki::revoke(&args.dir, &signed, args.reason, now)?
        }
        (Some(serial), None) => pki::revoke(&args.dir, serial, args.reason, now)?,
        // clap's "target" group requires one of the two.
        (None, None) => anyhow::bail!("give --serial or --cert"),
    };
    writeln!(out, "revoked {} ({})", done.serial, args.reason)?;
    if !done.registered {
        writeln!(out, "  {} has no record of it: listed as signed outside the registry", pki::REGISTRY_FILE)?;
    }
    writeln!(
        out,
        "  copy {} to every node; they reload it on change",
        args.dir.join(pki::CRL_FILE).display()
    )?;
    Ok(())
}

fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let records = pki::list(dir)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    writeln!(
        out,
        "{:<32}  {:<16}  {:<8}  {:<20}  {:<20}  STATUS",
        "SERIAL", "DEPT", "ROLE", "NAME", "NOT AFTER"
    )?;
    for r in &records {
        writeln!(
            out,
            "{:<32}  {:<16}  {:<8}  {:<20}  {:<20}  {}",
            r.serial,
            r.dept,
            r.role,
            r.name,
            rfc3339(r.not_after),
            status(r, now)
        )?;
    }
    if records.is_empty() {
        writeln!(out, "(no certificates issued)")?;
    }
    Ok(())
}

fn status(r: &IssuedRecord, now: OffsetDateTime) -> String {
    match (r.revoked_at, r.reason) {
        (Some(_), Some(reason)) => format!("revoked ({reason})"),
        (Some(_), None) => "revoked".to_owned(),
        (None, _) if now > r.not_after => "expired".to_owned(),
        (None, _) if now < r.not_before => "not yet valid".to_owned(),
        (None, _) => "valid".to_owned(),
    }
}
