//! Experiments over HTTP: `POST /api/v1/events` takes batches of exposures
//! and conversions, `GET /api/v1/envs/{env}/experiments/{flag}/results`
//! answers one metric's results with their statistics and health checks.
//!
//! Ingestion checks each event on its own and stores the valid ones: a
//! batch with bad events is still accepted for the rest, and the answer
//! names every rejected event by its index. Storage, deduplication by
//! `event_id` and attribution are the store's (`guidon_store::Event`); the
//! statistics are `guidon-stats`'.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use guidon_engine::model::Flag;
use guidon_engine::{Context, Snapshot, Timestamp, is_valid_key};
use guidon_stats::{
    AnalysisOptions, Correction, MetricKind, Outcome, Prior, SRM_P_THRESHOLD, VariantStats, analyze,
};
use guidon_store::{
    Conversion, Event, Exposure, MAX_EVENT_ID_LEN, MAX_TIMESTAMP_MS, MAX_UNIT_LEN, MetricQuery,
    UnitKey,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path, Query};
use crate::error::{ApiError, ApiResult};

/// Most events in one batch.
pub(crate) const MAX_BATCH: usize = 10_000;
/// How far in the future an event's timestamp may be (clock skew).
const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;
/// Share of exposed units seen in several variants above which results warn.
const MULTIPLE_EXPOSURE_WARNING: f64 = 0.01;
/// Fewer units than this in a variant: results warn that they are noisy.
const MIN_UNITS_PER_VARIANT: u64 = 100;
/// Longest accepted conversion window: ten years.
const MAX_WINDOW_HOURS: f64 = 87_600.0;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/events", post(ingest)).route(
        "/api/v1/envs/{env}/experiments/{flag}/results",
        get(results),
    )
}

