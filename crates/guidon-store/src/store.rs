use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guidon_engine::model::{Flag, Segment};
use guidon_engine::{FlagFile, Problem, Snapshot, SnapshotOptions, ValidationError};
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::postgres::PgListener;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::broadcast;

use crate::error::StoreError;

/// Environments that exist after the first start.
pub const DEFAULT_ENVIRONMENTS: [&str; 2] = ["development", "production"];

/// How far back `changes_since` answers. Every change is kept for history
/// and audit, but a client more than this many revisions behind is better
/// served by one full snapshot than by replaying the log.
pub const CATCH_UP_HORIZON: u64 = 10_000;

/// Environments with more definitions than this are compiled on a blocking
/// thread (about 2 µs per flag: 500 is about a millisecond).
const BLOCKING_COMPILE: usize = 500;

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

/// "Environment `env` is now at least at `revision`": what watchers receive.
/// A receiver then asks `changes_since` for what it has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revised {
    pub env: String,
    pub revision: u64,
}

/// The shared state of watching: one broadcast, and the highest revision
/// announced per environment, so in-process commits, notifications and
/// polls announce each revision once.
#[derive(Debug)]
struct Watch {
    tx: broadcast::Sender<Revised>,
    announced: Mutex<HashMap<String, u64>>,
    started: AtomicBool,
}

