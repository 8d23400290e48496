//! The node's own certificate, followed while the node runs: an operator rotates it by
//! installing a new certificate and key over the configured files (while the old certificate is
//! still valid), and the node takes them up without a restart.
//!
//! - [`NodeFiles`] tells when the certificate, key or CRL file changed (modification time and
//!   size). The listener's reload loop (`super::reload_crl_loop`) rebuilds the server and client
//!   TLS configurations from the files whenever it says so: new connections get the new
//!   certificate, live ones keep theirs.
//! - [`follow_node_certificate`] swaps the key new manifests are signed with
//!   ([`ManifestSigner::replace`]), polling on the same interval (`[tls] crl-reload`). It only
//!   takes a certificate of the same node (department, role, name); another is an ERROR and the
//!   old key stays. A certificate and key that do not match yet (one file written, the other
//!   not) are tried again on the next tick.
//!
//! Versions signed with the old key stay verifiable: manifests are judged by the time they were
//! signed (`ferry_net::sign::signed_time`), so revoking the old certificate afterwards with
//! reason `superseded` leaves them valid.

use crate::telemetry::Metrics;
use ferry_net::sign::ManifestSigner;
use ferry_net::tls::{Credentials, TlsPaths};
use ferry_proto::Principal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What tells us a file changed without reading it.
type Stamp = Option<(Option<SystemTime>, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()))
}

/// The certificate, key and CRL files of a node, and how they looked when last taken up.
#[derive(Debug)]
pub struct NodeFiles {
    paths: Vec<PathBuf>,
    seen: Vec<Stamp>,
}

impl NodeFiles {
    /// Watches the files of `tls` as they are now.
    pub fn new(tls: &TlsPaths) -> Self {
        let mut paths = vec![tls.cert.clone(), tls.key.clone()];
        paths.extend(tls.crl.clone());
        let seen = paths.iter().map(|p| stamp(p)).collect();
        Self { paths, seen }
    }

    /// The files' stamps now, when any differs from the last one taken up.
    pub fn pending(&self) -> Option<Vec<Stamp>> {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        (now != self.seen).then_some(now)
    }

    /// Marks `stamps` (from [`NodeFiles::pending`]) as taken up.
    pub fn taken(&mut self, stamps: Vec<Stamp>) {
        self.seen = stamps;
    }

    /// Whether a file changed since the last call; the change counts as taken up.
    pub fn changed(&mut self) -> bool {
        match self.pending() {
            Some(stamps) => {
                self.taken(stamps);
                true
            }
            None => false,
        }
    }
}

/// Whether `new` is a certificate of the node `running` is.
fn same_node(running: &Principal, new: &Principal) -> bool {
    (&running.dept, running.role, &running.name) == (&new.dept, new.role, &new.name)
}

/// What [`take_up`] did with the files as they are.
#[derive(Debug, PartialEq, Eq)]
enum TakeUp {
    /// Signing with a new certificate (its serial).
    Rotated(String),
    /// The same certificate (only the CRL, or the files' times, changed).
    Unchanged,
    /// Not taken: the old key stays. `retry` when the files may still be being written.
    Refused { reason: String, retry: bool },
}

fn take_up(tls: &TlsPaths, signer: &ManifestSigner) -> TakeUp {
    let creds = match Credentials::load(tls) {
        Ok(creds) => creds,
        Err(e) => return TakeUp::Refused { reason: e.to_string(), retry: true },
    };
    let running = signer.principal();
    let new = creds.principal();
    if new.serial == running.serial {
        return TakeUp::Unchanged;
    }
    if !same_node(&running, new) {
        let reason = format!(
            "the new certificate is {}/{}/{}, this node is {}/{}/{}",
            new.dept, new.role, new.name, running.dept, running.role, running.name
        );
        return TakeUp::Refused { reason, retry: false };
    }
    match signer.replace(&creds) {
        Ok(()) => TakeUp::Rotated(new.serial.clone()),
        Err(e) => TakeUp::Refused { reason: e.to_string(), retry: false },
    }
}

/// Polls the node's certificate and key every `every` until `draining`, and signs new
/// manifests with a rotated certificate from the moment it is installed.
pub async fn follow_node_certificate(
    tls: TlsPaths,
    every: Duration,
    signer: ManifestSigner,
    metrics: Arc<Metrics>,
    mut draining: watch::Receiver<bool>,
) {
    let mut files = NodeFiles::new(&tls);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = draining.wait_for(|d| *d) => return,
        }
        let Some(stamps) = files.pending() else { continue };
        let old = signer.principal().serial;
        match take_up(&tls, &signer) {
            TakeUp::Rotated(serial) => {
                metrics.certificate_rotations.inc();
                tracing::info!(old_serial = %old, new_serial = %serial, "node certificate rotated: new manifests are signed with the new key");
            }
            TakeUp::Unchanged => {}
            TakeUp::Refused { reason, retry: true } => {
                tracing::warn!(%reason, "cannot take up the node's certificate files yet; trying again");
                continue;
            }
            TakeUp::Refused { reason, retry: false } => {
                tracing::error!(%reason, "refusing the node's new certificate; still signing with the old one");
            }
        }
        files.taken(stamps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::pki::{self, IssueRequest};
    use ferry_proto::{DeptId, Role};
    use time::OffsetDateTime;

    fn issue(dir: &std::path::Path, dept: &str, name: &str, file: &str) -> TlsPaths {
        let now = OffsetDateTime::now_utc();
        let request = IssueRequest {
            dept: DeptId::new(dept).expect("dept"),
            role: Role::Ministry,
            name: name.into(),
            dns_names: vec![name.into()],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(1),
        };
        let (cert, key) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        pki::issue(dir, &request, &cert, &key).expect("issue");
        TlsPaths { ca: dir.join("ca.pem"), cert, key, crl: Some(dir.join("crl.pem")) }
    }

    /// Installs the files of `from` over those of `to`, as an operator rotating would.
    fn install(from: &TlsPaths, to: &TlsPaths) {
        std::fs::copy(&from.cert, &to.cert).expect("cert");
        std::fs::copy(&from.key, &to.key).expect("key");
    }

    #[test]
    fn a_new_certificate_of_the_same_node_is_taken_up_another_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        pki::init(dir.path(), "CA", time::Duration::days(2)).expect("CA");
        let live = issue(dir.path(), "ministry", "ministry", "node");
        let signer = ManifestSigner::new(&Credentials::load(&live).expect("creds")).expect("signer");
        let mut files = NodeFiles::new(&live);
        assert!(!files.changed());
        assert_eq!(take_up(&live, &signer), TakeUp::Unchanged);

        let rotated = issue(dir.path(), "ministry", "ministry", "node-2");
        install(&rotated, &live);
        assert!(files.changed(), "the copied files differ");
        let serial = Credentials::load(&rotated).expect("creds").principal().serial.clone();
        assert_eq!(take_up(&live, &signer), TakeUp::Rotated(serial.clone()));
        assert_eq!(signer.principal().serial, serial);

        let other = issue(dir.path(), "guangdong", "guangdong", "other");
        install(&other, &live);
        assert!(matches!(take_up(&live, &signer), TakeUp::Refused { retry: false, .. }));
        assert_eq!(signer.principal().serial, serial, "still the rotated key");

        // Half-written: the key of one certificate beside another's certificate.
        let third = issue(dir.path(), "ministry", "ministry", "node-3");
        std::fs::copy(&third.cert, &live.cert).expect("cert only");
        assert!(matches!(take_up(&live, &signer), TakeUp::Refused { retry: true, .. }));
    }
}
