//! What SDKs use: the full flag document, catch-up by revision, and the
//! live streams (SSE and WebSocket) that carry every revision.
//!
//! A stream subscribes to the environment's broadcast *before* it reads
//! what to send first (a snapshot, or the changes after the client's last
//! revision), then skips broadcast revisions it has already covered: no
//! revision is lost between the two, and none is sent twice. A client that
//! falls more than the broadcast's capacity behind is disconnected; it
//! reconnects with its last revision and catches up.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use guidon_protocol::{Encoded, Event as Kind};
use guidon_store::StoreError;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::admin::check_key;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::live::EnvState;
use crate::metrics::StreamLabels;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/sdk/flags", get(flags))
        .route("/api/v1/sdk/changes", get(changes))
        .route("/api/v1/sdk/stream", get(sse))
        .route("/api/v1/sdk/ws", get(ws))
}

async fn sdk_env(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> ApiResult<Arc<EnvState>> {
    let name = caller.sdk_env(headers)?;
    check_key("environment", &name)?;
    caller.require_env(&name)?;
    state.env(&name).await
}

#[utoipa::path(
    get,
    path = "/api/v1/sdk/flags",
    tag = "sdk",
    summary = "The environment's flag document with revision and versions (ETag; 304)",
    params(("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token")),
    responses((status = 200, description = "{protocol, revision, epoch, versions, flags, segments}", body = guidon_protocol::WireDocument), (status = 304, description = "Not modified"), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn flags(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let env = sdk_env(&state, &caller, &headers).await?;
    let live = env.live.load_full();
    // The revision, and the environment's creation time: a re-created
    // environment counts its revisions from 1 again.
    let etag = format!("\"{}-{}\"", live.revision, live.epoch);
    let tag = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    if crate::conditional::none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    // The snapshot message of the stream, encoded once per revision.
    let body = live.encoded().json.clone();
    Ok((
        [
            (header::ETAG, tag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body.to_string(),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Since {
    since: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/sdk/changes",
    tag = "sdk",
    summary = "The changes after a revision",
    params(("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token"), ("since" = u64, Query, description = "The revision the client has")),
    responses((status = 200, description = "{protocol, revision, epoch, changes}", body = guidon_protocol::schema::ChangesSchema), (status = 410, description = "Past the catch-up horizon: take /sdk/flags", body = ErrorBody), (status = 409, description = "`revision_ahead`: since names a revision this server never reached; take /sdk/flags", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn changes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(since) = query.map_err(|e| ApiError::BadRequest(format!("since: {e}")))?;
    let since = since
        .since
        .ok_or_else(|| ApiError::BadRequest("since is required: ?since=REVISION".into()))?;
    let env = sdk_env(&state, &caller, &headers).await?;
    not_ahead(&env, since).await?;
    let changes = state.changes_since(&env, since).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        changes.to_json(),
    )
        .into_response())
}

/// A client that names a revision past this instance's waits for it to
/// catch up (the client may have seen it through another instance); if the
/// database has no such revision either (a restored backup, another
/// server), the client is told to take the whole document: 409
/// `revision_ahead`, never an empty "no changes" it would sit on.
async fn not_ahead(env: &EnvState, since: u64) -> ApiResult<()> {
    let revision = env.live.load().revision;
    if since <= revision {
        return Ok(());
    }
    env.nudge(since);
    if env.served(since, crate::app::SERVE_WAIT).await {
        return Ok(());
    }
    Err(ApiError::Ahead(format!(
        "revision {since} is ahead of this server's {} (a restored backup, or another server): \
         take the whole document from /api/v1/sdk/flags",
        env.live.load().revision
    )))
}

/// What to send first: every revision after `since` when they can be
/// replayed, else the snapshot. A client at the served revision needs
/// nothing, and the database is not asked; when the database cannot answer
/// (an outage), the client gets the served snapshot: a stream opens and
/// serves the last state while the database is away.
async fn opening(
    state: &AppState,
    env: &EnvState,
    since: Option<u64>,
) -> ApiResult<Vec<Arc<Encoded>>> {
    let live = env.live.load_full();
    let Some(since) = since.filter(|s| *s <= live.revision) else {
        return Ok(vec![Arc::new(live.encoded().clone())]);
    };
    if since == live.revision {
        return Ok(Vec::new());
    }
    match state.changes_since(env, since).await {
        Ok(changes) if changes.epoch.is_none_or(|e| e == live.epoch) => Ok(changes
            .into_updates()
            .iter()
            .map(|u| Arc::new(u.encode()))
            .collect()),
        // Too old to replay, or re-created meanwhile.
        Ok(_) | Err(StoreError::TooOld { .. }) => Ok(vec![Arc::new(live.encoded().clone())]),
        Err(e @ StoreError::Database(_)) => {
            tracing::warn!(env = %env.name, error = %e, "stream opened with the served snapshot: the database cannot replay changes");
            Ok(vec![Arc::new(live.encoded().clone())])
        }
        Err(e) => Err(e.into()),
    }
}

/// The resume point: `?since=N`, else `Last-Event-ID`.
fn resume_point(headers: &HeaderMap, since: Option<u64>) -> ApiResult<Option<u64>> {
    if since.is_some() {
        return Ok(since);
    }
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be a revision number".into())),
    }
}

/// Counts a connected client while it lives.
pub(crate) struct ClientGauge {
    state: Arc<AppState>,
    transport: &'static str,
}

impl ClientGauge {
    pub(crate) fn new(state: Arc<AppState>, transport: &'static str) -> ClientGauge {
        state
            .metrics
            .stream_clients
            .get_or_create(&StreamLabels { transport })
            .inc();
        ClientGauge { state, transport }
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.state
            .metrics
            .stream_clients
            .get_or_create(&StreamLabels {
                transport: self.transport,
            })
            .dec();
    }
}

/// The messages of one stream: the opening ones, then each new revision,
/// until the client lags, the environment must be re-read, or shutdown.
fn messages(
    state: Arc<AppState>,
    opened: Opened,
    transport: &'static str,
) -> impl Stream<Item = Arc<Encoded>> + Send + 'static {
    let Opened {
        rx,
        opening,
        since,
        token,
    } = opened;
    // What the client will have: what the opening sends, and when it
    // resumes without a snapshot, at least its resume point (an empty
    // catch-up must not let a late broadcast of older revisions through).
    let last = opening.last().map_or(0, |m| m.revision);
    let snapshot = opening.iter().any(|m| m.event == Kind::Snapshot);
    let sent = if snapshot {
        last
    } else {
        last.max(since.unwrap_or(0))
    };
    let gauge = ClientGauge::new(state.clone(), transport);
    let mut check = tokio::time::interval(state.heartbeat);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = stream::unfold(
        (state, rx, sent, gauge, check, token),
        |(state, mut rx, sent, gauge, mut check, token)| async move {
            loop {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    // A revoked token's stream ends within a heartbeat.
                    _ = check.tick() => {
                        if state.token_is_live(&token) {
                            continue;
                        }
                        return None;
                    }
                    () = state.shutdown.wait() => return None,
                };
                match next {
                    // A snapshot replaces everything (the environment was
                    // re-created: its revisions restart); an update the
                    // client already has is skipped.
                    Ok(message) if message.event == Kind::Update && message.revision <= sent => {}
                    Ok(message) => {
                        state.metrics.stream_messages.inc();
                        let revision = message.revision;
                        return Some((message, (state, rx, revision, gauge, check, token)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        state.metrics.stream_lagged.inc();
                        return None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    stream::iter(opening).chain(follow)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    since: Option<u64>,
}

/// A stream, opened: the subscription, what to send first, the client's
/// resume point and the token it came with.
struct Opened {
    rx: broadcast::Receiver<Arc<Encoded>>,
    opening: Vec<Arc<Encoded>>,
    since: Option<u64>,
    token: String,
}

async fn open_stream(
    state: &Arc<AppState>,
    caller: &Caller,
    headers: &HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Opened> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(format!("since: {e}")))?;
    let since = resume_point(headers, query.since)?;
    let env = sdk_env(state, caller, headers).await?;
    // Subscribe first, then read: nothing committed in between is missed.
    let rx = env.updates.subscribe();
    // A client ahead of this instance (it saw a revision through another
    // one) waits for this one to catch up rather than going back; one
    // ahead of the database is told to take the whole document.
    if let Some(since) = since {
        not_ahead(&env, since).await?;
    }
    let opening = opening(state, &env, since).await?;
    Ok(Opened {
        rx,
        opening,
        since,
        token: caller.name.clone(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/sdk/stream",
    tag = "sdk",
    summary = "Server-Sent Events: a snapshot (or the missed changes), then one update per revision; id = revision",
    params(("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token"), ("since" = Option<u64>, Query, description = "Resume after this revision (or Last-Event-ID)")),
    responses((status = 200, description = "text/event-stream"), (status = 409, description = "`revision_ahead`: since names a revision this server never reached; take /sdk/flags", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn sse(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let opened = open_stream(&state, &caller, &headers, query).await?;
    let heartbeat = state.heartbeat;
    let events = messages(state, opened, "sse").map(|m| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event(m.event.name())
                .id(m.revision.to_string())
                .data(&*m.json),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/sdk/ws",
    tag = "sdk",
    summary = "WebSocket: the same messages as the SSE stream, as text frames",
    params(("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token"), ("since" = Option<u64>, Query, description = "Resume after this revision")),
    responses((status = 101, description = "Switching protocols"), (status = 409, description = "`revision_ahead`: since names a revision this server never reached; take /sdk/flags", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn ws(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| ApiError::Upgrade {
        status: e.status(),
        message: e.body_text(),
    })?;
    let opened = open_stream(&state, &caller, &headers, query).await?;
    // Clients send nothing but control frames: keep what one may make the
    // server buffer small.
    Ok(upgrade
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| run_ws(socket, state, opened)))
}

/// Sends the stream's messages as text frames and a ping every heartbeat;
/// answers pings (the library queues the pong), and ends on close, on
/// two heartbeats without a pong or message from the client, or shutdown.
///
/// The two-heartbeat rule holds while a send waits, too: every send is
/// bounded by the same deadline, so a client that stopped reading is cut
/// when it falls silent, not when the kernel's buffers happen to drain.
async fn run_ws(mut socket: WebSocket, state: Arc<AppState>, opened: Opened) {
    let heartbeat = state.heartbeat;
    let silence = heartbeat * 2;
    let shutdown = state.shutdown.clone();
    let mut messages = Box::pin(messages(state, opened, "ws"));
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    let mut heard = Instant::now();
    loop {
        let deadline = heard + silence;
        tokio::select! {
            next = messages.next() => match next {
                Some(m) => {
                    if !send(&mut socket, Message::Text((*m.json).into()), deadline).await {
                        return;
                    }
                }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ticker.tick() => {
                if !send(&mut socket, Message::Ping(Default::default()), deadline).await {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => return,
            () = shutdown.wait() => break,
        }
    }
    let close = Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1001,
        reason: "going away".into(),
    }));
    send(&mut socket, close, Instant::now() + heartbeat).await;
}

/// Sends one frame, giving up at `deadline`: whether it went.
async fn send(socket: &mut WebSocket, message: Message, deadline: Instant) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, socket.send(message)).await,
        Ok(Ok(()))
    )
}
