//! The evaluation order of flag-format.md §5.

use std::borrow::Cow;

use jiff::Timestamp;
use serde_json::Value;

use crate::compile::Snapshot;
use crate::compile::ir::{
    Attribute, CompiledCondition, CompiledFlag, CompiledServe, DAY_NAMES, Literal, Num, Test,
};
use crate::context::{Context, Unit};
use crate::explain::{ConditionTrace, Explanation, NoTrace, Recorder, Step, Tracer};
use crate::hashing::in_percentage;
use crate::result::{ErrorCode, Evaluation, Metadata, Reason};

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

impl Snapshot {
    /// Evaluates one flag for one context at time `now`.
    pub fn evaluate<'s>(
        &'s self,
        flag_key: &'s str,
        context: &Context,
        now: Timestamp,
    ) -> Evaluation<'s> {
        match self.index.get(flag_key) {
            Some(&i) => self.eval_flag(&self.flags[i], context, now, &mut NoTrace),
            None => not_found(flag_key),
        }
    }

    /// Evaluates one flag and records every step taken and every condition
    /// judged, for a person asking "why did this user get this?".
    pub fn explain<'s>(
        &'s self,
        flag_key: &'s str,
        context: &Context,
        now: Timestamp,
    ) -> (Evaluation<'s>, Explanation) {
        match self.index.get(flag_key) {
            Some(&i) => {
                let mut recorder = Recorder::default();
                let result = self.eval_flag(&self.flags[i], context, now, &mut recorder);
                (result, recorder.explanation)
            }
            None => (
                not_found(flag_key),
                Explanation {
                    steps: vec![Step::new(
                        "flag",
                        "not_found",
                        format!("no flag {flag_key:?} in this snapshot"),
                    )],
                },
            ),
        }
    }

    /// The unit a context is bucketed as for a flag: the flag's
    /// `rollout.bucket_by` attribute (default `user_id`, falling back to
    /// `targetingKey`), strings as they are and integers in decimal, exactly
    /// as evaluation reads it. `None` for an unknown flag or when the context
    /// has no usable value. Experiments key exposures by it.
    pub fn bucketing_value(&self, flag_key: &str, context: &Context) -> Option<String> {
        let flag = &self.flags[*self.index.get(flag_key)?];
        context
            .unit(&flag.bucket_by)
            .map(|unit| unit.as_str().to_owned())
    }

    /// The name of the attribute a flag buckets by (`user_id` unless its
    /// rollout says otherwise); `None` for an unknown flag.
    pub fn bucketing_attribute(&self, flag_key: &str) -> Option<&str> {
        let flag = &self.flags[*self.index.get(flag_key)?];
        Some(flag.bucket_by.key.name())
    }

    /// Evaluates every flag of the snapshot, in file order.
    pub fn evaluate_all<'s>(&'s self, context: &Context, now: Timestamp) -> Vec<Evaluation<'s>> {
        self.flags
            .iter()
            .map(|flag| self.eval_flag(flag, context, now, &mut NoTrace))
            .collect()
    }

    fn eval_flag<'s, T: Tracer>(
        &'s self,
        flag: &'s CompiledFlag,
        ctx: &Context,
        now: Timestamp,
        t: &mut T,
    ) -> Evaluation<'s> {
        let mut ev = FlagEval {
            flag,
            ctx,
            unit: None,
            bucket: None,
        };

        if let Some(serve) = &flag.override_serve {
            t.step(|| Step::new("override", "matched", "the flag's override serves everyone"));
            let meta = Metadata {
                override_served: true,
                ..Metadata::default()
            };
            return ev.serve(serve, Reason::Static, meta, t);
        }
        if !flag.enabled {
            t.step(|| Step::new("enabled", "off", "the flag is disabled (kill switch)"));
            return ev.off(Reason::Disabled, Metadata::default());
        }
        t.step(|| {
            Step::new(
                "enabled",
                "passed",
                "the flag is enabled and has no override",
            )
        });

        for p in &flag.prerequisites {
            let other = &self.flags[p.flag];
            let r = self.eval_flag(other, ctx, now, &mut NoTrace);
            let met = r.enabled == p.enabled
                && p.variants
                    .as_ref()
                    .is_none_or(|vs| r.variant.is_some_and(|v| vs.iter().any(|k| **k == *v)));
            t.step(|| {
                let wanted = match &p.variants {
                    Some(vs) => format!("enabled={} and a variant in {vs:?}", p.enabled),
                    None => format!("enabled={}", p.enabled),
                };
                Step::new(
                    "prerequisite",
                    if met { "met" } else { "not_met" },
                    format!(
                        "prerequisite {:?} evaluated to enabled={}{} ({}); needed {wanted}",
                        &*other.key,
                        r.enabled,
                        r.variant
                            .map(|v| format!(" variant={v:?}"))
                            .unwrap_or_default(),
                        r.reason.as_str()
                    ),
                )
            });
            if !met {
                let meta = Metadata {
                    prerequisite_failed: Some(&other.key),
                    ..Metadata::default()
                };
                return ev.off(Reason::Default, meta);
            }
        }

        for (j, target) in flag.targets.iter().enumerate() {
            let unit = match &target.attribute {
                Some(attribute) => ctx.unit(attribute),
                None => ev.unit(),
            };
            let hit = unit.is_some_and(|u| target.values.contains(u.as_str()));
            if hit {
                t.step(|| {
                    Step::new(
                        "target",
                        "matched",
                        format!(
                            "targets[{j}] lists {:?}",
                            unit.map(|u| u.as_str().to_owned()).unwrap_or_default()
                        ),
                    )
                });
                let meta = Metadata {
                    target: true,
                    ..Metadata::default()
                };
                return ev.serve(&target.serve, Reason::TargetingMatch, meta, t);
            }
        }
        if !flag.targets.is_empty() {
            t.step(|| Step::new("target", "not_matched", "no target lists this unit"));
        }

        for rule in &flag.rules {
            let matched = self.rule_matches(rule.any, &rule.conditions, ctx, now, t);
            t.rule_step(|conditions| Step {
                rule: Some(rule.name.to_string()),
                conditions,
                ..Step::new(
                    "rule",
                    if matched { "matched" } else { "not_matched" },
                    format!(
                        "rule {:?} ({} of its conditions must match) {}",
                        &*rule.name,
                        if rule.any { "any" } else { "all" },
                        if matched { "matched" } else { "did not match" }
                    ),
                )
            });
            if matched {
                let meta = Metadata {
                    rule: Some(&rule.name),
                    ..Metadata::default()
                };
                return ev.serve(&rule.serve, Reason::TargetingMatch, meta, t);
            }
        }

        if let Some(percentage) = flag.rollout {
            let serve = CompiledServe {
                enabled: true,
                variant: None,
                percentage: Some(percentage),
            };
            return ev.serve(&serve, Reason::Split, Metadata::default(), t);
        }

        t.step(|| {
            Step::new(
                "default",
                "reached",
                "no target, rule or rollout decided: the flag serves on",
            )
        });
        ev.on(None, flag.fallthrough, Metadata::default(), t)
    }

    pub(crate) fn rule_matches<T: Tracer>(
        &self,
        any: bool,
        conditions: &[CompiledCondition],
        ctx: &Context,
        now: Timestamp,
        t: &mut T,
    ) -> bool {
        for (k, c) in conditions.iter().enumerate() {
            let matched = self.condition_matches(c, ctx, now, t);
            // `any` is decided by the first match, `all` by the first miss.
            if matched == any {
                // The explanation still lists the conditions not looked at,
                // so a reader sees the whole rule.
                for rest in &conditions[k + 1..] {
                    t.condition(|| ConditionTrace {
                        attribute: rest.attribute.name().to_owned(),
                        operator: rest.operator.as_str(),
                        actual: Value::Null,
                        negate: rest.negate,
                        outcome: "not_evaluated",
                        detail: None,
                    });
                }
                return any;
            }
        }
        !any
    }

    fn in_segment(&self, index: usize, ctx: &Context, now: Timestamp) -> bool {
        self.segment_membership(index, ctx, now).0
    }

    /// Whether the context is in the segment, and which part decided.
    fn segment_membership(
        &self,
        index: usize,
        ctx: &Context,
        now: Timestamp,
    ) -> (bool, Membership) {
        let segment = &self.segments[index];
        if let Some(unit) = ctx.unit(&segment.attribute) {
            if segment.included.contains(unit.as_str()) {
                return (true, Membership::Included);
            }
            if segment.excluded.contains(unit.as_str()) {
                return (false, Membership::Excluded);
            }
        }
        match segment
            .rules
            .iter()
            .position(|r| self.rule_matches(r.any, &r.conditions, ctx, now, &mut NoTrace))
        {
            Some(j) => (true, Membership::Rule(j)),
            None => (false, Membership::NoRule),
        }
    }

    /// A sentence per segment of a segment condition, for explanations.
    fn explain_segments(&self, segments: &[usize], ctx: &Context, now: Timestamp) -> String {
        let parts: Vec<String> = segments
            .iter()
            .map(|&index| {
                let segment = &self.segments[index];
                let unit = ctx
                    .unit(&segment.attribute)
                    .map(|u| format!("{} {:?}", segment.attribute.key.name(), u.as_str()))
                    .unwrap_or_else(|| format!("no {}", segment.attribute.key.name()));
                let why = match self.segment_membership(index, ctx, now).1 {
                    Membership::Included => format!("in: {unit} is included"),
                    Membership::Excluded => format!("out: {unit} is excluded"),
                    Membership::Rule(j) => format!("in: {unit}, its rules[{j}] matched"),
                    Membership::NoRule => format!("out: {unit}, none of its rules matched"),
                };
                format!("segment {:?} {why}", &*segment.key)
            })
            .collect();
        parts.join("; ")
    }

    fn condition_matches<T: Tracer>(
        &self,
        c: &CompiledCondition,
        ctx: &Context,
        now: Timestamp,
        t: &mut T,
    ) -> bool {
        let actual = match &c.attribute {
            Attribute::Context(key) => match ctx.lookup(key) {
                Some(v) => Actual::Json(v),
                None => Actual::Missing,
            },
            Attribute::Now => Actual::Time(now),
            Attribute::DayOfWeek(tz) => {
                let day = tz.to_datetime(now).weekday().to_monday_zero_offset();
                Actual::Str(DAY_NAMES[usize::try_from(day).unwrap_or(0) % 7])
            }
            Attribute::Hour(tz) => Actual::Num(Num::int(i64::from(tz.to_datetime(now).hour()))),
            Attribute::Unused => Actual::Missing,
        };
        let outcome = self.test(c, &actual, ctx, now);
        let matched = outcome.is_some_and(|o| o ^ c.invert);
        t.condition(|| ConditionTrace {
            attribute: c.attribute.name().to_owned(),
            operator: c.operator.as_str(),
            actual: actual.to_json(),
            negate: c.negate,
            outcome: match (outcome, &actual) {
                (Some(_), _) if matched => "matched",
                (Some(_), _) => "not_matched",
                (None, Actual::Missing) => "missing",
                (None, _) => "wrong_type",
            },
            detail: match &c.test {
                Test::InSegment(segments) => Some(self.explain_segments(segments, ctx, now)),
                _ => None,
            },
        });
        matched
    }

    /// The operator's outcome before any inversion; `None` when the attribute
    /// is missing or of the wrong type, which never matches.
    fn test(
        &self,
        c: &CompiledCondition,
        actual: &Actual<'_>,
        ctx: &Context,
        now: Timestamp,
    ) -> Option<bool> {
        let ci = c.case_insensitive;
        match &c.test {
            Test::Exists => Some(!matches!(actual, Actual::Missing)),
            Test::InSegment(segments) => {
                Some(segments.iter().any(|&s| self.in_segment(s, ctx, now)))
            }
            Test::Equals(Literal::Str(lit)) => actual.str().map(|s| *fold(s, ci) == **lit),
            Test::Equals(Literal::Num(lit)) => actual
                .num()
                .map(|x| x.cmp(*lit) == Some(std::cmp::Ordering::Equal)),
            Test::Equals(Literal::Bool(lit)) => actual.bool().map(|b| b == *lit),
            Test::OneOf { strings, numbers } => {
                if let Some(s) = actual.str() {
                    (!strings.is_empty()).then(|| strings.contains(&fold(s, ci)))
                } else if let Some(x) = actual.num() {
                    (!numbers.is_empty()).then(|| {
                        numbers
                            .iter()
                            .any(|n| x.cmp(*n) == Some(std::cmp::Ordering::Equal))
                    })
                } else {
                    None
                }
            }
            Test::Contains(lits) => actual
                .str()
                .map(|s| fold(s, ci))
                .map(|s| lits.iter().any(|l| s.contains(&**l))),
            Test::StartsWith(lits) => actual
                .str()
                .map(|s| fold(s, ci))
                .map(|s| lits.iter().any(|l| s.starts_with(&**l))),
            Test::EndsWith(lits) => actual
                .str()
                .map(|s| fold(s, ci))
                .map(|s| lits.iter().any(|l| s.ends_with(&**l))),
            Test::Matches(regexes) => actual.str().map(|s| regexes.iter().any(|r| r.is_match(s))),
            Test::Compare(ord, lit) => actual.num().and_then(|x| x.cmp(*lit)).map(|o| ord.holds(o)),
            Test::Semver(ord, lit) => actual
                .str()
                .and_then(|s| semver::Version::parse(s).ok())
                .map(|v| ord.holds(v.cmp_precedence(lit))),
            Test::Before(lit) => actual.time().map(|t| t < *lit),
            Test::After(lit) => actual.time().map(|t| t > *lit),
            Test::InCidr(nets) => actual
                .str()
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                .map(|ip| nets.iter().any(|n| n.contains(&ip))),
        }
    }
}

