//! Bad requests against a real server, every backend: each answers with the
//! exact status and a JSON body `{"error": CODE, "message": TEXT, …}` that
//! names what was wrong, and a refused write stores nothing (the whole
//! state, every environment's revision and flags and the tokens, is the
//! same before and after).

use guidon_server::Config;
use guidon_server::testing::{self, ADMIN, TestServer};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// One bad request and what it must be answered with.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    /// `None`: no credentials at all.
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
    /// Substrings the message must contain (it names the problem).
    mentions: Vec<String>,
    /// The `path` field the body must name, when there is one.
    field: Option<&'static str>,
    /// The body must have no `path` (the problem is the body as a whole).
    no_path: bool,
    /// A response header that must be present, and a value it must contain.
    response_header: Option<(&'static str, &'static str)>,
}

fn case(name: &'static str, method: Method, path: impl Into<String>) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        token: Some(ADMIN.to_owned()),
        headers: Vec::new(),
        body: None,
        status: 0,
        code: "",
        mentions: Vec::new(),
        field: None,
        no_path: false,
        response_header: None,
    }
}

impl Case {
    fn json(mut self, body: Value) -> Case {
        self.body = Some(body.to_string().into_bytes());
        self.headers
            .push(("content-type", "application/json".to_owned()));
        self
    }

    fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Case {
        self.body = Some(body.into());
        self.headers.push(("content-type", content_type.to_owned()));
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn token(mut self, token: &str) -> Case {
        self.token = Some(token.to_owned());
        self
    }

    /// Sends no `Authorization` of its own (headers may still carry one).
    fn anonymous(mut self) -> Case {
        self.token = None;
        self
    }

    fn expect(mut self, status: u16, code: &'static str, mentions: &[&str]) -> Case {
        self.status = status;
        self.code = code;
        self.mentions = mentions.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    fn field(mut self, field: &'static str) -> Case {
        self.field = Some(field);
        self
    }

    fn no_path(mut self) -> Case {
        self.no_path = true;
        self
    }

    fn with_response_header(mut self, name: &'static str, contains: &'static str) -> Case {
        self.response_header = Some((name, contains));
        self
    }
}

/// A response: status, headers and JSON body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// Sends the case's request; the status and the body, or why the body is
/// not a JSON object.
async fn try_send(server: &TestServer, case: &Case) -> Result<Answer, String> {
    let mut request = server
        .http
        .request(case.method.clone(), server.at(&case.path));
    if let Some(token) = &case.token {
        request = request.bearer_auth(token);
    }
    for (name, value) in &case.headers {
        request = request.header(*name, value);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let response = request.send().await.expect("request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("response body");
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "{status} answered with content type {content_type:?}, not JSON: {text:?}"
        ));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(body) if body.is_object() => Ok(Answer {
            status,
            headers,
            body,
        }),
        Ok(_) => Err(format!("{status}: body is not an object: {text:?}")),
        Err(e) => Err(format!("{status}: body is not JSON ({e}): {text:?}")),
    }
}

/// Sends the case's request; the answer, whose body is JSON.
async fn send(server: &TestServer, case: &Case) -> Answer {
    try_send(server, case)
        .await
        .unwrap_or_else(|problem| panic!("{}: {problem}", case.name))
}

/// Checks an error body: `error` is `code`, `message` names the problem;
/// what is wrong, if anything.
fn error_problem(answer: &Answer, case: &Case) -> Option<String> {
    let (status, body) = (answer.status, &answer.body);
    if status != case.status {
        return Some(format!(
            "status {status}, expected {}; body {body}",
            case.status
        ));
    }
    if body["error"].as_str() != Some(case.code) {
        return Some(format!("error code is not {:?}: {body}", case.code));
    }
    let Some(message) = body["message"].as_str().filter(|m| !m.is_empty()) else {
        return Some(format!("no message: {body}"));
    };
    if let Some(needle) = case.mentions.iter().find(|m| !message.contains(m.as_str())) {
        return Some(format!("message {message:?} does not mention {needle:?}"));
    }
    if let Some(field) = case.field
        && body["path"].as_str() != Some(field)
    {
        return Some(format!("path is not {field:?}: {body}"));
    }
    if case.no_path && body.get("path").is_some() {
        return Some(format!("a path for the whole body: {body}"));
    }
    if let Some((name, contains)) = case.response_header {
        let value = answer.headers.get(name).and_then(|v| v.to_str().ok());
        if !value.is_some_and(|v| v.contains(contains)) {
            return Some(format!(
                "header {name} is {value:?}, expected {contains:?} in it"
            ));
        }
    }
    None
}

fn check_error(label: &str, answer: &Answer, case: &Case) {
    if let Some(problem) = error_problem(answer, case) {
        panic!("{label}: {}: {problem}", case.name);
    }
}

/// Everything a write could change: each environment's revision and
/// exported flags and segments, and the tokens (without their last use).
async fn fingerprint(server: &TestServer) -> Value {
    let envs: Value = server
        .admin(Method::GET, "/api/v1/envs")
        .send()
        .await
        .expect("GET envs")
        .json()
        .await
        .expect("envs JSON");
    let mut out = Map::new();
    for env in envs["environments"].as_array().expect("environments") {
        let name = env["name"].as_str().expect("env name");
        let response = server
            .admin(Method::GET, &format!("/api/v1/envs/{name}/flags"))
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), 200, "export {name}");
        let file: Value = response.json().await.expect("export JSON");
        out.insert(
            name.to_owned(),
            json!({"revision": env["revision"], "file": file}),
        );
    }
    let tokens: Value = server
        .admin(Method::GET, "/api/v1/tokens")
        .send()
        .await
        .expect("GET tokens")
        .json()
        .await
        .expect("tokens JSON");
    let tokens: Vec<Value> = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| json!([t["name"], t["role"], t["env"], t["revoked"]]))
        .collect();
    json!({"envs": out, "tokens": tokens})
}

async fn status_of(server: &TestServer, method: Method, path: &str) -> u16 {
    server
        .admin(method, path)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

const GATED: &str = r#"{"key": "gated", "enabled": true,
    "rules": [{"conditions": [{"operator": "in_segment", "values": ["beta"]}], "serve": {"enabled": true}}],
    "rollout": {"percentage": 0}}"#;

