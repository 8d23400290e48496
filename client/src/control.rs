//! Calls to the ministry's control plane: one `ControlCall` frame carrying a
//! [`ControlRequest`] as JSON, answered by one `ControlAnswer` (`{"ok": …}` or
//! `{"error": {code, message, detail?}}`) or a protocol `Error` frame.
//!
//! [`call`] returns the answer's value or a [`ControlCallError`] typed by what the caller must
//! decide: the node refused ([`ApiError`] with its code), the link failed, or the answer was
//! not understood. [`ExitStatus`] is how the `ferry` CLI reports each of them; [`view`] reads
//! the answers' shapes and [`render`] prints them for an operator.
//!
//! Neighbours: [`crate::conn`] (the session a call runs on), `ferry_control::api` (the
//! requests and answers), `ferry_control::receipt` (receipt files, verified off line).

pub mod render;
pub mod view;

use crate::conn::{ClientError, Session};
use ferry_control::api::{ApiCode, ApiError, ControlAnswer};
use ferry_control::keys::CaVerifier;
use ferry_net::conn::message_name;
use ferry_net::sign::TrustAnchors;
use ferry_net::tls::TlsError;
use ferry_net::wire::WireError;
use ferry_proto::{ErrorCode, Message, Role};
use std::path::{Path, PathBuf};

pub use ferry_control::api::ControlRequest;
pub use ferry_control::receipt::{VerifiedReceipt, verify_receipt};

/// A verifier of receipts: documents signed by a control-plane key (role `control`) of the
/// CA at `ca`, not revoked in `crl`. Off line: no node, no database.
pub fn receipt_verifier(ca: &Path, crl: Option<&Path>) -> Result<CaVerifier, TlsError> {
    let trust = TrustAnchors::load(ca, crl)?;
    Ok(CaVerifier::new(trust, vec![Role::Control], None))
}

/// Why a control call gave no value.
#[derive(Debug, thiserror::Error)]
pub enum ControlCallError {
    /// The control plane refused or failed the call; its code says why.
    #[error("{}: {}", code_name(.0.code), .0.message)]
    Refused(ApiError),
    /// The node could not be reached, or the connection or stream failed.
    #[error(transparent)]
    Transport(#[from] ClientError),
    /// The node answered something that is not a control answer of the expected shape.
    #[error("the node's control answer is malformed: {0}")]
    Malformed(String),
}

impl ControlCallError {
    /// The refusal, if the control plane gave one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Refused(e) => Some(e),
            _ => None,
        }
    }

    /// How the CLI exits on this error.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Refused(e) => ExitStatus::of_api(e.code),
            Self::Transport(e) => ExitStatus::of_client(e),
            Self::Malformed(_) => ExitStatus::Failed,
        }
    }
}

/// Sends `request` to the control plane of the node `session` talks to.
pub async fn call(
    session: &Session,
    request: &ControlRequest,
) -> Result<serde_json::Value, ControlCallError> {
    let frame = Message::ControlCall { request: request.to_json() };
    let answer = session.request(&frame).await?;
    decode_answer(answer)
}

/// Sends the node call `request` to the node `session` talks to (about that node itself).
pub async fn node_call(
    session: &Session,
    request: &ferry_proto::node_api::NodeRequest,
) -> Result<serde_json::Value, ControlCallError> {
    let frame = Message::ControlCall { request: request.to_json() };
    let answer = session.request(&frame).await?;
    decode_answer(answer)
}

/// Reads the frame that answers a `ControlCall`.
pub fn decode_answer(message: Message) -> Result<serde_json::Value, ControlCallError> {
    match message {
        Message::ControlAnswer { answer } => {
            let answer = ControlAnswer::parse(&answer).map_err(|e| ControlCallError::Malformed(e.message))?;
            answer.into_result().map_err(ControlCallError::Refused)
        }
        Message::Error { code, message } => {
            Err(ControlCallError::Transport(ClientError::Remote { code, message }))
        }
        other => {
            Err(ControlCallError::Malformed(format!("expected ControlAnswer, got {}", message_name(&other))))
        }
    }
}

