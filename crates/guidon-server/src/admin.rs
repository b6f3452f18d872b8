//! The admin API: environments, flags, segments, history, audit, bulk
//! import/export, tokens. Every write answers once this instance's
//! evaluations and streams have the new revision (read your writes).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use guidon_engine::model::{Flag, Segment};
use guidon_engine::{FlagFile, Format, is_valid_key};
use guidon_protocol::api::{Role, UserRole};
use guidon_protocol::{Definition, Kind};
use guidon_store::{Committed, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::{Caller, generate_secret};
use crate::body::{self, Body, Path, Query};
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};

type St = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/envs", get(list_envs).post(create_env))
        .route("/api/v1/envs/{env}", get(get_env).delete(delete_env))
        .route("/api/v1/envs/{env}/flags", get(export).put(import))
        .route("/api/v1/envs/{env}/overview", get(overview))
        .route(
            "/api/v1/envs/{env}/flags/{key}",
            get(get_flag)
                .put(put_flag)
                .patch(patch_flag)
                .delete(delete_flag),
        )
        .route("/api/v1/envs/{env}/flags/{key}/history", get(flag_history))
        .route("/api/v1/envs/{env}/flags/{key}/revert", post(revert_flag))
        .route("/api/v1/envs/{env}/flags/{key}/promote", post(promote_flag))
        .route("/api/v1/envs/{env}/segments", get(list_segments))
        .route(
            "/api/v1/envs/{env}/segments/{key}",
            get(get_segment)
                .put(put_segment)
                .patch(patch_segment)
                .delete(delete_segment),
        )
        .route(
            "/api/v1/envs/{env}/segments/{key}/history",
            get(segment_history),
        )
        .route("/api/v1/envs/{env}/audit", get(audit))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/api/v1/auth/verify", post(verify_token))
}

/// Environment names and keys in paths follow the flag-key rule, which
/// also keeps `..`, slashes and control characters out.
pub(crate) fn check_key(what: &str, key: &str) -> ApiResult<()> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} {key:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
        )))
    }
}

/// `If-Match: 3` or `If-Match: "3"` → must be at version 3; `If-None-Match: *`
/// → must not exist yet.
pub(crate) fn expected_version(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    if let Some(value) = headers.get(header::IF_MATCH) {
        let text = value.to_str().unwrap_or("").trim().trim_matches('"');
        return text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "If-Match must be a version number, got {:?}",
                value.to_str().unwrap_or("")
            ))
        });
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*")
    {
        return Ok(Some(0));
    }
    Ok(None)
}

pub(crate) fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `Accept` names a YAML type among its choices.
fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|t| Format::of_media_type(t) == Some(Format::Yaml))
        })
}

fn yaml_response(value: &impl serde::Serialize) -> ApiResult<Response> {
    let text = serde_yaml_ng::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, Format::Yaml.media_type())], text).into_response())
}

