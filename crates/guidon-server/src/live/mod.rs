//! What this instance serves of every environment: the compiled Snapshot
//! evaluations read without locks, the document SDKs download, and the
//! broadcast streams carry. It knows the store and the protocol, and no
//! HTTP: handlers read it, and one task per environment (`sync.rs`) is the
//! only writer of it.
//!
//! ```text
//! this instance's commit ──Revised{commit}──┐
//! another's (NOTIFY, poll) ──Revised──────┐  │     follower (one task)
//! every second: list_envs ─reconcile──┐  │  │ ─────────────────────────▶ Signal
//!                                      ▼  ▼  ▼                              │
//!            environment's sync task (one per environment, sole writer) ◀───┘
//!              commit R+1 when at R: swap in its Snapshot (no read, no compile)
//!              otherwise: changes_since → apply → compile; too old or
//!              re-created: the whole document
//!              then: live.store(), broadcast each revision, served = R
//! ```

mod sync;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use guidon_engine::{FlagFile, Snapshot, ValidationError};
use guidon_protocol::{Document, Encoded};
use guidon_store::{Store, StoreError};
use tokio::sync::{Mutex, broadcast, mpsc, watch};

use crate::metrics::SyncCounters;
use crate::shutdown::Shutdown;
use sync::Signal;
pub(crate) use sync::follow;

/// How many revisions a stream client may fall behind before it is
/// disconnected (it then reconnects and catches up from its last id).
pub(crate) const STREAM_BUFFER: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored environment {env:?} does not compile: {error}")]
    Compile { env: String, error: ValidationError },
    /// An edge relays the environment but has no state of it yet.
    #[error("environment {0:?} has no state yet: this edge has not reached its upstream")]
    NotYet(String),
}

/// One environment at one revision. Immutable; replaced whole.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) revision: u64,
    /// The environment's creation time (ms): tells a re-created
    /// environment's revisions from its predecessor's, in ETags.
    pub(crate) epoch: i64,
    pub(crate) document: Arc<Document>,
    pub(crate) snapshot: Arc<Snapshot>,
    /// Results depend only on revision and context (no definition reads
    /// the clock): they may be cached and given an ETag.
    pub(crate) cacheable: bool,
    /// The document as the stream's snapshot message and the body of
    /// `/sdk/flags`, encoded on first use, once for every client.
    encoded: OnceLock<Encoded>,
}

impl Live {
    pub(crate) fn new(document: Arc<Document>, snapshot: Arc<Snapshot>) -> Live {
        Live {
            revision: document.revision.unwrap_or(0),
            epoch: document.epoch.unwrap_or(0),
            cacheable: !snapshot.reads_clock(),
            document,
            snapshot,
            encoded: OnceLock::new(),
        }
    }

    /// Compiles a document read from the store (on a blocking thread when
    /// it is large: the store's rule, `guidon_store::compile`).
    async fn build(env: &str, document: Document) -> Result<Live, LiveError> {
        let (document, compiled) = guidon_store::compile(document).await?;
        let snapshot = compiled.map_err(|error| LiveError::Compile {
            env: env.to_owned(),
            error,
        })?;
        Ok(Live::new(Arc::new(document), Arc::new(snapshot)))
    }

    pub(crate) fn file(&self) -> &FlagFile {
        &self.document.file
    }

    /// The snapshot message of this revision.
    pub(crate) fn encoded(&self) -> &Encoded {
        self.encoded.get_or_init(|| self.document.encode_snapshot())
    }
}

/// One environment: what evaluations read, what streams subscribe to.
#[derive(Debug)]
pub(crate) struct EnvState {
    pub(crate) name: String,
    pub(crate) live: ArcSwap<Live>,
    /// Every revision's message, encoded once, for the streams.
    pub(crate) updates: broadcast::Sender<Arc<Encoded>>,
    /// The revision `live` is at, for writers waiting to read their write.
    served: watch::Sender<u64>,
    /// To the environment's sync task.
    signals: mpsc::UnboundedSender<Signal>,
}

impl EnvState {
    fn signal(&self, signal: Signal) {
        // The task is gone only when the environment was forgotten.
        let _ = self.signals.send(signal);
    }

    /// Swaps the new state in, then sends each revision's message in order,
    /// then tells waiting writers: the one way a live state changes (the
    /// sync task's, or an edge's relay).
    pub(crate) fn publish(&self, live: Live, messages: Vec<Arc<Encoded>>) {
        let revision = live.revision;
        self.live.store(Arc::new(live));
        for message in messages {
            let _ = self.updates.send(message);
        }
        self.served.send_replace(revision);
    }

