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
#[derive(Debug, Clone, Copy)]
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
                .events()?
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
                .events()?
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
                .events()?
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
                .events()?
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

// ---- planning and reading over time ----

const DAY_MS: i64 = 86_400_000;
/// The most days `daily` answers (the latest ones).
pub(crate) const MAX_DAYS: i64 = 90;

/// The planning query of `GET …/experiments/{key}/plan`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanParams {
    /// The relative effect to detect (0.05 = 5 %).
    mde: Option<f64>,
    power: Option<f64>,
    /// What a given duration could detect.
    days: Option<f64>,
    /// Overrides of what the data says (before any traffic, say).
    baseline_rate: Option<f64>,
    baseline_mean: Option<f64>,
    baseline_sd: Option<f64>,
    daily_units: Option<f64>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// The experiment's flag, its arms and unit attribute.
fn flag_of<'a>(
    live: &'a guidon_engine::FlagFile,
    stored: &Stored<ExperimentDefinition>,
    env: &str,
) -> ApiResult<&'a guidon_engine::model::Flag> {
    live.flags
        .iter()
        .find(|f| f.key == stored.definition.flag)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "experiment {:?} is on flag {:?}, which is not in environment {env:?} any more",
                stored.key, stored.definition.flag
            ))
        })
}

/// Sample size, minimum detectable effect and duration for the primary
/// metric, from the experiment's own traffic and control baseline.
pub(crate) async fn plan(
    state: &AppState,
    env: &str,
    stored: &Stored<ExperimentDefinition>,
    params: PlanParams,
) -> ApiResult<Value> {
    use guidon_stats::{Baseline, minimum_detectable_effect, sample_size};
    let experiment = &stored.definition;
    let reading = Reading::of(experiment);
    let power = params.power.unwrap_or(0.8);
    let live = state.env(env).await?.live.load_full();
    let flag = flag_of(live.file(), stored, env)?;
    let arms = arms(flag)?;
    let arm_keys: Vec<&str> = arms.iter().map(|(k, _)| *k).collect();
    let catalogue = metrics_of(state, env).await?;
    let metric = lookup(&catalogue, &experiment.primary_metric)?;
    if metric.kind == CatalogueKind::Ratio {
        return Err(bad(format!(
            "the primary metric {:?} is a ratio: planning covers binomial and sum metrics",
            experiment.primary_metric
        )));
    }
    let data = metric_data(
        state,
        env,
        &Reading {
            cuped_ms: None,
            ..reading
        },
        (&experiment.flag, &arm_keys, flag.bucket_by()),
        &catalogue,
        metric,
    )
    .await?;
    let control = data.stats[0];
    let baseline = match metric.kind {
        CatalogueKind::Binomial => Baseline::Rate(
            params
                .baseline_rate
                .or_else(|| control.rate())
                .unwrap_or(0.0),
        ),
        _ => {
            let mean = params
                .baseline_mean
                .or_else(|| control.mean())
                .unwrap_or(0.0);
            let sd = params
                .baseline_sd
                .or_else(|| control.sample_variance().ok().map(f64::sqrt))
                .unwrap_or(0.0);
            Baseline::Mean { mean, sd }
        }
    };
    let now = Timestamp::now().as_millisecond();
    let start = reading.from_ms.unwrap_or(now);
    let end = reading.until_ms.map_or(now, |u| u.min(now));
    let days_elapsed = ((end - start) as f64 / DAY_MS as f64).max(0.0);
    let exposed: u64 = data.stats.iter().map(|s| s.units).sum();
    let daily_units = params.daily_units.or_else(|| {
        (days_elapsed >= 1.0 / 24.0 && exposed > 0).then(|| exposed as f64 / days_elapsed)
    });
    let per_arm_share = |total: f64| {
        // The smallest arm's share of the traffic bounds the duration.
        let weights: f64 = arms.iter().map(|(_, w)| *w).sum();
        let smallest = arms.iter().map(|(_, w)| *w).fold(f64::INFINITY, f64::min);
        total * smallest / weights
    };
    let invalid = |e: guidon_stats::StatsError| {
        bad(format!(
            "{e} (give baseline_rate, or baseline_mean and baseline_sd, before the data has them)"
        ))
    };
    let needed = match params.mde {
        Some(mde) => Some(sample_size(baseline, mde, reading.alpha, power).map_err(invalid)?),
        None => None,
    };
    let smallest_arm = data.stats.iter().map(|s| s.units).min().unwrap_or(0);
    let mde_now = if smallest_arm >= 2 {
        minimum_detectable_effect(baseline, smallest_arm, reading.alpha, power).ok()
    } else {
        None
    };
    let mde_at_days = match (params.days, daily_units) {
        (Some(days), Some(daily)) if days.is_finite() && days > 0.0 => {
            let units = per_arm_share(daily * days).floor() as u64;
            minimum_detectable_effect(baseline, units, reading.alpha, power).ok()
        }
        (Some(days), _) if !(days.is_finite() && days > 0.0) => {
            return Err(bad(format!("days must be a positive number, got {days}")));
        }
        _ => None,
    };
    let days_needed = match (&needed, daily_units) {
        (Some(n), Some(daily)) if daily > 0.0 => {
            Some(n.units_per_arm as f64 / per_arm_share(daily))
        }
        _ => None,
    };
    Ok(json!({
        "experiment": stored.key,
        "metric": experiment.primary_metric,
        "kind": metric.kind,
        "baseline": match baseline {
            Baseline::Rate(p) => json!({"rate": p}),
            Baseline::Mean { mean, sd } => json!({"mean": mean, "sd": sd}),
        },
        "alpha": reading.alpha,
        "power": power,
        "arms": arms.len(),
        "method": "two-sided fixed-horizon test, equal allocation (Fleiss for rates, normal for means)",
        "mde": params.mde,
        "units_per_arm": needed.map(|n| n.units_per_arm),
        "total_units": needed.map(|n| n.units_per_arm as f64 * arms.len() as f64),
        "observed": {
            "units": exposed,
            "smallest_arm_units": smallest_arm,
            "days_elapsed": days_elapsed,
            "daily_units": daily_units,
        },
        "days_needed": days_needed,
        "days_remaining": days_needed.map(|d| (d - days_elapsed).max(0.0)),
        "mde_now": mde_now,
        "days": params.days,
        "mde_at_days": mde_at_days,
    }))
}

