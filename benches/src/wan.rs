//! Scenario `wan`: the `transfer` scenario's whole-version pull, over an emulated WAN link
//! ([`crate::netem`]) instead of loopback, against the same peer tools on the same link.
//!
//! Setup, per link profile (not measured): a link between namespaces A (10.201.0.1) and B
//! (10.201.0.2) with the profile's rate, delay and random loss in both directions; it is the only
//! path between them. An export of `--size-mib` rows of 1 MiB random payload (default 1024 on
//! wan30, 64 on wan80, where a lossy TCP peer may crawl) is published as ONE version (split
//! into `--files` Parquet files) on a ministry `ferryd` in namespace A, listening on 10.201.0.1;
//! its stored files are what nginx (HTTPS) and sshd, also in A, serve. Every client runs in
//! namespace B, so every byte of every contender crosses the link A→B. Each run then measures,
//! interleaved (ferry, curl, rsync, ferry, …), into empty directories:
//! - ferry: `ferry pull --json` (its defaults: 8 streams, BLAKE3 per chunk) from the `ferryd` in A;
//! - curl `--http1.1` from nginx over HTTPS (TLS 1.3), one curl for all files;
//! - rsync over ssh (`aes128-gcm@openssh.com`, no compression), new files.
//!
//! Every output is checked (size and BLAKE3 of every file). MB/s is 10^6 bytes per second of wall
//! time (connection setup and the client's final commit included); link_fraction is that goodput
//! in bit/s over the profile's rate (which counts IP bytes, so ~0.96 is the ceiling for 1500-byte
//! packets). A run that outlives `--seconds-cap` is stopped; its rate is the bytes it had received
//! by then (ferry: verified bytes of its last progress line; peers: the sizes of the files in its
//! directory) over the cap, and it is named in the notes as capped. The link's counters are
//! recorded per run: random losses, bottleneck queue drops, packets the sender offered per packet
//! delivered (what losses and drops cost it), IP bytes delivered per payload byte (headers and
//! duplicate deliveries; a lost packet's retransmission replaces it, so it does not count twice).
//!
//! TCP in the namespaces (what this host gives; printed in the notes as read in A and B): the
//! default congestion control is the host's, bbr here (a new namespace inherits it; cubic cannot
//! be made the namespaces' default because the host's `tcp_allowed_congestion_control` is
//! `reno bbr`), so curl and rsync run with bbr. The namespaces copy the host's `tcp_wmem` max of
//! 4 MiB, which caps one TCP connection at ~750 Mbit/s at 30 ms; the scenario raises the
//! `tcp_rmem`/`tcp_wmem` max in both namespaces to (at least) 16 MiB, as a tuned WAN host has, and
//! sets `tcp_no_metrics_save` so that every connection starts afresh rather than from the
//! congestion state a previous run left behind. It tries to raise `net.core.rmem_max`/`wmem_max`
//! (the ceiling of UDP socket buffers, i.e. QUIC's) to 16 MiB too; where the kernel keeps them
//! read-only inside a namespace (6.18 does: they are per namespace, copied from the host), they
//! stay at the host's values, and the notes say so. ferry runs with its defaults (no
//! benchmark-only switches): its congestion control is whatever its transport config chooses
//! (named in the notes). `--ferry-pull-arg` adds arguments to `ferry pull` for diagnosis only;
//! the notes then say that the figures are not ferry's defaults.
//!
//! Neighbours: [`crate::netem`] (the link), [`crate::fleet`] (`ferryd` and `ferry` processes),
//! [`crate::servers`] (nginx and sshd, placed in namespace A), [`crate::transfer`] (the export and
//! the publish), [`crate::report`] (the table).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ferry_client::tls::TlsPaths;
use ferry_proto::Role;

use crate::delta::hash_dir;
use crate::fleet::{Binaries, Launcher, NodeOptions, NodeProc, Pki, ferry_command};
use crate::kernel::parquet_files;
use crate::netem::{self, EmulatedLink, LinkProfile, LinkStats, Side};
use crate::report::{self, Report, Unit};
use crate::servers::{self, Placement, Server, Sshd};
use crate::transfer::{DATASET, PROVIDER, progress, publish, write_export};

/// Options of `ferry-bench wan`.
#[derive(Debug, Clone, Args)]
pub struct WanArgs {
    /// Link profiles, run in this order: wan30 (1 Gbit/s, 30 ms RTT, 0.5 % loss), wan80
    /// (100 Mbit/s, 80 ms RTT, 2 % loss).
    #[arg(long, value_delimiter = ',', default_value = "wan30,wan80")]
    pub profiles: Vec<String>,
    /// Size of the dataset version in MiB (1 MiB per row), for every profile [default: 1024 on
    /// wan30, 64 on wan80].
    #[arg(long)]
    pub size_mib: Option<usize>,
    /// Files the version is split into (the node's `rows-per-file`).
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Runs of every contender per profile (interleaved: ferry, curl, rsync, ferry, …).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Longest a run may take, in seconds; a run still going then is stopped and recorded at the
    /// bytes it had received (marked as capped).
    #[arg(long, default_value_t = 120)]
    pub seconds_cap: u64,
    /// Seed of the random payloads.
    #[arg(long, default_value_t = 20_250_101)]
    pub seed: u64,
    /// Directory for the scratch files (a temporary directory is made inside and removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run only these peers (comma-separated: curl, rsync; `none` for ferry alone).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Keep the scratch directories (ferryd.log, the pullers' and peers' logs) and print them.
    #[arg(long)]
    pub keep: bool,
    /// Extra arguments for every `ferry pull` (e.g. `--ferry-pull-arg=--streams=16`), to diagnose
    /// what limits it; the scenario's figures are for ferry's defaults, and the notes say when
    /// this was used.
    #[arg(long, allow_hyphen_values = true)]
    pub ferry_pull_arg: Vec<String>,
}

