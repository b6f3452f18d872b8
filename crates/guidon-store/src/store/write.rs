//! One change to an environment: an upsert or a delete (and revert and
//! promote, which are upserts), validated against the whole environment
//! with the change applied, recorded, and handed to watchers compiled.

use std::sync::Arc;

use guidon_engine::model::{Flag, Segment};
use guidon_engine::{Problem, Snapshot, ValidationError};
use guidon_protocol::{Change, Definition, Document, Edit, Kind, Op};
use sqlx::{Any, Row, Transaction};

use super::read::load_file;
use super::{Backend, Commit, PerEnv, Store, finish, lock, now_ms, to_i64, to_u64};
use crate::error::StoreError;

/// Environments with more definitions than this are compiled on a blocking
/// thread (about 2 µs per flag: 500 is about a millisecond, less than the
/// hand-off to another thread costs in latency).
pub const BLOCKING_COMPILE: usize = 500;

/// What a committed write produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The flag's (or segment's) version after the write; for a delete, the
    /// version that was deleted.
    pub version: u64,
    /// The environment's revision of this change.
    pub revision: u64,
    /// The key did not exist before this write.
    pub created: bool,
    /// The change as recorded.
    pub change: Change,
}

/// One live definition, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub definition: Definition,
    pub version: u64,
    /// The environment revision that last changed it.
    pub revision: u64,
}

/// Per environment, the lock this process's writers queue on, holding the
/// environment as this process last committed it.
#[derive(Debug, Default)]
pub(super) struct Writers {
    envs: PerEnv<Arc<tokio::sync::Mutex<Option<Cached>>>>,
}

/// The environment as this process last committed it: the next writer
/// validates against it instead of reading and parsing the whole
/// environment, when the revision it takes shows nobody committed since.
#[derive(Debug)]
pub(super) struct Cached {
    epoch: i64,
    revision: u64,
    document: Arc<Document>,
}

impl Writers {
    /// The environment's writer lock. Held for the whole of a write
    /// (transaction, commit and announcement), so this process's writers
    /// of one environment wait here rather than on the database's lock,
    /// and announce their commits in commit order.
    pub(super) fn get(&self, env: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        lock(&self.envs).entry(env.to_owned()).or_default().clone()
    }

    pub(super) fn forget(&self, env: &str) {
        lock(&self.envs).remove(env);
    }
}

impl Cached {
    pub(super) fn new(epoch: i64, revision: u64, document: Arc<Document>) -> Cached {
        Cached {
            epoch,
            revision,
            document,
        }
    }

    /// The document, if it is the environment's state just before
    /// `revision` (of the environment created at `epoch`).
    pub(super) fn before(self, epoch: i64, revision: u64) -> Option<Document> {
        (self.epoch == epoch && self.revision + 1 == revision)
            .then(|| Arc::unwrap_or_clone(self.document))
    }
}

impl Store {
    /// Creates or replaces a flag. `expected_version`: `Some(0)` means "must
    /// not exist yet", `Some(n)` "must be at version n", `None` no check.
    /// The whole environment is validated with the change in place; when it
    /// is invalid nothing is stored.
    pub async fn upsert_flag(
        &self,
        env: &str,
        flag: &Flag,
        expected_version: Option<u64>,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        self.write(
            env,
            &flag.key,
            Edit::Upsert(Definition::Flag(flag.clone())),
            expected_version,
            actor,
        )
        .await
    }

    pub async fn upsert_segment(
        &self,
        env: &str,
        segment: &Segment,
        expected_version: Option<u64>,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        self.write(
            env,
            &segment.key,
            Edit::Upsert(Definition::Segment(segment.clone())),
            expected_version,
            actor,
        )
        .await
    }

    /// Deletes a flag or segment, leaving a tombstone in the change log.
    /// Refused (as invalid) while another flag or segment refers to it.
    pub async fn delete(
        &self,
        env: &str,
        kind: Kind,
        key: &str,
        expected_version: Option<u64>,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        self.write(env, key, Edit::Delete(kind), expected_version, actor)
            .await
    }

    /// Makes a flag what it was at `version`: a new change, not a rewrite.
    pub async fn revert_flag(
        &self,
        env: &str,
        key: &str,
        version: u64,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        let definition = self
            .version_of(env, Kind::Flag, key, version)
            .await?
            .ok_or_else(|| StoreError::NoSuchVersion {
                key: key.to_owned(),
                version,
            })?;
        self.write(env, key, Edit::Upsert(definition), None, actor)
            .await
    }

