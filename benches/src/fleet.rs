//! ferry as real processes, for the end-to-end scenarios: `ferryd` nodes started from the
//! release binaries on a config the bench writes, and `ferry` CLI runs measured from outside
//! (wall time, CPU seconds, peak RSS), exactly as an operator would run them.
//!
//! Every program is started through a [`Launcher`]: plain, or prefixed (`ip netns exec <ns>`) so
//! the `wan` scenario can put the ministry and the puller on the two ends of an emulated link.
//!
//! Also what the scenarios share around them: the ministry node they start
//! ([`NodeOptions::ministry`]), a version's stored files and the check of a copy of them
//! ([`VersionFiles`]), fresh scratch directories.
//!
//! Neighbours: [`crate::transfer`], [`crate::wan`], [`crate::fanout`] and [`crate::memory`] use it;
//! [`crate::servers`] reads CPU times from `/proc`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ferry_net::tls::TlsPaths;
use ferry_proto::Role;
use ferry_testkit::TestPki;

use crate::delta::hash_dir;
use crate::kernel::parquet_files;
use crate::servers::proc_cpu;
use crate::transfer::PROVIDER;

/// The release binaries the scenarios run.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub ferryd: PathBuf,
    pub ferry: PathBuf,
}

impl Binaries {
    /// Builds `ferryd` and `ferry` with the cargo that runs this bench (same profile), or finds
    /// them next to this executable when it was not started by cargo.
    pub fn build() -> Result<Self> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("the bench executable has no directory")?.to_path_buf();
        if let Ok(cargo) = std::env::var("CARGO") {
            let mut command = Command::new(cargo);
            command.args(["build", "-q", "-p", "ferry-daemon", "-p", "ferry-client", "--bins"]);
            if dir.ends_with("release") {
                command.arg("--release");
            }
            let status = command.status().context("running cargo build")?;
            ensure!(status.success(), "building ferryd and ferry failed ({status})");
        }
        let bins = Self { ferryd: dir.join("ferryd"), ferry: dir.join("ferry") };
        for bin in [&bins.ferryd, &bins.ferry] {
            ensure!(
                bin.is_file(),
                "{} not found; build it with `cargo build --release -p ferry-daemon -p ferry-client`",
                bin.display()
            );
        }
        Ok(bins)
    }
}

/// How programs are started: directly, or behind a prefix such as `ip netns exec <ns>`.
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    prefix: Vec<String>,
}

impl Launcher {
    /// Starts programs as they are.
    pub fn direct() -> Self {
        Self::default()
    }

    /// Starts programs as arguments of `prefix` (its first element is the program run).
    pub fn prefixed(prefix: Vec<String>) -> Self {
        Self { prefix }
    }

    /// Starts programs in the network namespace `namespace` (`ip netns exec <namespace>`).
    pub fn in_netns(namespace: &str) -> Self {
        Self::prefixed(["ip", "netns", "exec", namespace].map(str::to_owned).to_vec())
    }

    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self.prefix.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
        }
    }
}

/// A CA with node and user certificates (in a temporary directory).
pub struct Pki {
    pki: TestPki,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        Self { pki: TestPki::named("ferry-bench ministry CA") }
    }

    /// A certificate for `name` (also its DNS name) of department `dept`.
    pub fn issue(&self, name: &str, dept: &str, role: Role) -> TlsPaths {
        self.pki.issue(name, dept, role)
    }

    pub fn crl(&self) -> PathBuf {
        self.pki.crl()
    }
}

/// A `ferryd` process (SIGTERM, then SIGKILL after 10 s, when dropped).
pub struct NodeProc {
    pub name: String,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// An operator of the node's department (may publish on it).
    pub operator: TlsPaths,
    /// The node's admin HTTP address (`/metrics`), as it printed it.
    pub admin: Option<SocketAddr>,
    child: Child,
}

/// What a node is started with.
pub struct NodeOptions<'a> {
    pub name: &'a str,
    pub role: Role,
    /// The address the node listens on (port chosen by the kernel).
    pub listen: IpAddr,
    /// Extra TOML appended to the config (`[transfer]`, `[peers.x]`, ...).
    pub extra: String,
    pub launcher: Launcher,
    /// The `[storage]` table; `None` keeps versions in a local directory, `root/<name>/data`.
    pub storage: Option<String>,
}

