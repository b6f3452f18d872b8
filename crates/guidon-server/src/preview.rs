//! Impact preview: `POST /api/v1/envs/{env}/flags/{key}/preview`. A
//! proposed definition (a whole flag, or a JSON merge patch of the current
//! one) is validated exactly as a save would be, and the engine's
//! [`guidon_engine::impact::preview`] evaluates the current and proposed
//! environment over the contexts given: who moves from what to what, for
//! the flag and for every flag depending on it through prerequisites.
//! Nothing is stored.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use guidon_engine::impact::{Impact, ImpactOptions};
use guidon_engine::model::Flag;
use guidon_engine::{Context, Timestamp};
use guidon_protocol::{Change, Definition};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{check_key, keyed, parse_definition};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::eval::context_of;

/// Most contexts one preview evaluates (each on both sides, for every
/// dependent flag too); the body limit usually binds first.
pub(crate) const MAX_PREVIEW_CONTEXTS: usize = 100_000;
/// Most affected contexts listed per flag.
const MAX_EXAMPLES: usize = 1_000;
/// Previews over more contexts than this run on the blocking pool.
const BLOCKING_CONTEXTS: usize = 1_000;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/envs/{env}/flags/{key}/preview", post(preview))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewRequest {
    /// The proposed flag, whole, as a PUT takes it (its key may be left out).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    flag: Option<Value>,
    /// Or a JSON merge patch (RFC 7396) of the current flag, as a PATCH takes it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    patch: Option<Value>,
    /// The contexts to evaluate: objects of attributes.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    contexts: Option<Vec<Value>>,
    /// Or (and) contexts as JSON Lines text, one object per line, as
    /// `guidon eval --contexts` reads them.
    #[serde(default)]
    contexts_jsonl: Option<String>,
    /// Affected contexts listed per flag (default 20, at most 1000).
    #[serde(default)]
    max_examples: Option<usize>,
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/flags/{key}/preview",
    tag = "flags",
    summary = "Impact preview: the current and a proposed definition (whole, or a merge patch) evaluated over the given contexts, with every flag depending on it; nothing is stored",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body = PreviewRequest,
    responses((status = 200, description = "{env, revision, contexts, flag, dependents, changed_dependents}: per flag the transition matrix (from, to, count, share), `changed` and bounded `examples`", body = schema::Preview), (status = 422, description = "The proposed definition is invalid: the same `details` as saving it", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment, or a patch of a flag that does not exist", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn preview(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env_name, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env_name)?;
    check_key("flag", &key)?;
    let request: PreviewRequest = body::json(&headers, &bytes).await?;
    let max_examples = request.max_examples.unwrap_or(20);
    if max_examples > MAX_EXAMPLES {
        return Err(ApiError::InvalidBody {
            path: "max_examples".into(),
            message: format!("max_examples: at most {MAX_EXAMPLES}, got {max_examples}"),
        });
    }
    let mut contexts = contexts(&state, request.contexts, request.contexts_jsonl.as_deref())?;
    let env = state.env(&env_name).await?;
    // The recent-contexts sample, when the environment keeps one.
    let sample = state.store()?.sample(&env_name).await?;
    let given = contexts.len();
    if let Some(sample) = &sample {
        contexts.extend(
            sample
                .contexts
                .iter()
                .filter_map(|text| Context::from_json_str(text).ok()),
        );
    }
    if contexts.is_empty() {
        return Err(ApiError::InvalidBody {
            path: "contexts".into(),
            message: format!(
                "contexts: give at least one context (an array of objects, or contexts_jsonl){}",
                if sample.is_some() {
                    ": the recent-contexts sample is empty"
                } else {
                    ": this environment keeps no recent-contexts sample"
                }
            ),
        });
    }

    let live = env.live.load_full();
    let current = live.document.file.flags.iter().find(|f| f.key == key);
    let proposed = match (request.flag, request.patch) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidBody {
                path: "patch".into(),
                message: "give flag (the whole definition) or patch (a merge patch), not both"
                    .into(),
            });
        }
        (Some(flag), None) => flag,
        (None, Some(patch)) => {
            let current = current.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "flag {key:?} not found in environment {env_name:?}: nothing to patch (send the whole flag to preview its creation)"
                ))
            })?;
            let mut document =
                serde_json::to_value(current).map_err(|e| ApiError::Internal(e.to_string()))?;
            crate::patch::merge_patch(&mut document, &patch);
            document
        }
        (None, None) => {
            return Err(ApiError::InvalidBody {
                path: "flag".into(),
                message: "flag: give the proposed flag, or patch: a merge patch of the current one"
                    .into(),
            });
        }
    };
    let flag: Flag = parse_definition(keyed(proposed, &key)?)?;
    let version = live.document.versions.get(&key).copied().unwrap_or(0) + 1;
    let change = Change::upsert(live.revision, version, Definition::Flag(flag));
    let (_, compiled) =
        guidon_store::apply_and_compile(live.document.as_ref().clone(), change).await?;
    let proposed = compiled.map_err(ApiError::Validation)?;

    let now = Timestamp::now();
    let options = ImpactOptions { max_examples };
    let current = live.snapshot.clone();
    let blocking = contexts.len() > BLOCKING_CONTEXTS;
    let run =
        move || guidon_engine::impact::preview(&current, &proposed, &key, &contexts, now, options);
    let impact: Impact = if blocking {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        run()
    };
    let changed_dependents: Vec<&str> = impact
        .dependents
        .iter()
        .filter(|d| d.changed > 0)
        .map(|d| d.flag.as_str())
        .collect();
    Ok(Json(json!({
        "env": env_name,
        "revision": live.revision,
        "contexts": impact.contexts,
        "flag": impact.flag,
        "dependents": impact.dependents,
        "changed_dependents": changed_dependents,
        "given": given,
        "sample": sample_json(sample.as_ref(), contexts_from_sample(given, impact.contexts)),
    })))
}

