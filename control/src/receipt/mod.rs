//! Catalog receipts (Art. 20): issued, stored, and verifiable off line by anyone.
//!
//! A **pre-catalog receipt** is issued when a pre-registration (a system in its approval phase)
//! passes the compliance check; a **formal catalog receipt** only when the formal entry passes
//! and data is connected (at least one version published), and it records the 6-month
//! connection deadline. A receipt is a JSON body signed by the control-plane key through a
//! [`BlobSigner`]; the receipt file ([`Envelope`]) carries the body exactly as signed, the
//! signature and the signer's certificate chain, so [`verify_receipt`] needs only a
//! [`BlobVerifier`] built from the ministry CA certificate — no database, no network.
//!
//! Issued receipts are kept in the `receipts` table (migration `0101_receipts.sql`), one per
//! kind, dataset and catalog version.
//!
//! Neighbours: [`crate::plane::ControlPlane::issue_due_receipts`] calls [`ReceiptBook::issue`]
//! for each receipt the catalog's facts say is due (after a registration, after a publication
//! report); [`ReceiptBook::issue_in`] is for a caller's own transaction; [`render`] prints
//! receipts for `ferry receipt show|verify`; [`crate::signing`] is the key seam.

mod document;
pub mod render;

#[cfg(test)]
mod tests;

pub use document::{
    CONNECTION_MONTHS, ComplianceSummary, ENVELOPE_FORMAT, Envelope, ISSUER, MAX_NAME_LEN, MAX_RECEIPT_FILE,
    RECEIPT_FORMAT, Receipt, ReceiptId, ReceiptKind, connection_deadline, utc,
};
pub use render::{render_json, render_text, render_verified_json, render_verified_text};

use crate::signing::{BlobSigner, BlobVerifier, SigningError};
use ferry_proto::{DatasetId, DeptId};
use sqlx::{AnyConnection, AnyPool, Row};
use std::sync::Arc;

/// What the catalog knows when it asks for a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRequest {
    pub kind: ReceiptKind,
    pub dataset: DatasetId,
    pub name: String,
    pub provider: DeptId,
    pub catalog_version: u64,
    pub schema_fingerprint: String,
    pub compliance: ComplianceSummary,
    /// When this stage's entry was registered (pre-registration or formal registration).
    pub registered_at_ms: i64,
    /// When the first version of the dataset was published, if one was.
    pub connected_at_ms: Option<i64>,
}

/// A receipt as issued: the document and the file to hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedReceipt {
    pub receipt: Receipt,
    /// The signed receipt file (JSON).
    pub file: String,
}

/// A receipt whose signature checked out, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    pub receipt: Receipt,
    pub signer: String,
}

