//! `POST /api/v1/events`: each event checked on its own against the
//! environment's flags, the valid ones handed to the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use guidon_engine::model::Flag;
use guidon_engine::{Context, Snapshot, Timestamp, is_valid_key};
use guidon_events::{
    Conversion, Event, Exposure, MAX_EVENT_ID_LEN, MAX_TIMESTAMP_MS, MAX_UNIT_LEN, UnitKey,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body};
use crate::error::ApiResult;
use crate::error::ErrorBody;

/// Most events in one batch.
const MAX_BATCH: usize = 10_000;
/// How far in the future an event's timestamp may be (clock skew).
const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;

/// Why one event of a batch was rejected.
#[derive(Debug)]
struct Rejection {
    code: &'static str,
    /// The field at fault, when there is one.
    path: Option<&'static str>,
    message: String,
}

impl Rejection {
    fn new(code: &'static str, path: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            path: Some(path),
            message: message.into(),
        }
    }

    fn json(&self, index: usize) -> Value {
        let mut out = json!({"index": index, "error": self.code, "message": self.message});
        if let Some(path) = self.path {
            out["path"] = json!(path);
        }
        out
    }
}

/// What events are checked against: the environment's flags at one revision.
struct Checker<'a> {
    snapshot: &'a Snapshot,
    flags: HashMap<&'a str, &'a Flag>,
    /// Each attribute an experiment of the environment buckets by, with a
    /// flag that buckets by it (to read a context's unit exactly as the
    /// engine does).
    unit_attributes: Vec<(&'a str, &'a str)>,
    max_attributes: usize,
    now_ms: i64,
}

