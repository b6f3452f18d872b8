//! An environment as it was: the document at an earlier revision (or at an
//! instant), with who made that revision and when; and compaction, which
//! forgets the change log below a revision.
//!
//! The state at revision N is rebuilt from the current definitions by
//! undoing, newest first, every change after N: each row of the log keeps
//! the definition before it (`before`), and versions move by rule (an
//! upsert takes the key's last version + 1, a delete keeps it). So only the
//! log's rows above N are needed, and compaction can delete those below a
//! revision without losing any state above it. Below `history_from` the
//! store answers [`StoreError::Compacted`]: it does not guess.

use std::collections::BTreeMap;

use guidon_engine::FlagFile;
use guidon_protocol::{Definition, Document, Kind, Op};
use sqlx::Row;

use super::read::{env_row, kind_of, op_of};
use super::{Store, corrupt, finish, to_i64, to_u64};
use crate::error::StoreError;

/// Which state of an environment to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Just after this revision was committed (0: the empty environment).
    Revision(u64),
    /// At this instant (ms since the Unix epoch): after the last revision
    /// committed at or before it.
    Time(i64),
}

/// An environment as it was at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Past {
    /// The flags and segments then, with the revision, the environment's
    /// creation time (`epoch`) and every flag's version then.
    pub document: Document,
    pub revision: u64,
    /// Who made the revision (`None` for revision 0, the empty environment).
    pub actor: Option<String>,
    /// When it was made (ms since the Unix epoch); for revision 0, when the
    /// environment was created.
    pub at_ms: i64,
    /// The environment's revision now.
    pub current: u64,
    /// The oldest revision the store can still rebuild.
    pub history_from: u64,
}

impl Store {
    /// The environment as it was at `as_of`. Errors: an unknown
    /// environment; [`StoreError::RevisionAhead`] for a revision not made
    /// yet; [`StoreError::BeforeEnvironment`] for an instant before the
    /// environment was created; [`StoreError::Compacted`] for a state older
    /// than the log still holds.
    pub async fn document_at(&self, env: &str, as_of: AsOf) -> Result<Past, StoreError> {
        let mut tx = self.begin_read().await?;
        let result = async {
            let (current, epoch, history_from) = env_row(&mut tx, env).await?;
            let revision = match as_of {
                AsOf::Revision(n) if n > current => {
                    return Err(StoreError::RevisionAhead {
                        env: env.to_owned(),
                        requested: n,
                        current,
                    });
                }
                AsOf::Revision(n) => n,
                AsOf::Time(t) if t < epoch => {
                    return Err(StoreError::BeforeEnvironment {
                        env: env.to_owned(),
                        at_ms: t,
                        created_ms: epoch,
                    });
                }
                AsOf::Time(t) => {
                    let row = sqlx::query(
                        "SELECT MAX(revision) AS r FROM changes WHERE env = $1 AND at <= $2",
                    )
                    .bind(env)
                    .bind(t)
                    .fetch_one(&mut *tx)
                    .await?;
                    // No change at or before it: the empty environment,
                    // unless the log's beginning was compacted away.
                    row.try_get::<Option<i64>, _>("r")?.map_or(0, to_u64)
                }
            };
            if revision < history_from {
                return Err(StoreError::Compacted {
                    env: env.to_owned(),
                    requested: revision,
                    oldest: history_from,
                });
            }
            let (actor, at_ms) = if revision == 0 {
                (None, epoch)
            } else {
                let row = sqlx::query(
                    "SELECT actor, at FROM changes WHERE env = $1 AND revision = $2 LIMIT 1",
                )
                .bind(env)
                .bind(to_i64(revision))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::Compacted {
                    env: env.to_owned(),
                    requested: revision,
                    oldest: history_from,
                })?;
                (Some(row.try_get::<String, _>("actor")?), row.try_get("at")?)
            };
            let definitions = sqlx::query(
                "SELECT kind, key, version, definition FROM definitions \
                 WHERE env = $1 AND deleted = 0",
            )
            .bind(env)
            .fetch_all(&mut *tx)
            .await?;
            let undo = sqlx::query(
                "SELECT revision, kind, key, op, version, before FROM changes \
                 WHERE env = $1 AND revision > $2 ORDER BY revision DESC",
            )
            .bind(env)
            .bind(to_i64(revision))
            .fetch_all(&mut *tx)
            .await?;
            Ok((
                current,
                epoch,
                history_from,
                revision,
                actor,
                at_ms,
                definitions,
                undo,
            ))
        }
        .await;
        let (current, epoch, history_from, revision, actor, at_ms, definitions, undo) =
            finish(tx, result).await?;

        // (kind, key) -> (version, definition as stored), undone newest first.
        let mut state: BTreeMap<(Kind, String), (u64, String)> = BTreeMap::new();
        for row in &definitions {
            let key: String = row.try_get("key")?;
            let kind = kind_of(env, &key, row)?;
            let version = to_u64(row.try_get("version")?);
            state.insert((kind, key), (version, row.try_get("definition")?));
        }
        for row in &undo {
            let key: String = row.try_get("key")?;
            let kind = kind_of(env, &key, row)?;
            let op = op_of(env, kind, &key, row)?;
            let version = to_u64(row.try_get("version")?);
            let before: Option<String> = row.try_get("before")?;
            match (op, before) {
                // Created (or re-created from a tombstone): absent before.
                (Op::Upsert, None) => {
                    state.remove(&(kind, key));
                }
                (Op::Upsert, Some(before)) => {
                    state.insert((kind, key), (version.saturating_sub(1), before));
                }
                (Op::Delete, Some(before)) => {
                    state.insert((kind, key), (version, before));
                }
                (Op::Delete, None) => {
                    return Err(corrupt(env, kind, &key, "a delete without its definition"));
                }
            }
        }
        let mut document = Document {
            revision: Some(revision),
            epoch: Some(epoch),
            versions: Default::default(),
            file: FlagFile::default(),
        };
        for ((kind, key), (version, text)) in state {
            match Definition::from_json(kind, &text).map_err(|e| corrupt(env, kind, &key, e))? {
                Definition::Flag(flag) => {
                    document.versions.insert(key, version);
                    document.file.flags.push(flag);
                }
                Definition::Segment(segment) => document.file.segments.push(segment),
            }
        }
        Ok(Past {
            document,
            revision,
            actor,
            at_ms,
            current,
            history_from,
        })
    }

    /// Forgets the change log below revision `keep_from` (at most the
    /// current revision): history, audit and time travel then reach back to
    /// `keep_from` only, and catch-up from further back takes a snapshot.
    /// Returns the environment's new `history_from` (never lowered).
    pub async fn compact_history(&self, env: &str, keep_from: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = async {
            // Locks the row (as a writer does) so the revision read holds.
            let row = sqlx::query(
                "UPDATE environments SET revision = revision WHERE name = $1 \
                 RETURNING revision, history_from",
            )
            .bind(env)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
            let current = to_u64(row.try_get("revision")?);
            let from = to_u64(row.try_get("history_from")?);
            let keep = keep_from.min(current).max(from);
            if keep > from {
                sqlx::query("UPDATE environments SET history_from = $2 WHERE name = $1")
                    .bind(env)
                    .bind(to_i64(keep))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM changes WHERE env = $1 AND revision < $2")
                    .bind(env)
                    .bind(to_i64(keep))
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(keep)
        }
        .await;
        finish(tx, result).await
    }
}
