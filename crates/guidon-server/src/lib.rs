//! `guidon serve`: the admin API, the evaluation API (with OpenFeature's
//! OFREP), the SDK endpoints and live streams (SSE and WebSocket), and
//! Prometheus metrics, over one store.
//!
//! Evaluations read the environment's current compiled Snapshot through an
//! `ArcSwap`, without locks; one sync task per environment keeps it at the
//! store's revision (this instance's writes handed over compiled by the
//! store, other instances' through the store's watching) and broadcasts
//! each revision to streams.
//!
//! Layers, each using only those below it: `live` (the environments
//! served; no HTTP), `tokens`, `cache`, `metrics`, `shutdown`; then `app`
//! (what handlers are given) and `error`; then `auth` and `body` (request
//! extractors); then the handlers (`admin`, `eval`, `sdk`, `experiments`)
//! and `openapi`; this file wires them. `testing` (the `test-support`
//! feature) is the test harness the server's, the SDK's and the CLI's tests
//! share; it is never part of `guidon serve`.

mod admin;
mod app;
mod auth;
mod body;
mod cache;
mod conditional;
mod console;
mod cors;
pub mod edge;
mod error;
mod eval;
mod experiments;
#[doc(hidden)]
pub mod fuzzing;
mod history;
mod listener;
mod live;
mod metrics;
mod ofrep_events;
mod openapi;
mod patch;
mod people;
mod preview;
mod raw_stream;
mod release;
mod samples;
mod schedule;
mod sdk;
mod shutdown;
#[cfg(feature = "test-support")]
pub mod testing;
mod tls;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use error::ErrorBody;
use guidon_protocol::api::Role;
use guidon_store::{Store, StoreOptions, secret_hash};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use app::{AppState, Limits};
pub use auth::{ENV_HEADER, generate_secret};
pub use error::ApiError;
pub use listener::{ConnLimits, DEFAULT_SEND_BUFFER};
use shutdown as tokio_util_shutdown;
pub use tls::{TlsError, TlsFiles};

/// How `guidon serve` runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub database_url: String,
    /// The experiment event store (`--events-database-url`); `None`: next
    /// to the flag store's (`guidon_events::events_url`: on SQLite
    /// `guidon.db` → `guidon-events.db`, on PostgreSQL the same database
    /// through a pool of its own).
    pub events_database_url: Option<String>,
    /// Becomes an admin token on start (`GUIDON_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// With `admin_password` (`GUIDON_ADMIN_USER`, default `admin`): this
    /// person exists, admin of every environment, from the start.
    pub admin_user: String,
    /// `GUIDON_ADMIN_PASSWORD`: see `admin_user`.
    pub admin_password: Option<String>,
    /// Interval of stream heartbeats (SSE comments, WebSocket pings).
    pub heartbeat: Duration,
    /// Cache remote evaluation results (see `BENCHMARKS.md`: off by default).
    pub eval_cache: bool,
    pub max_body: usize,
    /// How often the store is polled for other instances' commits.
    pub poll_interval: Duration,
    /// How many revisions back catch-up answers (`/sdk/changes`, stream
    /// resumption); further back clients take the full flag file.
    pub catch_up_horizon: u64,
    /// The bounds of every connection: count and timeouts.
    pub connections: ConnLimits,
    /// A second address serving `/metrics` alone and without a token
    /// (`--metrics-listen`), for a scraper on a private network.
    pub metrics_listen: Option<String>,
    /// Serve HTTPS with this certificate and key (`--tls-cert`,
    /// `--tls-key`); see [`Running::reload_tls`]. The metrics address
    /// stays plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Origins whose pages may call OFREP, evaluate and send events
    /// (`--cors-origin`); none: no CORS.
    pub cors_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://guidon.db".into(),
            events_database_url: None,
            admin_token: None,
            admin_user: "admin".into(),
            admin_password: None,
            heartbeat: Duration::from_secs(15),
            eval_cache: false,
            max_body: Limits::default().max_body,
            poll_interval: StoreOptions::default().poll_interval,
            catch_up_horizon: StoreOptions::default().catch_up_horizon,
            connections: ConnLimits::default(),
            metrics_listen: None,
            tls: None,
            cors_origins: Vec::new(),
        }
    }
}

