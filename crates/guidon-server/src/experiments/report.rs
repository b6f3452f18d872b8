//! An experiment's results: every metric of it at once (primary,
//! secondary, guardrails), read as its definition says.
//!
//! - Each metric's per-unit values come from the catalogue: binomial
//!   (converted or not), sum (capped at a value or a percentile), or a
//!   ratio of two metrics (delta method). Only units first exposed
//!   between the experiment's start and stop count, and conversions up to
//!   its stop.
//! - The p-values of the primary and secondary metrics are corrected
//!   together, across metrics and arms (Holm by default): that is the
//!   family a team reads for "did anything move". Guardrails are judged
//!   on their own, uncorrected, so that a harm is not hidden by the number
//!   of metrics.
//! - Each comparison's headline is `guidon_stats::headline`'s, with its
//!   direction-aware `outcome` (better, worse); a failed health check
//!   withholds every verdict.
//! - A guardrail is `breached` when its deciding test is significant in
//!   the bad direction for some treatment, `ok` otherwise (no significant
//!   harm yet), `withheld` when a health check failed.

use guidon_engine::Timestamp;
use guidon_events::{ExperimentTotals, MetricQuery, RatioPart};
use guidon_protocol::catalogue::{
    Direction, ExperimentDefinition, MetricDefinition, MetricKind as CatalogueKind, Stored,
};
use guidon_stats::{
    Analysis, AnalysisOptions, Correction, Method, MetricKind, Outcome, Prior, VariantStats,
    Verdict, analyze, headline,
};
use serde_json::{Value, json};

use super::catalogue::{metrics_of, names, status};
use super::results::{Health, arms, cuped_summary, method_name, variant_stats};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// How the experiment is read, from its definition.
struct Reading {
    method: Method,
    alpha: f64,
    correction: Correction,
    tuning: f64,
    window_ms: Option<i64>,
    from_ms: Option<i64>,
    until_ms: Option<i64>,
    cuped_days: Option<f64>,
    cuped_ms: Option<i64>,
}

impl Reading {
    fn of(e: &ExperimentDefinition) -> Reading {
        Reading {
            method: match e.method.as_deref() {
                Some("sequential") => Method::Sequential,
                Some("bayesian") => Method::Bayesian,
                _ => Method::Frequentist,
            },
            alpha: e.alpha.unwrap_or(0.05),
            correction: match e.correction.as_deref() {
                Some("none") => Correction::None,
                Some("bh") => Correction::BenjaminiHochberg,
                _ => Correction::Holm,
            },
            tuning: e
                .sequential_tuning
                .unwrap_or(guidon_stats::DEFAULT_TUNING_PARAMETER),
            window_ms: e.window_hours.map(|h| (h * 3_600_000.0).round() as i64),
            from_ms: e.start_time().map(|t| t.as_millisecond()),
            until_ms: e.stop_time().map(|t| t.as_millisecond()),
            cuped_days: e.cuped_days,
            cuped_ms: e
                .cuped_days
                .map(|d| (d * 86_400_000.0).round().max(1.0) as i64),
        }
    }

    fn query<'a>(
        &self,
        flag: &'a str,
        arms: &'a [&'a str],
        event: &'a str,
        unit: &'a str,
    ) -> MetricQuery<'a> {
        MetricQuery {
            window_ms: self.window_ms,
            from_ms: self.from_ms,
            until_ms: self.until_ms,
            ..MetricQuery::new(flag, arms, event, unit)
        }
    }
}

/// One metric's per-variant aggregates and the kind its tests use.
struct MetricData {
    kind: MetricKind,
    stats: Vec<VariantStats>,
    /// The cap applied to a sum metric, after resolving a percentile.
    cap: Option<f64>,
    /// The exposure-level totals, when this metric read them.
    totals: Option<ExperimentTotals>,
}

fn lookup<'a>(
    catalogue: &'a [Stored<MetricDefinition>],
    key: &str,
) -> ApiResult<&'a MetricDefinition> {
    catalogue
        .iter()
        .find(|m| m.key == key)
        .map(|m| &m.definition)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "the experiment names metric {key:?}, which is not in the catalogue; its metrics: {}",
                names(catalogue.iter().map(|m| m.key.as_str()))
            ))
        })
}

