//! Printing receipts: readable text with every line in Chinese and English, and JSON.
//!
//! Neighbours: [`super::document`] defines the receipt; the CLI's `ferry receipt show|verify`
//! prints what these return.

use super::VerifiedReceipt;
use super::document::{Receipt, utc};
use std::fmt::Write;

/// The receipt as text, one bilingual line per field (`数据集 Dataset: bus-routes`).
pub fn render_text(receipt: &Receipt) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        // Invariant: writing to a String cannot fail.
        let _ = writeln!(out, "{label}: {value}");
    };
    line("回执 Receipt", "交通运输政务数据目录回执 Transport government data catalog receipt");
    line("回执编号 Receipt id", receipt.id.as_str());
    line("回执类型 Kind", receipt.kind.bilingual());
    line("数据集 Dataset", receipt.dataset.as_str());
    line("名称 Name", &receipt.name);
    line("提供部门 Provider department", receipt.provider.as_str());
    line("目录版本 Catalog version", &receipt.catalog_version.to_string());
    line("信息项指纹 Schema fingerprint", &receipt.schema_fingerprint);
    let compliance = if receipt.compliance.passed { "通过 passed" } else { "未通过 failed" };
    let checked = format!(
        "{compliance}, {n} 项规则 rules, {at}",
        n = receipt.compliance.rules_checked,
        at = utc(receipt.compliance.checked_at_ms)
    );
    line("合规检查 Compliance check", &checked);
    line("登记时间 Registered at", &utc(receipt.registered_at_ms));
    if let Some(connected) = receipt.connected_at_ms {
        line("接入时间 Data connected at", &utc(connected));
    }
    if let Some(deadline) = receipt.connection_deadline_ms {
        let status = match receipt.connected_in_time() {
            Some(true) => " (按期接入 connected in time)",
            Some(false) => " (逾期接入 connected late)",
            None => "",
        };
        line("接入期限 Connection deadline", &format!("{}{status}", utc(deadline)));
    }
    line("签发方 Issuer", &receipt.issuer);
    line("签发时间 Issued at", &utc(receipt.issued_at_ms));
    out
}

/// A verified receipt as text: the receipt, then who signed it.
pub fn render_verified_text(verified: &VerifiedReceipt) -> String {
    let mut out = render_text(&verified.receipt);
    let _ = writeln!(out, "签名 Signature: 有效 valid, 签名者 signed by {}", verified.signer);
    out
}

/// The receipt as pretty JSON (the fields of the signed body).
pub fn render_json(receipt: &Receipt) -> String {
    // Invariant: a Receipt is plain data with string keys; it always serializes.
    serde_json::to_string_pretty(receipt).expect("receipt serializes")
}

/// A verified receipt as JSON: `{"receipt": …, "signer": …}`.
pub fn render_verified_json(verified: &VerifiedReceipt) -> String {
    let value = serde_json::json!({ "receipt": verified.receipt, "signer": verified.signer });
    // Invariant: as above.
    serde_json::to_string_pretty(&value).expect("receipt serializes")
}
