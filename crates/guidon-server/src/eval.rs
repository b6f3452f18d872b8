//! Remote evaluation: Guidon's own endpoint (flag-format.md §7 results,
//! with explain) and OpenFeature's OFREP. Both read the environment's
//! current Snapshot without locks.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use guidon_engine::{Context, Evaluation, Reason, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::admin::check_key;
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::live::{EnvState, Live};
use guidon_store::AsOf;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/envs/{env}/evaluate", post(evaluate))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep_one))
        .route("/ofrep/v1/evaluate/flags", post(ofrep_all))
}

/// An evaluation result owned (not borrowing the Snapshot), as cached and
/// rendered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) flag: String,
    pub(crate) found: bool,
    pub(crate) enabled: bool,
    pub(crate) variant: Option<String>,
    pub(crate) value: Option<Value>,
    pub(crate) reason: Reason,
    pub(crate) flag_version: Option<u64>,
    pub(crate) metadata: Value,
}

impl Resolved {
    fn from(e: &Evaluation<'_>) -> Resolved {
        Resolved {
            flag: e.flag.to_owned(),
            found: e.error_code.is_none(),
            enabled: e.enabled,
            variant: e.variant.map(str::to_owned),
            value: e.value.cloned(),
            reason: e.reason,
            flag_version: e.flag_version,
            metadata: serde_json::to_value(e.metadata).unwrap_or_else(|_| json!({})),
        }
    }

    /// flag-format.md §7.
    fn guidon_json(&self) -> Value {
        json!({
            "flag": self.flag,
            "enabled": self.enabled,
            "variant": self.variant,
            "value": self.value,
            "reason": self.reason.as_str(),
            "error_code": if self.found { Value::Null } else { json!("FLAG_NOT_FOUND") },
            "flag_version": self.flag_version,
            "metadata": self.metadata,
        })
    }

