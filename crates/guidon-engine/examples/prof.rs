use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use serde_json::json;
use std::hint::black_box;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let n: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let file = FlagFile::from_json_value(json!({"flags": [
        {"key": "a", "enabled": false},
        {"key": "c", "enabled": true, "rollout": {"percentage": 10}},
    ]}))
    .unwrap();
    let snap = Snapshot::compile(&file).unwrap();
    let ctx = Context::new()
        .with("user_id", "user_77")
        .with("email", "jane@example.org")
        .with("country", "FR")
        .with("plan", "pro")
        .with("device", "phone");
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
    let t = std::time::Instant::now();
    if which == "e" {
        let rules = json!([
            {"name": "staff", "conditions": [
                {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"], "case_insensitive": true},
                {"attribute": "country", "operator": "in", "values": ["US", "CA"]}], "serve": {"enabled": true}},
            {"name": "enterprise", "conditions": [{"attribute": "plan", "operator": "in", "values": ["enterprise"]}], "serve": {"enabled": true}},
            {"name": "tablets", "conditions": [{"attribute": "device", "operator": "starts_with", "values": ["tablet"]}], "serve": {"enabled": true}}]);
        let flags: Vec<_> = (0..1000).map(|i| { let key = format!("flag_{i}"); match i % 4 {
            0 => json!({"key": key, "enabled": false}),
            1 => json!({"key": key, "enabled": true, "rules": rules}),
            2 => json!({"key": key, "enabled": true, "rollout": {"percentage": 10}}),
            _ => json!({"key": key, "enabled": true, "rules": rules, "rollout": {"percentage": 50},
                "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}]}) } }).collect();
        let snap = Snapshot::compile(&FlagFile::from_json_value(json!({"flags": flags})).unwrap())
            .unwrap();
        let n = n / 1000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            black_box(snap.evaluate_all(black_box(&ctx), now));
        }
        eprintln!("e: {:?}/op", t.elapsed() / n);
        return;
    }
    if which == "h" {
        for _ in 0..n {
            black_box(guidon_engine::rollout_bucket(
                black_box("c"),
                black_box("user_77"),
                black_box(""),
            ));
        }
    } else {
        for _ in 0..n {
            black_box(snap.evaluate(black_box(which.as_str()), black_box(&ctx), now));
        }
    }
    eprintln!("{which}: {:?}/op", t.elapsed() / n);
}
