//! The metric catalogue and experiments over HTTP (admin tokens):
//!
//! - `GET /api/v1/envs/{env}/metrics`, `GET|PUT|DELETE …/metrics/{key}`;
//! - `GET /api/v1/envs/{env}/experiments`, `GET|PUT|DELETE
//!   …/experiments/{key}`, `POST …/experiments/{key}/stop`.
//!
//! Definitions are checked by `guidon_protocol::catalogue` (422 with
//! `details[].path` naming the field) and against the catalogue: a ratio's
//! parts and an experiment's metrics must exist, its flag must exist and
//! have at least two variants with traffic, and a metric an experiment or
//! a ratio uses cannot be deleted. `If-Match: VERSION` (or `If-None-Match:
//! *`) guards against lost updates, as for flags.

use guidon_protocol::api::UserRole;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use guidon_engine::{Problem, Timestamp, ValidationError};
use guidon_protocol::catalogue::{ExperimentDefinition, MetricDefinition, Stored};
use guidon_store::{DefinitionKind, StoredDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::admin::{check_key, etag, expected_version, keyed, parse_definition};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};

type St = State<Arc<AppState>>;

fn time(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// A stored definition as the API answers it.
pub(crate) fn decode<T: DeserializeOwned + Serialize>(
    stored: &StoredDefinition,
) -> ApiResult<Stored<T>> {
    let definition: T = serde_json::from_str(&stored.body).map_err(|e| {
        ApiError::Internal(format!(
            "stored definition {:?} is unreadable: {e}",
            stored.key
        ))
    })?;
    Ok(Stored {
        key: stored.key.clone(),
        version: stored.version,
        updated_at: time(stored.updated_at_ms),
        definition,
    })
}

/// Every metric of `env`'s catalogue.
pub(crate) async fn metrics_of(
    state: &AppState,
    env: &str,
) -> ApiResult<Vec<Stored<MetricDefinition>>> {
    state
        .store()?
        .definitions(env, DefinitionKind::Metric)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Every experiment of `env`.
pub(crate) async fn experiments_of(
    state: &AppState,
    env: &str,
) -> ApiResult<Vec<Stored<ExperimentDefinition>>> {
    state
        .store()?
        .definitions(env, DefinitionKind::Experiment)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// "a, b, c" or "none".
pub(crate) fn names<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = keys.collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn invalid(problems: Vec<Problem>) -> ApiError {
    ApiError::Validation(ValidationError { problems })
}

fn answer<T: Serialize>(status: StatusCode, stored: &Stored<T>) -> Response {
    (
        status,
        [(header::ETAG, etag(stored.version))],
        Json(json!(stored)),
    )
        .into_response()
}

async fn put<T: Serialize>(
    state: &AppState,
    env: &str,
    kind: DefinitionKind,
    key: &str,
    definition: &T,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let expected = expected_version(headers)?;
    let body = serde_json::to_string(definition).map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = Timestamp::now().as_millisecond();
    let stored = state
        .store()?
        .put_definition(env, kind, key, &body, expected, now)
        .await?;
    let status = if stored.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, &decode::<Value>(&stored)?))
}

// ---- the OpenAPI document's shapes of the answers ----

/// A metric as stored: its definition with key, version and last change.
#[derive(utoipa::ToSchema)]
#[schema(as = StoredMetric)]
#[allow(dead_code)]
pub(crate) struct StoredMetricSchema {
    key: String,
    version: u64,
    updated_at: String,
    #[serde(flatten)]
    definition: MetricDefinition,
}

/// The catalogue.
#[derive(utoipa::ToSchema)]
#[schema(as = MetricList)]
#[allow(dead_code)]
pub(crate) struct MetricListSchema {
    metrics: Vec<StoredMetricSchema>,
}

/// An experiment as stored, with its status (scheduled, running, stopped).
#[derive(utoipa::ToSchema)]
#[schema(as = StoredExperiment)]
#[allow(dead_code)]
pub(crate) struct StoredExperimentSchema {
    key: String,
    version: u64,
    updated_at: String,
    status: Option<String>,
    #[serde(flatten)]
    definition: ExperimentDefinition,
}

/// The experiments.
#[derive(utoipa::ToSchema)]
#[schema(as = ExperimentList)]
#[allow(dead_code)]
pub(crate) struct ExperimentListSchema {
    experiments: Vec<StoredExperimentSchema>,
}

// ---- metrics ----

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/metrics",
    tag = "experiments",
    summary = "The environment's metric catalogue",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "The metrics, by key", body = MetricListSchema), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn list_metrics(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_role(&env, UserRole::Viewer)?;
    check_key("environment", &env)?;
    Ok(Json(json!({"metrics": metrics_of(&state, &env).await?})))
}

