//! Test support shared by every crate's tests, below the server (so the
//! store's tests can use it too):
//!
//! - [`databases`]: the backends every store and server test runs against:
//!   SQLite always, PostgreSQL when `GUIDON_TEST_DATABASE_URL` names a
//!   server. Each store gets a fresh SQLite file, or a fresh PostgreSQL
//!   schema, so runs never collide; [`sqlite`] for one SQLite file alone.
//! - [`TempDir`]: a fresh directory, removed on drop.
//! - [`free_port`]: a port nothing listens on.
//! - [`TestCa`] and [`ServerCert`]: a CA and server certificates made in
//!   the test (`rcgen`), for the TLS tests.
//! - [`PrivatePostgres`]: a PostgreSQL server of the test's own, which it
//!   may stop and start (the shared one is never touched).
//! - [`SmallFs`]: a directory on a tmpfs of a few megabytes, to fill.
//! - [`sqlite_integrity`]: SQLite's own `PRAGMA integrity_check` of a file.
//!
//! The server's own test support (`guidon_server::testing`, behind its
//! `test-support` feature) builds on these and re-exports them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::AnyPool;

mod tls;
pub use tls::{ServerCert, TestCa};
mod postgres;
mod smallfs;

pub use postgres::PrivatePostgres;
pub use smallfs::SmallFs;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    /// The SQLite file's directory (removed when the field drops, after
    /// `drop` below).
    _dir: Option<TempDir>,
    /// (server URL, schema) to drop when done.
    schema: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, schema)) = self.schema.take() {
            // Drop runs inside the test's runtime: clean up from a thread
            // with a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let pool = raw_pool(&base).await?;
                    // A task of the test's runtime may still hold a
                    // transaction in the schema, and that runtime's thread
                    // is blocked right here: waiting for its locks would
                    // never end. Give up after a while and leave the schema
                    // (its connections close when the runtime drops).
                    let mut conn = pool.acquire().await?;
                    sqlx::query("SET lock_timeout = '5s'")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut *conn)
                        .await?;
                    drop(conn);
                    pool.close().await;
                    Ok::<_, sqlx::Error>(())
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }
}

fn unique(label: &str) -> String {
    format!(
        "{label}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty directory under the system's temporary directory,
/// removed (with everything in it) on drop. Its name holds the label, the
/// process id and a counter, so tests running at once never share one.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("guidon-{}", unique(label)));
        // A directory left by an earlier process of the same id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `contents` to the file `name` inside the directory; its path,
    /// as a string for a command line.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on (yet): the kernel's pick, released at once.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A fresh SQLite file (for tests that need one database, not every backend).
pub fn sqlite(label: &str) -> TestDb {
    let dir = TempDir::new(&format!("store-{label}"));
    TestDb {
        name: "sqlite",
        url: format!("sqlite://{}", dir.join("guidon.db").display()),
        _dir: Some(dir),
        schema: None,
    }
}

/// Fresh, empty databases, one per available backend.
pub async fn databases(label: &str) -> Vec<TestDb> {
    let mut dbs = vec![sqlite(label)];
    match std::env::var("GUIDON_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("guidon_test_{}", unique(label)).to_lowercase();
            let admin = raw_pool(&base)
                .await
                .expect("PostgreSQL from GUIDON_TEST_DATABASE_URL is reachable");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .expect("create schema");
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            dbs.push(TestDb {
                name: "postgres",
                url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                _dir: None,
                schema: Some((base.clone(), schema)),
            });
        }
        _ => eprintln!("PostgreSQL tests skipped: GUIDON_TEST_DATABASE_URL is not set"),
    }
    dbs
}

/// A plain connection pool, for what the store API will not do (planting a
/// corrupt row, creating a schema).
pub async fn raw_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await
}

/// SQLite's `PRAGMA integrity_check` of the database at `url`: `"ok"` when
/// every page, index and constraint is sound, else SQLite's list of what is
/// not.
pub async fn sqlite_integrity(url: &str) -> Result<String, sqlx::Error> {
    let pool = raw_pool(url).await?;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(rows.join("\n"))
}