/// The primary (or `metric`) metric's results at the end of every day
/// since the start, cumulative: units, conversions and mean per variant,
/// and each treatment's lifts. Fixed-horizon intervals: reading them day
/// after day is peeking (the sequential method is what allows it).
pub(crate) async fn daily(
    state: &AppState,
    env: &str,
    stored: &Stored<ExperimentDefinition>,
    metric_key: Option<&str>,
) -> ApiResult<Value> {
    let experiment = &stored.definition;
    let reading = Reading::of(experiment);
    let key = metric_key.unwrap_or(&experiment.primary_metric);
    if !experiment.metrics().any(|(m, _)| m == key) {
        return Err(ApiError::NotFound(format!(
            "experiment {:?} has no metric {key:?}; its metrics: {}",
            stored.key,
            names(experiment.metrics().map(|(m, _)| m))
        )));
    }
    let live = state.env(env).await?.live.load_full();
    let flag = flag_of(live.file(), stored, env)?;
    let arms = arms(flag)?;
    let arm_keys: Vec<&str> = arms.iter().map(|(k, _)| *k).collect();
    let catalogue = metrics_of(state, env).await?;
    let metric = lookup(&catalogue, key)?;
    let now = Timestamp::now().as_millisecond();
    let Some(start) = reading.from_ms else {
        return Err(ApiError::Internal("an experiment without a start".into()));
    };
    let end = reading.until_ms.map_or(now, |u| u.min(now));
    let first_day = start.div_euclid(DAY_MS);
    let last_day = end.div_euclid(DAY_MS);
    let from_day = first_day.max(last_day - MAX_DAYS + 1);
    let mut days = Vec::new();
    for day in from_day..=last_day {
        let until = ((day + 1) * DAY_MS - 1).min(end);
        let d = metric_data(
            state,
            env,
            &Reading {
                until_ms: Some(until),
                cuped_ms: None,
                ..Reading::of(experiment)
            },
            (&experiment.flag, &arm_keys, flag.bucket_by()),
            &catalogue,
            metric,
        )
        .await?;
        let analysis = analyze(
            &d.stats[0],
            &d.stats[1..],
            &AnalysisOptions {
                metric: d.kind,
                alpha: reading.alpha,
                weights: Some(arms.iter().map(|(_, w)| *w).collect()),
                cuped: false,
                ..AnalysisOptions::default()
            },
        )
        .map_err(|e| ApiError::Internal(format!("analysis failed: {e}")))?;
        let variants: Vec<Value> = arms
            .iter()
            .zip(&analysis.variants)
            .map(|((k, _), v)| {
                json!({"variant": k, "units": v.units, "conversions": v.conversions,
                       "rate": v.rate, "mean": v.mean, "ratio": v.ratio})
            })
            .collect();
        let comparisons: Vec<Value> = analysis
            .comparisons
            .iter()
            .map(|c| {
                let arm = arms.get(c.variant).map_or("", |(k, _)| *k);
                let absolute = c.absolute.computed().map(|l| {
                    json!({"lift": l.test.estimate, "ci": l.test.ci, "p_value": l.test.p_value})
                });
                let relative = c
                    .relative_interval
                    .computed()
                    .map(|r| json!({"lift": r.estimate, "ci": r.ci}));
                json!({"variant": arm, "absolute": absolute, "relative": relative})
            })
            .collect();
        days.push(json!({
            "day": Timestamp::from_millisecond(day * DAY_MS).map_or(Value::Null, |t| json!(t.strftime("%Y-%m-%d").to_string())),
            "until": Timestamp::from_millisecond(until).map_or(Value::Null, |t| json!(t.to_string())),
            "variants": variants,
            "comparisons": comparisons,
        }));
    }
    Ok(json!({
        "experiment": stored.key,
        "metric": key,
        "kind": metric.kind,
        "cumulative": true,
        "note": "fixed-horizon intervals at the end of each day (UTC): reading them every day is peeking; use the sequential method to decide early",
        "days": days,
    }))
}

