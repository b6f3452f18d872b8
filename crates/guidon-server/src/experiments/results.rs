//! `GET /api/v1/envs/{env}/experiments/{flag}/results`: one metric's
//! results. In steps: the query is read into a [`Request`], the flag's
//! [`arms`] are found, the store's totals are analyzed, the [`Health`]
//! checks are run on them, and everything is rendered.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use guidon_engine::is_valid_key;
use guidon_engine::model::Flag;
use guidon_events::{ExperimentTotals, MetricQuery};
use guidon_stats::{
    Analysis, AnalysisOptions, Correction, Method, MetricKind, Prior, SRM_P_THRESHOLD,
    VariantStats, analyze, headline,
};
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
    cuped_days: Option<f64>,
}

/// The longest CUPED pre-exposure window: a year.
pub(crate) const MAX_CUPED_DAYS: f64 = guidon_protocol::catalogue::MAX_CUPED_DAYS;

/// A pre-exposure window of `days` in milliseconds, checked.
pub(crate) fn cuped_window(days: Option<f64>) -> ApiResult<Option<i64>> {
    match days {
        None => Ok(None),
        Some(d) if d.is_finite() && d > 0.0 && d <= MAX_CUPED_DAYS => {
            Ok(Some((d * 86_400_000.0).round().max(1.0) as i64))
        }
        Some(d) => Err(bad(format!(
            "cuped_days must be a positive number of days up to {MAX_CUPED_DAYS}, got {d}"
        ))),
    }
}

/// One variant's aggregates for the tests, with CUPED's covariate when the
/// totals carry the pre-exposure sums: for a binomial metric the covariate
/// is whether the unit converted before its exposure, for a sum its value.
pub(crate) fn variant_stats(t: &guidon_events::VariantTotals, binomial: bool) -> VariantStats {
    let stats = if binomial {
        VariantStats::binomial(t.units, t.converted)
    } else {
        VariantStats::new(t.units, t.converted, t.sum, t.sum_squares)
    };
    match t.pre {
        None => stats,
        Some(pre) if binomial => {
            let x = pre.converted as f64;
            stats.with_covariate(x, x, pre.converted_both as f64)
        }
        Some(pre) => stats.with_covariate(pre.sum, pre.sum_squares, pre.sum_products),
    }
}

/// What CUPED did, for the answer: θ, the pooled covariate mean, the
/// window, and per variant the share of the variance it removed.
pub(crate) fn cuped_summary(analysis: &Analysis, days: Option<f64>) -> Value {
    match (&analysis.cuped, days) {
        (Some(c), Some(days)) => {
            let reduction: Vec<Option<f64>> = analysis
                .variants
                .iter()
                .map(|v| match (v.variance, v.adjusted_variance) {
                    (Some(raw), Some(adjusted)) if raw > 0.0 => Some(1.0 - adjusted / raw),
                    _ => None,
                })
                .collect();
            json!({"applied": true, "pre_exposure_days": days, "theta": c.theta,
                   "covariate_mean": c.covariate_mean, "variance_reduction": reduction})
        }
        (None, Some(days)) => json!({"applied": false, "pre_exposure_days": days,
            "reason": "too few units to estimate the adjustment"}),
        (_, None) => json!({"applied": false}),
    }
}

pub(crate) fn method_name(method: Method) -> &'static str {
    match method {
        Method::Frequentist => "frequentist",
        Method::Bayesian => "bayesian",
        Method::Sequential => "sequential",
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
    cuped_days: Option<f64>,
    cuped_ms: Option<i64>,
    /// Without the arms' weights: those come with the flag.
    options: AnalysisOptions,
}

impl ResultsParams {
    /// The first parameter given besides `metric`, if any.
    fn given(&self) -> Option<&'static str> {
        [
            ("method", self.method.is_some()),
            ("correction", self.correction.is_some()),
            ("window_hours", self.window_hours.is_some()),
            ("kind", self.kind.is_some()),
            ("alpha", self.alpha.is_some()),
            ("prior_mean", self.prior_mean.is_some()),
            ("prior_variance", self.prior_variance.is_some()),
            ("cuped_days", self.cuped_days.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
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
            cuped: params.cuped_days.is_some(),
            ..AnalysisOptions::default()
        };
        let cuped_ms = cuped_window(params.cuped_days)?;
        options
            .validate()
            .map_err(|e| bad(format!("invalid analysis options: {e}")))?;
        Ok(Request {
            metric,
            method,
            window_hours: params.window_hours,
            window_ms,
            cuped_days: params.cuped_days,
            cuped_ms,
            options,
        })
    }
}