/// The cap of a sum metric: its value, or the percentile of the units'
/// values read from the store.
async fn resolve_cap(
    state: &AppState,
    env: &str,
    metric: &MetricDefinition,
    query: &MetricQuery<'_>,
) -> ApiResult<Option<f64>> {
    match metric.cap {
        None => Ok(None),
        Some(cap) => match (cap.value, cap.percentile) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(p)) => Ok(state
                .events
                .experiment_unit_percentile(env, query, p)
                .await?
                // A percentile cap of 0 or less caps nothing positive.
                .filter(|v| *v > 0.0)),
            (None, None) => Ok(None),
        },
    }
}

async fn metric_data(
    state: &AppState,
    env: &str,
    reading: &Reading,
    (flag, arms, unit): (&str, &[&str], &str),
    catalogue: &[Stored<MetricDefinition>],
    metric: &MetricDefinition,
) -> ApiResult<MetricData> {
    let event = |m: &MetricDefinition| m.event.clone().unwrap_or_default();
    match metric.kind {
        CatalogueKind::Binomial | CatalogueKind::Sum => {
            let event = event(metric);
            let base = reading.query(flag, arms, &event, unit);
            let cap = if metric.kind == CatalogueKind::Sum {
                resolve_cap(state, env, metric, &base).await?
            } else {
                None
            };
            let totals = state
                .events
                .experiment_totals(
                    env,
                    &MetricQuery {
                        cap,
                        pre_window_ms: reading.cuped_ms,
                        ..base
                    },
                )
                .await?;
            let stats = totals
                .variants
                .iter()
                .map(|t| variant_stats(t, metric.kind == CatalogueKind::Binomial))
                .collect();
            Ok(MetricData {
                kind: if metric.kind == CatalogueKind::Binomial {
                    MetricKind::Binomial
                } else {
                    MetricKind::Continuous
                },
                stats,
                cap,
                totals: Some(totals),
            })
        }
        CatalogueKind::Ratio => {
            let numerator = lookup(catalogue, metric.numerator.as_deref().unwrap_or_default())?;
            let denominator = lookup(catalogue, metric.denominator.as_deref().unwrap_or_default())?;
            let (num_event, den_event) = (event(numerator), event(denominator));
            let num_cap = resolve_cap(
                state,
                env,
                numerator,
                &reading.query(flag, arms, &num_event, unit),
            )
            .await?;
            let den_cap = resolve_cap(
                state,
                env,
                denominator,
                &reading.query(flag, arms, &den_event, unit),
            )
            .await?;
            let totals = state
                .events
                .experiment_ratio_totals(
                    env,
                    flag,
                    arms,
                    unit,
                    (reading.window_ms, reading.from_ms, reading.until_ms),
                    RatioPart {
                        metric: &num_event,
                        converted: numerator.kind == CatalogueKind::Binomial,
                        cap: num_cap,
                    },
                    RatioPart {
                        metric: &den_event,
                        converted: denominator.kind == CatalogueKind::Binomial,
                        cap: den_cap,
                    },
                )
                .await?;
            let stats = totals
                .iter()
                .map(|t| {
                    VariantStats::ratio(
                        t.units,
                        t.converted,
                        (t.sum_y, t.sum_y_squares),
                        (t.sum_x, t.sum_x_squares, t.sum_products),
                    )
                })
                .collect();
            Ok(MetricData {
                kind: MetricKind::Ratio,
                stats,
                cap: None,
                totals: None,
            })
        }
    }
}

/// `better` / `worse` for a verdict under the metric's direction.
fn outcome(verdict: Verdict, direction: Direction) -> &'static str {
    match (verdict, direction) {
        (Verdict::Increase, Direction::Higher) | (Verdict::Decrease, Direction::Lower) => "better",
        (Verdict::Increase, Direction::Lower) | (Verdict::Decrease, Direction::Higher) => "worse",
        (Verdict::Inconclusive, _) => "inconclusive",
        (Verdict::Withheld, _) => "withheld",
        (Verdict::Unavailable, _) => "unavailable",
    }
}

