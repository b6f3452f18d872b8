//! Impact preview: for a proposed change to one flag, exactly which
//! contexts would move from which outcome to which, for that flag and for
//! every flag whose prerequisites depend on it (transitively).
//!
//! Each context is evaluated against both snapshots, the current one and
//! the one with the proposed definition, so the answer is exact for the
//! contexts given: there is no estimate per rule or condition, and
//! overlapping rules count once, as evaluation decides them.

use foldhash::{HashMap, HashMapExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compile::Snapshot;
use crate::context::Context;
use crate::result::Evaluation;

/// What a preview may return at most.
#[derive(Debug, Clone, Copy)]
pub struct ImpactOptions {
    /// Affected contexts listed per flag (the counts cover all of them).
    pub max_examples: usize,
}

impl Default for ImpactOptions {
    fn default() -> ImpactOptions {
        ImpactOptions { max_examples: 20 }
    }
}

/// The answer of [`preview`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// How many contexts were evaluated.
    pub contexts: usize,
    /// The changed flag.
    pub flag: FlagImpact,
    /// Every flag whose prerequisites lead to the changed flag, nearest
    /// first, changed or not (`changed` says how many contexts move).
    pub dependents: Vec<FlagImpact>,
}

/// One flag's transitions over the contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagImpact {
    pub flag: String,
    /// Contexts whose outcome differs between the two definitions.
    pub changed: usize,
    /// The transition matrix: every (from, to) pair met, with its count and
    /// share of the contexts; pairs with `from == to` are those that stay.
    /// Most frequent first.
    pub transitions: Vec<Transition>,
    /// The first affected contexts (at most `max_examples`), in input order.
    pub examples: Vec<Example>,
}

/// What a context is served: on or off, the variant, the value. The reason
/// is not part of it: a user served the same value for another reason has
/// not moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub enabled: bool,
    pub variant: Option<String>,
    pub value: Option<Value>,
    /// The flag does not exist in that definition (a preview of a new flag).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_found: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Outcome,
    pub to: Outcome,
    pub count: usize,
    /// `count` over the number of contexts (0 to 1).
    pub share: f64,
}

/// One affected context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Its position in the contexts given.
    pub index: usize,
    /// Its bucketing value for the flag (`user_id`, `targetingKey`, or the
    /// flag's `bucket_by`), when it has one.
    pub unit: Option<String>,
    pub from: Outcome,
    pub to: Outcome,
}

/// Evaluates `flag_key` and every flag depending on it through
/// prerequisites, in `current` and in `proposed` (the same environment with
/// the proposed definition of `flag_key`), for each context at `now`, and
/// counts the transitions. Pure: no I/O, no clock.
pub fn preview(
    current: &Snapshot,
    proposed: &Snapshot,
    flag_key: &str,
    contexts: &[Context],
    now: Timestamp,
    options: ImpactOptions,
) -> Impact {
    let mut flags = vec![flag_key.to_owned()];
    flags.extend(dependents(proposed, flag_key));
    let mut tallies: Vec<Tally<'_>> = flags
        .iter()
        .map(|key| Tally::new(current, proposed, key))
        .collect();
    for (index, ctx) in contexts.iter().enumerate() {
        for tally in &mut tallies {
            tally.add(index, ctx, now, options.max_examples);
        }
    }
    let mut impacts = tallies.into_iter().map(|t| t.finish(contexts.len()));
    let flag = impacts.next().unwrap_or_else(|| FlagImpact {
        flag: flag_key.to_owned(),
        changed: 0,
        transitions: Vec::new(),
        examples: Vec::new(),
    });
    Impact {
        contexts: contexts.len(),
        flag,
        dependents: impacts.collect(),
    }
}

