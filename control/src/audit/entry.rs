//! Audit entries: what is recorded, its limits, and the canonical encoding its hash covers.
//!
//! The hash is computed over the *stored text* of each field ([`RawEntry`]), so a verifier
//! checks exactly what is on disk, including rows a newer version wrote with kinds this one
//! does not know. See the module doc of [`crate::audit`] for the encoding.

use ferry_proto::{DatasetId, DeptId, Principal, Role};
use serde::Serialize;
use std::fmt;

/// Domain tag that opens every entry's hashed encoding.
pub const ENTRY_DOMAIN: &str = "ferry/audit-entry/v1";
/// `prev_hash` of the first entry.
pub const GENESIS_HASH: EntryHash = EntryHash([0; 32]);
/// Longest actor name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest certificate serial, in bytes (hex).
pub const MAX_SERIAL_LEN: usize = 128;
/// Longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 2048;
/// Longest detail (compact JSON text), in bytes.
pub const MAX_DETAIL_LEN: usize = 16 * 1024;

/// A BLAKE3 hash linking the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.to_hex())
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.to_hex())
    }
}

macro_rules! stable_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant,)+];

            /// The stored string; never changes once released.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

stable_enum!(
    /// What happened. The strings are stored and hashed: add variants, never rename one.
    EntryKind {
        /// A catalog entry was registered (pre-catalog or formal).
        Registration = "registration",
        /// The automatic compliance check ran on a catalog document.
        ComplianceResult = "compliance-result",
        /// A new catalog version of an entry was made.
        CatalogChange = "catalog-change",
        PublishAccepted = "publish-accepted",
        PublishRefused = "publish-refused",
        ReadAllowed = "read-allowed",
        ReadDenied = "read-denied",
        /// A node installed a policy snapshot.
        SnapshotInstalled = "snapshot-installed",
        /// A node refused a policy snapshot (bad signature, other key, rollback).
        SnapshotRefused = "snapshot-refused",
        /// A dataset version finished moving between nodes.
        TransferCompleted = "transfer-completed",
        /// A receipt was issued (Art. 20).
        ReceiptIssued = "receipt-issued",
        /// A grant was revoked (by its provider, technical support, or for disuse), or a
        /// revocation was refused.
        GrantRevoked = "grant-revoked",
        /// The disuse sweep flagged a grant unused for 3 months and warned its holder, or a
        /// use cleared the flag (Art. 17).
        GrantDisuse = "grant-disuse",
        /// A holder gave feedback on a grant (Art. 17), or was refused.
        GrantFeedback = "grant-feedback",
        /// A quality issue was filed against a version or answered by its provider (Art. 15).
        QualityIssue = "quality-issue",
        /// The S&T authority issued or closed a rectification notice (Art. 19, 23, 24).
        RectificationNotice = "rectification-notice",
        /// A department applied for a dataset (Art. 12).
        ApplicationSubmitted = "application-submitted",
        /// A step of an application's review: first review, material asked for or supplied,
        /// the decision (or the immediate refusal of not-shared data).
        ApplicationReviewed = "application-reviewed",
        /// A grant was made on an approved application (Art. 16).
        GrantIssued = "grant-issued",
        /// A provider delegated its reviews to technical support, or took them back (Art. 14).
        ReviewDelegation = "review-delegation",
    }
);

stable_enum!(
    /// Whether the recorded action went through.
    Outcome {
        /// Allowed, accepted, passed, installed or completed.
        Accepted = "accepted",
        /// Denied, refused or failed; the entry's reason says why.
        Refused = "refused",
    }
);

/// Who acted: the identity a verified certificate stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub department: DeptId,
    pub role: Role,
    /// Certificate subject name (node, person or key).
    pub name: String,
    /// Certificate serial, lowercase hex.
    pub cert_serial: String,
}

impl From<&Principal> for Actor {
    /// The identity a verified certificate stands for (its fingerprint is not recorded: the
    /// serial names the certificate under the one ministry CA).
    fn from(principal: &Principal) -> Self {
        Self {
            department: principal.dept.clone(),
            role: principal.role,
            name: principal.name.clone(),
            cert_serial: principal.serial.clone(),
        }
    }
}

