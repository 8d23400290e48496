//! `ferry receipt show|verify`: catalog receipts (Art. 20). `show` asks the ministry for a
//! dataset's receipts, checks each signed file against the CA, writes it and prints it in
//! Chinese and English; `verify` checks a receipt file off line with only the CA certificate.
//! [`deliver`] is what `ferry catalog register` does with the receipts a registration issues.
//!
//! Neighbours: `ferry_control::receipt` (verify, render), `ferry_control::keys::CaVerifier`
//! (the CA adapter), [`super::catalog`] (the shared call and output helpers).

use super::catalog::{ask, print_json, read_bounded};
use super::node::NodeFlags;
use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_client::control::view::{self, ReceiptFile};
use ferry_client::control::{
    CommandFailed, ControlRequest, EXIT_STATUS_HELP, ExitStatus, receipt_verifier, save_receipt,
};
use ferry_control::keys::CaVerifier;
use ferry_control::receipt::{
    MAX_RECEIPT_FILE, ReceiptError, VerifiedReceipt, render_verified_json, render_verified_text,
    verify_receipt,
};
use ferry_proto::DatasetId;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ReceiptArgs {
    #[command(subcommand)]
    pub command: ReceiptCommand,
}

/// The exit statuses of this off-line check.
const VERIFY_EXIT_HELP: &str = "Exit status:
  0  the receipt is genuine: signed by a control-plane key of the CA
  1  it is not (altered, forged, revoked or another key), or it cannot be read";

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Fetch the receipts of a dataset from the ministry, verify them, write and print them.
    #[command(after_help = EXIT_STATUS_HELP)]
    Show(ShowArgs),
    /// Verify a receipt file off line against the ministry CA certificate, and print it.
    #[command(after_help = VERIFY_EXIT_HELP)]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    pub dataset: DatasetId,
    /// Where to write the receipt files (`<receipt id>.receipt.json`).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt file.
    pub file: PathBuf,
    /// The ministry CA certificate (PEM).
    #[arg(long, env = "FERRY_CA")]
    pub ca: PathBuf,
    /// The CA's revocation list (PEM): a receipt signed by a revoked key is refused.
    #[arg(long, env = "FERRY_CRL")]
    pub crl: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ReceiptArgs) -> anyhow::Result<()> {
    match args.command {
        ReceiptCommand::Show(args) => show(args).await,
        ReceiptCommand::Verify(args) => verify(&args),
    }
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let value =
        ask(&args.node, &ControlRequest::Receipts { dataset: args.dataset.clone() }, args.json).await?;
    if args.json {
        print_json(&value)?;
    }
    let receipts: Vec<ReceiptFile> = view::parse(value)?;
    if receipts.is_empty() && !args.json {
        println!("no receipts issued for {} yet", args.dataset);
    }
    deliver(&receipts, &args.out, &args.node, args.json)
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let file = read_bounded(&args.file, MAX_RECEIPT_FILE)?;
    let verifier = control_key_verifier(&args.ca, args.crl.as_deref())?;
    match verify_receipt(file.as_bytes(), &verifier) {
        Ok(verified) => {
            println!("{}", render(&verified, args.json));
            Ok(())
        }
        Err(e) => {
            if args.json {
                print_json(&serde_json::json!({ "valid": false, "reason": e.to_string() }))?;
            } else {
                println!("RECEIPT NOT VALID: {}", args.file.display());
            }
            Err(CommandFailed::new(ExitStatus::Failed, invalid_reason(&e)).into())
        }
    }
}

fn invalid_reason(error: &ReceiptError) -> String {
    match error {
        ReceiptError::Signature(_) => {
            format!("{error} (forged, altered, or not signed by a control key of this CA)")
        }
        _ => error.to_string(),
    }
}

/// Accepts documents signed by a control-plane key of the CA at `ca`.
fn control_key_verifier(ca: &Path, crl: Option<&Path>) -> anyhow::Result<CaVerifier> {
    receipt_verifier(ca, crl).with_context(|| format!("cannot load the CA certificate {}", ca.display()))
}

fn render(verified: &VerifiedReceipt, json: bool) -> String {
    if json { render_verified_json(verified) } else { render_verified_text(verified) }
}

