//! What the scrub does about a damaged file: sets it aside under `quarantine/`, then puts back a
//! verified copy — a chunk-hash file rebuilt from its part file when that checked good, anything
//! else fetched again from a peer (see the module doc of [`super`]).

use super::check::Problem;
use super::{Finding, Object, Outcome, Scrubber};
use crate::data::blob::{BlobError, BlobStore};
use crate::data::store::{SignedDigest, StoredVersion};
use crate::data::version::{Reading, hash_chunks};
use ferry_client::conn::Connector;
use ferry_client::transfer::{self, PullOptions, PullRequest, Quiet, SIGNED_NAME};
use ferry_net::conn::NodeAddr;
use ferry_proto::Manifest;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes copied at a time while a damaged file is set aside.
const COPY_PIECE: u64 = 1 << 20;

/// A damaged object on its way to a finding.
struct Pending {
    object: Object,
    problem: Problem,
    quarantined: Option<String>,
}

impl Scrubber {
    /// Sets each damaged object aside and repairs what it can; one finding per object.
    pub(super) async fn repair(
        &self,
        version: &StoredVersion,
        damaged: Vec<(Object, Problem)>,
        good_hashes: &HashMap<usize, PathBuf>,
        scratch: &Path,
    ) -> Vec<Finding> {
        let m = &version.manifest;
        let mut findings = Vec::new();
        let mut pending = Vec::new();
        for (object, problem) in damaged {
            let movable = !matches!(problem, Problem::Missing | Problem::Unreadable { .. });
            let quarantined = if movable {
                match self.quarantine(&object.key(m), object == Object::Manifest, scratch).await {
                    Ok(to) => Some(to),
                    Err(e) => {
                        let reason = format!("cannot set it aside ({e}); left in place");
                        findings.push(finding(m, Pending { object, problem, quarantined: None }, reason));
                        continue;
                    }
                }
            } else {
                None
            };
            pending.push(Pending { object, problem, quarantined });
        }
        let mut rest = Vec::new();
        for p in pending {
            match p.object {
                Object::Hashes(i) if good_hashes.contains_key(&i) => {
                    let outcome = match self.blobs().move_file(&p.object.key(m), &good_hashes[&i]).await {
                        Ok(()) => Outcome::Repaired { from: "rebuilt from its verified part file".into() },
                        Err(e) => Outcome::Unrepairable { reason: format!("cannot write it again: {e}") },
                    };
                    findings.push(Finding { outcome, ..finding(m, p, String::new()) });
                }
                _ => rest.push(p),
            }
        }
        if !rest.is_empty() {
            findings.extend(self.fetch_from_peers(version, rest, scratch).await);
        }
        findings
    }

    fn blobs(&self) -> &dyn BlobStore {
        self.parts.store.blobs().as_ref()
    }

    /// Copies the object at `key` to `quarantine/<unix seconds>/<key>` a piece at a time, then
    /// removes it unless `keep`. Returns where it went.
    async fn quarantine(&self, key: &str, keep: bool, scratch: &Path) -> Result<String, BlobError> {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let to = format!("quarantine/{secs}/{key}");
        let local = scratch.join("quarantine");
        let size = self.blobs().size(key).await?;
        let mut file = std::fs::File::create(&local).map_err(local_error(&local))?;
        let mut offset = 0;
        while offset < size {
            let end = (offset + COPY_PIECE).min(size);
            let piece = self.blobs().get_range(key, offset..end).await?;
            file.write_all(&piece).map_err(local_error(&local))?;
            offset = end;
        }
        file.sync_all().map_err(local_error(&local))?;
        drop(file);
        self.blobs().move_file(&to, &local).await?;
        if !keep {
            self.blobs().delete(key).await?;
        }
        Ok(to)
    }

