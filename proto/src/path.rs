//! Relative file names from manifests. A name that could escape the destination directory
//! (`..`, absolute or Windows drive-prefixed, NUL, backslash, empty or `.` components, control
//! characters) never parses. Manifests ([`crate::manifest`]) hold these; the daemon and client join
//! them under their destination directories.
//!
//! One name has one spelling: a name must be in Unicode normalization form C (NFC), so "é" is
//! U+00E9 and never "e" + U+0301, which displays the same and is the same file where the file
//! system normalizes (macOS). [`NameSet`] refuses two names of one version that would still be
//! one file somewhere a consumer may write them: equal but for case or trailing dots and spaces
//! (Windows, macOS, case-folding Linux file systems), or a file that another name needs as a
//! directory.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;

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
    #[error("file name {0:?} is not in Unicode normalization form C (NFC)")]
    NotNfc(String),
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
        if !unicode_normalization::is_nfc(&s) {
            return Err(PathError::NotNfc(s));
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

/// Two names of one version that some file system would make one file, or a file and a
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "file names {name:?} and {other:?} clash where case or trailing dots and spaces are ignored, or one is the other's directory"
)]
pub struct NameClash {
    pub name: String,
    pub other: String,
}

/// The file names of one version, checked against each other as they are added.
#[derive(Debug, Default)]
pub struct NameSet {
    /// Folded name of each file, and the name it was folded from.
    files: HashMap<String, String>,
    /// Folded name of each directory the files need, and a file that needs it.
    dirs: HashMap<String, String>,
}

impl NameSet {
    /// Adds `name`, or says which name already added it clashes with.
    pub fn insert(&mut self, name: &RelPath) -> Result<(), NameClash> {
        let clash = |other: &String| NameClash { name: name.to_string(), other: other.clone() };
        let folded: Vec<String> = name.components().map(fold).collect();
        let key = folded.join("/");
        if let Some(other) = self.files.get(&key).or_else(|| self.dirs.get(&key)) {
            return Err(clash(other));
        }
        let dirs: Vec<String> = (1..folded.len()).map(|n| folded[..n].join("/")).collect();
        if let Some(other) = dirs.iter().find_map(|dir| self.files.get(dir)) {
            return Err(clash(other));
        }
        self.files.insert(key, name.to_string());
        for dir in dirs {
            self.dirs.entry(dir).or_insert_with(|| name.to_string());
        }
        Ok(())
    }
}

/// A component as a file system that ignores case and trailing dots and spaces sees it:
/// two components with the same fold may be one file there.
pub fn fold(component: &str) -> String {
    let lower: String = component.to_lowercase().nfc().collect();
    lower.trim_end_matches(['.', ' ']).to_owned()
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

    /// Issue 18 §4: "é" as one code point and as "e" + a combining accent display alike and are
    /// one file on a file system that normalizes (macOS); only the composed form (NFC) parses.
    #[test]
    fn names_must_be_nfc() {
        for decomposed in ["e\u{301}.parquet", "a/cafe\u{301}", "\u{212b}"] {
            assert!(RelPath::parse(decomposed).is_err(), "{decomposed:?} is not NFC");
        }
        for composed in ["\u{e9}.parquet", "a/caf\u{e9}", "\u{c5}", "\u{5e73}\u{6210}/x"] {
            assert!(RelPath::parse(composed).is_ok(), "{composed:?} is NFC");
        }
    }

    #[test]
    fn nfc_refusal_is_typed() {
        assert_eq!(RelPath::parse("e\u{301}"), Err(PathError::NotNfc("e\u{301}".into())));
    }

    fn set_of(names: &[&str]) -> Result<NameSet, NameClash> {
        let mut set = NameSet::default();
        for name in names {
            set.insert(&RelPath::parse(*name).unwrap())?;
        }
        Ok(set)
    }

    #[test]
    fn names_one_file_system_would_merge_clash() {
        let cases: [(&[&str], &str); 6] = [
            (&["Part.parquet", "part.parquet"], "Part.parquet"),
            (&["\u{c9}t\u{e9}", "\u{e9}T\u{c9}"], "\u{c9}t\u{e9}"),
            (&["a", "a/b"], "a"),
            (&["a/b", "A"], "a/b"),
            (&["x/y", "X/y"], "x/y"),
            (&["data.", "data"], "data."),
        ];
        for (names, other) in cases {
            let last = names[names.len() - 1];
            let err = set_of(names).err().unwrap_or_else(|| panic!("{names:?} do not clash"));
            assert_eq!(err, NameClash { name: last.into(), other: other.into() }, "{names:?}");
        }
    }

    #[test]
    fn distinct_names_do_not_clash() {
        let names = ["a/b", "a/c", "A-b", "part-00000.parquet", "part-00001.parquet", "\u{e9}", "e", "a.b/c"];
        assert!(set_of(&names).is_ok());
    }

    #[test]
    fn serde_validates() {
        let ok: RelPath = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(ok.as_str(), "a/b");
        assert!(serde_json::from_str::<RelPath>("\"../b\"").is_err());
    }
}
