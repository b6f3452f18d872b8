//! The server's view of every environment: the compiled Snapshot that
//! evaluations read without locks, the flag file SDKs download, and the
//! broadcast that streams carry. A sync task keeps them at the store's
//! revision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use guidon_engine::model::{Flag, Segment};
use guidon_engine::{FlagFile, Snapshot, SnapshotOptions};
use guidon_store::{Change, Kind, Op, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast};

use crate::auth::Tokens;
use crate::cache::EvalCache;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// How many revisions a stream client may fall behind before it is
/// disconnected (it then reconnects and catches up from its last id).
pub(crate) const STREAM_BUFFER: usize = 256;

/// How often the follower compares every environment with the store.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// One environment at one revision.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) revision: u64,
    /// The environment's creation time (ms): tells a re-created
    /// environment's revisions from its predecessor's, in ETags.
    pub(crate) epoch: i64,
    pub(crate) snapshot: Snapshot,
    pub(crate) file: FlagFile,
    pub(crate) versions: HashMap<String, u64>,
    /// Results depend only on revision and context (no definition reads
    /// the clock): they may be cached and given an ETag.
    pub(crate) cacheable: bool,
}

impl Live {
    fn new(
        revision: u64,
        epoch: i64,
        file: FlagFile,
        versions: HashMap<String, u64>,
    ) -> ApiResult<Live> {
        let snapshot = Snapshot::compile_with(
            &file,
            &SnapshotOptions {
                revision: Some(revision),
                versions: versions.clone(),
            },
        )
        .map_err(|e| ApiError::Internal(format!("stored environment does not compile: {e}")))?;
        Ok(Live {
            revision,
            epoch,
            snapshot,
            cacheable: !crate::cache::uses_clock(&file),
            file,
            versions,
        })
    }

    /// Compiles on a blocking thread: a large environment is milliseconds
    /// of CPU that must not hold up the async workers serving evaluations.
    async fn build(
        revision: u64,
        epoch: i64,
        file: FlagFile,
        versions: HashMap<String, u64>,
    ) -> ApiResult<Live> {
        // A small environment compiles faster than the hand-off.
        if file.flags.len() + file.segments.len() <= 500 {
            return Live::new(revision, epoch, file, versions);
        }
        tokio::task::spawn_blocking(move || Live::new(revision, epoch, file, versions))
            .await
            .map_err(|e| ApiError::Internal(format!("compile task failed: {e}")))?
    }

    /// The SDK's flag document: the file, its revision and every flag's version.
    pub(crate) fn document(&self) -> Value {
        json!({
            "revision": self.revision,
            "epoch": self.epoch,
            "versions": self.versions,
            "flags": self.file.flags,
            "segments": self.file.segments,
        })
    }
}

/// A revision's changes, as streams send them.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) revision: u64,
    /// `{"type":"update","revision":N,"changes":[…]}`, serialized once;
    /// `None` when the changes could not be replayed and every stream
    /// client must take a new snapshot.
    pub(crate) json: Option<Arc<str>>,
}

pub(crate) fn change_json(change: &Change) -> Value {
    json!({
        "kind": change.kind,
        "key": change.key,
        "op": change.op,
        "version": change.version,
        "definition": change.definition,
    })
}

pub(crate) fn update_json(revision: u64, changes: &[&Change]) -> String {
    json!({
        "type": "update",
        "revision": revision,
        "changes": changes.iter().map(|c| change_json(c)).collect::<Vec<_>>(),
    })
    .to_string()
}

#[derive(Debug)]
pub(crate) struct EnvState {
    pub(crate) name: String,
    pub(crate) live: ArcSwap<Live>,
    pub(crate) updates: broadcast::Sender<Arc<Update>>,
    /// One sync at a time per environment.
    syncing: Mutex<()>,
}

/// Everything a handler needs.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    envs: ArcSwap<HashMap<String, Arc<EnvState>>>,
    /// Serializes changes to `envs` (insertions and removals).
    envs_write: Mutex<()>,
    pub(crate) tokens: Tokens,
    pub(crate) metrics: Metrics,
    pub(crate) cache: Option<EvalCache>,
    pub(crate) limits: Limits,
    pub(crate) shutdown: tokio_util_shutdown::Shutdown,
    /// Interval of stream heartbeats.
    pub(crate) heartbeat: Duration,
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest accepted request body (bulk flag files included).
    pub(crate) max_body: usize,
    /// Most attributes in one evaluation context.
    pub(crate) max_context_attributes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 4 * 1024 * 1024,
            max_context_attributes: 256,
        }
    }
}

