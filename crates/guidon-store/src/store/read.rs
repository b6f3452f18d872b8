//! Reads: an environment's document, the changes after a revision, one
//! definition, history and audit.

use std::collections::HashMap;

use guidon_engine::FlagFile;
use guidon_protocol::api::HistoryEntry;
use guidon_protocol::{Change, Changes, Definition, Document, Kind, Op};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, Stored, corrupt, finish, to_i64, to_u64};
use crate::error::StoreError;

/// A live flag with its version and its last change ([`Store::flag_overview`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FlagOverview {
    pub flag: guidon_engine::model::Flag,
    pub version: u64,
    /// The token, or `user:NAME`, of its last change.
    pub changed_by: Option<String>,
    pub changed_at_ms: Option<i64>,
}

impl Store {
    /// The environment's flags and segments at one revision, consistently,
    /// with its revision, creation time (`epoch`) and every flag's version.
    pub async fn snapshot(&self, env: &str) -> Result<Document, StoreError> {
        let mut tx = self.begin_read().await?;
        let result = async {
            let row = sqlx::query("SELECT revision, created_at FROM environments WHERE name = $1")
                .bind(env)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
            let (file, versions) = load_file(&mut tx, env).await?;
            Ok(Document {
                revision: Some(to_u64(row.try_get("revision")?)),
                epoch: Some(row.try_get("created_at")?),
                versions,
                file,
            })
        }
        .await;
        finish(tx, result).await
    }

    /// The ordered changes after `since`, or [`StoreError::TooOld`] past
    /// the catch-up horizon.
    pub async fn changes_since(&self, env: &str, since: u64) -> Result<Changes, StoreError> {
        let mut tx = self.begin_read().await?;
        let result: Result<(u64, i64, Vec<AnyRow>), StoreError> = async {
            let (revision, epoch, history_from) = env_row(&mut tx, env).await?;
            // Below the horizon, or below what compaction kept (the changes
            // after `history_from - 1` are all still in the log).
            let kept = history_from.saturating_sub(1);
            let oldest = revision
                .saturating_sub(self.options.catch_up_horizon)
                .max(kept);
            if since < oldest {
                return Err(StoreError::TooOld { since, oldest });
            }
            let rows = sqlx::query(
                "SELECT revision, kind, key, op, version, after FROM changes \
                 WHERE env = $1 AND revision > $2 ORDER BY revision, kind, key",
            )
            .bind(env)
            .bind(to_i64(since))
            .fetch_all(&mut *tx)
            .await?;
            Ok((revision, epoch, rows))
        }
        .await;
        let (revision, epoch, rows) = finish(tx, result).await?;
        let changes = rows
            .iter()
            .map(|r| change(env, r))
            .collect::<Result<_, StoreError>>()?;
        Ok(Changes {
            revision,
            epoch: Some(epoch),
            changes,
        })
    }

    /// One live flag or segment.
    pub async fn get(&self, env: &str, kind: Kind, key: &str) -> Result<Stored, StoreError> {
        let row = sqlx::query(
            "SELECT version, revision, definition FROM definitions \
             WHERE env = $1 AND kind = $2 AND key = $3 AND deleted = 0",
        )
        .bind(env)
        .bind(kind.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            self.revision(env).await?;
            return Err(StoreError::NotFound {
                env: env.to_owned(),
                kind: kind.as_str(),
                key: key.to_owned(),
            });
        };
        let text: String = row.try_get("definition")?;
        Ok(Stored {
            definition: Definition::from_json(kind, &text)
                .map_err(|e| corrupt(env, kind, key, e))?,
            version: to_u64(row.try_get("version")?),
            revision: to_u64(row.try_get("revision")?),
        })
    }

    /// Every change of one flag (or segment), oldest first.
    pub async fn history(
        &self,
        env: &str,
        kind: Kind,
        key: &str,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.revision(env).await?;
        let rows = sqlx::query(
            "SELECT revision, kind, key, op, version, actor, at, before, after FROM changes \
             WHERE env = $1 AND kind = $2 AND key = $3 ORDER BY revision",
        )
        .bind(env)
        .bind(kind.as_str())
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.known(env, kind, key).await? {
            return Err(StoreError::NotFound {
                env: env.to_owned(),
                kind: kind.as_str(),
                key: key.to_owned(),
            });
        }
        rows.iter().map(|r| history_entry(env, r)).collect()
    }

