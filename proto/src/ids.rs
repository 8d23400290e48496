//! Identifier newtypes: departments, datasets, version numbers, roles and share types.
//! Parsing validates; a value of these types is always well formed.
//!
//! Department and dataset ids are ASCII lower case (`[a-z0-9][a-z0-9._-]*`): they name
//! directories on every node and puller, and an id has no second spelling that a file system
//! ignoring case or normalizing Unicode would take for it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} {value:?} has a character outside [a-z0-9._-] or does not start with [a-z0-9]")]
    BadChar { kind: &'static str, value: String },
    #[error("version number must be at least 1")]
    ZeroVersion,
    #[error("unknown {kind} {value:?}")]
    Unknown { kind: &'static str, value: String },
}

fn check_slug(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if first_ok && rest_ok { Ok(()) } else { Err(IdError::BadChar { kind, value: s.to_owned() }) }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted identifier, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Parses and validates an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_slug($kind, &s, $max)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

slug_id!(
    /// A government department, as named in its certificate (`urn:ferry:dept:<id>`).
    DeptId, "department id", 64
);
slug_id!(
    /// A dataset in the catalog, e.g. `vehicle-registry`.
    DatasetId, "dataset id", 128
);

/// An immutable, numbered version of a dataset; numbering starts at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct VersionNo(u64);

impl VersionNo {
    pub const FIRST: VersionNo = VersionNo(1);

    pub fn new(n: u64) -> Result<Self, IdError> {
        if n == 0 { Err(IdError::ZeroVersion) } else { Ok(Self(n)) }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The version after this one, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl TryFrom<u64> for VersionNo {
    type Error = IdError;
    fn try_from(n: u64) -> Result<Self, IdError> {
        Self::new(n)
    }
}

impl From<VersionNo> for u64 {
    fn from(v: VersionNo) -> u64 {
        v.0
    }
}

impl fmt::Display for VersionNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("v{}", self.0))
    }
}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $code:literal, $text:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The byte that stands for this value on the wire. Never reused.
            pub fn code(self) -> u8 {
                match self { $(Self::$variant => $code,)+ }
            }

            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)+ _ => None }
            }

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(IdError::Unknown { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// What a certificate lets its holder be.
    Role, "role" {
        /// The ministry node (control plane).
        Ministry = 1, "ministry";
        /// A province node.
        Province = 2, "province";
        /// A person or script operating the node of their department.
        Operator = 3, "operator";
        /// The ministry's control-plane signing key: it signs policy snapshots, receipts and
        /// audit checkpoints, and is never the TLS peer of a data request.
        Control = 4, "control";
    }
);

wire_enum!(
    /// Share type of a dataset (regulation Art. 5–7).
    ShareType, "share type" {
        Unconditional = 1, "unconditional";
        Conditional = 2, "conditional";
        NotShared = 3, "not-shared";
    }
);

wire_enum!(
    /// How a consumer uses a dataset (regulation Art. 10 共享方式).
    ServiceMethod, "service method" {
        /// 联机查询: key lookups and filters answered by the node.
        OnlineQuery = 1, "online-query";
        /// 数据订阅: new versions announced and pulled as they are published.
        Subscription = 2, "subscription";
        /// 数据下载: pulling versions (by hand, by schedule, or node to node).
        Download = 3, "download";
    }
);

wire_enum!(
    /// How urgently a node's own job (a schedule, a subscription) wants its bytes, among the
    /// node's jobs and, declared in a read (`Message::GetChunks`), among one peer's answers at the
    /// serving node. Every class is bulk: an operator's `ferry pull` goes before all of them.
    /// Spelled `high`, `normal` (the default), `low`; ordered best first.
    JobPriority, "priority (high, normal or low)" {
        High = 1, "high";
        Normal = 2, "normal";
        Low = 3, "low";
    }
);

// The derives are `wire_enum!`'s, shared by every wire enum; the default is this one's.
#[allow(clippy::derivable_impls)]
impl Default for JobPriority {
    fn default() -> Self {
        Self::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_spelling() {
        for other_spelling in ["Roads", "ROADS", "ro\u{e9}ds", "roe\u{301}ds", "roads\u{212a}"] {
            assert!(
                matches!(DatasetId::new(other_spelling), Err(IdError::BadChar { .. })),
                "{other_spelling:?}"
            );
        }
        for id in ["roads", "roads.v1", "roads.v2", "roads-v1", "r0ads_1"] {
            assert_eq!(DatasetId::new(id).map(String::from), Ok(id.to_owned()));
        }
    }

    #[test]
    fn a_job_priority_is_high_normal_or_low_and_a_bad_one_is_named() {
        assert_eq!("high".parse::<JobPriority>(), Ok(JobPriority::High));
        assert_eq!(JobPriority::default(), JobPriority::Normal);
        assert!(JobPriority::High < JobPriority::Low, "best first");
        let err = "urgent".parse::<JobPriority>().unwrap_err().to_string();
        assert_eq!(err, r#"unknown priority (high, normal or low) "urgent""#);
    }
}
