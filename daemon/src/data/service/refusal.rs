//! [`Refusal`]: the error answer of a request, a stable code and a message for the peer, and how
//! the service's own errors become one.
//!
//! A failure on the node's side (`ErrorCode::Internal`) never reaches the peer in its own words:
//! those name server paths, storage backends and I/O errors. The peer is told that the node
//! failed and an incident number; the node logs the detail under that number, for its operator.
//! When the node itself made the request (a subscription's or a scheduled download's pull), its
//! operator reads the detail too: [`Refusal::for_operator`].

use crate::data::store::StoreError;
use ferry_proto::ErrorCode;
use ferry_proto::authz::{Denial, absent_message};

/// An error answer: code and message for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The failure in the node's own words with its incident number, when `message` hides it
    /// from the peer; only for the node's own operator, never answered (`crate::net` sends
    /// `code` and `message`).
    local: Option<String>,
}

/// Numbers the node's internal failures, so a peer's report finds the log line.
static INCIDENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Refusal {
    /// An answer with `code` and `message`; an `Internal` one is logged here with `message`
    /// and answered with the generic words of [`Refusal::internal`].
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        if code == ErrorCode::Internal {
            return Self::internal("a request", &message);
        }
        Self { code, message, local: None }
    }

    /// What the node's own operator is shown of a failure of a request the node made itself
    /// (`ferry subscription list`, a scheduled run's error): the failure in the node's words and
    /// its incident number where the peer's message hides it, else the message.
    pub fn for_operator(&self) -> &str {
        self.local.as_deref().unwrap_or(&self.message)
    }

    /// The node failed on its side: the detail is logged as an error under an incident number;
    /// the peer reads only that the node failed, and the number.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        let incident = INCIDENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(incident, error = %error, "{what} failed on the node");
        let message =
            format!("the node failed on its side (incident {incident}; its operator's log has the details)");
        Self { code: ErrorCode::Internal, message, local: Some(format!("{error} (incident {incident})")) }
    }
}

impl Refusal {
    /// The node's storage is full: the peer reads that this node (by name) is out of space and
    /// what to do; the error itself (paths, the device) is logged under an incident number.
    pub fn out_of_space(node: &str, what: &str, error: &dyn std::fmt::Display) -> Self {
        let incident = INCIDENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(incident, error = %error, "{what} failed: the node's storage is full");
        let message = format!(
            "node {node} has no room left in its storage for {what}; free space on it and ask again \
             (incident {incident})"
        );
        let local = Some(format!("no room left for {what}: {error} (incident {incident})"));
        Self { code: ErrorCode::OutOfSpace, message, local }
    }

    /// An answer with `code` and `message` for the peer while the node logs `detail` as an error
    /// under an incident number, for a fault the peer must hear of in its own terms but the
    /// operator must look into (a panic of a parser, say).
    pub fn with_incident(code: ErrorCode, message: &str, what: &str, detail: &dyn std::fmt::Display) -> Self {
        let incident = INCIDENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(incident, error = %detail, "{what} failed on the node");
        let local = Some(format!("{message}: {detail} (incident {incident})"));
        Self { code, message: format!("{message} (incident {incident})"), local }
    }
}

impl Refusal {
    /// [`Refusal::from`] a store error, except that a full store is [`Refusal::out_of_space`].
    pub fn from_store_on(node: &str, what: &str, e: StoreError) -> Self {
        if is_out_of_space(&e) { Self::out_of_space(node, what, &e) } else { Self::from(e) }
    }
}

/// Whether `error`, or any error it was caused by, is a full device or an exhausted quota
/// (ENOSPC, EDQUOT), however deep in storage, I/O or transfer errors it lies.
pub fn is_out_of_space(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
                return true;
            }
            // An `io::Error` made of another error reports that error's cause, not the error.
            if let Some(inner) = io.get_ref() {
                return is_out_of_space(inner);
            }
        }
        next = e.source();
    }
    false
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
            return Self::internal("storage, while answering a request,", &e);
        }
        Self::new(code, e.to_string())
    }
}

