//! Relative file names from manifests. A name that could escape the destination directory
//! (`..`, absolute or Windows drive-prefixed, NUL, backslash, empty or `.` components, control
//! characters) never parses. Manifests ([`crate::manifest`]) hold these; the daemon and client join
//! them under their destination directories.

use serde::{Deserialize, Serialize};

/// Why a file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("file name is empty")]
    Empty,
    #[error("file name {0:?} is longer than 1024 bytes")]
    TooLong(String),
    #[error("file name {0:?} is absolute")]
    Absolute(String),
    #[error("file name {0:?} has a `..`, `.` or empty component")]
    Traversal(String),
    #[error("file name {0:?} contains NUL, a backslash or a control character")]
    BadChar(String),
    #[error("file name {0:?} has a component longer than 255 bytes")]
    ComponentTooLong(String),
}

/// A validated relative path with `/` separators, safe to join under any directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 1024;
    /// Longest accepted component, in bytes.
    pub const MAX_COMPONENT_LEN: usize = 255;

    /// Validates a relative file name (see the module doc for what is refused).
    pub fn parse(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(PathError::TooLong(s));
        }
        if s.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(PathError::BadChar(s));
        }
        if s.starts_with('/') || has_drive_prefix(&s) {
            return Err(PathError::Absolute(s));
        }
        if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(PathError::Traversal(s));
        }
        if s.split('/').any(|c| c.len() > Self::MAX_COMPONENT_LEN) {
            return Err(PathError::ComponentTooLong(s));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// Whether the first component is a Windows drive (`C:`, `c:foo`), which would make the name
/// absolute or drive-relative when joined on Windows.
fn has_drive_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        Self::parse(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_names() {
        for ok in ["part-00000.parquet", "a/b.parquet", "a/b/c", "x.y..z", "..a", "a..", "é/ü"] {
            assert_eq!(RelPath::parse(ok).map(String::from), Ok(ok.to_owned()), "{ok}");
        }
        let p = RelPath::parse("a/b.parquet").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b.parquet"]);
    }

    #[test]
    fn refuses_names_that_escape_or_confuse() {
        type Expected = fn(String) -> PathError;
        let cases: [(&str, Expected); 14] = [
            ("../x", PathError::Traversal),
            ("a/../b", PathError::Traversal),
            ("a/..", PathError::Traversal),
            ("a//b", PathError::Traversal),
            ("./a", PathError::Traversal),
            ("a/", PathError::Traversal),
            ("/etc/passwd", PathError::Absolute),
            ("C:/x", PathError::Absolute),
            ("c:x", PathError::Absolute),
            ("C:", PathError::Absolute),
            ("a\\b", PathError::BadChar),
            ("a\0b", PathError::BadChar),
            ("a\nb", PathError::BadChar),
            ("a\u{7f}b", PathError::BadChar),
        ];
        for (name, error) in cases {
            assert_eq!(RelPath::parse(name), Err(error(name.to_owned())), "{name:?}");
        }
        assert_eq!(RelPath::parse(""), Err(PathError::Empty));
    }

    #[test]
    fn refuses_overlong_names() {
        let component = "a".repeat(300);
        assert_eq!(
            RelPath::parse(format!("x/{component}")),
            Err(PathError::ComponentTooLong(format!("x/{component}")))
        );
        assert!(RelPath::parse("a".repeat(255)).is_ok());
        let long = vec!["b".repeat(200); 6].join("/");
        assert!(matches!(RelPath::parse(long), Err(PathError::TooLong(_))));
        let limit = vec!["c".repeat(204); 5].join("/");
        assert_eq!(limit.len(), 1024);
        assert!(RelPath::parse(limit).is_ok());
    }

    #[test]
    fn serde_validates() {
        let ok: RelPath = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(ok.as_str(), "a/b");
        assert!(serde_json::from_str::<RelPath>("\"../b\"").is_err());
    }
}