/// An entry to append; the log assigns its sequence number and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// Unix time in milliseconds, as the caller's clock read it.
    pub time_ms: i64,
    pub kind: EntryKind,
    pub actor: Actor,
    pub dataset: Option<DatasetId>,
    pub outcome: Outcome,
    /// Why (mandatory in practice for a refusal); empty when there is nothing to add.
    pub reason: String,
    /// Structured facts (catalog version, rule codes, byte counts). At most
    /// [`MAX_DETAIL_LEN`] bytes as compact JSON.
    pub detail: serde_json::Value,
}

/// An entry as appended: its place in the chain and both hashes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: i64,
    pub kind: EntryKind,
    pub actor: Actor,
    pub dataset: Option<DatasetId>,
    pub outcome: Outcome,
    pub reason: String,
    pub detail: serde_json::Value,
    #[serde(serialize_with = "hex_hash")]
    pub prev_hash: EntryHash,
    #[serde(serialize_with = "hex_hash")]
    pub hash: EntryHash,
}

fn hex_hash<S: serde::Serializer>(hash: &EntryHash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hash.to_hex())
}

/// Why an entry was refused before it touched the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{field} is {len} bytes, more than the {max} allowed")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("the detail must be a JSON object")]
    DetailNotAnObject,
}

/// One stored row, every field as the database holds it. The hash covers these strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: i64,
    pub time_ms: i64,
    pub kind: String,
    pub actor_dept: String,
    pub actor_role: String,
    pub actor_name: String,
    pub actor_serial: String,
    pub dataset: Option<String>,
    pub outcome: String,
    pub reason: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl NewEntry {
    /// Checks the bounds (what [`Self::to_raw`] would refuse).
    pub fn validate(&self) -> Result<(), EntryError> {
        self.checked_detail().map(drop)
    }

    /// Checks the bounds; returns the detail as the compact JSON text to store.
    fn checked_detail(&self) -> Result<String, EntryError> {
        bounded("actor name", &self.actor.name, MAX_NAME_LEN)?;
        bounded("certificate serial", &self.actor.cert_serial, MAX_SERIAL_LEN)?;
        bounded("reason", &self.reason, MAX_REASON_LEN)?;
        if !self.detail.is_object() {
            return Err(EntryError::DetailNotAnObject);
        }
        let detail = self.detail.to_string();
        bounded("detail", &detail, MAX_DETAIL_LEN)?;
        Ok(detail)
    }

    /// Checks the bounds and returns the row to store at `seq` after `prev`.
    pub fn to_raw(&self, seq: u64, prev: EntryHash) -> Result<RawEntry, EntryError> {
        let detail = self.checked_detail()?;
        let mut raw = RawEntry {
            // Sequence numbers come from the log, which counts from 1 and stays far below 2^63.
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            time_ms: self.time_ms,
            kind: self.kind.as_str().to_owned(),
            actor_dept: self.actor.department.as_str().to_owned(),
            actor_role: self.actor.role.as_str().to_owned(),
            actor_name: self.actor.name.clone(),
            actor_serial: self.actor.cert_serial.clone(),
            dataset: self.dataset.as_ref().map(|d| d.as_str().to_owned()),
            outcome: self.outcome.as_str().to_owned(),
            reason: self.reason.clone(),
            detail,
            prev_hash: prev.to_hex(),
            hash: String::new(),
        };
        raw.hash = entry_hash(&raw, prev).to_hex();
        Ok(raw)
    }
}

/// `detail` made fit for an entry: an object within [`MAX_DETAIL_LEN`] as it is; another value
/// that fits as `{"value": …}`; anything larger as its top-level fields that fit, in order,
/// plus `"detail-truncated": <its size in bytes>`. For callers that record documents of
/// unbounded size (a compliance report) and must not lose the entry over it.
pub fn bounded_detail(detail: serde_json::Value) -> serde_json::Value {
    let size = detail.to_string().len();
    // Room for the wrapper's own key and braces.
    let room = MAX_DETAIL_LEN - 64;
    match detail {
        serde_json::Value::Object(_) if size <= MAX_DETAIL_LEN => detail,
        other if size <= room => serde_json::json!({ "value": other }),
        other => {
            let mut kept = serde_json::Map::new();
            kept.insert("detail-truncated".into(), size.into());
            let mut used = 64;
            if let serde_json::Value::Object(fields) = other {
                for (key, value) in fields {
                    let field_size = key.len() + value.to_string().len() + 4;
                    if used + field_size <= room {
                        used += field_size;
                        kept.insert(key, value);
                    }
                }
            }
            serde_json::Value::Object(kept)
        }
    }
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), EntryError> {
    if value.len() > max { Err(EntryError::TooLong { field, len: value.len(), max }) } else { Ok(()) }
}

