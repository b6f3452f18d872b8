//! The metric catalogue and experiments: named metrics per environment
//! and experiments that tie a flag to them. Shapes and their validation
//! (pure); the server stores them and reads results with them.
//!
//! ```json
//! {"kind": "binomial", "event": "purchase", "direction": "higher"}
//! {"kind": "sum", "event": "purchase", "cap": {"percentile": 99}}
//! {"kind": "ratio", "numerator": "revenue", "denominator": "orders"}
//! ```

use guidon_engine::{Problem, Timestamp, is_valid_key};
use serde::{Deserialize, Serialize};

/// How a metric's per-unit value is made from a unit's conversions of
/// its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// 1 when the unit converted (its attributed values sum to more than
    /// zero; a conversion without a value counts 1), else 0.
    Binomial,
    /// The sum of the unit's attributed values, optionally capped; compared
    /// as the mean per exposed unit.
    Sum,
    /// `Σ numerator / Σ denominator` over the units, two other metrics of
    /// the catalogue (delta method).
    Ratio,
}

/// Which way is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More is better (purchases, revenue).
    #[default]
    Higher,
    /// Less is better (errors, latency, refunds).
    Lower,
}

/// Capping of a sum metric's per-unit value: at a value, or at a
/// percentile of the per-unit values of the units that converted (all
/// variants together), exactly one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// Cap every unit's value at this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Cap at this percentile, strictly between 0 and 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
}

/// A named metric of an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    /// The metric's key; when given in a body it must match the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// binomial, sum or ratio.
    pub kind: MetricKind,
    /// binomial and sum: the conversions' `metric` name in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// ratio: the catalogue metric on top (binomial or sum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<String>,
    /// ratio: the catalogue metric below (binomial or sum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<String>,
    /// sum: capping of the per-unit value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
    /// Which way is good (default higher).
    #[serde(default)]
    pub direction: Direction,
    /// Meant as a guardrail: a metric that must not get worse.
    #[serde(default)]
    pub guardrail: bool,
    /// What it measures, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The longest description or hypothesis accepted, in bytes.
pub const MAX_TEXT: usize = 4096;

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn check_key_field(problems: &mut Vec<Problem>, path: &str, given: &Option<String>, key: &str) {
    if let Some(given) = given
        && given != key
    {
        problems.push(problem(
            path,
            format!("key {given:?} differs from the key in the path, {key:?}"),
        ));
    }
}

fn check_text(problems: &mut Vec<Problem>, path: &str, text: &Option<String>) {
    if let Some(text) = text
        && text.len() > MAX_TEXT
    {
        problems.push(problem(
            path,
            format!("at most {MAX_TEXT} bytes, got {}", text.len()),
        ));
    }
}