    /// OFREP's evaluationSuccess, or its flagNotFound.
    fn ofrep_json(&self) -> Value {
        if !self.found {
            return json!({
                "key": self.flag,
                "errorCode": "FLAG_NOT_FOUND",
                "errorDetails": format!("flag {:?} was not found", self.flag),
            });
        }
        let mut out = Map::new();
        out.insert("key".into(), json!(self.flag));
        out.insert("reason".into(), json!(self.reason.as_str()));
        // Always a variant: stock clients (the Python OFREP provider among
        // them) fail on a response without one. A flag without variants, or
        // off without an off variant, is named after its state.
        let variant = self
            .variant
            .as_deref()
            .unwrap_or(if self.enabled { "on" } else { "off" });
        out.insert("variant".into(), json!(variant));
        // No value (a disabled flag without an off variant): OFREP's
        // codeDefaultFlag, the client uses its own default.
        if let Some(value) = &self.value {
            out.insert("value".into(), value.clone());
        }
        let mut metadata = match &self.metadata {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        if let Some(version) = self.flag_version {
            metadata.insert("flag_version".into(), json!(version));
        }
        out.insert("metadata".into(), Value::Object(metadata));
        Value::Object(out)
    }
}

/// A context from a request: an object of at most the configured number
/// of attributes.
pub(crate) fn context_of(
    state: &AppState,
    value: Option<Value>,
) -> Result<Map<String, Value>, String> {
    match value {
        None => Err("context is required (an object of attributes)".into()),
        Some(Value::Object(map)) => {
            if map.len() > state.limits.max_context_attributes {
                Err(format!(
                    "context has {} attributes; at most {} are accepted",
                    map.len(),
                    state.limits.max_context_attributes
                ))
            } else {
                Ok(map)
            }
        }
        Some(other) => Err(format!(
            "context must be an object of attributes, got {}",
            guidon_engine::json_type_name(&other)
        )),
    }
}

/// Evaluates one flag, through the cache when it is on.
async fn resolve_one(
    state: &AppState,
    env: &EnvState,
    live: &Live,
    key: &str,
    context: &Map<String, Value>,
    ctx: &Context,
    now: Timestamp,
) -> Arc<Resolved> {
    let started = Instant::now();
    let compute = || Resolved::from(&live.snapshot.evaluate(key, ctx, now));
    let resolved = match (&state.cache, live.cacheable) {
        (Some(cache), true) => {
            let (resolved, hit) = cache
                .get_or_compute(&env.name, live.epoch, key, live.revision, context, compute)
                .await;
            if hit {
                state.metrics.cache_hits.inc();
            } else {
                state.metrics.cache_misses.inc();
            }
            resolved
        }
        _ => Arc::new(compute()),
    };
    state
        .metrics
        .evaluation_seconds
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .count_evaluation(&env.name, key, resolved.found, resolved.reason.as_str());
    resolved
}

// ---- Guidon's endpoint ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvaluateRequest {
    /// One flag; all flags when absent.
    #[serde(default)]
    flag: Option<String>,
    /// The attributes of the evaluation (at most 256).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    #[serde(default)]
    explain: bool,
    /// Time travel: evaluate the environment as it was at this instant
    /// (RFC 3339), with the evaluation's `now` set to it. Admin tokens only.
    #[serde(default)]
    at: Option<String>,
    /// Time travel: evaluate the environment as it was just after this
    /// revision, with `now` set to the time it was made. Admin tokens only.
    #[serde(default)]
    revision: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/evaluate",
    tag = "evaluation",
    summary = "Evaluate one flag (with explain) or all flags (flag-format.md §7); with `at` or `revision`, as the environment was then",
    params(("env" = String, Path, description = "Environment")),
    request_body = EvaluateRequest,
    responses((status = 200, description = "One result (with `flag`), or all of them: {revision, results}; with `at`/`revision` also `as_of` (and one flag's `explanation`)", body = schema::Evaluated), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 410, description = "history_compacted: that revision is past the change log's retention horizon", body = ErrorBody), (status = 422, description = "out_of_range: `at` before the environment existed or in the future, or a `revision` not made yet (`path` names the field)", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn evaluate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env_name): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<Value>> {
    check_key("environment", &env_name)?;
    caller.require_evaluate(&env_name)?;
    let mut request: EvaluateRequest = body::json(&headers, &bytes).await?;
    if request.explain {
        // The explanation shows the flag's rules, conditions and segments.
        caller.require_env(&env_name)?;
    }
    let context = context_of(&state, Some(request.context.take().unwrap_or(json!({})))).map_err(
        |message| ApiError::InvalidBody {
            path: "context".into(),
            message,
        },
    )?;
    if request.at.is_some() || request.revision.is_some() {
        return time_travel(&state, &caller, &env_name, request, Context::from(context)).await;
    }
    let env = state.env(&env_name).await?;
    state.sampler.offer(&env.name, &context);
    let live = env.live.load_full();
    let ctx = Context::from(context.clone());
    let now = Timestamp::now();
    match request.flag {
        Some(key) if request.explain => {
            let started = Instant::now();
            let (result, explanation) = live.snapshot.explain(&key, &ctx, now);
            state
                .metrics
                .evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
            state.metrics.count_evaluation(
                &env.name,
                &key,
                result.error_code.is_none(),
                result.reason.as_str(),
            );
            let mut out = result.to_json();
            out["explanation"] =
                serde_json::to_value(explanation).map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(Json(out))
        }
        Some(key) => {
            let resolved = resolve_one(&state, &env, &live, &key, &context, &ctx, now).await;
            Ok(Json(resolved.guidon_json()))
        }
        None if request.explain => Err(ApiError::InvalidBody {
            path: "explain".into(),
            message: "explain: needs a flag (explain one flag at a time)".into(),
        }),
        None => {
            let results = all(&state, &env, &live, &ctx, now);
            Ok(Json(json!({
                "revision": live.revision,
                "results": results.iter().map(Resolved::guidon_json).collect::<Vec<_>>(),
            })))
        }
    }
}

/// `evaluate` with `at` or `revision`: the environment rebuilt from the
/// change log as it was then, compiled, and evaluated with `now` set to
/// that time (the engine reads no clock, so the answer is the one given
/// then). One flag is always explained. The answer says which revision it
/// is, who made it and when.
async fn time_travel(
    state: &AppState,
    caller: &Caller,
    env_name: &str,
    request: EvaluateRequest,
    ctx: Context,
) -> ApiResult<Json<Value>> {
    // Who made each revision is the audit's, which is admin only.
    caller.require_admin()?;
    let as_of = match (request.at.as_deref(), request.revision) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidBody {
                path: "revision".into(),
                message: "give at or revision, not both".into(),
            });
        }
        (Some(text), None) => {
            let at: Timestamp = text.parse().map_err(|e| ApiError::InvalidBody {
                path: "at".into(),
                message: format!("at: {text:?} is not an RFC 3339 timestamp: {e}"),
            })?;
            let now = Timestamp::now();
            if at > now {
                return Err(ApiError::OutOfRange {
                    path: "at".into(),
                    message: format!("at: {at} is in the future (it is {now} on this server)"),
                });
            }
            AsOf::Time(at.as_millisecond())
        }
        (None, revision) => AsOf::Revision(revision.unwrap_or(0)),
    };
    let past = state.store()?.document_at(env_name, as_of).await?;
    let revision = past.revision;
    let now = match as_of {
        AsOf::Time(ms) => ms,
        AsOf::Revision(_) => past.at_ms,
    };
    let now = Timestamp::from_millisecond(now).map_err(|e| ApiError::Internal(e.to_string()))?;
    let made_at =
        Timestamp::from_millisecond(past.at_ms).map_err(|e| ApiError::Internal(e.to_string()))?;
    let as_of_json = json!({
        "revision": revision,
        "actor": past.actor,
        "made_at": made_at.to_string(),
        "now": now.to_string(),
        "current_revision": past.current,
        "oldest_revision": past.history_from,
    });
    let (_, compiled) = guidon_store::compile(past.document).await?;
    // Every stored revision was valid when it was written.
    let snapshot = compiled.map_err(|e| {
        ApiError::Internal(format!(
            "revision {revision} does not compile any more: {e}"
        ))
    })?;
    match request.flag {
        Some(key) => {
            let (result, explanation) = snapshot.explain(&key, &ctx, now);
            let mut out = result.to_json();
            out["explanation"] =
                serde_json::to_value(explanation).map_err(|e| ApiError::Internal(e.to_string()))?;
            out["as_of"] = as_of_json;
            Ok(Json(out))
        }
        None => {
            let results: Vec<Value> = snapshot
                .evaluate_all(&ctx, now)
                .iter()
                .map(|e| Resolved::from(e).guidon_json())
                .collect();
            Ok(Json(json!({
                "revision": revision,
                "results": results,
                "as_of": as_of_json,
            })))
        }
    }
}