impl Watch {
    fn announce(&self, env: &str, revision: u64) {
        // A poisoned lock only means another announcer panicked mid-insert;
        // the map is still a valid map.
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        let seen = announced.entry(env.to_owned()).or_insert(0);
        if revision > *seen {
            *seen = revision;
            let _ = self.tx.send(Revised {
                env: env.to_owned(),
                revision,
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Flag,
    Segment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Flag => "flag",
            Kind::Segment => "segment",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        match text {
            "flag" => Some(Kind::Flag),
            "segment" => Some(Kind::Segment),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// What [`Store::replace_all`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replaced {
    /// The revision of the whole replacement; when nothing differed, the
    /// environment's unchanged revision.
    pub revision: u64,
    /// Every key that changed, upserts first; empty when nothing differed.
    pub changes: Vec<Applied>,
}

/// One key changed by a bulk replace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
}

/// One live definition, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stored {
    pub definition: Value,
    pub version: u64,
    /// The environment revision that last changed it.
    pub revision: u64,
}

/// The environment as this process last committed it (see
/// [`Store::take_cached`]).
#[derive(Debug)]
struct Cached {
    created_at: i64,
    revision: i64,
    file: FlagFile,
}

/// What a committed write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Committed {
    /// The flag's (or segment's) version after the write; for a delete, the
    /// version that was deleted.
    pub version: u64,
    /// The environment's revision of this change.
    pub revision: u64,
    /// The key did not exist before this write.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvInfo {
    pub name: String,
    pub revision: u64,
    /// Creation time (ms): tells a re-created environment from the one
    /// it replaced, whose revisions it restarts.
    pub created_at_ms: i64,
}

/// An environment's whole state at one revision.
#[derive(Debug, Clone)]
pub struct EnvSnapshot {
    pub revision: u64,
    /// When the environment was created (ms since the epoch): an
    /// environment deleted and created again restarts its revisions, and
    /// this tells the two apart.
    pub created_at_ms: i64,
    pub file: FlagFile,
    /// Each flag's version.
    pub versions: HashMap<String, u64>,
}

impl EnvSnapshot {
    /// Compiles for evaluation, with the revision and versions attached.
    pub fn compile(&self) -> Result<Snapshot, ValidationError> {
        Snapshot::compile_with(
            &self.file,
            &SnapshotOptions {
                revision: Some(self.revision),
                versions: self.versions.clone(),
            },
        )
    }
}

/// One entry of the change log: an upsert with its new definition, or a
/// tombstone.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    pub revision: u64,
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
    /// The definition after the change; `None` for a delete.
    pub definition: Option<Value>,
}

/// The changes after a revision, up to `revision`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Changes {
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// One change as history and audit show it: who, when, before and after.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    pub revision: u64,
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
    pub actor: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The store. Cheap to clone: it is a connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    options: StoreOptions,
    watch: Arc<Watch>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// The writer of experiment events, started on first use.
    pub(crate) experiments: Arc<crate::experiments::Writer>,
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

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
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
            watch: Arc::new(Watch {
                tx: broadcast::channel(1024).0,
                announced: Mutex::new(HashMap::new()),
                started: AtomicBool::new(false),
            }),
            cache: Arc::new(Mutex::new(HashMap::new())),
            experiments: Arc::default(),
        };
        for env in DEFAULT_ENVIRONMENTS {
            store.insert_env(env).await?;
        }
        Ok(store)
    }

    /// Adds an environment unless it exists; whether it was added.
    async fn insert_env(&self, name: &str) -> Result<bool, StoreError> {
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

    // ---- environments ----

    pub async fn create_env(&self, name: &str) -> Result<EnvInfo, StoreError> {
        if !guidon_engine::is_valid_key(name) {
            return Err(StoreError::InvalidEnvName(name.to_owned()));
        }
        if !self.insert_env(name).await? {
            return Err(StoreError::EnvExists(name.to_owned()));
        }
        self.list_envs()
            .await?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| StoreError::UnknownEnv(name.to_owned()))
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
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    /// The environment's current revision.
    pub async fn revision(&self, env: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT revision FROM environments WHERE name = $1")
            .bind(env)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
        Ok(to_u64(row.try_get("revision")?))
    }

    // ---- reads ----

    /// The environment's flags and segments at one revision, consistently.
    pub async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError> {
        let mut tx = self.begin_read().await?;
        let result: Result<(i64, i64, FlagFile, HashMap<String, u64>), StoreError> = async {
            let row = sqlx::query("SELECT revision, created_at FROM environments WHERE name = $1")
                .bind(env)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
            let (file, versions) = load_file(&mut tx, env).await?;
            Ok((
                row.try_get("revision")?,
                row.try_get("created_at")?,
                file,
                versions,
            ))
        }
        .await;
        let (revision, created_at_ms, file, versions) = finish(tx, result).await?;
        Ok(EnvSnapshot {
            revision: to_u64(revision),
            created_at_ms,
            file,
            versions,
        })
    }

    /// The ordered changes after `since`, or [`StoreError::TooOld`] past
    /// [`CATCH_UP_HORIZON`].
    pub async fn changes_since(&self, env: &str, since: u64) -> Result<Changes, StoreError> {
        let mut tx = self.begin_read().await?;
        let result: Result<(u64, Vec<AnyRow>), StoreError> = async {
            let revision = to_u64(
                sqlx::query("SELECT revision FROM environments WHERE name = $1")
                    .bind(env)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?
                    .try_get("revision")?,
            );
            let oldest = revision.saturating_sub(self.options.catch_up_horizon);
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
            Ok((revision, rows))
        }
        .await;
        let (revision, rows) = finish(tx, result).await?;
        let changes = rows
            .iter()
            .map(|r| {
                let entry = history_entry(env, r)?;
                Ok(Change {
                    revision: entry.revision,
                    kind: entry.kind,
                    key: entry.key,
                    op: entry.op,
                    version: entry.version,
                    definition: entry.after,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Changes { revision, changes })
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
            definition: serde_json::from_str(&text).map_err(|e| corrupt(env, kind, key, e))?,
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
        if rows.is_empty() {
            return Err(StoreError::NotFound {
                env: env.to_owned(),
                kind: kind.as_str(),
                key: key.to_owned(),
            });
        }
        rows.iter().map(|r| history_entry(env, r)).collect()
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

    // ---- writes ----

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
        let definition =
            serde_json::to_value(flag).map_err(|e| corrupt(env, Kind::Flag, &flag.key, e))?;
        self.write(
            env,
            Kind::Flag,
            &flag.key,
            Some(definition),
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
        let definition = serde_json::to_value(segment)
            .map_err(|e| corrupt(env, Kind::Segment, &segment.key, e))?;
        self.write(
            env,
            Kind::Segment,
            &segment.key,
            Some(definition),
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
        self.write(env, kind, key, None, expected_version, actor)
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
        let row = sqlx::query(
            "SELECT after FROM changes WHERE env = $1 AND kind = 'flag' AND key = $2 \
             AND version = $3 AND op = 'upsert'",
        )
        .bind(env)
        .bind(key)
        .bind(to_i64(version))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NoSuchVersion {
            key: key.to_owned(),
            version,
        })?;
        let text: String = row.try_get("after")?;
        let definition: Value =
            serde_json::from_str(&text).map_err(|e| corrupt(env, Kind::Flag, key, e))?;
        self.write(env, Kind::Flag, key, Some(definition), None, actor)
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
        let source = self.snapshot(from).await?;
        let flag = source
            .file
            .flags
            .iter()
            .find(|f| f.key == key)
            .ok_or_else(|| StoreError::NotFound {
                env: from.to_owned(),
                kind: "flag",
                key: key.to_owned(),
            })?;
        self.upsert_flag(to, flag, None, actor).await
    }

    /// Learns of every commit to any environment, by this process or
    /// another on the same database: in-process commits at once, other
    /// processes' through PostgreSQL's LISTEN/NOTIFY, and on both backends
    /// by polling the revisions every `poll_interval` (the fallback when a
    /// notification is lost or the listener is down). Must be called inside
    /// a tokio runtime; the watching task ends when the last receiver and
    /// the store are dropped.
    pub fn subscribe(&self) -> broadcast::Receiver<Revised> {
        let rx = self.watch.tx.subscribe();
        if !self.watch.started.swap(true, AtomicOrdering::SeqCst) {
            let watcher = Watcher {
                pool: self.pool.clone(),
                backend: self.backend,
                url: self.url.clone(),
                channel: self.channel.clone(),
                poll_interval: self.options.poll_interval,
                watch: Arc::downgrade(&self.watch),
            };
            tokio::spawn(watcher.run());
        }
        rx
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

    /// Locks the environment against other writers until the transaction
    /// ends, taking its next revision: the counter row is updated first,
    /// which in PostgreSQL takes its row lock and in SQLite the write lock.
    async fn next_revision(
        tx: &mut Transaction<'static, Any>,
        env: &str,
    ) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "UPDATE environments SET revision = revision + 1 WHERE name = $1 \
             RETURNING revision, created_at",
        )
        .bind(env)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::UnknownEnv(env.to_owned()))?;
        Ok((row.try_get("revision")?, row.try_get("created_at")?))
    }

    /// The file this process last committed to `env`, if nobody has
    /// committed since: it spares a writer reading and parsing the whole
    /// environment. Taken out, so a failed write cannot leave it half-changed.
    fn take_cached(&self, env: &str, created_at: i64, revision: i64) -> Option<FlagFile> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.remove(env) {
            Some(c) if c.created_at == created_at && c.revision == revision => Some(c.file),
            _ => None,
        }
    }

    fn put_cached(&self, env: &str, created_at: i64, revision: i64, file: FlagFile) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            env.to_owned(),
            Cached {
                created_at,
                revision,
                file,
            },
        );
    }

    /// Every write: take the environment's next revision (which locks out
    /// its other writers until commit), check the expected version, validate
    /// the environment with the change applied, then record the definition
    /// and the change. Any failure rolls back, revision included.
    async fn write(
        &self,
        env: &str,
        kind: Kind,
        key: &str,
        definition: Option<Value>,
        expected_version: Option<u64>,
        actor: &str,
    ) -> Result<Committed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let result: Result<_, StoreError> = async {
            let (revision, created_at) = Self::next_revision(&mut tx, env).await?;
            let current = sqlx::query(
                "SELECT version, definition, deleted FROM definitions \
                 WHERE env = $1 AND kind = $2 AND key = $3",
            )
            .bind(env)
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            // The last version ever given to this key (tombstones keep
            // theirs), and the live one with its definition.
            let (last_version, live) = match &current {
                Some(row) => {
                    let version: i64 = row.try_get("version")?;
                    let deleted: i32 = row.try_get("deleted")?;
                    let live = if deleted == 0 {
                        Some((version, row.try_get::<String, _>("definition")?))
                    } else {
                        None
                    };
                    (version, live)
                }
                None => (0, None),
            };
            let current_version = live.as_ref().map(|(v, _)| to_u64(*v));
            if let Some(expected) = expected_version
                && current_version.unwrap_or(0) != expected
            {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: current_version,
                });
            }
            if definition.is_none() && live.is_none() {
                return Err(StoreError::NotFound {
                    env: env.to_owned(),
                    kind: kind.as_str(),
                    key: key.to_owned(),
                });
            }

            let mut file = match self.take_cached(env, created_at, revision - 1) {
                Some(file) => file,
                None => load_file(&mut tx, env).await?.0,
            };
            let position = match kind {
                Kind::Flag => apply(
                    &mut file.flags,
                    |f| f.key == key,
                    definition.as_ref(),
                    env,
                    kind,
                    key,
                )?,
                Kind::Segment => apply(
                    &mut file.segments,
                    |s| s.key == key,
                    definition.as_ref(),
                    env,
                    kind,
                    key,
                )?,
            };
            // Compiling a large environment is milliseconds of CPU: off the
            // async workers (a small one costs less than the hand-off).
            let (file, compiled) = if file.flags.len() + file.segments.len() > BLOCKING_COMPILE {
                tokio::task::spawn_blocking(move || {
                    let compiled = Snapshot::compile(&file).map(drop);
                    (file, compiled)
                })
                .await
                .map_err(|e| corrupt(env, kind, key, format!("validation task failed: {e}")))?
            } else {
                let compiled = Snapshot::compile(&file).map(drop);
                (file, compiled)
            };
            compiled.map_err(|e| StoreError::Invalid(relative_to(e, kind, position)))?;

            let (op, version) = match &definition {
                Some(_) => (Op::Upsert, last_version + 1),
                None => (Op::Delete, last_version),
            };
            let edit = Edit {
                kind,
                key,
                op,
                version,
                before: live.map(|(_, text)| text),
                after: definition.as_ref().map(Value::to_string),
            };
            self.record(&mut tx, env, revision, &edit, actor, now_ms())
                .await?;
            self.notify(&mut tx, env, revision).await?;
            Ok((revision, version, current_version, file, created_at))
        }
        .await;
        let (revision, version, current_version, file, created_at) = finish(tx, result).await?;
        self.put_cached(env, created_at, revision, file);
        self.watch.announce(env, to_u64(revision));
        Ok(Committed {
            version: to_u64(version),
            revision: to_u64(revision),
            created: current_version.is_none(),
        })
    }

    /// Stores one change: the key's current definition (or its tombstone)
    /// and the change log's row.
    async fn record(
        &self,
        tx: &mut Transaction<'static, Any>,
        env: &str,
        revision: i64,
        edit: &Edit<'_>,
        actor: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let (definition, deleted) = match &edit.after {
            Some(text) => (text.as_str(), 0_i32),
            None => ("", 1_i32),
        };
        sqlx::query(
            "INSERT INTO definitions (env, kind, key, version, revision, definition, deleted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (env, kind, key) DO UPDATE SET \
             version = excluded.version, revision = excluded.revision, \
             definition = excluded.definition, deleted = excluded.deleted",
        )
        .bind(env)
        .bind(edit.kind.as_str())
        .bind(edit.key)
        .bind(edit.version)
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
        .bind(edit.kind.as_str())
        .bind(edit.key)
        .bind(edit.op.as_str())
        .bind(edit.version)
        .bind(edit.before.as_deref())
        .bind(edit.after.as_deref())
        .bind(actor)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Tells other processes (PostgreSQL); delivered when, and only if, the
    /// transaction commits.
    async fn notify(
        &self,
        tx: &mut Transaction<'static, Any>,
        env: &str,
        revision: i64,
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

    /// Makes the environment exactly `file` (GitOps): every flag and segment
    /// that differs is upserted, every one not in the file deleted, all
    /// under one revision, atomically. The file is validated first; when
    /// nothing differs, nothing is written and the revision stays.
    pub async fn replace_all(
        &self,
        env: &str,
        file: &FlagFile,
        actor: &str,
    ) -> Result<Replaced, StoreError> {
        Snapshot::compile(file).map_err(StoreError::Invalid)?;
        let mut wanted: Vec<(Kind, &str, Value)> = Vec::new();
        for flag in &file.flags {
            let value =
                serde_json::to_value(flag).map_err(|e| corrupt(env, Kind::Flag, &flag.key, e))?;
            wanted.push((Kind::Flag, &flag.key, value));
        }
        for segment in &file.segments {
            let value = serde_json::to_value(segment)
                .map_err(|e| corrupt(env, Kind::Segment, &segment.key, e))?;
            wanted.push((Kind::Segment, &segment.key, value));
        }

        let mut tx = self.pool.begin().await?;
        let result: Result<_, StoreError> = async {
            let (revision, created_at) = Self::next_revision(&mut tx, env).await?;
            let rows = sqlx::query(
                "SELECT kind, key, version, definition, deleted FROM definitions WHERE env = $1",
            )
            .bind(env)
            .fetch_all(&mut *tx)
            .await?;
            // (kind, key) -> (last version, live definition)
            let mut existing: HashMap<(Kind, String), (i64, Option<String>)> = HashMap::new();
            for row in &rows {
                let key: String = row.try_get("key")?;
                let kind = Kind::parse(&row.try_get::<String, _>("kind")?)
                    .ok_or_else(|| corrupt(env, Kind::Flag, &key, "unknown kind"))?;
                let deleted: i32 = row.try_get("deleted")?;
                let live = if deleted == 0 {
                    Some(row.try_get::<String, _>("definition")?)
                } else {
                    None
                };
                existing.insert((kind, key), (row.try_get("version")?, live));
            }
            let mut edits = Vec::new();
            for (kind, key, value) in &wanted {
                let (last, live) = existing
                    .remove(&(*kind, (*key).to_owned()))
                    .unwrap_or((0, None));
                let same = live
                    .as_deref()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .is_some_and(|old| old == *value);
                if !same {
                    edits.push(Edit {
                        kind: *kind,
                        key,
                        op: Op::Upsert,
                        version: last + 1,
                        before: live,
                        after: Some(value.to_string()),
                    });
                }
            }
            let mut gone: Vec<_> = existing
                .into_iter()
                .filter_map(|((kind, key), (last, live))| live.map(|text| (kind, key, last, text)))
                .collect();
            gone.sort();
            for (kind, key, last, text) in &gone {
                edits.push(Edit {
                    kind: *kind,
                    key,
                    op: Op::Delete,
                    version: *last,
                    before: Some(text.clone()),
                    after: None,
                });
            }
            if edits.is_empty() {
                return Ok(None);
            }
            let at = now_ms();
            for edit in &edits {
                self.record(&mut tx, env, revision, edit, actor, at).await?;
            }
            self.notify(&mut tx, env, revision).await?;
            let summary = edits
                .iter()
                .map(|e| Applied {
                    kind: e.kind,
                    key: e.key.to_owned(),
                    op: e.op,
                    version: to_u64(e.version),
                })
                .collect::<Vec<_>>();
            Ok(Some((revision, created_at, summary)))
        }
        .await;
        match result {
            Ok(None) => {
                // Nothing differs: give the revision back.
                tx.rollback().await?;
                Ok(Replaced {
                    revision: self.revision(env).await?,
                    changes: Vec::new(),
                })
            }
            Err(e) => {
                // As in `finish`: a failed rollback changes nothing.
                let _ = tx.rollback().await;
                Err(e)
            }
            Ok(Some(done)) => {
                let (revision, created_at, changes) = finish(tx, Ok(done)).await?;
                self.put_cached(env, created_at, revision, file.clone());
                self.watch.announce(env, to_u64(revision));
                Ok(Replaced {
                    revision: to_u64(revision),
                    changes,
                })
            }
        }
    }
}

/// One change about to be recorded.
struct Edit<'a> {
    kind: Kind,
    key: &'a str,
    op: Op,
    version: i64,
    before: Option<String>,
    after: Option<String>,
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

struct Watcher {
    pool: AnyPool,
    backend: Backend,
    url: String,
    channel: String,
    poll_interval: Duration,
    watch: Weak<Watch>,
}

impl Watcher {
    async fn run(self) {
        let mut listener: Option<PgListener> = None;
        loop {
            let Some(watch) = self.watch.upgrade() else {
                return;
            };
            if self.pool.is_closed() {
                return;
            }
            if self.backend == Backend::Postgres && listener.is_none() {
                // Bounded: while the database is away, reconnecting must not
                // hold up the polling that stands in for the listener.
                let limit = self.poll_interval.max(Duration::from_secs(1));
                listener = tokio::time::timeout(limit, connect_listener(&self.url, &self.channel))
                    .await
                    .ok()
                    .flatten();
                if listener.is_none() {
                    self.poll(&watch).await;
                }
            }
            // Wake on a notification or at the next poll, whichever is first.
            let notified = match listener.as_mut() {
                Some(l) => tokio::time::timeout(self.poll_interval, l.recv())
                    .await
                    .ok(),
                None => {
                    tokio::time::sleep(self.poll_interval).await;
                    None
                }
            };
            match notified {
                Some(Ok(notification)) => {
                    if let Some((revision, env)) = notification.payload().split_once(':')
                        && let Ok(revision) = revision.parse()
                    {
                        watch.announce(env, revision);
                    }
                }
                // The listener's connection failed: reconnect on the next
                // turn, and poll meanwhile.
                Some(Err(_)) => listener = None,
                None => self.poll(&watch).await,
            }
        }
    }

    async fn poll(&self, watch: &Watch) {
        // A failed poll (database away) is retried at the next interval.
        if let Ok(rows) = sqlx::query("SELECT name, revision FROM environments")
            .fetch_all(&self.pool)
            .await
        {
            for row in rows {
                if let (Ok(env), Ok(revision)) = (
                    row.try_get::<String, _>("name"),
                    row.try_get::<i64, _>("revision"),
                ) {
                    watch.announce(&env, to_u64(revision));
                }
            }
        }
    }
}

async fn connect_listener(url: &str, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect(url).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}

/// Replaces, appends or removes the definition keyed `key`; returns its
/// index in the file (for error paths).
fn apply<T: serde::de::DeserializeOwned>(
    items: &mut Vec<T>,
    is_key: impl Fn(&T) -> bool,
    definition: Option<&Value>,
    env: &str,
    kind: Kind,
    key: &str,
) -> Result<Option<usize>, StoreError> {
    let found = items.iter().position(is_key);
    match definition {
        Some(value) => {
            let item: T =
                serde_json::from_value(value.clone()).map_err(|e| corrupt(env, kind, key, e))?;
            match found {
                Some(i) => {
                    items[i] = item;
                    Ok(Some(i))
                }
                None => {
                    items.push(item);
                    Ok(Some(items.len() - 1))
                }
            }
        }
        None => {
            if let Some(i) = found {
                items.remove(i);
            }
            Ok(None)
        }
    }
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

fn corrupt(env: &str, kind: Kind, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        env: env.to_owned(),
        kind: kind.as_str(),
        key: key.to_owned(),
        message: e.to_string(),
    }
}

/// The environment's definitions as a flag file, with each flag's version.
async fn load_file(
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
        let definition: String = row.try_get("definition")?;
        match Kind::parse(&row.try_get::<String, _>("kind")?) {
            Some(Kind::Flag) => {
                let flag: Flag = serde_json::from_str(&definition)
                    .map_err(|e| corrupt(env, Kind::Flag, &key, e))?;
                versions.insert(key, to_u64(row.try_get("version")?));
                file.flags.push(flag);
            }
            Some(Kind::Segment) => {
                let segment: Segment = serde_json::from_str(&definition)
                    .map_err(|e| corrupt(env, Kind::Segment, &key, e))?;
                file.segments.push(segment);
            }
            None => return Err(corrupt(env, Kind::Flag, &key, "unknown kind")),
        }
    }
    Ok((file, versions))
}

fn history_entry(env: &str, row: &AnyRow) -> Result<HistoryEntry, StoreError> {
    let key: String = row.try_get("key")?;
    let kind_text: String = row.try_get("kind")?;
    let kind =
        Kind::parse(&kind_text).ok_or_else(|| corrupt(env, Kind::Flag, &key, "unknown kind"))?;
    let parse = |column: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = row.try_get(column).ok().flatten();
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(env, kind, &key, e)))
            .transpose()
    };
    let op: String = row.try_get("op")?;
    Ok(HistoryEntry {
        revision: to_u64(row.try_get("revision")?),
        kind,
        op: if op == "delete" {
            Op::Delete
        } else {
            Op::Upsert
        },
        version: to_u64(row.try_get("version")?),
        actor: row.try_get("actor").unwrap_or_default(),
        at_ms: row.try_get("at").unwrap_or_default(),
        before: parse("before")?,
        after: parse("after")?,
        key,
    })
}