    /// Pulls the version from each peer in turn until every pending object is put back. A
    /// chunk-hash file is written with its part file, so it follows that part file's outcome.
    async fn fetch_from_peers(
        &self,
        version: &StoredVersion,
        rest: Vec<Pending>,
        scratch: &Path,
    ) -> Vec<Finding> {
        let m = &version.manifest;
        let (with_part, mut rest): (Vec<Pending>, Vec<Pending>) =
            rest.into_iter().partition(|p| matches!(p.object, Object::Hashes(_)));
        let mut findings = Vec::new();
        let mut repaired_parts = Vec::new();
        let mut tried = Vec::new();
        for (name, addr) in &self.parts.peers {
            if rest.is_empty() {
                break;
            }
            let root = scratch.join("pull");
            let pulled = match self.pull_from(addr, m, &root).await {
                Ok(dir) => dir,
                Err(e) => {
                    tracing::warn!(peer = name, dataset = %m.dataset, version = %m.version, error = %e, "scrub could not fetch a copy from this peer");
                    tried.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let mut still = Vec::new();
            for p in rest {
                match self.put_back(version, p.object, &pulled, scratch).await {
                    Ok(()) => {
                        repaired_parts.push(p.object);
                        let from = format!("peer {name}");
                        findings.push(Finding {
                            outcome: Outcome::Repaired { from },
                            ..finding(m, p, String::new())
                        });
                    }
                    Err(e) => {
                        tried.push(format!("{name}: {e}"));
                        still.push(p);
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&root);
            rest = still;
        }
        let reason = match tried.is_empty() {
            true => "no peer is configured to fetch a good copy from".to_owned(),
            false => format!("no peer had a good copy ({})", tried.join("; ")),
        };
        findings.extend(rest.into_iter().map(|p| finding(m, p, reason.clone())));
        for p in with_part {
            let Object::Hashes(i) = p.object else { continue };
            if repaired_parts.contains(&Object::Part(i)) {
                let from = "written again with its part file".to_owned();
                findings
                    .push(Finding { outcome: Outcome::Repaired { from }, ..finding(m, p, String::new()) });
            } else {
                findings.push(finding(m, p, format!("its part file is damaged too: {reason}")));
            }
        }
        findings
    }

    /// Pulls every file of the version from `peer` into `root`; returns the version's directory.
    async fn pull_from(&self, peer: &NodeAddr, m: &Manifest, root: &Path) -> Result<PathBuf, String> {
        let connector = Connector::with_endpoint(self.parts.endpoint.clone(), peer.clone())
            .with_loopback_config(&self.parts.creds)
            .map_err(|e| e.to_string())?;
        let opts = PullOptions { rate_limit: Some(self.parts.config.rate), ..PullOptions::default() };
        let request = PullRequest { dataset: m.dataset.clone(), version: Some(m.version) };
        let cancel = self.parts.draining.clone();
        let report =
            transfer::pull(&connector, &self.parts.creds, &request, root, &opts, Arc::new(Quiet), cancel)
                .await
                .map_err(|e| e.to_string())?;
        Ok(report.path)
    }

    /// Checks one object of a pulled copy against this node's manifest and stores it.
    async fn put_back(
        &self,
        version: &StoredVersion,
        object: Object,
        pulled: &Path,
        scratch: &Path,
    ) -> Result<(), String> {
        let m = &version.manifest;
        match object {
            Object::Manifest => {
                let bytes = std::fs::read(pulled.join(SIGNED_NAME)).map_err(|e| e.to_string())?;
                if SignedDigest::of(&bytes) != version.signed {
                    return Err("its signed manifest differs from this node's".into());
                }
                self.blobs().put(&object.key(m), bytes.into()).await.map_err(|e| e.to_string())
            }
            // A chunk-hash file is written with its part file (see `fetch_from_peers`).
            Object::Part(i) | Object::Hashes(i) => {
                let entry = &m.files[i];
                let local = entry.name.components().fold(pulled.to_path_buf(), |p, c| p.join(c));
                let hashes = scratch.join(format!("pulled-hashes-{i}"));
                let (from, to, chunk_size) = (local.clone(), hashes.clone(), m.chunk_size);
                let found = tokio::task::spawn_blocking(move || write_hashes(&from, &to, chunk_size))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{}: {e}", local.display()))?;
                if found.size != entry.size
                    || found.chunk_pages != entry.chunk_pages
                    || found.blake3 != entry.blake3
                {
                    return Err(format!("its copy of {} does not match the signed manifest", entry.name));
                }
                let part_key = Object::Part(i).key(m);
                self.blobs().move_file(&part_key, &local).await.map_err(|e| e.to_string())?;
                let hashes_key = Object::Hashes(i).key(m);
                self.blobs().move_file(&hashes_key, &hashes).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// Hashes a pulled file (written around the page cache, so read the same way), writing its
/// chunk hashes to `out`.
fn write_hashes(
    file: &Path,
    out: &Path,
    chunk_size: u32,
) -> std::io::Result<crate::data::version::FileHashes> {
    let mut output = std::io::BufWriter::new(std::fs::File::create(out)?);
    let found = hash_chunks(file, chunk_size, Reading::Direct, |chunk| output.write_all(&chunk.0))?;
    output.flush()?;
    Ok(found)
}

fn finding(m: &Manifest, p: Pending, reason: String) -> Finding {
    Finding {
        dataset: m.dataset.clone(),
        version: m.version,
        file: p.object.name(m),
        problem: p.problem,
        quarantined: p.quarantined,
        outcome: Outcome::Unrepairable { reason },
    }
}

fn local_error(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Local { path: path.to_owned(), source }
}