/// Appends `u32` big-endian length, then the bytes.
fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Stored fields are bounded far below 4 GiB; a longer one saturates (and cannot verify).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The canonical encoding of an entry (everything but its own hash), given the decoded
/// previous hash. Documented in [`crate::audit`].
pub fn canonical_encoding(raw: &RawEntry, prev: EntryHash) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + raw.detail.len());
    put_field(&mut out, ENTRY_DOMAIN.as_bytes());
    out.extend_from_slice(&prev.0);
    out.extend_from_slice(&raw.seq.to_be_bytes());
    out.extend_from_slice(&raw.time_ms.to_be_bytes());
    for field in [&raw.kind, &raw.actor_dept, &raw.actor_role, &raw.actor_name, &raw.actor_serial] {
        put_field(&mut out, field.as_bytes());
    }
    match &raw.dataset {
        None => out.push(0),
        Some(dataset) => {
            out.push(1);
            put_field(&mut out, dataset.as_bytes());
        }
    }
    for field in [&raw.outcome, &raw.reason, &raw.detail] {
        put_field(&mut out, field.as_bytes());
    }
    out
}

/// BLAKE3 of [`canonical_encoding`].
pub fn entry_hash(raw: &RawEntry, prev: EntryHash) -> EntryHash {
    EntryHash(*blake3::hash(&canonical_encoding(raw, prev)).as_bytes())
}

/// Why a stored row could not be read back as an [`AuditEntry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq} is unreadable: {what}")]
pub struct CorruptEntry {
    pub seq: i64,
    pub what: String,
}