/// The definition `key` of `kind`, or a 404 naming those that exist.
async fn definition_or_404(
    state: &AppState,
    env: &str,
    kind: DefinitionKind,
    key: &str,
) -> ApiResult<StoredDefinition> {
    let store = state.store()?;
    if let Some(found) = store.definition(env, kind, key).await? {
        return Ok(found);
    }
    let (what, plural) = match kind {
        DefinitionKind::Metric => ("metric", "metrics"),
        DefinitionKind::Experiment => ("experiment", "experiments"),
    };
    let all = store.definitions(env, kind).await?;
    Err(ApiError::NotFound(format!(
        "no {what} {key:?} in environment {env:?}; its {plural}: {}",
        names(all.iter().map(|d| d.key.as_str()))
    )))
}

async fn metric_or_404(state: &AppState, env: &str, key: &str) -> ApiResult<StoredDefinition> {
    definition_or_404(state, env, DefinitionKind::Metric, key).await
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/metrics/{key}",
    tag = "experiments",
    summary = "One metric of the catalogue",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Metric key")),
    responses((status = 200, description = "The metric", body = StoredMetricSchema), (status = 404, description = "Unknown environment or metric: the message names those that exist", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn get_metric(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Viewer)?;
    check_key("environment", &env)?;
    let stored = metric_or_404(&state, &env, &key).await?;
    Ok(answer(StatusCode::OK, &decode::<Value>(&stored)?))
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/metrics/{key}",
    tag = "experiments",
    summary = "Create or replace a metric (If-Match: VERSION; If-None-Match: * to create only)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Metric key")),
    request_body = guidon_protocol::catalogue::MetricDefinition,
    responses((status = 201, description = "Created", body = StoredMetricSchema), (status = 200, description = "Replaced", body = StoredMetricSchema), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Invalid: details[].path names each field", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn put_metric(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    check_key("metric", &key)?;
    let value: Value = body::json(&headers, &bytes).await?;
    let metric: MetricDefinition = parse_definition(keyed(value, &key)?)?;
    let catalogue = metrics_of(&state, &env).await?;
    let problems = metric.validate(&key, |k| {
        catalogue.iter().find(|m| m.key == k).map(|m| &m.definition)
    });
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    // A metric that a ratio uses as a part cannot become a ratio.
    if metric.kind == guidon_protocol::catalogue::MetricKind::Ratio
        && let Some(user) = catalogue.iter().find(|m| {
            m.definition.numerator.as_deref() == Some(key.as_str())
                || m.definition.denominator.as_deref() == Some(key.as_str())
        })
    {
        return Err(invalid(vec![Problem {
            path: "kind".into(),
            message: format!(
                "metric {key:?} is a part of the ratio {:?}; a ratio's parts are binomial or sum metrics",
                user.key
            ),
        }]));
    }
    put(
        &state,
        &env,
        DefinitionKind::Metric,
        &key,
        &metric,
        &headers,
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}/metrics/{key}",
    tag = "experiments",
    summary = "Delete a metric no experiment or ratio uses",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Metric key")),
    responses((status = 204, description = "Deleted"), (status = 409, description = "Used by an experiment or a ratio: the message names them", body = ErrorBody), (status = 404, description = "Unknown environment or metric", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn delete_metric(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    metric_or_404(&state, &env, &key).await?;
    let mut users: Vec<String> = metrics_of(&state, &env)
        .await?
        .into_iter()
        .filter(|m| {
            m.definition.numerator.as_deref() == Some(key.as_str())
                || m.definition.denominator.as_deref() == Some(key.as_str())
        })
        .map(|m| format!("ratio {:?}", m.key))
        .collect();
    users.extend(
        experiments_of(&state, &env)
            .await?
            .into_iter()
            .filter(|e| e.definition.metrics().any(|(m, _)| m == key))
            .map(|e| format!("experiment {:?}", e.key)),
    );
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "metric {key:?} is used by {}; change or delete them first",
            users.join(", ")
        )));
    }
    state
        .store()?
        .delete_definition(&env, DefinitionKind::Metric, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- experiments ----

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/experiments",
    tag = "experiments",
    summary = "The environment's experiments",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "The experiments, by key, each with its status", body = ExperimentListSchema), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn list_experiments(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_role(&env, UserRole::Viewer)?;
    check_key("environment", &env)?;
    let now = Timestamp::now();
    let experiments: Vec<Value> = experiments_of(&state, &env)
        .await?
        .iter()
        .map(|e| {
            let mut v = json!(e);
            v["status"] = json!(status(&e.definition, now));
            v
        })
        .collect();
    Ok(Json(json!({ "experiments": experiments })))
}

/// `scheduled` (before its start), `running` or `stopped` (after its stop).
pub(crate) fn status(experiment: &ExperimentDefinition, now: Timestamp) -> &'static str {
    if experiment.stop_time().is_some_and(|t| t <= now) {
        "stopped"
    } else if experiment.start_time().is_some_and(|t| t > now) {
        "scheduled"
    } else {
        "running"
    }
}