/// The most a TCP socket may buffer (`tcp_rmem`/`tcp_wmem` max) and a UDP socket may be given
/// (`net.core.rmem_max`/`wmem_max`) in the namespaces: a tuned WAN host's 16 MiB.
const SOCKET_MEM_MAX: u64 = 16 << 20;
/// Pause between runs, so that the previous contender's last packets (and its connection's
/// close) have left the link.
const SETTLE: Duration = Duration::from_secs(1);
/// How long a stopped run gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The contenders, in run order: key, what it is.
const CONTENDERS: [(&str, &str); 3] = [
    ("ferry", "ferry pull from ferryd (QUIC + mTLS, BLAKE3)"),
    ("curl", "curl --http1.1 from nginx (HTTPS, TLS 1.3)"),
    ("rsync", "rsync -r -e ssh (aes128-gcm), new files"),
];

/// The peers (contenders other than ferry) and the programs each needs.
const PEER_PROGRAMS: [(&str, &[&str]); 2] =
    [("curl", &["curl", "nginx", "openssl"]), ("rsync", &["rsync", "ssh", "ssh-keygen", "/usr/sbin/sshd"])];

/// The profiles the summary line always names (`nan` when not run).
const SUMMARY_PROFILES: [&str; 2] = ["wan30", "wan80"];

/// Default size of the version on `profile`: small enough that a lossy TCP peer finishes.
fn default_size_mib(profile: &LinkProfile) -> usize {
    if profile.rate_bps >= 500_000_000 { 1024 } else { 64 }
}

// ---------------------------------------------------------------------------------------------
// The link's TCP/UDP settings
// ---------------------------------------------------------------------------------------------

/// The sysctls the namespaces ended up with, for the notes.
struct Tuning {
    /// `net.ipv4.tcp_congestion_control` in A (the TCP senders') and B (the receivers').
    cc_a: String,
    cc_b: String,
    /// One line describing socket memory limits as in effect.
    memory: String,
}

/// Raises the TCP buffer limits in both namespaces (see the module docs), tries to raise the UDP
/// ones, and reads back what is in effect.
fn tune(link: &EmulatedLink) -> Result<Tuning> {
    let mut core_refused = Vec::new();
    for side in [Side::A, Side::B] {
        for key in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
            let current = link.sysctl(side, key)?;
            let values: Vec<u64> = current.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            ensure!(values.len() == 3, "unexpected {key} {current:?}");
            let max = values[2].max(SOCKET_MEM_MAX);
            link.set_sysctl(side, key, &format!("{} {} {max}", values[0], values[1]))?;
        }
        link.set_sysctl(side, "net.ipv4.tcp_no_metrics_save", "1")?;
        for key in ["net.core.rmem_max", "net.core.wmem_max"] {
            if link.set_sysctl(side, key, &SOCKET_MEM_MAX.to_string()).is_err()
                && !core_refused.contains(&key)
            {
                core_refused.push(key);
            }
        }
    }
    let read = |side, key| link.sysctl(side, key).unwrap_or_else(|e| format!("unreadable ({e})"));
    let mut memory = format!(
        "socket memory in the namespaces: tcp_rmem {} (B, receiving), tcp_wmem {} (A, sending), raised to a \
         max of at least 16 MiB as on a tuned WAN host (the host's tcp_wmem max is 4 MiB, ~750 Mbit/s for one \
         connection at 30 ms); net.core.rmem_max {} / wmem_max {}, rmem_default {} (B); tcp_no_metrics_save=1",
        read(Side::B, "net.ipv4.tcp_rmem"),
        read(Side::A, "net.ipv4.tcp_wmem"),
        read(Side::B, "net.core.rmem_max"),
        read(Side::B, "net.core.wmem_max"),
        read(Side::B, "net.core.rmem_default"),
    );
    if !core_refused.is_empty() {
        memory.push_str(&format!(
            "; {} could not be raised to 16 MiB: read-only inside a network namespace on this kernel \
             (copied from the host), so UDP sockets (QUIC) keep the host's limits",
            core_refused.join(" and ")
        ));
    }
    Ok(Tuning {
        cc_a: read(Side::A, "net.ipv4.tcp_congestion_control"),
        cc_b: read(Side::B, "net.ipv4.tcp_congestion_control"),
        memory,
    })
}

/// ferry's QUIC congestion control, as its `transport_config()` (in the source the binaries were
/// built from) chooses it: the controller factory it installs and what its documentation says
/// about congestion, or quinn's default when it installs none.
fn ferry_congestion_control() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/src/tls/mod.rs");
    describe_congestion(&std::fs::read_to_string(path).unwrap_or_default())
}

