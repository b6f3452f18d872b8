//! `Metadata::in_experiment`: set exactly when the served variant was chosen
//! for the unit by the weight split (what an SDK records as an exposure),
//! and never serialized.

use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};

const FLAGS: &str = r#"{"flags": [
  {"key": "split", "enabled": true,
   "variants": [{"key": "control", "weight": 50, "enabled": false}, {"key": "treatment", "weight": 50}],
   "off_variant": "control",
   "targets": [{"values": ["forced"], "serve": {"enabled": true, "variant": "treatment"}}],
   "rules": [{"name": "beta", "conditions": [{"attribute": "beta", "operator": "eq", "values": [true]}],
              "serve": {"enabled": true}}]},
  {"key": "half", "enabled": true, "rollout": {"percentage": 50},
   "variants": [{"key": "control", "weight": 50, "enabled": false}, {"key": "treatment", "weight": 50}],
   "off_variant": "control"},
  {"key": "killed", "enabled": false,
   "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}], "off_variant": "control"},
  {"key": "boolean", "enabled": true, "rollout": {"percentage": 100}}
]}"#;

fn check(flag: &str, context: &str, want: bool) {
    let file = FlagFile::from_json_str(FLAGS).expect("flags parse");
    let snapshot = Snapshot::compile(&file).expect("flags compile");
    let ctx = Context::from_json_str(context).expect("context");
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("time");
    let r = snapshot.evaluate(flag, &ctx, now);
    assert_eq!(r.metadata.in_experiment, want, "{flag} {context}: {r:?}");
    assert!(r.to_json()["metadata"].get("in_experiment").is_none());
}

#[test]
fn in_experiment_marks_weight_split_assignments_only() {
    // Fallthrough and a rule serving "on": assigned by the split.
    check("split", r#"{"user_id": "u1"}"#, true);
    check("split", r#"{"user_id": "u1", "beta": true}"#, true);
    // A target naming its variant: not assigned by the split.
    check("split", r#"{"user_id": "forced"}"#, false);
    // No unit: served a variant, but in no experiment.
    check("split", r#"{}"#, false);
    check("killed", r#"{"user_id": "u1"}"#, false);
    check("boolean", r#"{"user_id": "u1"}"#, false);
    check("missing", r#"{"user_id": "u1"}"#, false);
    // In a 50% rollout: only the units inside it, though those outside are
    // served the off variant, which may be the same `control`.
    let file = FlagFile::from_json_str(FLAGS).expect("flags parse");
    let snapshot = Snapshot::compile(&file).expect("flags compile");
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("time");
    let (mut inside, mut outside) = (0, 0);
    for i in 0..1000 {
        let ctx = Context::new().with("user_id", format!("user_{i}"));
        let r = snapshot.evaluate("half", &ctx, now);
        let bucket = r.metadata.bucket.expect("a rollout decided");
        assert_eq!(r.metadata.in_experiment, bucket <= 50.0, "user_{i}: {r:?}");
        if r.metadata.in_experiment {
            inside += 1;
        } else {
            assert_eq!(r.variant, Some("control"));
            outside += 1;
        }
    }
    assert!(inside > 400 && outside > 400, "{inside} {outside}");
}

/// A rollout of one variant against its off variant (a guarded release)
/// compares the two sides: units outside the percentage are the control,
/// so they are marked too, served the off variant. A flag with a weight
/// split (`half` above) is not such a comparison: its units outside the
/// rollout stay out of the experiment.
#[test]
fn a_release_rollout_marks_both_sides() {
    let file = FlagFile::from_json_str(
        r#"{"flags": [{"key": "release", "enabled": true, "rollout": {"percentage": 10},
            "variants": [{"key": "old", "weight": 0, "enabled": false}, {"key": "new", "weight": 100}],
            "off_variant": "old"}]}"#,
    )
    .expect("flags parse");
    let snapshot = Snapshot::compile(&file).expect("flags compile");
    let now: Timestamp = "2026-11-24T12:00:00Z".parse().expect("time");
    let (mut new, mut old) = (0, 0);
    for i in 0..1000 {
        let ctx = Context::new().with("user_id", format!("user_{i}"));
        let r = snapshot.evaluate("release", &ctx, now);
        assert!(r.metadata.in_experiment, "user_{i}: {r:?}");
        match r.variant {
            Some("new") => new += 1,
            Some("old") => old += 1,
            other => panic!("user_{i}: {other:?}"),
        }
    }
    assert!(
        (60..140).contains(&new) && new + old == 1000,
        "{new} new, {old} old"
    );
    // Without a unit: no side, no exposure.
    let r = snapshot.evaluate("release", &Context::new(), now);
    assert!(!r.metadata.in_experiment);
}
