//! Handler tests: the application as a `tower` service, without a listener,
//! one request at a time with `oneshot`, on every backend.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use guidon_server::testing;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Status, headers and body text of the answer to `request`.
async fn respond(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    )
}

/// Status, headers and body text of one request.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .expect("request");
    respond(app, request).await
}

fn json_body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-secret");

#[tokio::test]
async fn health_readiness_and_metrics() {
    for db in testing::databases("h_health").await {
        let n = db.name;
        let app = guidon_server::app(testing::config(&db.url))
            .await
            .expect("app");
        let (status, _, text) = call(&app, "GET", "/healthz", &[], None).await;
        assert_eq!(status, StatusCode::OK, "{n}");
        assert_eq!(json_body(&text), json!({"status": "ok"}), "{n}");

        // Ready once every environment is loaded, which app() does first.
        let (status, _, text) = call(&app, "GET", "/readyz", &[], None).await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let body = json_body(&text);
        assert_eq!(body["status"], "ready", "{n}: {body}");
        assert_eq!(body["database"], "ok", "{n}: {body}");
        assert_eq!(body["environments"], 2, "{n}: development and production");

        // A 404 to count as well.
        let (status, _, _) = call(&app, "GET", "/no-such-page", &[], None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{n}");

        // /metrics names every flag and environment: not without a token.
        let (status, _, text) = call(&app, "GET", "/metrics", &[], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{n}: {text}");
        let (status, headers, text) = call(&app, "GET", "/metrics", &[AUTH], None).await;
        assert_eq!(status, StatusCode::OK, "{n}");
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{n}: {content_type}"
        );
        assert!(text.contains("guidon_http_requests"), "{n}: {text}");
        // The requests above, by route and status.
        let healthz = text
            .lines()
            .find(|l| {
                l.starts_with("guidon_http_requests")
                    && l.contains("route=\"/healthz\"")
                    && l.contains("status=\"200\"")
            })
            .unwrap_or_else(|| panic!("{n}: no /healthz line in {text}"));
        assert!(healthz.ends_with(" 1"), "{n}: {healthz}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("guidon_http_requests") && l.contains("status=\"404\"")),
            "{n}: the 404 is counted: {text}"
        );
        assert!(
            text.trim_end().ends_with("# EOF"),
            "{n}: OpenMetrics ends with # EOF"
        );
    }
}

