//! OFREP event streams (ADR-0008) against a real server: the bulk answer
//! names an SSE endpoint; connected as a browser's `EventSource` would
//! (no header, the credential in the URL), it sends `refetchEvaluation`
//! for each write, and when the clock crosses a time condition's instant;
//! a wrong channel is refused, and a revoked token's stream ends.

use std::time::Duration;

use guidon_server::testing::{self, ENV, SseEventJson, SseReader, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn bulk(server: &TestServer, token: &str) -> Value {
    let response = server
        .http
        .post(server.at("/ofrep/v1/evaluate/flags"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("bulk evaluation");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// The stream the bulk answer names, opened without any header.
async fn open(server: &TestServer, answer: &Value) -> SseReader {
    let streams = answer["eventStreams"].as_array().expect("eventStreams");
    assert_eq!(streams.len(), 1, "{answer}");
    assert_eq!(streams[0]["type"], "sse");
    assert_eq!(streams[0]["inactivityDelaySec"], 120);
    let uri = streams[0]["endpoint"]["requestUri"]
        .as_str()
        .expect("requestUri");
    assert!(uri.starts_with("/ofrep/v1/events?"), "{uri}");
    let response = server
        .http
        .get(server.at(uri))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    SseReader::new(response)
}

#[tokio::test]
async fn a_page_hears_of_every_change_and_refetches() {
    let db = testing::sqlite("ofrep-events");
    let server = TestServer::start(&db.url).await;
    server
        .put_flag(ENV, json!({"key": "banner", "enabled": false}))
        .await;
    let token = server.token("page", "client", Some(ENV)).await;
    let first = bulk(&server, &token).await;
    let mut events = open(&server, &first).await;

    let written = server
        .put_flag(ENV, json!({"key": "banner", "enabled": true}))
        .await;
    let event = events.next(WAIT).await.expect("a refetch event");
    assert_eq!(event.event, "message");
    assert_eq!(event.json()["type"], "refetchEvaluation");
    assert_eq!(
        event.id.as_deref(),
        Some(written["revision"].to_string().as_str())
    );
    // The re-fetch sees the change.
    let again = bulk(&server, &token).await;
    assert_ne!(first["flags"], again["flags"]);

    // A channel is bound to its environment and to a live token.
    let uri = first["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .expect("requestUri")
        .to_owned();
    let other_env = uri.replace(&format!("env={ENV}"), "env=staging");
    let forged = format!("/ofrep/v1/events?env={ENV}&channel={}", "0".repeat(32));
    for wrong in [other_env.as_str(), forged.as_str(), "/ofrep/v1/events"] {
        let response = server
            .http
            .get(server.at(wrong))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 401, "{wrong}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "unauthorized", "{wrong}");
    }

    // Revoked: the open stream ends, and the channel no longer opens one.
    let revoked = server
        .admin(Method::DELETE, "/api/v1/tokens/page")
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    while events.next(WAIT).await.is_some() {}
    assert!(events.closed, "the revoked token's stream did not end");
    let response = server
        .http
        .get(server.at(&uri))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    server.stop().await;
}

/// A flag that turns on at an instant 2 s ahead: the stream says so
/// without any write, and the re-fetch sees it on.
#[tokio::test]
async fn the_stream_tells_when_the_clock_changes_a_result() {
    let db = testing::sqlite("ofrep-events-clock");
    let server = TestServer::start(&db.url).await;
    let now = guidon_engine::Timestamp::now();
    let at = guidon_engine::Timestamp::from_second(now.as_second() + 2).expect("an instant");
    server
        .put_flag(
            ENV,
            json!({"key": "launch", "enabled": true, "rules": [{
                "conditions": [{"attribute": "$now", "operator": "after", "values": [at.to_string()]}],
                "serve": {"enabled": true}
            }], "rollout": {"percentage": 0.0}}),
        )
        .await;
    let token = server.sdk_token("svc", ENV).await;
    let before = bulk(&server, &token).await;
    assert_eq!(before["flags"][0]["value"], false, "{before}");
    let mut events = open(&server, &before).await;
    let event = events.next(WAIT).await.expect("an event at the instant");
    assert_eq!(event.json()["type"], "refetchEvaluation");
    let after = bulk(&server, &token).await;
    assert_eq!(after["flags"][0]["value"], true, "{after}");
    server.stop().await;
}
