//! Servers for the peer tools (nginx over HTTPS, sshd for rsync and scp), each started in a
//! scratch directory on a high port and killed when its guard is dropped (also when the benchmark
//! fails): on 127.0.0.1 for the `transfer` scenario, or wherever a [`Placement`] says (the `wan`
//! scenario puts them in namespace A of the emulated link, started through `ip netns exec`).
//! [`PeerServers`] starts the ones a scenario's peers need, skipping (and noting) a peer whose
//! tools are missing, and builds the curl and rsync client commands. Plus CPU time from `/proc`,
//! so each contender's CPU seconds can be counted on both ends.
//!
//! Neighbours: [`crate::transfer`] and [`crate::wan`] start these and run the clients;
//! `docs/PERFORMANCE.md` and `../shared/PEERS-AND-LIMITS.md` (beside the repository) describe the setups.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::fleet::Launcher;
use crate::report::{Report, progress};

/// `/proc/*/stat` times are in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds from `/proc/<pid>/stat`: `(user + system of the process, of its reaped children)`.
pub fn proc_cpu(pid: &str) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc stat")?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let rest = text.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<f64> =
        rest.split_whitespace().skip(11).take(4).map(|f| f.parse().unwrap_or(0.0)).collect();
    ensure!(fields.len() == 4, "malformed /proc stat");
    Ok(((fields[0] + fields[1]) / TICKS_PER_SECOND, (fields[2] + fields[3]) / TICKS_PER_SECOND))
}

/// This process's own CPU seconds (all threads).
pub fn self_cpu() -> f64 {
    proc_cpu("self").map_or(f64::NAN, |(own, _)| own)
}

/// CPU seconds of this process's waited-for children (the peer clients).
pub fn children_cpu() -> f64 {
    proc_cpu("self").map_or(f64::NAN, |(_, children)| children)
}

/// Whether `program` can be run (found on PATH or as an absolute path).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where a server listens and how it is started.
pub struct Placement<'a> {
    /// The address the server listens on (and its clients connect to).
    pub addr: IpAddr,
    /// How the server process is started (e.g. `ip netns exec <ns>`).
    pub launcher: Launcher,
    /// A free TCP port at `addr`.
    pub free_port: Box<dyn Fn() -> Result<u16> + 'a>,
    /// Whether a TCP connection to the server succeeds, tried from where it can be reached.
    pub connects: Box<dyn Fn(SocketAddr) -> bool + 'a>,
    /// Where the server runs, as messages say it after "did not start" (e.g. ` in A`; empty on
    /// loopback).
    pub location: &'static str,
}

impl Placement<'static> {
    /// On 127.0.0.1 of this process's network namespace, started directly.
    pub fn loopback() -> Self {
        Placement {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            launcher: Launcher::direct(),
            free_port: Box::new(free_port),
            connects: Box::new(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()),
            location: "",
        }
    }
}

fn wait_listening(
    addr: SocketAddr,
    connects: &dyn Fn(SocketAddr) -> bool,
    child: &mut Child,
    name: &str,
    log: &Path,
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if connects(addr) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{name} exited ({status}) before listening on {addr}: {log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{name} did not listen on {addr} within 10 s")
}

fn run_ok(command: &mut Command) -> Result<()> {
    let out = command.output().with_context(|| format!("running {command:?}"))?;
    ensure!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Starts the server `name` with `command` (its stderr to `log`) and waits until it listens on
/// `port` at `place`; a server that exits or does not listen within 10 s is killed and its
/// log's text is in the error.
fn spawn_listening(
    command: &mut Command,
    name: &str,
    port: u16,
    place: &Placement<'_>,
    log: &Path,
) -> Result<Server> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let addr = place.addr;
    if let Err(err) = wait_listening(SocketAddr::new(addr, port), &*place.connects, &mut child, name, log) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err);
    }
    Ok(Server { addr, port, child })
}

/// A server process killed (and reaped) on drop.
pub struct Server {
    /// The address it listens on (127.0.0.1 unless placed elsewhere).
    pub addr: IpAddr,
    pub port: u16,
    child: Child,
}

impl Server {
    /// CPU seconds of the server so far, including its exited children (sshd's sessions).
    pub fn cpu(&self) -> f64 {
        proc_cpu(&self.child.id().to_string()).map_or(f64::NAN, |(own, children)| own + children)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx at `place` serving `root` over HTTPS (TLS 1.3, self-signed P-256 certificate,
/// sendfile) in one process (`master_process off`), so its CPU time is that process's.
pub fn start_nginx(scratch: &Path, root: &Path, place: &Placement<'_>) -> Result<Server> {
    let dir = scratch.join("nginx");
    std::fs::create_dir_all(dir.join("logs"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "2", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    let port = (place.free_port)()?;
    let addr = place.addr;
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen {addr}:{port} ssl;\n    ssl_protocols TLSv1.3;\n\
             ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {root};\n  }}\n}}\n",
        cert = cert.display(),
        key = key.display(),
        root = root.display(),
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config)?;
    let mut command = place.launcher.command("nginx");
    command.arg("-p").arg(&dir).arg("-e").arg(dir.join("logs/error.log")).arg("-c").arg(&config_path);
    spawn_listening(&mut command, "nginx", port, place, &dir.join("logs/stderr.log"))
}

/// sshd with a fresh host key and user key, and the client config to reach it
/// (`Ciphers aes128-gcm@openssh.com`, no compression) as host `bench`.
pub struct Sshd {
    pub server: Server,
    /// `ssh -F` config naming host `bench`.
    pub client_config: PathBuf,
}