/// The flags whose prerequisites lead to `flag_key`, nearest first.
fn dependents(snapshot: &Snapshot, flag_key: &str) -> Vec<String> {
    let Some(&start) = snapshot.index.get(flag_key) else {
        return Vec::new();
    };
    let mut depends_on_me: Vec<Vec<usize>> = vec![Vec::new(); snapshot.flags.len()];
    for (i, flag) in snapshot.flags.iter().enumerate() {
        for p in &flag.prerequisites {
            depends_on_me[p.flag].push(i);
        }
    }
    let mut seen = vec![false; snapshot.flags.len()];
    seen[start] = true;
    let mut order = vec![start];
    let mut next = 0;
    while let Some(&i) = order.get(next) {
        next += 1;
        for &d in &depends_on_me[i] {
            if !seen[d] {
                seen[d] = true;
                order.push(d);
            }
        }
    }
    order
        .into_iter()
        .skip(1)
        .map(|i| snapshot.flags[i].key.to_string())
        .collect()
}

/// An outcome as evaluation returns it, borrowed from its snapshot.
#[derive(Clone, Copy, PartialEq)]
struct Seen<'s> {
    enabled: bool,
    variant: Option<&'s str>,
    value: Option<&'s Value>,
    not_found: bool,
}

impl<'s> Seen<'s> {
    fn of(e: &Evaluation<'s>) -> Seen<'s> {
        Seen {
            enabled: e.enabled,
            variant: e.variant,
            value: e.value,
            not_found: e.error_code.is_some(),
        }
    }

    fn owned(&self) -> Outcome {
        Outcome {
            enabled: self.enabled,
            variant: self.variant.map(str::to_owned),
            value: self.value.cloned(),
            not_found: self.not_found,
        }
    }
}

/// One flag's counts in progress: the distinct outcomes met on each side
/// (few: a flag serves a handful of values) and the count per pair.
struct Tally<'s> {
    key: &'s str,
    current: &'s Snapshot,
    proposed: &'s Snapshot,
    from: Vec<Seen<'s>>,
    to: Vec<Seen<'s>>,
    counts: HashMap<(usize, usize), usize>,
    changed: usize,
    examples: Vec<Example>,
}

impl<'s> Tally<'s> {
    fn new(current: &'s Snapshot, proposed: &'s Snapshot, key: &'s str) -> Tally<'s> {
        Tally {
            key,
            current,
            proposed,
            from: Vec::new(),
            to: Vec::new(),
            counts: HashMap::new(),
            changed: 0,
            examples: Vec::new(),
        }
    }

    fn add(&mut self, index: usize, ctx: &Context, now: Timestamp, max_examples: usize) {
        let before = Seen::of(&self.current.evaluate(self.key, ctx, now));
        let after = Seen::of(&self.proposed.evaluate(self.key, ctx, now));
        let from = position(&mut self.from, before);
        let to = position(&mut self.to, after);
        *self.counts.entry((from, to)).or_insert(0) += 1;
        if before != after {
            self.changed += 1;
            if self.examples.len() < max_examples {
                let unit = self
                    .current
                    .bucketing_value(self.key, ctx)
                    .or_else(|| self.proposed.bucketing_value(self.key, ctx));
                self.examples.push(Example {
                    index,
                    unit,
                    from: before.owned(),
                    to: after.owned(),
                });
            }
        }
    }

    fn finish(self, total: usize) -> FlagImpact {
        let mut transitions: Vec<Transition> = self
            .counts
            .into_iter()
            .map(|((from, to), count)| Transition {
                from: self.from[from].owned(),
                to: self.to[to].owned(),
                count,
                share: if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                },
            })
            .collect();
        // Most frequent first; ties in a stable order of the outcomes.
        transitions.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                let key = |t: &Transition| serde_json::to_string(&(&t.from, &t.to));
                key(a).ok().cmp(&key(b).ok())
            })
        });
        FlagImpact {
            flag: self.key.to_owned(),
            changed: self.changed,
            transitions,
            examples: self.examples,
        }
    }
}