fn not_found(flag_key: &str) -> Evaluation<'_> {
    Evaluation {
        flag: flag_key,
        enabled: false,
        variant: None,
        value: None,
        reason: Reason::Error,
        error_code: Some(ErrorCode::FlagNotFound),
        flag_version: None,
        metadata: Metadata::default(),
    }
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

#[derive(Debug, Clone, Copy)]
enum Membership {
    Included,
    Excluded,
    Rule(usize),
    NoRule,
}

/// Lower-cases for a case-insensitive comparison, allocating only when the
/// text has something to lower.
fn fold(s: &str, case_insensitive: bool) -> Cow<'_, str> {
    if case_insensitive && (!s.is_ascii() || s.bytes().any(|b| b.is_ascii_uppercase())) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The value a condition looks at.
enum Actual<'a> {
    Missing,
    Json(&'a Value),
    Str(&'static str),
    Num(Num),
    Time(Timestamp),
}

impl Actual<'_> {
    fn str(&self) -> Option<&str> {
        match self {
            Actual::Json(Value::String(s)) => Some(s),
            Actual::Str(s) => Some(s),
            _ => None,
        }
    }
    fn num(&self) -> Option<Num> {
        match self {
            Actual::Json(Value::Number(n)) => Num::of(n),
            Actual::Num(x) => Some(*x),
            _ => None,
        }
    }
    fn bool(&self) -> Option<bool> {
        match self {
            Actual::Json(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    fn time(&self) -> Option<Timestamp> {
        match self {
            Actual::Time(t) => Some(*t),
            Actual::Json(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
    }
    fn to_json(&self) -> Value {
        match self {
            Actual::Missing => Value::Null,
            Actual::Json(v) => (*v).clone(),
            Actual::Str(s) => Value::String((*s).to_owned()),
            Actual::Num(x) => x.to_json(),
            Actual::Time(t) => Value::String(t.to_string()),
        }
    }
}

/// The state of one flag's evaluation: the unit and its bucket are looked up
/// and hashed at most once, and only when a step needs them.
struct FlagEval<'s, 'c> {
    flag: &'s CompiledFlag,
    ctx: &'c Context,
    /// `None` until looked up; then the unit, if the context has one.
    unit: Option<Option<Unit<'c>>>,
    bucket: Option<f64>,
}

impl<'s, 'c> FlagEval<'s, 'c> {
    fn unit(&mut self) -> Option<Unit<'c>> {
        let (ctx, flag) = (self.ctx, self.flag);
        *self.unit.get_or_insert_with(|| ctx.unit(&flag.bucket_by))
    }

    fn bucket(&mut self) -> Option<f64> {
        if self.bucket.is_none() {
            let unit = self.unit()?;
            self.bucket = Some(self.flag.hasher.rollout_bucket(unit.as_str()));
        }
        self.bucket
    }

    /// Serves a SERVE: off, or on for the units inside its percentage.
    fn serve<T: Tracer>(
        &mut self,
        serve: &CompiledServe,
        reason: Reason,
        mut meta: Metadata<'s>,
        t: &mut T,
    ) -> Evaluation<'s> {
        if !serve.enabled {
            t.step(|| Step::new("serve", "off", "serves off"));
            return self.off(reason, meta);
        }
        if let Some(percentage) = serve.percentage {
            let step = if reason == Reason::Split {
                "rollout"
            } else {
                "percentage"
            };
            let Some(bucket) = self.bucket() else {
                t.step(|| {
                    Step::new(
                        step,
                        "out",
                        format!(
                            "no bucketing value ({}), so the unit is in no rollout",
                            self.flag.bucket_by.describe_absent()
                        ),
                    )
                });
                meta.missing_bucketing_value = true;
                return self.off(reason, meta);
            };
            meta.bucket = Some(bucket);
            let inside = in_percentage(bucket, percentage);
            t.step(|| {
                Step::new(
                    step,
                    if inside { "in" } else { "out" },
                    format!(
                        "bucket {bucket} is {} the {percentage}% rollout",
                        if inside { "inside" } else { "outside" }
                    ),
                )
            });
            if !inside {
                // A rollout of one variant against the off variant (a
                // guarded release) compares the two: the unit outside is
                // its control, and an SDK records its exposure too.
                if self.flag.compares_off() {
                    meta.in_experiment = true;
                }
                return self.off(reason, meta);
            }
        }
        self.on(serve.variant, reason, meta, t)
    }

    fn on<T: Tracer>(
        &mut self,
        variant: Option<usize>,
        reason: Reason,
        mut meta: Metadata<'s>,
        t: &mut T,
    ) -> Evaluation<'s> {
        let flag = self.flag;
        if flag.variants.is_empty() {
            return self.result(true, None, Some(&TRUE), reason, meta);
        }
        let chosen = match variant {
            Some(v) => v,
            None => match self.unit() {
                Some(unit) => {
                    let selection = flag.hasher.variant_selection(unit.as_str());
                    let scaled = selection * 100.0;
                    let v = flag
                        .variants
                        .iter()
                        .position(|v| v.cumulative > scaled)
                        .or_else(|| flag.variants.iter().rposition(|v| v.weight > 0.0))
                        .unwrap_or(0);
                    t.step(|| {
                        let chosen = &flag.variants[v];
                        Step::new(
                            "variant",
                            on_off(chosen.enabled),
                            format!(
                                "variant selection {scaled} falls in {:?} (enabled={})",
                                &*chosen.key, chosen.enabled
                            ),
                        )
                    });
                    meta.in_experiment = true;
                    v
                }
                None => {
                    meta.missing_bucketing_value = true;
                    if flag.off_variant.is_some() {
                        t.step(|| {
                            Step::new(
                                "variant",
                                "off",
                                "no bucketing value: served the off variant",
                            )
                        });
                        return self.off(reason, meta);
                    }
                    let v = flag
                        .variants
                        .iter()
                        .position(|v| v.weight > 0.0)
                        .unwrap_or(0);
                    t.step(|| {
                        let chosen = &flag.variants[v];
                        Step::new(
                            "variant",
                            on_off(chosen.enabled),
                            format!(
                                "no bucketing value: served {:?}, the first variant with a weight (enabled={})",
                                &*chosen.key, chosen.enabled
                            ),
                        )
                    });
                    v
                }
            },
        };
        let v = &flag.variants[chosen];
        self.result(v.enabled, Some(&v.key), Some(&v.value), reason, meta)
    }

    fn off(&self, reason: Reason, meta: Metadata<'s>) -> Evaluation<'s> {
        let flag = self.flag;
        match flag.off_variant {
            Some(i) => {
                let v = &flag.variants[i];
                self.result(false, Some(&v.key), Some(&v.value), reason, meta)
            }
            None if flag.variants.is_empty() => {
                self.result(false, None, Some(&FALSE), reason, meta)
            }
            None => self.result(false, None, None, reason, meta),
        }
    }

    fn result(
        &self,
        enabled: bool,
        variant: Option<&'s str>,
        value: Option<&'s Value>,
        reason: Reason,
        metadata: Metadata<'s>,
    ) -> Evaluation<'s> {
        Evaluation {
            flag: &self.flag.key,
            enabled,
            variant,
            value,
            reason,
            error_code: None,
            flag_version: self.flag.version,
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Context, FlagFile, Snapshot};

    #[test]
    fn bucketing_value_is_what_evaluation_buckets_by() {
        let file = FlagFile::from_json_str(
            r#"{"flags": [
                {"key": "by_user", "enabled": true,
                 "variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 50}]},
                {"key": "by_account", "enabled": true, "rollout": {"percentage": 100, "bucket_by": "account_id"},
                 "variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 50}]}
            ]}"#,
        );
        let snapshot = file.ok().and_then(|f| Snapshot::compile(&f).ok());
        let Some(snapshot) = snapshot else {
            panic!("test flags compile");
        };
        let ctx = |text: &str| Context::from_json_str(text).unwrap_or_default();

        // user_id, then targetingKey; integers in decimal; other types absent.
        let both = ctx(r#"{"user_id": "u1", "targetingKey": "t1", "account_id": 42}"#);
        assert_eq!(
            snapshot.bucketing_value("by_user", &both).as_deref(),
            Some("u1")
        );
        assert_eq!(
            snapshot.bucketing_value("by_account", &both).as_deref(),
            Some("42")
        );
        let targeting = ctx(r#"{"targetingKey": "t1", "account_id": -7}"#);
        assert_eq!(
            snapshot.bucketing_value("by_user", &targeting).as_deref(),
            Some("t1")
        );
        assert_eq!(
            snapshot
                .bucketing_value("by_account", &targeting)
                .as_deref(),
            Some("-7")
        );
        // No targetingKey fallback for attributes other than user_id.
        let only_key = ctx(r#"{"targetingKey": "t1", "user_id": true}"#);
        assert_eq!(
            snapshot.bucketing_value("by_user", &only_key).as_deref(),
            Some("t1")
        );
        assert_eq!(snapshot.bucketing_value("by_account", &only_key), None);
        assert_eq!(snapshot.bucketing_value("missing", &both), None);

        assert_eq!(snapshot.bucketing_attribute("by_user"), Some("user_id"));
        assert_eq!(
            snapshot.bucketing_attribute("by_account"),
            Some("account_id")
        );
        assert_eq!(snapshot.bucketing_attribute("missing"), None);
    }
}
