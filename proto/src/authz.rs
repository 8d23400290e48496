//! The authorization seam: what a node asks before it does anything for a peer, and what it
//! reports afterwards.
//!
//! A node turns each decoded request into a [`Request`] and asks its [`Authorizer`] *before* it
//! looks anything up in its store, so an answer to a peer that may not see a dataset cannot
//! depend on whether the dataset exists. Listings are filtered with [`Authorizer::visible`].
//! Every decision and every finished transfer is handed back through [`Authorizer::report`], the
//! place an audit log hangs from. The types are pure data so that the control plane
//! (`ferry-control`) can implement the trait without depending on the daemon, which holds the
//! interim rules and chooses the implementation from its config.

use crate::error::ErrorCode;
use crate::ids::{DatasetId, DeptId, ServiceMethod, ShareType, VersionNo};
use crate::principal::Principal;
use std::fmt;

/// What of a dataset a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadPart {
    /// `ListVersions`.
    Versions,
    /// `GetManifest`.
    Manifest,
    /// `GetChunks`.
    Chunks,
    /// `Subscribe`: announcements of the versions the node commits.
    Announcements,
    /// `Query`: rows answered by the node.
    Rows,
}

/// One request of a peer, as decoded, before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `ListDatasets`; the answer holds only what [`Authorizer::visible`] lets the peer see.
    List,
    /// Reading a dataset. `version: None` asks for the latest.
    Read { dataset: DatasetId, version: Option<VersionNo>, method: ServiceMethod, part: ReadPart },
    /// The ministry's hub reading what grant `grant` allows of a dataset it relays, to serve
    /// that grant's holder (Art. 11): answered with the restricted versions the grant's content
    /// defines, signed by the provider's node, never with the full dataset.
    ReadForGrant {
        dataset: DatasetId,
        version: Option<VersionNo>,
        method: ServiceMethod,
        part: ReadPart,
        grant: u64,
    },
    /// Publishing a new version of `dataset`, which its definition says `provider` provides and
    /// shares as `share_type`.
    Publish { dataset: DatasetId, provider: DeptId, share_type: ShareType },
    /// Making this node pull `dataset` (`version: None`: the latest) from the peer it knows as
    /// `source`.
    Replicate { source: String, dataset: DatasetId, version: Option<VersionNo> },
}

impl Request {
    /// The dataset the request is about, if any.
    pub fn dataset(&self) -> Option<&DatasetId> {
        match self {
            Self::List => None,
            Self::Read { dataset, .. }
            | Self::ReadForGrant { dataset, .. }
            | Self::Publish { dataset, .. }
            | Self::Replicate { dataset, .. } => Some(dataset),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Read { .. } => "read",
            Self::ReadForGrant { .. } => "read_for_grant",
            Self::Publish { .. } => "publish",
            Self::Replicate { .. } => "replicate",
        }
    }
}

/// Why a request was refused: a bounded `reason` label (metrics, logs), a message for the peer,
/// and the code the peer gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    pub reason: &'static str,
    pub message: String,
    pub code: ErrorCode,
}

impl Denial {
    /// The peer may not do this, and may know that what it asked about exists.
    pub fn forbidden(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), code: ErrorCode::PermissionDenied }
    }

    /// The peer may not see `dataset`: it gets the answer a dataset that does not exist gets
    /// ([`absent_message`], `NotFound`), so the denial does not tell whether it exists.
    pub fn hidden(reason: &'static str, dataset: &DatasetId) -> Self {
        Self { reason, message: absent_message(dataset), code: ErrorCode::NotFound }
    }

    /// No decision can be made now (e.g. the policy is stale); the peer may retry later.
    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), code: ErrorCode::Unavailable }
    }

    /// The words the peer reads. A refusal whose reason the peer may know opens with it
    /// (`no_grant: department gd holds no grant ...`), so the requester's software can act on
    /// it ([`reason_of`]); a hidden one reads exactly as an absent dataset and names no reason.
    pub fn peer_message(&self) -> String {
        if self.code == ErrorCode::NotFound {
            return self.message.clone();
        }
        format!("{}: {}", self.reason, self.message)
    }
}