impl RawEntry {
    /// Parses the stored strings back into typed fields (does not check the chain).
    pub fn parse(&self) -> Result<AuditEntry, CorruptEntry> {
        let bad = |what: String| CorruptEntry { seq: self.seq, what };
        let hash = |text: &str, name: &str| {
            EntryHash::from_hex(text).ok_or_else(|| bad(format!("{name} is not a hash")))
        };
        Ok(AuditEntry {
            seq: u64::try_from(self.seq).map_err(|_| bad("negative sequence number".into()))?,
            time_ms: self.time_ms,
            kind: EntryKind::parse(&self.kind).ok_or_else(|| bad(format!("unknown kind {:?}", self.kind)))?,
            actor: Actor {
                department: DeptId::new(self.actor_dept.clone()).map_err(|e| bad(e.to_string()))?,
                role: self.actor_role.parse().map_err(|e: ferry_proto::IdError| bad(e.to_string()))?,
                name: self.actor_name.clone(),
                cert_serial: self.actor_serial.clone(),
            },
            dataset: match &self.dataset {
                None => None,
                Some(d) => Some(DatasetId::new(d.clone()).map_err(|e| bad(e.to_string()))?),
            },
            outcome: Outcome::parse(&self.outcome)
                .ok_or_else(|| bad(format!("unknown outcome {:?}", self.outcome)))?,
            reason: self.reason.clone(),
            detail: serde_json::from_str(&self.detail).map_err(|e| bad(format!("detail: {e}")))?,
            prev_hash: hash(&self.prev_hash, "prev_hash")?,
            hash: hash(&self.hash, "hash")?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(time_ms: i64, dataset: Option<&str>) -> NewEntry {
        NewEntry {
            time_ms,
            kind: EntryKind::PublishAccepted,
            actor: Actor {
                department: DeptId::new("gd-transport").expect("dept"),
                role: Role::Province,
                name: "gd-node".into(),
                cert_serial: "7f01".into(),
            },
            dataset: dataset.map(|d| DatasetId::new(d).expect("dataset")),
            outcome: Outcome::Accepted,
            reason: String::new(),
            detail: serde_json::json!({"version": 3}),
        }
    }

    #[test]
    fn encoding_is_pinned() {
        let raw = sample(1_700_000_000_000, Some("bus-routes")).to_raw(1, GENESIS_HASH).expect("raw");
        let enc = canonical_encoding(&raw, GENESIS_HASH);
        let mut expected = Vec::new();
        expected.extend_from_slice(&20u32.to_be_bytes());
        expected.extend_from_slice(b"ferry/audit-entry/v1");
        expected.extend_from_slice(&[0; 32]);
        expected.extend_from_slice(&1i64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        for field in ["publish-accepted", "gd-transport", "province", "gd-node", "7f01"] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        expected.push(1);
        expected.extend_from_slice(&10u32.to_be_bytes());
        expected.extend_from_slice(b"bus-routes");
        for field in ["accepted", "", r#"{"version":3}"#] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(enc, expected);
        assert_eq!(raw.hash, blake3::hash(&expected).to_hex().as_str());
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        let mut a = sample(1, None);
        a.actor.name = "ab".into();
        a.actor.cert_serial = "c".into();
        let mut b = a.clone();
        b.actor.name = "a".into();
        b.actor.cert_serial = "bc".into();
        let ha = a.to_raw(1, GENESIS_HASH).expect("a").hash;
        let hb = b.to_raw(1, GENESIS_HASH).expect("b").hash;
        assert_ne!(ha, hb);
    }

    #[test]
    fn absent_and_empty_dataset_hash_differently() {
        let none = sample(1, None).to_raw(1, GENESIS_HASH).expect("none");
        let mut empty = none.clone();
        empty.dataset = Some(String::new());
        assert_ne!(entry_hash(&none, GENESIS_HASH), entry_hash(&empty, GENESIS_HASH));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut entry = sample(1, None);
        entry.detail = serde_json::json!({"blob": "x".repeat(MAX_DETAIL_LEN)});
        assert!(matches!(entry.to_raw(1, GENESIS_HASH), Err(EntryError::TooLong { field: "detail", .. })));
        let mut entry = sample(1, None);
        entry.detail = serde_json::json!([1]);
        assert_eq!(entry.to_raw(1, GENESIS_HASH), Err(EntryError::DetailNotAnObject));
    }

    #[test]
    fn bounded_detail_keeps_what_fits_and_says_what_was_cut() {
        let small = serde_json::json!({"rule": "art7-base-data"});
        assert_eq!(bounded_detail(small.clone()), small);
        assert_eq!(bounded_detail(serde_json::json!([1, 2])), serde_json::json!({"value": [1, 2]}));
        let big = serde_json::json!({"report": "x".repeat(2 * MAX_DETAIL_LEN), "rule": "art7-base-data"});
        let bounded = bounded_detail(big);
        assert_eq!(bounded["rule"], "art7-base-data");
        assert!(bounded.get("report").is_none());
        assert!(bounded["detail-truncated"].as_u64().expect("size") > 2 * MAX_DETAIL_LEN as u64);
        let mut entry = sample(1, None);
        entry.detail = bounded;
        assert!(entry.validate().is_ok());
        entry.detail = bounded_detail(serde_json::Value::String("y".repeat(3 * MAX_DETAIL_LEN)));
        assert!(entry.validate().is_ok());
    }

    #[test]
    fn stored_row_parses_back() {
        let new = sample(5, Some("bus-routes"));
        let raw = new.to_raw(9, GENESIS_HASH).expect("raw");
        let entry = raw.parse().expect("parse");
        assert_eq!(
            (entry.seq, entry.kind, entry.actor.clone(), entry.detail),
            (9, new.kind, new.actor, new.detail)
        );
    }

    #[test]
    fn actor_from_principal_keeps_department_role_name_and_serial() {
        let principal = Principal {
            dept: DeptId::new("ministry").expect("dept"),
            role: Role::Control,
            name: "control-plane".into(),
            serial: "0a1b".into(),
            fingerprint: "cd".repeat(32),
        };
        let actor = Actor::from(&principal);
        assert_eq!(
            (actor.department.as_str(), actor.role, actor.name.as_str(), actor.cert_serial.as_str()),
            ("ministry", Role::Control, "control-plane", "0a1b")
        );
    }

    #[test]
    fn kinds_have_distinct_stable_strings() {
        let mut seen = std::collections::HashSet::new();
        for kind in EntryKind::ALL {
            assert!(seen.insert(kind.as_str()));
            assert_eq!(EntryKind::parse(kind.as_str()), Some(*kind));
        }
    }
}