/// The stable name of an answer code (`compliance-failed`), as the node writes it.
pub fn code_name(code: ApiCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// Exit statuses of the control-plane commands; [`EXIT_STATUS_HELP`] documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 1: the check found problems (violations, a broken audit log, an invalid receipt), or an
    /// error not listed below.
    Failed = 1,
    /// 2: the command line or the request is malformed.
    Usage = 2,
    /// 3: a registration failed the compliance check.
    ComplianceFailed = 3,
    /// 4: change control: the effective date is too early.
    TooEarly = 4,
    /// 5: the caller's department or role may not do this, or the node refused the certificate.
    Forbidden = 5,
    /// 6: no such dataset or version (or not visible to the caller).
    NotFound = 6,
    /// 7: conflicts with the catalog's state (dataset bound to another provider, a race).
    Conflict = 7,
    /// 8: the node is unreachable, or its control store is down or read-only: retry later.
    Unavailable = 8,
}

/// The exit statuses, as the commands' help prints them.
pub const EXIT_STATUS_HELP: &str = "Exit status:
  0  done
  1  problems found (violations, a broken audit log, an invalid receipt), or another error
  2  bad command line or request
  3  compliance check failed: every violation is printed
  4  effective date too early (change control, Art. 9): the earliest allowed date is printed
  5  forbidden: your department or role may not do this
  6  not found (or not visible to your department)
  7  conflict with the catalog (dataset bound to another provider, a concurrent change)
  8  node or control store unavailable: retry later";

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    fn of_api(code: ApiCode) -> Self {
        match code {
            ApiCode::BadRequest => Self::Usage,
            ApiCode::Forbidden => Self::Forbidden,
            ApiCode::NotFound => Self::NotFound,
            ApiCode::ComplianceFailed => Self::ComplianceFailed,
            ApiCode::TooEarly => Self::TooEarly,
            ApiCode::Conflict => Self::Conflict,
            ApiCode::Unavailable => Self::Unavailable,
            ApiCode::Internal => Self::Failed,
        }
    }

    fn of_client(error: &ClientError) -> Self {
        match error {
            ClientError::Remote { code, .. } => match code {
                ErrorCode::BadRequest | ErrorCode::TooLarge | ErrorCode::VersionMismatch => Self::Usage,
                ErrorCode::NotFound => Self::NotFound,
                ErrorCode::PermissionDenied => Self::Forbidden,
                ErrorCode::Conflict => Self::Conflict,
                ErrorCode::Unavailable => Self::Unavailable,
                _ => Self::Failed,
            },
            ClientError::Refused { .. } => Self::Forbidden,
            ClientError::Connect { .. } | ClientError::Connection { .. } => Self::Unavailable,
            ClientError::Wire(WireError::Read(_) | WireError::Write(_) | WireError::Closed(_)) => {
                Self::Unavailable
            }
            _ => Self::Failed,
        }
    }
}

/// A command's own failure with the status it exits with (violations found, a bad argument).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandFailed {
    pub status: ExitStatus,
    pub message: String,
}

