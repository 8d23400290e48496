//! A local ministry and province nodes as `ferryd` child processes on loopback, with a fresh
//! PKI, for the demo. The ministry node runs the control plane (`[control]`, its SQLite store
//! in the node's state directory, a control-plane signing certificate); the provinces follow
//! its signed policy (`[policy]`).

use anyhow::{Context, bail};
use ferry_client::pki::{self, IssueRequest};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::TlsPaths;
use ferry_proto::{DeptId, Role};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One running node of the demo.
pub struct DemoNode {
    pub name: String,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// Credentials of an operator of this node's department.
    pub operator: TlsPaths,
    child: Child,
}

impl DemoNode {
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr { addr: self.addr, server_name: self.name.clone() }
    }

    /// SIGTERM, then wait for the drain.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.child.wait()?;
        Ok(())
    }
}

/// The serial of the policy snapshot `node` enforces (`ferry_policy_serial` on its admin
/// port; 0: none yet).
pub fn policy_serial(node: &DemoNode) -> anyhow::Result<u64> {
    Ok(metric(node, "ferry_policy_serial")? as u64)
}

/// The value of the unlabelled sample `name` on `node`'s admin port (`/metrics`).
pub fn metric(node: &DemoNode, name: &str) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&node.admin, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let prefix = format!("{name} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("{} reports no {name}", node.name))?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    value.parse::<f64>().with_context(|| format!("{name} {value:?}"))
}

/// Waits until every node enforces a newer policy snapshot than `before` (its serial then),
/// as a catalog change reaches the ministry's own replica and, pushed, the provinces.
pub async fn await_policy(nodes: &[&DemoNode], before: &[u64]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for (node, before) in nodes.iter().zip(before) {
        while policy_serial(node)? <= *before {
            if std::time::Instant::now() > deadline {
                bail!("{} did not receive the new policy within 20 s; see its ferryd.log", node.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Finds `ferryd` next to this executable. Run through `cargo run` without it, builds it (and
/// this binary, in the same profile) in one cargo invocation whose progress is shown.
pub fn ferryd_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let candidate = dir.join("ferryd");
    if candidate.exists() {
        return Ok(candidate);
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "ferry-daemon", "-p", "ferry-client"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        eprintln!(
            "ferryd is not built yet: building it now ({cmd:?}); a few minutes on a fresh machine.\n\
             (`cargo build --release -p ferry-client -p ferry-daemon && target/release/ferry demo` builds both at once.)"
        );
        if !cmd.status()?.success() {
            bail!("building ferryd failed");
        }
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "ferryd not found next to {}; build both binaries with `cargo build --release -p ferry-client -p ferry-daemon`",
        exe.display()
    )
}

/// The department of the demo's S&T authority (部科技主管部门), named in `[control]`.
pub const ST_AUTHORITY: &str = "ministry-st";

/// Creates the CA, a certificate for every node and operator (the first name is the
/// ministry), and the ministry's control-plane signing certificate (`control.pem`).
pub fn make_pki(dir: &Path, names: &[&str]) -> anyhow::Result<()> {
    pki::init(dir, "ferry demo ministry CA", time::Duration::days(365))?;
    let now = time::OffsetDateTime::now_utc();
    for (i, name) in names.iter().enumerate() {
        let dept = DeptId::new(*name)?;
        let role = if i == 0 { Role::Ministry } else { Role::Province };
        let node = IssueRequest {
            dept: dept.clone(),
            role,
            name: format!("{name} node"),
            dns_names: vec![(*name).to_owned()],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(30),
        };
        pki::issue(dir, &node, &dir.join(format!("{name}.pem")), &dir.join(format!("{name}.key")))?;
        if i == 0 {
            let control = IssueRequest {
                role: Role::Control,
                name: format!("{name} control plane"),
                dns_names: vec![],
                ..node.clone()
            };
            pki::issue(dir, &control, &dir.join("control.pem"), &dir.join("control.key"))?;
        }
        let operator = IssueRequest {
            role: Role::Operator,
            name: format!("{name} operator"),
            dns_names: vec![],
            ..node
        };
        pki::issue(
            dir,
            &operator,
            &dir.join(format!("{name}-ops.pem")),
            &dir.join(format!("{name}-ops.key")),
        )?;
    }
    Ok(())
}

/// What a node does about the catalog.
pub enum Governance<'a> {
    /// Runs the control plane (the ministry).
    Control,
    /// Follows the policy of the ministry node known as this peer, whose department signs it.
    Follow { ministry: &'a str },
}

impl Governance<'_> {
    fn config(&self, pki: &Path) -> String {
        match self {
            Self::Control => format!(
                "\n[control]\nsigning-cert = \"{pki}/control.pem\"\nsigning-key = \"{pki}/control.key\"\n\
                 st-authority = \"{ST_AUTHORITY}\"\n",
                pki = pki.display()
            ),
            Self::Follow { ministry } => format!(
                "\n[policy]\nministry = \"{ministry}\"\nministry-dept = \"{ministry}\"\nmax-staleness = \"5m\"\n"
            ),
        }
    }
}

fn tls_paths(pki: &Path, who: &str) -> TlsPaths {
    TlsPaths {
        ca: pki.join("ca.pem"),
        cert: pki.join(format!("{who}.pem")),
        key: pki.join(format!("{who}.key")),
        crl: Some(pki.join("crl.pem")),
    }
}

/// Writes a node config and starts `ferryd` on it; returns once it listens.
pub fn start_node(
    ferryd: &Path,
    root: &Path,
    pki: &Path,
    name: &str,
    peers: &[(&str, SocketAddr)],
    governance: Governance,
) -> anyhow::Result<DemoNode> {
    let node_dir = root.join(name);
    std::fs::create_dir_all(&node_dir)?;
    let mut config = format!(
        "node-name = \"{name}\"\nlisten = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\nstate-dir = \"state\"\n\n\
         [storage]\nlocal = \"data\"\n\n[tls]\nca = \"{pki}/ca.pem\"\ncert = \"{pki}/{name}.pem\"\nkey = \"{pki}/{name}.key\"\ncrl = \"{pki}/crl.pem\"\n",
        pki = pki.display()
    );
    for (peer, addr) in peers {
        config.push_str(&format!("\n[peers.{peer}]\naddress = \"{addr}\"\n"));
    }
    config.push_str(&governance.config(pki));
    let config_path = node_dir.join("ferryd.toml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(node_dir.join("ferryd.log"))?;
    let mut child = Command::new(ferryd)
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", ferryd.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let field = |key: &str| -> Option<SocketAddr> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok())
    };
    let (Some(addr), Some(admin)) = (field("quic="), field("admin=")) else {
        let _ = child.kill();
        bail!("{name} did not start; see {}", node_dir.join("ferryd.log").display());
    };
    Ok(DemoNode {
        name: name.to_owned(),
        addr,
        admin,
        data_dir: node_dir.join("data"),
        operator: tls_paths(pki, &format!("{name}-ops")),
        child,
    })
}
