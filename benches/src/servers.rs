//! Servers for the peer tools (nginx over HTTPS, sshd for rsync and scp), each started in a
//! scratch directory on a high port and killed when its guard is dropped (also when the benchmark
//! fails): on 127.0.0.1 for the `transfer` scenario, or wherever a [`Placement`] says (the `wan`
//! scenario puts them in namespace A of the emulated link, started through `ip netns exec`).
//! Plus CPU time from `/proc`, so each contender's CPU seconds can be counted on both ends.
//!
//! Neighbours: [`crate::transfer`] and [`crate::wan`] start these and run the clients;
//! `docs/PERFORMANCE.md` and `/work/shared/PEERS-AND-LIMITS.md` describe the setups.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::fleet::Launcher;

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
}

impl Placement<'static> {
    /// On 127.0.0.1 of this process's network namespace, started directly.
    pub fn loopback() -> Self {
        Placement {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            launcher: Launcher::direct(),
            free_port: Box::new(free_port),
            connects: Box::new(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()),
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

/// nginx serving `root` over HTTPS (TLS 1.3, self-signed P-256 certificate, sendfile) in one
/// process (`master_process off`), so its CPU time is that process's.
pub fn start_nginx(scratch: &Path, root: &Path) -> Result<Server> {
    start_nginx_at(scratch, root, &Placement::loopback())
}

/// [`start_nginx`] at `place`.
pub fn start_nginx_at(scratch: &Path, root: &Path, place: &Placement<'_>) -> Result<Server> {
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
    let log = dir.join("logs/stderr.log");
    let mut child = place
        .launcher
        .command("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("logs/error.log"))
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting nginx")?;
    if let Err(err) = wait_listening(SocketAddr::new(addr, port), &*place.connects, &mut child, "nginx", &log)
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err);
    }
    Ok(Server { addr, port, child })
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

/// sshd on 127.0.0.1 (see [`Sshd`]).
pub fn start_sshd(scratch: &Path) -> Result<Sshd> {
    start_sshd_at(scratch, &Placement::loopback())
}

/// [`start_sshd`] at `place`; the client config's host `bench` is `place.addr`.
pub fn start_sshd_at(scratch: &Path, place: &Placement<'_>) -> Result<Sshd> {
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
    let log = dir.join("sshd.log");
    let mut child = place
        .launcher
        .command(sshd_program())
        .arg("-f")
        .arg(&config_path)
        .args(["-D", "-e"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting sshd")?;
    if let Err(err) = wait_listening(SocketAddr::new(addr, port), &*place.connects, &mut child, "sshd", &log)
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err);
    }
    Ok(Sshd { server: Server { addr, port, child }, client_config })
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