/// A shutdown signal every stream watches, so they end cleanly.
pub(crate) mod tokio_util_shutdown {
    use std::sync::Arc;

    use tokio::sync::watch;

    #[derive(Debug, Clone)]
    pub(crate) struct Shutdown {
        rx: watch::Receiver<bool>,
    }

    #[derive(Debug)]
    pub(crate) struct Trigger {
        tx: Arc<watch::Sender<bool>>,
    }

    pub(crate) fn channel() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger { tx: Arc::new(tx) }, Shutdown { rx })
    }

    impl Trigger {
        pub(crate) fn fire(&self) {
            let _ = self.tx.send(true);
        }

        pub(crate) fn clone_trigger(&self) -> Trigger {
            Trigger {
                tx: self.tx.clone(),
            }
        }
    }

    impl Shutdown {
        /// Resolves once shutdown has begun.
        pub(crate) async fn wait(&self) {
            let mut rx = self.rx.clone();
            // An error means the trigger is gone: shut down too.
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}

impl AppState {
    pub(crate) fn new(
        store: Store,
        tokens: Tokens,
        metrics: Metrics,
        cache: Option<EvalCache>,
        limits: Limits,
        shutdown: tokio_util_shutdown::Shutdown,
        heartbeat: Duration,
    ) -> AppState {
        AppState {
            store,
            envs: ArcSwap::from_pointee(HashMap::new()),
            envs_write: Mutex::new(()),
            tokens,
            metrics,
            cache,
            limits,
            shutdown,
            heartbeat,
        }
    }

    /// The environment's state, loading it on first use.
    pub(crate) async fn env(&self, name: &str) -> ApiResult<Arc<EnvState>> {
        if let Some(env) = self.envs.load().get(name) {
            return Ok(env.clone());
        }
        let _guard = self.envs_write.lock().await;
        if let Some(env) = self.envs.load().get(name) {
            return Ok(env.clone());
        }
        let snap = self.store.snapshot(name).await?;
        let live = Live::build(snap.revision, snap.created_at_ms, snap.file, snap.versions).await?;
        let env = Arc::new(EnvState {
            name: name.to_owned(),
            live: ArcSwap::from_pointee(live),
            updates: broadcast::channel(STREAM_BUFFER).0,
            syncing: Mutex::new(()),
        });
        let mut map = HashMap::clone(&self.envs.load());
        map.insert(name.to_owned(), env.clone());
        self.envs.store(Arc::new(map));
        Ok(env)
    }

    /// Forgets an environment (deleted): its streams end.
    pub(crate) async fn forget(&self, name: &str) {
        let _guard = self.envs_write.lock().await;
        let mut map = HashMap::clone(&self.envs.load());
        map.remove(name);
        self.envs.store(Arc::new(map));
    }

    pub(crate) fn loaded_envs(&self) -> Vec<Arc<EnvState>> {
        self.envs.load().values().cloned().collect()
    }

    /// Brings the environment up to the store's revision (at least
    /// `target`, when known): applies the missed changes, recompiles,
    /// publishes, and sends each revision to the streams.
    pub(crate) async fn sync(&self, env: &EnvState, target: Option<u64>) -> ApiResult<()> {
        let _guard = env.syncing.lock().await;
        let current = env.live.load_full();
        if target.is_some_and(|t| t <= current.revision) {
            return Ok(());
        }
        match self.store.changes_since(&env.name, current.revision).await {
            Ok(changes) => {
                if changes.revision <= current.revision {
                    return Ok(());
                }
                let mut file = current.file.clone();
                let mut versions = current.versions.clone();
                for change in &changes.changes {
                    apply_change(&mut file, &mut versions, change).map_err(|e| {
                        ApiError::Internal(format!(
                            "change to {:?} does not parse: {e}",
                            change.key
                        ))
                    })?;
                }
                let live = Live::build(changes.revision, current.epoch, file, versions).await?;
                // One message per revision, in order, serialized before the
                // swap so they follow it as closely as possible.
                let mut updates = Vec::new();
                let mut i = 0;
                while i < changes.changes.len() {
                    let revision = changes.changes[i].revision;
                    let group: Vec<&Change> = changes.changes[i..]
                        .iter()
                        .take_while(|c| c.revision == revision)
                        .collect();
                    i += group.len();
                    updates.push(Arc::new(Update {
                        revision,
                        json: Some(update_json(revision, &group).into()),
                    }));
                }
                env.live.store(Arc::new(live));
                for update in updates {
                    let _ = env.updates.send(update);
                }
                Ok(())
            }
            Err(StoreError::TooOld { .. }) => {
                // Too far behind to replay: reload, and let stream clients
                // (which cannot be given the gap) reconnect for a snapshot.
                let snap = self.store.snapshot(&env.name).await?;
                let live = Live::build(snap.revision, snap.created_at_ms, snap.file, snap.versions)
                    .await?;
                env.live.store(Arc::new(live));
                let _ = env.updates.send(Arc::new(Update {
                    revision: snap.revision,
                    json: None,
                }));
                Ok(())
            }
            Err(StoreError::UnknownEnv(_)) => {
                self.forget(&env.name).await;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Compares every loaded environment with the store: a deleted one is
    /// forgotten (its streams end), a re-created one reloaded (its streams
    /// end, so clients take a snapshot of the new one), one behind synced.
    /// This is what retries a failed sync, and what notices changes the
    /// store's announcements cannot express (deletion, re-creation).
    pub(crate) async fn reconcile(&self) -> ApiResult<()> {
        let stored: HashMap<String, guidon_store::EnvInfo> = self
            .store
            .list_envs()
            .await?
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        for env in self.loaded_envs() {
            let live = env.live.load_full();
            match stored.get(&env.name) {
                None => self.forget(&env.name).await,
                Some(info) if info.created_at_ms != live.epoch => {
                    let _guard = env.syncing.lock().await;
                    let snap = self.store.snapshot(&env.name).await?;
                    let live =
                        Live::build(snap.revision, snap.created_at_ms, snap.file, snap.versions)
                            .await?;
                    env.live.store(Arc::new(live));
                    let _ = env.updates.send(Arc::new(Update {
                        revision: snap.revision,
                        json: None,
                    }));
                }
                Some(info) if info.revision != live.revision => self.sync(&env, None).await?,
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Follows the store's commits (this process's and other instances')
    /// until shutdown, and reconciles with the store every second.
    pub(crate) async fn follow(self: Arc<AppState>) {
        let mut revised = self.store.subscribe();
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = revised.recv() => event,
                _ = reconcile.tick() => {
                    if let Err(e) = self.reconcile().await {
                        tracing::warn!(error = %e, "reconciling with the store failed; retrying");
                    }
                    continue;
                }
                () = self.shutdown.wait() => return,
            };
            match event {
                Ok(r) => {
                    let env = self.envs.load().get(&r.env).cloned();
                    if let Some(env) = env
                        && let Err(e) = self.sync(&env, Some(r.revision)).await
                    {
                        tracing::warn!(env = %r.env, error = %e, "sync failed; reconciling retries it");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for env in self.loaded_envs() {
                        if let Err(e) = self.sync(&env, None).await {
                            tracing::warn!(env = %env.name, error = %e, "sync failed");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn apply_change(
    file: &mut FlagFile,
    versions: &mut HashMap<String, u64>,
    change: &Change,
) -> Result<(), serde_json::Error> {
    match (change.kind, change.op, &change.definition) {
        (Kind::Flag, Op::Upsert, Some(def)) => {
            let flag: Flag = serde_json::from_value(def.clone())?;
            versions.insert(flag.key.clone(), change.version);
            match file.flags.iter_mut().find(|f| f.key == change.key) {
                Some(slot) => *slot = flag,
                None => file.flags.push(flag),
            }
        }
        (Kind::Segment, Op::Upsert, Some(def)) => {
            let segment: Segment = serde_json::from_value(def.clone())?;
            match file.segments.iter_mut().find(|s| s.key == change.key) {
                Some(slot) => *slot = segment,
                None => file.segments.push(segment),
            }
        }
        (Kind::Flag, _, _) => {
            file.flags.retain(|f| f.key != change.key);
            versions.remove(&change.key);
        }
        (Kind::Segment, _, _) => file.segments.retain(|s| s.key != change.key),
    }
    Ok(())
}
