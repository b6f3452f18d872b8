//! OpenFeature Remote Evaluation Protocol conformance: the two endpoints
//! of `/work/shared/specs/ofrep/openapi.yaml` driven as an OFREP provider
//! drives them, against a real server on every backend.

use guidon_server::testing::{self, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const ONE: &str = "/ofrep/v1/evaluate/flags/";
const BULK: &str = "/ofrep/v1/evaluate/flags";

/// The reasons a success may carry: OFREP's enum, and OpenFeature's
/// resolution reasons it refers to.
const REASONS: [&str; 9] = [
    "STATIC",
    "TARGETING_MATCH",
    "SPLIT",
    "DISABLED",
    "UNKNOWN",
    "DEFAULT",
    "CACHED",
    "STALE",
    "ERROR",
];

/// One flag of each kind the spec lists, and the cases of the evaluation
/// order that give each reason.
fn flag_file() -> Value {
    json!({
        "flags": [
            {"key": "bool_on", "enabled": true},
            {"key": "bool_off", "enabled": false},
            {"key": "string_flag", "enabled": true,
             "variants": [{"key": "blue", "weight": 100, "value": "blue"}]},
            {"key": "integer_flag", "enabled": true,
             "variants": [{"key": "ten", "weight": 100, "value": 10}]},
            {"key": "float_flag", "enabled": true,
             "variants": [{"key": "quarter", "weight": 100, "value": 0.25}]},
            {"key": "object_flag", "enabled": true,
             "variants": [{"key": "single", "weight": 100,
                           "value": {"layout": "single_page", "steps": 1}}]},
            {"key": "disabled_no_off", "enabled": false,
             "variants": [{"key": "a", "weight": 50, "value": "a"},
                          {"key": "b", "weight": 50, "value": "b"}]},
            {"key": "disabled_with_off", "enabled": false, "off_variant": "a",
             "variants": [{"key": "a", "weight": 50, "value": "a"},
                          {"key": "b", "weight": 50, "value": "b"}]},
            {"key": "targeted", "enabled": true,
             "rules": [{"name": "canada",
                        "conditions": [{"attribute": "country", "operator": "eq", "values": ["CA"]}],
                        "serve": {"enabled": true}}],
             "rollout": {"percentage": 0}},
            {"key": "split", "enabled": true,
             "variants": [{"key": "control", "weight": 50, "value": "classic"},
                          {"key": "treatment", "weight": 50, "value": "single_page"}]},
            {"key": "gradual", "enabled": true, "rollout": {"percentage": 50, "salt": "s"}},
            {"key": "needs_bool_off", "enabled": true,
             "prerequisites": [{"flag": "bool_off"}]}
        ]
    })
}

const FLAG_COUNT: usize = 12;

/// Loads the flag file into production; an sdk token for it.
async fn setup(server: &TestServer) -> String {
    let response = server
        .admin(Method::PUT, "/api/v1/envs/production/flags")
        .json(&flag_file())
        .send()
        .await
        .expect("bulk PUT");
    assert_eq!(response.status(), 200, "flag file loads");
    server.sdk_token("provider", "production").await
}

async fn post(server: &TestServer, path: &str, token: &str, body: &Value) -> reqwest::Response {
    server
        .http
        .post(server.at(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("OFREP request")
}

/// The JSON body, checking the content type on the way.
async fn json_of(label: &str, response: reqwest::Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{label}: content type {content_type:?}"
    );
    response.json().await.expect("JSON body")
}

/// `metadata`: an object whose values are booleans, strings or numbers.
fn check_metadata(label: &str, metadata: &Value) {
    let object = metadata
        .as_object()
        .unwrap_or_else(|| panic!("{label}: metadata is not an object: {metadata}"));
    for (name, value) in object {
        assert!(
            value.is_boolean() || value.is_string() || value.is_number(),
            "{label}: metadata {name} is {value}, not a boolean, string or number"
        );
    }
}

/// evaluationSuccess: `key` and `reason` required, `variant` a string,
/// `metadata` flat, `value` (when present) of a flag type, nothing else.
fn check_success(label: &str, body: &Value, key: &str) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{label}: not an object: {body}"));
    for field in object.keys() {
        assert!(
            ["key", "value", "reason", "variant", "metadata"].contains(&field.as_str()),
            "{label}: unexpected field {field} in a success: {body}"
        );
    }
    assert_eq!(body["key"], key, "{label}: key");
    let reason = body["reason"].as_str().expect("reason is a string");
    assert!(REASONS.contains(&reason), "{label}: reason {reason}");
    assert_ne!(reason, "ERROR", "{label}: a success with reason ERROR");
    if let Some(variant) = body.get("variant") {
        assert!(variant.is_string(), "{label}: variant {variant}");
    }
    if let Some(metadata) = body.get("metadata") {
        check_metadata(label, metadata);
    }
    if let Some(value) = body.get("value") {
        assert!(
            value.is_boolean() || value.is_string() || value.is_number() || value.is_object(),
            "{label}: value {value} is of no OFREP flag type"
        );
    }
}

/// evaluationFailure / flagNotFound: `errorCode`, `errorDetails` a string,
/// `key` when (and only when) given; no value.
fn check_failure(label: &str, body: &Value, key: Option<&str>, code: &str) {
    assert_eq!(body["errorCode"], code, "{label}: {body}");
    assert!(
        body["errorDetails"].as_str().is_some_and(|d| !d.is_empty()),
        "{label}: errorDetails: {body}"
    );
    match key {
        Some(key) => assert_eq!(body["key"], key, "{label}: key: {body}"),
        None => assert!(body.get("key").is_none(), "{label}: no key in bulk: {body}"),
    }
    assert!(
        body.get("value").is_none(),
        "{label}: a failure with a value"
    );
    assert!(
        body.get("reason").is_none(),
        "{label}: a failure with a reason"
    );
}

async fn evaluate_one(server: &TestServer, token: &str, key: &str, context: Value) -> Value {
    let label = format!("{key} {context}");
    let response = post(
        server,
        &format!("{ONE}{key}"),
        token,
        &json!({"context": context}),
    )
    .await;
    assert_eq!(response.status(), 200, "{label}");
    let body = json_of(&label, response).await;
    check_success(&label, &body, key);
    body
}

#[tokio::test]
async fn single_flag_successes_follow_the_spec() {
    for (db, server) in testing::servers("ofrep_one").await {
        let n = db.name;
        let token = setup(&server).await;
        let user = json!({"targetingKey": "user-123", "country": "FR"});

        // booleanFlag
        let body = evaluate_one(&server, &token, "bool_on", user.clone()).await;
        assert_eq!(body["value"], true, "{n}: {body}");
        assert_eq!(body["reason"], "STATIC", "{n}: {body}");
        // A flag without variants is named after its state (stock providers
        // want a variant).
        assert_eq!(body["variant"], "on", "{n}: boolean flag: {body}");
        assert_eq!(body["metadata"]["flag_version"], 1, "{n}: {body}");
        let body = evaluate_one(&server, &token, "bool_off", user.clone()).await;
        assert_eq!(body["value"], false, "{n}: {body}");
        assert_eq!(body["reason"], "DISABLED", "{n}: {body}");

        // stringFlag, integerFlag, floatFlag, objectFlag
        let body = evaluate_one(&server, &token, "string_flag", user.clone()).await;
        assert_eq!(body["value"], "blue", "{n}: {body}");
        assert_eq!(body["variant"], "blue", "{n}: {body}");
        assert_eq!(body["reason"], "SPLIT", "{n}: {body}");
        let body = evaluate_one(&server, &token, "integer_flag", user.clone()).await;
        assert!(body["value"].is_i64(), "{n}: an integer, not 10.0: {body}");
        assert_eq!(body["value"], 10, "{n}: {body}");
        let body = evaluate_one(&server, &token, "float_flag", user.clone()).await;
        assert!(body["value"].is_f64(), "{n}: {body}");
        assert_eq!(body["value"].as_f64(), Some(0.25), "{n}: {body}");
        let body = evaluate_one(&server, &token, "object_flag", user.clone()).await;
        assert_eq!(
            body["value"],
            json!({"layout": "single_page", "steps": 1}),
            "{n}: {body}"
        );
        assert_eq!(body["variant"], "single", "{n}: {body}");

        // codeDefaultFlag: disabled, no off variant: no value at all (not
        // null), so the provider uses its code default.
        let body = evaluate_one(&server, &token, "disabled_no_off", user.clone()).await;
        assert!(body.get("value").is_none(), "{n}: codeDefault: {body}");
        assert_eq!(body["variant"], "off", "{n}: {body}");
        assert_eq!(body["reason"], "DISABLED", "{n}: {body}");
        // With an off variant, that variant is the value.
        let body = evaluate_one(&server, &token, "disabled_with_off", user.clone()).await;
        assert_eq!(body["value"], "a", "{n}: {body}");
        assert_eq!(body["variant"], "a", "{n}: {body}");
        assert_eq!(body["reason"], "DISABLED", "{n}: {body}");

        // TARGETING_MATCH when the rule matches, the rollout's SPLIT otherwise.
        let canadian = json!({"targetingKey": "user-123", "country": "CA"});
        let body = evaluate_one(&server, &token, "targeted", canadian).await;
        assert_eq!(body["reason"], "TARGETING_MATCH", "{n}: {body}");
        assert_eq!(body["value"], true, "{n}: {body}");
        assert_eq!(body["metadata"]["rule"], "canada", "{n}: {body}");
        let body = evaluate_one(&server, &token, "targeted", user.clone()).await;
        assert_eq!(body["reason"], "SPLIT", "{n}: {body}");
        assert_eq!(body["value"], false, "{n}: 0% rollout: {body}");

        // A failed prerequisite: DEFAULT, and which one in metadata.
        let body = evaluate_one(&server, &token, "needs_bool_off", user.clone()).await;
        assert_eq!(body["reason"], "DEFAULT", "{n}: {body}");
        assert_eq!(body["value"], false, "{n}: {body}");
        assert_eq!(
            body["metadata"]["prerequisite_failed"], "bool_off",
            "{n}: {body}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn splits_are_deterministic_and_use_the_targeting_key() {
    for (db, server) in testing::servers("ofrep_split").await {
        let n = db.name;
        let token = setup(&server).await;
        let mut seen = std::collections::BTreeMap::new();
        let mut rolled_out = 0;
        for i in 0..100 {
            let unit = format!("user-{i}");
            let body = evaluate_one(&server, &token, "split", json!({"targetingKey": unit})).await;
            assert_eq!(body["reason"], "SPLIT", "{n}: {body}");
            let variant = body["variant"].as_str().expect("variant").to_owned();
            let expected = match variant.as_str() {
                "control" => "classic",
                "treatment" => "single_page",
                other => panic!("{n}: variant {other}"),
            };
            assert_eq!(body["value"], expected, "{n}: {body}");
            // The same unit as user_id: the same variant (targetingKey is
            // the fallback bucketing value), and again: deterministic.
            let again = evaluate_one(&server, &token, "split", json!({"user_id": unit})).await;
            assert_eq!(again["variant"], body["variant"], "{n}: {unit}");
            *seen.entry(variant).or_insert(0) += 1;

            let body =
                evaluate_one(&server, &token, "gradual", json!({"targetingKey": unit})).await;
            assert_eq!(body["reason"], "SPLIT", "{n}: {body}");
            let bucket = body["metadata"]["bucket"].as_f64().expect("bucket");
            assert_eq!(body["value"], bucket <= 50.0, "{n}: {body}");
            rolled_out += usize::from(body["value"] == true);
        }
        assert_eq!(seen.len(), 2, "{n}: both variants served: {seen:?}");
        assert!(
            (25..=75).contains(&rolled_out),
            "{n}: {rolled_out} of 100 in a 50% rollout"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn single_flag_failures_follow_the_spec() {
    for (db, server) in testing::servers("ofrep_fail").await {
        let n = db.name;
        let token = setup(&server).await;

        // 404 flagNotFound.
        let response = post(
            &server,
            &format!("{ONE}no-such-flag"),
            &token,
            &json!({"context": {"targetingKey": "u"}}),
        )
        .await;
        assert_eq!(response.status(), 404, "{n}");
        let body = json_of(n, response).await;
        check_failure(n, &body, Some("no-such-flag"), "FLAG_NOT_FOUND");
        assert!(
            body["errorDetails"]
                .as_str()
                .is_some_and(|d| d.contains("no-such-flag")),
            "{n}: {body}"
        );

        // 400 INVALID_CONTEXT: a context that is not an object, or none.
        for (label, request) in [
            ("a string", json!({"context": "user-123"})),
            ("an array", json!({"context": ["user-123"]})),
            ("a number", json!({"context": 7})),
            ("null", json!({"context": null})),
            ("missing", json!({})),
        ] {
            let response = post(&server, &format!("{ONE}bool_on"), &token, &request).await;
            assert_eq!(response.status(), 400, "{n}: context {label}");
            let body = json_of(n, response).await;
            check_failure(
                &format!("{n}: {label}"),
                &body,
                Some("bool_on"),
                "INVALID_CONTEXT",
            );
        }

        // 400 PARSE_ERROR: not JSON, or not the request's shape.
        for (label, raw) in [
            ("malformed", r#"{"context": {"targetingKey": "u""#),
            ("empty", ""),
            ("an array", "[]"),
        ] {
            let response = server
                .http
                .post(server.at(&format!("{ONE}bool_on")))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{n}: {label}");
            let body = json_of(n, response).await;
            check_failure(
                &format!("{n}: {label}"),
                &body,
                Some("bool_on"),
                "PARSE_ERROR",
            );
        }

        // 400 PARSE_ERROR: a context repeating `targetingKey` is refused,
        // not evaluated for whichever came last (single and bulk alike).
        let repeated = r#"{"context": {"targetingKey": "a", "targetingKey": "b"}}"#;
        for (path, key) in [
            (format!("{ONE}split"), Some("split")),
            (BULK.to_owned(), None),
        ] {
            let response = server
                .http
                .post(server.at(&path))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(repeated)
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status(),
                400,
                "{n}: repeated targetingKey at {path}"
            );
            let body = json_of(n, response).await;
            check_failure(
                &format!("{n}: repeated targetingKey"),
                &body,
                key,
                "PARSE_ERROR",
            );
            let details = body["errorDetails"].as_str().unwrap_or("");
            assert!(
                details.contains(r#"duplicate key "targetingKey""#)
                    && details.contains("context.targetingKey"),
                "{n}: {body}"
            );
        }

        // 401: no credentials, or unknown ones (X-API-Key or Bearer).
        let response = server
            .http
            .post(server.at(&format!("{ONE}bool_on")))
            .json(&json!({"context": {}}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "{n}: no credentials");
        let response = server
            .http
            .post(server.at(&format!("{ONE}bool_on")))
            .header("x-api-key", "gdn_wrong")
            .json(&json!({"context": {}}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "{n}: unknown key");
        let response = post(&server, &format!("{ONE}bool_on"), "gdn_wrong", &json!({})).await;
        assert_eq!(response.status(), 401, "{n}: unknown bearer");

        // 403: a token of one environment asking for another.
        let response = server
            .http
            .post(server.at(&format!("{ONE}bool_on")))
            .header("x-api-key", &token)
            .header("x-guidon-environment", "development")
            .json(&json!({"context": {}}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{n}: another environment");
        server.stop().await;
    }
}

fn etag_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn bulk(
    server: &TestServer,
    token: &str,
    context: &Value,
    if_none_match: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .http
        .post(server.at(BULK))
        .header("x-api-key", token)
        .json(&json!({"context": context}));
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    request.send().await.expect("bulk request")
}

#[tokio::test]
async fn bulk_evaluation_and_etags() {
    for (db, server) in testing::servers("ofrep_bulk").await {
        let n = db.name;
        let token = setup(&server).await;
        let user = json!({"targetingKey": "user-456", "country": "CA"});

        let response = bulk(&server, &token, &user, None).await;
        assert_eq!(response.status(), 200, "{n}");
        let etag = etag_of(&response).expect("an ETag on a bulk success");
        let body = json_of(n, response).await;
        let flags = body["flags"].as_array().expect("flags array");
        assert_eq!(flags.len(), FLAG_COUNT, "{n}: every flag: {body}");
        let mut keys: Vec<&str> = Vec::new();
        for flag in flags {
            let key = flag["key"].as_str().expect("key");
            check_success(&format!("{n}: bulk {key}"), flag, key);
            keys.push(key);
        }
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), FLAG_COUNT, "{n}: keys are unique");
        if let Some(metadata) = body.get("metadata") {
            check_metadata(n, metadata);
        }
        // The bulk results are the single results.
        let by_key = |key: &str| {
            flags
                .iter()
                .find(|f| f["key"] == key)
                .cloned()
                .expect("flag in bulk")
        };
        assert_eq!(by_key("targeted")["reason"], "TARGETING_MATCH", "{n}");
        assert!(by_key("disabled_no_off").get("value").is_none(), "{n}");
        let single = evaluate_one(&server, &token, "split", user.clone()).await;
        assert_eq!(by_key("split"), single, "{n}: bulk and single agree");

        // The same request with If-None-Match: 304, no body.
        let response = bulk(&server, &token, &user, Some(&etag)).await;
        assert_eq!(response.status(), 304, "{n}: not modified");
        assert_eq!(etag_of(&response).as_deref(), Some(etag.as_str()), "{n}");
        let text = response.text().await.expect("304 body");
        assert!(text.is_empty(), "{n}: a 304 has no body: {text:?}");
        // An ETag among others matches too; a stale one does not.
        let list = format!("\"other\", {etag}");
        let response = bulk(&server, &token, &user, Some(&list)).await;
        assert_eq!(response.status(), 304, "{n}: ETag in a list");
        let response = bulk(&server, &token, &user, Some("\"0-stale\"")).await;
        assert_eq!(response.status(), 200, "{n}: unknown ETag");
        // The weak form of the ETag (as a compressing proxy passes it on)
        // matches too: If-None-Match compares weakly (RFC 9110 §13.1.2).
        let weak = format!("W/{etag}");
        let response = bulk(&server, &token, &user, Some(&weak)).await;
        assert_eq!(response.status(), 304, "{n}: a weak ETag");

        // Another context: another ETag (and the old one does not match).
        let other = json!({"targetingKey": "user-789", "country": "CA"});
        let response = bulk(&server, &token, &other, Some(&etag)).await;
        assert_eq!(response.status(), 200, "{n}: other context, old ETag");
        let other_etag = etag_of(&response).expect("ETag");
        assert_ne!(other_etag, etag, "{n}: another context, another ETag");
        let response = bulk(&server, &token, &user, None).await;
        assert_eq!(
            etag_of(&response).as_deref(),
            Some(etag.as_str()),
            "{n}: the same context and flags, the same ETag"
        );

        // A flag changes: the old ETag is stale, a new one comes.
        server
            .put_flag("production", json!({"key": "bool_on", "enabled": false}))
            .await;
        let response = bulk(&server, &token, &user, Some(&etag)).await;
        assert_eq!(response.status(), 200, "{n}: flags changed");
        let new_etag = etag_of(&response).expect("new ETag");
        assert_ne!(new_etag, etag, "{n}: a new ETag after a change");
        let body = json_of(n, response).await;
        let bool_on = body["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .find(|f| f["key"] == "bool_on")
            .cloned()
            .expect("bool_on");
        assert_eq!(bool_on["value"], false, "{n}: the change is served");
        assert_eq!(bool_on["reason"], "DISABLED", "{n}");
        let response = bulk(&server, &token, &user, Some(&new_etag)).await;
        assert_eq!(response.status(), 304, "{n}: the new ETag matches");
        server.stop().await;
    }
}

#[tokio::test]
async fn bulk_failures_have_no_key() {
    for (db, server) in testing::servers("ofrep_bulkfail").await {
        let n = db.name;
        let token = setup(&server).await;
        for (label, request) in [
            ("a string", json!({"context": "user-456"})),
            ("an array", json!({"context": []})),
            ("missing", json!({})),
        ] {
            let response = server
                .http
                .post(server.at(BULK))
                .header("x-api-key", &token)
                .json(&request)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{n}: {label}");
            assert!(etag_of(&response).is_none(), "{n}: no ETag on a failure");
            let body = json_of(n, response).await;
            check_failure(&format!("{n}: {label}"), &body, None, "INVALID_CONTEXT");
        }
        for (label, raw) in [("malformed", "{\"context\": {"), ("empty", "  ")] {
            let response = server
                .http
                .post(server.at(BULK))
                .header("x-api-key", &token)
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{n}: {label}");
            let body = json_of(n, response).await;
            check_failure(&format!("{n}: {label}"), &body, None, "PARSE_ERROR");
        }
        let response = server
            .http
            .post(server.at(BULK))
            .json(&json!({"context": {}}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "{n}: no credentials");
        let response = server
            .http
            .post(server.at(BULK))
            .header("x-api-key", &token)
            .header("x-guidon-environment", "development")
            .json(&json!({"context": {}}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{n}: another environment");
        server.stop().await;
    }
}

/// Results that read the clock change without a revision. Their ETag
/// names the window between two instants at which the clock can change a
/// result: it holds until the next one, and a new one comes after it.
#[tokio::test]
async fn clock_reading_flags_get_an_etag_until_their_next_boundary() {
    for (db, server) in testing::servers("ofrep_clock").await {
        let n = db.name;
        // A launch two seconds from now: off before, on after.
        let launch = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        let launch_rfc3339 = {
            let secs = launch
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            guidon_engine::Timestamp::from_second(i64::try_from(secs).expect("secs"))
                .expect("timestamp")
                .to_string()
        };
        server
            .put_flag(
                "development",
                json!({"key": "launch", "enabled": true,
                       "rules": [{"conditions": [{"attribute": "$now", "operator": "after", "values": [launch_rfc3339]}],
                                  "serve": {"enabled": true}}],
                       "rollout": {"percentage": 0}}),
            )
            .await;
        server
            .put_flag(
                "development",
                json!({"key": "office_hours", "enabled": true,
                       "rules": [{"conditions": [{"attribute": "$hour", "operator": "gte", "values": [9]}],
                                  "serve": {"enabled": true}}],
                       "rollout": {"percentage": 0}}),
            )
            .await;
        let token = server.sdk_token("dev", "development").await;
        let context = json!({"targetingKey": "u"});
        let value_of = |body: &Value, key: &str| {
            body["flags"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["key"] == key))
                .map(|f| f["value"].clone())
        };

        let response = bulk(&server, &token, &context, None).await;
        assert_eq!(response.status(), 200, "{n}");
        let before = etag_of(&response).expect("an ETag for clock-reading flags");
        let body = json_of(n, response).await;
        assert_eq!(value_of(&body, "launch"), Some(json!(false)), "{n}: {body}");
        let response = bulk(&server, &token, &context, Some(&before)).await;
        assert_eq!(response.status(), 304, "{n}: the same window");

        // Past the launch, the old ETag no longer matches and the flag is on.
        let wait = launch
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            + std::time::Duration::from_millis(100);
        tokio::time::sleep(wait).await;
        let response = bulk(&server, &token, &context, Some(&before)).await;
        assert_eq!(response.status(), 200, "{n}: the launch passed");
        let after = etag_of(&response).expect("ETag");
        assert_ne!(after, before, "{n}: a new window, a new ETag");
        let body = json_of(n, response).await;
        assert_eq!(value_of(&body, "launch"), Some(json!(true)), "{n}: {body}");
        // `$hour` still changes on the hour: the new ETag holds until then
        // (asked twice, in case an hour began in between).
        let mut matched = false;
        for _ in 0..2 {
            let response = bulk(&server, &token, &context, None).await;
            let etag = etag_of(&response).expect("ETag");
            if bulk(&server, &token, &context, Some(&etag)).await.status() == 304 {
                matched = true;
                break;
            }
        }
        assert!(matched, "{n}: an ETag within the hour matches");
        server.stop().await;
    }
}

/// An admin token naming an environment that does not exist: OFREP's
/// general error naming the environment, never a 404 (which OpenFeature
/// clients read as FLAG_NOT_FOUND).
#[tokio::test]
async fn an_unknown_environment_is_a_general_error_not_a_missing_flag() {
    for (db, server) in testing::servers("ofrep_unknown_env").await {
        let n = db.name;
        setup(&server).await;
        for (path, key) in [
            (format!("{ONE}bool_on"), Some("bool_on")),
            (BULK.to_owned(), None),
        ] {
            let response = server
                .admin(Method::POST, &path)
                .header("x-guidon-environment", "producton")
                .json(&json!({"context": {"targetingKey": "u"}}))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{n}: {path}");
            let body = json_of(n, response).await;
            assert_eq!(body["errorCode"], "GENERAL", "{n}: {body}");
            assert!(
                body["errorDetails"]
                    .as_str()
                    .is_some_and(|d| d.contains("producton")),
                "{n}: the details name the environment: {body}"
            );
            assert_eq!(body.get("key").and_then(Value::as_str), key, "{n}: {body}");
        }
        server.stop().await;
    }
}

/// An environment deleted and created again starts its revisions over: an
/// ETag of the old one must not match the new one's different flags.
#[tokio::test]
async fn an_etag_does_not_survive_recreating_the_environment() {
    for (db, server) in testing::servers("ofrep_recreate").await {
        let n = db.name;
        let create = server
            .admin(Method::POST, "/api/v1/envs")
            .json(&json!({"name": "qa"}))
            .send()
            .await
            .expect("create");
        assert_eq!(create.status(), 201, "{n}");
        server
            .put_flag("qa", json!({"key": "banner", "enabled": true}))
            .await;
        let ask = |etag: Option<String>| {
            let mut request = server
                .admin(Method::POST, BULK)
                .header("x-guidon-environment", "qa")
                .json(&json!({"context": {"targetingKey": "u"}}));
            if let Some(etag) = etag {
                request = request.header("if-none-match", etag);
            }
            request.send()
        };
        let response = ask(None).await.expect("bulk");
        let etag = etag_of(&response).expect("ETag");

        let delete = server
            .admin(Method::DELETE, "/api/v1/envs/qa?force=true")
            .send()
            .await
            .expect("delete");
        assert_eq!(delete.status(), 204, "{n}");
        let create = server
            .admin(Method::POST, "/api/v1/envs")
            .json(&json!({"name": "qa"}))
            .send()
            .await
            .expect("create again");
        assert_eq!(create.status(), 201, "{n}");
        server
            .put_flag("qa", json!({"key": "banner", "enabled": false}))
            .await;

        let response = ask(Some(etag.clone())).await.expect("bulk");
        assert_eq!(
            response.status(),
            200,
            "{n}: stale ETag {etag} matched different flags"
        );
        let body = json_of(n, response).await;
        assert_eq!(body["flags"][0]["value"], false, "{n}: {body}");
        server.stop().await;
    }
}

/// While large, deeply nested YAML bodies are being refused, evaluations
/// keep answering: the bodies are refused by the bound before YAML is
/// parsed, and a body over `BLOCKING_PARSE` is parsed off the async
/// workers. Two server workers, as on the 2-core machine where two such
/// bodies once held every evaluation for 18.8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_answer_while_deep_yaml_bodies_are_refused() {
    let db = testing::sqlite("ofrep_deep_yaml");
    let server = TestServer::start(&db.url).await;
    let token = setup(&server).await;
    // 1 MB: a key, then a million open brackets (quadratic for libyaml).
    let deep = "key: x\nenabled: ".to_owned() + &"[".repeat(1 << 20);
    let bodies: Vec<_> = (0..4)
        .map(|i| {
            let request = server
                .admin(
                    Method::PUT,
                    &format!("/api/v1/envs/production/flags/deep{i}"),
                )
                .header("content-type", "application/yaml")
                .body(deep.clone());
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    let mut answered = 0;
    while answered < 20 || bodies.iter().any(|b| !b.is_finished()) {
        let body = evaluate_one(&server, &token, "bool_on", json!({"targetingKey": "u"})).await;
        assert_eq!(body["value"], true, "{body}");
        answered += 1;
        assert!(answered < 100_000, "the deep bodies never finished");
    }
    for body in bodies {
        let response = body
            .await
            .expect("task")
            .expect("the deep body is answered");
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"], "invalid_body", "{error}");
        let message = error["message"].as_str().unwrap_or("");
        assert!(message.contains("deeper than 64 levels"), "{error}");
    }
    let response = server
        .admin(Method::GET, "/api/v1/envs/production/flags/deep0")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404, "nothing was stored");
    server.stop().await;
}