impl MetricDefinition {
    /// Checks the definition on its own, for the key `key`. `other` looks
    /// up another catalogue metric by key (for a ratio's parts).
    pub fn validate<'a>(
        &self,
        key: &str,
        other: impl Fn(&str) -> Option<&'a MetricDefinition>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !is_valid_key(key) {
            problems.push(problem(
                "key",
                format!("invalid metric key {key:?}: letters, digits, _ . - (at most 128)"),
            ));
        }
        check_key_field(&mut problems, "key", &self.key, key);
        check_text(&mut problems, "description", &self.description);
        let event = |problems: &mut Vec<Problem>| match &self.event {
            None => problems.push(problem(
                "event",
                "the conversions' metric name is required (the `metric` of conversion events)",
            )),
            Some(e) if !is_valid_key(e) => {
                problems.push(problem("event", format!("invalid event name {e:?}")));
            }
            Some(_) => {}
        };
        let forbid = |problems: &mut Vec<Problem>, path: &str, present: bool, kind: &str| {
            if present {
                problems.push(problem(path, format!("not used by a {kind} metric")));
            }
        };
        match self.kind {
            MetricKind::Binomial => {
                event(&mut problems);
                forbid(&mut problems, "cap", self.cap.is_some(), "binomial");
                forbid(
                    &mut problems,
                    "numerator",
                    self.numerator.is_some(),
                    "binomial",
                );
                forbid(
                    &mut problems,
                    "denominator",
                    self.denominator.is_some(),
                    "binomial",
                );
            }
            MetricKind::Sum => {
                event(&mut problems);
                forbid(&mut problems, "numerator", self.numerator.is_some(), "sum");
                forbid(
                    &mut problems,
                    "denominator",
                    self.denominator.is_some(),
                    "sum",
                );
                if let Some(cap) = &self.cap {
                    match (cap.value, cap.percentile) {
                        (Some(_), Some(_)) | (None, None) => problems
                            .push(problem("cap", "give exactly one of value and percentile")),
                        (Some(v), None) if !v.is_finite() || v <= 0.0 => problems.push(problem(
                            "cap.value",
                            format!("a cap must be a positive number, got {v}"),
                        )),
                        (None, Some(p)) if !(p.is_finite() && p > 0.0 && p < 100.0) => problems
                            .push(problem(
                                "cap.percentile",
                                format!("a percentile must be strictly between 0 and 100, got {p}"),
                            )),
                        _ => {}
                    }
                }
            }
            MetricKind::Ratio => {
                forbid(&mut problems, "event", self.event.is_some(), "ratio");
                forbid(&mut problems, "cap", self.cap.is_some(), "ratio");
                for (path, part) in [
                    ("numerator", &self.numerator),
                    ("denominator", &self.denominator),
                ] {
                    match part {
                        None => problems.push(problem(
                            path,
                            "a ratio needs a numerator and a denominator metric",
                        )),
                        Some(p) if p == key => problems
                            .push(problem(path, format!("a ratio cannot use itself ({p:?})"))),
                        Some(p) => match other(p) {
                            None => problems.push(problem(
                                path,
                                format!("no metric {p:?} in this environment's catalogue"),
                            )),
                            Some(m) if m.kind == MetricKind::Ratio => problems.push(problem(
                                path,
                                format!(
                                    "{p:?} is a ratio; a ratio's parts are binomial or sum metrics"
                                ),
                            )),
                            Some(_) => {}
                        },
                    }
                }
                if let (Some(n), Some(d)) = (&self.numerator, &self.denominator)
                    && n == d
                {
                    problems.push(problem(
                        "denominator",
                        format!("a ratio of a metric to itself ({n:?}) is always 1"),
                    ));
                }
            }
        }
        problems
    }
}

/// An experiment: a flag, its metrics, and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExperimentDefinition {
    /// The experiment's key; when given in a body it must match the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The flag whose variants are compared (control: its first variant
    /// with a positive weight).
    pub flag: String,
    /// The metric the decision is about.
    pub primary_metric: String,
    /// Further metrics of interest.
    #[serde(default)]
    pub secondary_metrics: Vec<String>,
    /// Metrics that must not get worse.
    #[serde(default)]
    pub guardrail_metrics: Vec<String>,
    /// What the team expects, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<String>,
    /// Only units first exposed at or after this time count (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Only exposures and conversions up to this time count (RFC 3339);
    /// set by stopping the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// frequentist (default), sequential or bayesian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Significance level (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Correction across the primary and secondary metrics and the arms:
    /// holm (default), bh or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// The confidence sequence's tuning `N*` (sequential): the total
    /// number of units at which it is tightest; default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_tuning: Option<f64>,
    /// Count conversions only within this many hours of the first exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<f64>,
    /// CUPED: adjust binomial and sum metrics by each unit's value of the
    /// same metric in this many days before its first exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuped_days: Option<f64>,
}

/// The longest CUPED pre-exposure window, in days.
pub const MAX_CUPED_DAYS: f64 = 366.0;

/// The longest accepted conversion window: ten years, in hours.
pub const MAX_WINDOW_HOURS: f64 = 87_600.0;
/// Most metrics an experiment may name.
pub const MAX_EXPERIMENT_METRICS: usize = 50;

