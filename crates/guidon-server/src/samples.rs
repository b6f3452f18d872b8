//! Recent contexts (docs/recent-contexts.md): for environments that opted
//! in, the contexts this instance evaluates (`/evaluate`, OFREP) and those
//! SDKs report with their exposures are offered to a bounded sample, for
//! impact previews. Attributes the settings drop are removed and those they
//! hash are replaced by a keyed hash before anything is kept, in memory or
//! in the store.
//!
//! On the request path an offer costs a map lookup when the environment
//! does not sample; when it does, a random priority, and only the contexts
//! that can still be kept (among the `size` highest priorities of the hour
//! in memory) are stripped and encoded. Every second the gathered contexts
//! go to the store (`guidon_store::Store::add_samples`), which keeps per
//! hour the highest priorities of all instances. The settings are read
//! from the store every few seconds, and at once after a change here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::put;
use axum::{Json, Router};
use guidon_engine::Timestamp;
use guidon_store::{
    MAX_RETENTION_HOURS, MAX_SAMPLE_SIZE, Offered, SampleBatch, SampleInfo, SampleSettings, Store,
    hour_of,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::admin::check_key;
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// How often gathered contexts are written to the store.
const FLUSH: Duration = Duration::from_secs(1);
/// How often the settings are read again (changes through other instances).
const REFRESH: Duration = Duration::from_secs(5);
/// Most attribute names in `drop` or `hash`.
const MAX_LISTED: usize = 256;

/// What one environment that samples does to a context before keeping it.
struct Rules {
    size: usize,
    drop: HashSet<String>,
    hash: HashSet<String>,
    key: Vec<u8>,
}

/// (priority, time, context as kept), lowest priority on top.
type Lowest = BinaryHeap<Reverse<(i64, i64, String)>>;

/// Per hour, the highest priorities offered since the last flush.
#[derive(Default)]
struct Gathered {
    hours: BTreeMap<i64, Lowest>,
    seen: BTreeMap<i64, u64>,
}

/// The sampler of this instance.
#[derive(Default)]
pub(crate) struct Sampler {
    rules: ArcSwap<HashMap<String, Arc<Rules>>>,
    gathered: Mutex<HashMap<String, Gathered>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let envs: Vec<String> = self.rules.load().keys().cloned().collect();
        f.debug_struct("Sampler").field("envs", &envs).finish()
    }
}

impl Sampler {
    /// Offers one context of `env` to its sample, if it samples.
    pub(crate) fn offer(&self, env: &str, context: &Map<String, Value>) {
        let rules = self.rules.load();
        let Some(rules) = rules.get(env) else {
            return;
        };
        let now = Timestamp::now().as_millisecond();
        let hour = hour_of(now);
        let priority = random_priority();
        let mut gathered = lock(&self.gathered);
        let g = gathered.entry(env.to_owned()).or_default();
        *g.seen.entry(hour).or_insert(0) += 1;
        let heap = g.hours.entry(hour).or_default();
        if heap.len() >= rules.size
            && heap
                .peek()
                .is_some_and(|Reverse((lowest, _, _))| priority <= *lowest)
        {
            return;
        }
        heap.push(Reverse((priority, now, rules.strip(context))));
        if heap.len() > rules.size {
            heap.pop();
        }
    }

    /// Reads every environment's settings from the store.
    pub(crate) async fn refresh(&self, store: &Store) -> Result<(), guidon_store::StoreError> {
        let mut rules = HashMap::new();
        for s in store.samplings().await? {
            rules.insert(
                s.env,
                Arc::new(Rules {
                    size: usize::try_from(s.settings.size).unwrap_or(usize::MAX),
                    drop: s.settings.drop.into_iter().collect(),
                    hash: s.settings.hash.into_iter().collect(),
                    key: s.hash_key.into_bytes(),
                }),
            );
        }
        self.rules.store(Arc::new(rules));
        Ok(())
    }

