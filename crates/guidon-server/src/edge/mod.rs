//! `guidon edge`: a relay in front of an upstream Guidon.
//!
//! It follows each relayed environment with the SDK's own sync
//! (`guidon_client`: stream, gap filling, polling fallback, saved
//! snapshot), and hands every step to the same live state `guidon serve`
//! keeps ([`crate::live`]), so the same handlers serve OFREP, evaluate,
//! `/sdk/flags`, `/sdk/changes` and the streams with the upstream's
//! revisions and ETags. What a server reads from its store, an edge asks
//! its upstream ([`crate::app::Backend::Edge`]): tokens (`verdicts.rs`, a
//! verdict cached for `--token-cache-ttl`), the changes after a revision
//! (from the revisions it relayed), and events go upstream through a
//! durable outbox (`forward.rs`).
//!
//! ```text
//! upstream ──SSE (guidon_client sync)──▶ relay.rs ──Live + messages──▶ EnvState::publish
//!                                                                          │
//!   OFREP, /evaluate, /sdk/flags, /sdk/changes, SSE, WebSocket ◀───────────┘ (unchanged handlers)
//!   POST /api/v1/events ──checked──▶ Outbox (SQLite, durable) ──forward.rs──▶ upstream
//!   a token ──verdicts.rs (cached ttl)──▶ upstream POST /api/v1/auth/verify
//! ```

mod forward;
mod relay;
mod verdicts;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use guidon_client::Status;
use guidon_client::admin::{AdminClient, AdminError, Role};
use guidon_protocol::api::TokenInfo;
use guidon_protocol::{Changes, Update};
use guidon_store::{EdgeStore, StoreError};
use serde_json::{Value, json};

use crate::app::{AppState, Backend, Limits};
use crate::error::{ApiError, ApiResult};
use crate::listener::{self, ConnLimits};
use crate::live::{EnvState, Envs};
use crate::{Running, ServeError, cors, metrics, shutdown};

/// How `guidon edge` runs.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub listen: String,
    /// The upstream Guidon (`http://host:port`).
    pub upstream: String,
    /// An admin token of the upstream: it follows every relayed
    /// environment, verifies callers' tokens and delivers events.
    pub token: String,
    /// The environments relayed.
    pub envs: Vec<String>,
    /// Where the saved snapshots and the events outbox are kept.
    pub data_dir: PathBuf,
    /// How long a token's verdict is trusted before the upstream is asked
    /// again: a revoked token stops working within it.
    pub token_cache_ttl: Duration,
    /// Heartbeats of the edge's own streams.
    pub heartbeat: Duration,
    /// The upstream's heartbeat (its `--heartbeat-secs`): its stream silent
    /// for two is dead.
    pub upstream_heartbeat: Duration,
    pub connections: ConnLimits,
    pub max_body: usize,
    pub cors_origins: Vec<String>,
    /// CA certificates (PEM) to trust for an `https://` upstream, besides
    /// the system's roots.
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// The most events the outbox holds while the upstream cannot take
    /// them; past it a batch is refused (503), never acknowledged.
    pub max_buffered_events: u64,
}

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            listen: "127.0.0.1:8081".into(),
            upstream: String::new(),
            token: String::new(),
            envs: Vec::new(),
            data_dir: PathBuf::from("guidon-edge"),
            token_cache_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            upstream_heartbeat: Duration::from_secs(15),
            connections: ConnLimits::default(),
            max_body: Limits::default().max_body,
            cors_origins: Vec::new(),
            ca_certificate_pem: None,
            max_buffered_events: 1_000_000,
        }
    }
}

/// Why an edge could not start: one line naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("--env: name at least one environment to relay")]
    NoEnvironment,
    #[error("--upstream {url}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("the upstream {url} refuses the edge's token: {reason}")]
    Token { url: String, reason: String },
    #[error("the upstream {url} has no environment {env:?} (it has: {has})")]
    UnknownEnv {
        url: String,
        env: String,
        has: String,
    },
    #[error("--data-dir {path}: {error}")]
    DataDir { path: String, error: String },
    #[error("{0}")]
    Serve(#[from] ServeError),
}

