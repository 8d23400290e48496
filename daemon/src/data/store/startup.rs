//! Loading the store's index at start-up, and the rule that a version number is never used
//! twice.
//!
//! Each `datasets/<id>/v<N>` with a `manifest.signed` is a version. It is indexed (served) when:
//! - its manifest verifies, judged by the time it was signed ([`ferry_net::sign::signed_time`]):
//!   a version signed with a certificate that has since expired, or was revoked as superseded
//!   when the node got a new one, stays served;
//! - it is the manifest of that dataset and number;
//! - every file it lists, and each file's chunk hashes, is present with the size the manifest
//!   gives (the contents are re-hashed by the scrub, see [`crate::data::scrub`]).
//!
//! A version that fails is **set aside**: not served, but never deleted, moved or overwritten.
//! Its files stay where they are, a note saying why is written beside them
//! (`v<N>/.ferry/set-aside`, a reserved name no manifest file can take), the failure is logged as
//! an ERROR (an operator must act) and counted (`ferry_store_set_aside_versions`). Its number
//! stays taken: [`Store::next_version`] is one above the highest number present, set-aside
//! versions included, and a commit of a set-aside number is refused. Nothing about being set
//! aside is sticky: each start-up judges the version again, so a version set aside by a
//! configuration mistake (a wrong CA file) comes back once the mistake is fixed.
//!
//! A `v<N>` without a manifest is an interrupted commit, not a version: its number is taken
//! again by the next commit, which overwrites the leftovers (the manifest is written last, so no
//! one ever saw that version).

use super::{
    BlobError, DEFINITION_NAME, DatasetIndex, MANIFEST_NAME, SignedDigest, Store, StoreError, StoredVersion,
    chunk_hashes_key, definition_name, file_path, last_segment, poisoned,
};
use bytes::Bytes;
use ferry_net::sign::{ManifestVerifier, SignerStanding};
use ferry_net::tls::Credentials;
use ferry_proto::{CHUNK_HASH_LEN, DatasetId, Manifest, SignedManifest, VersionNo};
use std::sync::Arc;

/// Key of the note beside a set-aside version's files.
pub(crate) fn set_aside_note_key(dataset: &DatasetId, version: VersionNo) -> String {
    format!("{}/.ferry/set-aside", super::version_prefix(dataset, version))
}

/// A version the store holds but does not serve (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub dataset: DatasetId,
    pub version: VersionNo,
    /// Why, as logged.
    pub reason: String,
}

/// How one stored version was judged.
enum Judged {
    Indexed(Arc<StoredVersion>, SignerStanding),
    SetAside(String),
}

