//! Explain mode: a record of every step of the evaluation order and of every
//! condition, to answer "why did user X get Y?". Evaluation is generic over a
//! [`Tracer`]; the fast path uses [`NoTrace`], whose methods are empty and
//! whose closures are never called, so explaining costs nothing when off.

use serde::Serialize;
use serde_json::Value;

/// One step of the evaluation order, as taken for one context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// `override`, `enabled`, `prerequisite`, `target`, `rule`, `rollout`,
    /// `default`, `serve`.
    pub step: &'static str,
    /// What the step concluded: `matched`, `not_matched`, `met`, `not_met`,
    /// `skipped`, `in`, `out`, `on`, `off`, `passed`.
    pub outcome: &'static str,
    /// A sentence for a person.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionTrace>,
}

/// How one condition of a rule was judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionTrace {
    pub attribute: String,
    pub operator: &'static str,
    /// The value the condition looked at (the context's, or the computed
    /// `$now`/`$day_of_week`/`$hour`); null when absent.
    pub actual: Value,
    pub negate: bool,
    /// `matched`, `not_matched`, `missing`, `wrong_type`, or
    /// `not_evaluated` (the rule was decided before this condition).
    pub outcome: &'static str,
    /// For segment conditions: each segment, the unit, and what decided
    /// membership (included, excluded, which rule, or none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every step taken, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Explanation {
    pub steps: Vec<Step>,
}

pub(crate) trait Tracer {
    fn step(&mut self, make: impl FnOnce() -> Step);
    fn condition(&mut self, make: impl FnOnce() -> ConditionTrace);
    /// Records a step made from the conditions recorded since the last one.
    fn rule_step(&mut self, make: impl FnOnce(Vec<ConditionTrace>) -> Step);
}

pub(crate) struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn step(&mut self, _: impl FnOnce() -> Step) {}
    #[inline(always)]
    fn condition(&mut self, _: impl FnOnce() -> ConditionTrace) {}
    #[inline(always)]
    fn rule_step(&mut self, _: impl FnOnce(Vec<ConditionTrace>) -> Step) {}
}

#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) explanation: Explanation,
    pending: Vec<ConditionTrace>,
}

impl Tracer for Recorder {
    fn step(&mut self, make: impl FnOnce() -> Step) {
        self.explanation.steps.push(make());
    }
    fn condition(&mut self, make: impl FnOnce() -> ConditionTrace) {
        self.pending.push(make());
    }
    fn rule_step(&mut self, make: impl FnOnce(Vec<ConditionTrace>) -> Step) {
        let conditions = std::mem::take(&mut self.pending);
        self.explanation.steps.push(make(conditions));
    }
}

impl Step {
    pub(crate) fn new(
        step: &'static str,
        outcome: &'static str,
        detail: impl Into<String>,
    ) -> Step {
        Step {
            step,
            outcome,
            detail: detail.into(),
            rule: None,
            conditions: Vec::new(),
        }
    }
}
