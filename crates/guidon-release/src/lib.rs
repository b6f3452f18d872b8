//! Guarded rollouts, pure: a [`Plan`] is a list of [`Step`]s (a rollout
//! percentage, a minimum hold time, a minimum number of exposed units)
//! and [`Guard`]s (a metric that must not get worse, with what to do when
//! it does). [`decide`] is a function of the plan, where the release is
//! ([`Progress`]), what the metrics say ([`Observation`]) and the time:
//! no clock, no I/O, so the policy is tested with a virtual clock.
//!
//! # The test
//!
//! Each guard compares the units that get the new behaviour (treatment)
//! with those that do not (control): the difference of their means (a
//! rate, for an error metric) by the always-valid confidence sequence of
//! `guidon_stats::sequential` (Waudby-Smith et al. 2023, GrowthBook's
//! form) at level `alpha / guards` (Bonferroni across guards), with the
//! plan's tuning `N*`. It is valid however often it is looked at, so a
//! release watched every minute raises false alarms at most at `alpha`.
//! A guard is **breached** when the whole interval lies beyond its
//! tolerance in its bad direction: for "higher is worse",
//! `lower bound > threshold × control mean` (threshold 0: any increase).
//! A guard that cannot be tested yet (fewer than two units on a side, no
//! variance) blocks nothing and breaches nothing; the step's minimum units
//! keep a release from advancing on missing data.
//!
//! # The decision, in order
//!
//! 1. Not running (paused, rolled back, completed): wait.
//! 2. A guard breached: its action (pause, or roll back to 0 %), with the
//!    evidence (both means, the difference, the interval, the threshold).
//! 3. The step's hold not over, or fewer exposed units than its minimum:
//!    wait, saying until when or for how many.
//! 4. Otherwise the next step, or completion after the last.

use guidon_stats::{Interval, MetricKind, VariantStats, absolute_difference, sequential};
use serde::{Deserialize, Serialize};

/// The default significance level of the guards together.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// The default tuning `N*` of the confidence sequence: the total number of
/// units at which it is tightest.
pub const DEFAULT_TUNING: f64 = 5_000.0;

/// One step of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The rollout percentage of this step, in (0, 100].
    pub percentage: f64,
    /// The least time spent at this step before the next, in seconds (> 0).
    pub hold_seconds: u64,
    /// The least number of units exposed to the new behaviour (all steps
    /// so far) before the next step.
    #[serde(default)]
    pub min_units: u64,
}

/// Which way a guard's metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worse {
    /// More is worse: errors, latency.
    Higher,
    /// Less is worse: successes, throughput.
    Lower,
}

/// What a breached guard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop at the current percentage until a person resumes.
    Pause,
    /// Back to 0 %.
    Rollback,
}

/// A guard: a metric that must not get worse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The metric (an event metric name, or a catalogue key).
    pub metric: String,
    /// `binomial` (a rate: each unit had the event or not) or `continuous`
    /// (a mean per unit, e.g. latency).
    pub kind: MetricKind,
    /// Which way is worse.
    pub worse: Worse,
    /// The tolerated relative degradation (0: any; 0.1: up to 10 %).
    #[serde(default)]
    pub threshold: f64,
    /// What to do when breached.
    pub on_breach: Action,
}

/// A release plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub steps: Vec<Step>,
    #[serde(default)]
    pub guards: Vec<Guard>,
    /// The guards' significance level together (Bonferroni).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The confidence sequence's `N*`.
    #[serde(default = "default_tuning")]
    pub tuning: f64,
}

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}

fn default_tuning() -> f64 {
    DEFAULT_TUNING
}

/// A problem with a plan, at its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

