//! Properties that must hold for every input, not just the spec's examples.

use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

fn now() -> Timestamp {
    Timestamp::from_second(1_790_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn snapshot(flags: Value) -> Snapshot {
    let file = FlagFile::from_json_value(flags).expect("test flags parse");
    Snapshot::compile(&file).expect("test flags are valid")
}

fn user(unit: &str) -> Context {
    Context::new().with("user_id", unit)
}

/// A small deterministic generator (xorshift64*) for the share tests, so
/// their 100,000 units are random but the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> String {
        format!("{:016x}", self.next())
    }
}

const UNITS: usize = 100_000;

#[test]
fn rollout_share_is_within_one_point_of_the_percentage() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let units: Vec<String> = (0..UNITS).map(|_| rng.unit()).collect();
    for percentage in [1.0, 5.0, 10.0, 33.3, 50.0, 75.0, 99.0] {
        let snap = snapshot(json!({"flags": [{"key": "roll", "enabled": true,
            "rollout": {"percentage": percentage, "salt": "s1"}}]}));
        let on = units
            .iter()
            .filter(|u| snap.evaluate("roll", &user(u), now()).enabled)
            .count();
        let share = on as f64 / UNITS as f64 * 100.0;
        assert!(
            (share - percentage).abs() <= 1.0,
            "{percentage}% rollout served {share:.3}% of {UNITS} units"
        );
    }
}

#[test]
fn variant_shares_are_within_one_point_of_the_weights() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let units: Vec<String> = (0..UNITS).map(|_| rng.unit()).collect();
    let splits: [&[f64]; 6] = [
        &[50.0, 50.0],
        &[10.0, 90.0],
        &[33.33, 33.33, 33.34],
        &[25.0, 25.0, 25.0, 25.0],
        &[1.0, 2.0, 97.0],
        &[0.0, 50.0, 50.0],
    ];
    for weights in splits {
        let variants: Vec<Value> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| json!({"key": format!("v{i}"), "weight": w}))
            .collect();
        let snap =
            snapshot(json!({"flags": [{"key": "split", "enabled": true, "variants": variants}]}));
        let mut counts = vec![0usize; weights.len()];
        for u in &units {
            let r = snap.evaluate("split", &user(u), now());
            let i = r
                .variant
                .and_then(|v| v.strip_prefix('v'))
                .and_then(|n| n.parse::<usize>().ok())
                .expect("a variant is always served");
            counts[i] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let share = counts[i] as f64 / UNITS as f64 * 100.0;
            assert!(
                (share - w).abs() <= 1.0,
                "weights {weights:?}: v{i} got {share:.3}%"
            );
        }
    }
}

fn unit_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9_@.-]{0,24}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn raising_a_rollout_never_removes_a_unit(
        unit in unit_strategy(),
        a in 0.0f64..=100.0,
        b in 0.0f64..=100.0,
        salt in "[a-z0-9]{0,8}",
    ) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let flags = |p: f64| snapshot(json!({"flags": [
            {"key": "grow", "enabled": true, "rollout": {"percentage": p, "salt": salt}},
            {"key": "grow_rule", "enabled": true, "rules": [
                {"name": "all", "conditions": [], "serve": {"enabled": true, "percentage": p}}]},
        ]}));
        let (before, after) = (flags(low), flags(high));
        let ctx = Context::new().with("user_id", unit);
        for key in ["grow", "grow_rule"] {
            let was_on = before.evaluate(key, &ctx, now()).enabled;
            let is_on = after.evaluate(key, &ctx, now()).enabled;
            prop_assert!(!was_on || is_on, "{key}: on at {low}%, off at {high}%");
        }
    }
}

// ---- arbitrary valid flag sets and arbitrary contexts ----