impl Store {
    /// Indexes every version that passes (see the module documentation) and sets the others
    /// aside. A storage error other than a missing object stops the start.
    pub(super) async fn load_index(&self, creds: &Credentials) -> Result<(), StoreError> {
        let verifier = ManifestVerifier::new(creds).map_err(|e| StoreError::Open(e.to_string()))?;
        for prefix in self.blobs.list_dirs("datasets").await? {
            let Ok(id) = DatasetId::new(last_segment(&prefix)) else { continue };
            let mut entry = DatasetIndex::default();
            if let Ok(text) = self.blobs.get(&format!("{prefix}/{DEFINITION_NAME}")).await {
                entry.name = definition_name(&text);
            }
            let mut kept_by_signed_time = 0usize;
            for vprefix in self.blobs.list_dirs(&prefix).await? {
                let Some(number) = last_segment(&vprefix)
                    .strip_prefix('v')
                    .and_then(|n| n.parse().ok())
                    .and_then(|n| VersionNo::new(n).ok())
                else {
                    continue;
                };
                let bytes = match self.blobs.get(&format!("{vprefix}/{MANIFEST_NAME}")).await {
                    Ok(bytes) => bytes,
                    Err(BlobError::NotFound { .. }) => {
                        tracing::warn!(dataset = %id, version = %number, "ignoring a version without a manifest (interrupted commit)");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match self.judge(&bytes, &verifier, &id, number).await? {
                    Judged::Indexed(version, standing) => {
                        kept_by_signed_time += usize::from(standing == SignerStanding::ValidWhenSigned);
                        self.clear_set_aside_note(&id, number).await;
                        entry.versions.insert(number, version);
                    }
                    Judged::SetAside(reason) => {
                        let aside = self.set_version_aside(&id, number, reason).await;
                        entry.set_aside.insert(number, aside);
                    }
                }
            }
            if kept_by_signed_time > 0 {
                tracing::info!(dataset = %id, versions = kept_by_signed_time, "serving versions whose signer's certificate has since expired or been superseded, as valid when they were signed");
            }
            self.index.write().map_err(poisoned)?.insert(id, entry);
        }
        Ok(())
    }

    /// Judges one stored version; `Err` only for a storage error other than a missing object.
    async fn judge(
        &self,
        bytes: &[u8],
        verifier: &ManifestVerifier,
        id: &DatasetId,
        number: VersionNo,
    ) -> Result<Judged, StoreError> {
        let signed = match SignedManifest::decode(bytes) {
            Ok(signed) => signed,
            Err(e) => return Ok(Judged::SetAside(format!("manifest does not decode: {e}"))),
        };
        let verified = match verifier.verify_judged(&signed, rustls::pki_types::UnixTime::now()) {
            Ok(verified) => verified,
            Err(e) => return Ok(Judged::SetAside(format!("manifest fails verification: {e}"))),
        };
        let manifest = verified.manifest;
        if &manifest.dataset != id || manifest.version != number {
            let found = format!("{} {}", manifest.dataset, manifest.version);
            return Ok(Judged::SetAside(format!("manifest is for {found}")));
        }
        if let Some(problem) = self.missing_or_resized(&manifest).await? {
            return Ok(Judged::SetAside(problem));
        }
        let version = StoredVersion { manifest, signer: verified.signer, signed: SignedDigest::of(bytes) };
        Ok(Judged::Indexed(Arc::new(version), verified.standing))
    }

    /// The first file of `m`, or file of chunk hashes, that is missing or not the size the
    /// manifest gives.
    async fn missing_or_resized(&self, m: &Manifest) -> Result<Option<String>, StoreError> {
        for (index, entry) in m.files.iter().enumerate() {
            let hashes = m.chunk_count(entry.size).saturating_mul(CHUNK_HASH_LEN as u64);
            let objects = [
                (file_path(&m.dataset, m.version, &entry.name), entry.size, entry.name.to_string()),
                (
                    chunk_hashes_key(&m.dataset, m.version, index),
                    hashes,
                    format!("chunk hashes of {}", entry.name),
                ),
            ];
            for (key, expected, what) in objects {
                match self.blobs.size(&key).await {
                    Ok(size) if size == expected => {}
                    Ok(size) => {
                        return Ok(Some(format!("{what} is {size} bytes, the manifest says {expected}")));
                    }
                    Err(BlobError::NotFound { .. }) => return Ok(Some(format!("{what} is missing"))),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(None)
    }

    /// Logs, counts and notes a version set aside; its files stay untouched.
    async fn set_version_aside(&self, id: &DatasetId, number: VersionNo, reason: String) -> SetAside {
        tracing::error!(dataset = %id, version = %number, %reason, "setting a stored version aside: not serving it; its files stay and its number is not reused");
        let note = format!("{reason}\n");
        if let Err(e) = self.blobs.put(&set_aside_note_key(id, number), Bytes::from(note)).await {
            tracing::warn!(dataset = %id, version = %number, error = %e, "cannot write the set-aside note");
        }
        SetAside { dataset: id.clone(), version: number, reason }
    }

    /// Removes the note of a version set aside by an earlier start that passes now.
    async fn clear_set_aside_note(&self, id: &DatasetId, number: VersionNo) {
        let key = set_aside_note_key(id, number);
        if self.blobs.size(&key).await.is_ok() {
            tracing::info!(dataset = %id, version = %number, "a version set aside before passes now; serving it again");
            if let Err(e) = self.blobs.delete(&key).await {
                tracing::warn!(dataset = %id, version = %number, error = %e, "cannot remove the set-aside note");
            }
        }
    }

    /// The versions set aside at start-up, by dataset and number.
    pub fn set_aside(&self) -> Vec<SetAside> {
        let Ok(index) = self.index.read() else { return Vec::new() };
        index.values().flat_map(|entry| entry.set_aside.values().cloned()).collect()
    }

    /// Whether `version` of `dataset` is indexed or set aside: a commit must not take it.
    pub(super) fn number_taken(&self, dataset: &DatasetId, version: VersionNo) -> bool {
        let Ok(index) = self.index.read() else { return true };
        index.get(dataset).is_some_and(|entry| {
            entry.versions.contains_key(&version) || entry.set_aside.contains_key(&version)
        })
    }

    /// The number the next version of `dataset` gets: one above the highest it holds, served or
    /// set aside.
    pub fn next_version(&self, dataset: &DatasetId) -> VersionNo {
        let highest = self.index.read().ok().and_then(|index| {
            let entry = index.get(dataset)?;
            let served = entry.versions.keys().next_back().copied();
            let aside = entry.set_aside.keys().next_back().copied();
            served.max(aside)
        });
        highest.and_then(VersionNo::next).unwrap_or(VersionNo::FIRST)
    }
}

#[cfg(test)]
pub(crate) mod tests;
