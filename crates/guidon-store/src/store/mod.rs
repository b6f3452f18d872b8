//! The store: opening a database, and what every part of it shares.
//!
//! - `envs.rs`: creating, listing and deleting environments.
//! - `read.rs`: documents, catch-up, single definitions, history, audit.
//! - `history.rs`: an environment as it was at a revision or an instant;
//!   compaction of the change log.
//! - `write.rs`: one change (upsert, delete, revert, promote), validated
//!   against the whole environment and handed to watchers compiled.
//! - `bulk.rs`: replacing a whole environment under one revision (GitOps).
//! - `watch.rs`: hearing of every commit, this process's and others'.

mod bulk;
mod envs;
mod history;
mod planned;
mod read;
mod watch;
mod write;

pub use planned::{NewPlannedChange, PlannedChange, ReleaseStep, StoredRelease};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guidon_protocol::Kind;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::error::StoreError;

pub use bulk::{Applied, Replaced};
pub use history::{AsOf, Past};
pub use read::FlagOverview;
pub use watch::{Commit, Revised};
pub use write::{BLOCKING_COMPILE, Committed, Stored, apply_and_compile, compile};

/// Environments that exist after the first start.
pub const DEFAULT_ENVIRONMENTS: [&str; 2] = ["development", "production"];

/// How far back `changes_since` answers. Every change is kept for history
/// and audit, but a client more than this many revisions behind is better
/// served by one full snapshot than by replaying the log.
pub const CATCH_UP_HORIZON: u64 = 10_000;

/// How a store is run; [`Store::open`] uses the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// See [`CATCH_UP_HORIZON`].
    pub catch_up_horizon: u64,
    /// How often a watching store reads the environments' revisions, to see
    /// commits of other processes (on PostgreSQL, LISTEN/NOTIFY usually
    /// tells first; this is the fallback).
    pub poll_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            catch_up_horizon: CATCH_UP_HORIZON,
            poll_interval: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The store. Cheap to clone: it is a connection pool and shared state.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    options: StoreOptions,
    watch: Arc<watch::Watch>,
    /// Per environment: what this process last committed, and the lock
    /// its writers queue on (see `write.rs`).
    writers: Arc<write::Writers>,
    /// PostgreSQL's NOTIFY channel, named after the schema: channels are
    /// per database, and two Guidon schemas in one database must not hear
    /// each other.
    channel: String,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (and on first start creates and migrates) the database at
    /// `url`: `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, StoreOptions::default()).await
    }

    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            // Create the file on first start.
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = if path.contains("mode=") {
                url.to_owned()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store_options = options;
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(10));
        let options = if backend == Backend::Sqlite {
            options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Writers of other connections and processes wait for
                    // the lock instead of failing; FULL makes every
                    // acknowledged commit durable in WAL mode.
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = FULL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        // A connection must come back to the pool outside any transaction.
        // After SQLITE_FULL (a full disk) one can come back inside one that
        // sqlx no longer tracks: a later write's BEGIN then becomes a
        // savepoint in it, is acknowledged, and is rolled back when the
        // connection closes. So a connection returned with a transaction
        // open is rolled back and closed (ROLLBACK fails, harmlessly, when
        // there is none).
        let options = if backend == Backend::Sqlite {
            options.after_release(|conn, _meta| {
                Box::pin(async move {
                    match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                        Ok(_) => {
                            tracing::warn!(
                                "a database connection came back inside a transaction: rolled back and closed"
                            );
                            Ok(false)
                        }
                        Err(_) => Ok(true),
                    }
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        let channel = if backend == Backend::Postgres {
            let schema: String = sqlx::query("SELECT CAST(current_schema() AS TEXT) AS s")
                .fetch_one(&pool)
                .await?
                .try_get("s")?;
            format!("guidon_changes_{schema}")
        } else {
            String::new()
        };
        let store = Store {
            channel,
            pool,
            backend,
            url,
            options: store_options,
            watch: Arc::new(watch::Watch::new()),
            writers: Arc::new(write::Writers::default()),
        };
        for env in DEFAULT_ENVIRONMENTS {
            store.insert_env(env).await?;
        }
        Ok(store)
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_read(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Several statements must see one state of the environment.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

/// Ends a transaction: commits when `result` is Ok, rolls back otherwise.
/// Explicitly, so no connection goes back to the pool inside a transaction
/// (in PostgreSQL that would keep the environment's row locked, blocking
/// every other writer, until the connection happened to be used again).
pub(crate) async fn finish<T>(
    tx: Transaction<'static, Any>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The rollback's own failure (database gone) changes nothing:
            // an unfinished transaction is rolled back by the server.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

pub(crate) fn corrupt(env: &str, kind: Kind, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        env: env.to_owned(),
        kind: kind.as_str(),
        key: key.to_owned(),
        message: e.to_string(),
    }
}

/// A poisoned lock only means another thread panicked while holding it;
/// the maps behind these locks are valid at every step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-environment entries of a map behind a mutex.
pub(crate) type PerEnv<T> = Mutex<HashMap<String, T>>;