impl NodeOptions<'static> {
    /// The scenarios' ministry node ([`PROVIDER`]), storing a version in files of
    /// `rows_per_file` rows, listening on `listen` and started by `launcher`.
    pub fn ministry(rows_per_file: usize, listen: IpAddr, launcher: Launcher) -> Self {
        NodeOptions {
            name: PROVIDER,
            role: Role::Ministry,
            listen,
            extra: format!("\n[transfer]\nrows-per-file = {rows_per_file}\n"),
            launcher,
            storage: None,
        }
    }

    /// [`NodeOptions::ministry`] on 127.0.0.1, started directly.
    pub fn loopback_ministry(rows_per_file: usize) -> Self {
        Self::ministry(rows_per_file, IpAddr::from([127, 0, 0, 1]), Launcher::direct())
    }
}

/// A node's config and certificates, written but not started ([`NodeProc::prepare`]): lets a
/// scenario build the node's store with the node's own key before `ferryd` opens it, or start
/// the same node again ([`NodeProc::launch`]) without issuing it a new certificate.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub name: String,
    /// `root/<name>`: config, log, `state/` and the local storage `data/`.
    pub dir: PathBuf,
    /// The `ferryd.toml` written.
    pub config: PathBuf,
    /// An operator of the node's department (may publish on it).
    pub operator: TlsPaths,
}

impl NodeProc {
    /// Writes the node's config under `root/<name>` and starts it; returns once it listens.
    pub fn start(bins: &Binaries, pki: &Pki, root: &Path, opts: &NodeOptions<'_>) -> Result<Self> {
        let setup = Self::prepare(pki, root, opts)?;
        Self::launch(bins, &setup, &opts.launcher)
    }

    /// Issues the node's certificates and writes its config under `root/<name>`, without
    /// starting it.
    pub fn prepare(pki: &Pki, root: &Path, opts: &NodeOptions<'_>) -> Result<NodeSetup> {
        let name = opts.name;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let tls = pki.issue(name, name, opts.role);
        let operator = pki.issue(&format!("{name}-ops"), name, Role::Operator);
        let listen = SocketAddr::new(opts.listen, 0);
        let admin = SocketAddr::new(opts.listen, 0);
        let config = format!(
            "node-name = \"{name}\"\nlisten = \"{listen}\"\nadmin-listen = \"{admin}\"\nstate-dir = {state:?}\n\n\
             {storage}\n[tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\ncrl = {crl:?}\n{extra}\n",
            state = dir.join("state"),
            storage = opts
                .storage
                .clone()
                .unwrap_or_else(|| format!("[storage]\nlocal = {:?}\n", dir.join("data"))),
            ca = tls.ca,
            cert = tls.cert,
            key = tls.key,
            crl = pki.crl(),
            extra = opts.extra,
        );
        let config_path = dir.join("ferryd.toml");
        std::fs::write(&config_path, config)?;
        Ok(NodeSetup { name: name.to_owned(), dir, config: config_path, operator })
    }

    /// Starts `ferryd` on a prepared node's config; returns once it listens.
    pub fn launch(bins: &Binaries, setup: &NodeSetup, launcher: &Launcher) -> Result<Self> {
        let name = &setup.name;
        let log_path = setup.dir.join("ferryd.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = launcher
            .command(&bins.ferryd)
            .arg("--config")
            .arg(&setup.config)
            .env("FERRY_LOG", child_log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bins.ferryd.display()))?;
        let stdout = child.stdout.take().context("ferryd has no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("quic="))
            .and_then(|v| v.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("ferryd {name} did not start: {}", log.trim());
        };
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .and_then(|v| v.parse::<SocketAddr>().ok());
        let (dir, operator) = (setup.dir.clone(), setup.operator.clone());
        Ok(Self { name: name.clone(), addr, dir, operator, admin, child })
    }

    /// One sample of the node's Prometheus metrics (`name{labels}` as printed), scraped from its
    /// admin port; `None` without an admin port or when the sample is absent.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        ferry_testkit::metric_sample(&http_get(self.admin?, "/metrics").ok()?, sample)
    }

    /// `NAME@ADDR`, as `ferry --node` takes it.
    pub fn node_arg(&self) -> String {
        format!("{}@{}", self.name, self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the node has used so far.
    pub fn cpu(&self) -> f64 {
        proc_cpu(&self.pid().to_string()).map_or(f64::NAN, |(own, _)| own)
    }

    /// Waits until the node has used under 10 ms of CPU over half a second (what it does after
    /// answering, such as removing an upload, is done), at most `limit`; the seconds waited.
    pub fn wait_idle(&self, limit: Duration) -> f64 {
        let start = Instant::now();
        let mut before = self.cpu();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.cpu();
            // Not known (NaN): no wait.
            if now.is_nan() || now - before < 0.01 {
                break;
            }
            before = now;
        }
        start.elapsed().as_secs_f64()
    }

    /// The node's peak resident set so far, MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.pid()).unwrap_or(f64::NAN)
    }