/// How many relayed revisions per environment `/sdk/changes` and stream
/// resumption answer from; further back a client takes the document.
const LOG_REVISIONS: usize = 1024;

/// The revisions an edge relayed of one environment, after `base`.
#[derive(Debug, Default)]
struct Log {
    epoch: i64,
    base: u64,
    updates: VecDeque<Update>,
}

/// How a relayed environment follows its upstream.
#[derive(Debug, Clone)]
struct Following {
    status: Status,
    /// Why it is not current.
    error: Option<String>,
    /// Since when it is not current (`None` while it is).
    stale_since: Option<std::time::Instant>,
}

/// An edge's side of [`Backend::Edge`]: its upstream, and what it keeps of it.
#[derive(Debug)]
pub(crate) struct Upstream {
    url: String,
    admin: AdminClient,
    verdicts: verdicts::Verdicts,
    logs: Mutex<HashMap<String, Log>>,
    /// Each relayed environment's follow.
    follows: Mutex<HashMap<String, Following>>,
    /// Why the upstream could not be reached at start, until it answers.
    unreached: Mutex<Option<String>>,
    /// The events outbox and the kept verdicts.
    pub(crate) outbox: EdgeStore,
    /// Told when a batch is buffered.
    pushed: tokio::sync::Notify,
    /// Events in the outbox (as last measured, plus those buffered since),
    /// and the most it may hold (`--max-buffered-events`).
    buffered: AtomicU64,
    max_buffered: u64,
}

impl Upstream {
    pub(crate) async fn authenticate(
        &self,
        secret: &str,
        metrics: &metrics::Metrics,
    ) -> ApiResult<Option<TokenInfo>> {
        self.verdicts
            .authenticate(&self.admin, secret, metrics)
            .await
    }

    pub(crate) fn is_live(&self, name: &str) -> bool {
        self.verdicts.is_live(name)
    }

    pub(crate) fn by_channel(&self, env: &str, channel: &str) -> Option<TokenInfo> {
        self.verdicts.by_channel(env, channel)
    }

    /// The changes of `env` after `since`, up to the revision this edge
    /// serves: from the revisions it relayed, else from the upstream's
    /// `/sdk/changes`; `TooOld` (take the document) when neither has them.
    pub(crate) async fn changes_since(
        &self,
        env: &EnvState,
        since: u64,
    ) -> Result<Changes, StoreError> {
        match self.relayed_since(env, since) {
            Err(too_old @ StoreError::TooOld { .. }) => {
                let live = env.live.load_full();
                match self.ask_changes(&env.name, since).await {
                    Some(mut changes) if changes.epoch == Some(live.epoch) => {
                        // Not past what this edge serves: its streams go on from there.
                        changes.changes.retain(|c| c.revision() <= live.revision);
                        changes.revision = live.revision;
                        Ok(changes)
                    }
                    _ => Err(too_old),
                }
            }
            other => other,
        }
    }

    /// The upstream's `/sdk/changes?since=`, when it answers with them
    /// within 5 s (a stream opening waits for it: past that it gets the
    /// document).
    async fn ask_changes(&self, env: &str, since: u64) -> Option<Changes> {
        tokio::time::timeout(Duration::from_secs(5), self.admin.changes_since(env, since))
            .await
            .ok()?
            .ok()
    }

    /// The relayed revisions of `env` after `since`, up to what it serves.
    fn relayed_since(&self, env: &EnvState, since: u64) -> Result<Changes, StoreError> {
        let live = env.live.load();
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let empty = Log::default();
        let log = logs.get(&env.name).unwrap_or(&empty);
        if since < log.base || log.epoch != live.epoch {
            return Err(StoreError::TooOld {
                since,
                oldest: log.base,
            });
        }
        let changes = log
            .updates
            .iter()
            .filter(|u| u.revision > since && u.revision <= live.revision)
            .flat_map(|u| u.changes.iter().cloned())
            .collect();
        Ok(Changes {
            revision: live.revision,
            epoch: Some(live.epoch),
            changes,
        })
    }

