//! Opening the event store: its own database (SQLite) or its own bounded
//! pool (PostgreSQL), never the flag store's connections.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::error::EventsError;
use crate::ingest::Writer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connections of an event store on SQLite: the writer and readers.
pub const SQLITE_CONNECTIONS: u32 = 4;
/// Connections of an event store on PostgreSQL, by default: a bounded share
/// beside the flag store's 10, so a burst of events cannot take the
/// connections flag writes need.
pub const POSTGRES_CONNECTIONS: u32 = 4;

/// The page cache of each SQLite connection of the event store: 128 MiB.
/// A fold dirties many pages of the per-unit tables; with SQLite's default
/// 2 MiB they would be spilled and read back mid-transaction.
const SQLITE_CACHE: &str = "PRAGMA cache_size = -131072";
/// Reads through a memory map of the file (the operating system's page
/// cache, shared by every connection) instead of copies into each
/// connection's cache: up to 4 GiB of address space.
const SQLITE_MMAP: &str = "PRAGMA mmap_size = 4294967296";

/// How an event store is run; [`EventStore::open`] uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct EventsOptions {
    /// Most connections of the pool; by default [`SQLITE_CONNECTIONS`] or
    /// [`POSTGRES_CONNECTIONS`].
    pub max_connections: Option<u32>,
}

/// The event store. Cheap to clone: a connection pool and its writer.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: AnyPool,
    backend: Backend,
    url: String,
    pub(crate) writer: Arc<Writer>,
}

/// The events URL that goes with a flag store's URL: on SQLite a file next
/// to the flag store's (`sqlite://data/guidon.db?mode=rwc` →
/// `sqlite://data/guidon-events.db?mode=rwc`; a name without `.db` gets
/// `-events` appended), so an event commit never takes the flag store's
/// write lock; on PostgreSQL the same database (the events have tables of
/// their own, `ev_*`, and a pool of their own).
pub fn events_url(store_url: &str) -> String {
    let Some(rest) = store_url.strip_prefix("sqlite://") else {
        return store_url.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = match path.strip_suffix(".db") {
        Some(stem) => format!("{stem}-events.db"),
        None => format!("{path}-events"),
    };
    match query {
        Some(query) => format!("sqlite://{path}?{query}"),
        None => format!("sqlite://{path}"),
    }
}

impl EventStore {
    /// Opens (and on first start creates) the event store at `url`:
    /// `sqlite://PATH` or `postgres://…` (see [`events_url`]).
    pub async fn open(url: &str) -> Result<EventStore, EventsError> {
        EventStore::open_with(url, EventsOptions::default()).await
    }

    pub async fn open_with(url: &str, options: EventsOptions) -> Result<EventStore, EventsError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
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
            return Err(EventsError::UnsupportedUrl(url.to_owned()));
        };
        let max = options.max_connections.unwrap_or(match backend {
            Backend::Sqlite => SQLITE_CONNECTIONS,
            Backend::Postgres => POSTGRES_CONNECTIONS,
        });
        let pool_options = AnyPoolOptions::new()
            .max_connections(max.max(2))
            .acquire_timeout(Duration::from_secs(10));
        let pool_options = if backend == Backend::Sqlite {
            pool_options
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // FULL: every acknowledged batch is durable in WAL
                        // mode. These PRAGMAs are this pool's: the flag
                        // store's connections never see them.
                        for pragma in [
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA synchronous = FULL",
                            SQLITE_CACHE,
                            SQLITE_MMAP,
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                })
                // As the flag store's: a connection that comes back inside
                // a transaction (after SQLITE_FULL) is rolled back and
                // closed, never reused.
                .after_release(|conn, _meta| {
                    Box::pin(async move {
                        match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                            Ok(_) => {
                                tracing::warn!(
                                    "an events connection came back inside a transaction: rolled back and closed"
                                );
                                Ok(false)
                            }
                            Err(_) => Ok(true),
                        }
                    })
                })
        } else {
            pool_options
        };
        let pool = pool_options.connect(&url).await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::raw_sql(include_str!("../schema/sqlite.sql"))
                .execute(&pool)
                .await?;
        } else {
            sqlx::raw_sql(include_str!("../schema/postgres.sql"))
                .execute(&pool)
                .await?;
        }
        Ok(EventStore {
            pool,
            backend,
            url,
            writer: Arc::default(),
        })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL the store was opened with (`mode=rwc` added on SQLite).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Deletes every event of `env`, folded or not, and its ids: after
    /// it, the same events are new again. The flag store's environment is
    /// the caller's to delete.
    pub async fn delete_env(&self, env: &str) -> Result<(), EventsError> {
        self.writer.delete_env(self, env).await
    }
}

/// Ends a transaction: commits when `result` is Ok, rolls back otherwise,
/// explicitly, so no connection goes back to the pool inside one.
pub(crate) async fn finish<T>(
    tx: sqlx::Transaction<'static, sqlx::Any>,
    result: Result<T, EventsError>,
) -> Result<T, EventsError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_file_sits_next_to_the_flag_store() {
        assert_eq!(
            events_url("sqlite://data/guidon.db"),
            "sqlite://data/guidon-events.db"
        );
        assert_eq!(
            events_url("sqlite:///var/lib/g.db?mode=rwc"),
            "sqlite:///var/lib/g-events.db?mode=rwc"
        );
        assert_eq!(events_url("sqlite://flags"), "sqlite://flags-events");
        assert_eq!(
            events_url("postgres://u@h/db?sslmode=disable"),
            "postgres://u@h/db?sslmode=disable"
        );
    }
}
