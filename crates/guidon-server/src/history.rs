//! `POST /api/v1/envs/{env}/history/compact`: forget the change log below a
//! revision (`guidon_store::Store::compact_history`). Definitions can hold
//! what must not be kept for ever (a target's user ids, say); history,
//! audit, reverts and time travel then reach back to that revision only, and
//! time travel further back answers 410 `history_compacted`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::check_key;
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/envs/{env}/history/compact", post(compact))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompactRequest {
    /// Keep the change log from this revision on (at most the current one).
    keep_from: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/history/compact",
    tag = "audit",
    summary = "Forget the change log below a revision: history, audit, revert and time travel reach back to it only",
    params(("env" = String, Path, description = "Environment")),
    request_body = CompactRequest,
    responses((status = 200, description = "{env, history_from}: the oldest revision kept", body = schema::Compacted), (status = 422, description = "out_of_range: keep_from is past the current revision", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn compact(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let request: CompactRequest = body::json(&headers, &bytes).await?;
    let current = state.store()?.revision(&env).await?;
    if request.keep_from > current {
        return Err(ApiError::OutOfRange {
            path: "keep_from".into(),
            message: format!(
                "keep_from: revision {} does not exist yet (environment {env:?} is at revision {current})",
                request.keep_from
            ),
        });
    }
    let history_from = state
        .store()?
        .compact_history(&env, request.keep_from)
        .await?;
    Ok(Json(json!({"env": env, "history_from": history_from})))
}

#[allow(dead_code)]
mod schema {
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Compacted {
        env: String,
        /// The oldest revision the change log keeps (never lowered).
        history_from: u64,
    }
}