/// Why a receipt was not issued, found or accepted, by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Art. 20: receipts are issued only for entries that passed the compliance check.
    #[error("no receipt for {dataset}: its catalog entry did not pass the compliance check")]
    ComplianceNotPassed { dataset: DatasetId },
    /// Art. 20: a formal receipt needs data connected (a published version).
    #[error("no formal receipt for {dataset}: no version has been published yet (data not connected)")]
    NotConnected { dataset: DatasetId },
    /// A field is out of bounds (the name, the fingerprint).
    #[error("receipt field {field} is invalid: {detail}")]
    InvalidField { field: &'static str, detail: String },
    /// This kind of receipt was already issued for this dataset and catalog version.
    #[error("receipt {id} was already issued")]
    AlreadyIssued { id: ReceiptId },
    #[error("no receipt {id}")]
    NotFound { id: ReceiptId },
    /// The file is not a receipt (too large, not JSON, unknown fields or format).
    #[error("not a valid receipt file: {0}")]
    Malformed(String),
    /// The signature does not verify or the signer is not trusted.
    #[error("the receipt's signature is not valid: {0}")]
    Signature(SigningError),
    /// The control-plane key could not sign: an operator must act.
    #[error("cannot sign the receipt: {0}")]
    Signing(SigningError),
    /// The database failed: nothing was stored.
    #[error("the receipt store failed: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// Checks `request` against Art. 20 and builds the receipt body.
pub fn build_receipt(request: ReceiptRequest, issued_at_ms: i64) -> Result<Receipt, ReceiptError> {
    let ReceiptRequest {
        kind, dataset, name, provider, catalog_version, schema_fingerprint, compliance, ..
    } = request;
    if !compliance.passed {
        return Err(ReceiptError::ComplianceNotPassed { dataset });
    }
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        let detail = format!("must be 1 to {MAX_NAME_LEN} bytes, is {}", name.len());
        return Err(ReceiptError::InvalidField { field: "name", detail });
    }
    if schema_fingerprint.len() != 64
        || !schema_fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        let detail = "must be 64 lowercase hex digits".into();
        return Err(ReceiptError::InvalidField { field: "schema fingerprint", detail });
    }
    let (connected_at_ms, connection_deadline_ms) = match kind {
        ReceiptKind::PreCatalog => (None, None),
        ReceiptKind::Formal => {
            let Some(connected) = request.connected_at_ms else {
                return Err(ReceiptError::NotConnected { dataset });
            };
            let deadline =
                connection_deadline(request.registered_at_ms).ok_or_else(|| ReceiptError::InvalidField {
                    field: "registered at",
                    detail: format!("{} ms is out of range", request.registered_at_ms),
                })?;
            (Some(connected), Some(deadline))
        }
    };
    Ok(Receipt {
        format: RECEIPT_FORMAT.into(),
        id: ReceiptId::for_receipt(kind, &dataset, catalog_version),
        kind,
        dataset,
        name,
        provider,
        catalog_version,
        schema_fingerprint,
        compliance,
        registered_at_ms: request.registered_at_ms,
        connected_at_ms,
        connection_deadline_ms,
        issuer: ISSUER.into(),
        issued_at_ms,
    })
}

/// Signs a receipt and returns its file.
pub fn sign_receipt(receipt: &Receipt, signer: &dyn BlobSigner) -> Result<String, ReceiptError> {
    // Invariant: a Receipt is plain data; it always serializes.
    let body = serde_json::to_vec(receipt).expect("receipt serializes");
    let signed = signer.sign(&body).map_err(ReceiptError::Signing)?;
    let envelope = Envelope::from_signed(signed).ok_or_else(|| {
        ReceiptError::Signing(SigningError::Unavailable("the signer changed the body".into()))
    })?;
    // Invariant: as above.
    Ok(serde_json::to_string_pretty(&envelope).expect("envelope serializes"))
}

/// Verifies a receipt file off line: bounded size, well formed, signed by a key `verifier`
/// trusts (the control-plane certificate under the ministry CA) at the time it was issued.
pub fn verify_receipt(file: &[u8], verifier: &dyn BlobVerifier) -> Result<VerifiedReceipt, ReceiptError> {
    if file.len() > MAX_RECEIPT_FILE {
        return Err(ReceiptError::Malformed(format!("{} bytes, more than {MAX_RECEIPT_FILE}", file.len())));
    }
    let envelope: Envelope =
        serde_json::from_slice(file).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if envelope.format != ENVELOPE_FORMAT {
        return Err(ReceiptError::Malformed(format!("unknown format {:?}", envelope.format)));
    }
    // Judged at the issue time the body states (the signature covers it): a receipt outlives
    // the control certificate that signed it.
    let receipt = parse_body(&envelope.receipt)?;
    let issued_at = u64::try_from(receipt.issued_at_ms)
        .ok()
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms)))
        .ok_or_else(|| ReceiptError::Malformed(format!("issued-at {} ms", receipt.issued_at_ms)))?;
    let signer =
        verifier.verify_signed_at(&envelope.to_signed(), issued_at).map_err(ReceiptError::Signature)?;
    Ok(VerifiedReceipt { receipt, signer })
}

