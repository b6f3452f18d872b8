//! The local state of `guidon edge`, in a SQLite file of its own: the
//! outbox of experiment events accepted by the edge and not yet delivered
//! to its upstream, and the token verdicts it keeps across restarts. A
//! batch is acknowledged to its sender only once it is committed here
//! (`synchronous = FULL` in WAL mode: durable), and removed only once the
//! upstream has answered for it, so no acknowledged event is lost across a
//! restart of the edge or of its upstream. Delivery is at least once: the
//! upstream counts an event once by its `event_id` and timestamp.
//!
//! Verdicts are kept by the secret's hash, never the secret, so an edge
//! restarted while its upstream is away still knows the tokens it served.

use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::StoreError;

/// One buffered batch: its environment and its events, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub id: i64,
    pub env: String,
    /// A JSON array of events, as the upstream's `POST /api/v1/events` takes them.
    pub events: String,
    pub count: u64,
}

/// The edge's durable buffer of events and its kept verdicts (see the
/// module's documentation).
#[derive(Debug, Clone)]
pub struct EdgeStore {
    pool: SqlitePool,
}

impl EdgeStore {
    /// Opens (creating it) the file at `path`.
    pub async fn open(path: &std::path::Path) -> Result<EdgeStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 env TEXT NOT NULL,
                 events TEXT NOT NULL,
                 count INTEGER NOT NULL
             )",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS verdicts (hash TEXT PRIMARY KEY, token TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(EdgeStore { pool })
    }

    /// Buffers one batch durably: when this returns, it survives a crash.
    pub async fn push(&self, env: &str, events: &str, count: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (env, events, count) VALUES (?, ?, ?)")
            .bind(env)
            .bind(events)
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The oldest batches, up to `limit`.
    pub async fn oldest(&self, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        let rows = sqlx::query("SELECT id, env, events, count FROM outbox ORDER BY id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Outgoing {
                    id: row.try_get("id")?,
                    env: row.try_get("env")?,
                    events: row.try_get("events")?,
                    count: u64::try_from(row.try_get::<i64, _>("count")?).unwrap_or(0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Forgets delivered batches.
    pub async fn remove(&self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query("DELETE FROM outbox WHERE id = ?")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Events waiting for delivery.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COALESCE(SUM(count), 0) AS n FROM outbox")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Replaces the kept verdicts: (secret hash, the token as JSON).
    pub async fn keep_verdicts(&self, verdicts: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM verdicts")
            .execute(&mut *tx)
            .await?;
        for (hash, token) in verdicts {
            sqlx::query("INSERT INTO verdicts (hash, token) VALUES (?, ?)")
                .bind(hash)
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The kept verdicts.
    pub async fn verdicts(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT hash, token FROM verdicts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("hash")?, row.try_get("token")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