// ---- ingestion ----

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

    fn check(&self, value: Value) -> Result<Event, Rejection> {
        let Value::Object(mut fields) = value else {
            return Err(Rejection {
                code: "invalid_event",
                path: None,
                message: format!("an event must be an object, got {}", type_name(&value)),
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
                        type_name(&other)
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
                    format!("event_id must be a string, got {}", type_name(&other)),
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
                        type_name(&other)
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
                    type_name(&other)
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
                    format!("flag must be a string, got {}", type_name(&other)),
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
                    format!("variant must be a string, got {}", type_name(&other)),
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
                    format!("metric must be a string, got {}", type_name(&other)),
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
                    format!("value must be a number, got {}", type_name(&other)),
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

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A batch: `{"events": [EVENT, …]}` (an object, as every body of the API;
/// each event is checked on its own).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Value>,
}

/// `POST /api/v1/events`: `{"events": [EVENT, …]}`. Answers 200 when every event was accepted (new or duplicate),
/// 207 when some were rejected, with `{"accepted", "duplicates",
/// "rejected": [{"index", "error", "message", "path"?}]}`.
async fn ingest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    let env_name = caller.sdk_env(&headers)?;
    let Batch { events } = body::json(&headers, &bytes)?;
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
    let live = env.live.load_full();
    let checker = Checker::new(
        &live.snapshot,
        &live.file().flags,
        state.limits.max_context_attributes,
        Timestamp::now().as_millisecond(),
    );
    let mut valid = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        match checker.check(event) {
            Ok(event) => valid.push(event),
            Err(rejection) => rejected.push(rejection.json(index)),
        }
    }
    let ingested = state.store.ingest_events(&env_name, valid).await?;
    let status = if rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((
        status,
        Json(json!({
            "accepted": ingested.accepted,
            "duplicates": ingested.duplicates.len(),
            "rejected": rejected,
        })),
    )
        .into_response())
}

// ---- results ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsParams {
    metric: Option<String>,
    method: Option<String>,
    correction: Option<String>,
    window_hours: Option<f64>,
    kind: Option<String>,
    alpha: Option<f64>,
    prior_mean: Option<f64>,
    prior_variance: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Frequentist,
    Bayesian,
    Sequential,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Frequentist => "frequentist",
            Method::Bayesian => "bayesian",
            Method::Sequential => "sequential",
        }
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// `GET /api/v1/envs/{env}/experiments/{flag}/results?metric=NAME
/// [&method=frequentist|bayesian|sequential][&correction=none|holm|bh]
/// [&window_hours=N][&kind=binomial|continuous][&alpha=A]
/// [&prior_mean=M&prior_variance=V]`. Admin tokens only.
async fn results(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env_name, flag_key)): Path<(String, String)>,
    Query(params): Query<ResultsParams>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if !is_valid_key(&env_name) {
        return Err(bad(format!("invalid environment {env_name:?}")));
    }
    let metric = params
        .metric
        .ok_or_else(|| bad("metric is required: ?metric=NAME (the conversions' metric)"))?;
    if !is_valid_key(&metric) {
        return Err(bad(format!("invalid metric {metric:?}")));
    }
    let method = match params.method.as_deref() {
        None | Some("frequentist") => Method::Frequentist,
        Some("bayesian") => Method::Bayesian,
        Some("sequential") => Method::Sequential,
        Some(other) => {
            return Err(bad(format!(
                "method must be frequentist, bayesian or sequential, got {other:?}"
            )));
        }
    };
    let correction = match params.correction.as_deref() {
        None | Some("none") => Correction::None,
        Some("holm") => Correction::Holm,
        Some("bh" | "benjamini_hochberg") => Correction::BenjaminiHochberg,
        Some(other) => {
            return Err(bad(format!(
                "correction must be none, holm or bh, got {other:?}"
            )));
        }
    };
    let kind = match params.kind.as_deref() {
        None | Some("binomial") => MetricKind::Binomial,
        Some("continuous") => MetricKind::Continuous,
        Some(other) => {
            return Err(bad(format!(
                "kind must be binomial (converted or not) or continuous (sum of values), got {other:?}"
            )));
        }
    };
    let window_ms = match params.window_hours {
        None => None,
        Some(h) if h.is_finite() && h > 0.0 && h <= MAX_WINDOW_HOURS => {
            Some((h * 3_600_000.0).round() as i64)
        }
        Some(h) => {
            return Err(bad(format!(
                "window_hours must be a positive number of hours up to {MAX_WINDOW_HOURS}, got {h}"
            )));
        }
    };
    let prior = match (params.prior_mean, params.prior_variance) {
        (None, None) => Prior::Flat,
        (mean, Some(variance)) => Prior::Normal {
            mean: mean.unwrap_or(0.0),
            variance,
        },
        (Some(_), None) => {
            return Err(bad(
                "prior_mean needs prior_variance (a proper normal prior)",
            ));
        }
    };
    let options = AnalysisOptions {
        metric: kind,
        alpha: params.alpha.unwrap_or(0.05),
        prior,
        sequential: method == Method::Sequential,
        correction,
        cuped: false,
        ..AnalysisOptions::default()
    };
    options
        .validate()
        .map_err(|e| bad(format!("invalid analysis options: {e}")))?;

    let env = state.env(&env_name).await?;
    let live = env.live.load_full();
    let flag = live
        .file()
        .flags
        .iter()
        .find(|f| f.key == flag_key)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "flag {flag_key:?} not found in environment {env_name:?}"
            ))
        })?;
    let arms: Vec<(&str, f64)> = flag
        .variants
        .iter()
        .filter(|v| v.weight > 0.0)
        .map(|v| (v.key.as_str(), v.weight))
        .collect();
    if arms.len() < 2 {
        return Err(bad(format!(
            "flag {flag_key:?} has {} variant{} with a positive weight; an experiment compares at least two",
            arms.len(),
            if arms.len() == 1 { "" } else { "s" }
        )));
    }
    let unit_attribute = flag.bucket_by();
    let totals = state
        .store
        .experiment_totals(
            &env_name,
            &MetricQuery {
                flag: &flag_key,
                variants: &arms.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
                metric: &metric,
                unit_attribute,
                window_ms,
            },
        )
        .await?;

    let stats: Vec<VariantStats> = totals
        .variants
        .iter()
        .map(|t| VariantStats::new(t.units, t.converted, t.sum, t.sum_squares))
        .collect();
    let other_variant_units = totals.other_variant_units;
    let options = AnalysisOptions {
        weights: Some(arms.iter().map(|(_, w)| *w).collect()),
        ..options
    };
    let analysis = analyze(&stats[0], &stats[1..], &options)
        .map_err(|e| ApiError::Internal(format!("analysis failed: {e}")))?;

    let exposed = totals.exposed_units();
    let multiple = totals.multiple_exposure_units;
    let multiple_share = if exposed > 0 {
        multiple as f64 / exposed as f64
    } else {
        0.0
    };
    let mut warnings: Vec<String> = Vec::new();
    let srm_status = if analysis.srm.mismatch {
        warnings.push(format!(
            "Sample-ratio mismatch: units per variant {:?} differ from the configured split (p = {:.2e} < {SRM_P_THRESHOLD}); the assignment or the exposure logging is broken, do not trust these results",
            analysis.srm.observed, analysis.srm.p_value
        ));
        "mismatch"
    } else if analysis.srm.enough_data {
        "ok"
    } else {
        "not_enough_data"
    };
    let multiple_status = if multiple_share > MULTIPLE_EXPOSURE_WARNING {
        warnings.push(format!(
            "{multiple} of {exposed} units ({:.1}%) were exposed to more than one variant and are excluded; above {:.0}% the assignment is suspect (unit id changes, overrides, or a changed split)",
            multiple_share * 100.0,
            MULTIPLE_EXPOSURE_WARNING * 100.0
        ));
        "warning"
    } else {
        "ok"
    };
    let small: Vec<&str> = arms
        .iter()
        .zip(&stats)
        .filter(|(_, s)| s.units < MIN_UNITS_PER_VARIANT)
        .map(|((key, _), _)| *key)
        .collect();
    let too_few_status = if small.is_empty() {
        "ok"
    } else {
        warnings.push(format!(
            "Too few units: {} {} fewer than {MIN_UNITS_PER_VARIANT} units; results are noisy",
            small.join(", "),
            if small.len() == 1 { "has" } else { "have" }
        ));
        "warning"
    };
    if other_variant_units > 0 {
        warnings.push(format!(
            "{other_variant_units} units were exposed to variants that no longer receive traffic and are not analyzed"
        ));
    }

    let variants: Vec<Value> = arms
        .iter()
        .zip(&analysis.variants)
        .map(|((key, weight), summary)| {
            let mut v = serde_json::to_value(summary).unwrap_or_else(|_| json!({}));
            if let Value::Object(map) = &mut v {
                map.insert("key".into(), json!(key));
                map.insert("weight".into(), json!(weight));
            }
            v
        })
        .collect();
    let comparisons: Vec<Value> = analysis
        .comparisons
        .iter()
        .map(|c| {
            let key = arms.get(c.variant).map_or("", |(k, _)| *k);
            let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
            v["variant"] = json!(key);
            v["summary"] = summary(c, method, options.alpha);
            v
        })
        .collect();

    Ok(Json(json!({
        "env": env_name,
        "flag": flag_key,
        "metric": metric,
        "kind": kind,
        "method": method.as_str(),
        "correction": correction,
        "alpha": options.alpha,
        "window_hours": params.window_hours,
        "unit_attribute": unit_attribute,
        "control": arms[0].0,
        "exposures": {
            "units": exposed,
            "analyzed_units": stats.iter().map(|s| s.units).sum::<u64>(),
            "multiple_exposure_units": multiple,
            "multiple_exposure_share": multiple_share,
            "other_variant_units": other_variant_units,
        },
        "variants": variants,
        "comparisons": comparisons,
        "srm": analysis.srm,
        "health": {
            "srm": {"status": srm_status, "p_value": analysis.srm.p_value, "threshold": SRM_P_THRESHOLD},
            "multiple_exposures": {"status": multiple_status, "units": multiple, "share": multiple_share, "threshold": MULTIPLE_EXPOSURE_WARNING},
            "too_few_units": {"status": too_few_status, "minimum": MIN_UNITS_PER_VARIANT, "variants": small},
        },
        "warnings": warnings,
    })))
}