/// The shortest secret `GUIDON_ADMIN_TOKEN` may be: 16 characters, as the
/// generated ones (32 hex digits) are far longer.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a server could not start or stopped. Each message is one line that
/// names the thing at fault and carries its cause in the text (no
/// `source()` chain, so printing the chain does not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the database {url}: {error}")]
    Open {
        url: String,
        error: guidon_store::StoreError,
    },
    #[error("cannot open the events database {url}: {error}")]
    OpenEvents {
        url: String,
        error: guidon_events::EventsError,
    },
    #[error("database: {0}")]
    Store(guidon_store::StoreError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error("GUIDON_ADMIN_TOKEN: {0}")]
    AdminToken(String),
    #[error("{0}")]
    AdminUser(String),
    #[error("--cors-origin {0}")]
    Cors(String),
    #[error("cannot generate a token: {0}")]
    Random(String),
    #[error("{0}")]
    Tls(TlsError),
    #[error("server error: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ServeError {
    fn from(e: std::io::Error) -> ServeError {
        ServeError::Io(e)
    }
}

/// A started server: its address, and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served without a token, with `metrics_listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin token generated on first start, if one was (shown once).
    pub generated_admin_token: Option<String>,
    tls: Option<Arc<tls::Tls>>,
    trigger: tokio_util_shutdown::Trigger,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    /// Begins a graceful shutdown (streams end, requests finish) and waits.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.trigger.fire();
        self.task
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    /// Waits until the server stops (after [`Running::trigger`] or an error).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the certificate and key files again and serves them to new
    /// connections (open ones keep theirs); on error the previous
    /// certificate stays. `Ok(false)` without TLS (nothing to reload).
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        reload_tls(self.tls.as_deref())
    }

    /// A handle that reloads the certificate when called
    /// ([`Running::reload_tls`]), for a signal handler.
    pub fn tls_reloader(&self) -> impl Fn() -> Result<bool, TlsError> + Send + Sync + 'static {
        let tls = self.tls.clone();
        move || reload_tls(tls.as_deref())
    }

    /// A handle that begins a graceful shutdown when called.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let trigger = self.trigger.clone_trigger();
        move || trigger.fire()
    }
}

fn reload_tls(tls: Option<&tls::Tls>) -> Result<bool, TlsError> {
    match tls {
        Some(tls) => tls.reload().map(|()| true),
        None => Ok(false),
    }
}

/// The application without a listener (for handler tests with
/// `tower::ServiceExt::oneshot`): opens the store, makes sure an admin token
/// exists, loads every environment and starts following the store.
pub async fn app(config: Config) -> Result<axum::Router, ServeError> {
    let (router, _state, trigger, _) = build(&config).await?;
    // Streams and the follower end when the trigger is dropped: keep it as
    // long as the router lives.
    Ok(router.layer(axum::Extension(Arc::new(trigger))))
}

type Built = (
    Router,
    Arc<AppState>,
    tokio_util_shutdown::Trigger,
    Option<String>,
);

impl From<guidon_store::StoreError> for ServeError {
    fn from(e: guidon_store::StoreError) -> ServeError {
        ServeError::Store(e)
    }
}

/// What can be refused before anything is opened or created.
fn check_config(config: &Config) -> Result<(), ServeError> {
    if let Some(secret) = config.admin_token.as_deref().filter(|s| !s.is_empty()) {
        let length = secret.chars().count();
        if length < MIN_SECRET_LEN {
            return Err(ServeError::AdminToken(format!(
                "the secret is {length} characters long, and must be at least {MIN_SECRET_LEN} \
                 (for example 32 random hex digits: openssl rand -hex 16)"
            )));
        }
    }
    cors::parse_origins(&config.cors_origins).map_err(ServeError::Cors)?;
    Ok(())
}

/// `url` with any password replaced, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) if credentials.contains(':') => {
                let user = credentials.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