// ---- the handlers ----

type St = axum::extract::State<std::sync::Arc<AppState>>;

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/experiments/{key}/plan",
    tag = "experiments",
    summary = "Sample size, minimum detectable effect and duration for the primary metric, from the experiment's traffic and control baseline",
    params(
        ("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Experiment"),
        ("mde" = Option<f64>, Query, description = "Relative effect to detect (0.05 = 5 %)"),
        ("power" = Option<f64>, Query, description = "Power (0.8)"),
        ("days" = Option<f64>, Query, description = "What this many days of traffic could detect"),
        ("baseline_rate" = Option<f64>, Query, description = "Override: the control's rate"),
        ("baseline_mean" = Option<f64>, Query, description = "Override: the control's mean"),
        ("baseline_sd" = Option<f64>, Query, description = "Override: the control's standard deviation"),
        ("daily_units" = Option<f64>, Query, description = "Override: exposed units per day"),
    ),
    responses((status = 200, description = "The plan", body = PlanSchema), (status = 400, description = "Bad parameter, or no baseline yet", body = crate::error::ErrorBody), (status = 404, description = "Unknown environment or experiment", body = crate::error::ErrorBody), (status = 401, description = "Missing or unknown token", body = crate::error::ErrorBody), (status = 403, description = "Not an admin token", body = crate::error::ErrorBody))
)]
pub(crate) async fn plan_handler(
    axum::extract::State(state): St,
    caller: crate::auth::Caller,
    crate::body::Path((env, key)): crate::body::Path<(String, String)>,
    crate::body::Query(params): crate::body::Query<PlanParams>,
) -> ApiResult<axum::Json<Value>> {
    caller.require_admin()?;
    crate::admin::check_key("environment", &env)?;
    let stored = super::catalogue::experiment_or_404(&state, &env, &key).await?;
    Ok(axum::Json(plan(&state, &env, &stored, params).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DailyParams {
    metric: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/envs/{env}/experiments/{key}/daily",
    tag = "experiments",
    summary = "Cumulative results at the end of each day (UTC) since the start, for the charts: per variant and per treatment",
    params(
        ("env" = String, Path, description = "Environment"), ("key" = String, Path, description = "Experiment"),
        ("metric" = Option<String>, Query, description = "One of the experiment's metrics (default: the primary)"),
    ),
    responses((status = 200, description = "The days", body = DailySchema), (status = 404, description = "Unknown environment, experiment or metric", body = crate::error::ErrorBody), (status = 401, description = "Missing or unknown token", body = crate::error::ErrorBody), (status = 403, description = "Not an admin token", body = crate::error::ErrorBody))
)]
pub(crate) async fn daily_handler(
    axum::extract::State(state): St,
    caller: crate::auth::Caller,
    crate::body::Path((env, key)): crate::body::Path<(String, String)>,
    crate::body::Query(params): crate::body::Query<DailyParams>,
) -> ApiResult<axum::Json<Value>> {
    caller.require_admin()?;
    crate::admin::check_key("environment", &env)?;
    let stored = super::catalogue::experiment_or_404(&state, &env, &key).await?;
    Ok(axum::Json(
        daily(&state, &env, &stored, params.metric.as_deref()).await?,
    ))
}

/// The plan, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = ExperimentPlan)]
#[allow(dead_code)]
pub(crate) struct PlanSchema {
    experiment: String,
    metric: String,
    kind: String,
    /// {rate} or {mean, sd}.
    baseline: Value,
    alpha: f64,
    power: f64,
    arms: usize,
    method: String,
    mde: Option<f64>,
    units_per_arm: Option<u64>,
    total_units: Option<f64>,
    /// {units, smallest_arm_units, days_elapsed, daily_units}.
    observed: Value,
    days_needed: Option<f64>,
    days_remaining: Option<f64>,
    mde_now: Option<f64>,
    days: Option<f64>,
    mde_at_days: Option<f64>,
}

/// The cumulative days, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(as = ExperimentDaily)]
#[allow(dead_code)]
pub(crate) struct DailySchema {
    experiment: String,
    metric: String,
    kind: String,
    cumulative: bool,
    note: String,
    /// [{day, until, variants: [{variant, units, conversions, rate, mean, ratio}], comparisons: [{variant, absolute, relative}]}]
    days: Vec<Value>,
}