fn all(
    state: &AppState,
    env: &EnvState,
    live: &Live,
    ctx: &Context,
    now: Timestamp,
) -> Vec<Resolved> {
    let started = Instant::now();
    let results: Vec<Resolved> = live
        .snapshot
        .evaluate_all(ctx, now)
        .iter()
        .map(Resolved::from)
        .collect();
    state
        .metrics
        .evaluation_seconds
        .observe(started.elapsed().as_secs_f64());
    for r in &results {
        state
            .metrics
            .count_evaluation(&env.name, &r.flag, r.found, r.reason.as_str());
    }
    results
}

// ---- OFREP ----

/// An OFREP failure: status and `{key?, errorCode, errorDetails}`.
fn ofrep_error(status: StatusCode, key: Option<&str>, code: &str, details: String) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details});
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    (status, Json(body)).into_response()
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct OfrepRequest {
    /// OpenFeature's evaluation context (`targetingKey` and attributes).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
}

/// The request's context, or the OFREP error response.
async fn ofrep_context(
    state: &AppState,
    headers: &HeaderMap,
    bytes: &Bytes,
    key: Option<&str>,
) -> Result<Map<String, Value>, Box<Response>> {
    let request: OfrepRequest = body::json(headers, bytes).await.map_err(|e| {
        Box::new(match e {
            ApiError::UnsupportedMediaType { .. } => e.into_response(),
            other => ofrep_error(
                StatusCode::BAD_REQUEST,
                key,
                "PARSE_ERROR",
                other.to_string(),
            ),
        })
    })?;
    context_of(state, request.context).map_err(|details| {
        Box::new(ofrep_error(
            StatusCode::BAD_REQUEST,
            key,
            "INVALID_CONTEXT",
            details,
        ))
    })
}

