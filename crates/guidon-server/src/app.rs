//! What every handler is given: the store, the live environments, the
//! token table, metrics, the optional evaluation cache and the limits.

use std::sync::Arc;
use std::time::Duration;

use guidon_store::Store;

use crate::cache::EvalCache;
use crate::error::ApiResult;
use crate::live::{EnvState, Envs};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::tokens::Tokens;

/// How long a write waits for this instance to serve its revision before
/// answering that it is committed but not served yet (202).
pub(crate) const SERVE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    /// Experiment events: their own store (own SQLite file, or own pool).
    pub(crate) events: guidon_events::EventStore,
    pub(crate) envs: Arc<Envs>,
    pub(crate) tokens: Tokens,
    pub(crate) metrics: Metrics,
    pub(crate) cache: Option<EvalCache>,
    pub(crate) limits: Limits,
    pub(crate) shutdown: Shutdown,
    /// Interval of stream heartbeats.
    pub(crate) heartbeat: Duration,
    /// `--cors-origin`, checked.
    pub(crate) cors_origins: Vec<axum::http::HeaderValue>,
    /// The CORS layer for them (`None` without origins).
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest accepted request body (bulk flag files included).
    pub(crate) max_body: usize,
    /// Most attributes in one evaluation context.
    pub(crate) max_context_attributes: usize,
    /// How long a request body may take to arrive whole.
    pub(crate) body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 4 * 1024 * 1024,
            max_context_attributes: 256,
            body_timeout: crate::listener::ConnLimits::default().body_timeout,
        }
    }
}

impl AppState {
    /// The environment's live state, loading it on first use.
    pub(crate) async fn env(&self, name: &str) -> ApiResult<Arc<EnvState>> {
        Ok(self.envs.get(name).await?)
    }

    /// Waits until this instance serves `revision` of `env`: a write
    /// answers once its author can read it here. False when it does not
    /// within [`SERVE_WAIT`] (the write is committed all the same).
    pub(crate) async fn served(&self, env: &str, revision: u64) -> bool {
        match self.envs.get(env).await {
            Ok(live) => live.served(revision, SERVE_WAIT).await,
            Err(e) => {
                tracing::warn!(env, revision, error = %e, "committed, but this instance cannot load the environment");
                false
            }
        }
    }
}
