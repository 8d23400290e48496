//! The receipt document (Art. 20) and its signed envelope: what a receipt says, the rules for
//! issuing one, and the bytes that travel as a receipt file.
//!
//! Neighbours: [`crate::receipt`] issues, stores and verifies; [`super::render`] prints.

use crate::signing::SignedBlob;
use ferry_proto::{DatasetId, DeptId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `format` of a receipt body.
pub const RECEIPT_FORMAT: &str = "ferry-receipt/1";
/// `format` of a signed receipt file.
pub const ENVELOPE_FORMAT: &str = "ferry-signed-receipt/1";
/// Largest receipt file accepted, in bytes.
pub const MAX_RECEIPT_FILE: usize = 64 * 1024;
/// Longest dataset name in a receipt, in bytes.
pub const MAX_NAME_LEN: usize = 512;
/// Months between a formal registration and the deadline for connecting data (Art. 20).
pub const CONNECTION_MONTHS: u8 = 6;
/// Who issues receipts.
pub const ISSUER: &str = "交通运输部政务数据共享平台 Ministry of Transport government data sharing platform";

/// Which receipt (Art. 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptKind {
    /// 预编目录回执: a pre-registration (system in approval) passed the compliance check.
    PreCatalog,
    /// 正式目录回执: the formal entry passed and data is connected.
    Formal,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreCatalog => "pre-catalog",
            Self::Formal => "formal",
        }
    }

    /// The kind in both languages, for rendering.
    pub fn bilingual(self) -> &'static str {
        match self {
            Self::PreCatalog => "预编目录回执 pre-catalog receipt",
            Self::Formal => "正式目录回执 formal catalog receipt",
        }
    }
}

/// A receipt's id: `<kind>-<dataset>-c<catalog version>`, one per kind, dataset and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReceiptId(String);

impl ReceiptId {
    pub fn for_receipt(kind: ReceiptKind, dataset: &DatasetId, catalog_version: u64) -> Self {
        Self(format!("{}-{}-c{catalog_version}", kind.as_str(), dataset))
    }

    /// An id as given by a user (looked up, never trusted to be well formed).
    pub fn from_user(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReceiptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// What the compliance check said of the registered entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ComplianceSummary {
    pub passed: bool,
    /// How many named rules ran.
    pub rules_checked: u32,
    pub checked_at_ms: i64,
}

/// A receipt: what the platform attests about a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Receipt {
    pub format: String,
    pub id: ReceiptId,
    pub kind: ReceiptKind,
    pub dataset: DatasetId,
    pub name: String,
    pub provider: DeptId,
    pub catalog_version: u64,
    /// Lowercase hex schema fingerprint of the catalog version's information items.
    pub schema_fingerprint: String,
    pub compliance: ComplianceSummary,
    /// When the entry (pre-catalog or formal) was registered, unix ms.
    pub registered_at_ms: i64,
    /// Formal only: when the first version was published.
    pub connected_at_ms: Option<i64>,
    /// Formal only: registration + 6 months, by which data must be connected.
    pub connection_deadline_ms: Option<i64>,
    pub issuer: String,
    pub issued_at_ms: i64,
}

impl Receipt {
    /// Whether data was connected by the deadline (formal receipts).
    pub fn connected_in_time(&self) -> Option<bool> {
        Some(self.connected_at_ms? <= self.connection_deadline_ms?)
    }
}

/// The receipt file: the receipt body exactly as signed (a JSON text inside JSON, so the file
/// stays readable), the signature and the signer's certificate chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Envelope {
    pub format: String,
    pub receipt: String,
    #[serde(with = "crate::signing::hex_bytes")]
    pub signature: Vec<u8>,
    #[serde(with = "crate::signing::hex_list")]
    pub signer_chain: Vec<Vec<u8>>,
}

impl Envelope {
    /// Wraps a signed receipt body; `None` if the body is not UTF-8 (it always is: JSON).
    pub fn from_signed(signed: SignedBlob) -> Option<Self> {
        Some(Self {
            format: ENVELOPE_FORMAT.into(),
            receipt: String::from_utf8(signed.body).ok()?,
            signature: signed.signature,
            signer_chain: signed.signer_chain,
        })
    }

    pub fn to_signed(&self) -> SignedBlob {
        SignedBlob {
            body: self.receipt.as_bytes().to_vec(),
            signature: self.signature.clone(),
            signer_chain: self.signer_chain.clone(),
        }
    }
}

/// The connection deadline for an entry registered at `registered_at_ms`: the same day and time
/// [`CONNECTION_MONTHS`] calendar months later (the month's last day if it is shorter).
pub fn connection_deadline(registered_at_ms: i64) -> Option<i64> {
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(registered_at_ms) * 1_000_000).ok()?;
    let months = u8::from(at.month()) - 1 + CONNECTION_MONTHS;
    let year = at.year() + i32::from(months / 12);
    let month = time::Month::try_from(months % 12 + 1).ok()?;
    let day = at.day().min(month.length(year));
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let deadline = at.replace_date(date);
    i64::try_from(deadline.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Unix ms as `2026-12-06 06:00:00 UTC` (the raw number if out of range).
pub fn utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn ms(y: i32, m: u8, d: u8) -> i64 {
        let date =
            time::Date::from_calendar_date(y, time::Month::try_from(m).expect("month"), d).expect("date");
        (date.midnight().assume_utc().unix_timestamp()) * 1000
    }

    #[test]
    fn deadline_is_six_calendar_months_later() {
        assert_eq!(connection_deadline(ms(2026, 1, 15) + 3_600_000), Some(ms(2026, 7, 15) + 3_600_000));
        assert_eq!(connection_deadline(ms(2026, 9, 30)), Some(ms(2027, 3, 30)));
        // 31 August + 6 months: February has no 31st; its last day.
        assert_eq!(connection_deadline(ms(2026, 8, 31)), Some(ms(2027, 2, 28)));
        assert_eq!(connection_deadline(ms(2027, 8, 31)), Some(ms(2028, 2, 29)));
        assert!(connection_deadline(ms(2026, 8, 31)).expect("deadline") - ms(2026, 8, 31) > 180 * DAY);
    }

    #[test]
    fn utc_renders_dates() {
        assert_eq!(utc(ms(2026, 12, 6) + 6 * 3_600_000 + 61_000), "2026-12-06 06:01:01 UTC");
    }

    #[test]
    fn ids_name_kind_dataset_and_version() {
        let dataset = DatasetId::new("bus-routes").expect("id");
        assert_eq!(ReceiptId::for_receipt(ReceiptKind::Formal, &dataset, 3).as_str(), "formal-bus-routes-c3");
        assert_eq!(
            ReceiptId::for_receipt(ReceiptKind::PreCatalog, &dataset, 1).as_str(),
            "pre-catalog-bus-routes-c1"
        );
    }
}
