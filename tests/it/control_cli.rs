//! The `ferry` control-plane commands' library paths (`ferry_client::control`) against an
//! in-process ministry node running the control plane: a pre-catalog registration whose
//! receipt is written and verified off line with only the CA certificate, refusals with the
//! exit status each command gives (compliance 3, forbidden 5), catalog show, history, diff and
//! list as the commands print them, notices, and the audit log shown and verified.

use ferry_client::conn::Session;
use ferry_client::control::view::{self, AuditLine, Diff, Entry, Listed, Notice, ReceiptFile, Registration};
use ferry_client::control::view::{Verification, VersionLine};
use ferry_client::control::{
    ControlCallError, ControlRequest, ExitStatus, call, receipt_verifier, render, save_receipt,
    verify_receipt,
};
use ferry_proto::{DatasetId, DeptId, Role};
use ferry_testkit::{NodeSpec, TestNode, TestPki, connect};

/// The demo's catalog entry (provider `ministry`, base data, unconditional, formal).
const ENTRY: &str = include_str!("../../deploy/catalog/vehicle-registry.toml");

fn dataset() -> DatasetId {
    DatasetId::new("vehicle-registry").expect("id")
}

/// A ministry node with the control plane; technical support is its own department.
async fn ministry(pki: &TestPki) -> TestNode {
    let control = pki.issue("control", "ministry", Role::Control);
    let extra = format!(
        "\n[control]\nsigning-cert = {:?}\nsigning-key = {:?}\nst-authority = \"st\"\n",
        control.cert, control.key
    );
    TestNode::start(pki, NodeSpec { extra: &extra, ..NodeSpec::new("ministry", Role::Ministry) }).await
}

async fn register(session: &Session, document: String) -> Result<Registration, ControlCallError> {
    let value = call(session, &ControlRequest::CatalogRegister { document, effective_from: None }).await?;
    Ok(view::parse(value).expect("a registration answer"))
}

/// One call that must succeed; its value, for `view::parse` into the type the command reads.
async fn ask(session: &Session, request: ControlRequest) -> serde_json::Value {
    call(session, &request).await.unwrap_or_else(|e| panic!("{}: {e}", request.op()))
}

#[tokio::test]
async fn a_registration_gives_a_receipt_that_verifies_off_line() {
    let pki = TestPki::new();
    let node = ministry(&pki).await;
    let session = node.operator_session().await;
    let pre_catalog = ENTRY.replace("stage = \"formal\"", "stage = \"pre-catalog\"");
    let registration = register(&session, pre_catalog).await.expect("registered");
    let text = render::registration(&registration);
    assert!(text.starts_with("registered vehicle-registry, catalog version 1\n"), "{text}");
    assert_eq!(registration.receipts.len(), 1, "a pre-catalog receipt is issued at once");

    let out = tempfile::tempdir().expect("temp dir");
    let issued = &registration.receipts[0];
    let path = save_receipt(out.path(), issued.receipt.id.as_str(), &issued.file).expect("written");
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("pre-catalog-vehicle-registry-c1.receipt.json")
    );
    let verifier = receipt_verifier(&pki.ca(), Some(&pki.crl())).expect("CA");
    let verified = verify_receipt(&std::fs::read(&path).expect("read"), &verifier).expect("genuine");
    assert_eq!(verified.receipt.dataset, dataset());
    assert_eq!(verified.receipt.catalog_version, 1);

    let forged =
        std::fs::read_to_string(&path).expect("read").replacen("vehicle-registry", "vehicle-registrx", 1);
    assert!(verify_receipt(forged.as_bytes(), &verifier).is_err(), "an altered receipt is refused");

    let receipts: Vec<ReceiptFile> =
        view::parse(ask(&session, ControlRequest::Receipts { dataset: dataset() }).await)
            .expect("answer shape");
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].receipt.id, issued.receipt.id);
}