    /// Whether the key was ever written (a tombstone counts): its history
    /// may have been compacted away.
    async fn known(&self, env: &str, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM definitions WHERE env = $1 AND kind = $2 AND key = $3",
        )
        .bind(env)
        .bind(kind.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The environment's changes, newest first: those of at most `limit`
    /// revisions (a bulk replace is one revision of several changes), all
    /// below revision `before` when given (the cursor of the next page).
    pub async fn audit(
        &self,
        env: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.revision(env).await?;
        let rows = sqlx::query(
            "SELECT revision, kind, key, op, version, actor, at, before, after FROM changes \
             WHERE env = $1 AND revision IN (SELECT DISTINCT revision FROM changes \
             WHERE env = $1 AND revision < $2 ORDER BY revision DESC LIMIT $3) \
             ORDER BY revision DESC, kind, key",
        )
        .bind(env)
        .bind(before.map_or(i64::MAX, to_i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| history_entry(env, r)).collect()
    }

    /// Every live flag of `env` with its version and its last change (who
    /// and when), in key order, and the environment's revision: what the
    /// console's list shows at a glance, in one read.
    pub async fn flag_overview(&self, env: &str) -> Result<(u64, Vec<FlagOverview>), StoreError> {
        let mut tx = self.begin_read().await?;
        let result = async {
            let revision: i64 = sqlx::query("SELECT revision FROM environments WHERE name = $1")
                .bind(env)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?
                .try_get("revision")?;
            let rows = sqlx::query(
                "SELECT d.key, d.version, d.definition, c.actor, c.at FROM definitions d \
                 LEFT JOIN changes c ON c.env = d.env AND c.revision = d.revision \
                 AND c.kind = d.kind AND c.key = d.key \
                 WHERE d.env = $1 AND d.kind = 'flag' AND d.deleted = 0 ORDER BY d.key",
            )
            .bind(env)
            .fetch_all(&mut *tx)
            .await?;
            let flags = rows
                .iter()
                .map(|row| {
                    let key: String = row.try_get("key")?;
                    let text: String = row.try_get("definition")?;
                    let Definition::Flag(flag) = Definition::from_json(Kind::Flag, &text)
                        .map_err(|e| corrupt(env, Kind::Flag, &key, e))?
                    else {
                        return Err(corrupt(env, Kind::Flag, &key, "not a flag"));
                    };
                    Ok(FlagOverview {
                        flag,
                        version: to_u64(row.try_get("version")?),
                        changed_by: row.try_get("actor")?,
                        changed_at_ms: row.try_get("at")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((to_u64(revision), flags))
        }
        .await;
        finish(tx, result).await
    }

    /// The `after` of one version of a key, as it was written.
    pub(super) async fn version_of(
        &self,
        env: &str,
        kind: Kind,
        key: &str,
        version: u64,
    ) -> Result<Option<Definition>, StoreError> {
        let row = sqlx::query(
            "SELECT after FROM changes WHERE env = $1 AND kind = $2 AND key = $3 \
             AND version = $4 AND op = 'upsert'",
        )
        .bind(env)
        .bind(kind.as_str())
        .bind(key)
        .bind(to_i64(version))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("after")?;
        Definition::from_json(kind, &text)
            .map(Some)
            .map_err(|e| corrupt(env, kind, key, e))
    }
}

/// The environment's revision, creation time (its epoch) and `history_from`
/// (the oldest revision the change log still holds).
pub(super) async fn env_row(
    tx: &mut Transaction<'static, Any>,
    env: &str,
) -> Result<(u64, i64, u64), StoreError> {
    let row =
        sqlx::query("SELECT revision, created_at, history_from FROM environments WHERE name = $1")
            .bind(env)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
    Ok((
        to_u64(row.try_get("revision")?),
        row.try_get("created_at")?,
        to_u64(row.try_get("history_from")?),
    ))
}

/// The environment's definitions as a flag file, with each flag's version.
pub(super) async fn load_file(
    tx: &mut Transaction<'static, Any>,
    env: &str,
) -> Result<(FlagFile, HashMap<String, u64>), StoreError> {
    let rows = sqlx::query(
        "SELECT kind, key, version, definition FROM definitions \
         WHERE env = $1 AND deleted = 0 ORDER BY kind, key",
    )
    .bind(env)
    .fetch_all(&mut **tx)
    .await?;
    let mut file = FlagFile::default();
    let mut versions = HashMap::new();
    for row in &rows {
        let key: String = row.try_get("key")?;
        let text: String = row.try_get("definition")?;
        let kind = kind_of(env, &key, row)?;
        match Definition::from_json(kind, &text).map_err(|e| corrupt(env, kind, &key, e))? {
            Definition::Flag(flag) => {
                versions.insert(key, to_u64(row.try_get("version")?));
                file.flags.push(flag);
            }
            Definition::Segment(segment) => file.segments.push(segment),
        }
    }
    Ok((file, versions))
}

pub(super) fn kind_of(env: &str, key: &str, row: &AnyRow) -> Result<Kind, StoreError> {
    let text: String = row.try_get("kind")?;
    Kind::parse(&text).ok_or_else(|| corrupt(env, Kind::Flag, key, "unknown kind"))
}

pub(super) fn op_of(env: &str, kind: Kind, key: &str, row: &AnyRow) -> Result<Op, StoreError> {
    let text: String = row.try_get("op")?;
    Op::parse(&text).ok_or_else(|| corrupt(env, kind, key, format!("unknown op {text:?}")))
}

/// One row of the log as a change of the protocol.
fn change(env: &str, row: &AnyRow) -> Result<Change, StoreError> {
    let key: String = row.try_get("key")?;
    let kind = kind_of(env, &key, row)?;
    let revision = to_u64(row.try_get("revision")?);
    let version = to_u64(row.try_get("version")?);
    match op_of(env, kind, &key, row)? {
        Op::Upsert => {
            let text: String = row.try_get("after")?;
            let definition =
                Definition::from_json(kind, &text).map_err(|e| corrupt(env, kind, &key, e))?;
            Ok(Change::upsert(revision, version, definition))
        }
        Op::Delete => Ok(Change::delete(revision, kind, key, version)),
    }
}

fn history_entry(env: &str, row: &AnyRow) -> Result<HistoryEntry, StoreError> {
    let key: String = row.try_get("key")?;
    let kind = kind_of(env, &key, row)?;
    let parse = |column: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = row.try_get(column).ok().flatten();
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(env, kind, &key, e)))
            .transpose()
    };
    Ok(HistoryEntry {
        revision: to_u64(row.try_get("revision")?),
        kind,
        op: op_of(env, kind, &key, row)?,
        version: to_u64(row.try_get("version")?),
        actor: row.try_get("actor").unwrap_or_default(),
        at_ms: row.try_get("at").unwrap_or_default(),
        before: parse("before")?,
        after: parse("after")?,
        key,
    })
}
