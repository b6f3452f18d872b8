//! The client's evaluation API over flag files (no server), and the
//! OpenFeature provider.

#![allow(clippy::unwrap_used)]

use guidon_client::openfeature::GuidonProvider;
use guidon_client::{Client, ClientError, Context, ErrorCode, Reason, Status};
use guidon_server::testing::TempDir;
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature};
use serde_json::json;

const FLAGS: &str = r#"{
  "flags": [
    {"key": "dark_mode", "enabled": true},
    {"key": "killed", "enabled": false},
    {"key": "checkout", "enabled": true,
     "variants": [
       {"key": "control", "weight": 50, "enabled": false, "value": {"layout": "classic"}},
       {"key": "treatment", "weight": 50, "value": {"layout": "single_page"}}],
     "off_variant": "control",
     "targets": [{"values": ["user_42"], "serve": {"enabled": true, "variant": "treatment"}}]},
    {"key": "copy", "enabled": true, "variants": [{"key": "a", "weight": 100, "value": "Buy now"}]},
    {"key": "limit", "enabled": true, "variants": [{"key": "a", "weight": 100, "value": 25}]},
    {"key": "ratio", "enabled": true, "variants": [{"key": "a", "weight": 100, "value": 0.25}]},
    {"key": "multi_off", "enabled": false, "variants": [{"key": "a", "weight": 100, "value": "x"}]}
  ]
}"#;

fn client() -> Client {
    let dir = TempDir::new("client-api");
    let path = dir.join("flags.json");
    std::fs::write(&path, FLAGS).unwrap();
    Client::from_file(&path).unwrap()
}

#[test]
fn typed_helpers_and_defaults() {
    let c = client();
    let user = Context::new().with("user_id", "user_42");
    assert_eq!(c.status(), Status::Ready);
    assert!(c.is_enabled("dark_mode", &user));
    assert!(!c.is_enabled("killed", &user));
    assert!(!c.is_enabled("nope", &user));
    assert!(c.bool_value("dark_mode", &user, false));
    assert!(!c.bool_value("killed", &user, true));
    assert!(c.bool_value("nope", &user, true));
    assert_eq!(c.variant("checkout", &user).as_deref(), Some("treatment"));
    assert_eq!(
        c.json_value("checkout", &user, json!(null)),
        json!({"layout": "single_page"})
    );
    assert_eq!(c.string_value("copy", &user, "?"), "Buy now");
    assert_eq!(c.string_value("limit", &user, "?"), "?");
    assert_eq!(c.number_value("limit", &user, 0.0), 25.0);
    assert_eq!(c.number_value("ratio", &user, 0.0), 0.25);
    assert_eq!(c.number_value("copy", &user, -1.0), -1.0);
    assert_eq!(
        c.json_value("multi_off", &user, json!("default")),
        json!("default")
    );
    assert_eq!(c.json_value("nope", &user, json!(3)), json!(3));
    let r = c.evaluate("checkout", &user);
    assert_eq!(r.reason, Reason::TargetingMatch);
    assert_eq!(r.metadata, json!({"target": true}));
    assert_eq!(r.revision, None);
    let missing = c.evaluate("nope", &user);
    assert_eq!(missing.reason, Reason::Error);
    assert_eq!(missing.error_code, Some(ErrorCode::FlagNotFound));
    let all = c.all(&user);
    assert_eq!(all.len(), 7);
    assert_eq!(all[0].flag, "dark_mode");
    // No allocation path: the borrowed result.
    let layout = c.with_evaluation("checkout", &user, |ev| {
        ev.value.and_then(|v| v["layout"].as_str()).map(str::len)
    });
    assert_eq!(layout, Some("single_page".len()));
}

#[test]
fn yaml_files_and_bad_files() {
    let dir = TempDir::new("client-yaml");
    let yaml = dir.join("flags.yaml");
    std::fs::write(&yaml, "flags:\n  - key: on\n    enabled: true\n").unwrap();
    let c = Client::from_file(&yaml).unwrap();
    assert!(c.is_enabled("on", &Context::new()));
    let invalid = dir.join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"flags": [{"key": "a", "enabled": true, "off_variant": "ghost"}]}"#,
    )
    .unwrap();
    assert!(matches!(
        Client::from_file(&invalid),
        Err(ClientError::Invalid { .. })
    ));
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{").unwrap();
    assert!(matches!(
        Client::from_file(&garbage),
        Err(ClientError::Parse { .. })
    ));
    assert!(matches!(
        Client::from_file(dir.join("missing.json")),
        Err(ClientError::Io { .. })
    ));
}

#[tokio::test]
async fn builder_rejects_urls_it_cannot_use() {
    for url in [
        "ftp://flags.example.com",
        "127.0.0.1:8080",
        "http://",
        "https://",
    ] {
        assert!(
            matches!(
                Client::builder(url, "t").build().await,
                Err(ClientError::InvalidUrl { .. })
            ),
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_openfeature_provider_maps_results() {
    let provider = GuidonProvider::new(client());
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider("guidon-test", provider).await;
    let of = api.create_named_client("guidon-test");
    drop(api);

    let ctx = EvaluationContext::default().with_targeting_key("user_42");
    let details = of
        .get_bool_details("dark_mode", Some(&ctx), None)
        .await
        .unwrap();
    assert!(details.value);
    assert_eq!(details.reason, Some(EvaluationReason::Static));

    // targetingKey is the bucketing value: user_42 is a target.
    let details = of
        .get_struct_details::<open_feature::StructValue>("checkout", Some(&ctx), None)
        .await
        .unwrap();
    assert_eq!(details.variant.as_deref(), Some("treatment"));
    assert_eq!(details.reason, Some(EvaluationReason::TargetingMatch));
    assert_eq!(
        details.value.fields.get("layout"),
        Some(&open_feature::Value::String("single_page".into()))
    );
    assert_eq!(
        of.get_string_value("copy", Some(&ctx), None).await.unwrap(),
        "Buy now"
    );
    assert_eq!(
        of.get_int_value("limit", Some(&ctx), None).await.unwrap(),
        25
    );
    assert_eq!(
        of.get_float_value("ratio", Some(&ctx), None).await.unwrap(),
        0.25
    );
    let killed = of
        .get_bool_details("killed", Some(&ctx), None)
        .await
        .unwrap();
    assert!(!killed.value);
    assert_eq!(killed.reason, Some(EvaluationReason::Disabled));

    let missing = of.get_bool_value("nope", Some(&ctx), None).await;
    assert_eq!(missing.unwrap_err().code, EvaluationErrorCode::FlagNotFound);
    let mismatch = of.get_int_value("copy", Some(&ctx), None).await;
    assert_eq!(
        mismatch.unwrap_err().code,
        EvaluationErrorCode::TypeMismatch
    );
    // Off without an off variant: no value, so the caller's default.
    let off = of.get_string_value("multi_off", Some(&ctx), None).await;
    assert_eq!(
        off.unwrap_err().code,
        EvaluationErrorCode::General("GENERAL".into())
    );

    // Custom fields are attributes.
    let mapped = guidon_client::openfeature::to_context(
        &EvaluationContext::default()
            .with_targeting_key("u")
            .with_custom_field("country", "CA")
            .with_custom_field("age", 30_i64),
    );
    assert_eq!(mapped.get("targetingKey"), Some(&json!("u")));
    assert_eq!(mapped.get("country"), Some(&json!("CA")));
    assert_eq!(mapped.get("age"), Some(&json!(30)));
}