async fn build(config: &Config) -> Result<Built, ServeError> {
    check_config(config)?;
    let store = Store::open_with(
        &config.database_url,
        StoreOptions {
            poll_interval: config.poll_interval,
            catch_up_horizon: config.catch_up_horizon,
        },
    )
    .await
    .map_err(|error| ServeError::Open {
        url: redacted(&config.database_url),
        error,
    })?;
    let events_url = config
        .events_database_url
        .clone()
        .unwrap_or_else(|| guidon_events::events_url(&config.database_url));
    let events = guidon_events::EventStore::open(&events_url)
        .await
        .map_err(|error| ServeError::OpenEvents {
            url: redacted(&events_url),
            error,
        })?;
    let cors_origins = cors::parse_origins(&config.cors_origins).map_err(ServeError::Cors)?;
    let generated_admin_token = bootstrap_admin(&store, config.admin_token.as_deref()).await?;
    if let Some(password) = config.admin_password.as_deref().filter(|p| !p.is_empty())
        && people::bootstrap_user(&store, &config.admin_user, password)
            .await
            .map_err(ServeError::AdminUser)?
    {
        tracing::info!(user = %config.admin_user, "admin person created (GUIDON_ADMIN_PASSWORD)");
    }
    let tokens = tokens::Tokens::load(&store).await?;
    let (trigger, shutdown) = tokio_util_shutdown::channel();
    let metrics = metrics::Metrics::default();
    let state = Arc::new(AppState {
        envs: Arc::new(live::Envs::new(
            store.clone(),
            shutdown.clone(),
            metrics.syncs.clone(),
        )),
        backend: app::Backend::Store(store.clone()),
        events: Some(events),
        tokens,
        metrics,
        cache: config.eval_cache.then(cache::EvalCache::default),
        limits: Limits {
            max_body: config.max_body,
            body_timeout: config.connections.body_timeout,
            ..Limits::default()
        },
        shutdown,
        heartbeat: config.heartbeat,
        cors: cors::layer(&cors_origins),
        cors_origins,
        secure_cookies: config.tls.is_some(),
        logins: people::LoginLimiter::default(),
        sampler: samples::Sampler::default(),
    });
    state.sampler.refresh(&store).await?;
    for env in store.list_envs().await? {
        state.envs.get(&env.name).await.map_err(|e| {
            ServeError::Io(std::io::Error::other(format!(
                "loading environment {:?}: {e}",
                env.name
            )))
        })?;
    }
    tokio::spawn(live::follow(state.envs.clone()));
    tokio::spawn(refresh_tokens(state.clone()));
    tokio::spawn(samples::run(state.clone()));
    tokio::spawn(schedule::run(state.clone(), instance_name()));
    Ok((router(state.clone()), state, trigger, generated_admin_token))
}

/// Opens the store, makes sure an admin token exists, binds and serves in
/// the background.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    // Refusals, the certificate and the listener first: a start that
    // fails on them opens (and so creates) no database.
    check_config(&config)?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(tls::Tls::load(files).map_err(ServeError::Tls)?)),
        None => None,
    };
    let listener = bind(&config.listen).await?;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let (app, state, trigger, generated_admin_token) = build(&config).await?;
    if let Some((soft, _)) = listener::raise_open_file_limit() {
        let wanted = u64::try_from(config.connections.max_connections).unwrap_or(u64::MAX);
        if wanted.saturating_add(64) > soft {
            tracing::warn!(
                max_connections = wanted,
                open_file_limit = soft,
                "the open-file limit is below --max-connections: the limit will be reached first"
            );
        }
    }
    let addr = listener.local_addr()?;
    let shutdown = state.shutdown.clone();
    let limits = config.connections;
    let metrics_addr = match metrics_listener {
        Some(metrics_listener) => {
            let metrics_addr = metrics_listener.local_addr()?;
            let metrics_app = Router::new()
                .route("/metrics", get(metrics_text))
                .fallback(|| async {
                    ApiError::NotFound("this address serves /metrics only".into())
                })
                .with_state(state.clone());
            let shutdown = state.shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    listener::serve(metrics_listener, metrics_app, limits, None, shutdown).await
                {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
            tracing::info!(addr = %metrics_addr, "guidon serving /metrics without a token");
            Some(metrics_addr)
        }
        None => None,
    };
    let served_tls = tls.clone();
    let task = tokio::spawn(async move {
        // One router for all connections (cloned per connection: an Arc).
        let result = listener::serve(listener, app, limits, served_tls, shutdown).await;
        if let app::Backend::Store(store) = &state.backend {
            store.close().await;
        }
        result
    });
    tracing::info!(%addr, tls = tls.is_some(), "guidon serving");
    Ok(Running {
        addr,
        metrics_addr,
        generated_admin_token,
        tls,
        trigger,
        task,
    })
}

