//! Files of a PKI directory: atomic writes, the operation lock and the `issued.json` registry.
//!
//! Every file is written to a temporary name in its final directory (created with its final
//! mode, 0600 for private keys, before any byte is written), fsynced, then renamed into place,
//! and the directory is fsynced. Files that must never be replaced (keys, issued certificates)
//! are moved with a no-clobber rename, so two racing writers cannot overwrite each other.

use super::{PkiError, RevocationReason};
use ferry_proto::{DeptId, Role};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Mode of private key files.
pub(crate) const SECRET_MODE: u32 = 0o600;
/// Mode of certificates, CRLs and the registry (the umask still applies).
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Whether an existing file at the destination may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    Allowed,
    Refused,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically with `mode`; with [`Replace::Refused`] an existing file
/// is an [`PkiError::OutputExists`] and is left untouched.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32, replace: Replace) -> Result<(), PkiError> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ferry-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    tmp.write_all(bytes).map_err(io_error(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_error(tmp.path()))?;
    let persisted = match replace {
        Replace::Allowed => tmp.persist(path),
        Replace::Refused => tmp.persist_noclobber(path),
    };
    if let Err(e) = persisted {
        return Err(if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::OutputExists { path: path.to_owned() }
        } else {
            PkiError::Io { path: path.to_owned(), source: e.error }
        });
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(io_error(path))
}

pub(crate) fn read_string(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

/// Held while an operation changes a PKI directory; removes its lock file when dropped.
///
/// A crash leaves the lock file behind; the error tells the operator which file to remove.
#[derive(Debug)]
pub(crate) struct DirLock {
    path: PathBuf,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, PkiError> {
        let path = dir.join(".lock");
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(Self { path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(PkiError::Busy { lock: path }),
            Err(source) => Err(PkiError::Io { path, source }),
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Nothing useful to do if removal fails; the next operation reports the stale lock.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One certificate the CA issued, as kept in `issued.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IssuedRecord {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    pub dept: DeptId,
    pub role: Role,
    pub name: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub reason: Option<RevocationReason>,
}

/// A revoked certificate this CA signed that is not in the registry (issued by hand, or by an
/// earlier copy of the CA whose `issued.json` was lost), known by its serial alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutsideRevocation {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// Contents of `issued.json`: the CRL number last used, every certificate issued, and the
/// revoked ones signed outside the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Registry {
    pub crl_number: u64,
    pub certs: Vec<IssuedRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<OutsideRevocation>,
}

impl Registry {
    pub(crate) fn load(path: &Path) -> Result<Self, PkiError> {
        let bytes = read(path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PkiError::Corrupt { path: path.to_owned(), reason: e.to_string() })
    }

    pub(crate) fn save(&self, path: &Path) -> Result<(), PkiError> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| PkiError::Corrupt { path: path.to_owned(), reason: e.to_string() })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes, PUBLIC_MODE, Replace::Allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn secret_files_are_0600_and_noclobber_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("k.pem");
        write_atomic(&key, b"secret", SECRET_MODE, Replace::Refused).expect("write");
        let mode = std::fs::metadata(&key).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = write_atomic(&key, b"other", SECRET_MODE, Replace::Refused);
        assert!(matches!(again, Err(PkiError::OutputExists { .. })));
        assert_eq!(std::fs::read(&key).expect("read"), b"secret");
        write_atomic(&key, b"new", SECRET_MODE, Replace::Allowed).expect("replace");
        assert_eq!(std::fs::read(&key).expect("read"), b"new");
        let leftovers = std::fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(leftovers, 1, "no temporary files remain");
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = DirLock::acquire(dir.path()).expect("first");
        assert!(matches!(DirLock::acquire(dir.path()), Err(PkiError::Busy { .. })));
        drop(held);
        DirLock::acquire(dir.path()).expect("after release");
    }
}
