//! Opening the control plane's SQL store: one `sqlx::Any` pool over SQLite (a file, the
//! default) or PostgreSQL (by URL), with every migration of `control/migrations/` run at open.
//!
//! The migrations folder is shared by the catalog (0001–0099) and the audit log and receipts
//! (0100–0199); [`MIGRATOR`] is the one `sqlx::migrate!()` of the crate. A province node opens
//! its own SQLite file here for its local audit log. Off-line tools open a copied file with
//! [`open_read_only`], which never migrates or writes.
//!
//! Neighbours: [`crate::audit`] and [`crate::receipt`] take the pool this returns; the daemon
//! names the URL in its config.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use std::path::Path;

/// Every migration of the control store, in version order.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long opening the store, or taking a connection from it, waits for the database.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database is unreachable, refuses us, or the file cannot be opened.
    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    /// A migration failed or the database was migrated by a newer ferry.
    #[error("cannot migrate the database {url}: {source}")]
    Migrate { url: String, source: MigrateError },
}

/// Opens (creating a SQLite file if missing) and migrates the store. `url` is a
/// `postgres://…` or `sqlite://…` URL, or a plain file path taken as SQLite.
pub async fn open(url: &str) -> Result<AnyPool, DbError> {
    let url = normalize(url);
    let pool = connect(&url).await?;
    MIGRATOR.run(&pool).await.map_err(|source| DbError::Migrate { url: redact(&url), source })?;
    Ok(pool)
}

/// Opens a SQLite file read-only, without migrating: for verifying a copied log.
pub async fn open_read_only(path: &Path) -> Result<AnyPool, DbError> {
    connect(&format!("sqlite://{}?mode=ro", path.display())).await
}

/// Connects without migrating (administration, tests).
pub async fn open_unmigrated(url: &str) -> Result<AnyPool, DbError> {
    connect(&normalize(url)).await
}

/// The SQLite URL of a file, created on first open.
pub fn sqlite_url(path: &Path) -> String {
    // `sqlite://relative/x.db` would read `relative` as a host: the path is made absolute first
    // (against the working directory, as the operating system would).
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("sqlite://{}?mode=rwc", absolute.display())
}

fn normalize(url: &str) -> String {
    if url.contains("://") || url.starts_with("sqlite:") {
        url.to_owned()
    } else {
        sqlite_url(Path::new(url))
    }
}

async fn connect(url: &str) -> Result<AnyPool, DbError> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(8)
        // A writer that finds the file locked waits for it (5 s) rather than failing at once.
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    sqlx::query("PRAGMA busy_timeout = 5000").execute(conn).await?;
                }
                Ok(())
            })
        })
        // A database that is down fails the open (and each later acquire) in seconds, not sqlx's 30.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
        .map_err(|source| DbError::Connect { url: redact(url), source })
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_path_is_a_sqlite_file() {
        assert_eq!(normalize("/var/lib/ferry/control.db"), "sqlite:///var/lib/ferry/control.db?mode=rwc");
        let relative = normalize("nodes/../state/control.db");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            relative,
            format!("sqlite://{}?mode=rwc", cwd.join("nodes/../state/control.db").display())
        );
        assert_eq!(normalize("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        assert_eq!(redact("postgres://ferry:secret@db:5432/control"), "postgres://ferry:***@db:5432/control");
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_within_the_acquire_timeout() {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let started = std::time::Instant::now();
        let result = open(&format!("postgres://nobody@127.0.0.1:{port}/control")).await;
        assert!(matches!(result, Err(DbError::Connect { .. })), "{result:?}");
        assert!(started.elapsed() < ACQUIRE_TIMEOUT + std::time::Duration::from_secs(3));
    }

    #[tokio::test]
    async fn open_migrates_a_new_file_and_reopens_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let url = path.to_str().expect("utf-8 path");
        let pool = open(url).await.expect("open");
        pool.close().await;
        let pool = open(url).await.expect("reopen");
        let read_only = open_read_only(&path).await.expect("read-only");
        assert!(sqlx::query("CREATE TABLE t (x BIGINT)").execute(&read_only).await.is_err());
        pool.close().await;
    }
}