/// Binds `addr`, or says which address could not be.
pub(crate) async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServeError::Listen {
            addr: addr.to_owned(),
            error,
        })
}

/// `GUIDON_ADMIN_TOKEN` becomes an admin token; without it, and with no
/// admin token in the store, one is generated and returned (to be shown once).
async fn bootstrap_admin(store: &Store, given: Option<&str>) -> Result<Option<String>, ServeError> {
    if let Some(secret) = given.filter(|s| !s.is_empty()) {
        let hash = secret_hash(secret);
        let known = store
            .live_tokens()
            .await?
            .into_iter()
            .any(|(h, info)| h == hash && info.role == Role::Admin);
        if !known {
            let taken = token_names(store).await?;
            let name = free_name("admin-from-env", &taken);
            store
                .create_token(&name, Role::Admin, None, secret)
                .await
                .map_err(|e| {
                    ServeError::AdminToken(format!(
                        "{e} (a revoked secret cannot become a token again; choose another)"
                    ))
                })?;
        }
        return Ok(None);
    }
    if store.has_admin_token().await? {
        return Ok(None);
    }
    let secret = generate_secret().map_err(|e| ServeError::Random(e.to_string()))?;
    let taken = token_names(store).await?;
    let name = free_name("admin", &taken);
    store
        .create_token(&name, Role::Admin, None, &secret)
        .await?;
    Ok(Some(secret))
}

async fn token_names(store: &Store) -> Result<Vec<String>, ServeError> {
    Ok(store
        .list_tokens()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect())
}

/// `base`, or `base-2`, `base-3`… whichever no token has.
fn free_name(base: &str, taken: &[String]) -> String {
    std::iter::once(base.to_owned())
        .chain((2..).map(|i| format!("{base}-{i}")))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| base.to_owned())
}

/// This process among the instances sharing a database: its process id
/// and a random suffix, recorded on the scheduled changes it applies.
fn instance_name() -> String {
    let mut bytes = [0_u8; 4];
    let suffix = match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => 0,
    };
    format!("instance-{}-{suffix:08x}", std::process::id())
}

async fn refresh_tokens(state: Arc<AppState>) {
    let app::Backend::Store(store) = &state.backend else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(tokens::TOKEN_REFRESH) => {}
            () = state.shutdown.wait() => return,
        }
        let used = state.tokens.take_used();
        if !used.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            if let Err(e) = store.mark_tokens_used(&used, now).await {
                tracing::warn!(error = %e, "could not record token use");
            }
        }
        if let Err(e) = state.tokens.refresh(store).await {
            tracing::warn!(error = %e, "could not refresh tokens");
        }
    }
}

/// Every route.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body;
    // An edge has no definitions to administer: what needs the store is
    // its upstream's.
    let admin = match state.backend {
        // People sign in against the store, and the console administers it.
        app::Backend::Store(_) => admin::routes()
            .merge(people::routes())
            .merge(console::routes()),
        app::Backend::Edge(_) => Router::new(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_with_token))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(admin)
        .merge(eval::routes())
        .merge(preview::routes())
        .merge(samples::routes())
        .merge(history::routes())
        .merge(ofrep_events::routes())
        .merge(sdk::routes())
        .merge(experiments::routes())
        .route(
            "/api/v1/envs/{env}/flags/{key}/schedule",
            axum::routing::post(schedule::schedule),
        )
        .route("/api/v1/envs/{env}/schedules", get(schedule::list))
        .route(
            "/api/v1/envs/{env}/flags/{key}/release",
            get(release::get_one).put(release::start),
        )
        .route(
            "/api/v1/envs/{env}/flags/{key}/release/{action}",
            axum::routing::post(release::act),
        )
        .route(
            "/api/v1/envs/{env}/schedules/{id}",
            get(schedule::get_one).delete(schedule::cancel),
        )
        .fallback(|| async {
            ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into())
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"error": "method_not_allowed", "message": "method not allowed on this endpoint"})),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        // One layer for both (each `from_fn` layer costs a boxed future
        // and a clone of the service below it per request).
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(middleware::from_fn_with_state(state.clone(), cors::gate))
        .with_state(state)
}

