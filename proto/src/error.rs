//! Stable error codes carried by `Message::Error`, and decoding errors.

use std::fmt;

/// Why a request failed. The numbers are part of the protocol and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the request is malformed or not allowed in this state.
    BadRequest,
    /// 2: no such dataset, version or file.
    NotFound,
    /// 3: the requester's department may not do this (no grant, wrong role).
    PermissionDenied,
    /// 4: the peer speaks an incompatible protocol version.
    VersionMismatch,
    /// 5: a size bound was exceeded.
    TooLarge,
    /// 6: the node failed; the request may succeed later.
    Internal,
    /// 7: the node is shutting down or overloaded; retry elsewhere or later.
    Unavailable,
    /// 8: the data sent does not match its definition or hash.
    InvalidData,
    /// 9: the request conflicts with the current state (e.g. a version already exists).
    Conflict,
    /// 10: the node has no room left in its storage for what the request writes; retry once
    /// its operator has freed space (what was fetched so far is kept and resumed).
    OutOfSpace,
    /// Any code this build does not know; kept so it can be shown and passed on.
    Unknown(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            Self::BadRequest => 1,
            Self::NotFound => 2,
            Self::PermissionDenied => 3,
            Self::VersionMismatch => 4,
            Self::TooLarge => 5,
            Self::Internal => 6,
            Self::Unavailable => 7,
            Self::InvalidData => 8,
            Self::Conflict => 9,
            Self::OutOfSpace => 10,
            Self::Unknown(n) => n,
        }
    }

    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => Self::BadRequest,
            2 => Self::NotFound,
            3 => Self::PermissionDenied,
            4 => Self::VersionMismatch,
            5 => Self::TooLarge,
            6 => Self::Internal,
            7 => Self::Unavailable,
            8 => Self::InvalidData,
            9 => Self::Conflict,
            10 => Self::OutOfSpace,
            n => Self::Unknown(n),
        }
    }

    /// Whether a client may retry the same request later and expect it to succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Internal | Self::Unavailable)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::BadRequest => "bad request",
            Self::NotFound => "not found",
            Self::PermissionDenied => "permission denied",
            Self::VersionMismatch => "version mismatch",
            Self::TooLarge => "too large",
            Self::Internal => "internal error",
            Self::Unavailable => "unavailable",
            Self::InvalidData => "invalid data",
            Self::Conflict => "conflict",
            Self::OutOfSpace => "out of space",
            Self::Unknown(n) => return write!(f, "error code {n}"),
        };
        f.write_str(name)
    }
}

/// Why bytes could not be decoded into a message. Every variant is a peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("empty frame (no tag byte)")]
    EmptyFrame,
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("message {tag:#04x} ends early: needed {needed} more bytes for {field}")]
    Truncated { tag: u8, field: &'static str, needed: usize },
    #[error("message {tag:#04x} has {extra} trailing bytes")]
    TrailingBytes { tag: u8, extra: usize },
    #[error("field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
}