fn position<'s>(distinct: &mut Vec<Seen<'s>>, seen: Seen<'s>) -> usize {
    match distinct.iter().position(|d| *d == seen) {
        Some(i) => i,
        None => {
            distinct.push(seen);
            distinct.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlagFile;
    use serde_json::json;

    fn snapshot(value: Value) -> Snapshot {
        let file: FlagFile = serde_json::from_value(value).expect("file");
        Snapshot::compile(&file).expect("valid")
    }

    fn users(n: usize) -> Vec<Context> {
        (0..n)
            .map(|i| {
                Context::new()
                    .with("user_id", format!("user_{i}"))
                    .with("country", if i % 4 == 0 { "CA" } else { "FR" })
            })
            .collect()
    }

    /// The counts are those of evaluating each context on both sides.
    #[test]
    fn counts_every_transition_and_the_dependents_that_follow() {
        let current = snapshot(json!({"flags": [
            {"key": "base", "enabled": true, "rollout": {"percentage": 0},
             "rules": [{"conditions": [{"attribute": "country", "operator": "in", "values": ["CA"]}],
                        "serve": {"enabled": true}}]},
            {"key": "child", "enabled": true, "prerequisites": [{"flag": "base", "enabled": true}]},
            {"key": "grandchild", "enabled": true, "prerequisites": [{"flag": "child", "enabled": true}]},
            {"key": "other", "enabled": true}
        ]}));
        let proposed = snapshot(json!({"flags": [
            {"key": "base", "enabled": true, "rollout": {"percentage": 50},
             "rules": [{"conditions": [{"attribute": "country", "operator": "in", "values": ["CA"]}],
                        "serve": {"enabled": true}}]},
            {"key": "child", "enabled": true, "prerequisites": [{"flag": "base", "enabled": true}]},
            {"key": "grandchild", "enabled": true, "prerequisites": [{"flag": "child", "enabled": true}]},
            {"key": "other", "enabled": true}
        ]}));
        let contexts = users(1000);
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("now");
        let impact = preview(
            &current,
            &proposed,
            "base",
            &contexts,
            now,
            ImpactOptions { max_examples: 3 },
        );
        let moved = contexts
            .iter()
            .filter(|c| {
                current.evaluate("base", c, now).enabled
                    != proposed.evaluate("base", c, now).enabled
            })
            .count();
        assert!(moved > 300 && moved < 450, "{moved}");
        assert_eq!(impact.contexts, 1000);
        assert_eq!(impact.flag.changed, moved);
        let off_to_on = impact
            .flag
            .transitions
            .iter()
            .find(|t| !t.from.enabled && t.to.enabled)
            .expect("off to on");
        assert_eq!(off_to_on.count, moved);
        assert!((off_to_on.share - moved as f64 / 1000.0).abs() < 1e-12);
        let total: usize = impact.flag.transitions.iter().map(|t| t.count).sum();
        assert_eq!(total, 1000);
        assert_eq!(impact.flag.examples.len(), 3);
        for example in &impact.flag.examples {
            let ctx = &contexts[example.index];
            assert_eq!(
                example.unit.as_deref(),
                ctx.get("user_id").and_then(Value::as_str)
            );
            assert!(!example.from.enabled && example.to.enabled);
        }
        let names: Vec<&str> = impact.dependents.iter().map(|d| d.flag.as_str()).collect();
        assert_eq!(names, ["child", "grandchild"]);
        assert!(impact.dependents.iter().all(|d| d.changed == moved));
    }

    #[test]
    fn a_new_flag_moves_everyone_from_not_found() {
        let current = snapshot(json!({"flags": []}));
        let proposed = snapshot(json!({"flags": [{"key": "fresh", "enabled": true}]}));
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("now");
        let impact = preview(
            &current,
            &proposed,
            "fresh",
            &users(10),
            now,
            ImpactOptions::default(),
        );
        assert_eq!(impact.flag.changed, 10);
        assert!(impact.flag.transitions[0].from.not_found);
        let none = preview(
            &current,
            &proposed,
            "fresh",
            &[],
            now,
            ImpactOptions::default(),
        );
        assert_eq!(none.flag.changed, 0);
        assert!(none.flag.transitions.is_empty());
    }
}