/// [`ferry_congestion_control`] from the text of `client/src/tls/mod.rs`.
fn describe_congestion(source: &str) -> String {
    let Some((before, after)) = source.split_once("pub fn transport_config") else {
        return "unknown (no transport_config() in client/src/tls/mod.rs)".to_owned();
    };
    let mut doc: Vec<&str> = before
        .lines()
        .rev()
        .map(str::trim)
        .take_while(|line| line.starts_with("///"))
        .map(|line| line.trim_start_matches('/').trim())
        .collect();
    doc.reverse();
    let doc = doc.join(" ");
    let said: Vec<&str> = doc
        .split_inclusive(". ")
        .map(str::trim)
        .filter(|s| s.to_lowercase().contains("congestion"))
        .collect();
    let body = after.split("\n}\n").next().unwrap_or_default();
    let Some(call) = body.split("congestion_controller_factory(").nth(1) else {
        return "quinn's default, Cubic (ferry's transport_config() installs no controller)".to_owned();
    };
    let factory =
        call.split(';').next().unwrap_or_default().replace("Arc::new(", "").replace("::default()", "");
    let factory = factory.trim_end_matches(')').trim();
    match said.is_empty() {
        true => format!("{factory}, installed by ferry's transport_config()"),
        false => format!("{factory}, installed by ferry's transport_config(): \"{}\"", said.join(" ")),
    }
}