#[tokio::test]
async fn put_then_get_a_flag_with_versions_and_etags() {
    for db in testing::databases("h_flag").await {
        let n = db.name;
        let app = guidon_server::app(testing::config(&db.url))
            .await
            .expect("app");
        let uri = "/api/v1/envs/production/flags/new_checkout";
        let flag = json!({"key": "new_checkout", "enabled": true, "rollout": {"percentage": 25}});

        let (status, headers, text) = call(&app, "PUT", uri, &[AUTH], Some(flag.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {text}");
        assert_eq!(headers.get(header::ETAG).expect("ETag"), "\"1\"", "{n}");
        let body = json_body(&text);
        assert_eq!(body["version"], 1, "{n}: {body}");
        assert_eq!(body["revision"], 1, "{n}: {body}");
        assert_eq!(
            body["flag"]["rollout"]["percentage"].as_f64(),
            Some(25.0),
            "{n}: {body}"
        );

        let (status, headers, text) = call(&app, "GET", uri, &[AUTH], None).await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        assert_eq!(headers.get(header::ETAG).expect("ETag"), "\"1\"", "{n}");
        let body = json_body(&text);
        assert_eq!(body["version"], 1, "{n}");
        assert_eq!(body["flag"]["key"], "new_checkout", "{n}");
        assert_eq!(body["flag"]["enabled"], true, "{n}");

        // An update at the version read: 200 and version 2.
        let update = json!({"key": "new_checkout", "enabled": false});
        let (status, headers, text) = call(
            &app,
            "PUT",
            uri,
            &[AUTH, ("if-match", "\"1\"")],
            Some(update.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        assert_eq!(headers.get(header::ETAG).expect("ETag"), "\"2\"", "{n}");
        // The same If-Match again is stale now.
        let (status, _, text) =
            call(&app, "PUT", uri, &[AUTH, ("if-match", "1")], Some(update)).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{n}: {text}");
        assert_eq!(json_body(&text)["current_version"], 2, "{n}: {text}");

        let (status, headers, text) = call(&app, "GET", uri, &[AUTH], None).await;
        assert_eq!(status, StatusCode::OK, "{n}");
        assert_eq!(headers.get(header::ETAG).expect("ETag"), "\"2\"", "{n}");
        let body = json_body(&text);
        assert_eq!(body["version"], 2, "{n}: {body}");
        assert_eq!(body["revision"], 2, "{n}: {body}");
        assert_eq!(body["flag"]["enabled"], false, "{n}: {body}");
        assert!(
            body["flag"].get("rollout").is_none(),
            "{n}: replaced: {body}"
        );

        // Without a token: 401, nothing read.
        let (status, _, _) = call(&app, "GET", uri, &[], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{n}");
    }
}

/// `call` with a raw body and content type.
async fn call_raw(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .expect("request");
    respond(app, request).await
}

const MERGE_PATCH: &str = "application/merge-patch+json";

/// PATCH changes what the patch names and keeps everything else, which a
/// PUT `{"enabled": false}` would drop; a patch that changes nothing makes
/// no revision; concurrent patches of different fields all land.
#[tokio::test]
async fn patch_changes_only_what_it_names() {
    for db in testing::databases("h_patch").await {
        let n = db.name;
        let app = guidon_server::app(testing::config(&db.url))
            .await
            .expect("app");
        let uri = "/api/v1/envs/production/flags/checkout";
        let flag = json!({
            "key": "checkout", "enabled": true, "description": "new checkout",
            "rollout": {"percentage": 25},
            "rules": [{"name": "staff", "conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}], "serve": {"enabled": true}}]
        });
        let (status, _, text) = call(&app, "PUT", uri, &[AUTH], Some(flag)).await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {text}");

        let (status, headers, text) = call_raw(
            &app,
            "PATCH",
            uri,
            &[AUTH],
            MERGE_PATCH,
            r#"{"enabled": false}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        assert_eq!(headers.get(header::ETAG).expect("ETag"), "\"2\"", "{n}");
        let body = json_body(&text);
        assert_eq!(body["flag"]["enabled"], false, "{n}: {body}");
        assert_eq!(body["flag"]["rollout"]["percentage"], 25.0, "{n}: {body}");
        assert_eq!(body["flag"]["rules"][0]["name"], "staff", "{n}: {body}");
        assert_eq!(body["flag"]["description"], "new checkout", "{n}: {body}");
        assert_eq!(body["version"], 2, "{n}: {body}");
        assert!(body.get("unchanged").is_none(), "{n}: {body}");

        // The same patch again changes nothing: no new version or revision.
        let (status, headers, text) = call_raw(
            &app,
            "PATCH",
            uri,
            &[AUTH],
            "application/json",
            r#"{"enabled": false}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        assert_eq!(headers.get(header::ETAG).expect("ETag"), "\"2\"", "{n}");
        let body = json_body(&text);
        assert_eq!(body["unchanged"], true, "{n}: {body}");
        assert_eq!(body["version"], 2, "{n}: {body}");
        assert_eq!(body["revision"], 2, "{n}: {body}");

        // null removes a field; If-Match pins the version.
        let (status, _, text) = call_raw(
            &app,
            "PATCH",
            uri,
            &[AUTH, ("if-match", "\"2\"")],
            MERGE_PATCH,
            r#"{"rollout": null}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let body = json_body(&text);
        assert!(body["flag"].get("rollout").is_none(), "{n}: {body}");
        assert_eq!(body["flag"]["rules"][0]["name"], "staff", "{n}: {body}");
        assert_eq!(body["version"], 3, "{n}: {body}");

        // Three patches of different fields at once: each lands, none is
        // lost to another's read-modify-write.
        let patches = [
            r#"{"description": "raced"}"#,
            r#"{"rollout": {"percentage": 60}}"#,
            r#"{"enabled": true}"#,
        ];
        let answers = futures_util::future::join_all(
            patches
                .iter()
                .map(|patch| call_raw(&app, "PATCH", uri, &[AUTH], MERGE_PATCH, patch)),
        )
        .await;
        for (status, _, text) in &answers {
            assert_eq!(*status, StatusCode::OK, "{n}: {text}");
        }
        let (_, _, text) = call(&app, "GET", uri, &[AUTH], None).await;
        let body = json_body(&text);
        assert_eq!(body["flag"]["description"], "raced", "{n}: {body}");
        assert_eq!(body["flag"]["rollout"]["percentage"], 60.0, "{n}: {body}");
        assert_eq!(body["flag"]["enabled"], true, "{n}: {body}");
        assert_eq!(body["flag"]["rules"][0]["name"], "staff", "{n}: {body}");
        assert_eq!(body["version"], 6, "{n}: {body}");

        // Segments take patches too.
        let segment_uri = "/api/v1/envs/production/segments/staff";
        let segment = json!({"key": "staff", "description": "people", "included": ["u1", "u2"]});
        let (status, _, text) = call(&app, "PUT", segment_uri, &[AUTH], Some(segment)).await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {text}");
        let (status, _, text) = call_raw(
            &app,
            "PATCH",
            segment_uri,
            &[AUTH],
            MERGE_PATCH,
            r#"{"description": "staff only"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let body = json_body(&text);
        assert_eq!(body["segment"]["description"], "staff only", "{n}: {body}");
        assert_eq!(
            body["segment"]["included"],
            json!(["u1", "u2"]),
            "{n}: {body}"
        );
    }
}

/// The keys of flag-format.md §7's result object, exactly.
fn check_result_shape(label: &str, result: &Value) {
    let mut keys: Vec<&str> = result
        .as_object()
        .unwrap_or_else(|| panic!("{label}: not an object: {result}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "enabled",
            "error_code",
            "flag",
            "flag_version",
            "metadata",
            "reason",
            "value",
            "variant"
        ],
        "{label}: {result}"
    );
    assert!(result["metadata"].is_object(), "{label}: {result}");
}

#[tokio::test]
async fn evaluate_returns_the_result_object() {
    for db in testing::databases("h_eval").await {
        let n = db.name;
        let app = guidon_server::app(testing::config(&db.url))
            .await
            .expect("app");
        let flag = json!({
            "key": "new_checkout", "enabled": true, "off_variant": "control",
            "variants": [
                {"key": "control", "weight": 50, "enabled": false, "value": {"layout": "classic"}},
                {"key": "treatment", "weight": 50, "value": {"layout": "single_page"}}
            ],
            "targets": [{"values": ["user_42"], "serve": {"enabled": true, "variant": "treatment"}}]
        });
        let (status, _, text) = call(
            &app,
            "PUT",
            "/api/v1/envs/production/flags/new_checkout",
            &[AUTH],
            Some(flag),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {text}");
        let evaluate = "/api/v1/envs/production/evaluate";

        // One flag: §7's object, with the stored version.
        let request = json!({"flag": "new_checkout", "context": {"user_id": "user_42"}});
        let (status, _, text) = call(&app, "POST", evaluate, &[AUTH], Some(request)).await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let result = json_body(&text);
        check_result_shape(n, &result);
        assert_eq!(
            result,
            json!({"flag": "new_checkout", "enabled": true, "variant": "treatment",
                   "value": {"layout": "single_page"}, "reason": "TARGETING_MATCH",
                   "error_code": null, "flag_version": 1, "metadata": {"target": true}}),
            "{n}"
        );

        // An unknown flag is a result too, not an HTTP error.
        let request = json!({"flag": "nope", "context": {"user_id": "user_42"}});
        let (status, _, text) = call(&app, "POST", evaluate, &[AUTH], Some(request)).await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let result = json_body(&text);
        check_result_shape(n, &result);
        assert_eq!(result["error_code"], "FLAG_NOT_FOUND", "{n}: {result}");
        assert_eq!(result["reason"], "ERROR", "{n}: {result}");
        assert_eq!(result["enabled"], false, "{n}: {result}");
        assert_eq!(result["value"], Value::Null, "{n}: {result}");

        // Every flag: the revision and one result object each.
        let request = json!({"context": {"user_id": "user_7"}});
        let (status, _, text) = call(&app, "POST", evaluate, &[AUTH], Some(request)).await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let body = json_body(&text);
        assert_eq!(body["revision"], 1, "{n}: {body}");
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "{n}: {body}");
        check_result_shape(n, &results[0]);
        assert_eq!(results[0]["reason"], "SPLIT", "{n}: {body}");

        // explain adds the explanation to the same object.
        let request =
            json!({"flag": "new_checkout", "context": {"user_id": "user_7"}, "explain": true});
        let (status, _, text) = call(&app, "POST", evaluate, &[AUTH], Some(request)).await;
        assert_eq!(status, StatusCode::OK, "{n}: {text}");
        let mut result = json_body(&text);
        let explanation = result
            .as_object_mut()
            .and_then(|o| o.remove("explanation"))
            .expect("explanation");
        assert!(!explanation.is_null(), "{n}");
        check_result_shape(n, &result);
        assert_eq!(result, results[0], "{n}: explain agrees with evaluate");
    }
}

/// Every path the server routes, read from its source (`.route("…"`):
/// a route added without documenting it fails the OpenAPI test below.
fn routed_paths() -> std::collections::BTreeSet<String> {
    fn walk(dir: &std::path::Path, paths: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("src readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, paths);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source readable");
                for piece in text.split(".route(").skip(1) {
                    let piece = piece.trim_start();
                    if let Some(rest) = piece.strip_prefix('"')
                        && let Some(end) = rest.find('"')
                    {
                        paths.insert(rest[..end].to_owned());
                    }
                }
            }
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut paths,
    );
    paths
}

/// The OpenAPI document is served without a token; it lists every routed
/// path (ops and experiments included), and every operation it lists is
/// routed: asking each one without a token reaches the handler's
/// authentication (401), or for a public one its answer, never the
/// fallback's 404 or 405. Every JSON answer has a schema of its own, not a
/// bare `Object`.
#[tokio::test]
async fn the_openapi_document_lists_every_route_with_real_schemas() {
    let routed = routed_paths();
    assert!(routed.len() >= 20, "{routed:?}");
    for db in testing::databases("openapi").await {
        let n = db.name;
        let app = guidon_server::app(testing::config(&db.url))
            .await
            .expect("app");
        let response = app
            .clone()
            .oneshot(
                Request::get("/api/v1/openapi.json")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), 200, "{n}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let doc: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0", "{n}");
        let paths = doc["paths"].as_object().expect("paths");
        for path in &routed {
            assert!(
                paths.contains_key(path),
                "{n}: {path} is routed but not documented"
            );
        }
        let mut operations = 0;
        for (path, item) in paths {
            let concrete = path
                .replace("{env}", "production")
                .replace("{key}", "some_key")
                .replace("{flag}", "some_flag")
                .replace("{name}", "some_token");
            for (method, operation) in item.as_object().expect("path item") {
                let public = operation["security"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
                });
                let http_method = axum::http::Method::from_bytes(method.to_uppercase().as_bytes())
                    .expect("an HTTP method");
                let response = app
                    .clone()
                    .oneshot(
                        Request::builder()
                            .method(http_method.clone())
                            .uri(&concrete)
                            .body(Body::empty())
                            .expect("request"),
                    )
                    .await
                    .expect("response");
                if public {
                    assert!(
                        response.status() != 404 && response.status() != 405,
                        "{n}: {method} {path} is documented but not routed"
                    );
                } else {
                    assert_eq!(
                        response.status(),
                        401,
                        "{n}: {method} {path} is documented but not routed (or not authenticated)"
                    );
                }
                for (status, answer) in operation["responses"].as_object().expect("responses") {
                    let Some(schema) = answer["content"]["application/json"].get("schema") else {
                        continue;
                    };
                    let bare = schema.get("$ref").is_none()
                        && schema.get("properties").is_none()
                        && schema.get("oneOf").is_none()
                        && schema.get("type") == Some(&json!("object"));
                    assert!(
                        !bare || path == "/api/v1/openapi.json",
                        "{n}: {method} {path} {status} answers a bare Object: {schema}"
                    );
                }
                operations += 1;
            }
        }
        assert!(operations >= 34, "{n}: {operations} operations");
    }
}