impl Plan {
    /// Every problem: no steps, percentages outside (0, 100] or going
    /// down, a hold of zero, a guard twice, thresholds or levels out of
    /// range.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.steps.is_empty() {
            problems.push(problem("steps", "a plan needs at least one step"));
        }
        let mut previous = 0.0;
        for (i, step) in self.steps.iter().enumerate() {
            let p = step.percentage;
            if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                problems.push(problem(
                    format!("steps[{i}].percentage"),
                    format!("a percentage in (0, 100], got {p}"),
                ));
            } else if p <= previous {
                problems.push(problem(
                    format!("steps[{i}].percentage"),
                    format!("percentages must go up: {p} after {previous}"),
                ));
            }
            if p.is_finite() {
                previous = previous.max(p);
            }
            if step.hold_seconds == 0 {
                problems.push(problem(
                    format!("steps[{i}].hold_seconds"),
                    "a step holds for at least a second",
                ));
            }
        }
        for (i, guard) in self.guards.iter().enumerate() {
            if guard.metric.is_empty() {
                problems.push(problem(
                    format!("guards[{i}].metric"),
                    "a guard names a metric",
                ));
            }
            if self.guards[..i].iter().any(|g| g.metric == guard.metric) {
                problems.push(problem(
                    format!("guards[{i}].metric"),
                    format!("metric {:?} is guarded twice", guard.metric),
                ));
            }
            if !(guard.threshold.is_finite() && guard.threshold >= 0.0) {
                problems.push(problem(
                    format!("guards[{i}].threshold"),
                    format!(
                        "a tolerated degradation of 0 or more, got {}",
                        guard.threshold
                    ),
                ));
            }
            if guard.kind == MetricKind::Ratio {
                problems.push(problem(
                    format!("guards[{i}].kind"),
                    "a guard is binomial or continuous",
                ));
            }
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha < 1.0) {
            problems.push(problem(
                "alpha",
                format!("strictly between 0 and 1, got {}", self.alpha),
            ));
        }
        if !(self.tuning.is_finite() && self.tuning >= 1.0) {
            problems.push(problem(
                "tuning",
                format!("at least 1 unit, got {}", self.tuning),
            ));
        }
        problems
    }
}

/// Where a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Paused,
    RolledBack,
    Completed,
}

/// The release's position: its step, since when, and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Index into [`Plan::steps`].
    pub step: usize,
    /// When the current step began, in milliseconds.
    pub step_started_ms: i64,
    pub status: Status,
}

/// One side's per-unit aggregates of a guard's metric: units, Σy, Σy²
/// (for a rate: units that had the event, twice).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Side {
    pub units: u64,
    pub sum: f64,
    pub sum_squares: f64,
}

/// What a guard's metric says now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub metric: String,
    /// The units with the new behaviour.
    pub treatment: Side,
    /// The units without it.
    pub control: Side,
}

/// The evidence behind a guard's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub metric: String,
    pub treatment_mean: f64,
    pub control_mean: f64,
    pub treatment_units: u64,
    pub control_units: u64,
    /// treatment − control.
    pub difference: f64,
    /// The always-valid interval of the difference.
    pub interval: Interval,
    /// The difference beyond which it is a breach (threshold × control mean).
    pub tolerance: f64,
    /// The level of this guard's test (alpha / guards).
    pub alpha: f64,
    pub breached: bool,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing yet; why.
    Wait {
        reason: String,
        evidence: Vec<Evidence>,
    },
    /// To the next step.
    Advance {
        step: usize,
        percentage: f64,
        evidence: Vec<Evidence>,
    },
    /// The last step held: done.
    Complete { evidence: Vec<Evidence> },
    /// A guard is breached: pause or roll back.
    Breach {
        action: Action,
        metric: String,
        evidence: Vec<Evidence>,
    },
}

/// The evidence of one guard, if it can be tested.
fn evidence(guard: &Guard, obs: &Observation, alpha: f64, tuning: f64) -> Option<Evidence> {
    let stats = |s: &Side| {
        let count = match guard.kind {
            MetricKind::Binomial => s.sum.round().max(0.0) as u64,
            _ => 0,
        };
        VariantStats::new(s.units, count.min(s.units), s.sum, s.sum_squares)
    };
    let c = stats(&obs.control).moments(guard.kind).ok()?;
    let t = stats(&obs.treatment).moments(guard.kind).ok()?;
    let difference = absolute_difference(&c, &t).ok()?;
    let cs = sequential(&difference, alpha, tuning).ok()?;
    let tolerance = guard.threshold * c.mean.abs();
    let breached = match guard.worse {
        Worse::Higher => cs.ci.lower > tolerance,
        Worse::Lower => cs.ci.upper < -tolerance,
    };
    Some(Evidence {
        metric: guard.metric.clone(),
        treatment_mean: t.mean,
        control_mean: c.mean,
        treatment_units: obs.treatment.units,
        control_units: obs.control.units,
        difference: difference.estimate,
        interval: cs.ci,
        tolerance,
        alpha,
        breached,
    })
}