    /// Asks the sync task to reach at least `revision` (a stream client
    /// saw it through another instance).
    pub(crate) fn nudge(&self, revision: u64) {
        self.signal(Signal::Behind(revision));
    }

    /// Waits until this instance serves `revision` (or later); false after
    /// `timeout`, or if the environment was forgotten meanwhile.
    pub(crate) async fn served(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.served.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        )
    }
}

/// Every environment this instance has loaded.
#[derive(Debug)]
pub(crate) struct Envs {
    /// Where environments are loaded from on first use; `None` on an edge,
    /// whose relay hands them in ([`Envs::relayed`]).
    store: Option<Store>,
    /// The environments an edge relays (loaded or not yet).
    relays: Vec<String>,
    map: ArcSwap<HashMap<String, Arc<EnvState>>>,
    /// Serializes loading and forgetting.
    write: Mutex<()>,
    shutdown: Shutdown,
    syncs: SyncCounters,
}

impl Envs {
    pub(crate) fn new(store: Store, shutdown: Shutdown, syncs: SyncCounters) -> Envs {
        Envs {
            store: Some(store),
            relays: Vec::new(),
            map: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
            shutdown,
            syncs,
        }
    }

    /// An edge's: the environments `relays` are handed in by its relay.
    pub(crate) fn relaying(relays: Vec<String>, shutdown: Shutdown, syncs: SyncCounters) -> Envs {
        Envs {
            store: None,
            relays,
            map: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
            shutdown,
            syncs,
        }
    }

    /// The environment's state, loading it on first use.
    pub(crate) async fn get(&self, name: &str) -> Result<Arc<EnvState>, LiveError> {
        if let Some(env) = self.map.load().get(name) {
            return Ok(env.clone());
        }
        let Some(store) = &self.store else {
            return Err(if self.relays.iter().any(|r| r == name) {
                LiveError::NotYet(name.to_owned())
            } else {
                LiveError::Store(StoreError::UnknownEnv(name.to_owned()))
            });
        };
        let _guard = self.write.lock().await;
        if let Some(env) = self.map.load().get(name) {
            return Ok(env.clone());
        }
        let document = store.snapshot(name).await?;
        let live = Live::build(name, document).await?;
        let (env, rx) = self.insert(name, live);
        let syncer = sync::Syncer {
            store: store.clone(),
            env: env.clone(),
            rx,
            shutdown: self.shutdown.clone(),
            syncs: self.syncs.clone(),
        };
        tokio::spawn(syncer.run());
        Ok(env)
    }

    /// Adds an environment at `live` (the write lock held); the receiver
    /// of its signals, for its sync task.
    fn insert(&self, name: &str, live: Live) -> (Arc<EnvState>, mpsc::UnboundedReceiver<Signal>) {
        let (signals, rx) = mpsc::unbounded_channel();
        let env = Arc::new(EnvState {
            name: name.to_owned(),
            updates: broadcast::channel(STREAM_BUFFER).0,
            served: watch::channel(live.revision).0,
            live: ArcSwap::from_pointee(live),
            signals,
        });
        let mut map = HashMap::clone(&self.map.load());
        map.insert(name.to_owned(), env.clone());
        self.map.store(Arc::new(map));
        (env, rx)
    }

    /// An edge's relay hands in the first state of an environment it
    /// relays (later ones go to [`EnvState::publish`]).
    pub(crate) async fn relayed(&self, name: &str, live: Live) -> Arc<EnvState> {
        let _guard = self.write.lock().await;
        if let Some(env) = self.map.load().get(name) {
            return env.clone();
        }
        // No sync task (its signals go nowhere): the relay is the only writer.
        self.insert(name, live).0
    }

    /// The environments an edge relays (empty for a server).
    pub(crate) fn relays(&self) -> &[String] {
        &self.relays
    }

    /// The environment's state if it is loaded.
    pub(crate) fn loaded(&self, name: &str) -> Option<Arc<EnvState>> {
        self.map.load().get(name).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<EnvState>> {
        self.map.load().values().cloned().collect()
    }

    /// Forgets an environment (deleted): its sync task stops, and its
    /// streams end once the last handler lets go of it.
    pub(crate) async fn forget(&self, name: &str) {
        let _guard = self.write.lock().await;
        let mut map = HashMap::clone(&self.map.load());
        if let Some(env) = map.remove(name) {
            env.signal(Signal::Stop);
        }
        self.map.store(Arc::new(map));
    }
}