impl<'a> Checker<'a> {
    fn new(
        snapshot: &'a Snapshot,
        flags: &'a [Flag],
        max_attributes: usize,
        now_ms: i64,
    ) -> Checker<'a> {
        let mut seen = HashSet::new();
        let mut unit_attributes = Vec::new();
        for flag in flags.iter().filter(|f| !f.variants.is_empty()) {
            if seen.insert(flag.bucket_by()) {
                unit_attributes.push((flag.bucket_by(), flag.key.as_str()));
            }
        }
        Checker {
            snapshot,
            flags: flags.iter().map(|f| (f.key.as_str(), f)).collect(),
            unit_attributes,
            max_attributes,
            now_ms,
        }
    }

    /// Checks each event of a batch: the valid ones, and the rejections
    /// as answered (`{"index", "error", "message", "path"?}`).
    fn check_all(&self, events: Vec<Value>) -> (Vec<Event>, Vec<Value>) {
        let mut valid = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match self.check(event) {
                Ok(event) => valid.push(event),
                Err(rejection) => rejected.push(rejection.json(index)),
            }
        }
        (valid, rejected)
    }

    fn check(&self, value: Value) -> Result<Event, Rejection> {
        let Value::Object(mut fields) = value else {
            return Err(Rejection {
                code: "invalid_event",
                path: None,
                message: format!(
                    "an event must be an object, got {}",
                    guidon_engine::json_type_name(&value)
                ),
            });
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_type",
                    "type",
                    format!(
                        "type must be \"exposure\" or \"conversion\", got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
            None => {
                return Err(Rejection::new(
                    "invalid_type",
                    "type",
                    "type is required: \"exposure\" or \"conversion\"",
                ));
            }
        };
        let allowed: &[&str] = match kind.as_str() {
            "exposure" => &["event_id", "flag", "variant", "context", "timestamp"],
            "conversion" => &["event_id", "metric", "value", "context", "timestamp"],
            other => {
                return Err(Rejection::new(
                    "invalid_type",
                    "type",
                    format!("type must be \"exposure\" or \"conversion\", got {other:?}"),
                ));
            }
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(Rejection {
                code: "unknown_field",
                path: None,
                message: format!(
                    "unknown field {unknown:?} in a {kind} event; expected {}",
                    allowed.join(", ")
                ),
            });
        }
        let event_id = match fields.remove("event_id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_EVENT_ID_LEN => id,
            Some(Value::String(_)) => {
                return Err(Rejection::new(
                    "invalid_event_id",
                    "event_id",
                    format!("event_id must be 1 to {MAX_EVENT_ID_LEN} bytes"),
                ));
            }
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_event_id",
                    "event_id",
                    format!(
                        "event_id must be a string, got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
            None => {
                return Err(Rejection::new(
                    "invalid_event_id",
                    "event_id",
                    "event_id is required (a unique id: a retried event with the same id counts once)",
                ));
            }
        };
        let at_ms = self.timestamp(fields.remove("timestamp"))?;
        let context = self.context(fields.remove("context"))?;
        if kind == "exposure" {
            self.exposure(event_id, fields, &context, at_ms)
        } else {
            self.conversion(event_id, fields, &context, at_ms)
        }
    }

    fn timestamp(&self, value: Option<Value>) -> Result<i64, Rejection> {
        let text = match value {
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_timestamp",
                    "timestamp",
                    format!(
                        "timestamp must be an RFC 3339 string, got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
            None => {
                return Err(Rejection::new(
                    "invalid_timestamp",
                    "timestamp",
                    "timestamp is required (RFC 3339, e.g. \"2026-11-24T12:00:00Z\")",
                ));
            }
        };
        let at: Timestamp = text.parse().map_err(|e| {
            Rejection::new(
                "invalid_timestamp",
                "timestamp",
                format!("timestamp {text:?} is not RFC 3339: {e}"),
            )
        })?;
        let at_ms = at.as_millisecond();
        if !(0..=MAX_TIMESTAMP_MS).contains(&at_ms) {
            return Err(Rejection::new(
                "invalid_timestamp",
                "timestamp",
                format!("timestamp {text:?} is before 1970"),
            ));
        }
        if at_ms > self.now_ms.saturating_add(MAX_FUTURE_MS) {
            return Err(Rejection::new(
                "invalid_timestamp",
                "timestamp",
                format!("timestamp {text:?} is more than 24 hours in the future"),
            ));
        }
        Ok(at_ms)
    }

    fn context(&self, value: Option<Value>) -> Result<Context, Rejection> {
        match value {
            Some(Value::Object(map)) if map.len() <= self.max_attributes => Ok(Context::from(map)),
            Some(Value::Object(map)) => Err(Rejection::new(
                "invalid_context",
                "context",
                format!(
                    "context has {} attributes; at most {} are accepted",
                    map.len(),
                    self.max_attributes
                ),
            )),
            Some(other) => Err(Rejection::new(
                "invalid_context",
                "context",
                format!(
                    "context must be an object of attributes, got {}",
                    guidon_engine::json_type_name(&other)
                ),
            )),
            None => Err(Rejection::new(
                "invalid_context",
                "context",
                "context is required: the attributes the flag was evaluated with",
            )),
        }
    }

    fn exposure(
        &self,
        event_id: String,
        mut fields: Map<String, Value>,
        context: &Context,
        at_ms: i64,
    ) -> Result<Event, Rejection> {
        let key = match fields.remove("flag") {
            Some(Value::String(key)) => key,
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_flag",
                    "flag",
                    format!(
                        "flag must be a string, got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
            None => return Err(Rejection::new("invalid_flag", "flag", "flag is required")),
        };
        let Some(flag) = self.flags.get(key.as_str()) else {
            return Err(Rejection::new(
                "unknown_flag",
                "flag",
                format!("no flag {key:?} in this environment"),
            ));
        };
        if flag.variants.is_empty() {
            return Err(Rejection::new(
                "unknown_variant",
                "flag",
                format!("flag {key:?} has no variants, so it is not an experiment"),
            ));
        }
        let variant = match fields.remove("variant") {
            Some(Value::String(variant)) => variant,
            Some(other) => {
                return Err(Rejection::new(
                    "unknown_variant",
                    "variant",
                    format!(
                        "variant must be a string, got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
            None => {
                return Err(Rejection::new(
                    "unknown_variant",
                    "variant",
                    "variant is required: the variant the unit was served",
                ));
            }
        };
        if !flag.variants.iter().any(|v| v.key == variant) {
            let known: Vec<&str> = flag.variants.iter().map(|v| v.key.as_str()).collect();
            return Err(Rejection::new(
                "unknown_variant",
                "variant",
                format!(
                    "flag {key:?} has no variant {variant:?} (it has {})",
                    known.join(", ")
                ),
            ));
        }
        let unit = self.unit(&key, context, flag.bucket_by())?;
        Ok(Event::Exposure(Exposure {
            event_id,
            flag: key,
            variant,
            unit,
            at_ms,
        }))
    }

    fn conversion(
        &self,
        event_id: String,
        mut fields: Map<String, Value>,
        context: &Context,
        at_ms: i64,
    ) -> Result<Event, Rejection> {
        let metric = match fields.remove("metric") {
            Some(Value::String(metric)) if is_valid_key(&metric) => metric,
            Some(Value::String(metric)) => {
                return Err(Rejection::new(
                    "invalid_metric",
                    "metric",
                    format!(
                        "invalid metric {metric:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
                    ),
                ));
            }
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_metric",
                    "metric",
                    format!(
                        "metric must be a string, got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
            None => {
                return Err(Rejection::new(
                    "invalid_metric",
                    "metric",
                    "metric is required",
                ));
            }
        };
        let value = match fields.remove("value") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() => Some(v),
                _ => {
                    return Err(Rejection::new(
                        "invalid_value",
                        "value",
                        format!("value {n} is not a finite number"),
                    ));
                }
            },
            Some(other) => {
                return Err(Rejection::new(
                    "invalid_value",
                    "value",
                    format!(
                        "value must be a number, got {}",
                        guidon_engine::json_type_name(&other)
                    ),
                ));
            }
        };
        let mut units = Vec::with_capacity(self.unit_attributes.len());
        for &(attribute, flag) in &self.unit_attributes {
            if let Some(unit) = self.snapshot.bucketing_value(flag, context)
                && !unit.is_empty()
                && unit.len() <= MAX_UNIT_LEN
            {
                units.push(UnitKey {
                    attribute: attribute.to_owned(),
                    unit,
                });
            }
        }
        if units.is_empty() {
            let attributes: Vec<&str> = self.unit_attributes.iter().map(|(a, _)| *a).collect();
            let message = if attributes.is_empty() {
                "no flag of this environment has variants, so no experiment can count this conversion"
                    .to_owned()
            } else {
                format!(
                    "context has no unit: the experiments of this environment bucket by {}{}",
                    attributes.join(", "),
                    if attributes.contains(&"user_id") {
                        " (or targetingKey)"
                    } else {
                        ""
                    }
                )
            };
            return Err(Rejection::new("missing_unit", "context", message));
        }
        Ok(Event::Conversion(Conversion {
            event_id,
            metric,
            units,
            value,
            at_ms,
        }))
    }

    fn unit(&self, flag: &str, context: &Context, attribute: &str) -> Result<String, Rejection> {
        match self.snapshot.bucketing_value(flag, context) {
            Some(unit) if !unit.is_empty() && unit.len() <= MAX_UNIT_LEN => Ok(unit),
            Some(_) => Err(Rejection::new(
                "missing_unit",
                "context",
                format!("the unit ({attribute}) must be 1 to {MAX_UNIT_LEN} bytes"),
            )),
            None => Err(Rejection::new(
                "missing_unit",
                "context",
                format!(
                    "context has no unit: flag {flag:?} buckets by {attribute}{}, a string or an integer",
                    if attribute == "user_id" {
                        " (or targetingKey)"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }
}

/// A batch: `{"events": [EVENT, …]}` (an object, as every body of the API;
/// each event is checked on its own).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Value>,
}

/// A batch's shape, for the OpenAPI document (events are checked one by one).
#[derive(utoipa::ToSchema)]
#[schema(as = EventBatch)]
#[allow(dead_code)]
pub(crate) struct EventBatchSchema {
    events: Vec<Value>,
}

/// `POST /api/v1/events`: `{"events": [EVENT, …]}`. Answers 200 when every event was accepted (new or duplicate),
/// 207 when some were rejected, with `{"accepted", "duplicates",
/// "rejected": [{"index", "error", "message", "path"?}]}`.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "experiments",
    summary = "Send exposures and conversions: {events: [EVENT, …]}, each checked on its own",
    params(("X-Guidon-Environment" = Option<String>, Header, description = "The environment, for an admin token")),
    request_body(content = EventBatchSchema, description = "Up to 10,000 events: {type: exposure|conversion, event_id?, flag, variant, unit, metric, value, timestamp_ms, context?}"),
    responses((status = 200, description = "Every event accepted (new or duplicate)", body = guidon_protocol::api::EventsReceipt), (status = 207, description = "Some events rejected: each named by its index", body = guidon_protocol::api::EventsReceipt), (status = 413, description = "Too many events in one batch", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Wrong role or environment", body = ErrorBody))
)]
pub(crate) async fn ingest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    let env_name = caller.sdk_env(&headers)?;
    caller.require_events(&env_name)?;
    let Batch { events } = body::json(&headers, &bytes).await?;
    if events.len() > MAX_BATCH {
        return Ok((
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({
                "error": "batch_too_large",
                "message": format!(
                    "a batch holds at most {MAX_BATCH} events, got {}; split it",
                    events.len()
                ),
                "limit": MAX_BATCH,
            })),
        )
            .into_response());
    }
    let env = state.env(&env_name).await?;
    // The contexts SDKs evaluated with, for the recent-contexts sample.
    for event in &events {
        if event.get("type").and_then(Value::as_str) == Some("exposure")
            && let Some(Value::Object(context)) = event.get("context")
            && context.len() <= state.limits.max_context_attributes
        {
            state.sampler.offer(&env_name, context);
        }
    }
    let live = env.live.load_full();
    let checker = Checker::new(
        &live.snapshot,
        &live.file().flags,
        state.limits.max_context_attributes,
        Timestamp::now().as_millisecond(),
    );
    // An edge buffers the events as they came, once checked, for its upstream.
    let raw = matches!(state.backend, crate::app::Backend::Edge(_)).then(|| events.clone());
    let (valid, rejected) = checker.check_all(events);
    let (accepted, duplicates) = match (&state.backend, raw) {
        (crate::app::Backend::Edge(upstream), Some(raw)) => {
            let refused: HashSet<u64> = rejected
                .iter()
                .filter_map(|r| r.get("index").and_then(Value::as_u64))
                .collect();
            let kept: Vec<Value> = raw
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains(&(*i as u64)))
                .map(|(_, e)| e)
                .collect();
            upstream.buffer(&env_name, &kept, &state.metrics).await?;
            (kept.len() as u64, 0)
        }
        _ => {
            let ingested = state.events()?.ingest_events(&env_name, valid).await?;
            (ingested.accepted, ingested.duplicates.len() as u64)
        }
    };
    let status = if rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((
        status,
        Json(json!({
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
        })),
    )
        .into_response())
}

/// The checks of [`ingest`] without a store: a batch body (`application/json`)
/// against `snapshot` (compiled from `flags`) at `now_ms`. The valid events
/// and the rejections, or the batch's own error. For `crate::fuzzing`.
pub(crate) fn check_batch(
    body: &[u8],
    snapshot: &Snapshot,
    flags: &[Flag],
    now_ms: i64,
) -> Result<(Vec<Event>, Vec<Value>), crate::error::ApiError> {
    let Batch { events } = body::parse_now(body::Accepts::Json.format(&HeaderMap::new())?, body)?;
    let checker = Checker::new(
        snapshot,
        flags,
        crate::app::Limits::default().max_context_attributes,
        now_ms,
    );
    Ok(checker.check_all(events))
}
