//! What every handler is given: the store, the live environments, the
//! token table, metrics, the optional evaluation cache and the limits.

use std::sync::Arc;
use std::time::Duration;

use guidon_protocol::Changes;
use guidon_protocol::api::TokenInfo;
use guidon_store::{Store, StoreError};

use crate::cache::EvalCache;
use crate::error::{ApiError, ApiResult};
use crate::live::{EnvState, Envs};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::tokens::Tokens;

/// How long a write waits for this instance to serve its revision before
/// answering that it is committed but not served yet (202).
pub(crate) const SERVE_WAIT: Duration = Duration::from_secs(5);

/// Where this instance's environments and tokens come from: its store
/// (`guidon serve`), or an upstream Guidon it relays (`guidon edge`).
#[derive(Debug)]
pub(crate) enum Backend {
    Store(Store),
    Edge(Arc<crate::edge::Upstream>),
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) backend: Backend,
    /// Experiment events: their own store (own SQLite file, or own pool);
    /// none on an edge (it forwards events upstream).
    pub(crate) events: Option<guidon_events::EventStore>,
    pub(crate) envs: Arc<Envs>,
    /// The token table of a store (empty on an edge, which asks its upstream).
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
    /// Served over TLS: session cookies are `Secure`.
    pub(crate) secure_cookies: bool,
    /// Failed sign-ins per account and address.
    pub(crate) logins: crate::people::LoginLimiter,
    /// The recent-contexts sample of the environments that opted in.
    pub(crate) sampler: crate::samples::Sampler,
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
    /// The store, for what only a server with one has (definitions,
    /// history, tokens, results).
    /// The experiment events' store; on an edge a 404 (it forwards events
    /// to its upstream, which reads them).
    pub(crate) fn events(&self) -> ApiResult<&guidon_events::EventStore> {
        self.events.as_ref().ok_or_else(|| {
            ApiError::NotFound(
                "this is a guidon edge: experiment results are its upstream's".into(),
            )
        })
    }

    pub(crate) fn store(&self) -> ApiResult<&Store> {
        match &self.backend {
            Backend::Store(store) => Ok(store),
            Backend::Edge(_) => Err(ApiError::NotFound(
                "this is a guidon edge: it serves evaluations, the SDK endpoints and events; \
                 ask its upstream for the rest"
                    .into(),
            )),
        }
    }

    /// The live token whose secret this is: from the token table, or on
    /// an edge from its upstream (a verdict cached for `--token-cache-ttl`).
    pub(crate) async fn authenticate(&self, secret: &str) -> ApiResult<Option<TokenInfo>> {
        match &self.backend {
            Backend::Store(_) => Ok(self.tokens.authenticate(secret)),
            Backend::Edge(upstream) => upstream.authenticate(secret, &self.metrics).await,
        }
    }

    /// Whether the token named `name` is still live (open streams end when not).
    pub(crate) fn token_is_live(&self, name: &str) -> bool {
        match &self.backend {
            Backend::Store(_) => self.tokens.is_live(name),
            Backend::Edge(upstream) => upstream.is_live(name),
        }
    }

    /// The live token whose OFREP event channel for `env` this is.
    pub(crate) fn token_by_channel(&self, env: &str, channel: &str) -> Option<TokenInfo> {
        match &self.backend {
            Backend::Store(_) => self.tokens.by_channel(env, channel),
            Backend::Edge(upstream) => upstream.by_channel(env, channel),
        }
    }

    /// The changes of `env` after `since`: from the store, or on an edge
    /// from the revisions it relayed (`TooOld` past them: take the document).
    pub(crate) async fn changes_since(
        &self,
        env: &EnvState,
        since: u64,
    ) -> Result<Changes, StoreError> {
        match &self.backend {
            Backend::Store(store) => store.changes_since(&env.name, since).await,
            Backend::Edge(upstream) => upstream.changes_since(env, since).await,
        }
    }

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