    /// Copies a flag's definition from one environment to another.
    pub async fn promote(
        &self,
        from: &str,
        to: &str,
        key: &str,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        let source = self.get(from, Kind::Flag, key).await?;
        self.write(to, key, Edit::Upsert(source.definition), None, actor)
            .await
    }

    /// Every write: take the environment's next revision (which locks out
    /// its other writers until commit), check the expected version, validate
    /// the environment with the change applied, then record the definition
    /// and the change. Any failure rolls back, revision included. The
    /// commit is announced with the environment compiled.
    async fn write(
        &self,
        env: &str,
        key: &str,
        edit: Edit,
        expected_version: Option<u64>,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        self.write_claiming(env, key, edit, expected_version, actor, None)
            .await
    }

    /// [`Store::write`], and with `claim` the planned change it applies
    /// marked applied in the same transaction: when it is not pending any
    /// more (another instance applied it), nothing is written.
    pub(super) async fn write_claiming(
        &self,
        env: &str,
        key: &str,
        edit: Edit,
        expected_version: Option<u64>,
        actor: &str,
        claim: Option<&super::planned::Claim>,
    ) -> Result<Committed, StoreError> {
        let key = key.to_owned();
        let kind = match &edit {
            Edit::Upsert(definition) => definition.kind(),
            Edit::Delete(kind) => *kind,
        };
        let writer = self.writers.get(env);
        let mut cached = writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let result: Result<_, StoreError> = async {
            let (revision, epoch) = next_revision(&mut tx, env).await?;
            let current = sqlx::query(
                "SELECT version, definition, deleted FROM definitions \
                 WHERE env = $1 AND kind = $2 AND key = $3",
            )
            .bind(env)
            .bind(kind.as_str())
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
            // The last version ever given to this key (tombstones keep
            // theirs), and the live one with its definition.
            let (last_version, live) = match &current {
                Some(row) => {
                    let version: i64 = row.try_get("version")?;
                    let deleted: i32 = row.try_get("deleted")?;
                    let live = if deleted == 0 {
                        Some((to_u64(version), row.try_get::<String, _>("definition")?))
                    } else {
                        None
                    };
                    (to_u64(version), live)
                }
                None => (0, None),
            };
            let current_version = live.as_ref().map(|(v, _)| *v);
            if let (Some(0), Some(current)) = (expected_version, current_version) {
                return Err(StoreError::Exists {
                    kind: kind.as_str(),
                    key: key.clone(),
                    version: current,
                });
            }
            if let Some(expected) = expected_version
                && current_version.unwrap_or(0) != expected
            {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected,
                    current: current_version,
                });
            }
            let change = match edit {
                Edit::Upsert(definition) => Change::upsert(revision, last_version + 1, definition),
                Edit::Delete(_) if live.is_none() => {
                    return Err(StoreError::NotFound {
                        env: env.to_owned(),
                        kind: kind.as_str(),
                        key: key.clone(),
                    });
                }
                Edit::Delete(_) => Change::delete(revision, kind, key.clone(), last_version),
            };

            let mut document = match cached.take().and_then(|c| c.before(epoch, revision)) {
                Some(document) => document,
                None => {
                    let (file, versions) = load_file(&mut tx, env).await?;
                    Document {
                        revision: None,
                        epoch: None,
                        versions,
                        file,
                    }
                }
            };
            document.revision = Some(revision);
            document.epoch = Some(epoch);
            let (document, compiled) = apply_and_compile(document, change.clone()).await?;
            let snapshot = compiled.map_err(StoreError::Invalid)?;