    /// Where the node's local storage keeps a dataset version's files.
    pub fn version_dir(&self, dataset: &str, version: u64) -> PathBuf {
        self.dir.join("data").join("datasets").join(dataset).join(format!("v{version}"))
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited within `grace`; reaps it.
pub fn terminate(child: &mut Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The body of `GET path` from a local HTTP server (HTTP/1.0: the server closes when done).
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.take(16 << 20).read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of HTTP headers")?;
    ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// `VmHWM` of a live process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `ferry <subcommand>` with the credentials and node flags of one user.
pub fn ferry_command(
    bins: &Binaries,
    launcher: &Launcher,
    subcommand: &str,
    user: &TlsPaths,
    node: &str,
) -> Command {
    let mut command = launcher.command(&bins.ferry);
    command.arg(subcommand).arg("--node").arg(node).arg("--ca").arg(&user.ca).arg("--cert").arg(&user.cert);
    command.arg("--key").arg(&user.key).env("FERRY_LOG", child_log_filter());
    if let Some(crl) = &user.crl {
        command.arg("--crl").arg(crl);
    }
    command
}

/// The log filter of the ferry processes a scenario starts: `FERRY_BENCH_LOG` if set (for
/// example `ferry_client=debug,ferry_daemon=debug` to see each connection's path statistics),
/// else warnings only.
pub fn child_log_filter() -> String {
    std::env::var("FERRY_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned())
}

/// One measured run of a child process.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub seconds: f64,
    /// CPU seconds of the child (user + system).
    pub cpu: f64,
    /// Peak resident set of the child, MiB (sampled every 10 ms from `VmHWM`).
    pub peak_rss_mib: f64,
    /// The peak as it stood after each of [`PEAK_FRACTIONS`] of the run's wall time: whether it
    /// was reached early and held, or kept rising.
    pub peak_rss_mib_at: [f64; PEAK_FRACTIONS.len()],
}

/// Fractions of a run's wall time at which [`Measured::peak_rss_mib_at`] reads the peak (the
/// whole run's is [`Measured::peak_rss_mib`]).
pub const PEAK_FRACTIONS: [f64; 3] = [0.05, 0.25, 0.5];

/// A started child whose CPU time and peak RSS are sampled until it exits.
pub struct Running {
    child: Child,
    started: Instant,
    cpu: f64,
    peak: f64,
    /// (seconds since the start, new peak) each time the sampled peak rose.
    rises: Vec<(f64, f64)>,
    what: String,
}

impl Running {
    /// Starts `command` (stdout and stderr to `log`).
    pub fn spawn(command: &mut Command, log: &Path) -> Result<Self> {
        let child = spawn_logged(command, log)?;
        Ok(Self {
            child,
            started: Instant::now(),
            cpu: 0.0,
            peak: 0.0,
            rises: Vec::new(),
            what: format!("{command:?}"),
        })
    }

    /// Samples the child once; `Some(status)` once it has exited.
    pub fn poll(&mut self) -> Result<Option<(ExitStatus, Measured)>> {
        let pid = self.child.id();
        if let Ok((own, _)) = proc_cpu(&pid.to_string()) {
            self.cpu = self.cpu.max(own);
        }
        if let Some(peak) = peak_rss_mib(pid)
            && peak > self.peak
        {
            self.peak = peak;
            self.rises.push((self.started.elapsed().as_secs_f64(), peak));
        }
        let Some(status) = self.child.try_wait()? else { return Ok(None) };
        let seconds = self.started.elapsed().as_secs_f64();
        let measured = Measured {
            seconds,
            cpu: self.cpu,
            peak_rss_mib: self.peak,
            peak_rss_mib_at: PEAK_FRACTIONS.map(|f| peak_by(&self.rises, f * seconds)),
        };
        Ok(Some((status, measured)))
    }

    /// Kills the child (if still running) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the child (sampling every 10 ms); an error if it fails or outlives `limit`.
    pub fn wait(mut self, limit: Duration, log: &Path) -> Result<Measured> {
        loop {
            if let Some((status, measured)) = self.poll()? {
                if !status.success() {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    bail!("{} failed ({status}): {}", self.what, text.trim());
                }
                return Ok(measured);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not finish within {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The peak as it stood at `seconds`, from the times it rose (0 before the first sample).
fn peak_by(rises: &[(f64, f64)], seconds: f64) -> f64 {
    rises.iter().take_while(|(at, _)| *at <= seconds).last().map_or(0.0, |(_, peak)| *peak)
}

/// Starts `command` with no input, its stdout and stderr to a new file `log`.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {command:?}"))
}

/// Runs `command` to success, measuring it; its output goes to `log`.
pub fn run_measured(command: &mut Command, log: &Path, limit: Duration) -> Result<Measured> {
    Running::spawn(command, log)?.wait(limit, log)
}

/// Bytes available to this user on the filesystem holding `dir` (statfs, through coreutils
/// `stat -f`: free blocks for unprivileged users × block size).
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(dir).stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "stat -f {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
        _ => bail!("cannot read `stat -f` output for {}: {text:?}", dir.display()),
    }
}

/// Where a scenario's scratch files go, and the seed of its random payloads: the options of
/// every scenario that publishes a version on a ferryd.
#[derive(Debug, Clone, Args)]
pub struct ScratchArgs {
    /// Seed of the random payloads.
    #[arg(long, default_value_t = 20_250_101)]
    pub seed: u64,
    /// Directory for the scratch files (a temporary directory is made inside and removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl ScratchArgs {
    /// `--dir` (made if missing), or else the system's temporary directory.
    pub fn root(&self) -> Result<PathBuf> {
        let root = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&root)?;
        Ok(root)
    }
}

/// A fresh empty directory `root/name` (removed first if it exists): one contender's run.
pub fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dest = root.join(name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    std::fs::create_dir_all(&dest)?;
    Ok(dest)
}

/// A version's Parquet files in one directory, with what a copy of them is checked against:
/// their total size and BLAKE3 hashes.
#[derive(Debug, Clone)]
pub struct VersionFiles {
    /// The files, in name order.
    pub files: Vec<PathBuf>,
    /// Their size in all.
    pub bytes: u64,
    /// `(file name, BLAKE3)` of each, as [`hash_dir`] gives them.
    pub hashes: Vec<(String, blake3::Hash)>,
}

impl VersionFiles {
    /// The Parquet files a node stored in `dir` (there must be some).
    pub fn read(dir: &Path) -> Result<Self> {
        let files = parquet_files(dir, "")?;
        ensure!(!files.is_empty(), "the node stored no Parquet files in {}", dir.display());
        let mut bytes = 0;
        for path in &files {
            bytes += std::fs::metadata(path)?.len();
        }
        Ok(Self { files, bytes, hashes: hash_dir(dir)? })
    }

    /// Hard links (copies where linking fails) in `dir` of the Parquet files a node stored in
    /// `stored`: what the peer tools' servers serve.
    pub fn link(stored: &Path, dir: &Path) -> Result<Self> {
        let originals = parquet_files(stored, "")?;
        ensure!(!originals.is_empty(), "the node stored no Parquet files in {}", stored.display());
        std::fs::create_dir_all(dir)?;
        for path in &originals {
            let link = dir.join(path.file_name().context("file name")?);
            if std::fs::hard_link(path, &link).is_err() {
                std::fs::copy(path, &link)?;
            }
        }
        Self::read(dir)
    }

    /// The files' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|f| f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned())
            .collect()
    }

    /// Fails unless `dir` holds exactly these files: the same size in all, and the same names and
    /// BLAKE3 hashes; `who` wrote them.
    pub fn check_copy(&self, dir: &Path, who: &str) -> Result<()> {
        let mut total = 0;
        for path in parquet_files(dir, "")? {
            total += std::fs::metadata(&path)?.len();
        }
        let bytes = self.bytes;
        ensure!(total == bytes, "{who} wrote {total} bytes instead of {bytes}");
        ensure!(hash_dir(dir)? == self.hashes, "{who}'s files differ from the node's (BLAKE3)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::peak_by;

    #[test]
    fn the_peak_at_a_time_is_the_last_rise_before_it() {
        let rises = [(0.5, 10.0), (1.0, 20.0), (8.0, 21.0)];
        assert_eq!(peak_by(&rises, 0.1), 0.0);
        assert_eq!(peak_by(&rises, 0.5), 10.0);
        assert_eq!(peak_by(&rises, 7.9), 20.0);
        assert_eq!(peak_by(&rises, 100.0), 21.0);
        assert_eq!(peak_by(&[], 1.0), 0.0);
    }
}
