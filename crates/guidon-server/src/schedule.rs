//! Scheduled changes: a change to a flag (a JSON merge patch, a whole new
//! definition, or its deletion) to be applied at a time given with a time
//! zone, cancellable until then.
//!
//! - `POST /api/v1/envs/{env}/flags/{key}/schedule` with
//!   `{"at": "2026-12-24T18:00", "time_zone": "Europe/Paris", "patch": {"enabled": true}}`
//!   (or `"flag": {...}`, or `"delete": true`; `at` may carry its own offset);
//! - `GET /api/v1/envs/{env}/schedules`, `GET …/schedules/{id}`, `DELETE
//!   …/schedules/{id}` (cancel).
//!
//! Every instance runs [`run`]: each second (and at once at start) it
//! applies what is due through the store's [`Store::apply_planned_change`],
//! which writes the change and marks it applied in one transaction, so
//! that of several instances on one PostgreSQL exactly one applies it, and
//! a schedule that passed while every instance was down is applied at the
//! next start. The audit's actor names the schedule and its author, and
//! how late it was when more than [`LATE`].
//!
//! A patch is applied to the flag as it is when due; a replacement or a
//! deletion only to the version it was planned against (otherwise it
//! fails, naming both versions, rather than overwrite a change made
//! meanwhile).
//!
//! [`Store::apply_planned_change`]: guidon_store::Store::apply_planned_change

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use guidon_engine::model::Flag;
use guidon_engine::{Problem, Timestamp, ValidationError};
use guidon_protocol::{Definition, Edit, Kind};
use guidon_store::{NewPlannedChange, PlannedChange, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{check_key, parse_definition};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::patch::merge_patch;

/// How often each instance looks for due changes.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// Applied later than this after its time, a change is said to be late.
pub(crate) const LATE: Duration = Duration::from_secs(5);
/// How many times a patch is re-read and re-applied when another write
/// wins the race for the flag.
const PATCH_RETRIES: usize = 5;

type St = State<Arc<AppState>>;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleRequest {
    /// When: RFC 3339 with an offset (`2026-12-24T17:00:00Z`), or a local
    /// date and time (`2026-12-24T18:00`) read in `time_zone`.
    at: String,
    /// An IANA time zone (`Europe/Paris`); needed for a local time.
    #[serde(default)]
    time_zone: Option<String>,
    /// A JSON merge patch applied to the flag as it is when due.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    patch: Option<Value>,
    /// A whole new definition, applied only if the flag is still at the
    /// version it had when scheduled.
    #[serde(default)]
    #[schema(value_type = Option<guidon_engine::model::Flag>)]
    flag: Option<Value>,
    /// Delete the flag (only if still at the version it had).
    #[serde(default)]
    delete: Option<bool>,
}

fn field(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(ValidationError {
        problems: vec![Problem {
            path: path.into(),
            message: message.into(),
        }],
    })
}

/// The instant of `at` in `time_zone`, and the zone's name to keep.
fn due_time(at: &str, time_zone: Option<&str>) -> ApiResult<(Timestamp, String)> {
    let zone = match time_zone {
        Some(name) => Some(jiff::tz::TimeZone::get(name).map_err(|_| {
            field(
                "time_zone",
                format!("unknown time zone {name:?}: give an IANA name such as Europe/Paris"),
            )
        })?),
        None => None,
    };
    if let Ok(instant) = at.parse::<Timestamp>() {
        return Ok((instant, time_zone.unwrap_or("UTC").to_owned()));
    }
    let civil: jiff::civil::DateTime = at.parse().map_err(|_| {
        field(
            "at",
            format!("not a time: {at:?}; give RFC 3339 (2026-12-24T17:00:00Z) or a local time (2026-12-24T18:00) with time_zone"),
        )
    })?;
    let Some(zone) = zone else {
        return Err(field(
            "time_zone",
            format!("{at:?} has no offset: give time_zone (an IANA name) to read it in"),
        ));
    };
    let zoned = civil
        .to_zoned_datetime(zone)
        .map_err(|e| field("at", format!("{at:?} in {time_zone:?}: {e}")))?;
    Ok((zoned.timestamp(), time_zone.unwrap_or("UTC").to_owned()))
}

fn time(ms: i64) -> Value {
    Timestamp::from_millisecond(ms).map_or(Value::Null, |t| json!(t.to_string()))
}

/// A planned change as the API answers it.
pub(crate) fn render(p: &PlannedChange) -> Value {
    let local = Timestamp::from_millisecond(p.due_at_ms).ok().and_then(|t| {
        jiff::tz::TimeZone::get(&p.time_zone)
            .ok()
            .map(|z| t.to_zoned_datetime(z).to_string())
    });
    json!({
        "id": p.id,
        "env": p.env,
        "flag": p.key,
        "change": serde_json::from_str::<Value>(&p.change).unwrap_or(Value::Null),
        "base_version": p.base_version,
        "due_at": time(p.due_at_ms),
        "due_local": local,
        "time_zone": p.time_zone,
        "status": p.status,
        "created_by": p.created_by,
        "created_at": time(p.created_at_ms),
        "finished_at": p.finished_at_ms.map_or(Value::Null, time),
        "finished_by": p.finished_by,
        "applied_revision": p.applied_revision,
        "late_seconds": p.late_ms.map(|ms| ms as f64 / 1000.0),
        "error": p.error,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/envs/{env}/flags/{key}/schedule",
    tag = "flags",
    summary = "Schedule a change to a flag: a merge patch, a new definition or its deletion, at a time in a time zone",
    params(("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Flag key")),
    request_body = ScheduleRequest,
    responses((status = 201, description = "Scheduled", body = PlannedChangeSchema), (status = 422, description = "A time in the past, an unknown time zone, an invalid change: details[].path names the field", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 404, description = "Unknown environment or flag", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn schedule(
    State(state): St,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    check_key("flag", &key)?;
    let request: ScheduleRequest = body::json(&headers, &bytes).await?;
    let (due, time_zone) = due_time(&request.at, request.time_zone.as_deref())?;
    if due <= Timestamp::now() {
        return Err(field(
            "at",
            format!("{due} is in the past: a schedule is for later"),
        ));
    }
    let current = match state.store()?.get(&env, Kind::Flag, &key).await {
        Ok(stored) => Some(stored),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let given = [
        request.patch.is_some(),
        request.flag.is_some(),
        request.delete == Some(true),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(field(
            "patch",
            "give exactly one of patch (a merge patch), flag (a new definition) or delete: true",
        ));
    }
    let (change, base_version) = if let Some(patch) = request.patch {
        let Some(stored) = &current else {
            return Err(ApiError::NotFound(format!(
                "flag {key:?} not found in environment {env:?}: a patch needs a flag"
            )));
        };
        if !patch.is_object() {
            return Err(field("patch", "a merge patch is an object"));
        }
        // Checked now against the flag as it is, applied to it as it is then.
        let Definition::Flag(flag) = &stored.definition else {
            return Err(ApiError::Internal(
                "a flag's definition is not a flag".into(),
            ));
        };
        let mut value =
            serde_json::to_value(flag).map_err(|e| ApiError::Internal(e.to_string()))?;
        merge_patch(&mut value, &patch);
        let _: Flag = parse_definition(value).map_err(|e| prefix(e, "patch"))?;
        (json!({ "patch": patch }), None)
    } else if let Some(flag) = request.flag {
        let flag = crate::admin::keyed(flag, &key).map_err(|e| prefix(e, "flag"))?;
        let parsed: Flag = parse_definition(flag.clone()).map_err(|e| prefix(e, "flag"))?;
        (
            json!({ "flag": parsed }),
            Some(current.as_ref().map_or(0, |c| c.version)),
        )
    } else {
        let Some(stored) = &current else {
            return Err(ApiError::NotFound(format!(
                "flag {key:?} not found in environment {env:?}"
            )));
        };
        (json!({ "delete": true }), Some(stored.version))
    };
    let change = change.to_string();
    let planned = state
        .store()?
        .plan_change(NewPlannedChange {
            env: &env,
            key: &key,
            change: &change,
            base_version,
            due_at_ms: due.as_millisecond(),
            time_zone: &time_zone,
            created_by: &caller.name,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(render(&planned))).into_response())
}

/// A body error inside `patch` or `flag` named at its place.
fn prefix(e: ApiError, at: &str) -> ApiError {
    match e {
        ApiError::InvalidBody { path, message } => ApiError::InvalidBody {
            path: if path.is_empty() {
                at.to_owned()
            } else {
                format!("{at}.{path}")
            },
            message: format!("{at}: {message}"),
        },
        other => other,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/schedules",
    tag = "flags",
    summary = "The environment's scheduled changes, newest first",
    params(("env" = String, Path, description = "Environment")),
    responses((status = 200, description = "{schedules: [...]}", body = ScheduleListSchema), (status = 404, description = "Unknown environment", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn list(
    State(state): St,
    caller: Caller,
    Path(env): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let all = state.store()?.planned_changes(&env, 1000).await?;
    Ok(Json(
        json!({"schedules": all.iter().map(render).collect::<Vec<_>>()}),
    ))
}

fn id_of(text: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("a schedule id is a positive number, got {text:?}"))
        })
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/schedules/{id}",
    tag = "flags",
    summary = "One scheduled change: pending, applied (when, by which instance, at which revision, how late), cancelled or failed (why)",
    params(("env" = String, Path, description = "Environment"), ("id" = i64, Path, description = "Schedule id")),
    responses((status = 200, description = "The schedule", body = PlannedChangeSchema), (status = 404, description = "Unknown environment or schedule", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn get_one(
    State(state): St,
    caller: Caller,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let planned = state.store()?.planned_change(&env, id_of(&id)?).await?;
    Ok(Json(render(&planned)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/envs/{env}/schedules/{id}",
    tag = "flags",
    summary = "Cancel a scheduled change that is still pending",
    params(("env" = String, Path, description = "Environment"), ("id" = i64, Path, description = "Schedule id")),
    responses((status = 200, description = "Cancelled", body = PlannedChangeSchema), (status = 409, description = "Already applied, failed or cancelled", body = ErrorBody), (status = 404, description = "Unknown environment or schedule", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn cancel(
    State(state): St,
    caller: Caller,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    check_key("environment", &env)?;
    let planned = state
        .store()?
        .cancel_planned_change(&env, id_of(&id)?, &caller.name)
        .await?;
    Ok(Json(render(&planned)))
}

/// A scheduled change, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = ScheduledChange)]
#[allow(dead_code)]
pub(crate) struct PlannedChangeSchema {
    id: i64,
    env: String,
    flag: String,
    /// {patch}, {flag} or {delete: true}.
    change: Value,
    base_version: Option<u64>,
    due_at: String,
    due_local: Option<String>,
    time_zone: String,
    /// pending, applied, cancelled or failed.
    status: String,
    created_by: String,
    created_at: String,
    finished_at: Option<String>,
    finished_by: Option<String>,
    applied_revision: Option<u64>,
    late_seconds: Option<f64>,
    error: Option<String>,
}

/// The scheduled changes, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = ScheduleList)]
#[allow(dead_code)]
pub(crate) struct ScheduleListSchema {
    schedules: Vec<PlannedChangeSchema>,
}

// ---- applying what is due ----

/// Applies due changes, and steps the running guarded releases
/// (`crate::release`), every [`TICK`] until shutdown; `instance` names
/// this process in what it applies.
pub(crate) async fn run(state: Arc<AppState>, instance: String) {
    // An edge applies nothing: its upstream does.
    let Ok(store) = state.store() else {
        return;
    };
    loop {
        apply_due(store, &instance).await;
        if let Ok(events) = state.events() {
            crate::release::step_all(store, events).await;
        }
        // Wake on the next whole second: a change due at 09:00:00 is
        // applied within the second, and every instance looks at the same
        // moment (they race for it; the store lets one win).
        let into_second = Timestamp::now().as_millisecond().rem_euclid(1000);
        let wait = TICK.saturating_sub(Duration::from_millis(
            u64::try_from(into_second).unwrap_or(0),
        ));
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            () = state.shutdown.wait() => return,
        }
    }
}

/// One pass: every change due now, oldest first.
pub(crate) async fn apply_due(store: &Store, instance: &str) {
    let now = Timestamp::now().as_millisecond();
    let due = match store.due_planned_changes(now, 100).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the due scheduled changes");
            return;
        }
    };
    for planned in due {
        if let Err(e) = apply_one(store, &planned, instance).await {
            tracing::warn!(id = planned.id, error = %e, "scheduled change not applied yet; retrying");
        }
    }
}

/// The edit a planned change makes now, and the version it needs.
fn edit_of(
    planned: &PlannedChange,
    current: Option<&guidon_store::Stored>,
) -> Result<(Edit, Option<u64>), String> {
    let change: Value = serde_json::from_str(&planned.change)
        .map_err(|e| format!("the stored change is unreadable: {e}"))?;
    if let Some(patch) = change.get("patch") {
        let Some(Definition::Flag(flag)) = current.map(|c| &c.definition) else {
            return Err(format!("flag {:?} no longer exists", planned.key));
        };
        let mut value = serde_json::to_value(flag).map_err(|e| e.to_string())?;
        merge_patch(&mut value, patch);
        let flag: Flag = serde_json::from_value(value)
            .map_err(|e| format!("the patch no longer applies: {e}"))?;
        return Ok((
            Edit::Upsert(Definition::Flag(flag)),
            current.map(|c| c.version),
        ));
    }
    if let Some(flag) = change.get("flag") {
        let flag: Flag = serde_json::from_value(flag.clone()).map_err(|e| e.to_string())?;
        return Ok((Edit::Upsert(Definition::Flag(flag)), planned.base_version));
    }
    Ok((Edit::Delete(Kind::Flag), planned.base_version))
}

/// Applies one due change: written (and marked applied) here, applied
/// by another instance meanwhile, or failed with the reason. An error
/// only when the database could not be reached: it stays pending.
async fn apply_one(
    store: &Store,
    planned: &PlannedChange,
    instance: &str,
) -> Result<(), StoreError> {
    for _ in 0..PATCH_RETRIES {
        let current = match store.get(&planned.env, Kind::Flag, &planned.key).await {
            Ok(stored) => Some(stored),
            Err(StoreError::NotFound { .. }) => None,
            Err(StoreError::UnknownEnv(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (edit, expected) = match edit_of(planned, current.as_ref()) {
            Ok(edit) => edit,
            Err(why) => {
                store
                    .fail_planned_change(planned.id, instance, &why)
                    .await?;
                return Ok(());
            }
        };
        let late_ms = Timestamp::now().as_millisecond() - planned.due_at_ms;
        let mut actor = format!("schedule #{} by {}", planned.id, planned.created_by);
        if late_ms > i64::try_from(LATE.as_millis()).unwrap_or(i64::MAX) {
            actor.push_str(&format!(", applied {} s late", late_ms / 1000));
        }
        let is_patch = planned.change.starts_with("{\"patch\"");
        match store
            .apply_planned_change(planned, edit, expected, &actor, instance)
            .await
        {
            Ok(Some(committed)) => {
                tracing::info!(id = planned.id, env = %planned.env, flag = %planned.key,
                    revision = committed.revision, late_ms, "scheduled change applied");
                return Ok(());
            }
            Ok(None) => return Ok(()),
            // Another write won the race for the flag: a patch is re-read
            // and re-applied; a replacement planned against an older
            // version fails rather than overwrite it.
            Err(StoreError::Conflict { .. } | StoreError::Exists { .. }) if is_patch => continue,
            Err(e @ (StoreError::Conflict { .. } | StoreError::Exists { .. })) => {
                let why = format!(
                    "the flag changed since it was scheduled, so it was not overwritten: {e}"
                );
                store
                    .fail_planned_change(planned.id, instance, &why)
                    .await?;
                return Ok(());
            }
            Err(e @ (StoreError::Invalid(_) | StoreError::NotFound { .. })) => {
                store
                    .fail_planned_change(planned.id, instance, &e.to_string())
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    store
        .fail_planned_change(
            planned.id,
            instance,
            "other writes kept changing the flag while the patch was applied",
        )
        .await?;
    Ok(())
}
