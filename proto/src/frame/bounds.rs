//! How large a frame may be, by its kind, before a receiver buffers it.
//!
//! [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN) bounds every frame, but only a chunk or an upload's
//! data needs megabytes. A node reads a frame's length prefix and tag first and checks them
//! against one of these tables, so a request whose kind does not need the room is refused
//! before any of its body is buffered. Both tables are pure: the framing readers of
//! `ferry_net::wire` apply them.

use super::MAX_FRAME_LEN;
use crate::error::DecodeError;
use crate::message::tag;

/// The largest `Hello` (tag, version and agent string).
pub const MAX_HELLO_LEN: u32 = 4 * 1024;
/// The largest request that names a dataset, a version and a few numbers (`ListVersions`,
/// `GetManifest`, `GetChunks`, `Replicate`): ids and names are short.
pub const MAX_SMALL_REQUEST_LEN: u32 = 4 * 1024;
/// The largest `PublishBegin` (a dataset definition) or `ControlCall` (a JSON request).
pub const MAX_DOCUMENT_REQUEST_LEN: u32 = 1024 * 1024;
/// The largest `Query`: a dataset, a version and the query's JSON (a predicate, a projection).
pub const MAX_QUERY_REQUEST_LEN: u32 = 64 * 1024;
/// The largest `PublishEnd`: the tag and a BLAKE3 hash.
pub const MAX_PUBLISH_END_LEN: u32 = 1 + 32;

/// Which frames a receiver expects, and so how large each may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameBounds {
    /// The first frame of a stream a peer opened: a request, before it is authorized.
    Request,
    /// The frames of an upload after its `PublishBegin` was authorized: `PublishData` may be
    /// as large as a frame gets, `PublishEnd` is a hash.
    Upload,
    /// What a subscriber sends on a `Subscribe` stream after the request: `Holding` frames.
    Subscription,
    /// Any frame up to [`MAX_FRAME_LEN`] (what a client reads from a node).
    Any,
}

impl FrameBounds {
    /// The largest frame (tag + body) of kind `tag` accepted here; `None` when a frame of that
    /// kind is not expected at all.
    pub fn max_len(self, tag: u8) -> Option<u32> {
        match self {
            Self::Request => request_max_len(tag),
            Self::Upload => match tag {
                tag::PUBLISH_DATA => Some(MAX_FRAME_LEN),
                tag::PUBLISH_END => Some(MAX_PUBLISH_END_LEN),
                _ => None,
            },
            Self::Subscription => match tag {
                tag::HOLDING => Some(MAX_SMALL_REQUEST_LEN),
                _ => None,
            },
            Self::Any => Some(MAX_FRAME_LEN),
        }
    }

    /// Checks a frame's length prefix `len` (tag + body) and `tag` against this table: a frame
    /// of an unexpected kind is `InvalidField { field: "tag" }`, one over its kind's bound
    /// `FrameTooLarge` with that bound as the maximum.
    pub fn check(self, tag: u8, len: u32) -> Result<(), DecodeError> {
        let max = self.max_len(tag).ok_or_else(|| DecodeError::InvalidField {
            field: "tag",
            reason: format!("a frame of kind {tag:#04x} is not expected {}", self.place()),
        })?;
        if len > max {
            return Err(DecodeError::FrameTooLarge { len: len.into(), max: max.into() });
        }
        Ok(())
    }

    fn place(self) -> &'static str {
        match self {
            Self::Request => "as a request",
            Self::Upload => "in an upload",
            Self::Subscription => "on a subscription",
            Self::Any => "here",
        }
    }
}

fn request_max_len(kind: u8) -> Option<u32> {
    match kind {
        tag::HELLO => Some(MAX_HELLO_LEN),
        tag::LIST_DATASETS => Some(1),
        tag::LIST_VERSIONS
        | tag::LIST_VERSIONS_FOR
        | tag::GET_MANIFEST
        | tag::GET_MANIFEST_FOR
        | tag::GET_CHUNKS
        | tag::GET_CHUNKS_FOR
        | tag::GET_CHUNKS_AT
        | tag::FOR_GRANT
        | tag::REPLICATE
        | tag::SUBSCRIBE => Some(MAX_SMALL_REQUEST_LEN),
        tag::POLICY_SUBSCRIBE => Some(1 + 1 + 8),
        tag::PUBLISH_BEGIN | tag::CONTROL_CALL => Some(MAX_DOCUMENT_REQUEST_LEN),
        tag::QUERY => Some(MAX_QUERY_REQUEST_LEN),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_requests_are_refused_long_before_the_frame_maximum() {
        let request = FrameBounds::Request;
        assert!(request.check(tag::GET_CHUNKS, 200).is_ok());
        let err = request.check(tag::GET_CHUNKS, MAX_FRAME_LEN).unwrap_err();
        assert!(
            matches!(err, DecodeError::FrameTooLarge { max, .. } if max == u64::from(MAX_SMALL_REQUEST_LEN)),
            "{err}"
        );
        assert!(request.check(tag::LIST_DATASETS, 2).is_err());
        assert!(request.check(tag::PUBLISH_BEGIN, MAX_DOCUMENT_REQUEST_LEN).is_ok());
    }

    #[test]
    fn data_frames_are_no_request_but_may_be_large_in_an_upload() {
        for kind in [tag::PUBLISH_DATA, tag::CHUNK, tag::PUBLISH_END, tag::ERROR, 0xEE] {
            let err = FrameBounds::Request.check(kind, 10).unwrap_err();
            assert!(err.to_string().contains("not expected as a request"), "{kind:#04x}: {err}");
        }
        assert!(FrameBounds::Upload.check(tag::PUBLISH_DATA, MAX_FRAME_LEN).is_ok());
        assert!(FrameBounds::Upload.check(tag::PUBLISH_END, 34).is_err());
        assert!(FrameBounds::Upload.check(tag::GET_CHUNKS, 10).is_err());
        assert!(FrameBounds::Any.check(tag::CHUNK, MAX_FRAME_LEN).is_ok());
    }

    #[test]
    fn every_request_fits_its_bound() {
        use crate::{DatasetId, JobPriority, Message, ServiceMethod, VersionNo};
        let dataset = DatasetId::new("vehicle-registry").unwrap();
        for msg in [
            Message::Hello { minor: 1, agent: "ferry 1.0".into() },
            Message::ListDatasets,
            Message::ListVersions { dataset: dataset.clone(), method: ServiceMethod::Subscription },
            Message::GetManifest {
                dataset: dataset.clone(),
                version: Some(VersionNo::FIRST),
                method: ServiceMethod::Download,
            },
            Message::GetChunks {
                dataset: dataset.clone(),
                version: VersionNo::FIRST,
                file: 1,
                first: 2,
                count: 3,
                accept_zstd: true,
                method: ServiceMethod::Subscription,
                priority: Some(JobPriority::High),
            },
            Message::Subscribe { dataset: dataset.clone(), have: Some(VersionNo::FIRST) },
            Message::Query { dataset: dataset.clone(), version: None, query: "{}".repeat(1000) },
            Message::Replicate { peer: "gd-node".into(), dataset, version: None },
            Message::PolicySubscribe { have: Some(7) },
        ] {
            let len = (super::super::encoded_len(&msg) - super::super::LEN_PREFIX_LEN) as u32;
            assert!(FrameBounds::Request.check(msg.tag(), len).is_ok(), "{msg:?}");
        }
    }
}