    /// Writes what was gathered to the store.
    async fn flush(&self, store: &Store) {
        let gathered = std::mem::take(&mut *lock(&self.gathered));
        for (env, g) in gathered {
            let batch = SampleBatch {
                offered: g
                    .hours
                    .into_values()
                    .flat_map(BinaryHeap::into_vec)
                    .map(|Reverse((priority, at_ms, context))| Offered {
                        at_ms,
                        priority,
                        context,
                    })
                    .collect(),
                seen: g.seen,
            };
            if let Err(e) = store.add_samples(&env, &batch).await {
                tracing::warn!(env, error = %e, "recent contexts not stored");
            }
        }
    }
}

impl Rules {
    /// The context as kept: dropped attributes removed, hashed ones
    /// replaced by `hmac:` and 32 hex digits of their keyed hash.
    fn strip(&self, context: &Map<String, Value>) -> String {
        let kept: Map<String, Value> = context
            .iter()
            .filter(|(name, _)| !self.drop.contains(*name))
            .map(|(name, value)| {
                if self.hash.contains(name) {
                    (name.clone(), Value::String(keyed_hash(&self.key, value)))
                } else {
                    (name.clone(), value.clone())
                }
            })
            .collect();
        Value::Object(kept).to_string()
    }
}

/// A poisoned lock only means a thread panicked holding it; the map is
/// valid at every step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// HMAC-SHA-256 of the value's JSON text under the environment's key.
fn keyed_hash(key: &[u8], value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return "hmac:".to_owned();
    };
    mac.update(text.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("hmac:{}", guidon_store::hex(&digest[..16]))
}

/// A uniformly random priority (non-negative, so it fits a BIGINT).
fn random_priority() -> i64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        // No entropy: the clock's nanoseconds, mixed, still spread priorities.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    i64::try_from(bits >> 1).unwrap_or(i64::MAX)
}

/// Flushes every second and reads the settings every few, until shutdown.
pub(crate) async fn run(state: Arc<AppState>) {
    // An edge keeps no sample (it has no store of its own for it).
    let Ok(store) = state.store() else {
        return;
    };
    let mut since_refresh = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(FLUSH) => {}
            () = state.shutdown.wait() => {
                state.sampler.flush(store).await;
                return;
            }
        }
        state.sampler.flush(store).await;
        since_refresh += FLUSH;
        if since_refresh >= REFRESH {
            since_refresh = Duration::ZERO;
            if let Err(e) = state.sampler.refresh(store).await {
                tracing::warn!(error = %e, "could not read the recent-contexts settings");
            }
        }
    }
}