fn parse_body(body: &str) -> Result<Receipt, ReceiptError> {
    let receipt: Receipt =
        serde_json::from_str(body).map_err(|e| ReceiptError::Malformed(format!("receipt: {e}")))?;
    if receipt.format != RECEIPT_FORMAT {
        return Err(ReceiptError::Malformed(format!("unknown receipt format {:?}", receipt.format)));
    }
    Ok(receipt)
}

/// Issues and looks up receipts in the control database.
pub struct ReceiptBook {
    pool: AnyPool,
    signer: Arc<dyn BlobSigner>,
}

impl std::fmt::Debug for ReceiptBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptBook").finish_non_exhaustive()
    }
}

impl ReceiptBook {
    pub fn new(pool: AnyPool, signer: Arc<dyn BlobSigner>) -> Self {
        Self { pool, signer }
    }

    /// Issues a receipt in its own transaction.
    pub async fn issue(&self, request: ReceiptRequest, now_ms: i64) -> Result<IssuedReceipt, ReceiptError> {
        // On SQLite, take the write lock at once (see `ControlStore::begin_write`).
        let sqlite = self.pool.connect_options().database_url.scheme() == "sqlite";
        let mut tx =
            if sqlite { self.pool.begin_with("BEGIN IMMEDIATE").await? } else { self.pool.begin().await? };
        let issued = self.issue_in(&mut tx, request, now_ms).await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Issues a receipt inside the caller's transaction (with the registration it attests):
    /// pass `&mut tx` for a `sqlx::Transaction<'_, Any>`.
    pub async fn issue_in(
        &self,
        conn: &mut AnyConnection,
        request: ReceiptRequest,
        now_ms: i64,
    ) -> Result<IssuedReceipt, ReceiptError> {
        let receipt = build_receipt(request, now_ms)?;
        let file = sign_receipt(&receipt, self.signer.as_ref())?;
        insert(conn, &receipt, &file).await?;
        Ok(IssuedReceipt { receipt, file })
    }

    /// The receipt with this id.
    pub async fn receipt(&self, id: &ReceiptId) -> Result<IssuedReceipt, ReceiptError> {
        let row = sqlx::query("SELECT envelope FROM receipts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let row = row.ok_or_else(|| ReceiptError::NotFound { id: id.clone() })?;
        issued_from_file(row.try_get("envelope")?)
    }

    /// Every receipt of a dataset, oldest first.
    pub async fn receipts(&self, dataset: &DatasetId) -> Result<Vec<IssuedReceipt>, ReceiptError> {
        let rows = sqlx::query("SELECT envelope FROM receipts WHERE dataset = $1 ORDER BY issued_at_ms, id")
            .bind(dataset.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| issued_from_file(row.try_get("envelope")?)).collect()
    }
}

async fn insert(conn: &mut AnyConnection, receipt: &Receipt, file: &str) -> Result<(), ReceiptError> {
    let version = i64::try_from(receipt.catalog_version)
        .map_err(|_| ReceiptError::InvalidField { field: "catalog version", detail: "too large".into() })?;
    let result = sqlx::query(
        "INSERT INTO receipts (id, kind, dataset, catalog_version, issued_at_ms, envelope) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(receipt.id.as_str())
    .bind(receipt.kind.as_str())
    .bind(receipt.dataset.as_str())
    .bind(version)
    .bind(receipt.issued_at_ms)
    .bind(file)
    .execute(&mut *conn)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ReceiptError::AlreadyIssued { id: receipt.id.clone() })
        }
        other => other.map(drop).map_err(ReceiptError::from),
    }
}

/// A stored file read back (our own table: parsed, not re-verified).
fn issued_from_file(file: String) -> Result<IssuedReceipt, ReceiptError> {
    let envelope: Envelope =
        serde_json::from_str(&file).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    let receipt = parse_body(&envelope.receipt)?;
    Ok(IssuedReceipt { receipt, file })
}
