//! Receipt tests: the Art. 20 issuing rules, round trips through the file and the store (on
//! SQLite and PostgreSQL), tampered and foreign receipts refused, and the renderings.

use super::*;
use crate::signing::KeyPairSigner;
use crate::test_db::{TestDb, on_both_backends};

/// 2026-12-06 00:00:00 UTC.
const DEC_6: i64 = 1_796_515_200_000;
const DAY: i64 = 86_400_000;

fn request(kind: ReceiptKind) -> ReceiptRequest {
    ReceiptRequest {
        kind,
        dataset: DatasetId::new("bus-routes").expect("id"),
        name: "公交线路 Bus routes".into(),
        provider: DeptId::new("gd-transport").expect("dept"),
        catalog_version: 3,
        schema_fingerprint: "ab".repeat(32),
        compliance: ComplianceSummary { passed: true, rules_checked: 11, checked_at_ms: DEC_6 },
        registered_at_ms: DEC_6,
        connected_at_ms: Some(DEC_6 + 10 * DAY),
    }
}

fn book(db: &TestDb) -> (ReceiptBook, Arc<KeyPairSigner>) {
    let signer = Arc::new(KeyPairSigner::generate().expect("key"));
    (ReceiptBook::new(db.pool.clone(), signer.clone()), signer)
}

on_both_backends!(issued_receipt_round_trips_through_file_and_store, a_receipt_is_issued_once);

async fn issued_receipt_round_trips_through_file_and_store(db: TestDb) {
    let (book, signer) = book(&db);
    let pre = book.issue(request(ReceiptKind::PreCatalog), DEC_6 + 1).await.expect("pre");
    let formal = book.issue(request(ReceiptKind::Formal), DEC_6 + 11 * DAY).await.expect("formal");
    let verified = verify_receipt(formal.file.as_bytes(), &signer.verifier()).expect("verify");
    assert_eq!(verified.receipt, formal.receipt);
    assert_eq!(book.receipt(&formal.receipt.id).await.expect("by id"), formal);
    let all = book.receipts(&DatasetId::new("bus-routes").expect("id")).await.expect("by dataset");
    assert_eq!(all, vec![pre, formal]);
    let missing = book.receipt(&ReceiptId::from_user("formal-nothing-c1")).await;
    assert!(matches!(missing, Err(ReceiptError::NotFound { .. })), "{missing:?}");
}

async fn a_receipt_is_issued_once(db: TestDb) {
    let (book, _) = book(&db);
    book.issue(request(ReceiptKind::PreCatalog), DEC_6).await.expect("first");
    let again = book.issue(request(ReceiptKind::PreCatalog), DEC_6 + 1).await;
    assert!(
        matches!(&again, Err(ReceiptError::AlreadyIssued { id }) if id.as_str() == "pre-catalog-bus-routes-c3"),
        "{again:?}"
    );
}

fn signed(kind: ReceiptKind) -> (String, KeyPairSigner) {
    let signer = KeyPairSigner::generate().expect("key");
    let receipt = build_receipt(request(kind), DEC_6 + 11 * DAY).expect("receipt");
    (sign_receipt(&receipt, &signer).expect("sign"), signer)
}

#[test]
fn formal_receipt_records_connection_and_deadline() {
    let receipt = build_receipt(request(ReceiptKind::Formal), DEC_6 + 11 * DAY).expect("receipt");
    assert_eq!(receipt.connected_at_ms, Some(DEC_6 + 10 * DAY));
    // 2026-12-06 + 6 months = 2027-06-06.
    assert_eq!(receipt.connection_deadline_ms, Some(DEC_6 + 182 * DAY));
    assert_eq!(receipt.connected_in_time(), Some(true));
    let pre = build_receipt(request(ReceiptKind::PreCatalog), DEC_6).expect("receipt");
    assert_eq!((pre.connected_at_ms, pre.connection_deadline_ms), (None, None));
}

#[test]
fn formal_receipt_needs_connected_data() {
    let mut unconnected = request(ReceiptKind::Formal);
    unconnected.connected_at_ms = None;
    assert!(matches!(build_receipt(unconnected.clone(), DEC_6), Err(ReceiptError::NotConnected { .. })));
    unconnected.kind = ReceiptKind::PreCatalog;
    assert!(build_receipt(unconnected, DEC_6).is_ok(), "a pre-catalog receipt needs no data");
}

