//! OFREP's event streams (ADR-0008): bulk answers carry `eventStreams`,
//! an SSE endpoint that sends `{"type": "refetchEvaluation"}` whenever the
//! environment's results may have changed, so a web provider re-fetches
//! within milliseconds instead of polling.
//!
//! A browser's `EventSource` cannot send headers, so the endpoint the bulk
//! answer names carries its credential in the query: a *channel*, a hash
//! of the environment and the token's stored hash. It lets its holder hear
//! that an environment changed (not what changed), only while the token
//! lives; a revoked token's streams end within a heartbeat. A client that
//! can send headers may use its token instead.
//!
//! An event is sent for each new revision (several missed ones, or a
//! client that fell behind the broadcast, make one event, since one
//! re-fetch covers them all), and when the clock reaches an instant at
//! which a time condition of a flag can change its result.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use guidon_engine::Timestamp;
use guidon_protocol::api::TokenInfo;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::admin::check_key;
use crate::app::AppState;
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// How long a hidden page may keep the stream before closing it (ADR-0008's
/// default, said explicitly).
const INACTIVITY_DELAY_SECS: u64 = 120;

/// The endpoint's path.
const PATH: &str = "/ofrep/v1/events";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(events))
}

/// The channel of a token (by its stored hash) for an environment.
pub(crate) fn channel(token_hash: &str, env: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"guidon-ofrep-events\n");
    hash.update(env.as_bytes());
    hash.update(b"\n");
    hash.update(token_hash.as_bytes());
    guidon_store::hex(&hash.finalize()[..16])
}

/// The bulk answer's `eventStreams` for the secret that asked.
pub(crate) fn event_streams(env: &str, secret: &str) -> Value {
    let channel = channel(&guidon_store::secret_hash(secret), env);
    json!([{
        "type": "sse",
        "endpoint": {"requestUri": format!("{PATH}?env={env}&channel={channel}")},
        "inactivityDelaySec": INACTIVITY_DELAY_SECS,
    }])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    env: Option<String>,
    channel: Option<String>,
}

#[utoipa::path(
    get,
    path = "/ofrep/v1/events",
    tag = "ofrep",
    summary = "OFREP event stream (ADR-0008): `refetchEvaluation` events; the URL comes from a bulk answer's eventStreams",
    params(
        ("env" = Option<String>, Query, description = "The environment (with channel)"),
        ("channel" = Option<String>, Query, description = "The credential a bulk answer's eventStreams carries; or send a token instead"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last revision heard: an event at once if the environment moved since"),
    ),
    responses((status = 200, description = "text/event-stream: `data: {\"type\":\"refetchEvaluation\"}`, id = revision"), (status = 400, description = "Bad request: the message names the parameter", body = ErrorBody), (status = 401, description = "Missing or unknown token or channel", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let info: Option<TokenInfo> = match (auth::presented(&headers), &query.channel) {
        (Some(secret), _) => state.authenticate(secret).await?,
        (None, Some(channel)) => {
            let env = query.env.as_deref().ok_or_else(|| {
                ApiError::BadRequest("env is required with channel: ?env=ENV&channel=…".into())
            })?;
            state.token_by_channel(env, channel)
        }
        (None, None) => None,
    };
    let caller = Caller::from(info.ok_or(ApiError::Unauthorized)?);
    let name = match query.env {
        Some(env) => env,
        None => caller.sdk_env(&headers)?,
    };
    check_key("environment", &name)?;
    caller.require_evaluate(&name)?;
    let env = state.env(&name).await?;
    let rx = env.updates.subscribe();
    let revision = env.live.load().revision;
    let heard = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Behind already: an event at once.
    let pending = heard.is_some_and(|h| h < revision);
    let gauge = crate::sdk::ClientGauge::new(state.clone(), "ofrep-sse");
    let mut check = tokio::time::interval(state.heartbeat);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = Follow {
        state: state.clone(),
        env,
        rx,
        sent: if pending { 0 } else { revision },
        pending,
        check,
        token: caller.name,
        _gauge: gauge,
    };
    let events = stream::unfold(follow, |mut follow| async move {
        let revision = follow.next().await?;
        let event = Event::default()
            .id(revision.to_string())
            .data(r#"{"type":"refetchEvaluation"}"#);
        Some((Ok::<_, std::convert::Infallible>(event), follow))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.heartbeat).text("heartbeat"))
        .into_response())
}

/// One client's stream: when to tell it to re-fetch.
struct Follow {
    state: Arc<AppState>,
    env: Arc<crate::live::EnvState>,
    rx: broadcast::Receiver<Arc<guidon_protocol::Encoded>>,
    /// The revision the client was last told of.
    sent: u64,
    /// An event is due at once.
    pending: bool,
    check: tokio::time::Interval,
    token: String,
    _gauge: crate::sdk::ClientGauge,
}

impl Follow {
    /// The revision of the next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<u64> {
        loop {
            if std::mem::take(&mut self.pending) {
                let revision = self.env.live.load().revision;
                self.sent = revision;
                return Some(revision);
            }
            let clock = until_clock_change(&self.env);
            tokio::select! {
                next = self.rx.recv() => match next {
                    Ok(message) if message.revision > self.sent || message.event == guidon_protocol::Event::Snapshot => {
                        self.sent = message.revision;
                        return Some(message.revision);
                    }
                    Ok(_) => {}
                    // Fell behind the broadcast: one re-fetch covers it all.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.rx = self.rx.resubscribe();
                        self.pending = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = sleep_or_never(clock) => self.pending = true,
                _ = self.check.tick() => {
                    if !self.state.token_is_live(&self.token) {
                        return None;
                    }
                }
                () = self.state.shutdown.wait() => return None,
            }
        }
    }
}

/// How long until the clock can change a result in `env`, if it can.
fn until_clock_change(env: &crate::live::EnvState) -> Option<Duration> {
    let now = Timestamp::now();
    let next = env.live.load().snapshot.next_clock_change(now)?;
    // Just past the instant, so that a re-fetch sees the new window.
    Duration::try_from(next.duration_since(now))
        .ok()
        .map(|d| d + Duration::from_millis(5))
}

async fn sleep_or_never(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
