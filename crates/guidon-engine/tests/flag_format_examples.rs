//! Every example of `docs/flag-format.md` loads and evaluates as written.
//! The examples are copied here, and the test checks that each copy still
//! appears in the document, so the two cannot drift apart silently.

use std::path::Path;

use guidon_engine::{Context, FlagFile, Reason, Snapshot, Timestamp, model};
use serde_json::{Value, json};

const FLAG: &str = r#"{
  "key": "new_checkout",
  "description": "Single-page checkout",
  "enabled": true,
  "variants": [
    {"key": "control",   "weight": 50, "enabled": false, "value": {"layout": "classic"}},
    {"key": "treatment", "weight": 50, "enabled": true,  "value": {"layout": "single_page"}}
  ],
  "off_variant": "control",
  "override": null,
  "prerequisites": [{"flag": "payments_v2", "enabled": true}],
  "targets": [{"values": ["user_42", "user_7"], "serve": {"enabled": true, "variant": "treatment"}}],
  "rules": [
    {
      "name": "staff",
      "match": "all",
      "conditions": [
        {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"], "case_insensitive": true},
        {"attribute": "country", "operator": "in", "values": ["US", "CA"]}
      ],
      "serve": {"enabled": true, "variant": "treatment"}
    },
    {
      "name": "mobile beta, half of it",
      "conditions": [{"attribute": "device", "operator": "eq", "values": ["mobile"]}],
      "serve": {"enabled": true, "percentage": 50}
    }
  ],
  "rollout": {"percentage": 10, "salt": "2026-11", "bucket_by": "user_id"}
}"#;

const SEGMENT: &str = r#"{"key": "beta_testers", "attribute": "user_id",
 "included": ["user_1"], "excluded": ["user_9"],
 "rules": [{"conditions": [{"attribute": "plan", "operator": "eq", "values": ["enterprise"]}]}]}"#;

const CONTEXT: &str =
    r#"{"user_id": "user_42", "country": "US", "plan": "pro", "app_version": "2.3.1"}"#;

const RESULT: &str = r#"{"flag": "new_checkout", "enabled": true, "variant": "treatment",
 "value": {"layout": "single_page"}, "reason": "SPLIT",
 "error_code": null, "flag_version": 7,
 "metadata": {"bucket": 42.17}}"#;

#[test]
fn the_examples_are_those_of_the_document() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/flag-format.md");
    let text = std::fs::read_to_string(&doc).expect("docs/flag-format.md");
    for example in [FLAG, SEGMENT, CONTEXT, RESULT] {
        assert!(
            text.contains(example),
            "flag-format.md no longer contains:\n{example}"
        );
    }
}

fn now() -> Timestamp {
    "2026-11-24T12:00:00Z".parse().expect("timestamp")
}

/// The §2 flag with the flag its prerequisite names, and the §3 segment.
fn snapshot() -> Snapshot {
    let flag: Value = serde_json::from_str(FLAG).expect("§2 is JSON");
    let segment: Value = serde_json::from_str(SEGMENT).expect("§3 is JSON");
    let file = FlagFile::from_json_value(json!({
        "flags": [flag, {"key": "payments_v2", "enabled": true}],
        "segments": [segment],
    }))
    .expect("§2 and §3 load");
    Snapshot::compile(&file).expect("§2 and §3 are valid")
}