// ---- the endpoints ----

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/envs/{env}/contexts/sample",
        put(opt_in).get(show).delete(stop),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SampleRequest {
    /// The most contexts kept over the window (1 to 100,000).
    size: u64,
    /// How long a context is kept, in hours (1 to 720).
    retention_hours: u64,
    /// Attributes never kept.
    #[serde(default)]
    drop: Vec<String>,
    /// Attributes kept only as a keyed hash (HMAC-SHA-256, a key per environment).
    #[serde(default)]
    hash: Vec<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct ShowQuery {
    /// Also list the stored contexts, exactly as kept.
    #[serde(default)]
    contexts: bool,
}

fn not_opted_in(env: &str) -> ApiError {
    ApiError::NotFound(format!(
        "environment {env:?} keeps no recent contexts: it has not opted in (PUT /api/v1/envs/{env}/contexts/sample)"
    ))
}

/// An instant of the store (ms), as RFC 3339.
pub(crate) fn time(ms: Option<i64>) -> Option<String> {
    ms.and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
}

fn info_json(env: &str, info: &SampleInfo) -> Value {
    json!({
        "env": env,
        "size": info.settings.size,
        "retention_hours": info.settings.retention_hours,
        "drop": info.settings.drop,
        "hash": info.settings.hash,
        "stored": info.stored,
        "seen": info.seen,
        "oldest": time(info.oldest_ms),
        "newest": time(info.newest_ms),
    })
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/contexts/sample",
    tag = "contexts",
    summary = "Opt in to a recent-contexts sample (or change its settings): size, retention, attributes dropped or hashed",
    params(("env" = String, Path, description = "Environment")),
    request_body = SampleRequest,
    responses((status = 200, description = "The settings and what is stored", body = schema::SampleInfo), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn opt_in(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let request: SampleRequest = body::json(&headers, &bytes).await?;
    let invalid = |path: &str, message: String| ApiError::InvalidBody {
        path: path.into(),
        message: format!("{path}: {message}"),
    };
    if !(1..=MAX_SAMPLE_SIZE).contains(&request.size) {
        return Err(invalid(
            "size",
            format!("1 to {MAX_SAMPLE_SIZE}, got {}", request.size),
        ));
    }
    if !(1..=MAX_RETENTION_HOURS).contains(&request.retention_hours) {
        return Err(invalid(
            "retention_hours",
            format!(
                "1 to {MAX_RETENTION_HOURS}, got {}",
                request.retention_hours
            ),
        ));
    }
    for (path, list) in [("drop", &request.drop), ("hash", &request.hash)] {
        if list.len() > MAX_LISTED {
            return Err(invalid(path, format!("at most {MAX_LISTED} attributes")));
        }
        if let Some(i) = list.iter().position(|a| a.is_empty()) {
            return Err(invalid(
                &format!("{path}[{i}]"),
                "an attribute name, not empty".into(),
            ));
        }
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| ApiError::Internal(e.to_string()))?;
    let settings = SampleSettings {
        size: request.size,
        retention_hours: request.retention_hours,
        drop: request.drop,
        hash: request.hash,
    };
    state
        .store()?
        .set_sampling(&env, &settings, &guidon_store::hex(&key))
        .await?;
    state.sampler.refresh(state.store()?).await?;
    let info = state
        .store()?
        .sampling(&env)
        .await?
        .ok_or_else(|| not_opted_in(&env))?;
    Ok(Json(info_json(&env, &info)))
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/contexts/sample",
    tag = "contexts",
    summary = "The recent-contexts sample's settings, size and age (and, with contexts=true, the contexts as kept)",
    params(("env" = String, Path, description = "Environment"), ShowQuery),
    responses((status = 200, description = "The settings and what is stored", body = schema::SampleInfo), (status = 404, description = "Unknown environment, or it has not opted in", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Query(query): Query<ShowQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let info = state
        .store()?
        .sampling(&env)
        .await?
        .ok_or_else(|| not_opted_in(&env))?;
    let mut out = info_json(&env, &info);
    if query.contexts {
        let sample = state
            .store()?
            .sample(&env)
            .await?
            .ok_or_else(|| not_opted_in(&env))?;
        let contexts: Vec<Value> = sample
            .contexts
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect();
        out["contexts"] = Value::Array(contexts);
    }
    Ok(Json(out))
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}/contexts/sample",
    tag = "contexts",
    summary = "Delete every stored context of the environment and stop sampling",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "{deleted: true}", body = schema::Deleted), (status = 404, description = "Unknown environment, or it has not opted in", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn stop(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    // Stop gathering first, so nothing gathered here is written after.
    let had = state.store()?.stop_sampling(&env).await?;
    state.sampler.refresh(state.store()?).await?;
    lock(&state.sampler.gathered).remove(&env);
    if !had {
        return Err(not_opted_in(&env));
    }
    Ok(Json(json!({"env": env, "deleted": true})))
}

#[allow(dead_code)]
mod schema {
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct SampleInfo {
        env: String,
        size: u64,
        retention_hours: u64,
        drop: Vec<String>,
        hash: Vec<String>,
        /// Contexts stored within the window.
        stored: u64,
        /// Contexts offered within the window (of which `stored` is a sample).
        seen: u64,
        /// The oldest and newest stored context (RFC 3339).
        oldest: Option<String>,
        newest: Option<String>,
        /// With `contexts=true`: the contexts exactly as kept.
        contexts: Option<Vec<serde_json::Value>>,
    }

    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub(crate) struct Deleted {
        env: String,
        deleted: bool,
    }
}