pub fn sshd_program() -> &'static str {
    "/usr/sbin/sshd"
}

/// sshd at `place` (see [`Sshd`]); the client config's host `bench` is `place.addr`.
pub fn start_sshd(scratch: &Path, place: &Placement<'_>) -> Result<Sshd> {
    let dir = scratch.join("sshd");
    std::fs::create_dir_all(&dir)?;
    for key in ["host_key", "user_key"] {
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join(key)))?;
    }
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys"))?;
    // sshd insists on its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?.trim().to_owned();
    let port = (place.free_port)()?;
    let addr = place.addr;
    let d = dir.display();
    let config = format!(
        "ListenAddress {addr}\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {d}/sshd.pid\n\
         Subsystem sftp internal-sftp\n"
    );
    let config_path = dir.join("sshd_config");
    std::fs::write(&config_path, config)?;
    let client_config = dir.join("ssh_config");
    std::fs::write(
        &client_config,
        format!(
            "Host bench\n  HostName {addr}\n  Port {port}\n  User {user}\n  IdentityFile {d}/user_key\n\
             IdentitiesOnly yes\n  Ciphers aes128-gcm@openssh.com\n  Compression no\n\
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
        ),
    )?;
    let mut command = place.launcher.command(sshd_program());
    command.arg("-f").arg(&config_path).args(["-D", "-e"]);
    let server = spawn_listening(&mut command, "sshd", port, place, &dir.join("sshd.log"))?;
    Ok(Sshd { server, client_config })
}

/// The peer contenders, by key, and the programs each needs (client and server).
const PEER_PROGRAMS: [(&str, &[&str]); 4] = [
    ("curl", &["curl", "nginx", "openssl"]),
    ("rsync", &["rsync", "ssh", "ssh-keygen", "/usr/sbin/sshd"]),
    ("scp", &["scp", "ssh", "ssh-keygen", "/usr/sbin/sshd"]),
    ("tcp", &["socat"]),
];

/// The servers of the peer contenders a scenario runs (killed when dropped): nginx for curl,
/// sshd for rsync and scp; plain TCP (socat) needs none started ahead.
#[derive(Default)]
pub struct PeerServers {
    pub nginx: Option<Server>,
    pub sshd: Option<Sshd>,
    /// Keys of the peers that run, in run order; skipped ones were reported.
    pub enabled: Vec<&'static str>,
}

impl PeerServers {
    /// Starts at `place` the servers the peers `keys` need (those in `only`, when given),
    /// nginx serving `root`, with their files under `scratch`. A peer whose programs are not
    /// installed or whose server does not start is skipped, and says so on stderr and in
    /// `report`'s notes.
    pub fn start(
        keys: &[&'static str],
        only: Option<&[String]>,
        scratch: &Path,
        root: &Path,
        place: &Placement<'_>,
        report: &mut Report,
    ) -> Self {
        let mut peers = Self::default();
        for &key in keys {
            if only.is_some_and(|only| !only.iter().any(|k| k == key)) {
                continue;
            }
            let programs = PEER_PROGRAMS.iter().find(|(k, _)| *k == key).map_or(&[][..], |(_, p)| p);
            if let Some(missing) = programs.iter().find(|p| !have(p)) {
                let message = format!("{key}: skipped, `{missing}` is not installed");
                progress(&message);
                report.note(message);
                continue;
            }
            let started = match key {
                "curl" if peers.nginx.is_none() => {
                    start_nginx(scratch, root, place).map(|s| peers.nginx = Some(s))
                }
                "rsync" | "scp" if peers.sshd.is_none() => {
                    start_sshd(scratch, place).map(|s| peers.sshd = Some(s))
                }
                _ => Ok(()),
            };
            match started {
                Ok(()) => peers.enabled.push(key),
                Err(err) => {
                    let message =
                        format!("{key}: skipped, its server did not start{}: {err:#}", place.location);
                    progress(&message);
                    report.note(message);
                }
            }
        }
        peers
    }

    /// CPU seconds so far of the server peer `key` uses (0 for one without a server).
    pub fn server_cpu(&self, key: &str) -> f64 {
        match key {
            "curl" => self.nginx.as_ref().map_or(0.0, Server::cpu),
            "rsync" | "scp" => self.sshd.as_ref().map_or(0.0, |s| s.server.cpu()),
            _ => 0.0,
        }
    }

    /// `curl --http1.1` (started by `launcher`) fetching the files `names` from nginx into `dest`.
    pub fn curl(&self, launcher: &Launcher, names: &[String], dest: &Path) -> Result<Command> {
        let nginx = self.nginx.as_ref().context("nginx")?;
        let mut command = launcher.command("curl");
        command.args(["-sSk", "--http1.1", "--fail"]);
        for name in names {
            command.arg(format!("https://{}:{}/{name}", nginx.addr, nginx.port));
            command.arg("-o").arg(dest.join(name));
        }
        Ok(command)
    }

    /// `rsync -r` over ssh (started by `launcher`) of the directory `root` from sshd's host into
    /// `dest`.
    pub fn rsync(&self, launcher: &Launcher, root: &Path, dest: &Path) -> Result<Command> {
        let sshd = self.sshd.as_ref().context("sshd")?;
        let mut command = launcher.command("rsync");
        command.arg("-r").arg("-e").arg(format!("ssh -F {}", sshd.client_config.display()));
        command.arg(format!("bench:{}/", root.display())).arg(format!("{}/", dest.display()));
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let (own, children) = proc_cpu("self").expect("proc stat");
        assert!(own >= 0.0 && children >= 0.0);
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(have("sh"));
        assert!(!have("surely-not-a-program-ferry"));
    }
}
