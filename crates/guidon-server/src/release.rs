//! Guarded rollouts over HTTP and their executor.
//!
//! - `PUT /api/v1/envs/{env}/flags/{key}/release` with a plan
//!   (`guidon_release::Plan`: steps, guards on catalogue metrics, `alpha`,
//!   `tuning`) starts it: the flag must be a rollout of one variant (the
//!   new behaviour) against its `off_variant` (the old), so that the SDK
//!   records exposures on both sides (the engine marks both, see
//!   `CompiledFlag::compares_off`); its rollout is set to the first step.
//! - `GET …/release`: the plan, where it is, and every decision taken with
//!   its evidence. `POST …/release/pause|resume|skip|abort`: people may
//!   stop, restart, jump a step or roll back at any time.
//!
//! Every instance, each second, steps the running releases: it reads each
//! guard's metric for the two sides (the experiment events since the
//! release began), asks `guidon_release::decide`, and applies what it
//! says. An advance or a rollback is a write of the flag by the actor
//! `guard`, whose audit entry states the decision and the evidence; the
//! release's new state is taken in the same transaction (a compare-and-set
//! on its version), so of several instances one takes each step. A pause
//! and a completion change no flag: they are recorded in the release's
//! decisions.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use guidon_engine::model::{Flag, Rollout};
use guidon_engine::{Problem, Timestamp, ValidationError};
use guidon_events::{EventStore, MetricQuery};
use guidon_protocol::catalogue::{MetricDefinition, MetricKind as CatalogueKind};
use guidon_protocol::{Definition, Kind};
use guidon_release::{
    Action, Decision, Evidence, Observation, Plan, Progress, Side, Status, decide,
};
use guidon_stats::MetricKind;
use guidon_store::{ReleaseStep, Store, StoredRelease};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::admin::check_key;
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};

type St = State<Arc<AppState>>;

/// Decisions kept per release (the latest).
const KEPT_DECISIONS: usize = 100;

/// Where a release is, with the two sides it compares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReleaseState {
    step: usize,
    step_started_ms: i64,
    status: Status,
    started_ms: i64,
    /// The variant of the new behaviour, and the off variant.
    treatment: String,
    control: String,
    /// Per guard: the event metric read, and its kind.
    guards: Vec<(String, String, MetricKind)>,
}

fn invalid(problems: Vec<Problem>) -> ApiError {
    ApiError::Validation(ValidationError { problems })
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Running => "running",
        Status::Paused => "paused",
        Status::RolledBack => "rolled_back",
        Status::Completed => "completed",
    }
}

/// The two sides of a release-shaped flag: its one weighted variant and
/// its off variant.
fn sides(flag: &Flag) -> Option<(String, String)> {
    let off = flag.off_variant.clone()?;
    let mut weighted = flag.variants.iter().filter(|v| v.weight > 0.0);
    match (weighted.next(), weighted.next()) {
        (Some(v), None) if v.key != off => Some((v.key.clone(), off)),
        _ => None,
    }
}

fn with_percentage(flag: &Flag, percentage: f64) -> Flag {
    let mut flag = flag.clone();
    flag.enabled = true;
    flag.rollout = Some(match flag.rollout.take() {
        Some(r) => Rollout { percentage, ..r },
        None => Rollout {
            percentage,
            salt: None,
            bucket_by: None,
        },
    });
    flag
}

fn render(r: &StoredRelease) -> Value {
    json!({
        "env": r.env,
        "flag": r.key,
        "plan": serde_json::from_str::<Value>(&r.plan).unwrap_or(Value::Null),
        "state": serde_json::from_str::<Value>(&r.state).unwrap_or(Value::Null),
        "status": r.status,
        "decisions": serde_json::from_str::<Value>(&r.decisions).unwrap_or(json!([])),
        "version": r.version,
        "created_by": r.created_by,
        "updated_at": Timestamp::from_millisecond(r.updated_at_ms).map_or(Value::Null, |t| json!(t.to_string())),
        "test": "always-valid confidence sequence of the difference of means (Waudby-Smith et al. 2023), at alpha / guards, tuned by N* = tuning",
    })
}