/// The environment of an OFREP request, as an error response on failure.
/// No environment named, an invalid one, or an unknown one is a 400 with
/// OFREP's evaluationFailure, `{key?, errorCode: GENERAL, errorDetails}`,
/// which OpenFeature providers report as a general error with its details;
/// it keeps Guidon's `error` and `message` too. An unknown environment must
/// not be a 404: to OFREP clients that means the *flag* was not found, and
/// a typo in an environment name would look like missing flags.
async fn ofrep_env(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    key: Option<&str>,
) -> Result<Arc<EnvState>, Response> {
    let failure = |e: ApiError| {
        if !matches!(e.status(), StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND) {
            return e.into_response();
        }
        let mut body = serde_json::to_value(e.body()).unwrap_or_default();
        body["errorCode"] = json!("GENERAL");
        body["errorDetails"] = json!(e.to_string());
        if let Some(key) = key {
            body["key"] = json!(key);
        }
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    };
    let name = caller.sdk_env(headers).map_err(failure)?;
    check_key("environment", &name).map_err(failure)?;
    caller.require_evaluate(&name).map_err(failure)?;
    state.env(&name).await.map_err(failure)
}

#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags/{key}",
    tag = "ofrep",
    summary = "OFREP: evaluate one flag",
    params(("key" = String, Path, description = "Flag key"), ("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token")),
    request_body = OfrepRequest,
    responses((status = 200, description = "evaluationSuccess", body = schema::OfrepSuccess), (status = 404, description = "FLAG_NOT_FOUND", body = schema::OfrepFailure), (status = 400, description = "PARSE_ERROR or INVALID_CONTEXT", body = schema::OfrepFailure), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn ofrep_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Response {
    let env = match ofrep_env(&state, &caller, &headers, Some(&key)).await {
        Ok(env) => env,
        Err(response) => return response,
    };
    let context = match ofrep_context(&state, &headers, &bytes, Some(&key)).await {
        Ok(context) => context,
        Err(response) => return *response,
    };
    state.sampler.offer(&env.name, &context);
    let live = env.live.load_full();
    let ctx = Context::from(context.clone());
    let resolved = resolve_one(&state, &env, &live, &key, &context, &ctx, Timestamp::now()).await;
    let status = if resolved.found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, Json(resolved.ofrep_json())).into_response()
}