fn contexts_from_sample(given: usize, total: usize) -> usize {
    total.saturating_sub(given)
}

/// What the preview took from the recent-contexts sample: `null` when the
/// environment keeps none.
fn sample_json(sample: Option<&guidon_store::Sample>, used: usize) -> Value {
    let Some(sample) = sample else {
        return Value::Null;
    };
    let now = Timestamp::now().as_millisecond();
    let time = crate::samples::time;
    json!({
        "size": used,
        "seen": sample.seen,
        "oldest": time(sample.oldest_ms),
        "newest": time(sample.newest_ms),
        "age_seconds": sample.oldest_ms.map(|ms| (now - ms) / 1000),
    })
}

/// The request's contexts: the array's, then the JSON Lines'.
fn contexts(
    state: &AppState,
    array: Option<Vec<Value>>,
    jsonl: Option<&str>,
) -> ApiResult<Vec<Context>> {
    let mut out = Vec::new();
    let too_many = |path: &str| ApiError::InvalidBody {
        path: path.into(),
        message: format!("{path}: at most {MAX_PREVIEW_CONTEXTS} contexts in one preview"),
    };
    for (i, value) in array.into_iter().flatten().enumerate() {
        let path = format!("contexts[{i}]");
        let map = context_of(state, Some(value)).map_err(|message| ApiError::InvalidBody {
            path: path.clone(),
            message: format!("{path}: {message}"),
        })?;
        if out.len() == MAX_PREVIEW_CONTEXTS {
            return Err(too_many("contexts"));
        }
        out.push(Context::from(map));
    }
    for (n, line) in jsonl.unwrap_or_default().lines().enumerate() {
        let invalid = |message: String| ApiError::InvalidBody {
            path: "contexts_jsonl".into(),
            message: format!("contexts_jsonl line {}: {message}", n + 1),
        };
        let Some(ctx) = Context::from_json_line(line).map_err(|e| invalid(e.to_string()))? else {
            continue;
        };
        if ctx.len() > state.limits.max_context_attributes {
            return Err(invalid(format!(
                "{} attributes; at most {} are accepted",
                ctx.len(),
                state.limits.max_context_attributes
            )));
        }
        if out.len() == MAX_PREVIEW_CONTEXTS {
            return Err(too_many("contexts_jsonl"));
        }
        out.push(ctx);
    }
    Ok(out)
}

#[allow(dead_code)]
mod schema {
    use serde_json::Value;

    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Outcome {
        enabled: bool,
        variant: Option<String>,
        value: Option<Value>,
        /// Present (true) when the flag does not exist on that side.
        not_found: Option<bool>,
    }

    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Transition {
        from: Outcome,
        to: Outcome,
        count: u64,
        /// `count` over the contexts evaluated (0 to 1).
        share: f64,
    }

    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Example {
        /// The context's position in the request (the array's, then the JSON Lines').
        index: u64,
        /// Its bucketing value for the flag, when it has one.
        unit: Option<String>,
        from: Outcome,
        to: Outcome,
    }

    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct FlagImpact {
        flag: String,
        /// Contexts whose outcome differs.
        changed: u64,
        /// Every (from, to) pair met, most frequent first; from == to stays.
        transitions: Vec<Transition>,
        examples: Vec<Example>,
    }

    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Preview {
        env: String,
        /// The current revision the proposal is compared with.
        revision: u64,
        contexts: u64,
        flag: FlagImpact,
        /// Every flag whose prerequisites lead to this one, nearest first.
        dependents: Vec<FlagImpact>,
        /// Those of `dependents` with `changed > 0`.
        changed_dependents: Vec<String>,
    }
}