#[test]
fn the_flag_example_evaluates_as_described() {
    let snap = snapshot();
    let eval = |ctx: &str| {
        snap.evaluate(
            "new_checkout",
            &Context::from_json_str(ctx).expect("ctx"),
            now(),
        )
    };

    // §4's context: user_42 is a target, served treatment.
    let r = eval(CONTEXT);
    assert_eq!(
        (r.enabled, r.variant, r.reason),
        (true, Some("treatment"), Reason::TargetingMatch)
    );
    assert!(r.metadata.target);
    assert_eq!(r.value, Some(&json!({"layout": "single_page"})));

    // Staff: the email rule is case-insensitive; both conditions must hold.
    let r = eval(r#"{"user_id": "u100", "email": "Jane@ACME.com", "country": "CA"}"#);
    assert_eq!(
        (r.variant, r.metadata.rule),
        (Some("treatment"), Some("staff"))
    );
    let r = eval(r#"{"user_id": "u100", "email": "Jane@ACME.com", "country": "FR"}"#);
    assert_ne!(r.metadata.rule, Some("staff"));

    // Mobile beta: half of mobile users, by the rollout bucket (salt 2026-11).
    let mut on = 0;
    for i in 0..1000 {
        let r = eval(&format!(r#"{{"user_id": "m{i}", "device": "mobile"}}"#));
        assert_eq!(r.metadata.rule, Some("mobile beta, half of it"));
        let bucket = r.metadata.bucket.expect("a percentage records the bucket");
        assert_eq!(r.enabled, bucket <= 50.0 && r.variant == Some("treatment"));
        if bucket <= 50.0 {
            on += 1;
            // Served on: the variant is chosen by weight, `enabled` is the variant's.
            assert!(r.variant.is_some());
        } else {
            assert_eq!(
                (r.enabled, r.variant),
                (false, Some("control")),
                "off serves off_variant"
            );
        }
    }
    assert!(
        (400..600).contains(&on),
        "{on} of 1000 mobile users in the 50%"
    );

    // Everyone else: the 10% rollout, reason SPLIT with the bucket.
    let r = eval(r#"{"user_id": "u100"}"#);
    assert_eq!(r.reason, Reason::Split);
    let bucket = r.metadata.bucket.expect("bucket");
    assert_eq!(
        bucket,
        guidon_engine::rollout_bucket("new_checkout", "u100", "2026-11")
    );

    // No bucketing value: in no rollout.
    let r = eval(r#"{"country": "US"}"#);
    assert!(!r.enabled && r.metadata.missing_bucketing_value);
}

#[test]
fn the_segment_example_includes_excludes_and_matches_rules() {
    let file: model::Segment = serde_json::from_str(SEGMENT).expect("§3 loads");
    let mut flag_file = FlagFile {
        flags: Vec::new(),
        segments: vec![file],
    };
    flag_file.flags.push(
        serde_json::from_value(json!({"key": "beta", "enabled": true,
            "rules": [{"name": "in beta", "conditions": [
                {"operator": "in_segment", "values": ["beta_testers"]}], "serve": {"enabled": true}}],
            "rollout": {"percentage": 0}}))
        .expect("flag"),
    );
    let snap = Snapshot::compile(&flag_file).expect("valid");
    let rule = |ctx: Value| {
        snap.evaluate("beta", &Context::try_from(ctx).expect("ctx"), now())
            .metadata
            .rule
            .is_some()
    };
    assert!(rule(json!({"user_id": "user_1"})), "included");
    assert!(
        rule(json!({"user_id": "user_2", "plan": "enterprise"})),
        "rule"
    );
    assert!(
        !rule(json!({"user_id": "user_9", "plan": "enterprise"})),
        "excluded wins over rules"
    );
    assert!(
        !rule(json!({"user_id": "user_2", "plan": "pro"})),
        "neither"
    );
}

#[test]
fn the_result_example_has_the_fields_the_engine_prints() {
    let example: Value = serde_json::from_str(RESULT).expect("§7 is JSON");
    let fields: Vec<&String> = example.as_object().expect("object").keys().collect();
    let snap = snapshot();
    let ours = snap.evaluate(
        "new_checkout",
        &Context::from_json_str(CONTEXT).expect("ctx"),
        now(),
    );
    let ours = serde_json::to_string(&ours).expect("serializes");
    let parsed: Value = serde_json::from_str(&ours).expect("object");
    assert_eq!(
        parsed.as_object().map(|o| o.len()),
        Some(fields.len()),
        "{ours}"
    );
    // Same fields, printed in the document's order.
    let position = |text: &str, field: &str| text.find(&format!("\"{field}\":")).expect(field);
    let mut in_doc: Vec<&String> = fields.clone();
    in_doc.sort_by_key(|f| position(RESULT, f));
    let mut in_ours = fields;
    in_ours.sort_by_key(|f| position(&ours, f));
    assert_eq!(in_ours, in_doc, "{ours}");
}
