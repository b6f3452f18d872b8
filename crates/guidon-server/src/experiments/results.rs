//! `GET /api/v1/envs/{env}/experiments/{flag}/results`: one metric's
//! results. In steps: the query is read into a [`Request`], the flag's
//! [`arms`] are found, the store's totals are analyzed, the [`Health`]
//! checks are run on them, and everything is rendered.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use guidon_engine::is_valid_key;
use guidon_engine::model::Flag;
use guidon_stats::{
    Analysis, AnalysisOptions, Correction, MetricKind, Outcome, Prior, SRM_P_THRESHOLD,
    VariantStats, analyze,
};
use guidon_store::{ExperimentTotals, MetricQuery};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Share of exposed units seen in several variants above which results warn.
const MULTIPLE_EXPOSURE_WARNING: f64 = 0.01;
/// Fewer units than this in a variant: results warn that they are noisy.
const MIN_UNITS_PER_VARIANT: u64 = 100;
/// Longest accepted conversion window: ten years.
const MAX_WINDOW_HOURS: f64 = 87_600.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultsParams {
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

/// A results query, checked.
struct Request {
    metric: String,
    method: Method,
    window_hours: Option<f64>,
    window_ms: Option<i64>,
    /// Without the arms' weights: those come with the flag.
    options: AnalysisOptions,
}

impl Request {
    fn parse(params: ResultsParams) -> ApiResult<Request> {
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
        Ok(Request {
            metric,
            method,
            window_hours: params.window_hours,
            window_ms,
            options,
        })
    }
}

/// The variants an experiment on `flag` compares: those with a positive
/// weight, control first, with their weights.
fn arms(flag: &Flag) -> ApiResult<Vec<(&str, f64)>> {
    let arms: Vec<(&str, f64)> = flag
        .variants
        .iter()
        .filter(|v| v.weight > 0.0)
        .map(|v| (v.key.as_str(), v.weight))
        .collect();
    if arms.len() < 2 {
        return Err(bad(format!(
            "flag {:?} has {} variant{} with a positive weight; an experiment compares at least two",
            flag.key,
            arms.len(),
            if arms.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(arms)
}

/// The health checks of one result: their statuses and the warnings they
/// raise.
struct Health {
    exposed: u64,
    multiple: u64,
    multiple_share: f64,
    checks: Value,
    warnings: Vec<String>,
}

impl Health {
    fn check(
        totals: &ExperimentTotals,
        analysis: &Analysis,
        arms: &[(&str, f64)],
        stats: &[VariantStats],
    ) -> Health {
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
            .zip(stats)
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
        let other_variant_units = totals.other_variant_units;
        if other_variant_units > 0 {
            warnings.push(format!(
                "{other_variant_units} units were exposed to variants that no longer receive traffic and are not analyzed"
            ));
        }
        let checks = json!({
            "srm": {"status": srm_status, "p_value": analysis.srm.p_value, "threshold": SRM_P_THRESHOLD},
            "multiple_exposures": {"status": multiple_status, "units": multiple, "share": multiple_share, "threshold": MULTIPLE_EXPOSURE_WARNING},
            "too_few_units": {"status": too_few_status, "minimum": MIN_UNITS_PER_VARIANT, "variants": small},
        });
        Health {
            exposed,
            multiple,
            multiple_share,
            checks,
            warnings,
        }
    }
}

/// `GET /api/v1/envs/{env}/experiments/{flag}/results?metric=NAME
/// [&method=frequentist|bayesian|sequential][&correction=none|holm|bh]
/// [&window_hours=N][&kind=binomial|continuous][&alpha=A]
/// [&prior_mean=M&prior_variance=V]`. Admin tokens only.
#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/experiments/{flag}/results",
    tag = "experiments",
    summary = "One metric's results: per variant, each comparison with the control, SRM and health checks",
    params(
        ("env" = String, Path, description = "Environment"), ("flag" = String, Path, description = "The experiment's flag"),
        ("metric" = String, Query, description = "The conversions' metric"),
        ("method" = Option<String>, Query, description = "frequentist (default), bayesian or sequential"),
        ("correction" = Option<String>, Query, description = "none, holm or bh"),
        ("window_hours" = Option<f64>, Query, description = "Count conversions only this long after the first exposure"),
        ("kind" = Option<String>, Query, description = "binomial (default) or continuous"),
        ("alpha" = Option<f64>, Query, description = "Significance level (0.05)"),
        ("prior_mean" = Option<f64>, Query, description = "Bayesian prior on the lift"),
        ("prior_variance" = Option<f64>, Query, description = "Bayesian prior's variance"),
    ),
    responses((status = 200, description = "The results", body = ResultsSchema), (status = 404, description = "No such environment or flag", body = ErrorBody), (status = 400, description = "Bad request: the message names the parameter", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn results(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env_name, flag_key)): Path<(String, String)>,
    Query(params): Query<ResultsParams>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if !is_valid_key(&env_name) {
        return Err(bad(format!("invalid environment {env_name:?}")));
    }
    let request = Request::parse(params)?;

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
    let arms = arms(flag)?;
    let unit_attribute = flag.bucket_by();
    let totals = state
        .store()?
        .experiment_totals(
            &env_name,
            &MetricQuery {
                flag: &flag_key,
                variants: &arms.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
                metric: &request.metric,
                unit_attribute,
                window_ms: request.window_ms,
            },
        )
        .await?;

    let stats: Vec<VariantStats> = totals
        .variants
        .iter()
        .map(|t| VariantStats::new(t.units, t.converted, t.sum, t.sum_squares))
        .collect();
    let options = AnalysisOptions {
        weights: Some(arms.iter().map(|(_, w)| *w).collect()),
        ..request.options.clone()
    };
    let analysis = analyze(&stats[0], &stats[1..], &options)
        .map_err(|e| ApiError::Internal(format!("analysis failed: {e}")))?;
    let health = Health::check(&totals, &analysis, &arms, &stats);

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
            v["summary"] = summary(c, request.method, options.alpha);
            v
        })
        .collect();

    Ok(Json(json!({
        "env": env_name,
        "flag": flag_key,
        "metric": request.metric,
        "kind": options.metric,
        "method": request.method.as_str(),
        "correction": options.correction,
        "alpha": options.alpha,
        "window_hours": request.window_hours,
        "unit_attribute": unit_attribute,
        "control": arms[0].0,
        "exposures": {
            "units": health.exposed,
            "analyzed_units": stats.iter().map(|s| s.units).sum::<u64>(),
            "multiple_exposure_units": health.multiple,
            "multiple_exposure_share": health.multiple_share,
            "other_variant_units": totals.other_variant_units,
        },
        "variants": variants,
        "comparisons": comparisons,
        "srm": analysis.srm,
        "health": health.checks,
        "warnings": health.warnings,
    })))
}

/// What [`results`] answers, for the OpenAPI document: its fields as
/// written above; each variant's and comparison's statistics are
/// `guidon_stats`' (`VariantSummary`, `Comparison`) with the arm's key.
#[derive(utoipa::ToSchema)]
#[schema(as = ExperimentResults)]
#[allow(dead_code)]
pub(crate) struct ResultsSchema {
    env: String,
    flag: String,
    metric: String,
    kind: String,
    method: String,
    correction: String,
    alpha: f64,
    window_hours: Option<f64>,
    unit_attribute: String,
    control: String,
    exposures: Value,
    variants: Vec<Value>,
    comparisons: Vec<Value>,
    srm: Value,
    health: Value,
    warnings: Vec<String>,
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