/// `{"status": "ok"}` while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    summary = "Liveness: the process answers",
    security(()),
    responses((status = 200, description = "Alive", body = Status))
)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// What `/healthz` and `/readyz` answer, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct Status {
    /// `ok` (`/healthz`); `ready`, `degraded` (the database is away: the
    /// last state is served, writes fail) or `loading` (`/readyz`).
    status: String,
    /// `ok`, or why the database does not answer.
    database: Option<String>,
    /// How many environments are loaded (ready).
    environments: Option<usize>,
    /// The environment that failed to load, and why (loading).
    environment: Option<String>,
    error: Option<String>,
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    summary = "Readiness: the database answers and every environment is loaded",
    security(()),
    responses((status = 200, description = "Ready; or degraded: the database is away, the last state is served and writes fail", body = Status), (status = 503, description = "Not ready: an environment does not load", body = Status))
)]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let store = match &state.backend {
        app::Backend::Store(store) => store,
        app::Backend::Edge(upstream) => return upstream.readyz(&state.envs).into_response(),
    };
    let envs = match store.list_envs().await {
        Ok(envs) => envs,
        // The database away: evaluations, the document and streams still
        // serve what this instance loaded (it could not have started
        // without), so it stays in rotation; writes fail with a 503. A load
        // balancer routing on /readyz must not pull every instance at once.
        Err(e) => {
            return Json(json!({
                "status": "degraded",
                "database": e.to_string(),
                "environments": state.envs.all().len(),
            }))
            .into_response();
        }
    };
    // Every environment loaded and compiled (one created through another
    // instance is loaded here on first use).
    for env in &envs {
        if let Err(e) = state.env(&env.name).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "loading", "environment": env.name, "error": e.to_string()})),
            )
                .into_response();
        }
    }
    Json(json!({"status": "ready", "database": "ok", "environments": envs.len()})).into_response()
}

/// `GET /metrics` on the main listener: with a metrics or an admin token
/// (the metrics name every flag and environment). `--metrics-listen`
/// serves them without one on an address of its own.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    summary = "Prometheus metrics (OpenMetrics text); also without a token on --metrics-listen",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Neither a metrics nor an admin token", body = ErrorBody))
)]
pub(crate) async fn metrics_with_token(
    State(state): State<Arc<AppState>>,
    caller: auth::Caller,
) -> Response {
    match caller.require_metrics() {
        Ok(()) => metrics_text(State(state)).await,
        Err(e) => e.into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// A JSON 431 for a request head past [`listener::MAX_HEADER_BYTES`] or
/// [`listener::MAX_HEADERS`]; the body's deadline for the rest.
async fn bounded_request(state: &AppState, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let uri = req.uri();
    let bytes = req.method().as_str().len()
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if headers.len() > listener::MAX_HEADERS {
        return ApiError::HeadersTooLarge {
            limit: format!("{} headers", listener::MAX_HEADERS),
        }
        .into_response();
    }
    if bytes > listener::MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge {
            limit: format!("{} bytes", listener::MAX_HEADER_BYTES),
        }
        .into_response();
    }
    listener::deadline_body(state.limits.body_timeout, req, next).await
}

/// Counts every request by route, method and status, bounded as
/// [`bounded_request`] says.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = metrics::Metrics::method_label(req.method()).to_owned();
    let response = bounded_request(&state, req, next).await;
    state
        .metrics
        .http_requests
        .get_or_create(&metrics::HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