#[test]
fn no_receipt_without_passing_compliance() {
    for kind in [ReceiptKind::PreCatalog, ReceiptKind::Formal] {
        let mut failed = request(kind);
        failed.compliance.passed = false;
        assert!(matches!(build_receipt(failed, DEC_6), Err(ReceiptError::ComplianceNotPassed { .. })));
    }
}

#[test]
fn bad_fingerprint_or_name_is_refused() {
    let mut bad = request(ReceiptKind::PreCatalog);
    bad.schema_fingerprint = "AB".repeat(32);
    assert!(matches!(
        build_receipt(bad, DEC_6),
        Err(ReceiptError::InvalidField { field: "schema fingerprint", .. })
    ));
    let mut bad = request(ReceiptKind::PreCatalog);
    bad.name = String::new();
    assert!(matches!(build_receipt(bad, DEC_6), Err(ReceiptError::InvalidField { field: "name", .. })));
}

#[test]
fn tampered_receipt_is_refused() {
    let (file, signer) = signed(ReceiptKind::Formal);
    let tampered = file.replace("gd-transport", "zj-transport");
    assert_ne!(tampered, file);
    let result = verify_receipt(tampered.as_bytes(), &signer.verifier());
    assert!(matches!(result, Err(ReceiptError::Signature(SigningError::BadSignature))), "{result:?}");
}

#[test]
fn receipt_signed_by_another_key_is_refused() {
    let (file, _) = signed(ReceiptKind::PreCatalog);
    let stranger = KeyPairSigner::generate().expect("key");
    let result = verify_receipt(file.as_bytes(), &stranger.verifier());
    assert!(matches!(result, Err(ReceiptError::Signature(_))), "{result:?}");
}

#[test]
fn malformed_files_are_refused_before_any_signature_check() {
    let signer = KeyPairSigner::generate().expect("key");
    let cases: [&[u8]; 3] =
        [b"not json", br#"{"format":"ferry-signed-receipt/1","extra":1}"#, &[b' '; MAX_RECEIPT_FILE + 1]];
    for case in cases {
        let result = verify_receipt(case, &signer.verifier());
        assert!(matches!(result, Err(ReceiptError::Malformed(_))), "{result:?}");
    }
}

#[test]
fn signed_body_with_unknown_fields_is_refused() {
    let signer = KeyPairSigner::generate().expect("key");
    let body = br#"{"format":"ferry-receipt/1","surprise":true}"#;
    let envelope = Envelope::from_signed(signer.sign(body).expect("sign")).expect("utf-8");
    let file = serde_json::to_vec(&envelope).expect("json");
    assert!(matches!(verify_receipt(&file, &signer.verifier()), Err(ReceiptError::Malformed(_))));
}

#[test]
fn text_rendering_is_bilingual_and_has_the_key_fields() {
    let (file, signer) = signed(ReceiptKind::Formal);
    let verified = verify_receipt(file.as_bytes(), &signer.verifier()).expect("verify");
    let text = render_verified_text(&verified);
    for expected in [
        "回执编号 Receipt id: formal-bus-routes-c3",
        "回执类型 Kind: 正式目录回执 formal catalog receipt",
        "数据集 Dataset: bus-routes",
        "名称 Name: 公交线路 Bus routes",
        "提供部门 Provider department: gd-transport",
        "目录版本 Catalog version: 3",
        "合规检查 Compliance check: 通过 passed, 11 项规则 rules",
        "登记时间 Registered at: 2026-12-06 00:00:00 UTC",
        "接入时间 Data connected at: 2026-12-16 00:00:00 UTC",
        "接入期限 Connection deadline: 2027-06-06 00:00:00 UTC (按期接入 connected in time)",
        "签发方 Issuer: 交通运输部",
        "签名 Signature: 有效 valid, 签名者 signed by ed25519 key",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn json_rendering_carries_the_receipt_fields() {
    let (file, signer) = signed(ReceiptKind::PreCatalog);
    let verified = verify_receipt(file.as_bytes(), &signer.verifier()).expect("verify");
    let json: serde_json::Value = serde_json::from_str(&render_verified_json(&verified)).expect("json");
    assert_eq!(json["receipt"]["id"], "pre-catalog-bus-routes-c3");
    assert_eq!(json["receipt"]["kind"], "pre-catalog");
    assert_eq!(json["receipt"]["provider"], "gd-transport");
    assert_eq!(json["receipt"]["connection-deadline-ms"], serde_json::Value::Null);
    assert!(json["signer"].as_str().expect("signer").starts_with("ed25519 key"));
    let plain: Receipt = serde_json::from_str(&render_json(&verified.receipt)).expect("receipt json");
    assert_eq!(plain, verified.receipt);
}
