//! A throwaway single-node Garage server (the S3-compatible object store a ministry would run
//! across sites) for the storage tests: config, data and metadata in a temp dir, ports picked
//! free on 127.0.0.1, one bucket and one key; the server is killed on drop.
//!
//! The `garage` binary is `$FERRY_GARAGE_BIN`, else `garage` on `PATH`, else
//! `~/.cargo/bin/garage`, where `.ci/run` installs it (`cargo install garage`). Without it the
//! S3 tests fail, unless `FERRY_SKIP_S3=1` says to skip them.

use anyhow::{Context, Result, bail};
use ferry_daemon::config::S3Config;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The bucket every test Garage has.
pub const BUCKET: &str = "ferry-test";
/// The S3 region the test Garage answers to.
pub const REGION: &str = "garage";
const KEY_NAME: &str = "ferry-test-key";
const STARTUP: Duration = Duration::from_secs(60);

/// A running Garage server and the credentials of its one key.
#[derive(Debug)]
pub struct Garage {
    dir: TempDir,
    bin: PathBuf,
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Where the `garage` binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("FERRY_GARAGE_BIN") {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("garage"));
    let cargo_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/garage"));
    on_path.chain(cargo_bin).find(|p| p.is_file())
}

/// Starts a Garage for a test. Returns `None` (after saying so) only when `FERRY_SKIP_S3=1`;
/// panics when Garage is not installed or does not start.
pub fn start_or_skip(test: &str) -> Option<Garage> {
    if std::env::var("FERRY_SKIP_S3").is_ok_and(|v| v == "1") {
        println!("{test}: skipped, FERRY_SKIP_S3=1");
        return None;
    }
    let Some(bin) = binary() else {
        panic!(
            "{test}: the `garage` binary (S3-compatible server) is not installed: run `.ci/run`, which \
             installs it with `cargo install garage`, or set FERRY_GARAGE_BIN to its path; \
             FERRY_SKIP_S3=1 skips the S3 tests"
        );
    };
    match Garage::start(&bin) {
        Ok(garage) => Some(garage),
        Err(e) => panic!("{test}: Garage ({}) did not start: {e:#}", bin.display()),
    }
}

impl Garage {
    /// Writes a config, starts the server, lays out the single node, creates the bucket and key.
    pub fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let (rpc_port, s3_port) = (free_port()?, free_port()?);
        let config = dir.path().join("garage.toml");
        std::fs::write(&config, config_text(dir.path(), rpc_port, s3_port)?).context("write garage.toml")?;
        restrict_permissions(&config)?;
        let log = std::fs::File::create(dir.path().join("garage.log")).context("create log")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut garage = Self {
            dir,
            bin: bin.to_owned(),
            child,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        garage.configure(s3_port).map_err(|e| e.context(format!("server log:\n{}", garage.log_tail())))?;
        Ok(garage)
    }

    fn configure(&mut self, s3_port: u16) -> Result<()> {
        let node = self.wait_for_node_id()?;
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1GB", &node])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        self.cli(&["bucket", "create", BUCKET])?;
        let key = self.cli(&["key", "create", KEY_NAME])?;
        self.access_key_id = field(&key, "Key ID:").context("`garage key create` printed no key id")?;
        self.secret_access_key =
            field(&key, "Secret key:").context("`garage key create` printed no secret")?;
        self.cli(&["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME])?;
        wait_for_port(s3_port)
    }

    /// The node's id, once the server answers the CLI over RPC. (`node id` reads the key file
    /// the server writes first; `status` needs the RPC port up.)
    fn wait_for_node_id(&mut self) -> Result<String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().context("poll server")? {
                bail!("garage server exited: {status}");
            }
            let answer = self.cli(&["node", "id", "-q"]).and_then(|out| {
                self.cli(&["status"])?;
                let id = out.trim().split('@').next().unwrap_or_default().to_owned();
                if id.is_empty() { bail!("`garage node id` printed no id: {out:?}") } else { Ok(id) }
            });
            match answer {
                Ok(id) => return Ok(id),
                Err(e) if Instant::now() > deadline => return Err(e.context("server never answered")),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Runs a `garage` CLI command against this server; its stdout on success.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run garage {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "garage {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's process id (for the CPU time a benchmark charges to it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The storage config of a node keeping its data in this server's bucket under `prefix`.
    pub fn s3_config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: REGION.to_owned(),
            access_key_id: Some(self.access_key_id.clone()),
            secret_access_key: Some(self.secret_access_key.clone()),
            allow_http: true,
        }
    }

    /// The same, as the `[storage.s3]` table of a node's config file.
    pub fn storage_toml(&self, prefix: &str) -> String {
        format!(
            "[storage.s3]\nbucket = {BUCKET:?}\nprefix = {prefix:?}\nendpoint = {:?}\nregion = {REGION:?}\n\
             access-key-id = {:?}\nsecret-access-key = {:?}\nallow-http = true\n",
            self.endpoint, self.access_key_id, self.secret_access_key
        )
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(self.dir.path().join("garage.log"))
            .and_then(|mut f| f.read_to_string(&mut text));
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(dir: &Path, rpc_port: u16, s3_port: u16) -> Result<String> {
    Ok(format!(
        "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"lmdb\"\nlmdb_map_size = \"1G\"\n\
         replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
         [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n",
        meta = dir.join("meta"),
        data = dir.join("data"),
        secret = random_hex(32)?,
    ))
}

/// `count` random bytes as hex.
fn random_hex(count: usize) -> Result<String> {
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("/dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).context("chmod garage.toml")
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) -> Result<()> {
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("bind a free port")?.local_addr()?.port())
}

fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + STARTUP;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("S3 API never listened on port {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The value after `label` on the line that starts with it.
fn field(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}