/// production: segment `beta` (used by flag `gated`) and flag `checkout`
/// at version 1; development: empty. An sdk token `svc` for production.
async fn fixture(server: &TestServer) -> String {
    let response = server
        .admin(Method::PUT, "/api/v1/envs/production/segments/beta")
        .json(&json!({"key": "beta", "included": ["u1"]}))
        .send()
        .await
        .expect("PUT segment");
    assert_eq!(response.status(), 201, "segment created");
    server
        .put_flag("production", json!({"key": "checkout", "enabled": true}))
        .await;
    let gated: Value = serde_json::from_str(GATED).expect("gated flag");
    server.put_flag("production", gated).await;
    server.sdk_token("svc", "production").await
}

fn context_of(n: usize) -> Value {
    let map: Map<String, Value> = (0..n).map(|i| (format!("a{i}"), json!(i))).collect();
    Value::Object(map)
}

fn cases(sdk: &str) -> Vec<Case> {
    let flag = "/api/v1/envs/production/flags";
    let eval = "/api/v1/envs/production/evaluate";
    let long_key = "k".repeat(129);
    vec![
        // ---- bodies ----
        case("malformed JSON", Method::PUT, format!("{flag}/fresh"))
            .raw("application/json", r#"{"key": "fresh", "enabled": tru"#)
            .expect(400, "invalid_body", &["EOF", "line 1 column 31"]),
        case("empty body", Method::PUT, format!("{flag}/fresh"))
            .raw("application/json", "")
            .expect(400, "invalid_body", &["empty"])
            .no_path(),
        case("trailing garbage after the JSON", Method::PUT, format!("{flag}/fresh"))
            .raw("application/json", r#"{"key": "fresh", "enabled": true} {}"#)
            .expect(400, "invalid_body", &["JSON", "trailing"]),
        case("body is an array", Method::PUT, format!("{flag}/fresh"))
            .json(json!([{"key": "fresh", "enabled": true}]))
            .expect(400, "invalid_body", &["object"]),
        case("bulk PUT of an empty JSON array", Method::PUT, flag)
            .json(json!([]))
            .expect(400, "invalid_body", &["object"])
            .no_path(),
        case("environment as a positional array", Method::POST, "/api/v1/envs")
            .json(json!(["qa"]))
            .expect(400, "invalid_body", &["object"]),
        case("revert with a positional array", Method::POST, format!("{flag}/checkout/revert"))
            .json(json!([1]))
            .expect(400, "invalid_body", &["object"]),
        case("text/plain body", Method::PUT, format!("{flag}/fresh"))
            .raw("text/plain", r#"{"key": "fresh", "enabled": true}"#)
            .expect(415, "unsupported_media_type", &["text/plain", "application/json"]),
        case("form body", Method::PUT, format!("{flag}/fresh"))
            .raw("application/x-www-form-urlencoded", "key=fresh&enabled=true")
            .expect(415, "unsupported_media_type", &["application/x-www-form-urlencoded"]),
        case("form body on evaluate", Method::POST, eval)
            .raw("application/x-www-form-urlencoded", "flag=checkout")
            .expect(415, "unsupported_media_type", &["application/json"]),
        case("text/plain token creation", Method::POST, "/api/v1/tokens")
            .raw("text/plain", r#"{"name": "t", "role": "admin"}"#)
            .expect(415, "unsupported_media_type", &["text/plain"]),
        // ---- flags ----
        case("unknown environment", Method::PUT, "/api/v1/envs/nope/flags/fresh")
            .json(json!({"key": "fresh", "enabled": true}))
            .expect(404, "not_found", &["nope"]),
        case("unknown segment in a rule", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": true, "rules": [
                {"conditions": [{"operator": "in_segment", "values": ["ghosts"]}], "serve": {"enabled": true}}
            ]}))
            .expect(422, "validation_failed", &["ghosts"]),
        case("rollout percentage 150", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": true, "rollout": {"percentage": 150}}))
            .expect(422, "validation_failed", &["percentage"]),
        case("rollout percentage -1", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": true, "rollout": {"percentage": -1}}))
            .expect(422, "validation_failed", &["percentage"]),
        case("weights sum to 90", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": true, "variants": [
                {"key": "a", "weight": 40}, {"key": "b", "weight": 50}
            ]}))
            .expect(422, "validation_failed", &["100"]),
        case("unknown field at the top", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": true, "colour": "red"}))
            .expect(400, "invalid_body", &["colour"]),
        case("unknown field in a serve", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": true, "rules": [
                {"conditions": [], "serve": {"enabled": true, "varaint": "a"}}
            ]}))
            .expect(400, "invalid_body", &["varaint", "rules[0].serve"])
            .field("rules[0].serve.varaint"),
        case("wrong type for enabled", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh", "enabled": "yes"}))
            .expect(400, "invalid_body", &["enabled"])
            .field("enabled"),
        case("enabled missing", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "fresh"}))
            .expect(400, "invalid_body", &["missing field `enabled`"])
            .no_path(),
        case("body key is not the path key", Method::PUT, format!("{flag}/fresh"))
            .json(json!({"key": "other", "enabled": true}))
            .expect(400, "invalid_body", &["other", "fresh"])
            .field("key"),
        case("If-Match names another version", Method::PUT, format!("{flag}/checkout"))
            .json(json!({"key": "checkout", "enabled": false}))
            .header("if-match", "\"7\"")
            .expect(412, "version_mismatch", &["7", "1"]),
        case("If-Match is not a number", Method::PUT, format!("{flag}/checkout"))
            .json(json!({"key": "checkout", "enabled": false}))
            .header("if-match", "W/\"abc\"")
            .expect(400, "bad_request", &["If-Match"]),
        case("If-None-Match: * on an existing flag", Method::PUT, format!("{flag}/checkout"))
            .json(json!({"key": "checkout", "enabled": false}))
            .header("if-none-match", "*")
            .expect(412, "version_mismatch", &["flag \"checkout\" already exists (version 1)"]),
        // ---- PATCH (JSON merge patch) ----
        case("PATCH making the flag invalid", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"rollout": {"percentage": 150}}"#)
            .expect(422, "validation_failed", &["percentage"]),
        case("PATCH removing a required field", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"enabled": null}"#)
            .expect(400, "invalid_body", &["missing field `enabled`"]),
        case("PATCH with a wrong type", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"enabled": "yes"}"#)
            .expect(400, "invalid_body", &["enabled"])
            .field("enabled"),
        case("PATCH renaming the key", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"key": "other"}"#)
            .expect(400, "invalid_body", &["other", "checkout"])
            .field("key"),
        case("PATCH that is not an object", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"[{"enabled": false}]"#)
            .expect(400, "invalid_body", &["object"])
            .no_path(),
        // ---- repeated keys and depth: refused, never read as the last ----
        case("PUT repeating enabled", Method::PUT, format!("{flag}/fresh"))
            .raw("application/json", r#"{"key": "fresh", "enabled": false, "enabled": true}"#)
            .expect(400, "invalid_body", &[r#"duplicate key "enabled""#, "top level"])
            .field("enabled"),
        case("PUT repeating a rollout percentage", Method::PUT, format!("{flag}/fresh"))
            .raw(
                "application/json",
                r#"{"key": "fresh", "enabled": true, "rollout": {"percentage": 0, "percentage": 100}}"#,
            )
            .expect(400, "invalid_body", &[r#"duplicate key "percentage""#, "rollout"])
            .field("rollout.percentage"),
        case("PATCH repeating enabled", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"enabled": false, "enabled": true}"#)
            .expect(400, "invalid_body", &[r#"duplicate key "enabled""#])
            .field("enabled"),
        case("YAML PUT repeating a key", Method::PUT, format!("{flag}/fresh"))
            .raw("application/yaml", "key: fresh\nenabled: false\nenabled: true\n")
            .expect(400, "invalid_body", &[r#"duplicate key "enabled""#])
            .field("enabled"),
        case("bulk YAML PUT repeating a key in a flag", Method::PUT, flag)
            .raw(
                "application/yaml",
                "flags:\n  - key: a\n    enabled: false\n    enabled: true\n",
            )
            .expect(400, "invalid_body", &[r#"duplicate key "enabled""#, "flags[0]"])
            .field("flags[0].enabled"),
        case("segment repeating its list", Method::PUT, "/api/v1/envs/production/segments/beta")
            .raw("application/json", r#"{"key": "beta", "included": ["u1"], "included": ["u2"]}"#)
            .expect(400, "invalid_body", &[r#"duplicate key "included""#])
            .field("included"),
        case("evaluation context repeating targetingKey", Method::POST, eval)
            .raw(
                "application/json",
                r#"{"flag": "checkout", "context": {"targetingKey": "a", "targetingKey": "b"}}"#,
            )
            .expect(400, "invalid_body", &[r#"duplicate key "targetingKey""#])
            .field("context.targetingKey"),
        case("YAML nested 60,000 deep", Method::PUT, format!("{flag}/fresh"))
            .raw("application/yaml", "key: ".to_owned() + &"[".repeat(60_000))
            .expect(400, "invalid_body", &["deeper than 64 levels"]),
        case("bulk YAML nested 60,000 deep in blocks", Method::PUT, flag)
            .raw("application/yaml", "- ".repeat(60_000) + "x\n")
            .expect(400, "invalid_body", &["deeper than 64 levels"]),
        case("JSON nested 100 deep", Method::PUT, format!("{flag}/fresh"))
            .raw(
                "application/json",
                format!(r#"{{"key": "fresh", "x": {}{}}}"#, "[".repeat(100), "]".repeat(100)),
            )
            .expect(400, "invalid_body", &["deeper than 64 levels"]),
        case("PATCH as YAML", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/yaml", "enabled: false\n")
            .expect(415, "unsupported_media_type", &["application/merge-patch+json"]),
        case("PATCH on an unknown flag", Method::PATCH, format!("{flag}/nope"))
            .raw("application/merge-patch+json", r#"{"enabled": false}"#)
            .expect(404, "not_found", &["nope"]),
        case("PATCH with a stale If-Match", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"enabled": false}"#)
            .header("if-match", "9")
            .expect(412, "version_mismatch", &["9", "1"]),
        case("PATCH with an sdk token", Method::PATCH, format!("{flag}/checkout"))
            .raw("application/merge-patch+json", r#"{"enabled": false}"#)
            .token(sdk)
            .expect(403, "forbidden", &[]),
        case("wrong If-Match on delete", Method::DELETE, format!("{flag}/checkout"))
            .header("if-match", "3")
            .expect(412, "version_mismatch", &["3"]),
        // ---- keys in paths ----
        case("path traversal in a flag key", Method::GET, format!("{flag}/..%2F..%2Fetc"))
            .expect(400, "bad_request", &["../../etc"]),
        case("path traversal in a PUT", Method::PUT, format!("{flag}/..%2Fsecrets"))
            .json(json!({"enabled": true}))
            .expect(400, "bad_request", &["../secrets"]),
        case("space in a key", Method::PUT, format!("{flag}/a%20b"))
            .json(json!({"key": "a b", "enabled": true}))
            .expect(400, "bad_request", &["a b"]),
        case("key over 128 characters", Method::PUT, format!("{flag}/{long_key}"))
            .json(json!({"key": long_key, "enabled": true}))
            .expect(400, "bad_request", &["invalid flag"]),
        case("path traversal in an environment", Method::GET, "/api/v1/envs/..%2Fproduction/flags")
            .expect(400, "bad_request", &["environment"]),
        case("key that is not UTF-8", Method::GET, format!("{flag}/%FF%FE"))
            .expect(400, "bad_request", &["UTF-8"]),
        case("environment that is not UTF-8", Method::DELETE, "/api/v1/envs/%C0")
            .expect(400, "bad_request", &["UTF-8"]),
        // ---- deletes, segments, revert, promote ----
        case("delete a missing flag", Method::DELETE, format!("{flag}/ghost"))
            .expect(404, "not_found", &["ghost"]),
        case("get a missing flag", Method::GET, format!("{flag}/ghost"))
            .expect(404, "not_found", &["ghost"]),
        case("delete a segment a flag uses", Method::DELETE, "/api/v1/envs/production/segments/beta")
            .expect(422, "validation_failed", &["beta"]),
        case("unknown field in a segment", Method::PUT, "/api/v1/envs/production/segments/fresh")
            .json(json!({"key": "fresh", "include": ["u1"]}))
            .expect(400, "invalid_body", &["include"]),
        case("revert to a missing version", Method::POST, format!("{flag}/checkout/revert"))
            .json(json!({"version": 9}))
            .expect(404, "not_found", &["9"]),
        case("revert a missing flag", Method::POST, format!("{flag}/ghost/revert"))
            .json(json!({"version": 1}))
            .expect(404, "not_found", &["ghost"]),
        case("revert with a string version", Method::POST, format!("{flag}/checkout/revert"))
            .json(json!({"version": "1"}))
            .expect(400, "invalid_body", &["version"])
            .field("version"),
        case("promote to an unknown environment", Method::POST, format!("{flag}/checkout/promote"))
            .json(json!({"to": "nowhere"}))
            .expect(404, "not_found", &["nowhere"]),
        // ---- routes ----
        case("unknown route", Method::GET, "/api/v1/nothing-here")
            .expect(404, "not_found", &["endpoint"]),
        case("unknown route without a token", Method::POST, "/api/v2/envs")
            .anonymous()
            .json(json!({"name": "x"}))
            .expect(404, "not_found", &["endpoint"]),
        case("wrong method", Method::POST, format!("{flag}/checkout"))
            .json(json!({"enabled": false}))
            .expect(405, "method_not_allowed", &["method"])
            .with_response_header("allow", "PUT"),
        case("wrong method on tokens", Method::PUT, "/api/v1/tokens")
            .json(json!({"name": "x", "role": "admin"}))
            .expect(405, "method_not_allowed", &["method"])
            .with_response_header("allow", "POST"),
        case("GET on OFREP", Method::GET, "/ofrep/v1/evaluate/flags/checkout")
            .header("x-guidon-environment", "production")
            .expect(405, "method_not_allowed", &["method"])
            .with_response_header("allow", "POST"),
        // ---- queries ----
        case("audit limit=0", Method::GET, "/api/v1/envs/production/audit?limit=0")
            .expect(400, "bad_request", &["limit", "0"]),
        case("audit limit=1000", Method::GET, "/api/v1/envs/production/audit?limit=1000")
            .expect(400, "bad_request", &["limit", "1000"]),
        case("audit limit=abc", Method::GET, "/api/v1/envs/production/audit?limit=abc")
            .expect(400, "bad_request", &["limit"]),
        case("audit with an unknown parameter", Method::GET, "/api/v1/envs/production/audit?colour=red")
            .expect(400, "bad_request", &["colour"]),
        case("changes?since=abc", Method::GET, "/api/v1/sdk/changes?since=abc")
            .token(sdk)
            .expect(400, "bad_request", &["since"]),
        case("changes without since", Method::GET, "/api/v1/sdk/changes")
            .token(sdk)
            .expect(400, "bad_request", &["since"]),
        // ---- environments ----
        case("create an environment with an invalid name", Method::POST, "/api/v1/envs")
            .json(json!({"name": "bad name!"}))
            .expect(400, "bad_request", &["bad name!"]),
        case("create an environment with an empty name", Method::POST, "/api/v1/envs")
            .json(json!({"name": ""}))
            .expect(400, "bad_request", &["environment"]),
        case("create an environment without a name", Method::POST, "/api/v1/envs")
            .json(json!({"title": "qa"}))
            .expect(400, "invalid_body", &["title"]),
        case("create an existing environment", Method::POST, "/api/v1/envs")
            .json(json!({"name": "production"}))
            .expect(409, "conflict", &["production", "exists"]),
        case("delete a non-empty environment", Method::DELETE, "/api/v1/envs/production")
            .expect(409, "conflict", &["production", "force"]),
        case("delete a non-empty environment, force=maybe", Method::DELETE, "/api/v1/envs/production?force=maybe")
            .expect(400, "bad_request", &["force"]),
        case("delete an unknown environment", Method::DELETE, "/api/v1/envs/nope")
            .expect(404, "not_found", &["nope"]),
        case("get an unknown environment", Method::GET, "/api/v1/envs/nope")
            .expect(404, "not_found", &["nope"]),
        // ---- bulk ----
        case("bulk PUT of an invalid file", Method::PUT, flag)
            .json(json!({"flags": [
                {"key": "fresh", "enabled": true},
                {"key": "split", "enabled": true, "variants": [{"key": "a", "weight": 99.5}]}
            ]}))
            .expect(422, "validation_failed", &["100"]),
        case("bulk PUT of malformed YAML", Method::PUT, flag)
            .raw("application/yaml", "flags:\n  - key: fresh\n    enabled: [true\n")
            .expect(400, "invalid_body", &["flags"]),
        case("bulk PUT of YAML with an unknown field", Method::PUT, flag)
            .raw("application/yaml", "flags:\n  - key: fresh\n    enabled: true\n    owner: me\n")
            .expect(400, "invalid_body", &["owner"])
            .field("flags[0].owner"),
        case("bulk PUT of text/csv", Method::PUT, flag)
            .raw("text/csv", "key,enabled\nfresh,true\n")
            .expect(415, "unsupported_media_type", &["application/yaml"]),
        // ---- evaluation ----
        case("context is a string", Method::POST, eval)
            .json(json!({"flag": "checkout", "context": "user_1"}))
            .expect(400, "invalid_body", &["context", "a string"])
            .field("context"),
        case("context is an array", Method::POST, eval)
            .json(json!({"flag": "checkout", "context": [1, 2]}))
            .expect(400, "invalid_body", &["context", "an array"])
            .field("context"),
        case("context is a number", Method::POST, eval)
            .json(json!({"context": 42}))
            .expect(400, "invalid_body", &["context", "a number"])
            .field("context"),
        case("context has 257 attributes", Method::POST, eval)
            .json(json!({"flag": "checkout", "context": context_of(257)}))
            .expect(400, "invalid_body", &["257", "256"])
            .field("context"),
        case("explain without a flag", Method::POST, eval)
            .json(json!({"context": {"user_id": "u1"}, "explain": true}))
            .expect(400, "invalid_body", &["explain", "flag"])
            .field("explain"),
        case("unknown field in an evaluation", Method::POST, eval)
            .json(json!({"flag": "checkout", "contxt": {}}))
            .expect(400, "invalid_body", &["contxt"]),
        case("evaluate in an unknown environment", Method::POST, "/api/v1/envs/nope/evaluate")
            .json(json!({"flag": "checkout", "context": {}}))
            .expect(404, "not_found", &["nope"]),
        // ---- tokens ----
        case("sdk token without an environment", Method::POST, "/api/v1/tokens")
            .json(json!({"name": "t1", "role": "sdk"}))
            .expect(400, "bad_request", &["environment"]),
        case("sdk token for an unknown environment", Method::POST, "/api/v1/tokens")
            .json(json!({"name": "t1", "role": "sdk", "env": "nope"}))
            .expect(404, "not_found", &["nope"]),
        case("admin token scoped to an environment", Method::POST, "/api/v1/tokens")
            .json(json!({"name": "t1", "role": "admin", "env": "production"}))
            .expect(400, "bad_request", &["admin"]),
        case("token with an unknown role", Method::POST, "/api/v1/tokens")
            .json(json!({"name": "t1", "role": "root"}))
            .expect(400, "invalid_body", &["root"])
            .field("role"),
        case("duplicate token name", Method::POST, "/api/v1/tokens")
            .json(json!({"name": "svc", "role": "sdk", "env": "development"}))
            .expect(409, "conflict", &["svc"]),
        case("revoke an unknown token", Method::DELETE, "/api/v1/tokens/ghost")
            .expect(404, "not_found", &["ghost"]),
    ]
}

/// A 422's `details`: a non-empty list of `{path, message}`.
fn details_problem(body: &Value) -> Option<String> {
    let details = body["details"].as_array().filter(|d| !d.is_empty());
    let Some(details) = details else {
        return Some(format!("no details: {body}"));
    };
    details
        .iter()
        .find(|d| {
            !(d["path"].as_str().is_some_and(|p| !p.is_empty())
                && d["message"].as_str().is_some_and(|m| !m.is_empty()))
        })
        .map(|d| format!("detail without path or message: {d}"))
}

#[tokio::test]
async fn bad_requests_answer_json_errors_and_store_nothing() {
    for (db, server) in testing::servers("errors").await {
        let n = db.name;
        let sdk = fixture(&server).await;
        let cases = cases(&sdk);
        assert!(cases.len() >= 35, "{} cases", cases.len());
        let mut failures = Vec::new();
        for case in &cases {
            let before = fingerprint(&server).await;
            let answer = match try_send(&server, case).await {
                Ok(answer) => answer,
                Err(problem) => {
                    failures.push(format!("{n}: {}: {problem}", case.name));
                    continue;
                }
            };
            let mut problem = error_problem(&answer, case);
            let body = &answer.body;
            if problem.is_none() && case.code == "validation_failed" {
                problem = details_problem(body);
            }
            if problem.is_none() && case.code == "version_mismatch" && body["current_version"] != 1
            {
                problem = Some(format!("current_version is not 1: {body}"));
            }
            if problem.is_none() && before != fingerprint(&server).await {
                problem = Some("the state changed".to_owned());
            }
            if let Some(problem) = problem {
                failures.push(format!("{n}: {}: {problem}", case.name));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        // The fingerprint sees a write: the checks above could fail.
        let before = fingerprint(&server).await;
        server
            .put_flag("development", json!({"key": "fresh", "enabled": true}))
            .await;
        assert_ne!(before, fingerprint(&server).await, "{n}: a write is seen");
        server.stop().await;
    }
}

/// Validation problems name the field of the flag that is wrong.
#[tokio::test]
async fn validation_details_name_the_field() {
    for (db, server) in testing::servers("details").await {
        let n = db.name;
        let response = server
            .admin(Method::PUT, "/api/v1/envs/production/flags/pct")
            .json(
                &json!({"key": "pct", "enabled": true, "rollout": {"percentage": 101},
                "variants": [{"key": "a", "weight": 30}, {"key": "b", "weight": 30}]}),
            )
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 422, "{n}");
        let body: Value = response.json().await.expect("JSON");
        let details = body["details"].as_array().expect("details");
        let paths: Vec<&str> = details.iter().filter_map(|d| d["path"].as_str()).collect();
        assert!(
            paths.iter().any(|p| p.ends_with("rollout.percentage")),
            "{n}: {paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.contains("variants")),
            "{n}: {paths:?}"
        );
        assert_eq!(
            status_of(&server, Method::GET, "/api/v1/envs/production/flags/pct").await,
            404,
            "{n}: nothing stored"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    for db in testing::databases("limit").await {
        let n = db.name;
        let server = TestServer::start_with(Config {
            max_body: 1024,
            ..testing::config(&db.url)
        })
        .await;
        let description = "x".repeat(2000);
        let big = json!({"key": "big", "enabled": true, "description": description});
        let small = json!({"key": "small", "enabled": true});
        let cases = [
            case(
                "flag over the limit",
                Method::PUT,
                "/api/v1/envs/production/flags/big",
            )
            .json(big.clone())
            .expect(413, "body_too_large", &["1024"]),
            case(
                "bulk over the limit",
                Method::PUT,
                "/api/v1/envs/production/flags",
            )
            .json(json!({"flags": [big.clone()]}))
            .expect(413, "body_too_large", &["1024"]),
            case(
                "evaluation over the limit",
                Method::POST,
                "/api/v1/envs/production/evaluate",
            )
            .json(json!({"flag": "big", "context": {"blob": description}}))
            .expect(413, "body_too_large", &["1024"]),
        ];
        for case in &cases {
            let before = fingerprint(&server).await;
            let answer = send(&server, case).await;
            check_error(n, &answer, case);
            assert_eq!(before, fingerprint(&server).await, "{n}: {}", case.name);
        }
        // Chunked, without Content-Length: the limit still holds.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
            .to_string()
            .into_bytes()
            .chunks(256)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let response = server
            .admin(Method::PUT, "/api/v1/envs/production/flags/big")
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .expect("chunked PUT");
        assert_eq!(response.status(), 413, "{n}: chunked");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "body_too_large", "{n}: {body}");
        assert_eq!(
            status_of(&server, Method::GET, "/api/v1/envs/production/flags/big").await,
            404,
            "{n}: nothing stored"
        );
        // Under the limit is fine.
        server.put_flag("production", small).await;
        server.stop().await;
    }
}

// ---- authentication and authorization ----

#[tokio::test]
async fn missing_unknown_and_malformed_credentials_are_401() {
    for (db, server) in testing::servers("auth401").await {
        let n = db.name;
        let before = fingerprint(&server).await;
        let put = |name: &'static str| {
            case(name, Method::PUT, "/api/v1/envs/production/flags/fresh")
                .json(json!({"key": "fresh", "enabled": true}))
                .expect(401, "unauthorized", &["token"])
                .with_response_header("www-authenticate", "Bearer")
        };
        let cases = [
            put("no token").anonymous(),
            put("unknown token").token("gdn_not_a_real_token"),
            put("admin secret with a suffix").token(&format!("{ADMIN}x")),
            put("Basic scheme")
                .anonymous()
                .header("authorization", "Basic dGVzdDp0ZXN0"),
            put("no scheme").anonymous().header("authorization", ADMIN),
            put("Bearer without a token")
                .anonymous()
                .header("authorization", "Bearer "),
            put("Token scheme")
                .anonymous()
                .header("authorization", format!("Token {ADMIN}")),
            put("empty X-API-Key").anonymous().header("x-api-key", ""),
            case("unknown X-API-Key", Method::GET, "/api/v1/envs")
                .anonymous()
                .header("x-api-key", "gdn_nope")
                .expect(401, "unauthorized", &["token"]),
            case(
                "no token, unknown environment",
                Method::GET,
                "/api/v1/envs/nope",
            )
            .anonymous()
            .expect(401, "unauthorized", &["token"]),
            case(
                "no token on OFREP",
                Method::POST,
                "/ofrep/v1/evaluate/flags/x",
            )
            .anonymous()
            .json(json!({"context": {}}))
            .expect(401, "unauthorized", &["token"]),
            case(
                "no token on bulk OFREP",
                Method::POST,
                "/ofrep/v1/evaluate/flags",
            )
            .anonymous()
            .json(json!({"context": {}}))
            .expect(401, "unauthorized", &["token"]),
        ];
        for case in &cases {
            let answer = send(&server, case).await;
            check_error(n, &answer, case);
        }
        assert_eq!(before, fingerprint(&server).await, "{n}: nothing stored");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    for (db, server) in testing::servers("revoke").await {
        let n = db.name;
        let token = server.sdk_token("doomed", "production").await;
        let ofrep = || {
            server
                .http
                .post(server.at("/ofrep/v1/evaluate/flags"))
                .bearer_auth(&token)
                .json(&json!({"context": {"user_id": "u1"}}))
        };
        let response = ofrep().send().await.expect("before revoke");
        assert_eq!(response.status(), 200, "{n}: the token works");
        let response = server
            .admin(Method::DELETE, "/api/v1/tokens/doomed")
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 204, "{n}: revoked");
        // This instance refreshes its tokens on revoke: refused right away.
        let response = ofrep().send().await.expect("after revoke");
        assert_eq!(response.status(), 401, "{n}: revoked token");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "unauthorized", "{n}: {body}");
        // Also through X-API-Key, and on the admin API.
        let response = server
            .http
            .get(server.at("/api/v1/envs"))
            .header("x-api-key", &token)
            .send()
            .await
            .expect("after revoke");
        assert_eq!(response.status(), 401, "{n}: revoked token, X-API-Key");
        // Revoking twice: the token is already revoked, still known.
        let tokens: Value = server
            .admin(Method::GET, "/api/v1/tokens")
            .send()
            .await
            .expect("tokens")
            .json()
            .await
            .expect("JSON");
        let doomed = tokens["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| t["name"] == "doomed")
            .expect("listed");
        assert_eq!(doomed["revoked"], true, "{n}");
        server.stop().await;
    }
}

#[tokio::test]
async fn sdk_tokens_cannot_administer_or_cross_environments() {
    for (db, server) in testing::servers("auth403").await {
        let n = db.name;
        server
            .put_flag("development", json!({"key": "dev_only", "enabled": true}))
            .await;
        let sdk = server.sdk_token("svc", "production").await;
        let before = fingerprint(&server).await;
        let cases = [
            case(
                "sdk token PUTs a flag",
                Method::PUT,
                "/api/v1/envs/production/flags/fresh",
            )
            .json(json!({"key": "fresh", "enabled": true}))
            .token(&sdk)
            .expect(403, "forbidden", &["svc", "admin"]),
            case(
                "sdk token PUTs a malformed flag",
                Method::PUT,
                "/api/v1/envs/production/flags/fresh",
            )
            .raw("application/json", "{nope")
            .token(&sdk)
            .expect(403, "forbidden", &["admin"]),
            case("sdk token lists tokens", Method::GET, "/api/v1/tokens")
                .token(&sdk)
                .expect(403, "forbidden", &["admin"]),
            case("sdk token creates a token", Method::POST, "/api/v1/tokens")
                .json(json!({"name": "mine", "role": "admin"}))
                .token(&sdk)
                .expect(403, "forbidden", &["admin"]),
            case(
                "sdk token revokes a token",
                Method::DELETE,
                "/api/v1/tokens/svc",
            )
            .token(&sdk)
            .expect(403, "forbidden", &["admin"]),
            case(
                "sdk token creates an environment",
                Method::POST,
                "/api/v1/envs",
            )
            .json(json!({"name": "qa"}))
            .token(&sdk)
            .expect(403, "forbidden", &["admin"]),
            case(
                "sdk token deletes its environment",
                Method::DELETE,
                "/api/v1/envs/production?force=true",
            )
            .token(&sdk)
            .expect(403, "forbidden", &["admin"]),
            case(
                "sdk token reads the audit",
                Method::GET,
                "/api/v1/envs/production/audit",
            )
            .token(&sdk)
            .expect(403, "forbidden", &["admin"]),
            case(
                "sdk token bulk-replaces",
                Method::PUT,
                "/api/v1/envs/production/flags",
            )
            .json(json!({"flags": []}))
            .token(&sdk)
            .expect(403, "forbidden", &["admin"]),
            case(
                "sdk token for production evaluates development",
                Method::POST,
                "/api/v1/envs/development/evaluate",
            )
            .json(json!({"flag": "dev_only", "context": {"user_id": "u1"}}))
            .token(&sdk)
            .expect(403, "forbidden", &["production", "development"]),
            case(
                "sdk token for production reads a development flag",
                Method::GET,
                "/api/v1/envs/development/flags/dev_only",
            )
            .token(&sdk)
            .expect(403, "forbidden", &["development"]),
            case(
                "sdk token for production names development on OFREP",
                Method::POST,
                "/ofrep/v1/evaluate/flags",
            )
            .json(json!({"context": {"user_id": "u1"}}))
            .header("x-guidon-environment", "development")
            .token(&sdk)
            .expect(403, "forbidden", &["production", "development"]),
        ];
        for case in &cases {
            let answer = send(&server, case).await;
            check_error(n, &answer, case);
        }
        assert_eq!(before, fingerprint(&server).await, "{n}: nothing stored");

        // What it may do: evaluate its own environment.
        let response = server
            .http
            .post(server.at("/api/v1/envs/production/evaluate"))
            .bearer_auth(&sdk)
            .json(&json!({"context": {"user_id": "u1"}}))
            .send()
            .await
            .expect("own env");
        assert_eq!(response.status(), 200, "{n}: own environment");
        // Its environment list shows only its own.
        let envs: Value = server
            .http
            .get(server.at("/api/v1/envs"))
            .bearer_auth(&sdk)
            .send()
            .await
            .expect("envs")
            .json()
            .await
            .expect("JSON");
        let names: Vec<&str> = envs["environments"]
            .as_array()
            .expect("environments")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, ["production"], "{n}");
        server.stop().await;
    }
}

#[tokio::test]
async fn ofrep_takes_the_environment_from_the_token_or_the_header() {
    for (db, server) in testing::servers("ofrepenv").await {
        let n = db.name;
        server
            .put_flag("production", json!({"key": "banner", "enabled": true}))
            .await;
        server
            .put_flag("development", json!({"key": "banner", "enabled": false}))
            .await;
        let sdk = server.sdk_token("svc", "production").await;
        let one = server.at("/ofrep/v1/evaluate/flags/banner");
        let context = json!({"context": {"targetingKey": "u1"}});

        // An sdk token through X-API-Key: its own environment.
        let response = server
            .http
            .post(&one)
            .header("x-api-key", &sdk)
            .json(&context)
            .send()
            .await
            .expect("X-API-Key");
        assert_eq!(response.status(), 200, "{n}: X-API-Key");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["value"], true, "{n}: production's banner: {body}");

        // The same environment named in the header is fine too.
        let response = server
            .http
            .post(&one)
            .header("x-api-key", &sdk)
            .header("x-guidon-environment", "production")
            .json(&context)
            .send()
            .await
            .expect("X-API-Key and header");
        assert_eq!(response.status(), 200, "{n}: own env named");

        // An admin token without the header: which environment?
        let response = server
            .admin(Method::POST, "/ofrep/v1/evaluate/flags/banner")
            .json(&context)
            .send()
            .await
            .expect("admin without header");
        assert_eq!(response.status(), 400, "{n}: admin without header");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "bad_request", "{n}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("X-Guidon-Environment")),
            "{n}: {body}"
        );
        // OFREP's evaluationFailure fields too, for OpenFeature providers.
        assert_eq!(body["key"], "banner", "{n}: {body}");
        assert_eq!(body["errorCode"], "GENERAL", "{n}: {body}");

        // With it: 200, from that environment.
        for (env, value) in [("production", true), ("development", false)] {
            let response = server
                .admin(Method::POST, "/ofrep/v1/evaluate/flags/banner")
                .header("x-guidon-environment", env)
                .json(&context)
                .send()
                .await
                .expect("admin with header");
            assert_eq!(response.status(), 200, "{n}: admin with header {env}");
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["value"], value, "{n}: {env}: {body}");
        }

        // Naming an unknown or invalid environment.
        let response = server
            .admin(Method::POST, "/ofrep/v1/evaluate/flags")
            .header("x-guidon-environment", "nope")
            .json(&context)
            .send()
            .await
            .expect("unknown env");
        // OFREP's general error (400), never a 404 that OpenFeature clients
        // read as "flag not found"; Guidon's own code stays beside it.
        assert_eq!(response.status(), 400, "{n}: unknown env");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "not_found", "{n}: {body}");
        assert_eq!(body["errorCode"], "GENERAL", "{n}: {body}");
        let response = server
            .admin(Method::POST, "/ofrep/v1/evaluate/flags")
            .header("x-guidon-environment", "../production")
            .json(&context)
            .send()
            .await
            .expect("invalid env");
        assert_eq!(response.status(), 400, "{n}: invalid env name");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "bad_request", "{n}: {body}");
        assert!(body.get("key").is_none(), "{n}: bulk has no key: {body}");
        assert_eq!(body["errorCode"], "GENERAL", "{n}: {body}");
        server.stop().await;
    }
}

/// A client token (for code a user can read) evaluates its environment and
/// reads nothing else; a metrics token reads /metrics and nothing else;
/// /metrics itself needs one of them or an admin token.
#[tokio::test]
async fn client_and_metrics_tokens_do_only_their_job() {
    for (db, server) in testing::servers("roles").await {
        let n = db.name;
        server
            .put_flag("production", json!({"key": "checkout", "enabled": true,
                "rules": [{"name": "staff", "conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}], "serve": {"enabled": false}}]}))
            .await;
        let client = server.token("web", "client", Some("production")).await;
        let metrics = server.token("prometheus", "metrics", None).await;
        let sdk = server.sdk_token("svc", "production").await;

        // What they may do.
        let ofrep = server
            .http
            .post(server.at("/ofrep/v1/evaluate/flags/checkout"))
            .bearer_auth(&client)
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .await
            .expect("ofrep");
        assert_eq!(ofrep.status(), 200, "{n}: client evaluates through OFREP");
        let bulk = server
            .http
            .post(server.at("/ofrep/v1/evaluate/flags"))
            .bearer_auth(&client)
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .await
            .expect("ofrep bulk");
        assert_eq!(bulk.status(), 200, "{n}: client evaluates in bulk");
        let evaluated = server
            .http
            .post(server.at("/api/v1/envs/production/evaluate"))
            .bearer_auth(&client)
            .json(&json!({"flag": "checkout", "context": {"user_id": "u1"}}))
            .send()
            .await
            .expect("evaluate");
        assert_eq!(evaluated.status(), 200, "{n}: client evaluates");
        for token in [&metrics, &ADMIN.to_owned()] {
            let scraped = server
                .http
                .get(server.at("/metrics"))
                .bearer_auth(token)
                .send()
                .await
                .expect("metrics");
            assert_eq!(scraped.status(), 200, "{n}");
            assert!(
                scraped.text().await.expect("text").contains("checkout"),
                "{n}"
            );
        }

        // What they may not.
        let before = fingerprint(&server).await;
        let cases = [
            case(
                "client reads the SDK document",
                Method::GET,
                "/api/v1/sdk/flags",
            )
            .token(&client)
            .expect(403, "forbidden", &["web", "client", "definitions"]),
            case("client streams", Method::GET, "/api/v1/sdk/stream")
                .token(&client)
                .expect(403, "forbidden", &["client"]),
            case(
                "client reads changes",
                Method::GET,
                "/api/v1/sdk/changes?since=0",
            )
            .token(&client)
            .expect(403, "forbidden", &["client"]),
            case(
                "client reads a flag",
                Method::GET,
                "/api/v1/envs/production/flags/checkout",
            )
            .token(&client)
            .expect(403, "forbidden", &["client"]),
            case(
                "client exports",
                Method::GET,
                "/api/v1/envs/production/flags",
            )
            .token(&client)
            .expect(403, "forbidden", &["client"]),
            case(
                "client lists segments",
                Method::GET,
                "/api/v1/envs/production/segments",
            )
            .token(&client)
            .expect(403, "forbidden", &["client"]),
            case(
                "client asks for an explanation",
                Method::POST,
                "/api/v1/envs/production/evaluate",
            )
            .json(json!({"flag": "checkout", "context": {"user_id": "u1"}, "explain": true}))
            .token(&client)
            .expect(403, "forbidden", &["client"]),
            case(
                "client writes",
                Method::PATCH,
                "/api/v1/envs/production/flags/checkout",
            )
            .raw("application/merge-patch+json", r#"{"enabled": false}"#)
            .token(&client)
            .expect(403, "forbidden", &["client", "admin"]),
            case(
                "client evaluates another environment",
                Method::POST,
                "/api/v1/envs/development/evaluate",
            )
            .json(json!({"context": {"user_id": "u1"}}))
            .token(&client)
            .expect(403, "forbidden", &["production", "development"]),
            case("client reads metrics", Method::GET, "/metrics")
                .token(&client)
                .expect(403, "forbidden", &["metrics"]),
            case("sdk token reads metrics", Method::GET, "/metrics")
                .token(&sdk)
                .expect(403, "forbidden", &["metrics"]),
            case("metrics without a token", Method::GET, "/metrics")
                .anonymous()
                .expect(401, "unauthorized", &["token"]),
            case(
                "metrics token evaluates",
                Method::POST,
                "/ofrep/v1/evaluate/flags/checkout",
            )
            .json(json!({"context": {"targetingKey": "u1"}}))
            .header("x-guidon-environment", "production")
            .token(&metrics)
            .expect(403, "forbidden", &["metrics"]),
            case(
                "metrics token reads a flag",
                Method::GET,
                "/api/v1/envs/production/flags/checkout",
            )
            .token(&metrics)
            .expect(403, "forbidden", &["metrics"]),
            case("metrics token streams", Method::GET, "/api/v1/sdk/stream")
                .token(&metrics)
                .expect(403, "forbidden", &["metrics"]),
            case(
                "a client token without environment",
                Method::POST,
                "/api/v1/tokens",
            )
            .json(json!({"name": "web2", "role": "client"}))
            .expect(400, "bad_request", &["client token needs an environment"]),
            case(
                "a metrics token with an environment",
                Method::POST,
                "/api/v1/tokens",
            )
            .json(json!({"name": "prom2", "role": "metrics", "env": "production"}))
            .expect(400, "bad_request", &["metrics token is not scoped"]),
        ];
        for case in &cases {
            let answer = send(&server, case).await;
            check_error(n, &answer, case);
        }
        assert_eq!(fingerprint(&server).await, before, "{n}: nothing changed");
    }
}

/// `--metrics-listen`: /metrics without a token on an address of its own,
/// and nothing else there.
#[tokio::test]
async fn metrics_listen_serves_metrics_alone() {
    let db = testing::sqlite("metrics_listen");
    let mut config = testing::config(&db.url);
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = TestServer::start_with(config).await;
    let addr = server.running_metrics_addr().expect("a metrics address");
    server
        .put_flag("production", json!({"key": "checkout", "enabled": true}))
        .await;
    let scraped = server
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.expect("text").contains("guidon_"));
    let other = server
        .http
        .get(format!("http://{addr}/api/v1/envs"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("answer");
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.expect("JSON");
    assert_eq!(body["error"], "not_found", "{body}");
    server.stop().await;
}