/// UDP `RcvbufErrors` (datagrams dropped because a socket's receive buffer was full) in `side`.
fn udp_rcvbuf_errors(link: &EmulatedLink, side: Side) -> u64 {
    let text = link
        .run_in(side, || std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut udp = text.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(header), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    header
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn both_sides_rcvbuf_errors(link: &EmulatedLink) -> u64 {
    udp_rcvbuf_errors(link, Side::A) + udp_rcvbuf_errors(link, Side::B)
}

// ---------------------------------------------------------------------------------------------
// The node, the files and the peers' servers on side A
// ---------------------------------------------------------------------------------------------

/// One profile's ministry node in A with the published version, and what the peers serve.
struct Site {
    scratch: tempfile::TempDir,
    /// The CA and certificates (their files live as long as it does).
    _pki: Pki,
    node: NodeProc,
    consumer: TlsPaths,
    /// Hard links to the node's stored files: what nginx and sshd serve.
    peer_root: PathBuf,
    hashes: Vec<(String, blake3::Hash)>,
    names: Vec<String>,
    bytes: u64,
    /// Length of ferryd.log after the publish (later lines were logged during the runs).
    log_start: usize,
}

impl Site {
    fn prepare(args: &WanArgs, bins: &Binaries, link: &EmulatedLink, size_mib: usize) -> Result<Self> {
        let root = args.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&root)?;
        let prefix = format!("ferry-bench-wan-{}-", link.profile().name);
        let scratch = tempfile::Builder::new().prefix(&prefix).tempdir_in(&root)?;
        let export = scratch.path().join("export.parquet");
        let started = Instant::now();
        write_export(&export, size_mib, args.seed)?;
        progress(&format!(
            "generated the export ({size_mib} rows of 1 MiB) in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        let pki = Pki::new();
        let extra = format!("\n[transfer]\nrows-per-file = {}\n", size_mib.div_ceil(args.files));
        let launcher =
            Launcher::prefixed(["ip", "netns", "exec", link.namespace(Side::A)].map(str::to_owned).to_vec());
        let opts = NodeOptions {
            name: PROVIDER,
            role: Role::Ministry,
            listen: link.addr(Side::A),
            extra: &extra,
            launcher: &launcher,
        };
        let started = Instant::now();
        let node = NodeProc::start(bins, &pki, scratch.path(), &opts)?;
        link.run_in(Side::A, || publish(&node, &export))??;
        std::fs::remove_file(&export)?;
        let consumer = pki.issue("bench-consumer", "zhejiang", Role::Operator);
        let version_dir = node.version_dir(DATASET, 1);
        let stored = parquet_files(&version_dir, "")?;
        ensure!(!stored.is_empty(), "the node stored no Parquet files in {}", version_dir.display());
        let peer_root = scratch.path().join("peer-root");
        std::fs::create_dir_all(&peer_root)?;
        let (mut names, mut bytes) = (Vec::new(), 0);
        for path in &stored {
            let name = path.file_name().context("file name")?;
            let link_path = peer_root.join(name);
            if std::fs::hard_link(path, &link_path).is_err() {
                std::fs::copy(path, &link_path)?;
            }
            bytes += std::fs::metadata(&link_path)?.len();
            names.push(name.to_string_lossy().into_owned());
        }
        let hashes = hash_dir(&peer_root)?;
        let log_start = std::fs::metadata(node.dir.join("ferryd.log")).map_or(0, |m| m.len() as usize);
        progress(&format!(
            "ferryd in {} on {}, version published in {:.1} s: {} files, {bytes} bytes",
            link.namespace(Side::A),
            node.addr,
            started.elapsed().as_secs_f64(),
            names.len()
        ));
        Ok(Self { scratch, _pki: pki, node, consumer, peer_root, hashes, names, bytes, log_start })
    }

    /// A fresh empty directory for one contender's run.
    fn dest(&self, name: &str) -> Result<PathBuf> {
        crate::fleet::fresh_dir(self.scratch.path(), name)
    }

    /// Fails unless `dir` holds exactly the version's files (size and BLAKE3).
    fn check(&self, dir: &Path, who: &str) -> Result<()> {
        crate::fleet::check_copy(dir, self.bytes, &self.hashes, who)
    }

    /// What ferryd logged (at `warn`) since the publish, without ANSI colours.
    fn node_log(&self) -> String {
        let text = std::fs::read(self.node.dir.join("ferryd.log")).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(text.get(self.log_start..).unwrap_or_default()))
    }
}

/// nginx and sshd in namespace A (killed when dropped).
#[derive(Default)]
struct Peers {
    nginx: Option<Server>,
    sshd: Option<Sshd>,
    /// Keys of the peers that run, in run order.
    enabled: Vec<&'static str>,
}

impl Peers {
    fn start(site: &Site, link: &EmulatedLink, only: Option<&[String]>, report: &mut Report) -> Self {
        let mut peers = Self::default();
        let launcher =
            Launcher::prefixed(["ip", "netns", "exec", link.namespace(Side::A)].map(str::to_owned).to_vec());
        let addr = link.addr(Side::A);
        let place = Placement {
            addr,
            launcher,
            free_port: Box::new(move || {
                let listener = link.run_in(Side::A, || TcpListener::bind((addr, 0)))??;
                Ok(listener.local_addr()?.port())
            }),
            connects: Box::new(|to: SocketAddr| {
                link.run_in(Side::A, || TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok())
                    .unwrap_or(false)
            }),
        };
        for (key, programs) in PEER_PROGRAMS {
            if only.is_some_and(|only| !only.iter().any(|k| k == key)) {
                continue;
            }
            if let Some(missing) = programs.iter().find(|p| !servers::have(p)) {
                let message = format!("{key}: skipped, `{missing}` is not installed");
                progress(&message);
                report.note(message);
                continue;
            }
            let started = match key {
                "curl" => servers::start_nginx_at(site.scratch.path(), &site.peer_root, &place)
                    .map(|s| peers.nginx = Some(s)),
                _ => servers::start_sshd_at(site.scratch.path(), &place).map(|s| peers.sshd = Some(s)),
            };
            match started {
                Ok(()) => peers.enabled.push(key),
                Err(err) => {
                    let message = format!("{key}: skipped, its server did not start in A: {err:#}");
                    progress(&message);
                    report.note(message);
                }
            }
        }
        peers
    }

    fn server_cpu(&self, key: &str) -> f64 {
        match key {
            "curl" => self.nginx.as_ref().map_or(0.0, Server::cpu),
            "rsync" => self.sshd.as_ref().map_or(0.0, |s| s.server.cpu()),
            _ => 0.0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// How one run of a contender went.
#[derive(Debug, Clone)]
struct Outcome {
    /// Wall seconds, or the cap.
    seconds: f64,
    /// Bytes delivered: the whole version, or what had arrived when the cap stopped the run.
    bytes: u64,
    capped: bool,
    /// CPU seconds of the client (with its children) and of the server.
    client_cpu: f64,
    server_cpu: f64,
    /// The link's counters during the run.
    link: LinkStats,
    /// UDP datagrams dropped on full socket buffers in A and B during the run.
    udp_rcvbuf_errors: u64,
    /// From ferry's output: the reasons of its `retry` events and any line that is not JSON
    /// (warnings, errors).
    remarks: Vec<String>,
}

/// How a child run ended.
struct Ended {
    seconds: f64,
    /// `Some(bytes so far)` when the cap stopped it.
    capped: Option<u64>,
}

/// Runs `command` (output to `log`) until it exits or `cap` passes; then `so_far` counts what it
/// had received, and it is stopped (SIGTERM, SIGKILL after [`STOP_GRACE`]). A failure (other than
/// being stopped) is an error with the end of its log.
fn run_capped(command: &mut Command, log: &Path, cap: Duration, so_far: &dyn Fn() -> u64) -> Result<Ended> {
    let what = format!("{command:?}");
    let out = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            let seconds = started.elapsed().as_secs_f64();
            if !status.success() {
                bail!("{what} failed ({status}): {}", log_tail(log, 2000));
            }
            return Ok(Ended { seconds, capped: None });
        }
        if started.elapsed() >= cap {
            let bytes = so_far();
            stop(&mut child);
            return Ok(Ended { seconds: cap.as_secs_f64(), capped: Some(bytes) });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM (ferry stops at a chunk boundary, rsync takes its ssh down), then SIGKILL.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `max` bytes of a log.
fn log_tail(log: &Path, max: usize) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(max)..]).into_owned();
    text.trim().to_owned()
}

/// Bytes in the files under `dir` (recursively, hidden ones included: rsync's temporary files),
/// counting what is allocated for sparse ones.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => bytes_under(&entry.path()),
            Ok(meta) => meta.len().min(meta.blocks() * 512),
            Err(_) => 0,
        })
        .sum()
}