/// Corrects the deciding p-values of `analyses` (primary and secondary)
/// together: fixed-horizon p-values into `adjusted_p_value`, always-valid
/// ones in place.
fn correct_family(
    analyses: &mut [(usize, Analysis)],
    method: Method,
    correction: Correction,
) -> ApiResult<usize> {
    let mut p_values = Vec::new();
    for (_, analysis) in analyses.iter() {
        for c in &analysis.comparisons {
            if let Outcome::Computed(lift) = &c.absolute {
                match (method, &lift.sequential) {
                    (Method::Sequential, Some(s)) => p_values.push(s.p_value),
                    (Method::Sequential, None) => {}
                    _ => p_values.push(lift.test.p_value),
                }
            }
        }
    }
    let family = p_values.len();
    if correction == Correction::None || method == Method::Bayesian || family == 0 {
        return Ok(family);
    }
    let adjusted = correction
        .apply(&p_values)
        .map_err(|e| ApiError::Internal(format!("correction failed: {e}")))?;
    let mut next = adjusted.into_iter();
    for (_, analysis) in analyses.iter_mut() {
        for c in &mut analysis.comparisons {
            if let Outcome::Computed(lift) = &mut c.absolute {
                match (method, &mut lift.sequential) {
                    (Method::Sequential, Some(s)) => {
                        if let Some(p) = next.next() {
                            s.p_value = p;
                        }
                    }
                    (Method::Sequential, None) => {}
                    _ => lift.adjusted_p_value = next.next(),
                }
            }
        }
    }
    Ok(family)
}

