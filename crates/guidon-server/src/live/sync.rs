//! Keeping every loaded environment at the store's revision: one follower
//! task hears the store and reconciles with it every second, and one sync
//! task per environment is the only writer of its live state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use guidon_protocol::api::EnvInfo;
use guidon_protocol::{Document, Encoded, Update};
use guidon_store::{Commit, Store, StoreError};
use tokio::sync::{broadcast, mpsc};

use super::{EnvState, Envs, Live, LiveError};
use crate::metrics::{SyncCounters, SyncLabels};
use crate::shutdown::Shutdown;

/// How often the follower compares every environment with the store.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// What an environment's sync task is told.
#[derive(Debug)]
pub(super) enum Signal {
    /// This instance committed; the commit holds the environment compiled.
    Commit(Arc<Commit>),
    /// The store is at least at this revision (another instance's commit,
    /// or a stream client that saw it elsewhere).
    Behind(u64),
    /// The store's view of the environment, once a second.
    Reconcile(EnvInfo),
    /// Announcements were lost: ask the store where it is.
    Refresh,
    /// The environment was deleted.
    Stop,
}

/// Follows the store's commits (this process's and other instances')
/// until shutdown, dispatching them to the environments' sync tasks, and
/// reconciles with the store every second: a deleted environment is
/// forgotten (its streams end), one re-created or behind is told so.
pub(crate) async fn follow(envs: Arc<Envs>) {
    let Some(store) = envs.store.clone() else {
        return;
    };
    let mut revised = store.subscribe();
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = revised.recv() => event,
            _ = reconcile.tick() => {
                if let Err(e) = reconcile_all(&envs).await {
                    tracing::warn!(error = %e, "reconciling with the store failed; retrying");
                }
                continue;
            }
            () = envs.shutdown.wait() => return,
        };
        match event {
            Ok(r) => {
                // An environment not loaded yet is read whole on first use.
                if let Some(env) = envs.loaded(&r.env) {
                    env.signal(match r.commit {
                        Some(commit) => Signal::Commit(commit),
                        None => Signal::Behind(r.revision),
                    });
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for env in envs.all() {
                    env.signal(Signal::Refresh);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn reconcile_all(envs: &Envs) -> Result<(), StoreError> {
    let Some(store) = &envs.store else {
        return Ok(());
    };
    let stored: HashMap<String, EnvInfo> = store
        .list_envs()
        .await?
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    for env in envs.all() {
        match stored.get(&env.name) {
            None => envs.forget(&env.name).await,
            Some(info) => env.signal(Signal::Reconcile(info.clone())),
        }
    }
    Ok(())
}

/// The sync task of one environment.
pub(super) struct Syncer {
    pub(super) store: Store,
    pub(super) env: Arc<EnvState>,
    pub(super) rx: mpsc::UnboundedReceiver<Signal>,
    pub(super) shutdown: Shutdown,
    pub(super) syncs: SyncCounters,
}

/// What a batch of signals asks for.
#[derive(Debug, Default)]
struct Wanted {
    commits: Vec<Arc<Commit>>,
    /// The revision to reach at least.
    target: u64,
    /// The environment was re-created (another creation time).
    reload: bool,
    /// Ask the store for its revision.
    refresh: bool,
    stop: bool,
}

impl Syncer {
    pub(super) async fn run(mut self) {
        loop {
            let first = tokio::select! {
                signal = self.rx.recv() => signal,
                () = self.shutdown.wait() => return,
            };
            let Some(first) = first else { return };
            // Whatever else is waiting is handled in one go: a burst of
            // commits is one swap and one broadcast per revision.
            let mut batch = vec![first];
            while let Ok(more) = self.rx.try_recv() {
                batch.push(more);
            }
            let wanted = self.wanted(batch);
            if wanted.stop {
                return;
            }
            if let Err(e) = self.reach(wanted).await {
                // The next reconcile (within a second) asks again.
                tracing::warn!(env = %self.env.name, error = %e, "sync failed; retrying");
            }
        }
    }

    fn wanted(&self, batch: Vec<Signal>) -> Wanted {
        let live = self.env.live.load();
        let mut wanted = Wanted::default();
        for signal in batch {
            match signal {
                Signal::Commit(c) if c.epoch == live.epoch => {
                    wanted.target = wanted.target.max(c.revision);
                    wanted.commits.push(c);
                }
                // Committed to a re-created environment.
                Signal::Commit(_) => wanted.reload = true,
                Signal::Behind(r) => wanted.target = wanted.target.max(r),
                Signal::Reconcile(info) if info.created_at_ms != live.epoch => {
                    wanted.reload = true;
                }
                Signal::Reconcile(info) => wanted.target = wanted.target.max(info.revision),
                Signal::Refresh => wanted.refresh = true,
                Signal::Stop => wanted.stop = true,
            }
        }
        wanted.commits.sort_by_key(|c| c.revision);
        wanted
    }

    async fn reach(&self, mut wanted: Wanted) -> Result<(), LiveError> {
        if wanted.reload {
            return self.reload().await;
        }
        if wanted.refresh {
            wanted.target = wanted
                .target
                .max(self.store.revision(&self.env.name).await?);
        }
        let live = self.env.live.load_full();
        // This instance's commits that follow on from what is served are
        // taken as they are: no read of the database, no compile.
        let mut at = live.revision;
        let mut taken: Vec<&Arc<Commit>> = Vec::new();
        for commit in &wanted.commits {
            if commit.revision == at + 1 {
                at = commit.revision;
                taken.push(commit);
            }
        }
        if let Some(last) = taken.last() {
            let messages = taken
                .iter()
                .map(|c| Arc::new(Update::encode_changes(c.revision, &c.changes)))
                .collect();
            let live = Live::new(last.document.clone(), last.snapshot.clone());
            self.publish(live, messages, "commit");
        }
        if wanted.target > at {
            self.catch_up().await?;
        }
        Ok(())
    }

    /// Applies what the store has after the served revision.
    async fn catch_up(&self) -> Result<(), LiveError> {
        let current = self.env.live.load_full();
        let changes = match self
            .store
            .changes_since(&self.env.name, current.revision)
            .await
        {
            Ok(changes) => changes,
            // Too far behind to replay: take the whole document.
            Err(StoreError::TooOld { .. }) => return self.reload().await,
            Err(StoreError::UnknownEnv(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if changes.epoch.is_some_and(|e| e != current.epoch) {
            // Re-created since: its revisions are not a continuation.
            return self.reload().await;
        }
        if changes.revision <= current.revision {
            return Ok(());
        }
        let mut document = Document::clone(&current.document);
        let mut messages = Vec::new();
        for update in changes.into_updates() {
            messages.push(Arc::new(update.encode()));
            document.advance(update.revision, update.changes);
        }
        let live = Live::build(&self.env.name, document).await?;
        self.publish(live, messages, "catch_up");
        Ok(())
    }

    /// Takes the whole document: the environment was re-created, or this
    /// instance is past the catch-up horizon. Stream clients receive it as
    /// a snapshot message.
    async fn reload(&self) -> Result<(), LiveError> {
        let document = match self.store.snapshot(&self.env.name).await {
            Ok(document) => document,
            Err(StoreError::UnknownEnv(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let live = Live::build(&self.env.name, document).await?;
        let message = Arc::new(live.encoded().clone());
        self.publish(live, vec![message], "reload");
        Ok(())
    }

    /// Swaps the new state in, then sends each revision's message in order
    /// (serialized before the swap, so they follow it as closely as
    /// possible), then tells waiting writers.
    fn publish(&self, live: Live, messages: Vec<Arc<Encoded>>, how: &'static str) {
        self.syncs.get_or_create(&SyncLabels { how }).inc();
        self.env.publish(live, messages);
    }
}
