//! Experiments end to end, every backend: events in through
//! `POST /api/v1/events` (per-event errors, retries, auth), results out of
//! `GET /api/v1/envs/{env}/experiments/{flag}/results`, checked against
//! `guidon-stats` computed here from what the test itself sent.

use guidon_server::testing::{self, ADMIN, TestServer};
use guidon_stats::{
    AnalysisOptions, Correction, Method as ReadMethod, MetricKind, VariantStats, analyze, headline,
};
use reqwest::Method;
use serde_json::{Value, json};

const EVENTS: &str = "/api/v1/events";

/// The seed's experiment: 50/50, no rollout, bucketed by user.
fn checkout_flag() -> Value {
    json!({"key": "new_checkout_experiment", "enabled": true,
           "variants": [{"key": "control", "weight": 50, "value": "classic"},
                        {"key": "treatment", "weight": 50, "value": "single_page"}]})
}

fn results_path(flag: &str, query: &str) -> String {
    format!("/api/v1/envs/production/experiments/{flag}/results?{query}")
}

/// 2026-11-20T10:00:00Z plus `seconds`.
fn at(seconds: i64) -> String {
    let base: guidon_engine::Timestamp = "2026-11-20T10:00:00Z".parse().expect("time");
    base.checked_add(jiff_seconds(seconds))
        .expect("in range")
        .to_string()
}

fn jiff_seconds(seconds: i64) -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(seconds).expect("non-negative"))
}

fn exposure(id: &str, user: &str, variant: &str, seconds: i64) -> Value {
    json!({"type": "exposure", "event_id": id, "flag": "new_checkout_experiment",
           "variant": variant, "context": {"user_id": user}, "timestamp": at(seconds)})
}

fn purchase(id: &str, user: &str, seconds: i64) -> Value {
    json!({"type": "conversion", "event_id": id, "metric": "purchase", "value": 99.99,
           "context": {"user_id": user}, "timestamp": at(seconds)})
}