/// The results of experiment `stored` in `env`.
pub(crate) async fn report(
    state: &AppState,
    env: &str,
    stored: &Stored<ExperimentDefinition>,
) -> ApiResult<Value> {
    let experiment = &stored.definition;
    let reading = Reading::of(experiment);
    let live = state.env(env).await?.live.load_full();
    let flag = live
        .file()
        .flags
        .iter()
        .find(|f| f.key == experiment.flag)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "experiment {:?} is on flag {:?}, which is not in environment {env:?} any more",
                stored.key, experiment.flag
            ))
        })?;
    let arms = arms(flag)?;
    let arm_keys: Vec<&str> = arms.iter().map(|(k, _)| *k).collect();
    let unit = flag.bucket_by();
    let catalogue = metrics_of(state, env).await?;

    let mut data = Vec::new();
    for (key, role) in experiment.metrics() {
        let metric = lookup(&catalogue, key)?;
        let d = metric_data(
            state,
            env,
            &reading,
            (&experiment.flag, &arm_keys, unit),
            &catalogue,
            metric,
        )
        .await?;
        data.push((key, role, metric, d));
    }

    // The exposures and their health: the same for every metric (the
    // units come from the exposures alone); read by any event metric, or
    // by the primary's numerator.
    let totals = match data.iter().find_map(|(_, _, _, d)| d.totals.clone()) {
        Some(t) => t,
        None => {
            let event = lookup(
                &catalogue,
                data.first()
                    .and_then(|(_, _, m, _)| m.numerator.as_deref())
                    .unwrap_or_default(),
            )?
            .event
            .clone()
            .unwrap_or_default();
            state
                .events
                .experiment_totals(
                    env,
                    &reading.query(&experiment.flag, &arm_keys, &event, unit),
                )
                .await?
        }
    };

    let options = |kind: MetricKind| AnalysisOptions {
        metric: kind,
        alpha: reading.alpha,
        prior: Prior::Flat,
        sequential: reading.method == Method::Sequential,
        sequential_tuning_parameter: reading.tuning,
        weights: Some(arms.iter().map(|(_, w)| *w).collect()),
        correction: Correction::None,
        // Only binomial and sum metrics carry the covariate; a ratio is
        // analysed without it.
        cuped: reading.cuped_ms.is_some() && kind != MetricKind::Ratio,
    };
    let mut analyses: Vec<(usize, Analysis)> = Vec::new();
    let mut guardrail_analyses: Vec<(usize, Analysis)> = Vec::new();
    for (i, (_, role, _, d)) in data.iter().enumerate() {
        let analysis = analyze(&d.stats[0], &d.stats[1..], &options(d.kind))
            .map_err(|e| ApiError::Internal(format!("analysis failed: {e}")))?;
        if *role == "guardrail" {
            guardrail_analyses.push((i, analysis));
        } else {
            analyses.push((i, analysis));
        }
    }
    let family = correct_family(&mut analyses, reading.method, reading.correction)?;

    let first = analyses
        .first()
        .map(|(_, a)| a)
        .ok_or_else(|| ApiError::Internal("an experiment without a primary metric".into()))?;
    let health = Health::check(&totals, first, &arms, &data[0].3.stats);
    let withheld = health.withheld.as_deref();

    let mut metrics = Vec::new();
    let mut guardrails = Vec::new();
    for (i, analysis) in analyses.iter().chain(guardrail_analyses.iter()) {
        let (key, role, metric, d) = &data[*i];
        let variants: Vec<Value> = arms
            .iter()
            .zip(&analysis.variants)
            .map(|((k, w), summary)| {
                let mut v = json!(summary);
                v["key"] = json!(k);
                v["weight"] = json!(w);
                v
            })
            .collect();
        let mut breached: Vec<&str> = Vec::new();
        let mut any_withheld = false;
        let mut any_unavailable = false;
        let comparisons: Vec<Value> = analysis
            .comparisons
            .iter()
            .map(|c| {
                let arm = arms.get(c.variant).map_or("", |(k, _)| *k);
                let h = headline(analysis, c, reading.method, withheld);
                let outcome = outcome(h.verdict, metric.direction);
                match outcome {
                    "worse" => breached.push(arm),
                    "withheld" => any_withheld = true,
                    "unavailable" => any_unavailable = true,
                    _ => {}
                }
                let mut v = json!(c);
                v["variant"] = json!(arm);
                v["summary"] = json!(h);
                v["outcome"] = json!(outcome);
                v
            })
            .collect();
        if *role == "guardrail" {
            let status = if any_withheld {
                "withheld"
            } else if !breached.is_empty() {
                "breached"
            } else if any_unavailable {
                "unavailable"
            } else {
                "ok"
            };
            guardrails.push(json!({
                "metric": key,
                "status": status,
                "breached_by": breached,
                "meaning": match status {
                    "breached" => "significantly worse in the metric's bad direction",
                    "ok" => "no significant harm at the experiment's alpha (so far)",
                    "withheld" => "a health check failed: see verdict_withheld",
                    _ => "no test could be computed yet",
                },
            }));
        }
        metrics.push(json!({
            "key": key,
            "role": role,
            "definition": metric,
            "kind": d.kind,
            "cap": d.cap,
            "variants": variants,
            "comparisons": comparisons,
            "bayesian": analysis.beta,
            "cuped": cuped_summary(analysis, if d.kind == MetricKind::Ratio { None } else { reading.cuped_days }),
        }));
    }

    let now = Timestamp::now();
    let mut warnings = health.warnings.clone();
    if status(experiment, now) == "scheduled" {
        warnings.push(format!(
            "The experiment starts at {}: nothing counts before then",
            experiment.start.as_deref().unwrap_or("?")
        ));
    }
    Ok(json!({
        "experiment": stored.key,
        "version": stored.version,
        "env": env,
        "flag": experiment.flag,
        "hypothesis": experiment.hypothesis,
        "status": status(experiment, now),
        "start": experiment.start,
        "stop": experiment.stop,
        "method": method_name(reading.method),
        "alpha": reading.alpha,
        "correction": {
            "method": reading.correction,
            "family": "the primary and secondary metrics, every treatment",
            "tests": family,
            "applies_to": if reading.method == Method::Bayesian {
                "nothing: Bayesian results are not corrected"
            } else {
                "the deciding p-values; intervals are not widened"
            },
        },
        "sequential_tuning": (reading.method == Method::Sequential).then_some(reading.tuning),
        "window_hours": experiment.window_hours,
        "cuped_days": experiment.cuped_days,
        "unit_attribute": unit,
        "control": arms[0].0,
        "exposures": {
            "units": health.exposed,
            "multiple_exposure_units": health.multiple,
            "multiple_exposure_share": health.multiple_share,
            "other_variant_units": totals.other_variant_units,
        },
        "metrics": metrics,
        "guardrails": guardrails,
        "srm": first.srm,
        "verdict_withheld": health.withheld,
        "health": health.checks,
        "warnings": warnings,
    }))
}
