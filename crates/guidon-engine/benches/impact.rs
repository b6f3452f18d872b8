//! The impact preview over 10,000 contexts (issue 16: at most 100 ms):
//! a flag with three rules, a weighted split and a rollout, and two flags
//! depending on it through prerequisites, evaluated before and after a
//! rollout change for every context.
//!
//! `cargo bench -p guidon-engine --bench impact`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use guidon_engine::impact::{ImpactOptions, preview};
use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use serde_json::{Value, json};

fn environment(percentage: u32) -> Snapshot {
    let file: Value = json!({
        "flags": [
            {"key": "checkout", "enabled": true,
             "variants": [
                {"key": "control", "weight": 50, "value": {"layout": "classic"}},
                {"key": "treatment", "weight": 50, "value": {"layout": "single_page"}}],
             "rules": [
                {"name": "staff", "conditions": [
                    {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"], "case_insensitive": true}],
                 "serve": {"enabled": true, "variant": "treatment"}},
                {"name": "enterprise", "conditions": [
                    {"attribute": "plan", "operator": "in", "values": ["enterprise"]},
                    {"attribute": "country", "operator": "in", "values": ["US", "CA"]}],
                 "serve": {"enabled": true, "variant": "control"}},
                {"name": "new apps", "conditions": [
                    {"attribute": "app_version", "operator": "semver_gte", "values": ["2.3.0"]}],
                 "serve": {"enabled": true}}],
             "rollout": {"percentage": percentage}},
            {"key": "checkout_upsell", "enabled": true,
             "prerequisites": [{"flag": "checkout", "variants": ["treatment"]}]},
            {"key": "upsell_banner", "enabled": true,
             "prerequisites": [{"flag": "checkout_upsell", "enabled": true}]},
            {"key": "unrelated", "enabled": true, "rollout": {"percentage": 30}}
        ]
    });
    let file: FlagFile = serde_json::from_value(file).expect("bench file");
    Snapshot::compile(&file).expect("valid bench file")
}

fn contexts(n: usize) -> Vec<Context> {
    let countries = ["US", "CA", "FR", "DE", "JP"];
    let plans = ["free", "pro", "enterprise"];
    (0..n)
        .map(|i| {
            Context::new()
                .with("user_id", format!("user_{i}"))
                .with(
                    "email",
                    if i % 50 == 0 {
                        format!("u{i}@acme.com")
                    } else {
                        format!("u{i}@example.org")
                    },
                )
                .with("country", countries[i % countries.len()])
                .with("plan", plans[i % plans.len()])
                .with("app_version", format!("2.{}.0", i % 6))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let current = environment(10);
    let proposed = environment(50);
    let contexts = contexts(10_000);
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("now");
    let impact = preview(
        &current,
        &proposed,
        "checkout",
        &contexts,
        now,
        ImpactOptions::default(),
    );
    assert!(impact.flag.changed > 0 && impact.dependents.len() == 2);
    let mut group = c.benchmark_group("impact");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("preview_10k_contexts_3_flags", |b| {
        b.iter(|| {
            black_box(preview(
                &current,
                &proposed,
                black_box("checkout"),
                &contexts,
                now,
                ImpactOptions::default(),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
