//! Side A of one profile's link: the ministry `ferryd` with the published version, the hard
//! links to its stored files that the peers serve, and the peers' servers (nginx, sshd) placed
//! in namespace A.
//!
//! Neighbours: [`crate::fleet`] starts the node, [`crate::servers`] the peers' servers;
//! [`super::runs`] pulls from them in namespace B.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_net::tls::TlsPaths;
use ferry_proto::Role;

use super::WanArgs;
use super::runs::strip_ansi;
use crate::fleet::{Binaries, Launcher, NodeOptions, NodeProc, Pki, VersionFiles};
use crate::netem::{EmulatedLink, Side};
use crate::report::{Report, progress};
use crate::servers::{PeerServers, Placement};
use crate::transfer::{DATASET, generate_export, publish};

/// One profile's ministry node in A with the published version, and what the peers serve.
pub(super) struct Site {
    pub(super) scratch: tempfile::TempDir,
    /// The CA and certificates (their files live as long as it does).
    _pki: Pki,
    pub(super) node: NodeProc,
    pub(super) consumer: TlsPaths,
    /// Hard links to the node's stored files: what nginx and sshd serve.
    pub(super) peer_root: PathBuf,
    pub(super) version: VersionFiles,
    /// The version's file names, in order.
    pub(super) names: Vec<String>,
    /// Rows of 1 MiB in the version.
    pub(super) size_mib: usize,
    /// Length of ferryd.log after the publish (later lines were logged during the runs).
    log_start: usize,
}

impl Site {
    pub(super) fn prepare(
        args: &WanArgs,
        bins: &Binaries,
        link: &EmulatedLink,
        size_mib: usize,
    ) -> Result<Self> {
        let root = args.scratch.root()?;
        let prefix = format!("ferry-bench-wan-{}-", link.profile().name);
        let scratch = tempfile::Builder::new().prefix(&prefix).tempdir_in(&root)?;
        let export = generate_export(scratch.path(), size_mib, args.scratch.seed)?;
        let pki = Pki::new();
        let launcher = Launcher::in_netns(link.namespace(Side::A));
        let opts = NodeOptions::ministry(size_mib.div_ceil(args.files), link.addr(Side::A), launcher);
        let started = Instant::now();
        let node = NodeProc::start(bins, &pki, scratch.path(), &opts)?;
        link.run_in(Side::A, || publish(&node, &export))??;
        std::fs::remove_file(&export)?;
        let consumer = pki.issue("bench-consumer", "zhejiang", Role::Operator);
        let peer_root = scratch.path().join("peer-root");
        let version = VersionFiles::link(&node.version_dir(DATASET, 1), &peer_root)?;
        let names = version.names();
        let log_start = std::fs::metadata(node.dir.join("ferryd.log")).map_or(0, |m| m.len() as usize);
        progress(&format!(
            "ferryd in {} on {}, version published in {:.1} s: {} files, {} bytes",
            link.namespace(Side::A),
            node.addr,
            started.elapsed().as_secs_f64(),
            names.len(),
            version.bytes
        ));
        Ok(Self { scratch, _pki: pki, node, consumer, peer_root, version, names, size_mib, log_start })
    }

    /// A fresh empty directory for one contender's run.
    pub(super) fn dest(&self, name: &str) -> Result<PathBuf> {
        crate::fleet::fresh_dir(self.scratch.path(), name)
    }

    /// Fails unless `dir` holds exactly the version's files (size and BLAKE3).
    pub(super) fn check(&self, dir: &Path, who: &str) -> Result<()> {
        self.version.check_copy(dir, who)
    }

    /// What ferryd logged (at `warn`) since the publish, without ANSI colours.
    pub(super) fn node_log(&self) -> String {
        let text = std::fs::read(self.node.dir.join("ferryd.log")).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(text.get(self.log_start..).unwrap_or_default()))
    }

    /// Starts the servers of the peers `keys` (those in `only`, when given) in namespace A,
    /// serving the version's files; skipped peers are noted in `report`.
    pub(super) fn start_peers(
        &self,
        link: &EmulatedLink,
        keys: &[&'static str],
        only: Option<&[String]>,
        report: &mut Report,
    ) -> PeerServers {
        PeerServers::start(keys, only, self.scratch.path(), &self.peer_root, &in_side_a(link), report)
    }
}

/// Servers in namespace A of `link`, on its address there, started through `ip netns exec`.
fn in_side_a(link: &EmulatedLink) -> Placement<'_> {
    let addr = link.addr(Side::A);
    Placement {
        addr,
        launcher: Launcher::in_netns(link.namespace(Side::A)),
        free_port: Box::new(move || {
            let listener = link.run_in(Side::A, || TcpListener::bind((addr, 0)))??;
            Ok(listener.local_addr()?.port())
        }),
        connects: Box::new(|to: SocketAddr| {
            link.run_in(Side::A, || TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok())
                .unwrap_or(false)
        }),
        location: " in A",
    }
}