impl From<&Denial> for Refusal {
    fn from(denial: &Denial) -> Self {
        Self::new(denial.code, denial.peer_message())
    }
}

impl From<ferry_net::wire::WireError> for Refusal {
    fn from(e: ferry_net::wire::WireError) -> Self {
        Self::new(ErrorCode::BadRequest, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/srv/ferry/state/data/datasets/vehicle-registry/v3/part-00001.parquet";

    #[test]
    fn a_storage_failure_answered_to_a_peer_names_no_path() {
        let local =
            StoreError::Local { path: PATH.into(), source: std::io::Error::other("Input/output error") };
        let answers = [
            Refusal::from(local),
            Refusal::from(StoreError::Open(format!("cannot create {PATH}"))),
            Refusal::new(ErrorCode::Internal, format!("{PATH}: No space left on device")),
            Refusal::internal("publish", &format!("rename {PATH}")),
        ];
        for answer in answers {
            assert_eq!(answer.code, ErrorCode::Internal);
            for leak in ["/srv", "parquet", "Input/output", "No space", "rename"] {
                assert!(!answer.message.contains(leak), "{leak} reaches the peer: {}", answer.message);
            }
            assert!(answer.message.contains("incident"), "{}", answer.message);
        }
    }

    #[test]
    fn the_node_own_operator_reads_the_cause_the_peer_does_not() {
        let readonly = std::io::Error::from_raw_os_error(30);
        let answer = Refusal::new(ErrorCode::Internal, format!("pull failed: {PATH}: {readonly}"));
        assert!(
            !answer.message.contains(PATH) && !answer.message.contains("Read-only"),
            "{}",
            answer.message
        );
        let incident = answer.message.split("incident ").nth(1).unwrap().split(';').next().unwrap();
        let shown = answer.for_operator();
        assert!(shown.contains(PATH) && shown.contains("Read-only file system"), "{shown}");
        assert!(shown.ends_with(&format!("(incident {incident})")), "{shown}");
        let full = Refusal::out_of_space("gd", "cars v1", &format!("{PATH}: No space left on device"));
        assert!(!full.message.contains(PATH) && full.for_operator().contains(PATH), "{full:?}");
        let plain = Refusal::new(ErrorCode::NotFound, "dataset x has no version 9");
        assert_eq!(plain.for_operator(), plain.message);
    }

    #[test]
    fn a_full_disk_is_found_deep_in_an_error_and_answered_without_its_path() {
        let full = || std::io::Error::from_raw_os_error(28);
        let backend = crate::data::blob::BlobError::Backend {
            key: "datasets/x/v1/part-00000.parquet".into(),
            source: Box::new(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(full()),
            }),
        };
        let cases: [Box<dyn std::error::Error + 'static>; 4] = [
            Box::new(StoreError::Local { path: PATH.into(), source: full() }),
            Box::new(StoreError::Backend(backend)),
            Box::new(std::io::Error::other(StoreError::Local { path: PATH.into(), source: full() })),
            Box::new(std::io::Error::from_raw_os_error(122)),
        ];
        for case in &cases {
            assert!(is_out_of_space(case.as_ref()), "{case}");
        }
        let eio = StoreError::Local { path: PATH.into(), source: std::io::Error::from_raw_os_error(5) };
        assert!(!is_out_of_space(&eio), "EIO is not a full disk");
        let answer = Refusal::out_of_space("guangdong", "vehicle-registry v1", &cases[0]);
        assert_eq!(answer.code, ErrorCode::OutOfSpace);
        assert!(answer.message.contains("node guangdong"), "{}", answer.message);
        for leak in ["/srv", "parquet", "No space"] {
            assert!(!answer.message.contains(leak), "{leak} reaches the peer: {}", answer.message);
        }
    }

    #[test]
    fn answers_the_peer_can_act_on_keep_their_words() {
        let absent = Refusal::new(ErrorCode::NotFound, "dataset x has no version 9");
        assert_eq!(absent.message, "dataset x has no version 9");
        let bad = Refusal::new(ErrorCode::BadRequest, "frame too large");
        assert_eq!(bad.message, "frame too large");
    }
}