            let record = Record {
                kind,
                key: &key,
                op: change.op(),
                version: change.version(),
                before: live.map(|(_, text)| text),
                after: change.definition().map(Definition::to_json),
            };
            let at = now_ms();
            if let Some(claim) = claim {
                claim.mark_applied(&mut tx, revision, at).await?;
            }
            self.record(&mut tx, env, revision, &record, actor, at)
                .await?;
            self.notify(&mut tx, env, revision).await?;
            Ok((change, document, snapshot, current_version, epoch, at))
        }
        .await;
        let (change, document, snapshot, current_version, epoch, at_ms) = match result {
            Ok(done) => done,
            Err(e) => return finish(tx, Err(e)).await,
        };
        let document = Arc::new(document);
        let revision = change.revision();
        let commit = Commit {
            env: env.to_owned(),
            epoch,
            revision,
            changes: vec![change.clone()],
            actor: actor.to_owned(),
            at_ms,
            document: document.clone(),
            snapshot: Arc::new(snapshot),
        };
        self.commit_and_announce(tx, commit).await?;
        *cached = Some(Cached::new(epoch, revision, document));
        Ok(Committed {
            version: change.version(),
            revision,
            created: current_version.is_none(),
            change,
        })
    }

    /// Stores one change: the key's current definition (or its tombstone)
    /// and the change log's row.
    pub(super) async fn record(
        &self,
        tx: &mut Transaction<'static, Any>,
        env: &str,
        revision: u64,
        row: &Record<'_>,
        actor: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let (definition, deleted) = match &row.after {
            Some(text) => (text.as_str(), 0_i32),
            None => ("", 1_i32),
        };
        let revision = to_i64(revision);
        let version = to_i64(row.version);
        sqlx::query(
            "INSERT INTO definitions (env, kind, key, version, revision, definition, deleted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (env, kind, key) DO UPDATE SET \
             version = excluded.version, revision = excluded.revision, \
             definition = excluded.definition, deleted = excluded.deleted",
        )
        .bind(env)
        .bind(row.kind.as_str())
        .bind(row.key)
        .bind(version)
        .bind(revision)
        .bind(definition)
        .bind(deleted)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO changes (env, revision, kind, key, op, version, before, after, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(env)
        .bind(revision)
        .bind(row.kind.as_str())
        .bind(row.key)
        .bind(row.op.as_str())
        .bind(version)
        .bind(row.before.as_deref())
        .bind(row.after.as_deref())
        .bind(actor)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Tells other processes (PostgreSQL); delivered when, and only if, the
    /// transaction commits.
    pub(super) async fn notify(
        &self,
        tx: &mut Transaction<'static, Any>,
        env: &str,
        revision: u64,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(format!("{revision}:{env}"))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// One change about to be recorded, with its definitions as stored text.
pub(super) struct Record<'a> {
    pub(super) kind: Kind,
    pub(super) key: &'a str,
    pub(super) op: Op,
    pub(super) version: u64,
    pub(super) before: Option<String>,
    pub(super) after: Option<String>,
}

/// Locks the environment against other writers until the transaction
/// ends, taking its next revision: the counter row is updated first,
/// which in PostgreSQL takes its row lock and in SQLite the write lock.
/// Returns the revision and the environment's creation time.
pub(super) async fn next_revision(
    tx: &mut Transaction<'static, Any>,
    env: &str,
) -> Result<(u64, i64), StoreError> {
    let row = sqlx::query(
        "UPDATE environments SET revision = revision + 1 WHERE name = $1 \
         RETURNING revision, created_at",
    )
    .bind(env)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
    Ok((to_u64(row.try_get("revision")?), row.try_get("created_at")?))
}

/// Compiles the document with its revision and versions: on a blocking
/// thread when it has more than [`BLOCKING_COMPILE`] definitions, since
/// that is milliseconds of CPU the async workers must not spend. The
/// store's writes and the server's catch-up both compile through here.
pub async fn compile(
    document: Document,
) -> Result<(Document, Result<Snapshot, ValidationError>), StoreError> {
    if document.file.flags.len() + document.file.segments.len() <= BLOCKING_COMPILE {
        let compiled = document.compile();
        return Ok((document, compiled));
    }
    tokio::task::spawn_blocking(move || {
        let compiled = document.compile();
        (document, compiled)
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))
}

/// The document with one change applied, compiled (see [`compile`]); the
/// problems of the changed definition are at paths relative to it
/// (`flag.rules[0]…`). A write validates through here, and so does the
/// impact preview, so a preview of an invalid definition reports exactly
/// what saving it would.
pub async fn apply_and_compile(
    mut document: Document,
    change: Change,
) -> Result<(Document, Result<Snapshot, ValidationError>), StoreError> {
    let (kind, key) = (change.kind(), change.key().to_owned());
    document.apply(change);
    let position = document.position(kind, &key);
    let (document, compiled) = compile(document).await?;
    Ok((
        document,
        compiled.map_err(|e| relative_to(e, kind, position)),
    ))
}

/// Validation paths point into the whole environment (`flags[17].rules…`);
/// for the definition being written, make them relative to it (`flag.rules…`).
fn relative_to(mut error: ValidationError, kind: Kind, position: Option<usize>) -> ValidationError {
    if let Some(i) = position {
        let (list, name) = match kind {
            Kind::Flag => ("flags", "flag"),
            Kind::Segment => ("segments", "segment"),
        };
        let prefix = format!("{list}[{i}]");
        for Problem { path, .. } in &mut error.problems {
            if let Some(rest) = path.strip_prefix(&prefix)
                && (rest.is_empty() || rest.starts_with('.'))
            {
                *path = format!("{name}{rest}");
            }
        }
    }
    error
}