/// The variants an experiment on `flag` compares: those with a positive
/// weight, control first, with their weights.
pub(crate) fn arms(flag: &Flag) -> ApiResult<Vec<(&str, f64)>> {
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
pub(crate) struct Health {
    pub(crate) exposed: u64,
    pub(crate) multiple: u64,
    pub(crate) multiple_share: f64,
    pub(crate) checks: Value,
    pub(crate) warnings: Vec<String>,
    /// Why no verdict may be given: a failed check, and what to look at.
    pub(crate) withheld: Option<String>,
}

impl Health {
    pub(crate) fn check(
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
        let mut withheld: Vec<String> = Vec::new();
        let srm_status = if analysis.srm.mismatch {
            warnings.push(format!(
                "Sample-ratio mismatch: units per variant {:?} differ from the configured split (p = {:.2e} < {SRM_P_THRESHOLD}); the assignment or the exposure logging is broken, do not trust these results",
                analysis.srm.observed, analysis.srm.p_value
            ));
            withheld.push(format!(
                "sample-ratio mismatch (p = {:.2e}): check that every variant logs its exposures (an SDK, page or cache that drops one variant's), that the split was not changed during the experiment, and that bots or redirects do not reach one variant more than another",
                analysis.srm.p_value
            ));
            "mismatch"
        } else if analysis.srm.enough_data {
            "ok"
        } else {
            "not_enough_data"
        };
        let multiple_status = if multiple_share > MULTIPLE_EXPOSURE_WARNING {
            warnings.push(format!(
                "{multiple} of {exposed} {} ({:.1}%) were exposed to more than one variant and are excluded; above {:.0}% the assignment is suspect (unit id changes, overrides, or a changed split)",
                plural(exposed, "unit", "units"),
                multiple_share * 100.0,
                MULTIPLE_EXPOSURE_WARNING * 100.0
            ));
            withheld.push(format!(
                "{:.1}% of units were exposed to more than one variant: check that the unit id is stable (for example across log-in), that no target or override moves units between variants, and that the split was not changed",
                multiple_share * 100.0
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
                "{other_variant_units} {} exposed to variants that no longer receive traffic and {} not analyzed",
                if other_variant_units == 1 { "unit was" } else { "units were" },
                if other_variant_units == 1 { "is" } else { "are" },
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
            withheld: (!withheld.is_empty())
                .then(|| format!("No verdict: {}.", withheld.join("; and "))),
        }
    }
}

/// `GET /api/v1/envs/{env}/experiments/{flag}/results?metric=NAME
/// [&method=frequentist|bayesian|sequential][&correction=none|holm|bh]
/// [&window_hours=N][&kind=binomial|continuous][&alpha=A]
/// [&prior_mean=M&prior_variance=V]`. Admin tokens only.
#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/experiments/{key}/results",
    tag = "experiments",
    summary = "An experiment's results (every metric, as its definition says); or, with ?metric=, one metric of a flag",
    params(
        ("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "The experiment, or with ?metric= a flag"),
        ("metric" = Option<String>, Query, description = "Read one metric (the conversions' name) of the flag named by the path instead of an experiment"),
        ("method" = Option<String>, Query, description = "frequentist (default), bayesian or sequential"),
        ("correction" = Option<String>, Query, description = "none, holm or bh"),
        ("window_hours" = Option<f64>, Query, description = "Count conversions only this long after the first exposure"),
        ("kind" = Option<String>, Query, description = "binomial (default) or continuous"),
        ("alpha" = Option<f64>, Query, description = "Significance level (0.05)"),
        ("prior_mean" = Option<f64>, Query, description = "Bayesian prior on the lift"),
        ("prior_variance" = Option<f64>, Query, description = "Bayesian prior's variance"),
        ("cuped_days" = Option<f64>, Query, description = "CUPED: adjust by each unit's value of the metric in this many days before its first exposure"),
    ),
    responses((status = 200, description = "The results", body = ResultsSchema), (status = 404, description = "No such environment or flag", body = ErrorBody), (status = 400, description = "Bad request: the message names the parameter", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin token", body = ErrorBody))
)]
pub(crate) async fn results(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env_name, flag_key)): Path<(String, String)>,
    Query(params): Query<ResultsParams>,
) -> ApiResult<Json<Value>> {
    caller.require_role(&env_name, guidon_protocol::api::UserRole::Viewer)?;
    if !is_valid_key(&env_name) {
        return Err(bad(format!("invalid environment {env_name:?}")));
    }
    if params.metric.is_none() {
        // An experiment of the catalogue: every metric, as it says.
        if let Some(name) = params.given() {
            return Err(bad(format!(
                "{name}: an experiment's results are read as its definition says; \
                 to read one metric of a flag instead, give ?metric=NAME"
            )));
        }
        let stored = match super::catalogue::experiment_or_404(&state, &env_name, &flag_key).await {
            Ok(stored) => stored,
            Err(ApiError::NotFound(message)) => {
                return Err(ApiError::NotFound(format!(
                    "{message} (or give ?metric=NAME to read one metric of a flag)"
                )));
            }
            Err(e) => return Err(e),
        };
        return Ok(Json(
            super::report::report(&state, &env_name, &stored).await?,
        ));
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
    // A metric without conversions while others have some is a typo or a
    // metric that is not sent: 404 naming those that exist. When no metric
    // has any conversion yet the results still answer (exposures, health),
    // with a warning.
    let metrics = state.events()?.experiment_metrics(&env_name).await?;
    if !metrics.is_empty() && !metrics.contains(&request.metric) {
        return Err(ApiError::NotFound(format!(
            "metric {:?} has no conversions in environment {env_name:?}; the metrics with conversions are: {}",
            request.metric,
            metrics.join(", ")
        )));
    }
    let unit_attribute = flag.bucket_by();
    let totals = state
        .events()?
        .experiment_totals(
            &env_name,
            &MetricQuery {
                flag: &flag_key,
                variants: &arms.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
                metric: &request.metric,
                unit_attribute,
                window_ms: request.window_ms,
                from_ms: None,
                until_ms: None,
                cap: None,
                pre_window_ms: request.cuped_ms,
            },
        )
        .await?;

    let stats: Vec<VariantStats> = totals
        .variants
        .iter()
        .map(|t| {
            if t.pre.is_some() {
                // CUPED on a conversion metric works on the 0/1 values.
                variant_stats(t, request.options.metric == MetricKind::Binomial)
            } else {
                // The value sums too, so a conversion metric's summary also
                // shows the mean value per unit.
                VariantStats::new(t.units, t.converted, t.sum, t.sum_squares)
            }
        })
        .collect();
    let options = AnalysisOptions {
        weights: Some(arms.iter().map(|(_, w)| *w).collect()),
        ..request.options.clone()
    };
    let analysis = analyze(&stats[0], &stats[1..], &options)
        .map_err(|e| ApiError::Internal(format!("analysis failed: {e}")))?;
    let mut health = Health::check(&totals, &analysis, &arms, &stats);
    if metrics.is_empty() {
        health.warnings.push(format!(
            "No conversions of any metric have been received in environment {env_name:?} yet: check the metric's name ({:?}) and that the application sends conversions",
            request.metric
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
            v["summary"] = serde_json::to_value(headline(
                &analysis,
                c,
                request.method,
                health.withheld.as_deref(),
            ))
            .unwrap_or_else(|_| json!({}));
            v
        })
        .collect();

    Ok(Json(json!({
        "env": env_name,
        "flag": flag_key,
        "metric": request.metric,
        "kind": options.metric,
        "method": method_name(request.method),
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
        "cuped": cuped_summary(&analysis, request.cuped_days),
        "bayesian": analysis.beta,
        "verdict_withheld": health.withheld,
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
    /// CUPED: whether it was applied, θ, the window, the variance removed.
    cuped: Value,
    /// For a binomial metric: the Beta posteriors' chance to be best and
    /// expected loss per arm (`guidon_stats::BinomialBayes`); null otherwise.
    bayesian: Option<Value>,
    /// Why no comparison has a verdict (a failed health check), if so.
    verdict_withheld: Option<String>,
    health: Value,
    warnings: Vec<String>,
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