/// Answers `body` with `status` once this instance serves the write's
/// revision, so its author reads it here; when it does not within
/// [`crate::app::SERVE_WAIT`], 202: committed (durably), not served yet.
async fn settled(
    state: &AppState,
    env: &str,
    revision: u64,
    status: StatusCode,
    mut body: Value,
) -> Response {
    if state.served(env, revision).await {
        return (status, Json(body)).into_response();
    }
    body["served"] = json!(false);
    body["message"] = json!(format!(
        "committed at revision {revision}, but this instance does not serve it yet: \
         reads through it may not show the change for a moment"
    ));
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

// ---- environments ----

#[utoipa::path(
    get,
    path = "/api/v1/envs",
    tag = "environments",
    summary = "List environments",
    responses((status = 200, description = "Environments with their revisions", body = guidon_protocol::api::Environments), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn list_envs(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
    let envs = state.store()?.list_envs().await?;
    let visible: Vec<_> = envs
        .into_iter()
        .filter(|e| caller.require_env(&e.name).is_ok())
        .collect();
    Ok(Json(json!({ "environments": visible })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEnv {
    name: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/envs",
    tag = "environments",
    summary = "Create an environment",
    request_body = NewEnv,
    responses((status = 201, description = "Created", body = guidon_protocol::api::EnvInfo), (status = 409, description = "Exists", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn create_env(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let new: NewEnv = body::json(&headers, &bytes).await?;
    let info = state.store()?.create_env(&new.name).await?;
    // Events an earlier environment of this name left behind, if deleting
    // them failed then.
    if let Ok(events) = state.events() {
        events.delete_env(&info.name).await?;
    }
    state.env(&info.name).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}",
    tag = "environments",
    summary = "An environment",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "Revision and counts", body = guidon_protocol::api::EnvSummary), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn get_env(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<Value>> {
    check_key("environment", &env)?;
    caller.require_env(&env)?;
    let live = state.env(&env).await?.live.load_full();
    Ok(Json(json!({
        "name": env,
        "revision": live.revision,
        "flags": live.file().flags.len(),
        "segments": live.file().segments.len(),
    })))
}

#[derive(Deserialize)]
pub(crate) struct Force {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}",
    tag = "environments",
    summary = "Delete an environment (refused while not empty, unless force)",
    params(("env" = String, Path, description = "Environment"), ("force" = Option<bool>, Query, description = "Delete its flags and segments too")),
    responses((status = 204, description = "Deleted"), (status = 409, description = "Not empty", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn delete_env(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
    Query(force): Query<Force>,
) -> ApiResult<StatusCode> {
    caller.require_role(&env, UserRole::Admin)?;
    check_key("environment", &env)?;
    state.store()?.delete_env(&env, force.force).await?;
    state.envs.forget(&env).await;
    // Its experiment events, in their own store (a failure here leaves
    // events behind: they are cleared again when the name is created).
    if let Ok(events) = state.events() {
        events.delete_env(&env).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- bulk ----

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/flags",
    tag = "flags",
    summary = "Export the environment as a flag file (JSON, or YAML with Accept: application/yaml)",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "The flag file", body = guidon_engine::FlagFile), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn export(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_key("environment", &env)?;
    caller.require_env(&env)?;
    let live = state.env(&env).await?.live.load_full();
    let mut response = if wants_yaml(&headers) {
        yaml_response(&live.file())?
    } else {
        Json(&live.file()).into_response()
    };
    response
        .headers_mut()
        .insert("x-guidon-revision", HeaderValue::from(live.revision));
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/overview",
    tag = "flags",
    summary = "Every flag at a glance: on/off, variants, rollout, rules, version, last change (who, when)",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "The flags in key order", body = guidon_protocol::api::Overview), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn overview(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<guidon_protocol::api::Overview>> {
    check_key("environment", &env)?;
    caller.require_env(&env)?;
    let (revision, flags) = state.store()?.flag_overview(&env).await?;
    let flags = flags
        .into_iter()
        .map(|o| guidon_protocol::api::FlagSummary {
            variants: o.flag.variants.len(),
            rollout: o.flag.rollout.as_ref().map(|r| r.percentage),
            rules: o.flag.rules.len(),
            key: o.flag.key,
            description: o.flag.description,
            enabled: o.flag.enabled,
            version: o.version,
            changed_by: o.changed_by,
            changed_at_ms: o.changed_at_ms,
        })
        .collect();
    Ok(Json(guidon_protocol::api::Overview { revision, flags }))
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/flags",
    tag = "flags",
    summary = "Replace the environment with a flag file (GitOps): atomic, one revision",
    params(("env" = String, Path, description = "Environment")),
    request_body = guidon_engine::FlagFile,
    responses((status = 200, description = "The revision and every change", body = guidon_protocol::api::Imported), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn import(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    let file: FlagFile = body::json_or_yaml(&headers, &bytes).await?;
    let done = state
        .store()?
        .replace_all(&env, &file, &caller.name)
        .await?;
    let body = json!({"revision": done.revision, "changes": done.changes});
    Ok(settled(&state, &env, done.revision, StatusCode::OK, body).await)
}

// ---- flags and segments ----

/// The answer to an upsert: `{KIND: definition, version, revision}`, 201
/// when it created the key, with its version as ETag.
async fn written_response(state: &AppState, env: &str, kind: Kind, done: Committed) -> Response {
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        kind.as_str(): done.change.definition(),
        "version": done.version,
        "revision": done.revision,
    });
    let mut response = settled(state, env, done.revision, status, body).await;
    response
        .headers_mut()
        .insert(header::ETAG, etag(done.version));
    response
}

async fn get_definition(
    state: &AppState,
    caller: &Caller,
    env: &str,
    kind: Kind,
    key: &str,
) -> ApiResult<Response> {
    check_key("environment", env)?;
    check_key(kind.as_str(), key)?;
    caller.require_env(env)?;
    let stored = state.store()?.get(env, kind, key).await?;
    Ok((
        [(header::ETAG, etag(stored.version))],
        Json(json!({
            kind.as_str(): stored.definition,
            "version": stored.version,
            "revision": stored.revision,
        })),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/flags/{key}",
    tag = "flags",
    summary = "A flag with its version (ETag)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, description = "{flag, version, revision}", body = guidon_protocol::api::VersionedFlag), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn get_flag(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    get_definition(&state, &caller, &env, Kind::Flag, &key).await
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/segments/{key}",
    tag = "segments",
    summary = "A segment with its version (ETag)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Segment key")),
    responses((status = 200, description = "{segment, version, revision}", body = guidon_protocol::api::VersionedSegment), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn get_segment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    get_definition(&state, &caller, &env, Kind::Segment, &key).await
}

/// The body's key must be the path's (a missing key is taken from the path).
pub(crate) fn keyed(mut value: Value, key: &str) -> ApiResult<Value> {
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::InvalidBody {
            path: String::new(),
            message: "the body must be a JSON object".into(),
        });
    };
    match object.get("key") {
        None => {
            object.insert("key".into(), json!(key));
        }
        Some(Value::String(k)) if k == key => {}
        Some(other) => {
            return Err(ApiError::InvalidBody {
                path: "key".into(),
                message: format!("key: the body's key {other} is not the path's {key:?}"),
            });
        }
    }
    Ok(value)
}

pub(crate) fn parse_definition<T: serde::de::DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| body::invalid(&e))
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/flags/{key}",
    tag = "flags",
    summary = "Create or replace a flag (If-Match: VERSION; If-None-Match: * to create only)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body = guidon_engine::model::Flag,
    responses((status = 201, description = "Created: {flag, version, revision}", body = guidon_protocol::api::VersionedFlag), (status = 200, description = "Replaced: {flag, version, revision}", body = guidon_protocol::api::VersionedFlag), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn put_flag(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    check_key("flag", &key)?;
    let expected = expected_version(&headers)?;
    let value = keyed(body::json_or_yaml(&headers, &bytes).await?, &key)?;
    let flag: Flag = parse_definition(value)?;
    let done = state
        .store()?
        .upsert_flag(&env, &flag, expected, &caller.name)
        .await?;
    Ok(written_response(&state, &env, Kind::Flag, done).await)
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/segments/{key}",
    tag = "segments",
    summary = "Create or replace a segment",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Segment key")),
    request_body = guidon_engine::model::Segment,
    responses((status = 201, description = "Created", body = guidon_protocol::api::VersionedSegment), (status = 200, description = "Replaced", body = guidon_protocol::api::VersionedSegment), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn put_segment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    check_key("segment", &key)?;
    let expected = expected_version(&headers)?;
    let value = keyed(body::json_or_yaml(&headers, &bytes).await?, &key)?;
    let segment: Segment = parse_definition(value)?;
    let done = state
        .store()?
        .upsert_segment(&env, &segment, expected, &caller.name)
        .await?;
    Ok(written_response(&state, &env, Kind::Segment, done).await)
}

/// How many times a `PATCH` without `If-Match` re-reads and re-applies
/// its patch when another write lands between its read and its write.
const PATCH_ATTEMPTS: usize = 5;

/// `PATCH`: the stored definition with a JSON merge patch applied,
/// validated and written like a `PUT`. Without `If-Match` the patch is
/// applied to the version read, and re-applied if another write wins the
/// race; a patch that changes nothing stores nothing (200, `unchanged`).
async fn patch_definition(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    env: &str,
    kind: Kind,
    key: &str,
    bytes: &Bytes,
) -> ApiResult<Response> {
    caller.require_role(env, UserRole::Editor)?;
    check_key("environment", env)?;
    check_key(kind.as_str(), key)?;
    let pinned = expected_version(headers)?;
    let patch: Value = body::merge_patch(headers, bytes).await?;
    let mut conflict = None;
    for _ in 0..PATCH_ATTEMPTS {
        let stored = state.store()?.get(env, kind, key).await?;
        if let Some(expected) = pinned
            && expected != stored.version
        {
            return Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: Some(stored.version),
            }
            .into());
        }
        let mut document = match &stored.definition {
            Definition::Flag(flag) => serde_json::to_value(flag),
            Definition::Segment(segment) => serde_json::to_value(segment),
        }
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        crate::patch::merge_patch(&mut document, &patch);
        let document = keyed(document, key)?;
        let proposed = match kind {
            Kind::Flag => Definition::Flag(parse_definition(document)?),
            Kind::Segment => Definition::Segment(parse_definition(document)?),
        };
        if proposed == stored.definition {
            let mut response = (
                StatusCode::OK,
                Json(json!({
                    kind.as_str(): proposed,
                    "version": stored.version,
                    "revision": stored.revision,
                    "unchanged": true,
                })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::ETAG, etag(stored.version));
            return Ok(response);
        }
        let written = match &proposed {
            Definition::Flag(flag) => {
                state
                    .store()?
                    .upsert_flag(env, flag, Some(stored.version), &caller.name)
                    .await
            }
            Definition::Segment(segment) => {
                state
                    .store()?
                    .upsert_segment(env, segment, Some(stored.version), &caller.name)
                    .await
            }
        };
        match written {
            Ok(done) => return Ok(written_response(state, env, kind, done).await),
            Err(e @ StoreError::Conflict { .. }) if pinned.is_none() => conflict = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(conflict.map_or_else(
        || ApiError::Internal("PATCH made no attempt".into()),
        ApiError::from,
    ))
}

#[utoipa::path(
    patch,
    path = "/api/v1/envs/{env}/flags/{key}",
    tag = "flags",
    summary = "Change part of a flag with a JSON merge patch (RFC 7396), validated like a PUT",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields to change; null removes a field"),
    responses((status = 200, description = "Changed: {flag, version, revision}; or `unchanged: true` when the patch changed nothing (no new revision)", body = guidon_protocol::api::VersionedFlag), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn patch_flag(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    patch_definition(&state, &caller, &headers, &env, Kind::Flag, &key, &bytes).await
}

#[utoipa::path(
    patch,
    path = "/api/v1/envs/{env}/segments/{key}",
    tag = "segments",
    summary = "Change part of a segment with a JSON merge patch (RFC 7396)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Segment key")),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields to change; null removes a field"),
    responses((status = 200, description = "Changed, or `unchanged: true`", body = guidon_protocol::api::VersionedSegment), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn patch_segment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    patch_definition(&state, &caller, &headers, &env, Kind::Segment, &key, &bytes).await
}

async fn delete_definition(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    env: &str,
    kind: Kind,
    key: &str,
) -> ApiResult<Response> {
    caller.require_role(env, UserRole::Editor)?;
    check_key("environment", env)?;
    check_key(kind.as_str(), key)?;
    let expected = expected_version(headers)?;
    let done = state
        .store()?
        .delete(env, kind, key, expected, &caller.name)
        .await?;
    let body = json!({
        "deleted": key,
        "version": done.version,
        "revision": done.revision,
    });
    Ok(settled(state, env, done.revision, StatusCode::OK, body).await)
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}/flags/{key}",
    tag = "flags",
    summary = "Delete a flag (a tombstone in the change log)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, description = "{deleted, version, revision}", body = guidon_protocol::api::Deleted), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn delete_flag(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    delete_definition(&state, &caller, &headers, &env, Kind::Flag, &key).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}/segments/{key}",
    tag = "segments",
    summary = "Delete a segment (refused while used)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Segment key")),
    responses((status = 200, description = "{deleted, version, revision}", body = guidon_protocol::api::Deleted), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn delete_segment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    delete_definition(&state, &caller, &headers, &env, Kind::Segment, &key).await
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/segments",
    tag = "segments",
    summary = "The environment's segments",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "{revision, segments}", body = guidon_protocol::api::Segments), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn list_segments(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<Value>> {
    check_key("environment", &env)?;
    caller.require_env(&env)?;
    let live = state.env(&env).await?.live.load_full();
    Ok(Json(
        json!({"revision": live.revision, "segments": live.file().segments}),
    ))
}

async fn history(
    state: &AppState,
    caller: &Caller,
    env: &str,
    kind: Kind,
    key: &str,
) -> ApiResult<Json<Value>> {
    check_key("environment", env)?;
    check_key(kind.as_str(), key)?;
    caller.require_role(env, UserRole::Viewer)?;
    let entries = state.store()?.history(env, kind, key).await?;
    Ok(Json(json!({ "history": entries })))
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/flags/{key}/history",
    tag = "flags",
    summary = "Every change of a flag, oldest first",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, description = "{history}", body = guidon_protocol::api::History), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn flag_history(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    history(&state, &caller, &env, Kind::Flag, &key).await
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/segments/{key}/history",
    tag = "segments",
    summary = "Every change of a segment",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Segment key")),
    responses((status = 200, description = "{history}", body = guidon_protocol::api::History), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn segment_history(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    history(&state, &caller, &env, Kind::Segment, &key).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revert {
    version: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/flags/{key}/revert",
    tag = "flags",
    summary = "Make a flag what it was at a version (a new change)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body = Revert,
    responses((status = 200, description = "{flag, version, revision}", body = guidon_protocol::api::VersionedFlag), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn revert_flag(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    check_key("flag", &key)?;
    let revert: Revert = body::json(&headers, &bytes).await?;
    let done = state
        .store()?
        .revert_flag(&env, &key, revert.version, &caller.name)
        .await?;
    Ok(written_response(&state, &env, Kind::Flag, done).await)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Promote {
    to: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/flags/{key}/promote",
    tag = "flags",
    summary = "Copy a flag to another environment",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body = Promote,
    responses((status = 200, description = "{flag, version, revision} in the target environment", body = guidon_protocol::api::VersionedFlag), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 422, description = "Validation failed: nothing stored", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn promote_flag(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Viewer)?;
    check_key("environment", &env)?;
    check_key("flag", &key)?;
    let promote: Promote = body::json(&headers, &bytes).await?;
    check_key("environment", &promote.to)?;
    caller.require_role(&promote.to, UserRole::Editor)?;
    let done = state
        .store()?
        .promote(&env, &promote.to, &key, &caller.name)
        .await?;
    Ok(written_response(&state, &promote.to, Kind::Flag, done).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/audit",
    tag = "audit",
    summary = "Changes, newest first, paged by revision",
    params(("env" = String, Path, description = "Environment"), ("before" = Option<u64>, Query, description = "Only revisions below this (the previous page's next_before)"), ("limit" = Option<u32>, Query, description = "Revisions per page, 1 to 500 (50)")),
    responses((status = 200, description = "{entries, next_before}", body = guidon_protocol::api::AuditPage), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn audit(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_role(&env, UserRole::Viewer)?;
    check_key("environment", &env)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 500, got {limit}"
        )));
    }
    let entries = state.store()?.audit(&env, query.before, limit).await?;
    let next = entries.last().map(|e| e.revision).filter(|r| *r > 1);
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

// ---- tokens ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    name: String,
    /// `admin` or `sdk`.
    #[schema(value_type = String)]
    role: Role,
    #[serde(default)]
    env: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    summary = "Create a token; the secret is shown once",
    request_body = NewToken,
    responses((status = 201, description = "{token, name, role, env}", body = guidon_protocol::api::NewToken), (status = 409, description = "Name taken", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn create_token(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let new: NewToken = body::json(&headers, &bytes).await?;
    let secret = generate_secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let info = state
        .store()?
        .create_token(&new.name, new.role, new.env.as_deref(), &secret)
        .await?;
    state.tokens.refresh(state.store()?).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": secret, "name": info.name, "role": info.role, "env": info.env})),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    summary = "Tokens (never their secrets)",
    responses((status = 200, description = "{tokens}", body = guidon_protocol::api::Tokens), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn list_tokens(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(json!({"tokens": state.store()?.list_tokens().await?})))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{name}",
    tag = "tokens",
    summary = "Revoke a token",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "Unknown environment or key", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn revoke_token(
    State(state): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.store()?.revoke_token(&name).await?;
    state.tokens.refresh(state.store()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyToken {
    /// The secret a caller presented.
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/verify",
    tag = "tokens",
    summary = "Who a secret is: the live token it belongs to (for `guidon edge`, which authenticates its callers here)",
    request_body(content = VerifyToken, description = "{token}"),
    responses((status = 200, description = "The token (never its secret)", body = guidon_protocol::api::TokenInfo), (status = 404, description = "No live token has this secret (unknown or revoked)", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn verify_token(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<guidon_protocol::api::TokenInfo>> {
    caller.require_admin()?;
    let VerifyToken { token } = body::json(&headers, &bytes).await?;
    state
        .tokens
        .authenticate(&token)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no live token has this secret".into()))
}
