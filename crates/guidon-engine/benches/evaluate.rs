//! Evaluation speed, side by side with Unleash's engine (yggdrasil) on
//! equivalent flags, so the ratio is measured in one run on one machine.
//!
//! `cargo bench -p guidon-engine --bench evaluate`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use serde_json::{Value, json};
use unleash_yggdrasil::state::EnrichedContext;
use unleash_yggdrasil::{ClientFeatures, EngineState, UpdateMessage};

fn guidon_context(user: &str) -> Context {
    Context::new()
        .with("user_id", user)
        .with("email", "jane@example.org")
        .with("country", "FR")
        .with("plan", "pro")
        .with("device", "phone")
        .with("app_version", "2.4.1")
}

fn ygg_context(user: &str) -> unleash_yggdrasil::Context {
    let props = [
        ("email", "jane@example.org"),
        ("country", "FR"),
        ("plan", "pro"),
        ("device", "phone"),
        ("app_version", "2.4.1"),
    ];
    unleash_yggdrasil::Context {
        user_id: Some(user.into()),
        properties: Some(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..unleash_yggdrasil::Context::default()
    }
}

// ---- Guidon flags ----

fn three_rules() -> Value {
    json!([
        {"name": "staff", "conditions": [
            {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"], "case_insensitive": true},
            {"attribute": "country", "operator": "in", "values": ["US", "CA"]}],
         "serve": {"enabled": true}},
        {"name": "enterprise", "conditions": [
            {"attribute": "plan", "operator": "in", "values": ["enterprise"]}],
         "serve": {"enabled": true}},
        {"name": "tablets", "conditions": [
            {"attribute": "device", "operator": "starts_with", "values": ["tablet"]}],
         "serve": {"enabled": true}}
    ])
}

fn guidon_flag(shape: usize, key: &str) -> Value {
    match shape {
        0 => json!({"key": key, "enabled": false}),
        1 => json!({"key": key, "enabled": true, "rules": three_rules()}),
        2 => json!({"key": key, "enabled": true, "rollout": {"percentage": 10}}),
        _ => json!({"key": key, "enabled": true, "rules": three_rules(),
            "rollout": {"percentage": 50},
            "variants": [
                {"key": "control", "weight": 50, "value": {"layout": "classic"}},
                {"key": "treatment", "weight": 50, "value": {"layout": "single_page"}}]}),
    }
}

// ---- equivalent Unleash features ----

fn ygg_strategies(rollout: &str, group: &str) -> Vec<Value> {
    let p = json!({"rollout": rollout, "stickiness": "userId", "groupId": group});
    vec![
        json!({"name": "flexibleRollout", "parameters": p, "constraints": [
            {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@acme.com"], "caseInsensitive": true},
            {"contextName": "country", "operator": "IN", "values": ["US", "CA"]}]}),
        json!({"name": "flexibleRollout", "parameters": p, "constraints": [
            {"contextName": "plan", "operator": "IN", "values": ["enterprise"]}]}),
        json!({"name": "flexibleRollout", "parameters": p, "constraints": [
            {"contextName": "device", "operator": "STR_STARTS_WITH", "values": ["tablet"]}]}),
    ]
}

fn ygg_feature(shape: usize, name: &str) -> Value {
    match shape {
        0 => json!({"name": name, "enabled": false, "strategies": [{"name": "default"}]}),
        1 => json!({"name": name, "enabled": true, "strategies": ygg_strategies("100", name)}),
        2 => json!({"name": name, "enabled": true, "strategies": [{"name": "flexibleRollout",
            "parameters": {"rollout": "10", "stickiness": "userId", "groupId": name}}]}),
        _ => {
            let mut strategies = ygg_strategies("100", name);
            strategies.push(json!({"name": "flexibleRollout",
                "parameters": {"rollout": "50", "stickiness": "userId", "groupId": name}}));
            json!({"name": name, "enabled": true, "strategies": strategies,
                "variants": [
                    {"name": "control", "weight": 500, "weightType": "variable", "stickiness": "userId",
                     "payload": {"type": "json", "value": "{\"layout\":\"classic\"}"}},
                    {"name": "treatment", "weight": 500, "weightType": "variable", "stickiness": "userId",
                     "payload": {"type": "json", "value": "{\"layout\":\"single_page\"}"}}]})
        }
    }
}

const SHAPES: [(&str, &str); 4] = [
    ("a_kill_switch", "(a) kill-switched flag"),
    ("b_three_rules", "(b) 3 rules of string operators"),
    ("c_rollout_10", "(c) 10% rollout"),
    (
        "d_rules_rollout_variants",
        "(d) 3 rules + rollout + 2 variants",
    ),
];

/// 1,000 flags cycling through the four shapes: a realistic mix of kill
/// switches, targeted flags, rollouts and experiments.
fn thousand() -> (FlagFile, ClientFeatures) {
    let guidon: Vec<Value> = (0..1000)
        .map(|i| guidon_flag(i % 4, &format!("flag_{i}")))
        .collect();
    let ygg: Vec<Value> = (0..1000)
        .map(|i| ygg_feature(i % 4, &format!("flag_{i}")))
        .collect();
    let file = FlagFile::from_json_value(json!({"flags": guidon})).expect("bench flags parse");
    let features = serde_json::from_value(json!({"version": 2, "features": ygg}))
        .expect("bench features parse");
    (file, features)
}

fn ygg_engine(features: ClientFeatures) -> EngineState {
    let engine = EngineState::default();
    let warnings = engine.take_state(UpdateMessage::FullResponse(features));
    assert!(
        warnings.is_none(),
        "yggdrasil rejected the bench features: {warnings:?}"
    );
    engine
}

fn single_flags(c: &mut Criterion) {
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("timestamp");
    let guidon: Vec<Value> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, (k, _))| guidon_flag(i, k))
        .collect();
    let file = FlagFile::from_json_value(json!({"flags": guidon})).expect("parse");
    let snapshot = Snapshot::compile(&file).expect("valid");
    let ygg: Vec<Value> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, (k, _))| ygg_feature(i, k))
        .collect();
    let engine = ygg_engine(
        serde_json::from_value(json!({"version": 2, "features": ygg})).expect("features"),
    );
    // A unit matching no rule and inside the 10% and 50% rollouts of both
    // engines (their hashes differ), so (c) and (d) take their longest path:
    // every rule fails, then the rollout and the variant are hashed.
    let inside = |user: &str| {
        let (ctx, yctx) = (guidon_context(user), ygg_context(user));
        let g = |k: &str| {
            snapshot.evaluate(k, &ctx, now).reason == guidon_engine::Reason::Split
                && snapshot
                    .evaluate(k, &ctx, now)
                    .metadata
                    .bucket
                    .is_some_and(|b| b <= 10.0)
        };
        let y =
            |k: &str| engine.check_enabled(&EnrichedContext::from(&yctx, k, None)) == Some(true);
        g(SHAPES[2].0)
            && g(SHAPES[3].0)
            && y(SHAPES[2].0)
            && y(SHAPES[3].0)
            && snapshot.evaluate(SHAPES[3].0, &ctx, now).variant.is_some()
            && engine
                .check_variant(&EnrichedContext::from(&yctx, SHAPES[3].0, None))
                .is_some_and(|v| v.enabled)
    };
    let user = (0..100_000)
        .map(|i| format!("user_{i}"))
        .find(|u| inside(u))
        .expect("some user is inside every rollout");
    let ctx = guidon_context(&user);
    let yctx = ygg_context(&user);
    // Both engines reach the same outcome, or the comparison means nothing.
    // (b): with no rule matched, Guidon's fallthrough is on and Unleash's
    // off; the work, three failed rules, is the same.
    for (key, expected) in [(SHAPES[0].0, false), (SHAPES[2].0, true)] {
        assert_eq!(snapshot.evaluate(key, &ctx, now).enabled, expected, "{key}");
    }

    let mut group = c.benchmark_group("single_flag");
    // The floor of (c) and (d): one SHA-256 of "{flag}:{unit}:{salt}", which
    // flag-format.md §6 fixes; (c) needs one, (d) two.
    group.bench_function("guidon rollout_bucket alone (one SHA-256 block)", |b| {
        b.iter(|| {
            black_box(guidon_engine::rollout_bucket(
                black_box(SHAPES[3].0),
                black_box(&user),
                "",
            ))
        })
    });
    for (i, (key, label)) in SHAPES.iter().enumerate() {
        group.bench_function(format!("guidon {label}"), |b| {
            b.iter(|| black_box(snapshot.evaluate(black_box(key), black_box(&ctx), now)))
        });
        group.bench_function(format!("yggdrasil {label}"), |b| {
            if i == 3 {
                b.iter(|| {
                    black_box(engine.check_variant(&EnrichedContext::from(
                        black_box(&yctx),
                        key,
                        None,
                    )))
                })
            } else {
                b.iter(|| {
                    black_box(engine.check_enabled(&EnrichedContext::from(
                        black_box(&yctx),
                        key,
                        None,
                    )))
                })
            }
        });
    }
    group.finish();
}