/// The experiment `key`, or a 404 naming those that exist.
pub(crate) async fn experiment_or_404(
    state: &AppState,
    env: &str,
    key: &str,
) -> ApiResult<Stored<ExperimentDefinition>> {
    decode(&definition_or_404(state, env, DefinitionKind::Experiment, key).await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/experiments/{key}",
    tag = "experiments",
    summary = "One experiment's definition and status",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Experiment key")),
    responses((status = 200, description = "The experiment", body = StoredExperimentSchema), (status = 404, description = "Unknown environment or experiment: the message names those that exist", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn get_experiment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Viewer)?;
    check_key("environment", &env)?;
    let stored = experiment_or_404(&state, &env, &key).await?;
    let mut value = json!(stored);
    value["status"] = json!(status(&stored.definition, Timestamp::now()));
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag(stored.version))],
        Json(value),
    )
        .into_response())
}

/// Checks an experiment against the environment: its metrics exist, its
/// flag exists and has two variants with traffic.
async fn check_experiment(
    state: &AppState,
    env: &str,
    key: &str,
    experiment: &ExperimentDefinition,
) -> ApiResult<()> {
    let catalogue = metrics_of(state, env).await?;
    let mut problems = experiment.validate(key, |m| catalogue.iter().any(|c| c.key == m));
    if let Some(p) = problems
        .iter_mut()
        .find(|p| p.message.starts_with("no metric"))
    {
        p.message = format!(
            "{}; its metrics: {}",
            p.message,
            names(catalogue.iter().map(|m| m.key.as_str()))
        );
    }
    let live = state.env(env).await?.live.load_full();
    match live.file().flags.iter().find(|f| f.key == experiment.flag) {
        None => problems.push(Problem {
            path: "flag".into(),
            message: format!("no flag {:?} in environment {env:?}", experiment.flag),
        }),
        Some(flag) => {
            let arms = flag.variants.iter().filter(|v| v.weight > 0.0).count();
            if arms < 2 {
                problems.push(Problem {
                    path: "flag".into(),
                    message: format!(
                        "flag {:?} has {arms} variant(s) with a positive weight; an experiment compares at least two",
                        experiment.flag
                    ),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(invalid(problems))
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/experiments/{key}",
    tag = "experiments",
    summary = "Create or replace an experiment (If-Match: VERSION; If-None-Match: * to create only)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Experiment key")),
    request_body = guidon_protocol::catalogue::ExperimentDefinition,
    responses((status = 201, description = "Created", body = StoredExperimentSchema), (status = 200, description = "Replaced", body = StoredExperimentSchema), (status = 412, description = "If-Match names another version", body = ErrorBody), (status = 422, description = "Invalid: details[].path names each field", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn put_experiment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    check_key("experiment", &key)?;
    let value: Value = body::json(&headers, &bytes).await?;
    let mut experiment: ExperimentDefinition = parse_definition(keyed(value, &key)?)?;
    check_experiment(&state, &env, &key, &experiment).await?;
    // Started now unless said otherwise: results count from here.
    if experiment.start.is_none() {
        experiment.start = Some(Timestamp::now().to_string());
    }
    put(
        &state,
        &env,
        DefinitionKind::Experiment,
        &key,
        &experiment,
        &headers,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/experiments/{key}/stop",
    tag = "experiments",
    summary = "Stop an experiment now: results count exposures and conversions up to this moment",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Experiment key")),
    responses((status = 200, description = "The stopped experiment", body = StoredExperimentSchema), (status = 409, description = "Already stopped", body = ErrorBody), (status = 404, description = "Unknown environment or experiment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn stop_experiment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    let stored = experiment_or_404(&state, &env, &key).await?;
    let now = Timestamp::now();
    if status(&stored.definition, now) == "stopped" {
        return Err(ApiError::Conflict(format!(
            "experiment {key:?} stopped at {}",
            stored.definition.stop.as_deref().unwrap_or("?")
        )));
    }
    let mut experiment = stored.definition;
    experiment.stop = Some(now.to_string());
    let expected = expected_version(&headers)?.or(Some(stored.version));
    let body = serde_json::to_string(&experiment).map_err(|e| ApiError::Internal(e.to_string()))?;
    let saved = state
        .store()?
        .put_definition(
            &env,
            DefinitionKind::Experiment,
            &key,
            &body,
            expected,
            now.as_millisecond(),
        )
        .await?;
    Ok(answer(StatusCode::OK, &decode::<Value>(&saved)?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}/experiments/{key}",
    tag = "experiments",
    summary = "Delete an experiment's definition (its events stay)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Experiment key")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown environment or experiment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn delete_experiment(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_role(&env, UserRole::Editor)?;
    check_key("environment", &env)?;
    experiment_or_404(&state, &env, &key).await?;
    state
        .store()?
        .delete_definition(&env, DefinitionKind::Experiment, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
