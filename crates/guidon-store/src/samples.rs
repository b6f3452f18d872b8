//! Recent contexts: per environment that opted in, a bounded, uniform
//! sample of the contexts evaluated over a sliding window, for impact
//! previews. Stored with the events (not with the flags), and deleted with
//! the environment or on request.
//!
//! The window is cut into hours. Each hour keeps the `size` offered
//! contexts of highest random priority (bottom-k sampling: a uniform
//! sample of that hour, whichever instance offered them) and how many were
//! offered. Reading the sample over the window takes from each hour a
//! number of contexts proportional to how many it was offered, so the
//! whole is a uniform sample of the window up to rounding, of at most
//! `size`. Hours wholly older than the retention are deleted as new
//! contexts come in, and when the sample is read.
//!
//! The store keeps what it is given: the server drops and hashes the
//! attributes the settings name before it offers a context.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::error::StoreError;
use crate::store::{Store, finish, now_ms, to_i64, to_u64};

/// One hour, the slice of the window.
pub const SLICE_MS: i64 = 3_600_000;
/// Largest sample an environment may keep.
pub const MAX_SAMPLE_SIZE: u64 = 100_000;
/// Longest retention, in hours (30 days).
pub const MAX_RETENTION_HOURS: u64 = 720;

/// What an environment opted in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSettings {
    /// The most contexts kept (and read) over the window.
    pub size: u64,
    /// How far back the window reaches, in hours.
    pub retention_hours: u64,
    /// Attributes never kept.
    pub drop: Vec<String>,
    /// Attributes kept only as a keyed hash.
    pub hash: Vec<String>,
}

/// The settings with what the store holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleInfo {
    pub settings: SampleSettings,
    /// The secret of the keyed hash (hex), made when the environment opted in.
    pub hash_key: String,
    /// Contexts stored (over every hour in the window).
    pub stored: u64,
    /// Contexts offered within the window.
    pub seen: u64,
    /// The oldest and newest stored context (ms), if any.
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}

/// One context offered to the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    pub at_ms: i64,
    /// Uniformly random: the highest priorities of an hour are kept.
    pub priority: i64,
    /// The context as JSON, already stripped and hashed.
    pub context: String,
}

/// What a server instance gathered since its last flush: per hour, the
/// contexts of highest priority it was offered (at most the sample's size;
/// the others could never be kept) and how many it was offered in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleBatch {
    pub offered: Vec<Offered>,
    /// Per hour (its start, see [`hour_of`]): contexts offered.
    pub seen: BTreeMap<i64, u64>,
}

/// An environment that samples, as the server applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub env: String,
    pub settings: SampleSettings,
    pub hash_key: String,
}

/// The sample over the window, as read for a preview.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The contexts as JSON, oldest hour first.
    pub contexts: Vec<String>,
    /// Contexts offered within the window (of which these are a sample).
    pub seen: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}

impl Store {
    /// Opts `env` in to a recent-contexts sample, or changes its settings
    /// (the stored contexts stay; a smaller size applies as hours are read
    /// and refilled). `hash_key` is used only when it opts in.
    pub async fn set_sampling(
        &self,
        env: &str,
        settings: &SampleSettings,
        hash_key: &str,
    ) -> Result<(), StoreError> {
        self.revision(env).await?;
        let text = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO ctx_settings (env, size, retention_ms, drop_attrs, hash_attrs, hash_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (env) DO UPDATE SET \
             size = excluded.size, retention_ms = excluded.retention_ms, \
             drop_attrs = excluded.drop_attrs, hash_attrs = excluded.hash_attrs",
        )
        .bind(env)
        .bind(to_i64(settings.size))
        .bind(retention_ms(settings))
        .bind(text(&settings.drop))
        .bind(text(&settings.hash))
        .bind(hash_key)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The environment's settings and what is stored, or `None` when it
    /// has not opted in.
    pub async fn sampling(&self, env: &str) -> Result<Option<SampleInfo>, StoreError> {
        self.revision(env).await?;
        let Some(row) = sqlx::query(
            "SELECT size, retention_ms, drop_attrs, hash_attrs, hash_key FROM ctx_settings WHERE env = $1",
        )
        .bind(env)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let settings = settings_of(&row)?;
        let from = window_start(now_ms(), retention_ms(&settings));
        let stored = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(at) AS oldest, MAX(at) AS newest FROM ctx_samples \
             WHERE env = $1 AND slice >= $2",
        )
        .bind(env)
        .bind(from)
        .fetch_one(self.pool())
        .await?;
        let seen = sqlx::query(
            "SELECT CAST(COALESCE(SUM(seen), 0) AS BIGINT) AS n FROM ctx_slices WHERE env = $1 AND slice >= $2",
        )
        .bind(env)
        .bind(from)
        .fetch_one(self.pool())
        .await?;
        Ok(Some(SampleInfo {
            settings,
            hash_key: row.try_get("hash_key")?,
            stored: to_u64(stored.try_get("n")?),
            seen: to_u64(seen.try_get("n")?),
            oldest_ms: stored.try_get("oldest")?,
            newest_ms: stored.try_get("newest")?,
        }))
    }