impl CommandFailed {
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

/// The exit status an error in a cause chain asks for, if it is one of this module's.
pub fn exit_status(error: &(dyn std::error::Error + 'static)) -> Option<ExitStatus> {
    if let Some(e) = error.downcast_ref::<ControlCallError>() {
        return Some(e.exit_status());
    }
    error.downcast_ref::<CommandFailed>().map(|e| e.status)
}

/// Why a receipt file was not written.
#[derive(Debug, thiserror::Error)]
pub enum SaveReceiptError {
    /// The receipt id would not make a plain file name (the node sent something odd).
    #[error("receipt id {0:?} is not a safe file name")]
    BadId(String),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Writes `file` (a signed receipt's text) to `dir/<id>.receipt.json`, through a temporary
/// name so a reader never sees half a receipt. Returns the path written.
pub fn save_receipt(dir: &Path, id: &str, file: &str) -> Result<PathBuf, SaveReceiptError> {
    let safe = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.len() <= 200
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !safe {
        return Err(SaveReceiptError::BadId(id.to_owned()));
    }
    let path = dir.join(format!("{id}.receipt.json"));
    let io = |source| SaveReceiptError::Io { path: path.clone(), source };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut temp, file.as_bytes()).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(&path).map_err(|e| io(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(text: &str) -> Message {
        Message::ControlAnswer { answer: text.to_owned() }
    }

    #[test]
    fn an_ok_answer_gives_its_value() {
        let value = decode_answer(answer(r#"{"ok": {"dataset": "vehicles"}}"#)).expect("ok");
        assert_eq!(value, json!({"dataset": "vehicles"}));
    }

    #[test]
    fn a_refusal_keeps_code_message_and_detail_and_picks_the_exit_status() {
        let text = r#"{"error": {"code": "too-early", "message": "not before 2027-03-06",
            "detail": {"earliest": "2027-03-06T00:00:00Z"}}}"#;
        let error = decode_answer(answer(text)).unwrap_err();
        let api = error.api_error().expect("a refusal");
        assert_eq!(api.code, ApiCode::TooEarly);
        assert_eq!(api.detail, Some(json!({"earliest": "2027-03-06T00:00:00Z"})));
        assert_eq!(error.exit_status(), ExitStatus::TooEarly);
        assert_eq!(error.to_string(), "too-early: not before 2027-03-06");
    }

    #[test]
    fn each_refusal_class_has_its_own_exit_status() {
        let status = |code: &str| {
            let text = format!(r#"{{"error": {{"code": "{code}", "message": "m"}}}}"#);
            decode_answer(answer(&text)).unwrap_err().exit_status().code()
        };
        assert_eq!(status("compliance-failed"), 3);
        assert_eq!(status("forbidden"), 5);
        assert_eq!(status("unavailable"), 8);
        assert_eq!(status("not-found"), 6);
        assert_eq!(status("internal"), 1);
        let codes = [3, 4, 5, 6, 7, 8];
        let named = ["compliance-failed", "too-early", "forbidden", "not-found", "conflict", "unavailable"];
        assert_eq!(named.map(status), codes);
    }

    #[test]
    fn malformed_answers_and_other_frames_are_typed() {
        assert!(matches!(decode_answer(answer("{\"ok\": 1")), Err(ControlCallError::Malformed(_))));
        assert!(matches!(decode_answer(answer(r#"{"maybe": 1}"#)), Err(ControlCallError::Malformed(_))));
        assert!(matches!(decode_answer(Message::ListDatasets), Err(ControlCallError::Malformed(_))));
        let error = decode_answer(Message::Error { code: ErrorCode::PermissionDenied, message: "no".into() });
        let error = error.unwrap_err();
        assert!(matches!(error, ControlCallError::Transport(ClientError::Remote { .. })));
        assert_eq!(error.exit_status(), ExitStatus::Forbidden);
    }

    #[test]
    fn exit_status_is_found_in_a_cause_chain() {
        let error = anyhow::Error::new(CommandFailed::new(ExitStatus::Failed, "3 violations"))
            .context("catalog check");
        assert_eq!(error.chain().find_map(exit_status), Some(ExitStatus::Failed));
        let other = anyhow::anyhow!("plain");
        assert_eq!(other.chain().find_map(exit_status), None);
    }

    #[test]
    fn receipts_are_saved_under_their_id_and_odd_ids_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = save_receipt(dir.path(), "pre-catalog-vehicles-c1", "{}\n").expect("saved");
        assert_eq!(path, dir.path().join("pre-catalog-vehicles-c1.receipt.json"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{}\n");
        for bad in ["../etc/passwd", "", ".hidden", "a/b", "a b"] {
            assert!(matches!(save_receipt(dir.path(), bad, "{}"), Err(SaveReceiptError::BadId(_))), "{bad}");
        }
    }
}
