//! Scheduled changes, with real servers on both backends: applied when
//! due (a patch, a replacement, a deletion), cancellable until then,
//! refused when in the past or in an unknown time zone, failing rather
//! than overwriting a flag changed meanwhile; exactly once with three
//! instances racing on one database; and a schedule that passed while
//! every instance was down applied at the next start, said to be late.

use std::time::Duration;

use guidon_engine::Timestamp;
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

fn in_seconds(seconds: i64) -> String {
    Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .expect("time")
        .to_string()
}

fn flag(key: &str) -> Value {
    json!({"key": key, "enabled": false, "description": "v1"})
}

async fn schedule(server: &TestServer, key: &str, body: Value) -> (u16, Value) {
    call(
        server,
        Method::POST,
        &format!("/api/v1/envs/production/flags/{key}/schedule"),
        Some(body),
    )
    .await
}

async fn schedule_status(server: &TestServer, id: i64) -> Value {
    let (status, body) = call(
        server,
        Method::GET,
        &format!("/api/v1/envs/production/schedules/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (up to 20 s) until schedule `id` is no longer pending.
async fn settled(server: &TestServer, id: i64) -> Value {
    for _ in 0..200 {
        let body = schedule_status(server, id).await;
        if body["status"] != "pending" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("schedule {id} still pending after 20 s");
}

async fn history(server: &TestServer, key: &str) -> Vec<Value> {
    let (status, body) = call(
        server,
        Method::GET,
        &format!("/api/v1/envs/production/flags/{key}/history"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["history"].as_array().cloned().unwrap_or_default()
}

fn actors(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e["actor"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn scheduled_changes_are_applied_when_due_and_checked_before() {
    for (db, server) in testing::servers("schedule").await {
        let n = db.name;
        server.put_flag("production", flag("launch")).await;
        server.put_flag("production", flag("retired")).await;

        // Bad input: nothing is stored.
        for (body, path) in [
            (
                json!({"at": "2020-01-01T00:00:00Z", "patch": {"enabled": true}}),
                "at",
            ),
            (
                json!({"at": "2030-01-01T09:00", "patch": {"enabled": true}}),
                "time_zone",
            ),
            (
                json!({"at": "2030-01-01T09:00", "time_zone": "Mars/Olympus", "patch": {"enabled": true}}),
                "time_zone",
            ),
            (json!({"at": "tomorrow", "patch": {"enabled": true}}), "at"),
            (json!({"at": in_seconds(60)}), "patch"),
            (
                json!({"at": in_seconds(60), "patch": {"enabled": true}, "delete": true}),
                "patch",
            ),
        ] {
            let (status, answer) = schedule(&server, "launch", body.clone()).await;
            assert_eq!(status, 422, "{n} {body}: {answer}");
            assert_eq!(answer["details"][0]["path"], path, "{n} {body}: {answer}");
        }
        let (status, answer) = schedule(
            &server,
            "launch",
            json!({"at": in_seconds(60), "patch": {"enabled": "yes"}}),
        )
        .await;
        assert_eq!(
            status, 400,
            "{n}: a patch that makes an invalid flag: {answer}"
        );
        assert!(
            answer["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("patch")),
            "{n}: {answer}"
        );
        let (status, _) = schedule(
            &server,
            "nope",
            json!({"at": in_seconds(60), "patch": {"enabled": true}}),
        )
        .await;
        assert_eq!(status, 404, "{n}");
        let (_, list) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/schedules",
            None,
        )
        .await;
        assert_eq!(list["schedules"], json!([]), "{n}: {list}");

        // A local time in a time zone is that instant.
        let (status, paris) = schedule(
            &server,
            "launch",
            json!({"at": "2030-07-01T09:00", "time_zone": "Europe/Paris", "patch": {"description": "summer"}}),
        )
        .await;
        assert_eq!(status, 201, "{n}: {paris}");
        assert_eq!(
            paris["due_at"], "2030-07-01T07:00:00Z",
            "{n}: CEST is UTC+2"
        );
        assert_eq!(paris["status"], "pending");
        // Cancelled until then, and only once.
        let id = paris["id"].as_i64().expect("id");
        let cancel = format!("/api/v1/envs/production/schedules/{id}");
        let (status, cancelled) = call(&server, Method::DELETE, &cancel, None).await;
        assert_eq!(
            (status, cancelled["status"].as_str()),
            (200, Some("cancelled")),
            "{n}"
        );
        let (status, _) = call(&server, Method::DELETE, &cancel, None).await;
        assert_eq!(status, 409, "{n}: cancelled twice");

        // Due in two seconds: a patch, applied to the flag as it is then.
        let (status, on) = schedule(
            &server,
            "launch",
            json!({"at": in_seconds(2), "patch": {"enabled": true}}),
        )
        .await;
        assert_eq!(status, 201, "{n}: {on}");
        server
            .put_flag(
                "production",
                json!({"key": "launch", "enabled": false, "description": "v2"}),
            )
            .await;
        let done = settled(&server, on["id"].as_i64().expect("id")).await;
        assert_eq!(done["status"], "applied", "{n}: {done}");
        let (_, now) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/flags/launch",
            None,
        )
        .await;
        assert_eq!(now["flag"]["enabled"], true, "{n}: {now}");
        assert_eq!(
            now["flag"]["description"], "v2",
            "{n}: the edit made meanwhile is kept"
        );
        assert_eq!(done["applied_revision"], now["revision"], "{n}");
        let who = actors(&history(&server, "launch").await);
        assert!(
            who.iter()
                .any(|a| a.starts_with(&format!("schedule #{} by ", on["id"]))),
            "{n}: {who:?}"
        );

        // A replacement planned against a version the flag has left fails,
        // naming why, rather than overwrite the change made meanwhile.
        let (status, replace) = schedule(
            &server,
            "retired",
            json!({"at": in_seconds(2), "flag": {"enabled": true, "description": "replaced"}}),
        )
        .await;
        assert_eq!(status, 201, "{n}: {replace}");
        server
            .put_flag(
                "production",
                json!({"key": "retired", "enabled": false, "description": "edited"}),
            )
            .await;
        let failed = settled(&server, replace["id"].as_i64().expect("id")).await;
        assert_eq!(failed["status"], "failed", "{n}: {failed}");
        assert!(
            failed["error"]
                .as_str()
                .is_some_and(|e| e.contains("changed since")),
            "{n}: {failed}"
        );
        let (_, kept) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/flags/retired",
            None,
        )
        .await;
        assert_eq!(kept["flag"]["description"], "edited", "{n}");

        // A deletion.
        let (status, delete) = schedule(
            &server,
            "retired",
            json!({"at": in_seconds(1), "delete": true}),
        )
        .await;
        assert_eq!(status, 201, "{n}: {delete}");
        let deleted = settled(&server, delete["id"].as_i64().expect("id")).await;
        assert_eq!(deleted["status"], "applied", "{n}: {deleted}");
        let (status, _) = call(
            &server,
            Method::GET,
            "/api/v1/envs/production/flags/retired",
            None,
        )
        .await;
        assert_eq!(status, 404, "{n}");
        server.stop().await;
    }
}

/// Three instances on one database race for the same due changes: each
/// is applied exactly once (one revision each, whoever applied it).
#[tokio::test]
async fn three_instances_apply_each_schedule_exactly_once() {
    for (db, a) in testing::servers("schedule_race").await {
        let n = db.name;
        let b = TestServer::start(&a.database_url).await;
        let c = TestServer::start(&a.database_url).await;
        a.put_flag("production", flag("raced")).await;
        let mut ids = Vec::new();
        for i in 0..12 {
            // All due within the same second or two, from all three.
            let server = [&a, &b, &c][i % 3];
            let (status, s) = schedule(
                server,
                "raced",
                json!({"at": in_seconds(2), "patch": {"description": format!("step {i}")}}),
            )
            .await;
            assert_eq!(status, 201, "{n}: {s}");
            ids.push(s["id"].as_i64().expect("id"));
        }
        let mut appliers = std::collections::BTreeSet::new();
        for id in &ids {
            let done = settled(&a, *id).await;
            assert_eq!(done["status"], "applied", "{n}: {done}");
            appliers.insert(done["finished_by"].as_str().unwrap_or("").to_owned());
        }
        let who = actors(&history(&a, "raced").await);
        for id in &ids {
            let applied = who
                .iter()
                .filter(|actor| actor.starts_with(&format!("schedule #{id} by ")))
                .count();
            assert_eq!(
                applied, 1,
                "{n}: schedule {id} applied {applied} times: {who:?}"
            );
        }
        // One creation and twelve scheduled patches: nothing more.
        assert_eq!(who.len(), 13, "{n}: {who:?}");
        println!(
            "{n}: 12 schedules applied once each by {} instance(s)",
            appliers.len()
        );
        c.stop().await;
        b.stop().await;
        a.stop().await;
    }
}

/// A schedule that passed while every instance was down is applied at the
/// next start, and the audit says how late.
#[tokio::test]
async fn a_schedule_missed_while_down_is_applied_late_at_the_next_start() {
    for (db, server) in testing::servers("schedule_down").await {
        let n = db.name;
        server.put_flag("production", flag("overnight")).await;
        let (status, s) = schedule(
            &server,
            "overnight",
            json!({"at": in_seconds(2), "patch": {"enabled": true}}),
        )
        .await;
        assert_eq!(status, 201, "{n}: {s}");
        let url = server.database_url.clone();
        server.stop().await;
        // Down past the due time and the lateness threshold (5 s).
        tokio::time::sleep(Duration::from_secs(8)).await;
        let server = TestServer::start(&url).await;
        let done = settled(&server, s["id"].as_i64().expect("id")).await;
        assert_eq!(done["status"], "applied", "{n}: {done}");
        assert!(
            done["late_seconds"].as_f64().is_some_and(|l| l >= 5.0),
            "{n}: {done}"
        );
        let who = actors(&history(&server, "overnight").await);
        assert!(
            who.iter().any(|a| a.contains("s late")),
            "{n}: the audit says it was late: {who:?}"
        );
        server.stop().await;
    }
}
