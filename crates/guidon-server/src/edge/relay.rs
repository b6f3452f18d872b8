//! One environment relayed: the SDK's sync follows the upstream, and each
//! step it takes becomes this edge's live state of the environment, with
//! the upstream's revisions passed on to the edge's streams as they came
//! (a whole document as a snapshot message).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guidon_client::{Applied, Client, EventOptions, Status};
use tokio::sync::mpsc;

use super::Upstream;
use crate::app::AppState;
use crate::live::Live;
use crate::metrics::{EnvLabels, SyncLabels};

/// What one relay follows.
pub(super) struct Follow {
    pub(super) env: String,
    pub(super) url: String,
    pub(super) token: String,
    /// The saved snapshot: served at start when the upstream cannot be reached.
    pub(super) snapshot: PathBuf,
    pub(super) heartbeat: Duration,
    pub(super) ca_certificate_pem: Option<Vec<u8>>,
}

pub(super) async fn run(state: Arc<AppState>, upstream: Arc<Upstream>, follow: Follow) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let env = follow.env.clone();
    let mut builder = Client::builder(&follow.url, &follow.token);
    if let Some(pem) = &follow.ca_certificate_pem {
        builder = builder.ca_certificate_pem(pem.clone());
    }
    let built = builder
        .environment(&follow.env)
        .snapshot_path(&follow.snapshot)
        .heartbeat(follow.heartbeat)
        // A relay reconnects sooner than an application would: it serves many.
        .backoff(Duration::from_millis(250), Duration::from_secs(5))
        .poll_interval(Duration::from_secs(2))
        .fallback_to_polling(5, Duration::from_secs(10))
        .start_timeout(Duration::from_millis(100))
        .events(EventOptions {
            enabled: false,
            ..EventOptions::default()
        })
        .relay(tx)
        .build()
        .await;
    let client = match built {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(env = %env, error = %e, "cannot follow the upstream");
            upstream.set_follow(&env, Status::Error, Some(e.to_string()));
            return;
        }
    };
    let mut status = client.watch_status();
    let labels = EnvLabels { env: env.clone() };
    // Also once a second: how long it has been stale.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        report(&state, &upstream, &client, &labels);
        tokio::select! {
            _ = tick.tick() => {}
            applied = rx.recv() => match applied {
                Some(applied) => step(&state, &upstream, &env, applied).await,
                None => return,
            },
            changed = status.changed() => if changed.is_err() { return },
            () = state.shutdown.wait() => {
                let _ = client.close().await;
                return;
            }
        }
    }
}

fn report(state: &AppState, upstream: &Upstream, client: &Client, labels: &EnvLabels) {
    let status = client.status();
    let error = match status {
        Status::Ready => None,
        Status::Error => client.last_error(),
        Status::Stale => {
            Some("the upstream cannot be reached: serving the last known state".into())
        }
        Status::Starting => Some("the upstream has not answered yet".into()),
    };
    let stale = upstream.set_follow(&labels.env, status, error);
    let edge = &state.metrics.edge;
    edge.upstream_connected
        .get_or_create(labels)
        .set(i64::from(status == Status::Ready));
    edge.stale_seconds
        .get_or_create(labels)
        .set(i64::try_from(stale.as_secs()).unwrap_or(i64::MAX));
}

/// Makes one step of the sync this edge's live state, and passes its
/// revisions on to the streams.
async fn step(state: &AppState, upstream: &Upstream, env: &str, applied: Applied) {
    let live = Live::new(applied.document.clone(), applied.snapshot.clone());
    let revision = live.revision;
    upstream.record(env, live.epoch, revision, &applied.updates);
    state
        .metrics
        .edge
        .revision
        .get_or_create(&EnvLabels {
            env: env.to_owned(),
        })
        .set(i64::try_from(revision).unwrap_or(i64::MAX));
    let how = if applied.updates.is_empty() {
        "relay_document"
    } else {
        "relay_update"
    };
    state.metrics.syncs.get_or_create(&SyncLabels { how }).inc();
    match state.envs.loaded(env) {
        None => {
            state.envs.relayed(env, live).await;
        }
        Some(served) => {
            let messages = if applied.updates.is_empty() {
                vec![Arc::new(live.encoded().clone())]
            } else {
                applied
                    .updates
                    .iter()
                    .map(|u| Arc::new(u.encode()))
                    .collect()
            };
            served.publish(live, messages);
        }
    }
}