    /// Keeps what a step of the relay brought, for [`Upstream::changes_since`].
    fn record(&self, env: &str, epoch: i64, revision: u64, updates: &[Update]) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let log = logs.entry(env.to_owned()).or_default();
        let continues = log.epoch == epoch
            && updates.first().is_some_and(|u| {
                u.revision == log.updates.back().map_or(log.base, |l| l.revision) + 1
            });
        if !continues {
            // A whole document (or anything that does not follow on):
            // the log starts again after it.
            *log = Log {
                epoch,
                base: revision,
                updates: VecDeque::new(),
            };
            return;
        }
        log.updates.extend(updates.iter().cloned());
        while log.updates.len() > LOG_REVISIONS {
            if let Some(first) = log.updates.pop_front() {
                log.base = first.revision;
            }
        }
    }

    /// Buffers accepted events durably for delivery upstream: once this
    /// returns they survive a restart of the edge.
    pub(crate) async fn buffer(
        &self,
        env: &str,
        events: &[Value],
        metrics: &metrics::Metrics,
    ) -> ApiResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let text = serde_json::to_string(events).map_err(|e| ApiError::Internal(e.to_string()))?;
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let before = self.buffered.fetch_add(count, Ordering::Relaxed);
        if before.saturating_add(count) > self.max_buffered {
            self.buffered.fetch_sub(count, Ordering::Relaxed);
            return Err(ApiError::Unavailable(format!(
                "this edge's events buffer is full ({before} events wait for the upstream, \
                 at most {}): nothing of this batch was taken; retry later",
                self.max_buffered
            )));
        }
        if let Err(e) = self.outbox.push(env, &text, count).await {
            self.buffered.fetch_sub(count, Ordering::Relaxed);
            return Err(ApiError::Unavailable(format!(
                "this edge cannot buffer the events: {e}"
            )));
        }
        // The forwarder measures the outbox again after each delivery.
        let buffered = self.buffered.load(Ordering::Relaxed);
        metrics
            .edge
            .events_buffered
            .set(i64::try_from(buffered).unwrap_or(i64::MAX));
        self.pushed.notify_one();
        Ok(())
    }

    /// Records how `env` follows; how long it has not been current.
    fn set_follow(&self, env: &str, status: Status, error: Option<String>) -> Duration {
        let mut follows = self.follows.lock().unwrap_or_else(|e| e.into_inner());
        let stale_since = match (status, follows.get(env)) {
            (Status::Ready, _) => None,
            (_, Some(before)) if before.stale_since.is_some() => before.stale_since,
            _ => Some(std::time::Instant::now()),
        };
        follows.insert(
            env.to_owned(),
            Following {
                status,
                error,
                stale_since,
            },
        );
        if status == Status::Ready {
            *self.unreached.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        stale_since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// `/readyz` of an edge: 200 `ready` when every environment follows
    /// its upstream; 200 `degraded` while one serves its last known state
    /// (the upstream away: still in rotation); 503 `starting` while one has
    /// no state at all (no saved snapshot, upstream not reached yet).
    pub(crate) fn readyz(&self, envs: &Envs) -> (StatusCode, Json<Value>) {
        let follows = self
            .follows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut all_loaded = true;
        let mut all_current = true;
        let mut report = serde_json::Map::new();
        for name in envs.relays() {
            let following = follows.get(name).cloned().unwrap_or(Following {
                status: Status::Starting,
                error: None,
                stale_since: None,
            });
            let status = following.status;
            let loaded = envs.loaded(name);
            all_loaded &= loaded.is_some();
            all_current &= status == Status::Ready;
            report.insert(
                name.clone(),
                json!({
                    "status": match status {
                        Status::Ready => "current",
                        Status::Stale => "stale",
                        Status::Error => "error",
                        Status::Starting => "starting",
                    },
                    "revision": loaded.map(|e| e.live.load().revision),
                    "stale_secs": following.stale_since.map(|s| s.elapsed().as_secs()),
                    "error": following.error,
                }),
            );
        }
        let unreached = self
            .unreached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (code, status) = if !all_loaded {
            (StatusCode::SERVICE_UNAVAILABLE, "starting")
        } else if !all_current {
            (StatusCode::OK, "degraded")
        } else {
            (StatusCode::OK, "ready")
        };
        (
            code,
            Json(json!({
                "status": status,
                "upstream": self.url,
                "upstream_error": unreached,
                "environments": report,
            })),
        )
    }
}

/// What the upstream said at start.
enum Probe {
    Reached,
    Unreachable(String),
}

/// Checks the upstream and the token before anything starts: a wrong URL,
/// a token it refuses or an environment it does not have is an error; an
/// upstream that does not answer is retried (the edge starts and says so).
async fn probe(admin: &AdminClient, config: &EdgeConfig) -> Result<Probe, EdgeError> {
    let url = config.upstream.clone();
    let upstream = |reason: String| EdgeError::Upstream {
        url: url.clone(),
        reason,
    };
    let answer =
        tokio::time::timeout(Duration::from_secs(10), admin.verify_token(&config.token)).await;
    let info = match answer {
        Err(_) => return Ok(Probe::Unreachable("no answer within 10 s".into())),
        Ok(Err(
            e @ (AdminError::Connect { .. }
            | AdminError::Timeout { .. }
            | AdminError::Request { .. }),
        )) => {
            return Ok(Probe::Unreachable(e.to_string()));
        }
        Ok(Err(AdminError::Refused { status: 401, .. })) => {
            return Err(EdgeError::Token {
                url,
                reason: "no live token has this secret (unknown or revoked)".into(),
            });
        }
        Ok(Err(AdminError::Refused { status: 403, body })) => {
            return Err(EdgeError::Token {
                url,
                reason: format!("{} (the edge needs an admin token)", body.message),
            });
        }
        Ok(Err(AdminError::Refused { status, body })) if status >= 500 => {
            return Ok(Probe::Unreachable(body.message));
        }
        Ok(Err(e @ AdminError::Certificate { .. })) => {
            return Err(upstream(format!("{e} (give its CA with --ca-cert PATH)")));
        }
        Ok(Err(e)) => {
            return Err(upstream(format!(
                "not a Guidon server that can have an edge: {e}"
            )));
        }
        Ok(Ok(None)) => {
            return Err(upstream(
                "it does not verify tokens (POST /api/v1/auth/verify): an older Guidon".into(),
            ));
        }
        Ok(Ok(Some(info))) => info,
    };
    if info.role != Role::Admin {
        return Err(EdgeError::Token {
            url,
            reason: format!(
                "it is a {} token; the edge needs an admin token",
                info.role.as_str()
            ),
        });
    }
    let has = admin
        .environments()
        .await
        .map_err(|e| upstream(e.to_string()))?
        .environments;
    for env in &config.envs {
        if !has.iter().any(|e| &e.name == env) {
            let names: Vec<&str> = has.iter().map(|e| e.name.as_str()).collect();
            return Err(EdgeError::UnknownEnv {
                url,
                env: env.clone(),
                has: names.join(", "),
            });
        }
    }
    Ok(Probe::Reached)
}

/// Starts an edge: checks the upstream, opens the outbox, starts one relay
/// per environment and the events forwarder, and serves.
pub async fn start(config: EdgeConfig) -> Result<Running, EdgeError> {
    if config.envs.is_empty() {
        return Err(EdgeError::NoEnvironment);
    }
    for env in &config.envs {
        crate::admin::check_key("environment", env).map_err(|e| EdgeError::Upstream {
            url: config.upstream.clone(),
            reason: format!("--env: {e}"),
        })?;
    }
    let cors_origins = cors::parse_origins(&config.cors_origins).map_err(ServeError::Cors)?;
    let upstream_error = |reason: String| EdgeError::Upstream {
        url: config.upstream.clone(),
        reason,
    };
    let mut admin = AdminClient::new(&config.upstream, &config.token)
        .map_err(|e| upstream_error(e.to_string()))?;
    if let Some(pem) = &config.ca_certificate_pem {
        admin = admin
            .ca_certificate_pem(pem)
            .map_err(|e| upstream_error(format!("--ca-cert: {e}")))?;
    }
    let listener = crate::bind(&config.listen).await?;
    let probed = probe(&admin, &config).await?;
    let data_dir = |error: String| EdgeError::DataDir {
        path: config.data_dir.display().to_string(),
        error,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| data_dir(e.to_string()))?;
    let outbox = EdgeStore::open(&config.data_dir.join("edge.db"))
        .await
        .map_err(|e| data_dir(e.to_string()))?;
    let (trigger, shutdown) = shutdown::channel();
    let metrics = metrics::Metrics::default();
    let unreached = match probed {
        Probe::Reached => None,
        Probe::Unreachable(why) => {
            tracing::warn!(upstream = %config.upstream, error = %why, "cannot reach the upstream; retrying, and serving only saved snapshots until it answers");
            eprintln!(
                "guidon edge: cannot reach the upstream {}: {why}; retrying",
                config.upstream
            );
            Some(why)
        }
    };
    let upstream = Arc::new(Upstream {
        url: config.upstream.clone(),
        admin,
        verdicts: verdicts::Verdicts::load(config.token_cache_ttl, &outbox).await,
        logs: Mutex::new(HashMap::new()),
        follows: Mutex::new(HashMap::new()),
        unreached: Mutex::new(unreached),
        outbox,
        pushed: tokio::sync::Notify::new(),
        buffered: AtomicU64::new(0),
        max_buffered: config.max_buffered_events,
    });
    let state = Arc::new(AppState {
        envs: Arc::new(Envs::relaying(
            config.envs.clone(),
            shutdown.clone(),
            metrics.syncs.clone(),
        )),
        backend: Backend::Edge(upstream.clone()),
        tokens: crate::tokens::Tokens::default(),
        metrics,
        cache: None,
        limits: Limits {
            max_body: config.max_body,
            body_timeout: config.connections.body_timeout,
            ..Limits::default()
        },
        shutdown: shutdown.clone(),
        heartbeat: config.heartbeat,
        cors: cors::layer(&cors_origins),
        cors_origins,
        sampler: crate::samples::Sampler::default(),
        // An edge has no people: they sign in at its upstream.
        secure_cookies: false,
        logins: crate::people::LoginLimiter::default(),
        events: None,
    });
    for env in &config.envs {
        tokio::spawn(relay::run(
            state.clone(),
            upstream.clone(),
            relay::Follow {
                env: env.clone(),
                url: config.upstream.clone(),
                token: config.token.clone(),
                snapshot: config.data_dir.join(format!("{env}.snapshot.json")),
                heartbeat: config.upstream_heartbeat,
                ca_certificate_pem: config.ca_certificate_pem.clone(),
            },
        ));
    }
    tokio::spawn(forward::run(state.clone(), upstream.clone()));
    tokio::spawn(verdicts::refresh(state.clone(), upstream.clone()));
    let app = crate::router(state.clone());
    let addr = listener.local_addr().map_err(ServeError::Io)?;
    let limits = config.connections;
    let task = tokio::spawn(async move {
        let result = listener::serve(listener, app, limits, None, shutdown).await;
        if let Backend::Edge(upstream) = &state.backend {
            upstream.outbox.close().await;
        }
        result
    });
    tracing::info!(%addr, upstream = %config.upstream, "guidon edge serving");
    Ok(Running {
        addr,
        metrics_addr: None,
        generated_admin_token: None,
        tls: None,
        trigger,
        task,
    })
}
