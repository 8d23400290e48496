//! [`Refusal`]: the error answer of a request, a stable code and a message for the peer, and how
//! the service's own errors become one.

use crate::data::store::StoreError;
use ferry_proto::ErrorCode;
use ferry_proto::authz::{Denial, absent_message};

/// An error answer: code and message for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The node failed on its side; logged as an error.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{what} failed on the node");
        Self::new(ErrorCode::Internal, format!("node failed: {error}"))
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            // Word for word what a peer that may not see a dataset is told ([`Denial::hidden`]).
            StoreError::NoDataset(dataset) => return Self::new(ErrorCode::NotFound, absent_message(dataset)),
            StoreError::NoVersion(..) | StoreError::NoChunk { .. } => ErrorCode::NotFound,
            StoreError::Exists { .. } => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        };
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "storage failure while answering a request");
        }
        Self::new(code, e.to_string())
    }
}

impl From<&Denial> for Refusal {
    fn from(denial: &Denial) -> Self {
        Self::new(denial.code, denial.message.clone())
    }
}

impl From<ferry_net::wire::WireError> for Refusal {
    fn from(e: ferry_net::wire::WireError) -> Self {
        Self::new(ErrorCode::BadRequest, e.to_string())
    }
}