async fn flag_of(store: &Store, env: &str, key: &str) -> ApiResult<(Flag, u64)> {
    let stored = store.get(env, Kind::Flag, key).await?;
    match stored.definition {
        Definition::Flag(flag) => Ok((flag, stored.version)),
        Definition::Segment(_) => Err(ApiError::Internal("a flag key holds a segment".into())),
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/envs/{env}/flags/{key}/release",
    tag = "flags",
    summary = "Start a guarded rollout: steps that advance only while the guards' metrics stay healthy",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body(content = Object, description = "A plan: {steps: [{percentage, hold_seconds, min_units}], guards: [{metric, kind, worse, threshold, on_breach}], alpha, tuning}"),
    responses((status = 201, description = "Started", body = ReleaseSchema), (status = 422, description = "An invalid plan (percentages going down, a hold of zero, a guard on an unknown metric) or a flag that is not a rollout of one variant against its off variant: details[].path", body = ErrorBody), (status = 409, description = "A release is running on this flag", body = ErrorBody), (status = 404, description = "Unknown environment or flag", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn start(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    check_key("flag", &key)?;
    let store = state.store()?;
    let plan: Plan = body::json(&headers, &bytes).await?;
    let mut problems: Vec<Problem> = plan
        .validate()
        .into_iter()
        .map(|p| problem(&p.path, p.message))
        .collect();
    // Guards read the catalogue: a binomial or sum metric's event.
    let catalogue = crate::experiments::catalogue::metrics_of(&state, &env).await?;
    let mut guards = Vec::new();
    for (i, guard) in plan.guards.iter().enumerate() {
        match catalogue.iter().find(|m| m.key == guard.metric) {
            None => problems.push(problem(
                &format!("guards[{i}].metric"),
                format!(
                    "no metric {:?} in this environment's catalogue; its metrics: {}",
                    guard.metric,
                    crate::experiments::catalogue::names(catalogue.iter().map(|m| m.key.as_str()))
                ),
            )),
            Some(m) => {
                let MetricDefinition { kind, event, .. } = &m.definition;
                let wanted = match kind {
                    CatalogueKind::Binomial => MetricKind::Binomial,
                    CatalogueKind::Sum => MetricKind::Continuous,
                    CatalogueKind::Ratio => {
                        problems.push(problem(
                            &format!("guards[{i}].metric"),
                            "a guard reads a binomial or sum metric, not a ratio",
                        ));
                        continue;
                    }
                };
                if wanted != guard.kind {
                    problems.push(problem(
                        &format!("guards[{i}].kind"),
                        format!("metric {:?} is {kind:?}: use kind {wanted:?}", guard.metric)
                            .to_lowercase(),
                    ));
                }
                guards.push((
                    guard.metric.clone(),
                    event.clone().unwrap_or_default(),
                    guard.kind,
                ));
            }
        }
    }
    let (flag, version) = flag_of(store, &env, &key).await?;
    let Some((treatment, control)) = sides(&flag) else {
        problems.push(problem(
            "flag",
            format!(
                "flag {key:?} is not a rollout of one variant against its off variant: give it an off_variant (the old behaviour, weight 0) and one variant with all the weight (the new), so that both sides record exposures"
            ),
        ));
        return Err(invalid(problems));
    };
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if let Some(existing) = store.release(&env, &key).await?
        && existing.status == "running"
    {
        return Err(ApiError::Conflict(format!(
            "a release is running on flag {key:?}: pause or abort it first"
        )));
    }
    let now = Timestamp::now().as_millisecond();
    let release_state = ReleaseState {
        step: 0,
        step_started_ms: now,
        status: Status::Running,
        started_ms: now,
        treatment,
        control,
        guards,
    };
    let plan_json = serde_json::to_string(&plan).map_err(|e| ApiError::Internal(e.to_string()))?;
    let state_json =
        serde_json::to_string(&release_state).map_err(|e| ApiError::Internal(e.to_string()))?;
    let stored = store
        .put_release(
            &env,
            &key,
            &plan_json,
            &state_json,
            "running",
            &caller.name,
            None,
        )
        .await?;
    // The first step's percentage, written now.
    let first = plan.steps[0].percentage;
    store
        .upsert_flag(
            &env,
            &with_percentage(&flag, first),
            Some(version),
            &format!("guard: release started by {} at {first}%", caller.name),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(render(&stored))).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/flags/{key}/release",
    tag = "flags",
    summary = "A flag's release plan: its steps and guards, where it is, and every decision with its evidence",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, description = "The release", body = ReleaseSchema), (status = 404, description = "No release on this flag", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn get_one(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let release =
        state.store()?.release(&env, &key).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no release plan on flag {key:?} in {env:?}"))
        })?;
    Ok(Json(render(&release)))
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/flags/{key}/release/{action}",
    tag = "flags",
    summary = "A person's step: pause, resume, skip (to the next step now) or abort (roll back to 0 %)",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key"), ("action" = String, Path, description = "pause, resume, skip or abort")),
    responses((status = 200, description = "Done", body = ReleaseSchema), (status = 409, description = "Not possible from where the release is", body = ErrorBody), (status = 404, description = "No release on this flag", body = ErrorBody), (status = 400, description = "Unknown action", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn act(
    State(state): St,
    caller: Caller,
    Path((env, key, action)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let store = state.store()?;
    let release = store
        .release(&env, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release plan on flag {key:?} in {env:?}")))?;
    let plan: Plan =
        serde_json::from_str(&release.plan).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut rs: ReleaseState =
        serde_json::from_str(&release.state).map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = Timestamp::now().as_millisecond();
    let who = &caller.name;
    let (new_status, percentage, what) = match (action.as_str(), rs.status) {
        ("pause", Status::Running) => (Status::Paused, None, format!("paused by {who}")),
        ("resume", Status::Paused) => (Status::Running, None, format!("resumed by {who}")),
        ("skip", Status::Running | Status::Paused) => {
            if rs.step + 1 >= plan.steps.len() {
                return Err(ApiError::Conflict("the release is at its last step".into()));
            }
            rs.step += 1;
            rs.step_started_ms = now;
            let p = plan.steps[rs.step].percentage;
            (rs.status, Some(p), format!("skipped to {p}% by {who}"))
        }
        ("abort", Status::Running | Status::Paused) => (
            Status::RolledBack,
            Some(0.0),
            format!("aborted by {who}: rolled back to 0%"),
        ),
        ("pause" | "resume" | "skip" | "abort", s) => {
            return Err(ApiError::Conflict(format!(
                "cannot {action} a release that is {}",
                status_name(s)
            )));
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
                "action must be pause, resume, skip or abort, got {action:?}"
            )));
        }
    };
    rs.status = new_status;
    if new_status == Status::Running && action == "resume" {
        rs.step_started_ms = now;
    }
    let step = next_step(
        &release,
        &rs,
        json!({"decision": action, "by": who, "what": what}),
        now,
    )?;
    let done = match percentage {
        Some(p) => {
            let (flag, version) = flag_of(store, &env, &key).await?;
            store
                .step_release_with_flag(
                    step,
                    &with_percentage(&flag, p),
                    Some(version),
                    &format!("{who}: release {what}"),
                )
                .await?
                .is_some()
        }
        None => store.step_release(&step).await?,
    };
    if !done {
        return Err(ApiError::Conflict(
            "the release moved meanwhile: read it again".into(),
        ));
    }
    let release = store
        .release(&env, &key)
        .await?
        .ok_or_else(|| ApiError::Internal("release vanished".into()))?;
    Ok(Json(render(&release)))
}

/// The compare-and-set from `release` to `state`, with `decision`
/// appended (the latest [`KEPT_DECISIONS`]).
fn next_step(
    release: &StoredRelease,
    state: &ReleaseState,
    mut decision: Value,
    now_ms: i64,
) -> ApiResult<ReleaseStep> {
    let mut decisions: Vec<Value> = serde_json::from_str(&release.decisions).unwrap_or_default();
    decision["at"] =
        Timestamp::from_millisecond(now_ms).map_or(Value::Null, |t| json!(t.to_string()));
    decisions.push(decision);
    if decisions.len() > KEPT_DECISIONS {
        decisions.drain(..decisions.len() - KEPT_DECISIONS);
    }
    Ok(ReleaseStep {
        env: release.env.clone(),
        key: release.key.clone(),
        from_version: release.version,
        state: serde_json::to_string(state).map_err(|e| ApiError::Internal(e.to_string()))?,
        status: status_name(state.status).to_owned(),
        decisions: serde_json::to_string(&decisions)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    })
}

/// The evidence in words, for the audit's actor line.
fn summary(evidence: &[Evidence]) -> String {
    evidence
        .iter()
        .map(|e| {
            format!(
                "{}: {:.4} vs {:.4} (n {} / {}), difference {:+.4} in [{:+.4}, {:+.4}] at alpha {}",
                e.metric,
                e.treatment_mean,
                e.control_mean,
                e.treatment_units,
                e.control_units,
                e.difference,
                e.interval.lower,
                e.interval.upper,
                e.alpha
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// ---- the executor ----

/// One pass over the running releases.
pub(crate) async fn step_all(store: &Store, events: &EventStore) {
    let running = match store.releases_with_status("running").await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the running releases");
            return;
        }
    };
    for release in running {
        if let Err(e) = step_one(store, events, &release).await {
            tracing::warn!(env = %release.env, flag = %release.key, error = %e, "release not stepped; retrying");
        }
    }
}

async fn step_one(
    store: &Store,
    events: &EventStore,
    release: &StoredRelease,
) -> Result<(), ApiError> {
    let plan: Plan =
        serde_json::from_str(&release.plan).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut rs: ReleaseState =
        serde_json::from_str(&release.state).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (flag, version) = flag_of(store, &release.env, &release.key).await?;
    let variants = [rs.treatment.as_str(), rs.control.as_str()];
    let mut observations = Vec::new();
    let mut exposed = 0;
    for (metric, event, kind) in &rs.guards {
        let totals = events
            .experiment_totals(
                &release.env,
                &MetricQuery {
                    from_ms: Some(rs.started_ms),
                    ..MetricQuery::new(&release.key, &variants, event, flag.bucket_by())
                },
            )
            .await?;
        let side = |i: usize| {
            let t = &totals.variants[i];
            match kind {
                MetricKind::Binomial => Side {
                    units: t.units,
                    sum: t.converted as f64,
                    sum_squares: t.converted as f64,
                },
                _ => Side {
                    units: t.units,
                    sum: t.sum,
                    sum_squares: t.sum_squares,
                },
            }
        };
        exposed = totals.variants[0].units;
        observations.push(Observation {
            metric: metric.clone(),
            treatment: side(0),
            control: side(1),
        });
    }
    if rs.guards.is_empty() {
        // No guard: exposures alone (any event name reads them).
        let totals = events
            .experiment_totals(
                &release.env,
                &MetricQuery {
                    from_ms: Some(rs.started_ms),
                    ..MetricQuery::new(&release.key, &variants, "exposures-only", flag.bucket_by())
                },
            )
            .await?;
        exposed = totals.variants[0].units;
    }
    let progress = Progress {
        step: rs.step,
        step_started_ms: rs.step_started_ms,
        status: rs.status,
    };
    let now = Timestamp::now().as_millisecond();
    let decision = decide(&plan, &progress, &observations, exposed, now);
    let record = serde_json::to_value(&decision).unwrap_or(Value::Null);
    match decision {
        Decision::Wait { .. } => Ok(()),
        Decision::Advance {
            step,
            percentage,
            evidence,
        } => {
            rs.step = step;
            rs.step_started_ms = now;
            let actor = format!("guard: advance to {percentage}% ({})", summary(&evidence));
            let step = next_step(release, &rs, record, now)?;
            store
                .step_release_with_flag(
                    step,
                    &with_percentage(&flag, percentage),
                    Some(version),
                    &actor,
                )
                .await?;
            Ok(())
        }
        Decision::Complete { .. } => {
            rs.status = Status::Completed;
            store
                .step_release(&next_step(release, &rs, record, now)?)
                .await?;
            Ok(())
        }
        Decision::Breach {
            action,
            metric,
            evidence,
        } => match action {
            Action::Rollback => {
                rs.status = Status::RolledBack;
                let actor = format!(
                    "guard: rollback to 0%, {metric} breached ({})",
                    summary(&evidence)
                );
                let step = next_step(release, &rs, record, now)?;
                store
                    .step_release_with_flag(
                        step,
                        &with_percentage(&flag, 0.0),
                        Some(version),
                        &actor,
                    )
                    .await?;
                Ok(())
            }
            Action::Pause => {
                rs.status = Status::Paused;
                store
                    .step_release(&next_step(release, &rs, record, now)?)
                    .await?;
                Ok(())
            }
        },
    }
}

/// A release, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = Release)]
#[allow(dead_code)]
pub(crate) struct ReleaseSchema {
    env: String,
    flag: String,
    /// {steps, guards, alpha, tuning}.
    plan: Value,
    /// {step, step_started_ms, status, started_ms, treatment, control, guards}.
    state: Value,
    /// running, paused, rolled_back or completed.
    status: String,
    /// Every decision taken, with its evidence.
    decisions: Vec<Value>,
    version: u64,
    created_by: String,
    updated_at: String,
    /// The test behind every decision.
    test: String,
}
