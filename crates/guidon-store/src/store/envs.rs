//! Environments: created, listed, deleted.

use guidon_protocol::api::EnvInfo;
use sqlx::Row;

use super::{Store, finish, now_ms, to_u64};
use crate::error::StoreError;

impl Store {
    /// Adds an environment unless it exists; whether it was added.
    pub(super) async fn insert_env(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO environments (name, revision, created_at) VALUES ($1, 0, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_env(&self, name: &str) -> Result<EnvInfo, StoreError> {
        if !guidon_engine::is_valid_key(name) {
            return Err(StoreError::InvalidEnvName(name.to_owned()));
        }
        if !self.insert_env(name).await? {
            return Err(StoreError::EnvExists(name.to_owned()));
        }
        self.env_info(name).await
    }

    pub async fn list_envs(&self) -> Result<Vec<EnvInfo>, StoreError> {
        let rows = sqlx::query("SELECT name, revision, created_at FROM environments ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EnvInfo {
                    name: r.try_get("name")?,
                    revision: to_u64(r.try_get("revision")?),
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// One environment's revision and creation time.
    pub async fn env_info(&self, name: &str) -> Result<EnvInfo, StoreError> {
        let row = sqlx::query("SELECT revision, created_at FROM environments WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::UnknownEnv(name.to_owned()))?;
        Ok(EnvInfo {
            name: name.to_owned(),
            revision: to_u64(row.try_get("revision")?),
            created_at_ms: row.try_get("created_at")?,
        })
    }

    /// The environment's current revision.
    pub async fn revision(&self, env: &str) -> Result<u64, StoreError> {
        Ok(self.env_info(env).await?.revision)
    }

    /// Deletes an environment; refused while it holds flags or segments,
    /// unless `force`, which deletes them and its history too.
    pub async fn delete_env(&self, name: &str, force: bool) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let result: Result<(), StoreError> = async {
            let locked = sqlx::query("UPDATE environments SET revision = revision WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if locked.rows_affected() == 0 {
                return Err(StoreError::UnknownEnv(name.to_owned()));
            }
            let count: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM definitions WHERE env = $1 AND deleted = 0")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
            if count > 0 && !force {
                return Err(StoreError::EnvNotEmpty {
                    env: name.to_owned(),
                    count: to_u64(count),
                });
            }
            for statement in [
                "DELETE FROM ctx_samples WHERE env = $1",
                "DELETE FROM ctx_slices WHERE env = $1",
                "DELETE FROM ctx_settings WHERE env = $1",
                "DELETE FROM definitions WHERE env = $1",
                "DELETE FROM changes WHERE env = $1",
                "DELETE FROM environments WHERE name = $1",
            ] {
                sqlx::query(statement).bind(name).execute(&mut *tx).await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await?;
        self.writers.forget(name);
        Ok(())
    }
}