#[tokio::test]
async fn refusals_exit_with_their_own_status() {
    let pki = TestPki::new();
    let node = ministry(&pki).await;

    // Base data shared on conditions: C002 (and C003, no conditions stated).
    let conditional = ENTRY.replace("share-type = \"unconditional\"", "share-type = \"conditional\"");
    let refused = register(&node.operator_session().await, conditional).await.expect_err("refused");
    assert_eq!(refused.exit_status(), ExitStatus::ComplianceFailed);
    let api = refused.api_error().expect("a refusal");
    let details = render::refusal_details(api).expect("violations");
    assert!(details.contains("C002 base-data-unconditional"), "{details}");
    assert!(render::refusal_summary(api).starts_with("refused: the compliance check failed"));

    // Another department's operator may not register the ministry's entry.
    let zhejiang = pki.issue("zhejiang-ops", "zhejiang", Role::Operator);
    let session = connect(&zhejiang, node.node_addr()).await;
    let refused = register(&session, ENTRY.to_owned()).await.expect_err("forbidden");
    assert_eq!(refused.exit_status(), ExitStatus::Forbidden, "{refused}");
    assert_eq!(refused.exit_status().code(), 5);

    // And may not read the audit log.
    let refused = call(&session, &ControlRequest::AuditVerify {}).await.expect_err("forbidden");
    assert_eq!(refused.exit_status(), ExitStatus::Forbidden);
    let missing = call(&session, &ControlRequest::CatalogShow { dataset: dataset(), version: None }).await;
    assert_eq!(missing.expect_err("nothing registered").exit_status(), ExitStatus::NotFound);
}

#[tokio::test]
async fn the_catalog_history_diff_list_notices_and_audit_read_as_the_commands_print_them() {
    let pki = TestPki::new();
    let node = ministry(&pki).await;
    let session = node.operator_session().await;
    let pre_catalog = ENTRY.replace("stage = \"formal\"", "stage = \"pre-catalog\"");
    register(&session, pre_catalog).await.expect("version 1");
    let formal = register(&session, ENTRY.to_owned()).await.expect("version 2");
    assert_eq!(formal.registered.catalog_version, 2);
    assert!(!formal.registered.items_changed);
    assert!(formal.registered.connection_deadline.is_some(), "a formal entry has a connection deadline");

    let history: Vec<VersionLine> =
        view::parse(ask(&session, ControlRequest::CatalogHistory { dataset: dataset() }).await)
            .expect("answer shape");
    let table = render::history("vehicle-registry", &history);
    assert!(table.starts_with("vehicle-registry: 2 catalog versions\nVERSION"), "{table}");
    assert_eq!(history.iter().map(|v| v.stage.as_str()).collect::<Vec<_>>(), ["pre-catalog", "formal"]);

    let first: Entry = view::parse(
        ask(&session, ControlRequest::CatalogShow { dataset: dataset(), version: Some(1) }).await,
    )
    .expect("answer shape");
    assert!(render::entry(&first).contains("stage = \"pre-catalog\""));
    let diff: Diff =
        view::parse(ask(&session, ControlRequest::CatalogDiff { dataset: dataset(), from: 1, to: 2 }).await)
            .expect("answer shape");
    let text = render::diff(&diff);
    assert!(text.contains("catalog.stage: \"pre-catalog\" -> \"formal\""), "{text}");

    let listed: Vec<Listed> =
        view::parse(ask(&session, ControlRequest::CatalogList {}).await).expect("answer shape");
    assert!(render::list(&listed).contains("vehicle-registry"));
    assert_eq!(listed.iter().find(|l| l.dataset == "vehicle-registry").map(|l| l.latest_version), Some(2));
    let notices: Vec<Notice> =
        view::parse(ask(&session, ControlRequest::Notices {}).await).expect("answer shape");
    assert_eq!(render::notices(&notices), "no change notices for your department\n");

    let request = ControlRequest::AuditShow {
        dataset: Some(dataset()),
        department: Some(DeptId::new("ministry").expect("dept")),
        since: None,
        until: None,
        limit: Some(50),
    };
    let entries: Vec<AuditLine> = view::parse(ask(&session, request).await).expect("answer shape");
    assert!(entries.iter().any(|e| e.kind == "registration"), "{}", render::audit_entries(&entries));
    let report: Verification =
        view::parse(ask(&session, ControlRequest::AuditVerify {}).await).expect("answer shape");
    assert!(report.is_intact(), "{}", render::verification(&report));
    assert!(render::verification(&report).starts_with("audit log intact"));
}