impl ExperimentDefinition {
    /// Checks the experiment for the key `key`; `metric_exists` says
    /// whether the catalogue has a metric.
    pub fn validate(&self, key: &str, metric_exists: impl Fn(&str) -> bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !is_valid_key(key) {
            problems.push(problem("key", format!("invalid experiment key {key:?}")));
        }
        check_key_field(&mut problems, "key", &self.key, key);
        check_text(&mut problems, "hypothesis", &self.hypothesis);
        if !is_valid_key(&self.flag) {
            problems.push(problem("flag", format!("invalid flag key {:?}", self.flag)));
        }
        let mut seen: Vec<&str> = Vec::new();
        let all = std::iter::once(("primary_metric".to_owned(), &self.primary_metric))
            .chain(
                self.secondary_metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("secondary_metrics[{i}]"), m)),
            )
            .chain(
                self.guardrail_metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("guardrail_metrics[{i}]"), m)),
            );
        for (path, metric) in all {
            if seen.contains(&metric.as_str()) {
                problems.push(problem(&path, format!("metric {metric:?} is named twice")));
            } else if !metric_exists(metric) {
                problems.push(problem(
                    &path,
                    format!("no metric {metric:?} in this environment's catalogue"),
                ));
            }
            seen.push(metric);
        }
        if seen.len() > MAX_EXPERIMENT_METRICS {
            problems.push(problem(
                "secondary_metrics",
                format!("at most {MAX_EXPERIMENT_METRICS} metrics in all"),
            ));
        }
        let start = time(&mut problems, "start", &self.start);
        let stop = time(&mut problems, "stop", &self.stop);
        if let (Some(start), Some(stop)) = (start, stop)
            && stop <= start
        {
            problems.push(problem("stop", "the stop must be after the start"));
        }
        if let Some(m) = &self.method
            && !matches!(m.as_str(), "frequentist" | "sequential" | "bayesian")
        {
            problems.push(problem(
                "method",
                format!("frequentist, sequential or bayesian, got {m:?}"),
            ));
        }
        if let Some(c) = &self.correction
            && !matches!(c.as_str(), "holm" | "bh" | "none")
        {
            problems.push(problem(
                "correction",
                format!("holm, bh or none, got {c:?}"),
            ));
        }
        if let Some(a) = self.alpha
            && !(a.is_finite() && a > 0.0 && a < 1.0)
        {
            problems.push(problem(
                "alpha",
                format!("strictly between 0 and 1, got {a}"),
            ));
        }
        if let Some(n) = self.sequential_tuning
            && !(n.is_finite() && n >= 1.0)
        {
            problems.push(problem(
                "sequential_tuning",
                format!("a number of units of at least 1, got {n}"),
            ));
        }
        if let Some(d) = self.cuped_days
            && !(d.is_finite() && d > 0.0 && d <= MAX_CUPED_DAYS)
        {
            problems.push(problem(
                "cuped_days",
                format!("a positive number of days up to {MAX_CUPED_DAYS}, got {d}"),
            ));
        }
        if let Some(h) = self.window_hours
            && !(h.is_finite() && h > 0.0 && h <= MAX_WINDOW_HOURS)
        {
            problems.push(problem(
                "window_hours",
                format!("a positive number of hours up to {MAX_WINDOW_HOURS}, got {h}"),
            ));
        }
        problems
    }

    /// The start, if set and valid.
    pub fn start_time(&self) -> Option<Timestamp> {
        self.start.as_deref().and_then(|s| s.parse().ok())
    }

    /// The stop, if set and valid.
    pub fn stop_time(&self) -> Option<Timestamp> {
        self.stop.as_deref().and_then(|s| s.parse().ok())
    }

    /// Every metric, each with its role: primary, secondary, guardrail.
    pub fn metrics(&self) -> impl Iterator<Item = (&str, &'static str)> {
        std::iter::once((self.primary_metric.as_str(), "primary"))
            .chain(
                self.secondary_metrics
                    .iter()
                    .map(|m| (m.as_str(), "secondary")),
            )
            .chain(
                self.guardrail_metrics
                    .iter()
                    .map(|m| (m.as_str(), "guardrail")),
            )
    }
}