/// The reason a refusal's message opens with ([`Denial::peer_message`]), if it names one: a
/// label of lowercase letters and underscores before the first `": "`.
pub fn reason_of(message: &str) -> Option<&str> {
    let (reason, _) = message.split_once(": ")?;
    let label = !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    label.then_some(reason)
}

/// What a node answers about a dataset it does not hold, and about one the peer may not see.
pub fn absent_message(dataset: &DatasetId) -> String {
    format!("no dataset {dataset}")
}

/// What became of a request, reported after the decision and again when it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The authorizer allowed it; the node goes on.
    Allowed,
    /// The authorizer refused it.
    Denied(&'a Denial),
    /// A transfer finished: `bytes` of payload went out (read) or came in (publish, replicate).
    Completed { bytes: u64 },
    /// The node could not complete an allowed request.
    Failed { code: ErrorCode, message: &'a str },
}

/// What an allowed request may see of its dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The dataset as published (its provider, the ministry's hub, an unrestricted grant; and
    /// every request that reads no dataset).
    Full,
    /// Only the columns and rows of `restriction`, served as a derived version built for it;
    /// `grant` is the grant that allowed the read.
    Restricted { grant: u64, restriction: crate::policy::Restriction },
}

/// Decides every request a node serves. Implementations must be cheap and must not block: the
/// node asks per request, on its async threads.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// Allowed (with what the peer may see), or why not. Asked before the node looks anything
    /// up for the request.
    fn authorize(&self, peer: &Principal, request: &Request) -> Result<Access, Denial>;

    /// Whether `peer` may see that `dataset` exists (in a listing).
    fn visible(&self, peer: &Principal, dataset: &DatasetId) -> bool;

    /// Told each decision and each finished request, in order, for the audit log.
    fn report(&self, peer: &Principal, request: &Request, outcome: &Outcome<'_>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_dataset_reads_as_an_absent_one() {
        let dataset = DatasetId::new("owner-records").unwrap();
        let hidden = Denial::hidden("no_grant", &dataset);
        assert_eq!(hidden.code, ErrorCode::NotFound);
        assert_eq!(hidden.message, absent_message(&dataset));
        assert_eq!(hidden.to_string(), "no dataset owner-records");
        assert_eq!(Denial::forbidden("wrong_role", "no").code, ErrorCode::PermissionDenied);
        assert_eq!(Denial::unavailable("stale_policy", "later").code, ErrorCode::Unavailable);
    }

    #[test]
    fn a_refusal_names_its_reason_unless_it_hides_the_dataset() {
        let denied = Denial::forbidden("no_grant", "department gd holds no grant: apply");
        assert_eq!(denied.peer_message(), "no_grant: department gd holds no grant: apply");
        assert_eq!(reason_of(&denied.peer_message()), Some("no_grant"));
        let hidden = Denial::hidden("not_shared", &DatasetId::new("owner-records").unwrap());
        assert_eq!(hidden.peer_message(), "no dataset owner-records");
        assert_eq!(reason_of(&hidden.peer_message()), None);
        assert_eq!(reason_of("node is shutting down; resume later"), None);
        assert_eq!(reason_of("Dataset X: gone"), None);
    }

    #[test]
    fn requests_name_their_dataset_and_kind() {
        let dataset = DatasetId::new("vehicles").unwrap();
        let read = Request::Read {
            dataset: dataset.clone(),
            version: VersionNo::new(3).ok(),
            method: ServiceMethod::Download,
            part: ReadPart::Chunks,
        };
        assert_eq!(read.dataset(), Some(&dataset));
        assert_eq!(read.kind(), "read");
        assert_eq!(Request::List.dataset(), None);
        let replicate =
            Request::Replicate { source: "ministry".into(), dataset: dataset.clone(), version: None };
        assert_eq!((replicate.kind(), replicate.dataset()), ("replicate", Some(&dataset)));
    }
}
