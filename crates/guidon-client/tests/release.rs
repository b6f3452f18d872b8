//! A guarded rollout end to end: a real server, the SDK evaluating a
//! release-shaped flag for new users (recording exposures on both sides)
//! and sending the errors they hit, a plan with holds of a second, and a
//! rollback decided by the guard, written by the actor `guard` with its
//! evidence, and seen by the SDK on its stream.

use std::time::{Duration, Instant};

use guidon_client::{Client, EventOptions};
use guidon_engine::Context;
use guidon_server::testing::{self, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

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

fn plan(guard_metric: &str) -> Value {
    json!({"steps": [{"percentage": 10, "hold_seconds": 1, "min_units": 50},
                     {"percentage": 50, "hold_seconds": 1},
                     {"percentage": 100, "hold_seconds": 1}],
           "guards": [{"metric": guard_metric, "kind": "binomial", "worse": "higher", "on_breach": "rollback"}],
           "tuning": 200})
}

/// Whether user `i` hits an error: 40 % with the new behaviour, 2 % with the old.
fn errs(i: u64, new: bool) -> bool {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (h % 100) < if new { 40 } else { 2 }
}

#[tokio::test]
async fn a_regressed_release_is_rolled_back_by_its_guard() {
    for (db, server) in testing::servers("release_e2e").await {
        let n = db.name;
        server
            .put_flag(
                "production",
                json!({"key": "new_search", "enabled": true,
                       "variants": [{"key": "old", "weight": 0, "value": "v1"},
                                    {"key": "new", "weight": 100, "value": "v2"}],
                       "off_variant": "old", "rollout": {"percentage": 0}}),
            )
            .await;
        let (status, body) = call(
            &server,
            Method::PUT,
            "/api/v1/envs/production/metrics/errors",
            Some(json!({"kind": "binomial", "event": "error", "direction": "lower", "guardrail": true})),
        )
        .await;
        assert_eq!(status, 201, "{n}: {body}");
        let path = "/api/v1/envs/production/flags/new_search/release";

        // Bad plans: 422 at the field, nothing started.
        let mut down = plan("errors");
        down["steps"][1]["percentage"] = json!(5);
        let mut zero = plan("errors");
        zero["steps"][0]["hold_seconds"] = json!(0);
        for (body, field) in [
            (down, "steps[1].percentage"),
            (zero, "steps[0].hold_seconds"),
            (plan("erors"), "guards[0].metric"),
        ] {
            let (status, answer) = call(&server, Method::PUT, path, Some(body)).await;
            assert_eq!(status, 422, "{n} {field}: {answer}");
            assert!(
                answer["details"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|p| p["path"] == field)),
                "{n} {field}: {answer}"
            );
        }
        let (status, _) = call(&server, Method::GET, path, None).await;
        assert_eq!(status, 404, "{n}: nothing started");

        let (status, started) = call(&server, Method::PUT, path, Some(plan("errors"))).await;
        assert_eq!(status, 201, "{n}: {started}");
        assert!(
            started["test"]
                .as_str()
                .is_some_and(|t| t.contains("confidence sequence"))
        );

        let sdk = server.sdk_token("app", "production").await;
        let client = Client::builder(&server.base, &sdk)
            .events(EventOptions {
                flush_interval: Duration::from_millis(200),
                ..EventOptions::default()
            })
            .build()
            .await
            .expect("client");
        // New users arrive; each is evaluated (an exposure on either side)
        // and reports the error it hit, until the guard decides.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut user = 0_u64;
        let mut served_new = 0;
        let release = loop {
            for _ in 0..100 {
                user += 1;
                let ctx = Context::new().with("user_id", format!("u{user}"));
                let new = client.variant("new_search", &ctx).as_deref() == Some("new");
                served_new += u64::from(new);
                if errs(user, new) {
                    client.track("error", &ctx, None);
                }
            }
            client.flush().await.expect("flush");
            let (_, release) = call(&server, Method::GET, path, None).await;
            if release["status"] != "running" || Instant::now() > deadline {
                break release;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(release["status"], "rolled_back", "{n}: {release}");
        let decisions = release["decisions"].as_array().expect("decisions");
        let breach = decisions.last().expect("a decision");
        assert_eq!(breach["decision"], "breach", "{n}: {breach}");
        let evidence = &breach["evidence"][0];
        assert!(
            evidence["interval"]["lower"]
                .as_f64()
                .is_some_and(|l| l > 0.0)
                && evidence["treatment_mean"].as_f64() > evidence["control_mean"].as_f64(),
            "{n}: {evidence}"
        );
        println!(
            "{n}: rolled back after {user} users ({served_new} served the new behaviour); evidence {evidence}"
        );

        // The rollback is a revision by the guard, with the evidence.
        let (_, history) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/flags/new_search/history",
            None,
        )
        .await;
        let actors: Vec<&str> = history["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|e| e["actor"].as_str())
            .collect();
        assert!(
            actors
                .iter()
                .any(|a| a.starts_with("guard: rollback to 0%, errors breached (errors: ")),
            "{n}: {actors:?}"
        );
        // And the SDK has it from its stream: everyone gets the old behaviour.
        let seen = testing::eventually(Duration::from_secs(10), || {
            (0..200).all(|i| {
                let ctx = Context::new().with("user_id", format!("after{i}"));
                client.variant("new_search", &ctx).as_deref() == Some("old")
            })
        })
        .await;
        assert!(
            seen.is_some(),
            "{n}: the SDK still serves the new behaviour"
        );

        // People act on it: nothing to resume after a rollback.
        let (status, _) = call(&server, Method::POST, &format!("{path}/resume"), None).await;
        assert_eq!(status, 409, "{n}");
        drop(client);
        server.stop().await;
    }
}

/// A healthy release advances through every step to completion, each
/// advance a revision by the guard.
#[tokio::test]
async fn a_healthy_release_completes() {
    let db = testing::sqlite("release_ok");
    let server = TestServer::start(&db.url).await;
    server
        .put_flag(
            "production",
            json!({"key": "calm", "enabled": true,
                   "variants": [{"key": "old", "weight": 0}, {"key": "new", "weight": 100}],
                   "off_variant": "old", "rollout": {"percentage": 0}}),
        )
        .await;
    call(
        &server,
        Method::PUT,
        "/api/v1/envs/production/metrics/errors",
        Some(json!({"kind": "binomial", "event": "error"})),
    )
    .await;
    let path = "/api/v1/envs/production/flags/calm/release";
    let (status, body) = call(&server, Method::PUT, path, Some(plan("errors"))).await;
    assert_eq!(status, 201, "{body}");
    let sdk = server.sdk_token("app", "production").await;
    let client = Client::builder(&server.base, &sdk)
        .events(EventOptions {
            flush_interval: Duration::from_millis(200),
            ..EventOptions::default()
        })
        .build()
        .await
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut user = 0_u64;
    let release = loop {
        for _ in 0..100 {
            user += 1;
            let ctx = Context::new().with("user_id", format!("c{user}"));
            let new = client.variant("calm", &ctx).as_deref() == Some("new");
            // The same 2 % on both sides.
            if errs(user, false) {
                let _ = new;
                client.track("error", &ctx, None);
            }
        }
        client.flush().await.expect("flush");
        let (_, release) = call(&server, Method::GET, path, None).await;
        if release["status"] != "running" || Instant::now() > deadline {
            break release;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(release["status"], "completed", "{release}");
    let (_, flag) = call(
        &server,
        Method::GET,
        "/api/v1/envs/production/flags/calm",
        None,
    )
    .await;
    assert_eq!(flag["flag"]["rollout"]["percentage"], 100.0, "{flag}");
    let (_, history) = call(
        &server,
        Method::GET,
        "/api/v1/envs/production/flags/calm/history",
        None,
    )
    .await;
    let advances = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| {
            e["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("guard: advance to"))
        })
        .count();
    assert_eq!(advances, 2, "{history}");
    drop(client);
    server.stop().await;
}