fn time(problems: &mut Vec<Problem>, path: &str, value: &Option<String>) -> Option<Timestamp> {
    let text = value.as_deref()?;
    match text.parse::<Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(problem(
                path,
                format!("not an RFC 3339 time ({text:?}): {e}"),
            ));
            None
        }
    }
}

/// A stored catalogue entry as the API answers it: the definition with its
/// key, version and last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored<T> {
    /// The key.
    pub key: String,
    /// 1 at creation, one more at each change.
    pub version: u64,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// The definition.
    #[serde(flatten)]
    pub definition: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(json: &str) -> MetricDefinition {
        match serde_json::from_str(json) {
            Ok(m) => m,
            Err(e) => panic!("{json}: {e}"),
        }
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn metrics_are_checked_at_the_field() {
        let none = |_: &str| None;
        assert!(
            metric(r#"{"kind": "binomial", "event": "purchase"}"#)
                .validate("buy", none)
                .is_empty()
        );
        assert_eq!(
            paths(&metric(r#"{"kind": "binomial"}"#).validate("buy", none)),
            ["event"]
        );
        assert_eq!(
            paths(
                &metric(r#"{"kind": "sum", "event": "p", "cap": {"percentile": 100}}"#)
                    .validate("rev", none)
            ),
            ["cap.percentile"]
        );
        assert_eq!(
            paths(
                &metric(r#"{"kind": "sum", "event": "p", "cap": {"value": 5, "percentile": 9}}"#)
                    .validate("rev", none)
            ),
            ["cap"]
        );
        let rev = metric(r#"{"kind": "sum", "event": "purchase"}"#);
        let lookup = |k: &str| (k == "rev").then_some(&rev);
        assert!(
            metric(r#"{"kind": "ratio", "numerator": "rev", "denominator": "rev"}"#)
                .validate("r", lookup)
                .iter()
                .any(|p| p.path == "denominator" && p.message.contains("to itself"))
        );
        assert_eq!(
            paths(
                &metric(r#"{"kind": "ratio", "numerator": "r", "denominator": "rev"}"#)
                    .validate("r", lookup)
            ),
            ["numerator"]
        );
        assert_eq!(
            paths(
                &metric(r#"{"kind": "ratio", "numerator": "rev", "denominator": "nope"}"#)
                    .validate("r", lookup)
            ),
            ["denominator"]
        );
        assert!(serde_json::from_str::<MetricDefinition>(r#"{"kind": "median"}"#).is_err());
        assert!(
            serde_json::from_str::<MetricDefinition>(r#"{"kind": "sum", "evnt": "x"}"#).is_err()
        );
    }

    #[test]
    fn experiments_are_checked_at_the_field() {
        let exists = |m: &str| m == "buy" || m == "rev";
        let e: ExperimentDefinition = serde_json::from_str(
            r#"{"flag": "checkout", "primary_metric": "buy", "secondary_metrics": ["rev", "buy", "x"],
                "start": "2026-12-01T00:00:00Z", "stop": "2026-11-01T00:00:00Z",
                "alpha": 1.5, "method": "magic", "sequential_tuning": 0}"#,
        )
        .expect("parse");
        let problems = e.validate("exp", exists);
        assert_eq!(
            paths(&problems),
            [
                "secondary_metrics[1]",
                "secondary_metrics[2]",
                "stop",
                "method",
                "alpha",
                "sequential_tuning"
            ]
        );
        let roles: Vec<_> = e.metrics().map(|(_, r)| r).collect();
        assert_eq!(roles, ["primary", "secondary", "secondary", "secondary"]);
    }
}