async fn send(
    server: &TestServer,
    token: Option<&str>,
    env: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut request = server.http.post(server.at(EVENTS)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(env) = env {
        request = request.header("X-Guidon-Environment", env);
    }
    let response = request.send().await.expect("POST events");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn results(server: &TestServer, flag: &str, query: &str) -> (u16, Value) {
    let response = server
        .admin(Method::GET, &results_path(flag, query))
        .send()
        .await
        .expect("GET results");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {a}"));
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: server {a}, expected {b}"
    );
}

/// `a` and `b` are the same JSON, numbers equal to 1e-9 relative (sums
/// that a database adds up in another order differ in the last bits).
fn same_json(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            close(a, b.as_f64().unwrap_or(f64::NAN), path);
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                same_json(&a[k.as_str()], &b[k.as_str()], &format!("{path}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: {a} vs {b}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                same_json(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::String(x), Value::String(y)) if x != y => {
            // Notes carry formatted numbers: compare them without digits.
            let strip = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
            assert_eq!(strip(x), strip(y), "{path}");
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[tokio::test]
async fn a_batch_with_bad_events_stores_the_rest_and_names_each_bad_one() {
    for (db, server) in testing::servers("exp_batch").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        server
            .put_flag(
                "production",
                json!({"key": "boolean_flag", "enabled": true}),
            )
            .await;
        let sdk = server.sdk_token("checkout", "production").await;
        let batch = json!({"events": [
            exposure("e0", "u0", "control", 0),                                     // 0 ok
            {"type": "exposure", "event_id": "e1", "flag": "nope", "variant": "control",
             "context": {"user_id": "u1"}, "timestamp": at(0)},                     // 1 unknown flag
            {"type": "exposure", "event_id": "e2", "flag": "new_checkout_experiment",
             "variant": "purple", "context": {"user_id": "u2"}, "timestamp": at(0)}, // 2 unknown variant
            {"type": "exposure", "event_id": "e3", "flag": "new_checkout_experiment",
             "variant": "control", "context": {"country": "CA"}, "timestamp": at(0)}, // 3 no unit
            {"type": "exposure", "event_id": "e4", "flag": "new_checkout_experiment",
             "variant": "control", "context": {"user_id": "u4"}, "timestamp": "yesterday"}, // 4 bad time
            {"type": "exposure", "flag": "new_checkout_experiment", "variant": "control",
             "context": {"user_id": "u5"}, "timestamp": at(0)},                     // 5 no event_id
            {"type": "click", "event_id": "e6"},                                    // 6 bad type
            purchase("c7", "u0", 60),                                               // 7 ok
            {"type": "conversion", "event_id": "c8", "metric": "purchase", "value": "lots",
             "context": {"user_id": "u0"}, "timestamp": at(60)},                    // 8 bad value
            "not an event",                                                         // 9 not an object
            {"type": "conversion", "event_id": "c10", "metric": "purchase",
             "context": {"targetingKey": "u10"}, "timestamp": at(60)},              // 10 ok (targetingKey)
            {"type": "exposure", "event_id": "e11", "flag": "boolean_flag", "variant": "on",
             "context": {"user_id": "u11"}, "timestamp": at(0)},                    // 11 not an experiment
            {"type": "exposure", "event_id": "e12", "flag": "new_checkout_experiment",
             "variant": "control", "context": {"user_id": "u12"}, "timestamp": at(0),
             "extra": 1},                                                           // 12 unknown field
            {"type": "exposure", "event_id": "e13", "flag": "new_checkout_experiment",
             "variant": "control", "context": {"user_id": "u13"},
             "timestamp": "2999-01-01T00:00:00Z"},                                  // 13 future
        ]});
        let (status, body) = send(&server, Some(&sdk), None, &batch).await;
        assert_eq!(status, 207, "{n}: {body}");
        assert_eq!(body["accepted"], 3, "{n}: {body}");
        assert_eq!(body["duplicates"], 0, "{n}: {body}");
        let rejected = body["rejected"].as_array().expect("rejected");
        let codes: Vec<(u64, &str)> = rejected
            .iter()
            .map(|r| {
                assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
                (
                    r["index"].as_u64().expect("index"),
                    r["error"].as_str().expect("code"),
                )
            })
            .collect();
        assert_eq!(
            codes,
            [
                (1, "unknown_flag"),
                (2, "unknown_variant"),
                (3, "missing_unit"),
                (4, "invalid_timestamp"),
                (5, "invalid_event_id"),
                (6, "invalid_type"),
                (8, "invalid_value"),
                (9, "invalid_event"),
                (11, "unknown_variant"),
                (12, "unknown_field"),
                (13, "invalid_timestamp"),
            ],
            "{n}: {body}"
        );
        assert_eq!(rejected[0]["path"], "flag", "{n}");
        assert!(
            rejected[1]["message"]
                .as_str()
                .is_some_and(|m| m.contains("control, treatment")),
            "{n}: {}",
            rejected[1]
        );

        // The valid events were stored: u0 exposed and converted.
        let (status, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(r["variants"][0]["key"], "control", "{n}");
        assert_eq!(r["variants"][0]["units"], 1, "{n}: {r}");
        assert_eq!(r["variants"][0]["conversions"], 1, "{n}: {r}");

        // An all-valid batch answers 200.
        let (status, body) = send(
            &server,
            Some(&sdk),
            None,
            &json!({"events": [exposure("e20", "u20", "treatment", 0)]}),
        )
        .await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (200, Some(1)),
            "{n}: {body}"
        );
        assert_eq!(body["rejected"], json!([]), "{n}");

        // Too many events: 413, nothing stored.
        let big: Vec<Value> = (0..10_001)
            .map(|i| exposure(&format!("big{i}"), &format!("b{i}"), "control", 0))
            .collect();
        let (status, body) = send(&server, Some(&sdk), None, &json!({"events": big})).await;
        assert_eq!(status, 413, "{n}: {body}");
        assert_eq!(body["error"], "batch_too_large", "{n}");
        let (_, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(r["exposures"]["units"], 2, "{n}: {r}");

        // Not a batch at all.
        for bad in [
            json!({"event": []}),
            json!({"events": 3}),
            json!("x"),
            json!([exposure("e30", "u30", "treatment", 0)]),
        ] {
            let (status, body) = send(&server, Some(&sdk), None, &bad).await;
            assert_eq!(status, 400, "{n}: {bad} → {body}");
            assert_eq!(body["error"], "invalid_body", "{n}: {body}");
        }
        server.stop().await;
    }
}

/// An event naming its variant twice is not counted for the last one: the
/// whole batch is a 400 naming the key and its path, and nothing is stored.
#[tokio::test]
async fn an_event_repeating_its_variant_is_refused_and_nothing_stored() {
    for (db, server) in testing::servers("exp_dupkey").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let sdk = server.sdk_token("checkout", "production").await;
        let good = exposure("d0", "u0", "treatment", 0).to_string();
        let repeated = format!(
            r#"{{"type": "exposure", "event_id": "d1", "flag": "new_checkout_experiment",
                "variant": "control", "variant": "treatment",
                "context": {{"user_id": "u1"}}, "timestamp": "{}"}}"#,
            at(0)
        );
        let response = server
            .http
            .post(server.at(EVENTS))
            .bearer_auth(&sdk)
            .header("content-type", "application/json")
            .body(format!(r#"{{"events": [{good}, {repeated}]}}"#))
            .send()
            .await
            .expect("POST events");
        assert_eq!(response.status(), 400, "{n}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "invalid_body", "{n}: {body}");
        assert_eq!(body["path"], "events[1].variant", "{n}: {body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(
            message.contains(r#"duplicate key "variant""#),
            "{n}: {body}"
        );
        let (status, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(r["exposures"]["units"], 0, "{n}: nothing stored: {r}");
        // The same batch without the repetition is stored: the check can fail.
        let (status, body) = send(
            &server,
            Some(&sdk),
            None,
            &json!({"events": [exposure("d0", "u0", "treatment", 0)]}),
        )
        .await;
        assert_eq!(status, 200, "{n}: {body}");
        let (_, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(r["exposures"]["units"], 1, "{n}: {r}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_retried_batch_counts_once() {
    for (db, server) in testing::servers("exp_retry").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let batch = json!({"events": [
            exposure("e1", "u1", "control", 0),
            exposure("e2", "u2", "treatment", 0),
            purchase("c1", "u1", 30),
            purchase("c2", "u2", 30),
            purchase("c2", "u2", 30),
        ]});
        let (status, first) = send(&server, Some(ADMIN), Some("production"), &batch).await;
        assert_eq!(status, 200, "{n}: {first}");
        assert_eq!(
            (first["accepted"].as_u64(), first["duplicates"].as_u64()),
            (Some(4), Some(1)),
            "{n}"
        );
        let (_, before) = results(&server, "new_checkout_experiment", "metric=purchase").await;

        let (status, again) = send(&server, Some(ADMIN), Some("production"), &batch).await;
        assert_eq!(status, 200, "{n}: {again}");
        assert_eq!(
            (again["accepted"].as_u64(), again["duplicates"].as_u64()),
            (Some(0), Some(5)),
            "{n}"
        );
        let (_, after) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(before["variants"], after["variants"], "{n}");
        assert_eq!(after["variants"][1]["conversions"], 1, "{n}: {after}");
        close(&after["variants"][1]["mean"], 99.99, "treatment mean");
        server.stop().await;
    }
}

/// The seed's checkout experiment: 1,000 users evaluated through OFREP,
/// an exposure for the variant each got, purchases of 99.99 by treatment
/// users with i % 4 == 0 and control users with i % 6 == 0. The results
/// must be guidon-stats' on the counts this test saw.
#[tokio::test]
async fn results_are_the_statistics_of_what_was_sent() {
    for (db, server) in testing::servers("exp_seed").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let sdk = server.sdk_token("checkout", "production").await;
        let mut events = Vec::new();
        let (mut units, mut buyers) = ([0_u64; 2], [0_u64; 2]);
        for i in 0..1000 {
            let user = format!("user_{i}");
            let response = server
                .http
                .post(server.at("/ofrep/v1/evaluate/flags/new_checkout_experiment"))
                .bearer_auth(&sdk)
                .json(&json!({"context": {"targetingKey": user}}))
                .send()
                .await
                .expect("OFREP");
            let answer: Value = response.json().await.expect("OFREP body");
            let variant = answer["variant"].as_str().expect("variant").to_owned();
            let v = usize::from(variant == "treatment");
            units[v] += 1;
            events.push(json!({"type": "exposure", "event_id": format!("x{i}"),
                "flag": "new_checkout_experiment", "variant": variant,
                "context": {"targetingKey": user}, "timestamp": at(i)}));
            let buys = if v == 1 { i % 4 == 0 } else { i % 6 == 0 };
            if buys {
                buyers[v] += 1;
                events.push(purchase(&format!("p{i}"), &user, i + 3600));
            }
        }
        // The split of testdata/hashing/new_checkout_experiment.json.
        assert_eq!(units, [482, 518], "{n}");
        let (status, body) = send(&server, Some(&sdk), None, &json!({"events": events})).await;
        assert_eq!(status, 200, "{n}: {body}");

        let stats = |v: usize| {
            VariantStats::new(
                units[v],
                buyers[v],
                99.99 * buyers[v] as f64,
                99.99 * 99.99 * buyers[v] as f64,
            )
        };
        for (query, kind, method) in [
            ("metric=purchase", MetricKind::Binomial, "frequentist"),
            (
                "metric=purchase&kind=continuous&method=sequential",
                MetricKind::Continuous,
                "sequential",
            ),
            (
                "metric=purchase&method=bayesian&correction=holm",
                MetricKind::Binomial,
                "bayesian",
            ),
        ] {
            let (status, r) = results(&server, "new_checkout_experiment", query).await;
            assert_eq!(status, 200, "{n} {query}: {r}");
            let options = AnalysisOptions {
                metric: kind,
                sequential: method == "sequential",
                weights: Some(vec![50.0, 50.0]),
                correction: if method == "bayesian" {
                    Correction::Holm
                } else {
                    Correction::None
                },
                cuped: false,
                ..AnalysisOptions::default()
            };
            let want = analyze(&stats(0), &[stats(1)], &options).expect("analysis");
            assert_eq!(r["method"], method, "{n}");
            assert_eq!(r["control"], "control", "{n}");
            for (i, key) in ["control", "treatment"].iter().enumerate() {
                let got = &r["variants"][i];
                assert_eq!(got["key"], *key, "{n}");
                assert_eq!(got["units"], units[i], "{n} {key}");
                assert_eq!(got["conversions"], buyers[i], "{n} {key}");
                close(&got["rate"], want.variants[i].rate.expect("rate"), "rate");
                let wilson = want.variants[i].rate_interval.expect("interval");
                close(&got["rate_interval"]["lower"], wilson.lower, "wilson lower");
                close(&got["rate_interval"]["upper"], wilson.upper, "wilson upper");
                close(&got["mean"], want.variants[i].mean.expect("mean"), "mean");
            }
            let c = &r["comparisons"][0];
            assert_eq!(c["variant"], "treatment", "{n}");
            let relative = want.comparisons[0].relative.computed().expect("relative");
            close(&c["relative"]["estimate"], relative.test.estimate, "lift");
            close(&c["relative"]["p_value"], relative.test.p_value, "p-value");
            close(
                &c["relative"]["ci"]["lower"],
                relative.test.ci.lower,
                "ci lower",
            );
            close(
                &c["relative"]["ci"]["upper"],
                relative.test.ci.upper,
                "ci upper",
            );
            let absolute = want.comparisons[0].absolute.computed().expect("absolute");
            close(
                &c["absolute"]["estimate"],
                absolute.test.estimate,
                "absolute",
            );
            let bayes = want.comparisons[0].bayesian.computed().expect("bayesian");
            close(
                &c["bayesian"]["chance_to_win"],
                bayes.chance_to_win,
                "chance",
            );
            // The headline is guidon_stats' for the same analysis: the
            // absolute test decides, the relative lift (log-scale
            // interval) is the headline number, the Beta posterior gives
            // the chance to win of this binomial metric.
            let method_enum = match method {
                "sequential" => ReadMethod::Sequential,
                "bayesian" => ReadMethod::Bayesian,
                _ => ReadMethod::Frequentist,
            };
            let want_headline =
                serde_json::to_value(headline(&want, &want.comparisons[0], method_enum, None))
                    .expect("headline");
            same_json(
                &c["summary"],
                &want_headline,
                &format!("{n} {query}: summary"),
            );
            let interval = want.comparisons[0]
                .relative_interval
                .computed()
                .expect("relative interval");
            close(&c["summary"]["lift"], interval.estimate, "summary lift");
            assert_eq!(c["summary"]["scale"], "relative", "{n}");
            assert!(
                c["summary"]["ci"]["lower"].as_f64().expect("lower") > -1.0,
                "{n}: {c}"
            );
            let absolute_p = if method == "sequential" {
                absolute.sequential.as_ref().expect("sequential").p_value
            } else {
                absolute.adjusted_p_value.unwrap_or(absolute.test.p_value)
            };
            if method == "bayesian" {
                assert_eq!(c["summary"]["test"], "chance_to_win_beta", "{n}");
                let beta = want.beta.as_ref().and_then(|b| b.computed()).expect("beta");
                close(
                    &c["summary"]["chance_to_win"],
                    beta.comparisons[0].chance_to_win,
                    "beta chance",
                );
                close(
                    &c["relative"]["adjusted_p_value"],
                    relative.adjusted_p_value.expect("adjusted"),
                    "adjusted",
                );
            } else {
                close(&c["summary"]["p_value"], absolute_p, "summary p");
            }
            if kind == MetricKind::Continuous {
                close(
                    &c["summary"]["chance_to_win"],
                    bayes.chance_to_win,
                    "normal chance",
                );
                assert_eq!(r["bayesian"], Value::Null, "{n}");
            } else {
                assert_eq!(r["bayesian"]["method"], "beta_posterior", "{n}: {r}");
            }
            if method == "sequential" {
                let seq = relative.sequential.expect("sequential");
                close(
                    &c["relative"]["sequential"]["p_value"],
                    seq.p_value,
                    "seq p",
                );
            }
            close(&r["srm"]["p_value"], want.srm.p_value, "srm");
            assert_eq!(r["health"]["srm"]["status"], "ok", "{n}: {r}");
            assert_eq!(r["health"]["multiple_exposures"]["status"], "ok", "{n}");
            assert_eq!(r["health"]["too_few_units"]["status"], "ok", "{n}");
            assert_eq!(r["warnings"], json!([]), "{n}: {r}");
        }

        // The purchases came an hour after exposure: a 30-minute window
        // attributes none of them.
        let (status, r) = results(
            &server,
            "new_checkout_experiment",
            "metric=purchase&window_hours=0.5",
        )
        .await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(r["variants"][0]["conversions"], 0, "{n}: {r}");
        assert_eq!(r["variants"][1]["conversions"], 0, "{n}");
        let (_, r) = results(
            &server,
            "new_checkout_experiment",
            "metric=purchase&window_hours=2",
        )
        .await;
        assert_eq!(r["variants"][1]["conversions"], buyers[1], "{n}");
        // A metric nobody sent (a typo of one, say) while another has
        // conversions: 404 naming the metrics that exist, not a result of
        // zeros with "no warnings".
        let (status, r) = results(&server, "new_checkout_experiment", "metric=purchse").await;
        assert_eq!(
            (status, r["error"].as_str()),
            (404, Some("not_found")),
            "{n}: {r}"
        );
        assert!(
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"purchse\"") && m.contains("are: purchase")),
            "{n}: {r}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_skewed_split_and_multiple_exposures_are_flagged() {
    for (db, server) in testing::servers("exp_health").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        // 1,000 in control, 1,200 in treatment, against a 50/50 split
        // (p ≈ 2e-5), and 50 units (2.2%) seen in both.
        let mut events = Vec::new();
        for i in 0..2200 {
            let variant = if i < 1000 { "control" } else { "treatment" };
            events.push(exposure(&format!("e{i}"), &format!("u{i}"), variant, 0));
        }
        for i in 0..50 {
            events.push(exposure(
                &format!("again{i}"),
                &format!("u{i}"),
                "treatment",
                10,
            ));
        }
        let (status, body) = send(
            &server,
            Some(ADMIN),
            Some("production"),
            &json!({ "events": events }),
        )
        .await;
        assert_eq!(status, 200, "{n}: {body}");
        let (status, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(r["variants"][0]["units"], 950, "{n}: {r}");
        assert_eq!(r["variants"][1]["units"], 1200, "{n}");
        assert_eq!(r["exposures"]["multiple_exposure_units"], 50, "{n}");
        assert_eq!(r["exposures"]["units"], 2200, "{n}");
        assert_eq!(r["health"]["srm"]["status"], "mismatch", "{n}: {r}");
        assert_eq!(r["srm"]["mismatch"], true, "{n}");
        assert_eq!(
            r["health"]["multiple_exposures"]["status"], "warning",
            "{n}"
        );
        let warnings = r["warnings"].as_array().expect("warnings");
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("Sample-ratio mismatch"))),
            "{n}: {r}"
        );
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("more than one variant"))),
            "{n}: {r}"
        );
        // No metric has conversions yet: said, not silently zero.
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("No conversions of any metric"))),
            "{n}: {r}"
        );
        // A failed health check withholds every verdict and says what to check.
        let withheld = r["verdict_withheld"].as_str().unwrap_or_default();
        assert!(
            withheld.contains("sample-ratio mismatch")
                && withheld.contains("more than one variant")
                && withheld.contains("check that"),
            "{n}: {r}"
        );
        let summary = &r["comparisons"][0]["summary"];
        assert_eq!(summary["verdict"], "withheld", "{n}: {summary}");
        assert_eq!(summary["significant"], false, "{n}");
        for method in ["bayesian", "sequential"] {
            let (_, r) = results(
                &server,
                "new_checkout_experiment",
                &format!("metric=purchase&method={method}"),
            )
            .await;
            assert_eq!(
                r["comparisons"][0]["summary"]["verdict"], "withheld",
                "{n} {method}: {r}"
            );
        }

        // Too few units: a fresh flag with a handful.
        server
            .put_flag(
                "production",
                json!({"key": "tiny", "enabled": true,
                       "variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 50}]}),
            )
            .await;
        let few: Vec<Value> = (0..10)
            .map(|i| {
                json!({"type": "exposure", "event_id": format!("t{i}"), "flag": "tiny",
                       "variant": if i % 2 == 0 { "a" } else { "b" },
                       "context": {"user_id": format!("t{i}")}, "timestamp": at(0)})
            })
            .collect();
        send(
            &server,
            Some(ADMIN),
            Some("production"),
            &json!({ "events": few }),
        )
        .await;
        let (status, r) = results(&server, "tiny", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(
            r["health"]["too_few_units"]["status"], "warning",
            "{n}: {r}"
        );
        assert_eq!(r["health"]["srm"]["status"], "not_enough_data", "{n}");
        // No conversions: the tests cannot be computed, and say why.
        assert_eq!(
            r["comparisons"][0]["relative"]["status"], "unavailable",
            "{n}: {r}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn who_may_send_events_and_read_results() {
    for (db, server) in testing::servers("exp_auth").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        server.put_flag("development", checkout_flag()).await;
        let sdk = server.sdk_token("app", "production").await;
        let batch = json!({"events": [exposure("e1", "u1", "control", 0)]});

        let (status, body) = send(&server, None, None, &batch).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{n}"
        );
        let (status, _) = send(&server, Some("gdn_wrong"), None, &batch).await;
        assert_eq!(status, 401, "{n}");
        // An sdk token writes to its own environment only.
        let (status, body) = send(&server, Some(&sdk), Some("development"), &batch).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{n}"
        );
        let (status, _) = send(&server, Some(&sdk), Some("production"), &batch).await;
        assert_eq!(status, 200, "{n}");
        // An admin token names the environment.
        let (status, body) = send(&server, Some(ADMIN), None, &batch).await;
        assert_eq!(status, 400, "{n}: {body}");
        let (status, _) = send(&server, Some(ADMIN), Some("development"), &batch).await;
        assert_eq!(status, 200, "{n}");
        let (status, _) = send(&server, Some(ADMIN), Some("staging"), &batch).await;
        assert_eq!(status, 404, "{n}");

        // Results: admin tokens only (an sdk token ships inside apps).
        let path = results_path("new_checkout_experiment", "metric=purchase");
        let anonymous = server.http.get(server.at(&path)).send().await.expect("GET");
        assert_eq!(anonymous.status(), 401, "{n}");
        let as_sdk = server
            .http
            .get(server.at(&path))
            .bearer_auth(&sdk)
            .send()
            .await
            .expect("GET");
        assert_eq!(as_sdk.status(), 403, "{n}");
        let (status, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(r["variants"][0]["units"], 1, "{n}: one per environment");

        for (flag, query, want, code) in [
            ("nope", "metric=purchase", 404, "not_found"),
            ("new_checkout_experiment", "", 404, "not_found"),
            (
                "new_checkout_experiment",
                "metric=purchase&method=magic",
                400,
                "bad_request",
            ),
            (
                "new_checkout_experiment",
                "metric=purchase&correction=x",
                400,
                "bad_request",
            ),
            (
                "new_checkout_experiment",
                "metric=purchase&window_hours=-1",
                400,
                "bad_request",
            ),
            (
                "new_checkout_experiment",
                "metric=purchase&typo=1",
                400,
                "bad_request",
            ),
        ] {
            let (status, body) = results(&server, flag, query).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (want, Some(code)),
                "{n} {query}: {body}"
            );
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        server.stop().await;
    }
}

/// The degenerate experiments: no conversions at all, and every unit in
/// one variant (the other empty). Results still answer, the empty arm's
/// comparison is unavailable rather than a number, and the split is a
/// sample-ratio mismatch.
#[tokio::test]
async fn zero_conversions_and_an_empty_variant_still_answer() {
    for (db, server) in testing::servers("exp_degenerate").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let events: Vec<Value> = (0..300)
            .map(|i| exposure(&format!("e{i}"), &format!("u{i}"), "control", 0))
            .collect();
        let (status, body) = send(
            &server,
            Some(ADMIN),
            Some("production"),
            &json!({ "events": events }),
        )
        .await;
        assert_eq!(status, 200, "{n}: {body}");
        let (status, r) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {r}");
        assert_eq!(r["variants"][0]["units"], 300, "{n}: {r}");
        assert_eq!(r["variants"][1]["units"], 0, "{n}: {r}");
        assert_eq!(r["variants"][0]["conversions"], 0, "{n}: {r}");
        assert_eq!(r["health"]["srm"]["status"], "mismatch", "{n}: {r}");
        let text = r.to_string();
        assert!(
            !text.contains("NaN") && !text.contains("inf"),
            "{n}: {text}"
        );
    }
}