/// The value of `"field":<number>` in the last line of `text` that has it.
fn last_json_number(text: &str, field: &str) -> Option<u64> {
    let needle = format!("\"{field}\":");
    text.lines().rev().find_map(|line| {
        let rest = line.split_once(&needle)?.1.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// From `ferry pull --json` output: `retry: <reason>` for each retry event, and every line that
/// is not JSON (without ANSI colours).
fn pull_remarks(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| {
            if !line.starts_with('{') {
                return (!line.is_empty()).then(|| strip_ansi(line));
            }
            line.contains("\"event\":\"retry\"").then(|| {
                let reason = line
                    .split_once("\"reason\":\"")
                    .map(|(_, rest)| rest.split('"').next().unwrap_or_default());
                format!("retry: {}", reason.unwrap_or(line))
            })
        })
        .collect()
}

/// Removes ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Everything one profile's runs need.
struct Bench<'a> {
    args: &'a WanArgs,
    bins: &'a Binaries,
    link: &'a EmulatedLink,
    site: &'a Site,
    peers: &'a Peers,
    /// `ip netns exec <B>`: where every client runs.
    client: Launcher,
}

impl Bench<'_> {
    fn cap(&self) -> Duration {
        Duration::from_secs(self.args.seconds_cap)
    }

    /// One run of `key` into an empty directory; the output is checked unless the run was capped.
    fn run(&self, key: &str, run: usize) -> Result<Outcome> {
        let site = self.site;
        let dest = site.dest(&format!("{key}-{run}"))?;
        let log = site.scratch.path().join(format!("{key}-{run}.log"));
        let server_cpu =
            |key: &str| if key == "ferry" { site.node.cpu() } else { self.peers.server_cpu(key) };
        let (client0, server0) = (servers::children_cpu(), server_cpu(key));
        let (stats0, rcvbuf0) = (self.link.stats(), both_sides_rcvbuf_errors(self.link));
        let ended = match key {
            "ferry" => {
                let node = site.node.node_arg();
                let mut command = ferry_command(self.bins, &self.client, "pull", &site.consumer, &node);
                command.args([DATASET, "--version", "1", "--json", "--to"]).arg(&dest);
                command.args(&self.args.ferry_pull_arg);
                let so_far = || {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_json_number(&text, "verified_bytes").unwrap_or_else(|| bytes_under(&dest))
                };
                run_capped(&mut command, &log, self.cap(), &so_far)?
            }
            "curl" => {
                let nginx = self.peers.nginx.as_ref().context("nginx")?;
                let mut command = self.client.command("curl");
                command.args(["-sSk", "--http1.1", "--fail"]);
                for name in &site.names {
                    command.arg(format!("https://{}:{}/{name}", nginx.addr, nginx.port));
                    command.arg("-o").arg(dest.join(name));
                }
                run_capped(&mut command, &log, self.cap(), &|| bytes_under(&dest))?
            }
            "rsync" => {
                let sshd = self.peers.sshd.as_ref().context("sshd")?;
                let mut command = self.client.command("rsync");
                command.arg("-r").arg("-e").arg(format!("ssh -F {}", sshd.client_config.display()));
                command
                    .arg(format!("bench:{}/", site.peer_root.display()))
                    .arg(format!("{}/", dest.display()));
                run_capped(&mut command, &log, self.cap(), &|| bytes_under(&dest))?
            }
            _ => bail!("unknown contender {key}"),
        };
        let link = self.link.stats().since(&stats0);
        let udp_rcvbuf_errors = both_sides_rcvbuf_errors(self.link).saturating_sub(rcvbuf0);
        let client_cpu = servers::children_cpu() - client0;
        let server_cpu = server_cpu(key) - server0;
        let remarks = if key == "ferry" {
            pull_remarks(&std::fs::read_to_string(&log).unwrap_or_default())
        } else {
            vec![]
        };
        let bytes = match ended.capped {
            Some(bytes) => bytes,
            None => {
                let out = if key == "ferry" { dest.join(DATASET).join("v1") } else { dest.clone() };
                site.check(&out, key)?;
                site.bytes
            }
        };
        std::fs::remove_dir_all(&dest)?;
        Ok(Outcome {
            seconds: ended.seconds,
            bytes,
            capped: ended.capped.is_some(),
            client_cpu,
            server_cpu,
            link,
            udp_rcvbuf_errors,
            remarks,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Recording and the summary
// ---------------------------------------------------------------------------------------------

fn label(key: &str) -> &'static str {
    CONTENDERS.iter().find(|(k, _)| *k == key).map_or("?", |(_, label)| label)
}

/// Records one run of `key` on `profile`.
fn record(report: &mut Report, profile: &LinkProfile, key: &str, outcome: &Outcome) {
    let p = &profile.name;
    let seconds = outcome.seconds.max(1e-9);
    let mb_s = outcome.bytes as f64 / 1e6 / seconds;
    let capped = if outcome.capped { " (capped runs: bytes so far / cap)" } else { "" };
    report.record(
        &format!("{p}_{key}_mb_s"),
        Unit::MegabytesPerSecond,
        &format!("{p}: {}: MB/s{capped}", label(key)),
        mb_s,
    );
    let fraction = outcome.bytes as f64 * 8.0 / seconds / profile.rate_bps.max(1) as f64;
    let what = format!("{p}: {key}: goodput / link rate ({} Mbit/s)", profile.rate_bps as f64 / 1e6);
    report.record(&format!("{p}_{key}_link_fraction"), Unit::Ratio, &what, fraction);
    let stats = &outcome.link;
    let lost = (stats.a_to_b.lost + stats.b_to_a.lost) as f64;
    let what = format!("{p}: {key}: packets lost at random on the link (A→B + B→A)");
    report.record(&format!("{p}_{key}_lost_pkts"), Unit::Count, &what, lost);
    let drops = (stats.a_to_b.queue_dropped + stats.b_to_a.queue_dropped) as f64;
    let what = format!("{p}: {key}: packets dropped by the full bottleneck queue (A→B + B→A)");
    report.record(&format!("{p}_{key}_queue_drops"), Unit::Count, &what, drops);
    let offered = stats.a_to_b.packets_in as f64 / stats.a_to_b.forwarded.max(1) as f64;
    let what = format!("{p}: {key}: packets sent A→B per packet delivered (losses, queue drops)");
    report.record(&format!("{p}_{key}_sent_per_delivered"), Unit::Ratio, &what, offered);
    let wire = stats.a_to_b.bytes_forwarded as f64 / outcome.bytes.max(1) as f64;
    let what = format!("{p}: {key}: IP bytes delivered A→B per payload byte (headers, duplicates)");
    report.record(&format!("{p}_{key}_wire_per_byte"), Unit::Ratio, &what, wire);
    let cpu = (outcome.client_cpu + outcome.server_cpu) / (outcome.bytes.max(1) as f64 / 1e9);
    let what = format!("{p}: {key}: CPU seconds per GB, both ends (client + server)");
    report.record(&format!("{p}_{key}_cpu_s_per_gb"), Unit::Ratio, &what, cpu);
    if key == "ferry" {
        let what = format!("{p}: ferry: UDP datagrams dropped on full socket receive buffers (A + B)");
        report.record(
            &format!("{p}_ferry_udp_rcvbuf_errors"),
            Unit::Count,
            &what,
            outcome.udp_rcvbuf_errors as f64,
        );
    }
}

fn median_of(report: &Report, key: &str) -> f64 {
    report.metric(key).and_then(|m| m.median()).unwrap_or(f64::NAN)
}

fn show(value: f64, digits: usize) -> String {
    if value.is_finite() { format!("{value:.digits$}") } else { "nan".to_owned() }
}

/// The summary line: per profile (`nan` where not run) ferry's link fraction, ferry ÷ rsync and
/// ferry ÷ curl (medians of MB/s), and each contender's median MB/s.
fn summary_line(report: &Report, capped: usize) -> String {
    let mut parts = Vec::new();
    for p in SUMMARY_PROFILES {
        let ferry = median_of(report, &format!("{p}_ferry_mb_s"));
        parts.push(format!(
            "{p}_link_fraction={}",
            show(median_of(report, &format!("{p}_ferry_link_fraction")), 3)
        ));
        for peer in ["rsync", "curl"] {
            let ratio = ferry / median_of(report, &format!("{p}_{peer}_mb_s"));
            parts.push(format!("{p}_vs_{peer}={}", show(ratio, 3)));
        }
        for (key, _) in CONTENDERS {
            parts.push(format!("{p}_{key}_mb_s={}", show(median_of(report, &format!("{p}_{key}_mb_s")), 1)));
        }
    }
    parts.push(format!("capped_runs={capped}"));
    parts.join(" ")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// What went wrong or was notable in one profile, for the notes and the exit status.
#[derive(Default)]
struct Trouble {
    /// Runs that failed (no sample recorded).
    failed: Vec<String>,
    /// Runs stopped by the cap.
    capped: Vec<String>,
}

/// Runs every profile's contenders and records them.
fn run_profile(
    args: &WanArgs,
    bins: &Binaries,
    profile: &LinkProfile,
    report: &mut Report,
    trouble: &mut Trouble,
) -> Result<()> {
    let p = profile.name.clone();
    let size_mib = args.size_mib.unwrap_or_else(|| default_size_mib(profile));
    ensure!(size_mib >= args.files, "--size-mib ({size_mib}) must be at least --files ({})", args.files);
    progress(&format!("{p}: starting the link ({profile})"));
    let link = EmulatedLink::start(profile)?;
    let tuning = tune(&link)?;
    let load_before = loadavg();
    let site = Site::prepare(args, bins, &link, size_mib)?;
    let peers = Peers::start(&site, &link, args.peers.as_deref(), report);
    let client =
        Launcher::prefixed(["ip", "netns", "exec", link.namespace(Side::B)].map(str::to_owned).to_vec());
    let bench = Bench { args, bins, link: &link, site: &site, peers: &peers, client };
    let contenders: Vec<&str> = std::iter::once("ferry").chain(peers.enabled.iter().copied()).collect();
    let mut relay_pct: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut tun_drops: BTreeMap<&str, u64> = BTreeMap::new();
    let mut remarks = Vec::new();
    for run in 1..=args.runs {
        for &key in &contenders {
            progress(&format!("{p}: run {run}/{}: {key}", args.runs));
            std::thread::sleep(SETTLE);
            match bench.run(key, run) {
                Ok(outcome) => {
                    let mb_s = outcome.bytes as f64 / 1e6 / outcome.seconds.max(1e-9);
                    progress(&format!(
                        "{p}: run {run}: {key}: {:.2} s, {mb_s:.1} MB/s{}; link: lost {}+{}, queue drops {}+{}",
                        outcome.seconds,
                        if outcome.capped { " (CAPPED)" } else { "" },
                        outcome.link.a_to_b.lost,
                        outcome.link.b_to_a.lost,
                        outcome.link.a_to_b.queue_dropped,
                        outcome.link.b_to_a.queue_dropped,
                    ));
                    if outcome.capped {
                        trouble.capped.push(format!(
                            "{p} run {run} {key}: capped at {} s with {} of {} bytes received ({mb_s:.2} MB/s)",
                            args.seconds_cap, outcome.bytes, site.bytes
                        ));
                    }
                    let relay = outcome.link.relay_cpu().as_secs_f64() / outcome.seconds.max(1e-9) * 100.0;
                    relay_pct.entry(key).or_default().push(relay);
                    *tun_drops.entry(key).or_default() +=
                        outcome.link.a_to_b.kernel_dropped + outcome.link.b_to_a.kernel_dropped;
                    remarks.extend(outcome.remarks.iter().map(|r| format!("run {run}: {r}")));
                    record(report, profile, key, &outcome);
                }
                Err(err) => {
                    let message = format!("{p} run {run} {key}: FAILED: {err:#}");
                    progress(&message);
                    trouble.failed.push(message);
                }
            }
        }
    }
    let ferry = median_of(report, &format!("{p}_ferry_mb_s"));
    for peer in ["rsync", "curl"] {
        let ratio = ferry / median_of(report, &format!("{p}_{peer}_mb_s"));
        if ratio.is_finite() {
            let what = format!("{p}: median ferry MB/s ÷ median {peer} MB/s");
            report.record(&format!("{p}_vs_{peer}"), Unit::Ratio, &what, ratio);
        }
    }

    report.note(format!(
        "{p}: link {profile}; {} files, {} bytes ({size_mib} rows of 1 MiB random payload)",
        site.names.len(),
        site.bytes
    ));
    report.note(format!(
        "{p}: TCP congestion control in effect (net.ipv4.tcp_congestion_control): A (nginx/sshd, sending) {}, \
         B (curl/rsync, receiving) {}: this host's default, inherited by the namespaces (cubic cannot be the \
         namespaces' default: the host's tcp_allowed_congestion_control is \"reno bbr\"); ferry's QUIC: {}",
        tuning.cc_a,
        tuning.cc_b,
        ferry_congestion_control()
    ));
    report.note(format!("{p}: {}", tuning.memory));
    let relay: Vec<String> = relay_pct
        .iter()
        .map(|(key, pcts)| format!("{key} {:.0}%", report::median(pcts).unwrap_or(f64::NAN)))
        .collect();
    let dropped: Vec<String> =
        tun_drops.iter().filter(|(_, n)| **n > 0).map(|(key, n)| format!("{key} {n}")).collect();
    report.note(format!(
        "{p}: the link emulator's relay threads (in this process, competing for the {} cores) used, median per \
         run, % of one core: {}; packets the TUN devices dropped because the relay did not read them in time \
         (CPU starvation, not part of the profile), all runs: {}; load average before {load_before}, after {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        relay.join(", "),
        if dropped.is_empty() { "none".to_owned() } else { dropped.join(", ") },
        loadavg()
    ));
    if !remarks.is_empty() {
        let what = first_lines(&remarks, 5);
        report.note(format!(
            "{p}: ferry pull printed {} retry events or non-JSON lines: {what}",
            remarks.len()
        ));
    }
    let node_log: Vec<String> =
        site.node_log().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if node_log.is_empty() {
        report.note(format!("{p}: ferryd.log got no lines during the runs (it logs at FERRY_LOG=warn)"));
    } else {
        report.note(format!(
            "{p}: ferryd.log (FERRY_LOG=warn) got {} lines during the runs: {}",
            node_log.len(),
            first_lines(&node_log, 5)
        ));
    }
    drop(bench);
    drop(peers);
    if args.keep {
        let node = site.node.dir.clone();
        drop(site.node);
        let kept = site.scratch.keep();
        report.note(format!("{p}: kept {} (ferryd.log in {})", kept.display(), node.display()));
    } else {
        drop(site);
    }
    drop(link);
    Ok(())
}

/// Up to `max` of `lines`, distinct, shortened, joined by ` | `.
fn first_lines(lines: &[String], max: usize) -> String {
    let mut seen: Vec<String> = Vec::new();
    for line in lines {
        let short: String = line.chars().take(240).collect();
        if !seen.contains(&short) {
            seen.push(short);
        }
    }
    let more = if seen.len() > max { format!(" | … ({} distinct)", seen.len()) } else { String::new() };
    seen.truncate(max);
    format!("{}{more}", seen.join(" | "))
}

/// Runs the scenario and prints the table and the summary line on stdout.
pub fn run(args: &WanArgs) -> Result<()> {
    ensure!(args.runs >= 1 && args.files >= 1, "--runs and --files must be at least 1");
    ensure!(args.seconds_cap >= 1, "--seconds-cap must be at least 1");
    let profiles: Vec<LinkProfile> =
        args.profiles.iter().map(|p| LinkProfile::named(p)).collect::<Result<_>>()?;
    ensure!(!profiles.is_empty(), "--profiles names no profile");
    if let Some(peers) = &args.peers {
        for peer in peers {
            ensure!(
                matches!(peer.as_str(), "curl" | "rsync" | "none"),
                "unknown peer {peer:?} (known: curl, rsync, none)"
            );
        }
    }
    // Before any other thread exists: Ctrl-C then deletes the namespaces.
    netem::cleanup_on_signals()?;
    let bins = Binaries::build()?;
    let load = loadavg();
    let mut report = Report::default();
    let mut trouble = Trouble::default();
    for profile in &profiles {
        run_profile(args, &bins, profile, &mut report, &mut trouble)?;
    }
    report.note(
        "every output checked (size and BLAKE3 of every file; not for capped runs); MB/s = 10^6 bytes per wall \
         second, connection setup and the client's commit included; link_fraction = goodput in bit/s ÷ the \
         profile's rate (IP bytes, so ~0.96 is the ceiling)",
    );
    report.note(
        "servers (ferryd, nginx, sshd) in namespace A, clients (ferry pull, curl, rsync) in B; CPU from /proc: \
         client = the client process and its children, server = ferryd / nginx / sshd with its sessions",
    );
    {
        let p = "wan30";
        let fraction = median_of(&report, &format!("{p}_ferry_link_fraction"));
        let vs_rsync =
            median_of(&report, &format!("{p}_ferry_mb_s")) / median_of(&report, &format!("{p}_rsync_mb_s"));
        if fraction.is_finite() || vs_rsync.is_finite() {
            let met = |ok: bool| if ok { "met" } else { "NOT met" };
            report.note(format!(
                "target (issue; printed, not asserted): at {p} ferry's goodput ≥ 70% of the link rate: {} ({}); \
                 ≥ 3× rsync over ssh: {}× ({})",
                show(fraction, 3),
                met(fraction >= 0.7),
                show(vs_rsync, 2),
                met(vs_rsync >= 3.0)
            ));
        }
    }
    if !args.ferry_pull_arg.is_empty() {
        report.note(format!(
            "NOT ferry's defaults: every `ferry pull` ran with the extra arguments {:?} (--ferry-pull-arg)",
            args.ferry_pull_arg
        ));
    }
    for line in trouble.capped.iter().chain(&trouble.failed) {
        report.note(line.clone());
    }
    let sizes: Vec<String> = profiles
        .iter()
        .map(|p| format!("{}:{}", p.name, args.size_mib.unwrap_or_else(|| default_size_mib(p))))
        .collect();
    println!(
        "ferry-bench wan: profiles={} size_mib={} files={} runs={} seconds_cap={} seed={} nproc={} load_before={}",
        args.profiles.join(","),
        sizes.join(","),
        args.files,
        args.runs,
        args.seconds_cap,
        args.seed,
        std::thread::available_parallelism().map_or(0, usize::from),
        load.replace(' ', "/")
    );
    print!("{}", report.table());
    println!("{}", summary_line(&report, trouble.capped.len()));
    ensure!(
        trouble.failed.is_empty(),
        "{} run(s) failed: {}",
        trouble.failed.len(),
        trouble.failed.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_progress_line() {
        let text = "{\"event\":\"started\",\"total_bytes\":100}\n\
                    {\"event\":\"progress\",\"verified_bytes\":10,\"fetched_bytes\":12}\n\
                    {\"event\":\"progress\",\"verified_bytes\": 42,\"fetched_bytes\":50}\n";
        assert_eq!(last_json_number(text, "verified_bytes"), Some(42));
        assert_eq!(last_json_number(text, "total_bytes"), Some(100));
        assert_eq!(last_json_number(text, "rows"), None);
    }

    #[test]
    fn finds_pull_remarks_and_strips_colours() {
        let text =
            "{\"event\":\"retry\",\"attempt\":1,\"reason\":\"timed out\"}\n{\"event\":\"verifying\"}\n";
        assert_eq!(pull_remarks(text), ["retry: timed out"]);
        assert_eq!(pull_remarks("{\"event\":\"verifying\"}\n\u{1b}[33mWARN\u{1b}[0m slow\n"), ["WARN slow"]);
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn summary_names_both_profiles() {
        let mut report = Report::default();
        let outcome = Outcome {
            seconds: 2.0,
            bytes: 250_000_000,
            capped: false,
            client_cpu: 1.0,
            server_cpu: 1.0,
            link: LinkStats::default(),
            udp_rcvbuf_errors: 0,
            remarks: Vec::new(),
        };
        record(&mut report, &LinkProfile::wan30(), "ferry", &outcome);
        record(&mut report, &LinkProfile::wan30(), "rsync", &Outcome { seconds: 8.0, ..outcome.clone() });
        let line = summary_line(&report, 0);
        assert!(
            line.starts_with("wan30_link_fraction=1.000 wan30_vs_rsync=4.000 wan30_vs_curl=nan "),
            "{line}"
        );
        assert!(line.contains("wan80_link_fraction=nan"), "{line}");
        assert!(line.ends_with("capped_runs=0"), "{line}");
    }

    #[test]
    fn describes_ferrys_congestion_control() {
        let plain =
            "/// The settings.\npub fn transport_config() -> T {\n    let t = T::default();\n    t\n}\n";
        assert!(describe_congestion(plain).starts_with("quinn's default, Cubic"));
        let chosen = "/// The settings.\n///\n/// Congestion control is BBR. More.\npub fn transport_config() -> T {\n    \
                      t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));\n}\n";
        assert_eq!(
            describe_congestion(chosen),
            "quinn::congestion::BbrConfig, installed by ferry's transport_config(): \"Congestion control is BBR.\""
        );
        assert!(describe_congestion("").starts_with("unknown"));
    }

    #[test]
    fn default_sizes_follow_the_rate() {
        assert_eq!(default_size_mib(&LinkProfile::wan30()), 1024);
        assert_eq!(default_size_mib(&LinkProfile::wan80()), 64);
    }
}