    /// Every environment that samples, with its settings and hash key.
    pub async fn samplings(&self) -> Result<Vec<Sampling>, StoreError> {
        let rows = sqlx::query(
            "SELECT env, size, retention_ms, drop_attrs, hash_attrs, hash_key FROM ctx_settings ORDER BY env",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Sampling {
                    env: row.try_get("env")?,
                    settings: settings_of(row)?,
                    hash_key: row.try_get("hash_key")?,
                })
            })
            .collect()
    }

    /// Deletes every stored context of `env` and its settings: it no
    /// longer samples. Returns whether it had opted in.
    pub async fn stop_sampling(&self, env: &str) -> Result<bool, StoreError> {
        self.revision(env).await?;
        let mut tx = self.pool().begin().await?;
        let result = async {
            let mut deleted = 0;
            for statement in [
                "DELETE FROM ctx_samples WHERE env = $1",
                "DELETE FROM ctx_slices WHERE env = $1",
                "DELETE FROM ctx_settings WHERE env = $1",
            ] {
                deleted = sqlx::query(statement)
                    .bind(env)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            Ok(deleted > 0)
        }
        .await;
        finish(tx, result).await
    }

    /// Adds offered contexts to `env`'s sample: each hour counts what it
    /// was offered and keeps its `size` highest priorities; hours past the
    /// retention are deleted. Does nothing for an environment that has not
    /// opted in (it may have opted out meanwhile).
    pub async fn add_samples(&self, env: &str, batch: &SampleBatch) -> Result<(), StoreError> {
        if batch.seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        let result = async {
            let Some(row) =
                sqlx::query("SELECT size, retention_ms FROM ctx_settings WHERE env = $1")
                    .bind(env)
                    .fetch_optional(&mut *tx)
                    .await?
            else {
                return Ok(());
            };
            let size: i64 = row.try_get("size")?;
            let retention_ms: i64 = row.try_get("retention_ms")?;
            let from = window_start(now_ms(), retention_ms);
            for o in batch.offered.iter().filter(|o| o.at_ms >= from) {
                let slice = hour_of(o.at_ms);
                sqlx::query(
                    "INSERT INTO ctx_samples (env, slice, priority, at, context) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (env, slice, priority) DO NOTHING",
                )
                .bind(env)
                .bind(slice)
                .bind(o.priority)
                .bind(o.at_ms)
                .bind(&o.context)
                .execute(&mut *tx)
                .await?;
            }
            for (&slice, &n) in batch.seen.range(from..) {
                sqlx::query(
                    "INSERT INTO ctx_slices (env, slice, seen) VALUES ($1, $2, $3) \
                     ON CONFLICT (env, slice) DO UPDATE SET seen = ctx_slices.seen + excluded.seen",
                )
                .bind(env)
                .bind(slice)
                .bind(to_i64(n))
                .execute(&mut *tx)
                .await?;
                // Keep the hour's `size` highest priorities.
                sqlx::query(
                    "DELETE FROM ctx_samples WHERE env = $1 AND slice = $2 AND priority < \
                     (SELECT priority FROM ctx_samples WHERE env = $1 AND slice = $2 \
                      ORDER BY priority DESC LIMIT 1 OFFSET $3)",
                )
                .bind(env)
                .bind(slice)
                .bind(size - 1)
                .execute(&mut *tx)
                .await?;
            }
            for statement in [
                "DELETE FROM ctx_samples WHERE env = $1 AND slice < $2",
                "DELETE FROM ctx_slices WHERE env = $1 AND slice < $2",
            ] {
                sqlx::query(statement)
                    .bind(env)
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// The sample over the window: from each hour, its highest priorities,
    /// as many as its share of the contexts offered in the window (at most
    /// `size` in all). `None` when `env` has not opted in.
    pub async fn sample(&self, env: &str) -> Result<Option<Sample>, StoreError> {
        let Some(info) = self.sampling(env).await? else {
            return Ok(None);
        };
        let from = window_start(now_ms(), retention_ms(&info.settings));
        let slices = sqlx::query(
            "SELECT slice, seen FROM ctx_slices WHERE env = $1 AND slice >= $2 ORDER BY slice",
        )
        .bind(env)
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        let counts: Vec<(i64, u64)> = slices
            .iter()
            .map(|r| Ok((r.try_get("slice")?, to_u64(r.try_get("seen")?))))
            .collect::<Result<_, StoreError>>()?;
        let seen: u64 = counts.iter().map(|(_, n)| n).sum();
        let size = info.settings.size.min(seen);
        // Each hour's share of `size`, by largest remainder: exactly `size`
        // in all, and never more than an hour was offered.
        let mut shares: Vec<(i64, u64, u128)> = counts
            .iter()
            .map(|&(slice, n)| {
                let part = u128::from(size) * u128::from(n);
                let whole = u64::try_from(part / u128::from(seen.max(1))).unwrap_or(u64::MAX);
                (slice, whole, part % u128::from(seen.max(1)))
            })
            .collect();
        let mut left = size.saturating_sub(shares.iter().map(|s| s.1).sum());
        let mut order: Vec<usize> = (0..shares.len()).collect();
        order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2));
        for i in order {
            if left == 0 {
                break;
            }
            shares[i].1 += 1;
            left -= 1;
        }
        let mut contexts = Vec::new();
        let (mut oldest, mut newest) = (None::<i64>, None::<i64>);
        for (slice, take, _) in shares {
            let take = to_i64(take);
            if take == 0 {
                continue;
            }
            let rows = sqlx::query(
                "SELECT at, context FROM ctx_samples WHERE env = $1 AND slice = $2 \
                 ORDER BY priority DESC LIMIT $3",
            )
            .bind(env)
            .bind(slice)
            .bind(take)
            .fetch_all(self.pool())
            .await?;
            for row in rows {
                let at: i64 = row.try_get("at")?;
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
                newest = Some(newest.map_or(at, |o| o.max(at)));
                contexts.push(row.try_get("context")?);
            }
        }
        Ok(Some(Sample {
            contexts,
            seen,
            oldest_ms: oldest,
            newest_ms: newest,
        }))
    }
}

/// The start of the hour `at_ms` falls in: the slice it is sampled in.
pub fn hour_of(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(SLICE_MS)
}

/// The first hour of the window: hours wholly older than the retention
/// are out (the window is rounded out to whole hours).
fn window_start(now: i64, retention_ms: i64) -> i64 {
    hour_of(now.saturating_sub(retention_ms))
}

fn retention_ms(settings: &SampleSettings) -> i64 {
    to_i64(settings.retention_hours).saturating_mul(SLICE_MS)
}

/// The settings of a `ctx_settings` row.
fn settings_of(row: &sqlx::any::AnyRow) -> Result<SampleSettings, StoreError> {
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::InvalidQuery(format!("ctx_settings.{column}: {e}")))
    };
    let retention_ms: i64 = row.try_get("retention_ms")?;
    Ok(SampleSettings {
        size: to_u64(row.try_get("size")?),
        retention_hours: to_u64(retention_ms / SLICE_MS),
        drop: list("drop_attrs")?,
        hash: list("hash_attrs")?,
    })
}