fn conversion_of(id: &str, user: &str, value: f64, metric: &str, seconds: i64) -> Value {
    json!({"type": "conversion", "event_id": id, "metric": metric, "value": value,
           "context": {"user_id": user}, "timestamp": at(seconds)})
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn detail_paths(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|p| p["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The catalogue's definitions are checked at the field, versioned, and
/// protected from deleting what an experiment or a ratio uses.
#[tokio::test]
async fn the_metric_catalogue_is_checked_and_versioned() {
    for (db, server) in testing::servers("exp_catalogue").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let metrics = "/api/v1/envs/production/metrics";
        let (status, body) = call(
            &server,
            Method::PUT,
            &format!("{metrics}/buy"),
            Some(json!({"kind": "binomial", "event": "purchase", "description": "bought"})),
        )
        .await;
        assert_eq!(
            (status, body["version"].as_u64()),
            (201, Some(1)),
            "{n}: {body}"
        );
        for (key, definition, path) in [
            (
                "rev",
                json!({"kind": "sum", "event": "purchase", "cap": {"percentile": 150}}),
                "cap.percentile",
            ),
            ("rev", json!({"kind": "sum"}), "event"),
            (
                "r",
                json!({"kind": "ratio", "numerator": "buy", "denominator": "buy"}),
                "denominator",
            ),
            (
                "r",
                json!({"kind": "ratio", "numerator": "r", "denominator": "buy"}),
                "numerator",
            ),
            (
                "r",
                json!({"kind": "ratio", "numerator": "nope", "denominator": "buy"}),
                "numerator",
            ),
        ] {
            let (status, body) = call(
                &server,
                Method::PUT,
                &format!("{metrics}/{key}"),
                Some(definition),
            )
            .await;
            assert_eq!(status, 422, "{n} {path}: {body}");
            assert!(
                detail_paths(&body).contains(&path.to_owned()),
                "{n} {path}: {body}"
            );
        }
        let (status, body) = call(
            &server,
            Method::PUT,
            &format!("{metrics}/buy"),
            Some(json!({"kind": "binomial", "evnt": "purchase"})),
        )
        .await;
        assert_eq!(status, 400, "{n}: unknown field: {body}");
        // Nothing invalid was stored.
        let (_, list) = call(&server, Method::GET, metrics, None).await;
        let keys: Vec<&str> = list["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| m["key"].as_str())
            .collect();
        assert_eq!(keys, ["buy"], "{n}: {list}");
        // A stale version is refused.
        let stale = server
            .admin(Method::PUT, &format!("{metrics}/buy"))
            .header("If-Match", "7")
            .json(&json!({"kind": "binomial", "event": "order"}))
            .send()
            .await
            .expect("PUT");
        assert_eq!(stale.status(), 412, "{n}");
        let (status, body) = call(&server, Method::GET, &format!("{metrics}/buyy"), None).await;
        assert_eq!(status, 404, "{n}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("its metrics: buy")),
            "{n}: {body}"
        );

        // An experiment naming what does not exist: 422 at each field.
        let experiments = "/api/v1/envs/production/experiments";
        let (status, body) = call(
            &server,
            Method::PUT,
            &format!("{experiments}/checkout_test"),
            Some(json!({"flag": "nope", "primary_metric": "buyy", "stop": "yesterday"})),
        )
        .await;
        assert_eq!(status, 422, "{n}: {body}");
        let paths = detail_paths(&body);
        for path in ["primary_metric", "stop", "flag"] {
            assert!(paths.contains(&path.to_owned()), "{n} {path}: {body}");
        }
        assert!(body.to_string().contains("its metrics: buy"), "{n}: {body}");
        let (status, body) = call(
            &server,
            Method::PUT,
            &format!("{experiments}/checkout_test"),
            Some(json!({"flag": "new_checkout_experiment", "primary_metric": "buy"})),
        )
        .await;
        assert_eq!(status, 201, "{n}: {body}");
        assert!(body["start"].as_str().is_some(), "{n}: started now: {body}");
        // A metric an experiment uses cannot be deleted.
        let (status, body) = call(&server, Method::DELETE, &format!("{metrics}/buy"), None).await;
        assert_eq!(status, 409, "{n}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("checkout_test")),
            "{n}"
        );
        let (status, body) = call(
            &server,
            Method::GET,
            &format!("{experiments}/checkout_test"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("running")),
            "{n}: {body}"
        );
        // Unknown experiment: 404 naming those that exist; a parameter
        // without ?metric=: 400.
        let (status, body) = results(&server, "checkout_tset", "").await;
        assert_eq!(status, 404, "{n}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("its experiments: checkout_test")),
            "{n}: {body}"
        );
        let (status, _) = results(&server, "checkout_test", "alpha=0.1").await;
        assert_eq!(status, 400, "{n}");
        server.stop().await;
    }
}

/// An experiment's results: every metric of the catalogue it names, the
/// primary and secondary corrected together, the guardrail judged on its
/// own, a percentile cap resolved from the data, a ratio, and a stop that
/// ends what counts.
#[tokio::test]
async fn an_experiment_reads_all_its_metrics() {
    for (db, server) in testing::servers("exp_report").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let mut events = Vec::new();
        for i in 0..400 {
            events.push(exposure(&format!("ec{i}"), &format!("c{i}"), "control", 0));
            events.push(exposure(
                &format!("et{i}"),
                &format!("t{i}"),
                "treatment",
                0,
            ));
        }
        for i in 0..40 {
            events.push(conversion_of(
                &format!("pc{i}"),
                &format!("c{i}"),
                50.0,
                "purchase",
                60,
            ));
        }
        // One whale in control: capped at the 95th percentile (50).
        events.push(conversion_of("whale", "c0", 10_000.0, "purchase", 70));
        for i in 0..70 {
            events.push(conversion_of(
                &format!("pt{i}"),
                &format!("t{i}"),
                50.0,
                "purchase",
                60,
            ));
        }
        for i in 0..5 {
            events.push(conversion_of(
                &format!("rc{i}"),
                &format!("c{}", 100 + i),
                1.0,
                "refund",
                80,
            ));
        }
        for i in 0..40 {
            events.push(conversion_of(
                &format!("rt{i}"),
                &format!("t{}", 100 + i),
                1.0,
                "refund",
                80,
            ));
        }
        for chunk in events.chunks(5000) {
            let (status, body) = send(
                &server,
                Some(ADMIN),
                Some("production"),
                &json!({ "events": chunk }),
            )
            .await;
            assert_eq!(status, 200, "{n}: {body}");
        }
        let metrics = "/api/v1/envs/production/metrics";
        for (key, definition) in [
            ("buy", json!({"kind": "binomial", "event": "purchase"})),
            (
                "revenue",
                json!({"kind": "sum", "event": "purchase", "cap": {"percentile": 95}}),
            ),
            (
                "revenue_per_buyer",
                json!({"kind": "ratio", "numerator": "revenue", "denominator": "buy"}),
            ),
            (
                "refunds",
                json!({"kind": "sum", "event": "refund", "direction": "lower", "guardrail": true}),
            ),
        ] {
            let (status, body) = call(
                &server,
                Method::PUT,
                &format!("{metrics}/{key}"),
                Some(definition),
            )
            .await;
            assert_eq!(status, 201, "{n} {key}: {body}");
        }
        let (status, body) = call(
            &server,
            Method::PUT,
            "/api/v1/envs/production/experiments/checkout_test",
            Some(
                json!({"flag": "new_checkout_experiment", "primary_metric": "buy",
                        "secondary_metrics": ["revenue", "revenue_per_buyer"],
                        "guardrail_metrics": ["refunds"],
                        "hypothesis": "a single page converts more",
                        "start": "2026-11-20T00:00:00Z"}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{n}: {body}");

        let (status, r) = results(&server, "checkout_test", "").await;
        assert_eq!(status, 200, "{n}: {r}");
        let roles: Vec<(&str, &str)> = r["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|m| {
                (
                    m["key"].as_str().unwrap_or(""),
                    m["role"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                ("buy", "primary"),
                ("revenue", "secondary"),
                ("revenue_per_buyer", "secondary"),
                ("refunds", "guardrail")
            ],
            "{n}"
        );
        assert_eq!(r["correction"]["tests"], 3, "{n}: {}", r["correction"]);
        assert_eq!(r["status"], "running", "{n}");

        // The primary: 40/400 against 70/400, its p-value corrected (Holm
        // over three tests makes it larger, never smaller).
        let buy = &r["metrics"][0];
        assert_eq!(buy["variants"][0]["conversions"], 40, "{n}: {buy}");
        assert_eq!(buy["variants"][1]["conversions"], 70, "{n}");
        let want = analyze(
            &VariantStats::binomial(400, 40),
            &[VariantStats::binomial(400, 70)],
            &AnalysisOptions {
                weights: Some(vec![50.0, 50.0]),
                ..AnalysisOptions::default()
            },
        )
        .expect("analysis");
        let raw = want.comparisons[0]
            .absolute
            .computed()
            .expect("absolute")
            .test
            .p_value;
        let summary = &buy["comparisons"][0]["summary"];
        let adjusted = summary["p_value"].as_f64().expect("p");
        assert!(
            adjusted >= raw && adjusted <= 3.0 * raw + 1e-12,
            "{n}: {raw} → {adjusted}"
        );
        assert_eq!(summary["verdict"], "increase", "{n}: {summary}");
        assert_eq!(buy["comparisons"][0]["outcome"], "better", "{n}");

        // Revenue capped at the 95th percentile of the buyers' values (50):
        // the whale counts 50.
        let revenue = &r["metrics"][1];
        assert_eq!(revenue["cap"], 50.0, "{n}: {revenue}");
        close(
            &revenue["variants"][0]["mean"],
            40.0 * 50.0 / 400.0,
            "capped mean",
        );
        // Revenue per buyer: 50 in both arms once capped.
        let ratio = &r["metrics"][2];
        assert_eq!(ratio["kind"], "ratio", "{n}");
        close(&ratio["variants"][0]["ratio"], 50.0, "ratio control");
        close(&ratio["variants"][1]["ratio"], 50.0, "ratio treatment");

        // The guardrail: 40 refunds against 5, lower is better: breached.
        let guardrail = &r["guardrails"][0];
        assert_eq!(guardrail["metric"], "refunds", "{n}: {guardrail}");
        assert_eq!(guardrail["status"], "breached", "{n}: {guardrail}");
        assert_eq!(guardrail["breached_by"], json!(["treatment"]), "{n}");
        assert_eq!(r["metrics"][3]["comparisons"][0]["outcome"], "worse", "{n}");

        // Planning from the experiment's own baseline (40/400 = 10 %) and
        // traffic: a 10 % lift needs 14,751 units per arm.
        let (status, plan) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/experiments/checkout_test/plan?mde=0.1&days=30",
            None,
        )
        .await;
        assert_eq!(status, 200, "{n}: {plan}");
        close(&plan["baseline"]["rate"], 0.1, "baseline");
        assert_eq!(plan["units_per_arm"], 14_751, "{n}: {plan}");
        let daily = plan["observed"]["daily_units"].as_f64().expect("daily");
        let elapsed = plan["observed"]["days_elapsed"].as_f64().expect("elapsed");
        close(&json!(daily * elapsed), 800.0, "units over the days");
        close(
            &plan["days_needed"],
            14_751.0 / (daily / 2.0),
            "days needed",
        );
        let now = plan["mde_now"].as_f64().expect("mde now");
        let later = plan["mde_at_days"].as_f64().expect("mde at 30 days");
        assert!(
            now > later && later > 0.0,
            "{n}: more days detect less: {plan}"
        );
        let (status, body) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/experiments/checkout_test/plan?mde=0",
            None,
        )
        .await;
        assert_eq!(status, 400, "{n}: {body}");
        // Cumulative days since the start: everything happened on the
        // first day, so every day shows it.
        let (status, daily) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/experiments/checkout_test/daily",
            None,
        )
        .await;
        assert_eq!(status, 200, "{n}: {daily}");
        let days = daily["days"].as_array().expect("days");
        assert_eq!(days[0]["day"], "2026-11-20", "{n}: {daily}");
        assert!(days.len() >= 2, "{n}");
        for day in days {
            assert_eq!(day["variants"][0]["units"], 400, "{n}: {day}");
            assert_eq!(day["variants"][1]["conversions"], 70, "{n}: {day}");
        }
        let (status, _) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/experiments/checkout_test/daily?metric=nope",
            None,
        )
        .await;
        assert_eq!(status, 404, "{n}");

        // Stop it: what happens afterwards does not count.
        let (status, body) = call(
            &server,
            Method::POST,
            "/api/v1/envs/production/experiments/checkout_test/stop",
            None,
        )
        .await;
        assert_eq!(status, 200, "{n}: {body}");
        assert!(body["stop"].as_str().is_some(), "{n}: {body}");
        let (status, _) = call(
            &server,
            Method::POST,
            "/api/v1/envs/production/experiments/checkout_test/stop",
            None,
        )
        .await;
        assert_eq!(status, 409, "{n}: stopped twice");
        let later = guidon_engine::Timestamp::now()
            .checked_add(jiff_seconds(60))
            .expect("time")
            .to_string();
        let late = json!({"events": [
            {"type": "exposure", "event_id": "late", "flag": "new_checkout_experiment",
             "variant": "control", "context": {"user_id": "late_user"}, "timestamp": later},
            {"type": "conversion", "event_id": "late_buy", "metric": "purchase", "value": 5,
             "context": {"user_id": "t300"}, "timestamp": later}
        ]});
        let (status, body) = send(&server, Some(ADMIN), Some("production"), &late).await;
        assert_eq!(status, 200, "{n}: {body}");
        let (_, r) = results(&server, "checkout_test", "").await;
        assert_eq!(r["status"], "stopped", "{n}");
        assert_eq!(r["metrics"][0]["variants"][0]["units"], 400, "{n}: {r}");
        assert_eq!(r["metrics"][0]["variants"][1]["conversions"], 70, "{n}");
        // The flag's one-metric reading still answers with ?metric=.
        let (status, one) = results(&server, "new_checkout_experiment", "metric=purchase").await;
        assert_eq!(status, 200, "{n}: {one}");
        assert_eq!(
            one["variants"][0]["units"], 401,
            "{n}: not bounded by the experiment"
        );
        server.stop().await;
    }
}

/// CUPED end to end: each unit's purchases in the 14 days before its
/// exposure are the covariate of its purchases after. On synthetic data
/// with a known correlation the server's adjusted analysis is
/// guidon_stats' over the same sums, the interval narrows by
/// √(1 − ρ²) as theory says, and purchases older than the window do not
/// count.
#[tokio::test]
async fn cuped_narrows_the_interval_as_theory_says() {
    for (db, server) in testing::servers("exp_cuped").await {
        let n = db.name;
        server.put_flag("production", checkout_flag()).await;
        let day = 86_400;
        let mut rng = testing::Rng::new(7);
        let mut events = Vec::new();
        // Per arm: (Σx, Σx², Σy, Σy², Σxy) over its units, x the spend in
        // the window, y the spend after exposure.
        let mut sums = [[0.0_f64; 5]; 2];
        for i in 0..3000 {
            let arm = i % 2;
            let variant = if arm == 0 { "control" } else { "treatment" };
            let user = format!("u{i}");
            let x = 50.0 + rng.below(100) as f64;
            let noise = rng.below(41) as f64 - 20.0;
            let y = x + noise + if arm == 1 { 4.0 } else { 0.0 };
            // Exposure on day 14 (+2 h); the spend before it on day 5
            // (inside the 14-day window), an older purchase on day 0
            // (outside); the spend after it an hour later.
            let exposed = 14 * day + 7200;
            events.push(exposure(&format!("e{i}"), &user, variant, exposed));
            events.push(conversion_of(
                &format!("pre{i}"),
                &user,
                x,
                "purchase",
                5 * day,
            ));
            events.push(conversion_of(
                &format!("old{i}"),
                &user,
                1000.0,
                "purchase",
                0,
            ));
            events.push(conversion_of(
                &format!("post{i}"),
                &user,
                y,
                "purchase",
                exposed + 3600,
            ));
            let s = &mut sums[arm];
            s[0] += x;
            s[1] += x * x;
            s[2] += y;
            s[3] += y * y;
            s[4] += x * y;
        }
        for chunk in events.chunks(6000) {
            let (status, body) = send(
                &server,
                Some(ADMIN),
                Some("production"),
                &json!({ "events": chunk }),
            )
            .await;
            assert_eq!(status, 200, "{n}: {}", body["rejected"][0]);
        }
        let query = "metric=purchase&kind=continuous";
        let (status, plain) = results(&server, "new_checkout_experiment", query).await;
        assert_eq!(status, 200, "{n}: {plain}");
        let (status, adjusted) = results(
            &server,
            "new_checkout_experiment",
            &format!("{query}&cuped_days=14"),
        )
        .await;
        assert_eq!(status, 200, "{n}: {adjusted}");
        assert_eq!(
            adjusted["cuped"]["applied"], true,
            "{n}: {}",
            adjusted["cuped"]
        );

        // The same analysis computed here from the generated sums.
        let stats: Vec<VariantStats> = sums
            .iter()
            .map(|s| VariantStats::new(1500, 1500, s[2], s[3]).with_covariate(s[0], s[1], s[4]))
            .collect();
        let want = analyze(
            &stats[0],
            &stats[1..],
            &AnalysisOptions {
                metric: MetricKind::Continuous,
                weights: Some(vec![50.0, 50.0]),
                ..AnalysisOptions::default()
            },
        )
        .expect("analysis");
        let theta = want.cuped.expect("cuped").theta;
        close(&adjusted["cuped"]["theta"], theta, "theta");
        let absolute = want.comparisons[0].absolute.computed().expect("absolute");
        let got = &adjusted["comparisons"][0]["absolute"];
        close(&got["estimate"], absolute.test.estimate, "adjusted lift");
        close(
            &got["ci"]["lower"],
            absolute.test.ci.lower,
            "adjusted lower",
        );

        // Theory: the half-width shrinks by √(1 − ρ²), ρ the correlation
        // of x and y (pooled, within arms), and each arm's variance by ρ².
        let width = |r: &Value| {
            let ci = &r["comparisons"][0]["absolute"]["ci"];
            ci["upper"].as_f64().expect("upper") - ci["lower"].as_f64().expect("lower")
        };
        let m = 1500.0;
        let rho_of = |s: &[f64; 5]| {
            let cov = (s[4] - s[0] * s[2] / m) / (m - 1.0);
            let vx = (s[1] - s[0] * s[0] / m) / (m - 1.0);
            let vy = (s[3] - s[2] * s[2] / m) / (m - 1.0);
            cov / (vx * vy).sqrt()
        };
        let rho = (rho_of(&sums[0]) + rho_of(&sums[1])) / 2.0;
        assert!(rho > 0.8, "{n}: the data is built correlated, ρ = {rho}");
        let ratio = width(&adjusted) / width(&plain);
        let theory = (1.0 - rho * rho).sqrt();
        assert!(
            (ratio - theory).abs() < 0.02,
            "{n}: narrowed by {ratio}, theory {theory} (ρ = {rho})"
        );
        for (i, reduction) in adjusted["cuped"]["variance_reduction"]
            .as_array()
            .expect("reduction")
            .iter()
            .enumerate()
        {
            let r = reduction.as_f64().expect("a share");
            let rho_i = rho_of(&sums[i]);
            assert!(
                (r - rho_i * rho_i).abs() < 0.01,
                "{n}: arm {i}: {r} vs ρ² {}",
                rho_i * rho_i
            );
        }
        // The old purchases (1,000 each, before the window) are not in x:
        // the server's θ and interval are the ones computed without them.
        // A window longer than a year is refused.
        let (status, body) = results(
            &server,
            "new_checkout_experiment",
            &format!("{query}&cuped_days=400"),
        )
        .await;
        assert_eq!(status, 400, "{n}: {body}");
        server.stop().await;
    }
}