/// Verifies each receipt's signed file against the CA of `node`, writes the genuine ones to
/// `dir` and prints them (text unless `json`, where stdout already holds the answer). A file
/// that does not verify is not written, and fails the command once the others are done.
pub(super) fn deliver(
    receipts: &[ReceiptFile],
    dir: &Path,
    node: &NodeFlags,
    json: bool,
) -> anyhow::Result<()> {
    if receipts.is_empty() {
        return Ok(());
    }
    let verifier = control_key_verifier(&node.ca, node.crl.as_deref())?;
    let mut refused = Vec::new();
    for issued in receipts {
        let id = issued.receipt.id.as_str();
        let verified = match verify_receipt(issued.file.as_bytes(), &verifier) {
            Ok(verified) => verified,
            Err(e) => {
                eprintln!("RECEIPT NOT VALID: {id}: {}; not written", invalid_reason(&e));
                refused.push(id.to_owned());
                continue;
            }
        };
        let path = save_receipt(dir, id, &issued.file)?;
        if json {
            eprintln!("receipt {id} written to {}", path.display());
        } else {
            println!("\nreceipt written to {}\n{}", path.display(), render_verified_text(&verified));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(CommandFailed::new(
        ExitStatus::Failed,
        format!("receipts that do not verify: {}", refused.join(", ")),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ferry_proto::{DeptId, Role};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ReceiptCommand,
    }

    #[test]
    fn verify_needs_only_the_file_and_the_ca() {
        let cli =
            Cli::try_parse_from(["receipt", "verify", "r.receipt.json", "--ca", "ca.pem"]).expect("parses");
        let ReceiptCommand::Verify(args) = cli.command else { panic!("verify") };
        assert_eq!(args.file, PathBuf::from("r.receipt.json"));
        assert_eq!(args.crl, None);
    }

    #[test]
    fn show_writes_to_the_current_directory_by_default() {
        let argv = [
            "receipt",
            "show",
            "vehicles",
            "--node",
            "ministry@127.0.0.1:4433",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
        ];
        let ReceiptCommand::Show(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("show")
        };
        assert_eq!(args.out, PathBuf::from("."));
        assert_eq!(args.dataset.as_str(), "vehicles");
    }

    /// A CA in `dir` and a signed pre-catalog receipt file, signed by a key of `role`.
    fn signed_receipt(dir: &Path, role: Role) -> PathBuf {
        use ferry_client::pki::{IssueRequest, init, issue};
        use ferry_control::receipt::{
            ComplianceSummary, ReceiptKind, ReceiptRequest, build_receipt, sign_receipt,
        };
        let ca = dir.join("ca");
        init(&ca, "test CA", time::Duration::days(1)).expect("CA");
        let now = time::OffsetDateTime::now_utc();
        let request = IssueRequest {
            dept: DeptId::new("ministry").expect("dept"),
            role,
            name: "signer".into(),
            dns_names: Vec::new(),
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(1),
        };
        let (cert, key) = (dir.join("signer.pem"), dir.join("signer.key"));
        issue(&ca, &request, &cert, &key).expect("issued");
        let signer =
            ferry_control::keys::CertSigner(ferry_net::sign::DocumentSigner::load(&cert, &key).expect("key"));
        let receipt = build_receipt(
            ReceiptRequest {
                kind: ReceiptKind::PreCatalog,
                dataset: DatasetId::new("vehicles").expect("id"),
                name: "Vehicles".into(),
                provider: DeptId::new("ministry").expect("dept"),
                catalog_version: 1,
                schema_fingerprint: "ab".repeat(32),
                compliance: ComplianceSummary { passed: true, rules_checked: 8, checked_at_ms: 0 },
                registered_at_ms: 1_796_000_000_000,
                connected_at_ms: None,
            },
            1_796_000_000_000,
        )
        .expect("receipt");
        let file = dir.join("r.receipt.json");
        std::fs::write(&file, sign_receipt(&receipt, &signer).expect("signed")).expect("write");
        file
    }

    fn verify_status(file: &Path, dir: &Path) -> Option<ExitStatus> {
        let args = VerifyArgs {
            file: file.to_owned(),
            ca: dir.join("ca/ca.pem"),
            crl: Some(dir.join("ca/crl.pem")),
            json: false,
        };
        verify(&args).err().map(|e| e.chain().find_map(ferry_client::control::exit_status).expect("a status"))
    }

    #[test]
    fn a_receipt_of_the_control_key_verifies_and_a_changed_or_other_one_does_not() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = signed_receipt(dir.path(), Role::Control);
        assert_eq!(verify_status(&file, dir.path()), None);
        let text = std::fs::read_to_string(&file).expect("read");
        std::fs::write(&file, text.replacen("vehicles", "vehicleZ", 1)).expect("write");
        assert_eq!(verify_status(&file, dir.path()), Some(ExitStatus::Failed));
        std::fs::write(&file, "{\"format\": \"something else\"}").expect("write");
        assert_eq!(verify_status(&file, dir.path()), Some(ExitStatus::Failed));

        let other = tempfile::tempdir().expect("temp dir");
        let by_operator = signed_receipt(other.path(), Role::Operator);
        assert_eq!(verify_status(&by_operator, other.path()), Some(ExitStatus::Failed));
    }
}
