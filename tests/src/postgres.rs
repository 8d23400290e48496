//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp directory, `pg_ctl start` on
//! a free port of 127.0.0.1 with fsync off, a fresh database per test, stopped and removed on
//! drop. Control-plane tests run on it and on SQLite.
//!
//! The binaries come from `$FERRY_PG_BIN`, else the newest `/usr/lib/postgresql/<n>/bin`
//! (Debian's `postgresql` package, which `.ci/run` installs). `initdb` refuses to run as root,
//! so as root every command runs as the `postgres` user (`su postgres`). Without PostgreSQL a
//! test prints why it skips, unless `FERRY_REQUIRE_PG=1` (set by `.ci/run`) makes it fail.
//!
//! Plain std and `tempfile`, no dependency on the rest of ferry: `ferry-control`'s tests
//! include this file by path (`#[path]`), which keeps them free of a dependency cycle through
//! the daemon.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

/// A running cluster; stopped and deleted on drop.
pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

/// Where the PostgreSQL server binaries are, if anywhere.
pub fn pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRY_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn required() -> bool {
    std::env::var("FERRY_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// Starts a cluster, or says why not: `None` (with a printed reason) when PostgreSQL is not
/// installed and `FERRY_REQUIRE_PG` is not `1`. A cluster that is installed but fails to start
/// is always a failure.
pub fn start_or_skip(test: &str) -> Option<PgCluster> {
    let Some(bin) = pg_bin() else {
        let message = format!(
            "{test}: PostgreSQL is not installed (no /usr/lib/postgresql/<n>/bin/initdb, FERRY_PG_BIN unset): \
             skipping the PostgreSQL half; `apt-get install postgresql` or run `.ci/run`"
        );
        assert!(!required(), "{message} — but FERRY_REQUIRE_PG=1");
        eprintln!("SKIPPED {message}");
        return None;
    };
    match PgCluster::start(&bin) {
        Ok(cluster) => Some(cluster),
        Err(e) => panic!("{test}: cannot start a PostgreSQL cluster: {e}"),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl PgCluster {
    /// `initdb` and `pg_ctl start`, retrying on another port if the first is taken meanwhile.
    pub fn start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("ferry-pg-").tempdir().map_err(|e| e.to_string())?;
        let as_postgres_user = is_root();
        let mut cluster = Self { dir, bin: bin.to_owned(), port: 0, as_postgres_user };
        if as_postgres_user {
            cluster.run(
                "chown",
                &["-R".into(), "postgres:".into(), cluster.dir.path().display().to_string()],
                false,
            )?;
        }
        let data = cluster.dir.path().join("data");
        let initdb =
            format!("{} -D {} -A trust -U postgres --no-sync", quote(&bin.join("initdb")), quote(&data));
        cluster.shell(&initdb)?;
        let mut last_error = String::new();
        for _ in 0..3 {
            cluster.port = free_port().map_err(|e| e.to_string())?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
                cluster.port,
                cluster.dir.path().display()
            );
            let start = format!(
                "{} -D {} -o '{options}' -l {} -w start",
                quote(&bin.join("pg_ctl")),
                quote(&data),
                quote(&cluster.dir.path().join("log"))
            );
            match cluster.shell(&start) {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = e,
            }
        }
        let log = std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default();
        Err(format!("{last_error}\nserver log:\n{log}"))
    }

    fn run(&self, program: &str, args: &[String], as_postgres: bool) -> Result<(), String> {
        let output: Output = if as_postgres && self.as_postgres_user {
            let line =
                std::iter::once(program.to_owned()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
            Command::new("su").args(["postgres", "-c", &line]).output()
        } else {
            Command::new(program).args(args).output()
        }
        .map_err(|e| format!("{program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Runs a shell line as the cluster's owner.
    fn shell(&self, line: &str) -> Result<(), String> {
        if self.as_postgres_user {
            self.run("su", &["postgres".into(), "-c".into(), line.to_owned()], false)
        } else {
            self.run("sh", &["-c".into(), line.to_owned()], false)
        }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh database (named after `hint`, made unique) and returns its URL.
    pub fn create_database(&self, hint: &str) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let clean: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(40)
            .collect();
        let name = format!("t{}_{clean}", NEXT.fetch_add(1, Ordering::Relaxed));
        let createdb =
            format!("{} -h 127.0.0.1 -p {} -U postgres {name}", quote(&self.bin.join("createdb")), self.port);
        self.shell(&createdb)?;
        Ok(self.url(&name))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let stop = format!(
            "{} -D {} -m immediate -w stop",
            quote(&self.bin.join("pg_ctl")),
            quote(&self.dir.path().join("data"))
        );
        if let Err(e) = self.shell(&stop) {
            eprintln!("stopping the test PostgreSQL cluster: {e}");
        }
    }
}