#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    tag = "ofrep",
    summary = "OFREP: evaluate every flag (ETag; 304 on If-None-Match)",
    params(("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token"), ("If-None-Match" = Option<String>, Header, description = "A previous ETag")),
    request_body = OfrepRequest,
    responses((status = 200, description = "bulkEvaluationSuccess", body = schema::OfrepBulk), (status = 304, description = "Not modified"), (status = 400, description = "PARSE_ERROR or INVALID_CONTEXT", body = schema::OfrepFailure), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn ofrep_all(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Response {
    let env = match ofrep_env(&state, &caller, &headers, None).await {
        Ok(env) => env,
        Err(response) => return response,
    };
    let context = match ofrep_context(&state, &headers, &bytes, None).await {
        Ok(context) => context,
        Err(response) => return *response,
    };
    state.sampler.offer(&env.name, &context);
    let live = env.live.load_full();
    let now = Timestamp::now();
    // The results depend on the flags (the revision and epoch), the
    // context, and, where a condition reads the clock, on which window
    // between two instants the clock can change a result `now` is in: the
    // next such instant names the window.
    let etag = {
        let mut hash = Sha256::new();
        hash.update(env.name.as_bytes());
        hash.update(live.revision.to_be_bytes());
        hash.update(live.epoch.to_be_bytes());
        hash.update(Value::Object(context.clone()).to_string().as_bytes());
        if let Some(next) = live.snapshot.next_clock_change(now) {
            hash.update(next.as_nanosecond().to_be_bytes());
        }
        let digest = hash.finalize();
        let hex = guidon_store::hex(&digest[..12]);
        format!("\"{}-{hex}\"", live.revision)
    };
    if crate::conditional::none_match(&headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return response;
    }
    let ctx = Context::from(context);
    let results = all(&state, &env, &live, &ctx, now);
    let mut body = json!({
        "flags": results.iter().map(Resolved::ofrep_json).collect::<Vec<_>>(),
        "metadata": {"revision": live.revision, "environment": env.name},
    });
    if let Some(secret) = crate::auth::presented(&headers) {
        body["eventStreams"] = crate::ofrep_events::event_streams(&env.name, secret);
    }
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The shapes [`Resolved::guidon_json`], [`Resolved::ofrep_json`] and the
/// bulk answers write, for the OpenAPI document.
#[allow(dead_code)]
mod schema {
    use serde_json::Value;

    /// flag-format.md §7: one flag's result.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Evaluation {
        flag: String,
        enabled: bool,
        variant: Option<String>,
        value: Option<Value>,
        /// OpenFeature's reason: `STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`, `DISABLED`, `ERROR`.
        reason: String,
        /// `FLAG_NOT_FOUND`, or `null`.
        error_code: Option<String>,
        flag_version: Option<u64>,
        metadata: Value,
        /// With `explain`, or with `at`/`revision`: every step and condition.
        explanation: Option<Value>,
        /// With `at` or `revision`: the state evaluated.
        as_of: Option<AsOf>,
    }

    /// Every flag's result at a revision.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Evaluations {
        revision: u64,
        results: Vec<Evaluation>,
        as_of: Option<AsOf>,
    }

    /// The past state a time-travel evaluation read.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct AsOf {
        /// The revision evaluated: the last one made at or before `at`, or the one asked for.
        revision: u64,
        /// Who made it (`null` for revision 0, the empty environment).
        actor: Option<String>,
        /// When it was made (RFC 3339; for revision 0, when the environment was created).
        made_at: String,
        /// The evaluation's time: `at`, or `made_at` for a `revision`.
        now: String,
        current_revision: u64,
        /// The oldest revision the change log can still rebuild.
        oldest_revision: u64,
    }

    /// `POST …/evaluate`: one result when the request names a flag, else all.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[serde(untagged)]
    pub(crate) enum Evaluated {
        One(Evaluation),
        All(Evaluations),
    }

    /// OFREP's evaluationSuccess (`value` is absent when the client's
    /// default applies: a disabled flag without an off variant).
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub(crate) struct OfrepSuccess {
        key: String,
        value: Option<Value>,
        reason: String,
        variant: String,
        metadata: Value,
    }

    /// OFREP's evaluationFailure.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub(crate) struct OfrepFailure {
        key: Option<String>,
        /// `FLAG_NOT_FOUND`, `PARSE_ERROR`, `INVALID_CONTEXT`, `TARGETING_KEY_MISSING`, `GENERAL`.
        error_code: String,
        error_details: String,
    }

    /// One flag of a bulk answer.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[serde(untagged)]
    pub(crate) enum OfrepItem {
        Success(OfrepSuccess),
        Failure(OfrepFailure),
    }

    /// The bulk answer's metadata.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct OfrepBulkMetadata {
        revision: u64,
        environment: String,
    }

    /// Where to hear of changes (ADR-0008).
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub(crate) struct EventStream {
        /// `sse`.
        r#type: String,
        endpoint: EventStreamEndpoint,
        inactivity_delay_sec: u64,
    }

    /// The stream's path and query, on the OFREP base URL's origin.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub(crate) struct EventStreamEndpoint {
        request_uri: String,
    }

    /// OFREP's bulkEvaluationSuccess.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub(crate) struct OfrepBulk {
        flags: Vec<OfrepItem>,
        metadata: OfrepBulkMetadata,
        event_streams: Vec<EventStream>,
    }
}