const ATTRIBUTES: [&str; 6] = ["user_id", "country", "plan", "version", "ip", "score"];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z0-9 ._@:/-]{0,16}".prop_map(Value::from),
        prop_oneof![
            Just("1.2.3"),
            Just("2.3.0-beta.1+b7"),
            Just("10.0.0"),
            Just("10.1.2.3"),
            Just("2001:db8::1"),
            Just("2026-11-24T12:00:00Z"),
            Just("US"),
            Just("Bob@ACME.com"),
            Just("ﬀ İstanbul"),
            Just(""),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn context_strategy() -> impl Strategy<Value = Context> {
    prop::collection::vec((0..ATTRIBUTES.len() + 2, any_json()), 0..8).prop_map(|pairs| {
        let mut ctx = Context::new();
        for (i, v) in pairs {
            let name = ATTRIBUTES.get(i).copied().unwrap_or(if i % 2 == 0 {
                "targetingKey"
            } else {
                "$now"
            });
            ctx.insert(name, v);
        }
        ctx
    })
}

/// Literals: mostly of a type the operators take, sometimes not (those flag
/// sets must then fail validation).
fn literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ._@-]{0,8}".prop_map(Value::from),
        3 => (-100i32..100).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => any_json(),
    ]
}

fn condition_strategy() -> impl Strategy<Value = Value> {
    let attr = prop::sample::select(&ATTRIBUTES[..]);
    let op_values = prop_oneof![
        (prop::sample::select(&["eq", "neq"][..]), literal()).prop_map(|(o, v)| (o, json!([v]))),
        (
            prop::sample::select(&["in", "not_in"][..]),
            prop::collection::vec(literal(), 1..4)
        )
            .prop_map(|(o, v)| (o, json!(v))),
        (
            prop::sample::select(&["contains", "not_contains", "starts_with", "ends_with"][..]),
            prop::collection::vec("[a-zA-Zİ@.]{0,4}", 1..3)
        )
            .prop_map(|(o, v)| (o, json!(v))),
        (
            Just("matches"),
            prop::sample::select(&["^a", "b+$", "(?i)us", "[", "\\d{2,}"][..])
        )
            .prop_map(|(o, v)| (o, json!([v]))),
        (
            prop::sample::select(&["gt", "gte", "lt", "lte"][..]),
            -100.0f64..100.0
        )
            .prop_map(|(o, v)| (o, json!([v]))),
        (
            prop::sample::select(
                &[
                    "semver_eq",
                    "semver_gt",
                    "semver_gte",
                    "semver_lt",
                    "semver_lte"
                ][..]
            ),
            prop::sample::select(&["1.2.3", "2.0.0-rc.1", "0.0.0"][..])
        )
            .prop_map(|(o, v)| (o, json!([v]))),
        (
            prop::sample::select(&["before", "after"][..]),
            prop::sample::select(&["2026-11-24T12:00:00Z", "2000-01-01T00:00:00+05:00"][..])
        )
            .prop_map(|(o, v)| (o, json!([v]))),
        prop::sample::select(&["exists", "not_exists"][..]).prop_map(|o| (o, json!([]))),
        (
            Just("in_cidr"),
            prop::sample::select(&["10.0.0.0/8", "2001:db8::/32", "192.168.1.1"][..])
        )
            .prop_map(|(o, v)| (o, json!([v]))),
        prop::sample::select(&["in_segment", "not_in_segment"][..])
            .prop_map(|o| (o, json!(["seg"]))),
    ];
    (attr, op_values, any::<bool>(), any::<bool>()).prop_map(
        |(attribute, (operator, values), negate, ci)| {
            let string_op = matches!(
                operator,
                "eq" | "neq"
                    | "in"
                    | "not_in"
                    | "contains"
                    | "not_contains"
                    | "starts_with"
                    | "ends_with"
                    | "matches"
            );
            json!({"attribute": attribute, "operator": operator, "values": values,
               "negate": negate, "case_insensitive": ci && string_op})
        },
    )
}

