//! Hearing of every commit: this process's at once, with what it
//! validated; other processes' through PostgreSQL's LISTEN/NOTIFY and a
//! poll of the revisions on both backends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use guidon_engine::Snapshot;
use guidon_protocol::{Change, Document};
use sqlx::postgres::PgListener;
use sqlx::{AnyPool, Row};
use tokio::sync::broadcast;

use super::{Backend, Store, lock, to_u64};

/// "Environment `env` is now at least at `revision`": what watchers
/// receive. For a commit of this process it comes with the commit itself;
/// otherwise a receiver asks `changes_since` for what it has not seen.
#[derive(Debug, Clone)]
pub struct Revised {
    pub env: String,
    pub revision: u64,
    pub commit: Option<Arc<Commit>>,
}

/// A commit of this process, with what its writer validated: the
/// environment as it now is, compiled. A watcher one revision behind takes
/// it as it is, without reading the database or compiling again.
#[derive(Debug)]
pub struct Commit {
    pub env: String,
    /// The environment's creation time (ms).
    pub epoch: i64,
    pub revision: u64,
    /// Every change of the revision, in (kind, key) order.
    pub changes: Vec<Change>,
    pub actor: String,
    pub at_ms: i64,
    /// The environment at `revision`.
    pub document: Arc<Document>,
    /// `document`, compiled with its revision and versions.
    pub snapshot: Arc<Snapshot>,
}

/// The shared state of watching: one broadcast, and the highest revision
/// announced per environment, so in-process commits, notifications and
/// polls announce each revision once.
#[derive(Debug)]
pub(super) struct Watch {
    tx: broadcast::Sender<Revised>,
    announced: Mutex<Announced>,
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct Announced {
    /// The highest revision announced, per environment.
    seen: HashMap<String, u64>,
    /// The revision this process is committing, per environment: its
    /// writer announces it with the commit, so a notification or a poll
    /// that sees it first (this process hears its own NOTIFY) stays quiet.
    pending: HashMap<String, u64>,
}

impl Watch {
    pub(super) fn new() -> Watch {
        Watch {
            tx: broadcast::channel(1024).0,
            announced: Mutex::new(Announced::default()),
            started: AtomicBool::new(false),
        }
    }

    fn announce(&self, env: &str, revision: u64, commit: Option<Arc<Commit>>) {
        let mut announced = lock(&self.announced);
        if commit.is_some() {
            if announced.pending.get(env) == Some(&revision) {
                announced.pending.remove(env);
            }
        } else if announced.pending.get(env) == Some(&revision) {
            return;
        }
        let seen = announced.seen.entry(env.to_owned()).or_insert(0);
        if revision > *seen {
            *seen = revision;
            let _ = self.tx.send(Revised {
                env: env.to_owned(),
                revision,
                commit,
            });
        }
    }

    /// This process is about to commit `revision` of `env`.
    pub(super) fn expect(&self, env: &str, revision: u64) {
        lock(&self.announced)
            .pending
            .insert(env.to_owned(), revision);
    }

    /// The commit of `revision` failed (or may have: a poll announces it
    /// if it did).
    pub(super) fn abandon(&self, env: &str, revision: u64) {
        let mut announced = lock(&self.announced);
        if announced.pending.get(env) == Some(&revision) {
            announced.pending.remove(env);
        }
    }

    /// Announces a commit of this process.
    pub(super) fn committed(&self, commit: Arc<Commit>) {
        let (env, revision) = (commit.env.clone(), commit.revision);
        self.announce(&env, revision, Some(commit));
    }
}

impl Store {
    /// Learns of every commit to any environment, by this process or
    /// another on the same database: in-process commits at once (with
    /// the commit), other processes' through PostgreSQL's LISTEN/NOTIFY,
    /// and on both backends by polling the revisions every `poll_interval`
    /// (the fallback when a notification is lost or the listener is down).
    /// Must be called inside a tokio runtime; the watching task ends when
    /// the last receiver and the store are dropped.
    pub fn subscribe(&self) -> broadcast::Receiver<Revised> {
        let rx = self.watch.tx.subscribe();
        if !self.watch.started.swap(true, Ordering::SeqCst) {
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

    /// Commits a write's transaction and announces it with what it
    /// validated. Until the announcement, a notification or poll of the
    /// same revision stays quiet, so receivers hear it once, with the commit.
    pub(super) async fn commit_and_announce(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        commit: Commit,
    ) -> Result<(), crate::StoreError> {
        let (env, revision) = (commit.env.clone(), commit.revision);
        self.watch.expect(&env, revision);
        match tx.commit().await {
            Ok(()) => {
                self.watch.committed(Arc::new(commit));
                Ok(())
            }
            Err(e) => {
                self.watch.abandon(&env, revision);
                Err(e.into())
            }
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
                        watch.announce(env, revision, None);
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
                    watch.announce(&env, to_u64(revision), None);
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
