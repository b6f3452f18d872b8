//! The metric catalogue and experiments: definitions kept per environment
//! as JSON documents with a version. The store does not read them (the
//! server checks them against `guidon_protocol::catalogue`); it keeps
//! them, versions them and refuses a change made against an old version.

use sqlx::Row;

use crate::error::StoreError;
use crate::store::Store;

/// What a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionKind {
    /// A named metric.
    Metric,
    /// An experiment.
    Experiment,
}

impl DefinitionKind {
    fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::Metric => "metric",
            DefinitionKind::Experiment => "experiment",
        }
    }
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDefinition {
    /// Its key.
    pub key: String,
    /// The definition, as JSON.
    pub body: String,
    /// 1 when created, one more at each change.
    pub version: u64,
    /// When it last changed, in milliseconds since the epoch.
    pub updated_at_ms: i64,
}

fn stored(row: &sqlx::any::AnyRow) -> Result<StoredDefinition, StoreError> {
    let version: i64 = row.try_get("version")?;
    Ok(StoredDefinition {
        key: row.try_get("key")?,
        body: row.try_get("body")?,
        version: u64::try_from(version).unwrap_or(0),
        updated_at_ms: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates or replaces the definition `key` of `kind` in `env`. With
    /// `expected_version`, the change is refused with
    /// [`StoreError::Conflict`] unless that is the stored version (`0`:
    /// it must not exist yet).
    pub async fn put_definition(
        &self,
        env: &str,
        kind: DefinitionKind,
        key: &str,
        body: &str,
        expected_version: Option<u64>,
        at_ms: i64,
    ) -> Result<StoredDefinition, StoreError> {
        self.revision(env).await?;
        let mut tx = self.pool().begin().await?;
        let result = async {
            let current = sqlx::query(
                "SELECT version FROM exp_definitions WHERE env = $1 AND kind = $2 AND key = $3",
            )
            .bind(env)
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<i64, _>("version"))
            .transpose()?
            .map(|v| u64::try_from(v).unwrap_or(0));
            if let Some(expected) = expected_version
                && current.unwrap_or(0) != expected
            {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    current,
                });
            }
            let version = current.map_or(1, |v| v + 1);
            let version_i64 = i64::try_from(version).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO exp_definitions (env, kind, key, body, version, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (env, kind, key) DO UPDATE SET body = excluded.body, \
                 version = excluded.version, updated_at = excluded.updated_at",
            )
            .bind(env)
            .bind(kind.as_str())
            .bind(key)
            .bind(body)
            .bind(version_i64)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
            Ok(StoredDefinition {
                key: key.to_owned(),
                body: body.to_owned(),
                version,
                updated_at_ms: at_ms,
            })
        }
        .await;
        crate::store::finish(tx, result).await
    }

    /// The definition `key` of `kind` in `env`, if any.
    pub async fn definition(
        &self,
        env: &str,
        kind: DefinitionKind,
        key: &str,
    ) -> Result<Option<StoredDefinition>, StoreError> {
        self.revision(env).await?;
        let row = sqlx::query(
            "SELECT key, body, version, updated_at FROM exp_definitions \
             WHERE env = $1 AND kind = $2 AND key = $3",
        )
        .bind(env)
        .bind(kind.as_str())
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(stored).transpose()
    }

    /// Every definition of `kind` in `env`, by key.
    pub async fn definitions(
        &self,
        env: &str,
        kind: DefinitionKind,
    ) -> Result<Vec<StoredDefinition>, StoreError> {
        self.revision(env).await?;
        let rows = sqlx::query(
            "SELECT key, body, version, updated_at FROM exp_definitions \
             WHERE env = $1 AND kind = $2 ORDER BY key",
        )
        .bind(env)
        .bind(kind.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(stored).collect()
    }

    /// Deletes the definition; whether there was one.
    pub async fn delete_definition(
        &self,
        env: &str,
        kind: DefinitionKind,
        key: &str,
    ) -> Result<bool, StoreError> {
        self.revision(env).await?;
        let done =
            sqlx::query("DELETE FROM exp_definitions WHERE env = $1 AND kind = $2 AND key = $3")
                .bind(env)
                .bind(kind.as_str())
                .bind(key)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }
}
