//! Time-travel explain and impact preview against a real server, on every
//! backend: several revisions made over time, each explained as it was
//! then; a rule change previewed over 10,000 contexts and its matrix
//! checked against an evaluation done here, independently, with the engine.

use std::collections::HashMap;
use std::time::Duration;

use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use guidon_server::testing::{self, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn evaluate(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let response = server
        .admin(Method::POST, "/api/v1/envs/production/evaluate")
        .json(&body)
        .send()
        .await
        .expect("evaluate");
    let status = response.status();
    (status, response.json().await.expect("JSON answer"))
}

async fn audit(server: &TestServer) -> Vec<Value> {
    let page: Value = server
        .admin(Method::GET, "/api/v1/envs/production/audit?limit=500")
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("audit JSON");
    page["entries"].as_array().expect("entries").clone()
}

/// What the engine says, here, of `flag` (the whole environment was this
/// one flag) for `context` at `now`: the expected answer of the past.
fn expected(flag: &Value, context: &Value, now: &str) -> (bool, Value) {
    let file: FlagFile = serde_json::from_value(json!({"flags": [flag]})).expect("file");
    let snapshot = Snapshot::compile(&file).expect("valid");
    let ctx = Context::from_json_str(&context.to_string()).expect("context");
    let now: Timestamp = now.parse().expect("now");
    let result = snapshot.evaluate(flag["key"].as_str().expect("key"), &ctx, now);
    (result.enabled, result.value.cloned().unwrap_or(Value::Null))
}

fn ms_text(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .expect("instant")
        .to_string()
}

#[tokio::test]
async fn explain_at_every_past_revision_and_instant_gives_the_answer_of_then() {
    for (db, server) in testing::servers("tt_explain").await {
        let n = db.name;
        let before_any = Timestamp::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Four revisions, each a different answer for a Canadian user.
        let definitions = [
            json!({"key": "checkout", "enabled": false}),
            json!({"key": "checkout", "enabled": true, "rollout": {"percentage": 0},
                   "rules": [{"name": "canada", "conditions": [
                       {"attribute": "country", "operator": "in", "values": ["CA"]}],
                       "serve": {"enabled": true}}]}),
            json!({"key": "checkout", "enabled": true, "rollout": {"percentage": 0},
                   "rules": [{"name": "canada", "conditions": [
                       {"attribute": "country", "operator": "in", "values": ["US"]}],
                       "serve": {"enabled": true}}]}),
            json!({"key": "checkout", "enabled": true}),
        ];
        for definition in &definitions {
            server.put_flag("production", definition.clone()).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let entries = audit(&server).await;
        let canadian = json!({"user_id": "user_7", "country": "CA"});
        for (i, definition) in definitions.iter().enumerate() {
            let revision = i as u64 + 1;
            let entry = entries
                .iter()
                .find(|e| e["revision"] == revision)
                .expect("audited");
            let made_at = ms_text(entry["at_ms"].as_i64().expect("at_ms"));
            let (status, by_revision) = evaluate(
                &server,
                json!({"flag": "checkout", "context": canadian, "revision": revision}),
            )
            .await;
            assert_eq!(status, 200, "{n}: {by_revision}");
            let (enabled, value) = expected(definition, &canadian, &made_at);
            assert_eq!(
                by_revision["enabled"], enabled,
                "{n}: revision {revision}: {by_revision}"
            );
            assert_eq!(by_revision["value"], value, "{n}");
            assert_eq!(by_revision["flag_version"], revision, "{n}");
            let as_of = &by_revision["as_of"];
            assert_eq!(as_of["revision"], revision, "{n}");
            assert_eq!(as_of["actor"], entry["actor"], "{n}");
            assert!(
                as_of["actor"].as_str().is_some_and(|a| !a.is_empty()),
                "{n}"
            );
            assert_eq!(as_of["made_at"], made_at.as_str(), "{n}");
            assert_eq!(as_of["now"], made_at.as_str(), "{n}");
            assert_eq!(as_of["current_revision"], 4, "{n}");
            let steps = by_revision["explanation"].as_array().expect("explained");
            assert!(!steps.is_empty(), "{n}");
            // The rule names the attribute it read, then.
            if i == 1 {
                assert!(
                    by_revision["explanation"].to_string().contains("canada"),
                    "{n}"
                );
            }
            // An instant a millisecond after it was made: the same revision.
            let at = ms_text(entry["at_ms"].as_i64().expect("at") + 1);
            let (status, by_time) = evaluate(
                &server,
                json!({"flag": "checkout", "context": canadian, "at": at}),
            )
            .await;
            assert_eq!(status, 200, "{n}: {by_time}");
            assert_eq!(by_time["as_of"]["revision"], revision, "{n}: {by_time}");
            assert_eq!(by_time["as_of"]["now"], at.as_str(), "{n}");
            assert_eq!(by_time["enabled"], enabled, "{n}");
        }
        // Before the first flag: the environment existed, without it.
        let (status, empty) = evaluate(
            &server,
            json!({"flag": "checkout", "context": canadian, "at": before_any.to_string()}),
        )
        .await;
        assert_eq!(status, 200, "{n}: {empty}");
        assert_eq!(empty["as_of"]["revision"], 0, "{n}");
        assert_eq!(empty["as_of"]["actor"], Value::Null, "{n}");
        assert_eq!(empty["error_code"], "FLAG_NOT_FOUND", "{n}");
        // All flags at once, at a revision.
        let (status, all) = evaluate(&server, json!({"context": canadian, "revision": 2})).await;
        assert_eq!(status, 200, "{n}: {all}");
        assert_eq!(all["revision"], 2, "{n}");
        assert_eq!(all["results"][0]["enabled"], true, "{n}: {all}");
        // The current answer is unchanged by all this.
        let (_, now) = evaluate(&server, json!({"flag": "checkout", "context": canadian})).await;
        assert_eq!(now["flag_version"], 4, "{n}");
        assert!(now.get("as_of").is_none(), "{n}");
        server.stop().await;
    }
}

/// `$now` reads the evaluation time, which time travel sets to `at`: at
/// one revision, a promotion is on before its end and off after it.
#[tokio::test]
async fn the_clock_of_a_past_evaluation_is_the_instant_asked_for() {
    for (db, server) in testing::servers("tt_clock").await {
        let n = db.name;
        let end_ms = Timestamp::now().as_millisecond() + 300;
        server
            .put_flag(
                "production",
                json!({"key": "promo", "enabled": true, "rollout": {"percentage": 0},
                   "rules": [{"name": "until_end", "conditions": [
                       {"attribute": "$now", "operator": "before", "values": [ms_text(end_ms)]}],
                       "serve": {"enabled": true}}]}),
            )
            .await;
        let made = audit(&server).await[0]["at_ms"].as_i64().expect("at");
        assert!(made < end_ms, "{n}: the write took 300 ms");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let ask = |body: Value| evaluate(&server, body);
        let (_, during) =
            ask(json!({"flag": "promo", "context": {}, "at": ms_text(made + 1)})).await;
        assert_eq!(during["enabled"], true, "{n}: {during}");
        assert_eq!(during["reason"], "TARGETING_MATCH", "{n}: {during}");
        let (_, after) =
            ask(json!({"flag": "promo", "context": {}, "at": ms_text(end_ms + 10)})).await;
        assert_eq!(after["as_of"]["revision"], 1, "{n}: {after}");
        assert_eq!(after["enabled"], false, "{n}: {after}");
        // By revision: evaluated when it was made, before the end.
        let (_, by_revision) = ask(json!({"flag": "promo", "context": {}, "revision": 1})).await;
        assert_eq!(by_revision["enabled"], true, "{n}: {by_revision}");
        // Now, the live answer: over.
        let (_, live) = ask(json!({"flag": "promo", "context": {}})).await;
        assert_eq!(live["enabled"], false, "{n}: {live}");
        server.stop().await;
    }
}

#[tokio::test]
async fn time_travel_outside_the_environments_life_is_a_clear_error() {
    for (db, server) in testing::servers("tt_errors").await {
        let n = db.name;
        for i in 0..3 {
            server
                .put_flag("production", json!({"key": "f", "enabled": i % 2 == 0}))
                .await;
        }
        let ctx = json!({"user_id": "u"});
        let cases = [
            (
                json!({"flag": "f", "context": ctx, "at": "2999-01-01T00:00:00Z"}),
                422,
                "out_of_range",
                "at",
            ),
            (
                json!({"flag": "f", "context": ctx, "at": "1990-01-01T00:00:00Z"}),
                422,
                "out_of_range",
                "at",
            ),
            (
                json!({"flag": "f", "context": ctx, "revision": 99}),
                422,
                "out_of_range",
                "revision",
            ),
            (
                json!({"flag": "f", "context": ctx, "at": "yesterday"}),
                400,
                "invalid_body",
                "at",
            ),
            (
                json!({"flag": "f", "context": ctx, "revision": -1}),
                400,
                "invalid_body",
                "revision",
            ),
            (
                json!({"flag": "f", "context": ctx, "revision": 1, "at": "2020-01-01T00:00:00Z"}),
                400,
                "invalid_body",
                "revision",
            ),
        ];
        for (body, status, code, path) in cases {
            let (got, answer) = evaluate(&server, body.clone()).await;
            assert_eq!(got.as_u16(), status, "{n}: {body}: {answer}");
            assert_eq!(answer["error"], code, "{n}: {body}: {answer}");
            assert_eq!(answer["path"], path, "{n}: {body}: {answer}");
            assert!(
                answer["message"].as_str().is_some_and(|m| m.contains(path)),
                "{n}: {answer}"
            );
        }
        // Who made what is the audit's: not for an sdk token.
        let sdk = server.sdk_token("app", "production").await;
        let response = server
            .http
            .post(server.at("/api/v1/envs/production/evaluate"))
            .bearer_auth(&sdk)
            .json(&json!({"flag": "f", "context": ctx, "revision": 1}))
            .send()
            .await
            .expect("sdk");
        assert_eq!(response.status(), 403, "{n}");

        // Past the retention horizon: said so, with its own code.
        let compact = |body: Value| {
            server
                .admin(Method::POST, "/api/v1/envs/production/history/compact")
                .json(&body)
                .send()
        };
        let response = compact(json!({"keep_from": 99})).await.expect("compact");
        assert_eq!(response.status(), 422, "{n}");
        let refused: Value = response.json().await.expect("json");
        assert_eq!(refused["path"], "keep_from", "{n}: {refused}");
        let response = compact(json!({"keep_from": 2})).await.expect("compact");
        assert_eq!(response.status(), 200, "{n}");
        let compacted: Value = response.json().await.expect("json");
        assert_eq!(compacted["history_from"], 2, "{n}: {compacted}");
        let (status, answer) =
            evaluate(&server, json!({"flag": "f", "context": ctx, "revision": 1})).await;
        assert_eq!(status, 410, "{n}: {answer}");
        assert_eq!(answer["error"], "history_compacted", "{n}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("oldest revision kept is 2")),
            "{n}: {answer}"
        );
        let (status, kept) =
            evaluate(&server, json!({"flag": "f", "context": ctx, "revision": 2})).await;
        assert_eq!(status, 200, "{n}: {kept}");
        assert_eq!(kept["enabled"], false, "{n}: {kept}");
        assert_eq!(kept["as_of"]["oldest_revision"], 2, "{n}");
        // The flag's history starts at what was kept.
        let history: Value = server
            .admin(Method::GET, "/api/v1/envs/production/flags/f/history")
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        let revisions: Vec<u64> = history["history"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["revision"].as_u64())
            .collect();
        assert_eq!(revisions, [2, 3], "{n}: {history}");
        server.stop().await;
    }
}

// ---- impact preview ----

fn environment() -> Value {
    json!({"flags": [
        {"key": "checkout", "enabled": true,
         "variants": [
            {"key": "control", "weight": 50, "value": "classic"},
            {"key": "treatment", "weight": 50, "value": "single_page"}],
         "rules": [
            {"name": "staff", "conditions": [
                {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"]}],
             "serve": {"enabled": true, "variant": "treatment"}},
            {"name": "north america", "conditions": [
                {"attribute": "country", "operator": "in", "values": ["US", "CA"]}],
             "serve": {"enabled": true}}],
         "rollout": {"percentage": 10}},
        {"key": "upsell", "enabled": true,
         "prerequisites": [{"flag": "checkout", "variants": ["treatment"]}]},
        {"key": "banner", "enabled": true,
         "prerequisites": [{"flag": "upsell", "enabled": true}]},
        {"key": "unrelated", "enabled": true}
    ]})
}

fn contexts(n: usize) -> Vec<Value> {
    let countries = ["US", "CA", "FR", "DE", "MX"];
    (0..n)
        .map(|i| {
            json!({
                "user_id": format!("user_{i}"),
                "country": countries[i % countries.len()],
                "email": if i % 40 == 0 { format!("u{i}@acme.com") } else { format!("u{i}@example.org") },
            })
        })
        .collect()
}

/// (enabled, variant, value) of one evaluation, as the matrix names outcomes.
type Outcome = (bool, Value, Value);

fn outcome_of(v: &Value) -> Outcome {
    (
        v["enabled"].as_bool().expect("enabled"),
        v["variant"].clone(),
        v["value"].clone(),
    )
}

/// The matrix computed here: every context evaluated with the engine
/// against both environments.
fn independent_matrix(
    current: &Snapshot,
    proposed: &Snapshot,
    flag: &str,
    contexts: &[Value],
    now: Timestamp,
) -> HashMap<(Outcome, Outcome), u64> {
    let mut counts = HashMap::new();
    for c in contexts {
        let ctx = Context::from_json_str(&c.to_string()).expect("context");
        let a = outcome_of(&current.evaluate(flag, &ctx, now).to_json());
        let b = outcome_of(&proposed.evaluate(flag, &ctx, now).to_json());
        *counts.entry((a, b)).or_insert(0) += 1;
    }
    counts
}

fn server_matrix(impact: &Value) -> HashMap<(Outcome, Outcome), u64> {
    impact["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            (
                (outcome_of(&t["from"]), outcome_of(&t["to"])),
                t["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

async fn preview(server: &TestServer, key: &str, body: Value) -> (StatusCode, Value) {
    let response = server
        .admin(
            Method::POST,
            &format!("/api/v1/envs/production/flags/{key}/preview"),
        )
        .json(&body)
        .send()
        .await
        .expect("preview");
    let status = response.status();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn a_rule_change_previewed_over_ten_thousand_contexts_matches_an_independent_evaluation() {
    for (db, server) in testing::servers("preview_10k").await {
        let n = db.name;
        let env = environment();
        server
            .put("/api/v1/envs/production/flags", env.clone())
            .await;
        let revision = server.document("production").await["revision"].clone();
        let contexts = contexts(10_000);
        let jsonl: String = contexts.iter().map(|c| format!("{c}\n")).collect();
        // The rule change: North America becomes Canada and Mexico.
        let patch = json!({"rules": [
            {"name": "staff", "conditions": [
                {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"]}],
             "serve": {"enabled": true, "variant": "treatment"}},
            {"name": "north america", "conditions": [
                {"attribute": "country", "operator": "in", "values": ["CA", "MX"]}],
             "serve": {"enabled": true}}]});
        let (status, answer) = preview(
            &server,
            "checkout",
            json!({"patch": patch, "contexts_jsonl": jsonl, "max_examples": 7}),
        )
        .await;
        assert_eq!(status, 200, "{n}: {answer}");
        assert_eq!(answer["contexts"], 10_000, "{n}");
        assert_eq!(answer["revision"], revision, "{n}");

        // The same, evaluated here.
        let current_file: FlagFile = serde_json::from_value(env.clone()).expect("file");
        let mut proposed_value = env.clone();
        proposed_value["flags"][0]["rules"] = patch["rules"].clone();
        let proposed_file: FlagFile = serde_json::from_value(proposed_value).expect("file");
        let current = Snapshot::compile(&current_file).expect("current");
        let proposed = Snapshot::compile(&proposed_file).expect("proposed");
        let now = Timestamp::now();
        for (impact, key) in [
            (&answer["flag"], "checkout"),
            (&answer["dependents"][0], "upsell"),
            (&answer["dependents"][1], "banner"),
        ] {
            assert_eq!(impact["flag"], key, "{n}");
            let want = independent_matrix(&current, &proposed, key, &contexts, now);
            assert_eq!(server_matrix(impact), want, "{n}: {key}");
            let changed: u64 = want
                .iter()
                .filter(|((a, b), _)| a != b)
                .map(|(_, c)| c)
                .sum();
            assert_eq!(impact["changed"], changed, "{n}: {key}");
            assert!(
                changed > 1000,
                "{n}: {key}: the change moves many: {changed}"
            );
            let shares: f64 = impact["transitions"]
                .as_array()
                .expect("transitions")
                .iter()
                .map(|t| t["share"].as_f64().expect("share"))
                .sum();
            assert!((shares - 1.0).abs() < 1e-9, "{n}: {shares}");
        }
        assert_eq!(
            answer["dependents"].as_array().map(Vec::len),
            Some(2),
            "{n}"
        );
        assert_eq!(
            answer["changed_dependents"],
            json!(["upsell", "banner"]),
            "{n}"
        );
        // Examples: the first affected contexts, each really affected.
        let examples = answer["flag"]["examples"].as_array().expect("examples");
        assert_eq!(examples.len(), 7, "{n}");
        for e in examples {
            let i = e["index"].as_u64().expect("index") as usize;
            assert_eq!(e["unit"], contexts[i]["user_id"], "{n}");
            assert_ne!(outcome_of(&e["from"]), outcome_of(&e["to"]), "{n}");
        }
        // Nothing was stored.
        assert_eq!(
            server.document("production").await["revision"],
            revision,
            "{n}"
        );

        // A whole flag and a JSON array of contexts work the same way.
        let (status, whole) = preview(
            &server,
            "checkout",
            json!({"flag": {"enabled": false, "variants": env["flags"][0]["variants"]},
                   "contexts": contexts[..100]}),
        )
        .await;
        assert_eq!(status, 200, "{n}: {whole}");
        assert_eq!(whole["contexts"], 100, "{n}");
        let to_off: u64 = whole["flag"]["transitions"]
            .as_array()
            .expect("transitions")
            .iter()
            .filter(|t| t["to"]["enabled"] == false)
            .map(|t| t["count"].as_u64().expect("count"))
            .sum();
        assert_eq!(to_off, 100, "{n}: everyone goes off: {whole}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_preview_refuses_what_a_save_refuses_and_names_the_field() {
    for (db, server) in testing::servers("preview_errors").await {
        let n = db.name;
        server
            .put("/api/v1/envs/production/flags", environment())
            .await;
        let ctx = json!([{"user_id": "u1"}]);
        // An invalid definition: the same 422 and details as saving it.
        let bad = json!({"key": "checkout", "enabled": true, "variants": [
            {"key": "a", "weight": 50}, {"key": "b", "weight": 49}]});
        let saved = server
            .admin(Method::PUT, "/api/v1/envs/production/flags/checkout")
            .json(&bad)
            .send()
            .await
            .expect("put");
        assert_eq!(saved.status(), 422, "{n}");
        let saved: Value = saved.json().await.expect("json");
        let (status, previewed) =
            preview(&server, "checkout", json!({"flag": bad, "contexts": ctx})).await;
        assert_eq!(status, 422, "{n}: {previewed}");
        assert_eq!(previewed["error"], "validation_failed", "{n}");
        assert_eq!(previewed["details"], saved["details"], "{n}: {previewed}");
        assert!(
            previewed["details"].to_string().contains("flag.variants"),
            "{n}: {previewed}"
        );
        // A prerequisite flag's variant removed: invalid for its dependents.
        let (status, broke) = preview(
            &server,
            "checkout",
            json!({"patch": {"variants": null}, "contexts": ctx}),
        )
        .await;
        assert_eq!(status, 422, "{n}: {broke}");

        let cases = [
            (json!({"contexts": ctx}), 400, "flag"),
            (
                json!({"flag": {"enabled": true}, "patch": {}, "contexts": ctx}),
                400,
                "patch",
            ),
            (json!({"flag": {"enabled": true}}), 400, "contexts"),
            (
                json!({"flag": {"enabled": true}, "contexts": [1]}),
                400,
                "contexts[0]",
            ),
            (
                json!({"flag": {"enabled": true}, "contexts_jsonl": "{\"a\":1}\n\n[1]\n"}),
                400,
                "contexts_jsonl",
            ),
            (
                json!({"flag": {"enabled": "yes"}, "contexts": ctx}),
                400,
                "enabled",
            ),
            (
                json!({"flag": {"enabled": true}, "contexts": ctx, "max_examples": 5000}),
                400,
                "max_examples",
            ),
        ];
        for (body, status, path) in cases {
            let (got, answer) = preview(&server, "checkout", body.clone()).await;
            assert_eq!(got.as_u16(), status, "{n}: {body}: {answer}");
            assert_eq!(answer["path"], path, "{n}: {body}: {answer}");
        }
        let (_, jsonl) = preview(
            &server,
            "checkout",
            json!({"flag": {"enabled": true}, "contexts_jsonl": "{\"a\":1}\n\n[1]\n"}),
        )
        .await;
        assert!(
            jsonl["message"]
                .as_str()
                .is_some_and(|m| m.contains("line 3")),
            "{n}: {jsonl}"
        );
        // A patch needs a flag to patch; a whole flag previews a creation.
        let (status, _) = preview(
            &server,
            "fresh",
            json!({"patch": {"enabled": true}, "contexts": ctx}),
        )
        .await;
        assert_eq!(status, 404, "{n}");
        let (status, created) = preview(
            &server,
            "fresh",
            json!({"flag": {"enabled": true}, "contexts": ctx}),
        )
        .await;
        assert_eq!(status, 200, "{n}: {created}");
        assert_eq!(
            created["flag"]["transitions"][0]["from"]["not_found"], true,
            "{n}"
        );
        // Admin only.
        let sdk = server.sdk_token("app", "production").await;
        let response = server
            .http
            .post(server.at("/api/v1/envs/production/flags/checkout/preview"))
            .bearer_auth(&sdk)
            .json(&json!({"flag": {"enabled": true}, "contexts": ctx}))
            .send()
            .await
            .expect("sdk");
        assert_eq!(response.status(), 403, "{n}");
        server.stop().await;
    }
}

// ---- recent contexts ----

async fn sample_info(server: &TestServer, query: &str) -> (StatusCode, Value) {
    let response = server
        .admin(
            Method::GET,
            &format!("/api/v1/envs/production/contexts/sample{query}"),
        )
        .send()
        .await
        .expect("sample");
    let status = response.status();
    (status, response.json().await.expect("JSON answer"))
}

/// Opt in, evaluate through /evaluate, OFREP and reported exposures: the
/// sample keeps at most its size, never a dropped attribute, hashed ones
/// only hashed; a preview without contexts uses it and says how big and old
/// it is; deleting it leaves nothing, and a preview then says there is none.
#[tokio::test]
async fn recent_contexts_are_sampled_stripped_used_by_previews_and_deleted() {
    for (db, server) in testing::servers("ctx_sample").await {
        let n = db.name;
        server
            .put("/api/v1/envs/production/flags", environment())
            .await;
        let (status, refused) = sample_info(&server, "").await;
        assert_eq!(status, 404, "{n}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("not opted in")),
            "{n}: {refused}"
        );
        // Bad settings name the field.
        for (body, path) in [
            (json!({"size": 0, "retention_hours": 24}), "size"),
            (
                json!({"size": 10, "retention_hours": 10_000}),
                "retention_hours",
            ),
            (
                json!({"size": 10, "retention_hours": 24, "drop": [""]}),
                "drop[0]",
            ),
        ] {
            let response = server
                .admin(Method::PUT, "/api/v1/envs/production/contexts/sample")
                .json(&body)
                .send()
                .await
                .expect("put");
            assert_eq!(response.status(), 400, "{n}: {body}");
            let answer: Value = response.json().await.expect("json");
            assert_eq!(answer["path"], path, "{n}: {answer}");
        }
        let opted: Value = server
            .put(
                "/api/v1/envs/production/contexts/sample",
                json!({"size": 25, "retention_hours": 24, "drop": ["email"], "hash": ["account"]}),
            )
            .await;
        assert_eq!(opted["size"], 25, "{n}: {opted}");
        assert_eq!(opted["stored"], 0, "{n}");

        let people = contexts(60);
        for (i, c) in people.iter().enumerate() {
            let mut c = c.clone();
            c["account"] = json!(format!("acct-{i}"));
            if i < 40 {
                evaluate(&server, json!({"flag": "checkout", "context": c})).await;
            } else {
                let response = server
                    .admin(Method::POST, "/ofrep/v1/evaluate/flags/checkout")
                    .header("X-Guidon-Environment", "production")
                    .json(&json!({"context": c}))
                    .send()
                    .await
                    .expect("ofrep");
                assert_eq!(response.status(), 200, "{n}");
            }
        }
        let exposures: Vec<Value> = (0..20)
            .map(|i| {
                json!({"type": "exposure", "event_id": format!("e{i}"), "flag": "checkout",
                       "variant": "control", "timestamp": Timestamp::now().to_string(),
                       "context": {"user_id": format!("sdk_{i}"), "email": "x@y.z", "account": "a"}})
            })
            .collect();
        let response = server
            .admin(Method::POST, "/api/v1/events")
            .header("X-Guidon-Environment", "production")
            .json(&json!({"events": exposures}))
            .send()
            .await
            .expect("events");
        assert!(response.status().is_success(), "{n}");
        // Written within a second or two.
        let mut info = Value::Null;
        for _ in 0..50 {
            info = sample_info(&server, "?contexts=true").await.1;
            if info["seen"] == 80 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(info["seen"], 80, "{n}: {info}");
        // 25 per hour: 50 when the evaluations straddled an hour's end.
        let stored = info["stored"].as_u64().expect("stored");
        assert!((25..=50).contains(&stored), "{n}: {info}");
        let kept = info["contexts"].as_array().expect("contexts");
        assert_eq!(kept.len(), 25, "{n}");
        for c in kept {
            assert!(c.get("email").is_none(), "{n}: dropped: {c}");
            let account = c["account"].as_str().expect("account");
            assert!(
                account.starts_with("hmac:") && account.len() == 37,
                "{n}: {c}"
            );
            assert!(c["user_id"].is_string(), "{n}: {c}");
        }
        // The same value hashes the same (a unit stays one unit).
        let sdk_accounts: std::collections::HashSet<&str> = kept
            .iter()
            .filter(|c| c["user_id"].as_str().is_some_and(|u| u.starts_with("sdk_")))
            .filter_map(|c| c["account"].as_str())
            .collect();
        assert!(sdk_accounts.len() <= 1, "{n}: {sdk_accounts:?}");

        // A preview without contexts runs over the sample.
        let (status, previewed) =
            preview(&server, "checkout", json!({"patch": {"enabled": false}})).await;
        assert_eq!(status, 200, "{n}: {previewed}");
        assert_eq!(previewed["contexts"], 25, "{n}: {previewed}");
        assert_eq!(previewed["given"], 0, "{n}");
        assert_eq!(previewed["sample"]["size"], 25, "{n}: {previewed}");
        assert_eq!(previewed["sample"]["seen"], 80, "{n}: {previewed}");
        assert!(
            previewed["sample"]["age_seconds"].is_number(),
            "{n}: {previewed}"
        );
        let (_, both) = preview(
            &server,
            "checkout",
            json!({"patch": {"enabled": false}, "contexts": [{"user_id": "extra"}]}),
        )
        .await;
        assert_eq!(both["contexts"], 26, "{n}: {both}");

        // Deleted: nothing stored, no sample for previews.
        assert_eq!(
            server
                .delete("/api/v1/envs/production/contexts/sample")
                .await,
            200,
            "{n}"
        );
        assert_eq!(sample_info(&server, "").await.0, 404, "{n}");
        assert_eq!(
            server
                .delete("/api/v1/envs/production/contexts/sample")
                .await,
            404,
            "{n}"
        );
        evaluate(
            &server,
            json!({"flag": "checkout", "context": {"user_id": "late"}}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(sample_info(&server, "").await.0, 404, "{n}");
        let (status, none) =
            preview(&server, "checkout", json!({"patch": {"enabled": false}})).await;
        assert_eq!(status, 400, "{n}: {none}");
        assert!(
            none["message"]
                .as_str()
                .is_some_and(|m| m.contains("keeps no recent-contexts sample")),
            "{n}: {none}"
        );
        server.stop().await;
    }
}