fn all_flags(c: &mut Criterion) {
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("timestamp");
    let (file, features) = thousand();
    let snapshot = Snapshot::compile(&file).expect("valid");
    let engine = ygg_engine(features.clone());
    let names: Vec<String> = engine
        .list_known_toggles()
        .into_iter()
        .map(|t| t.name)
        .collect();
    let ctx = guidon_context("user_77");
    let yctx = ygg_context("user_77");

    let mut group = c.benchmark_group("thousand_flags");
    group.bench_function("guidon (e) evaluate_all", |b| {
        b.iter(|| black_box(snapshot.evaluate_all(black_box(&ctx), now)))
    });
    group.bench_function("yggdrasil (e) check_enabled loop", |b| {
        b.iter(|| {
            let base = EnrichedContext::from(black_box(&yctx), "", None);
            for name in &names {
                black_box(engine.check_enabled(&base.with_toggle_name(name)));
            }
        })
    });
    group.bench_function("yggdrasil (e) resolve_all", |b| {
        b.iter(|| black_box(engine.resolve_all(black_box(&yctx), &None)))
    });
    group.bench_function("guidon (f) compile snapshot", |b| {
        b.iter(|| black_box(Snapshot::compile(black_box(&file))))
    });
    let text = serde_json::to_string(&file).expect("serialize");
    group.bench_function("guidon (f) parse JSON + compile snapshot", |b| {
        b.iter(|| {
            let parsed = FlagFile::from_json_str(black_box(&text)).expect("parse");
            black_box(Snapshot::compile(&parsed))
        })
    });
    group.bench_function("yggdrasil (f) take_state", |b| {
        b.iter_batched(
            || features.clone(),
            |f| {
                let engine = EngineState::default();
                black_box(engine.take_state(UpdateMessage::FullResponse(f)))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = single_flags, all_flags
}
criterion_main!(benches);