/// The headline of one comparison for the chosen method: the relative lift
/// with its interval and p-value (the confidence sequence's with
/// `sequential`, the credible interval with `bayesian`), the chance to win,
/// and whether the result is significant at `alpha`.
fn summary(c: &guidon_stats::Comparison, method: Method, alpha: f64) -> Value {
    let chance_to_win = c.bayesian.computed().map(|b| b.chance_to_win);
    let Outcome::Computed(relative) = &c.relative else {
        return json!({
            "lift": null, "ci": null, "p_value": null, "chance_to_win": chance_to_win,
            "significant": false,
            "unavailable": c.relative.reason().map(|r| r.to_string()),
        });
    };
    let (ci, p_value) = match method {
        Method::Frequentist => (
            relative.test.ci,
            relative.adjusted_p_value.unwrap_or(relative.test.p_value),
        ),
        Method::Sequential => match &relative.sequential {
            Some(s) => (s.ci, s.p_value),
            None => (relative.test.ci, relative.test.p_value),
        },
        Method::Bayesian => match c.bayesian.computed() {
            Some(b) => (b.ci, relative.test.p_value),
            None => (relative.test.ci, relative.test.p_value),
        },
    };
    let significant = match method {
        Method::Bayesian => chance_to_win.is_some_and(|p| p > 1.0 - alpha / 2.0 || p < alpha / 2.0),
        _ => p_value < alpha,
    };
    json!({
        "lift": relative.test.estimate,
        "ci": [ci.lower, ci.upper],
        "p_value": p_value,
        "chance_to_win": chance_to_win,
        "significant": significant,
    })
}