fn flag_strategy(index: usize) -> impl Strategy<Value = Value> {
    let variants = prop_oneof![
        Just(json!([])),
        (0.0f64..=100.0).prop_map(|w| json!([
            {"key": "a", "weight": w, "enabled": false, "value": {"x": 1}},
            {"key": "b", "weight": 100.0 - w, "value": "b"}])),
    ];
    let rule = (prop::collection::vec(condition_strategy(), 0..4), any::<bool>(), prop::option::of(0.0f64..=100.0))
        .prop_map(|(conditions, any, percentage)| {
            let mut serve = json!({"enabled": true});
            if let Some(p) = percentage {
                serve["percentage"] = json!(p);
            }
            json!({"match": if any { "any" } else { "all" }, "conditions": conditions, "serve": serve})
        });
    (
        any::<bool>(),
        variants,
        prop::collection::vec(rule, 0..3),
        prop::option::of(0.0f64..=100.0),
        any::<bool>(),
        prop::option::of(prop::sample::select(&["user_id", "country", "score"][..])),
    )
        .prop_map(
            move |(enabled, variants, rules, rollout, prereq, bucket_by)| {
                let has_variants = variants.as_array().is_some_and(|v| !v.is_empty());
                let mut flag = json!({"key": format!("f{index}"), "enabled": enabled,
                "variants": variants, "rules": rules,
                "targets": [{"values": ["u1", 7], "serve": {"enabled": true}}]});
                if has_variants {
                    flag["off_variant"] = json!("a");
                }
                if let Some(p) = rollout {
                    flag["rollout"] = json!({"percentage": p, "bucket_by": bucket_by});
                }
                if prereq && index > 0 {
                    flag["prerequisites"] = json!([{"flag": format!("f{}", index - 1)}]);
                }
                flag
            },
        )
}

fn flag_set_strategy() -> impl Strategy<Value = Value> {
    (
        flag_strategy(0),
        flag_strategy(1),
        flag_strategy(2),
        prop::collection::vec(condition_strategy(), 0..3),
    )
        .prop_map(|(a, b, c, seg_conditions)| {
            // Segment conditions may not refer to their own segment.
            let seg_conditions: Vec<Value> = seg_conditions
                .into_iter()
                .filter(|c| !c["operator"].as_str().unwrap_or("").contains("segment"))
                .collect();
            json!({"flags": [a, b, c], "segments": [{"key": "seg", "included": ["u1"],
                "excluded": [3], "rules": [{"conditions": seg_conditions}]}]})
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Evaluation never panics, and the same input gives the same result,
    /// also from an independently compiled snapshot.
    #[test]
    fn evaluation_is_total_and_deterministic(
        flags in flag_set_strategy(),
        contexts in prop::collection::vec(context_strategy(), 1..4),
        seconds in 0i64..4_000_000_000,
    ) {
        let file = FlagFile::from_json_value(flags).expect("generated flags parse");
        // Generated conditions can be invalid (a bad regex, a wrong literal
        // type); those flag sets must be rejected, not evaluated.
        let Ok(first) = Snapshot::compile(&file) else { return Ok(()); };
        let second = Snapshot::compile(&file).expect("compiling is deterministic");
        let now = Timestamp::from_second(seconds).expect("in range");
        for ctx in &contexts {
            let all = first.evaluate_all(ctx, now);
            prop_assert_eq!(all.len(), 3);
            for r in &all {
                let again = second.evaluate(r.flag, ctx, now);
                prop_assert_eq!(r.to_json(), again.to_json());
                let (explained, _) = first.explain(r.flag, ctx, now);
                prop_assert_eq!(r.to_json(), explained.to_json());
            }
        }
    }
}

#[test]
fn generated_flag_sets_are_mostly_valid() {
    // Guards the property above against testing nothing: most generated
    // flag sets must pass validation.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = flag_set_strategy();
    let valid = (0..200)
        .filter(|_| {
            let flags = strategy.new_tree(&mut runner).expect("tree").current();
            FlagFile::from_json_value(flags)
                .ok()
                .is_some_and(|f| Snapshot::compile(&f).is_ok())
        })
        .count();
    eprintln!("{valid} of 200 generated flag sets are valid");
    assert!(
        valid >= 40,
        "only {valid} of 200 generated flag sets were valid"
    );
}
