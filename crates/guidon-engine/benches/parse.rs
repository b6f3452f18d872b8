//! What the bounds on outside text cost (`Format::check_bounds`: no
//! repeated key, no nesting deeper than `MAX_DEPTH`), next to the parse
//! they precede, and how fast a deeply nested YAML text is refused.
//!
//! `cargo bench -p guidon-engine --bench parse`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use guidon_engine::{FlagFile, Format};
use serde_json::{Value, json};

/// A flag file of `n` flags, each with two variants, a rule and a rollout:
/// about 400 bytes of JSON a flag.
fn flag_file(n: usize) -> Value {
    let flags: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "key": format!("flag_{i}"),
                "description": "a flag of the bench",
                "enabled": true,
                "variants": [
                    {"key": "control", "weight": 50, "value": {"layout": "classic"}},
                    {"key": "treatment", "weight": 50, "value": {"layout": "single_page"}}
                ],
                "rules": [{"name": "staff", "conditions": [
                    {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"]},
                    {"attribute": "country", "operator": "in", "values": ["US", "CA"]}],
                    "serve": {"enabled": true, "variant": "treatment"}}],
                "rollout": {"percentage": 50}
            })
        })
        .collect();
    json!({"flags": flags})
}

fn bounds(c: &mut Criterion) {
    let mut group = c.benchmark_group("bounds");
    for n in [150, 1_000] {
        let file = flag_file(n);
        let json = file.to_string();
        let yaml = serde_yaml_ng::to_string(&file).expect("YAML");
        for (format, text) in [(Format::Json, &json), (Format::Yaml, &yaml)] {
            let kib = text.len() / 1024;
            group.bench_function(
                format!("{format} {n} flags ({kib} KiB): check_bounds"),
                |b| b.iter(|| format.check_bounds(black_box(text)).expect("in bounds")),
            );
            group.bench_function(
                format!("{format} {n} flags ({kib} KiB): parse (with the check)"),
                |b| b.iter(|| format.parse::<FlagFile>(black_box(text)).expect("parses")),
            );
        }
    }
    // Refusals: 1 MiB of open flow brackets after a key (quadratic for
    // libyaml), and 1 MiB of compact block sequences.
    let flow = "key: ".to_owned() + &"[".repeat(1 << 20);
    let block = "- ".repeat(1 << 19) + "x\n";
    for (name, text) in [("flow", &flow), ("block", &block)] {
        group.bench_function(format!("YAML 1 MiB nested ({name}): refused"), |b| {
            b.iter(|| {
                Format::Yaml
                    .check_bounds(black_box(text))
                    .expect_err("too deep")
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bounds
}
criterion_main!(benches);