/// The decision for `plan` at `progress`, given the guards'
/// `observations`, the units exposed to the new behaviour so far, and
/// `now_ms`. The plan must be valid ([`Plan::validate`]).
pub fn decide(
    plan: &Plan,
    progress: &Progress,
    observations: &[Observation],
    exposed_units: u64,
    now_ms: i64,
) -> Decision {
    if progress.status != Status::Running {
        return Decision::Wait {
            reason: format!("the release is {:?}", progress.status).to_lowercase(),
            evidence: Vec::new(),
        };
    }
    let alpha = plan.alpha / plan.guards.len().max(1) as f64;
    let mut all = Vec::new();
    for guard in &plan.guards {
        let Some(obs) = observations.iter().find(|o| o.metric == guard.metric) else {
            continue;
        };
        if let Some(e) = evidence(guard, obs, alpha, plan.tuning) {
            let breached = e.breached;
            all.push(e);
            if breached {
                return Decision::Breach {
                    action: guard.on_breach,
                    metric: guard.metric.clone(),
                    evidence: all,
                };
            }
        }
    }
    let Some(step) = plan.steps.get(progress.step) else {
        return Decision::Complete { evidence: all };
    };
    let held_ms = now_ms - progress.step_started_ms;
    let hold_ms = i64::try_from(step.hold_seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    if held_ms < hold_ms {
        return Decision::Wait {
            reason: format!(
                "holding {}% for {} s more",
                step.percentage,
                (hold_ms - held_ms + 999) / 1000
            ),
            evidence: all,
        };
    }
    if exposed_units < step.min_units {
        return Decision::Wait {
            reason: format!(
                "waiting for {} more exposed units ({} of {})",
                step.min_units - exposed_units,
                exposed_units,
                step.min_units
            ),
            evidence: all,
        };
    }
    match plan.steps.get(progress.step + 1) {
        Some(next) => Decision::Advance {
            step: progress.step + 1,
            percentage: next.percentage,
            evidence: all,
        },
        None => Decision::Complete { evidence: all },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        serde_json::from_str(
            r#"{"steps": [{"percentage": 1, "hold_seconds": 60, "min_units": 100},
                          {"percentage": 50, "hold_seconds": 60},
                          {"percentage": 100, "hold_seconds": 60}],
                "guards": [{"metric": "errors", "kind": "binomial", "worse": "higher", "on_breach": "rollback"}]}"#,
        )
        .expect("plan")
    }

    #[test]
    fn bad_plans_are_named_at_the_field() {
        let mut p = plan();
        p.steps[1].percentage = 0.5;
        p.steps[2].hold_seconds = 0;
        p.guards.push(p.guards[0].clone());
        let paths: Vec<String> = p.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "steps[1].percentage",
                "steps[2].hold_seconds",
                "guards[1].metric"
            ]
        );
        assert!(plan().validate().is_empty());
    }

    #[test]
    fn it_holds_then_waits_for_units_then_advances() {
        let p = plan();
        let at = |step| Progress {
            step,
            step_started_ms: 0,
            status: Status::Running,
        };
        let none: Vec<Observation> = Vec::new();
        assert!(matches!(
            decide(&p, &at(0), &none, 500, 30_000),
            Decision::Wait { .. }
        ));
        assert!(
            matches!(decide(&p, &at(0), &none, 50, 61_000), Decision::Wait { reason, .. } if reason.contains("50 more"))
        );
        assert!(matches!(
            decide(&p, &at(0), &none, 100, 61_000),
            Decision::Advance { step: 1, .. }
        ));
        assert!(matches!(
            decide(&p, &at(2), &none, 100, 61_000),
            Decision::Complete { .. }
        ));
        let paused = Progress {
            status: Status::Paused,
            ..at(0)
        };
        assert!(matches!(
            decide(&p, &paused, &none, 1000, 1_000_000),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_clear_regression_breaches() {
        let p = plan();
        let obs = vec![Observation {
            metric: "errors".into(),
            treatment: Side {
                units: 2000,
                sum: 200.0,
                sum_squares: 200.0,
            },
            control: Side {
                units: 20_000,
                sum: 400.0,
                sum_squares: 400.0,
            },
        }];
        let progress = Progress {
            step: 0,
            step_started_ms: 0,
            status: Status::Running,
        };
        match decide(&p, &progress, &obs, 2000, 1000) {
            Decision::Breach {
                action, evidence, ..
            } => {
                assert_eq!(action, Action::Rollback);
                assert!(evidence[0].interval.lower > 0.0, "{evidence:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
