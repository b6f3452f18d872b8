//! Live updates end to end: real servers on 127.0.0.1:0, real SSE and
//! WebSocket clients, every backend.

use std::time::Duration;

use futures_util::StreamExt;
use guidon_server::testing::{self, SseEventJson, SseReader, TestServer};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

async fn open_sse(server: &TestServer, token: &str, last_event_id: Option<u64>) -> SseReader {
    let mut request = server
        .http
        .get(server.at("/api/v1/sdk/stream"))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("stream request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    SseReader::new(response)
}

#[tokio::test]
async fn a_put_reaches_sse_and_websocket_clients() {
    for (db, server) in testing::servers("reach").await {
        let n = db.name;
        server
            .put_flag("production", json!({"key": "banner", "enabled": false}))
            .await;
        let token = server.sdk_token("svc", "production").await;

        let mut sse = open_sse(&server, &token, None).await;
        let first = sse.next(WAIT).await.expect("snapshot");
        assert_eq!(first.event, "snapshot", "{n}");
        assert_eq!(first.id.as_deref(), Some("1"), "{n}");
        let snapshot = first.json();
        assert_eq!(snapshot["revision"], 1, "{n}");
        assert_eq!(snapshot["flags"][0]["key"], "banner", "{n}");
        assert_eq!(snapshot["versions"]["banner"], 1, "{n}");

        let ws_url = server.base.replace("http://", "ws://") + "/api/v1/sdk/ws";
        let mut request = ws_url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("ws connect");
        let first = next_text(&mut ws).await;
        assert_eq!(first["type"], "snapshot", "{n}");
        assert_eq!(first["revision"], 1, "{n}");

        server
            .put_flag("production", json!({"key": "banner", "enabled": true}))
            .await;

        let update = sse.next(WAIT).await.expect("update over SSE");
        assert_eq!(
            (update.event.as_str(), update.id.as_deref()),
            ("update", Some("2")),
            "{n}"
        );
        let body = update.json();
        assert_eq!(body["revision"], 2, "{n}");
        assert_eq!(body["changes"][0]["key"], "banner", "{n}");
        assert_eq!(body["changes"][0]["op"], "upsert", "{n}");
        assert_eq!(body["changes"][0]["version"], 2, "{n}");
        assert_eq!(body["changes"][0]["definition"]["enabled"], true, "{n}");

        let update = next_text(&mut ws).await;
        assert_eq!(update, body, "{n}: the same message over both transports");

        // A delete travels as a tombstone.
        let response = server
            .admin(
                reqwest::Method::DELETE,
                "/api/v1/envs/production/flags/banner",
            )
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), 200, "{n}");
        let gone = sse.next(WAIT).await.expect("tombstone").json();
        assert_eq!(gone["changes"][0]["op"], "delete", "{n}");
        assert_eq!(gone["changes"][0]["definition"], Value::Null, "{n}");
        let gone_ws = next_text(&mut ws).await;
        assert_eq!(gone_ws, gone, "{n}");
        ws.close(None).await.expect("close");
        server.stop().await;
    }
}

async fn next_text<S>(ws: &mut S) -> Value
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a WebSocket message in time")
            .expect("stream open")
            .expect("frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_exactly_the_missed_changes() {
    for (db, server) in testing::servers("resume").await {
        let n = db.name;
        for i in 0..3 {
            server
                .put_flag(
                    "development",
                    json!({"key": format!("f{i}"), "enabled": true}),
                )
                .await;
        }
        let token = server.sdk_token("svc", "development").await;
        let mut sse = open_sse(&server, &token, None).await;
        let snapshot = sse.next(WAIT).await.expect("snapshot");
        assert_eq!(snapshot.id.as_deref(), Some("3"), "{n}");
        drop(sse);

        // Missed while disconnected: two upserts and a bulk replace.
        server
            .put_flag("development", json!({"key": "f0", "enabled": false}))
            .await;
        server
            .put_flag("development", json!({"key": "f3", "enabled": true}))
            .await;
        let response = server
            .admin(reqwest::Method::PUT, "/api/v1/envs/development/flags")
            .json(&json!({"flags": [
                {"key": "f0", "enabled": false},
                {"key": "f3", "enabled": true},
                {"key": "f4", "enabled": true}
            ]}))
            .send()
            .await
            .expect("bulk");
        assert_eq!(response.status(), 200, "{n}");
        let bulk: Value = response.json().await.expect("bulk body");
        assert_eq!(bulk["revision"], 6, "{n}");

        let mut sse = open_sse(&server, &token, Some(3)).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let event = sse.next(WAIT).await.expect("missed change");
            assert_eq!(event.event, "update", "{n}");
            let body = event.json();
            let keys: Vec<String> = body["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .map(|c| {
                    format!(
                        "{}:{}",
                        c["op"].as_str().unwrap_or(""),
                        c["key"].as_str().unwrap_or("")
                    )
                })
                .collect();
            seen.push((event.id.clone().unwrap_or_default(), keys));
        }
        assert_eq!(
            seen,
            [
                ("4".to_owned(), vec!["upsert:f0".to_owned()]),
                ("5".to_owned(), vec!["upsert:f3".to_owned()]),
                (
                    "6".to_owned(),
                    vec![
                        "delete:f1".to_owned(),
                        "delete:f2".to_owned(),
                        "upsert:f4".to_owned()
                    ]
                ),
            ],
            "{n}"
        );
        // And nothing more until the next change, which comes once.
        assert!(sse.next(Duration::from_millis(300)).await.is_none(), "{n}");
        server
            .put_flag("development", json!({"key": "f4", "enabled": false}))
            .await;
        let next = sse.next(WAIT).await.expect("live change after catch-up");
        assert_eq!(next.id.as_deref(), Some("7"), "{n}");

        // `?since=` does the same for clients that cannot set headers; a
        // revision from the future (a reset database) is told to resync
        // (see a_client_ahead_of_the_server_is_told_to_resync).
        let response = server
            .http
            .get(server.at("/api/v1/sdk/stream?since=7"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("stream");
        let mut current = SseReader::new(response);
        assert!(
            current.next(Duration::from_millis(300)).await.is_none(),
            "{n}"
        );
        let response = server
            .http
            .get(server.at("/api/v1/sdk/stream?since=99"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 409, "{n}");
        server.stop().await;
    }
}

#[tokio::test]
async fn sdk_flags_and_changes_endpoints() {
    for (db, server) in testing::servers("sdkflags").await {
        let n = db.name;
        server
            .put_flag("production", json!({"key": "a", "enabled": true}))
            .await;
        let token = server.sdk_token("svc", "production").await;
        let response = server
            .http
            .get(server.at("/api/v1/sdk/flags"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("flags");
        assert_eq!(response.status(), 200, "{n}");
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("etag");
        assert!(etag.starts_with("\"1-"), "{n}: {etag}");
        let document: Value = response.json().await.expect("document");
        assert_eq!(document["revision"], 1, "{n}");
        let response = server
            .http
            .get(server.at("/api/v1/sdk/flags"))
            .bearer_auth(&token)
            .header("If-None-Match", &etag)
            .send()
            .await
            .expect("flags again");
        assert_eq!(response.status(), 304, "{n}");
        // Its weak form too (RFC 9110's weak comparison).
        let response = server
            .http
            .get(server.at("/api/v1/sdk/flags"))
            .bearer_auth(&token)
            .header("If-None-Match", format!("W/{etag}"))
            .send()
            .await
            .expect("flags, weak ETag");
        assert_eq!(response.status(), 304, "{n}: weak ETag");

        server
            .put_flag("production", json!({"key": "b", "enabled": true}))
            .await;
        let response = server
            .http
            .get(server.at("/api/v1/sdk/changes?since=1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("changes");
        assert_eq!(response.status(), 200, "{n}");
        let changes: Value = response.json().await.expect("changes body");
        assert_eq!(changes["revision"], 2, "{n}");
        assert_eq!(changes["changes"][0]["key"], "b", "{n}");
        assert_eq!(changes["changes"].as_array().map(Vec::len), Some(1), "{n}");
        server.stop().await;
    }
}

/// Past the catch-up horizon the answer is 410 Gone (take the full file),
/// and a stream resuming from there gets a snapshot.
#[tokio::test]
async fn changes_past_retention_are_gone() {
    for db in testing::databases("gone").await {
        let n = db.name;
        let server = TestServer::start_with(guidon_server::Config {
            catch_up_horizon: 2,
            ..testing::config(&db.url)
        })
        .await;
        let token = server.sdk_token("svc", "development").await;
        for i in 0..5 {
            server
                .put_flag(
                    "development",
                    json!({"key": format!("g{i}"), "enabled": true}),
                )
                .await;
        }
        let changes = |since: u64| {
            server
                .http
                .get(server.at(&format!("/api/v1/sdk/changes?since={since}")))
                .bearer_auth(&token)
                .send()
        };
        let response = changes(1).await.expect("changes");
        assert_eq!(response.status(), 410, "{n}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "too_old", "{n}: {body}");
        let response = changes(3).await.expect("changes");
        assert_eq!(response.status(), 200, "{n}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["changes"].as_array().map(Vec::len), Some(2), "{n}");

        let mut sse = open_sse(&server, &token, Some(1)).await;
        let event = sse.next(WAIT).await.expect("snapshot");
        assert_eq!(
            (event.event.as_str(), event.id.as_deref()),
            ("snapshot", Some("5")),
            "{n}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_change_through_one_instance_reaches_streams_of_another() {
    for (db, a) in testing::servers("instances").await {
        let n = db.name;
        let b = TestServer::start(&a.database_url).await;
        let token = a.sdk_token("svc", "production").await;
        // b learns of tokens created through a within its refresh interval.
        let mut sse = None;
        for _ in 0..100 {
            let response = b
                .http
                .get(b.at("/api/v1/sdk/stream"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("stream");
            if response.status() == 200 {
                sse = Some(SseReader::new(response));
                break;
            }
            assert_eq!(response.status(), 401, "{n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut sse = sse.expect("b accepts the token created through a");
        let first = sse.next(WAIT).await.expect("snapshot from b");
        assert_eq!(first.event, "snapshot", "{n}");

        a.put_flag("production", json!({"key": "shared", "enabled": true}))
            .await;
        let update = sse.next(WAIT).await.expect("a's change, through b");
        assert_eq!(update.id.as_deref(), Some("1"), "{n}");
        assert_eq!(update.json()["changes"][0]["key"], "shared", "{n}");

        // And b evaluates it (it followed the store, not only the stream).
        let response = b
            .http
            .post(b.at("/ofrep/v1/evaluate/flags/shared"))
            .bearer_auth(&token)
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .await
            .expect("ofrep on b");
        assert_eq!(response.status(), 200, "{n}");
        let body: Value = response.json().await.expect("ofrep body");
        assert_eq!(body["value"], true, "{n}");
        b.stop().await;
        a.stop().await;
    }
}

/// `guidon_syncs_total{how}` as the server reports it.
async fn syncs(server: &TestServer, how: &str) -> u64 {
    let text = server.metrics().await;
    let prefix = format!("guidon_syncs_total{{how=\"{how}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// A write goes one way: this instance serves its own commits as the store
/// validated and compiled them (no read back, no second compile), and
/// answers once it serves them; another instance catches up from the log.
#[tokio::test]
async fn own_commits_are_served_as_committed_and_others_caught_up() {
    for (db, a) in testing::servers("write_path").await {
        let n = db.name;
        let b = TestServer::start(&a.database_url).await;
        let token = a.sdk_token("reader", "production").await;
        for i in 0..5 {
            let body = a
                .put_flag(
                    "production",
                    json!({"key": format!("f{}", i % 2), "enabled": i % 2 == 0}),
                )
                .await;
            // Read your write: it is served here by the time the PUT answers.
            let revision = body["revision"].as_u64().expect("revision");
            let doc: Value = a
                .http
                .get(a.at("/api/v1/sdk/flags"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("document")
                .json()
                .await
                .expect("document body");
            assert_eq!(doc["revision"], revision, "{n}: the write is served");
        }
        assert_eq!(syncs(&a, "commit").await, 5, "{n}: a took its own commits");
        assert_eq!(syncs(&a, "catch_up").await, 0, "{n}: a read none back");
        // b hears of them through the store and reads the log.
        let mut caught_up = false;
        for _ in 0..100 {
            let info: Value = b
                .admin(reqwest::Method::GET, "/api/v1/envs/production")
                .send()
                .await
                .expect("env")
                .json()
                .await
                .expect("env body");
            if info["revision"] == 5 {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(caught_up, "{n}: b reaches revision 5");
        assert!(
            syncs(&b, "catch_up").await >= 1,
            "{n}: b caught up from the log"
        );
        assert_eq!(syncs(&b, "commit").await, 0, "{n}: b committed nothing");
        b.stop().await;
        a.stop().await;
    }
}

#[tokio::test]
async fn shutdown_closes_streams_cleanly() {
    for (db, server) in testing::servers("shutdown").await {
        let n = db.name;
        let token = server.sdk_token("svc", "production").await;
        let mut sse = open_sse(&server, &token, None).await;
        assert!(sse.next(WAIT).await.is_some(), "{n}: snapshot");
        // Graceful shutdown must not wait for the client to go away.
        tokio::time::timeout(WAIT, server.stop())
            .await
            .expect("shutdown completes while a stream is open");
        assert!(sse.next(WAIT).await.is_none(), "{n}: the stream ended");
        assert!(sse.closed, "{n}: closed by the server, not timed out");
    }
}

/// A client that stops reading is cut off once it is a buffer behind, and
/// nobody else is slowed: a reading client sees every revision.
#[tokio::test]
async fn a_slow_client_is_disconnected_and_others_keep_up() {
    for (db, server) in testing::servers("slow").await {
        let n = db.name;
        let token = server.sdk_token("svc", "development").await;
        let mut reader = open_sse(&server, &token, None).await;
        assert!(reader.next(WAIT).await.is_some(), "{n}");
        // The stalled client: it reads its snapshot, then nothing.
        let mut stalled = open_sse(&server, &token, None).await;
        assert!(stalled.next(WAIT).await.is_some(), "{n}");

        // Large definitions, so socket buffers cannot absorb the backlog.
        let big: Vec<String> = (0..5_000).map(|i| format!("user_{i:06}")).collect();
        let writes = 400;
        let reading = tokio::spawn(async move {
            let mut last = 0_u64;
            while last < writes {
                let event = reader.next(WAIT).await.expect("every revision");
                let id: u64 = event.id.as_deref().unwrap_or("0").parse().expect("id");
                assert_eq!(id, last + 1, "revisions in order, none skipped");
                last = id;
            }
            last
        });
        for i in 0..writes {
            server
                .put_flag(
                    "development",
                    json!({"key": "big", "enabled": i % 2 == 0, "targets": [{"values": big, "serve": {"enabled": true}}]}),
                )
                .await;
        }
        assert_eq!(reading.await.expect("reader"), writes, "{n}");
        // The stalled client's stream ends (after what was buffered).
        let mut received = 0;
        while stalled.next(WAIT).await.is_some() {
            received += 1;
        }
        assert!(stalled.closed, "{n}: the stalled client was disconnected");
        assert!(received < writes, "{n}: it did not get everything");
        let metrics = server.metrics().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("guidon_stream_lagged_disconnects_total")
                    && !l.ends_with(" 0")),
            "{n}: {metrics}"
        );
        server.stop().await;
    }
}

/// A revoked token's stream ends within a heartbeat or so.
#[tokio::test]
async fn a_revoked_tokens_stream_ends() {
    for (db, server) in testing::servers("revoked").await {
        let n = db.name;
        let token = server.sdk_token("leaving", "production").await;
        let mut sse = open_sse(&server, &token, None).await;
        assert!(sse.next(WAIT).await.is_some(), "{n}: snapshot");
        let response = server
            .admin(reqwest::Method::DELETE, "/api/v1/tokens/leaving")
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 204, "{n}");
        assert!(sse.next(WAIT).await.is_none(), "{n}");
        assert!(sse.closed, "{n}: the server ended the stream");
        server.stop().await;
    }
}

/// An environment deleted and re-created through one instance: the other
/// ends its streams and serves the new environment, not a mix of the two.
#[tokio::test]
async fn another_instance_notices_a_recreated_environment() {
    for (db, a) in testing::servers("recreate").await {
        let n = db.name;
        let b = TestServer::start(&a.database_url).await;
        let created = a
            .admin(reqwest::Method::POST, "/api/v1/envs")
            .json(&json!({"name": "qa"}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201, "{n}");
        for key in ["old_one", "old_two"] {
            a.put_flag("qa", json!({"key": key, "enabled": true})).await;
        }
        // b serves qa at revision 2 to a stream (admin token, by header).
        let response = b
            .admin(reqwest::Method::GET, "/api/v1/sdk/stream")
            .header("X-Guidon-Environment", "qa")
            .send()
            .await
            .expect("stream");
        let mut sse = SseReader::new(response);
        let first = sse.next(WAIT).await.expect("snapshot").json();
        assert_eq!(first["revision"], 2, "{n}");

        let deleted = a
            .admin(reqwest::Method::DELETE, "/api/v1/envs/qa?force=true")
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status(), 204, "{n}");
        assert!(sse.next(WAIT).await.is_none(), "{n}");
        assert!(sse.closed, "{n}: b ended the deleted environment's stream");

        let created = a
            .admin(reqwest::Method::POST, "/api/v1/envs")
            .json(&json!({"name": "qa"}))
            .send()
            .await
            .expect("re-create");
        assert_eq!(created.status(), 201, "{n}");
        for i in 0..3 {
            a.put_flag("qa", json!({"key": "new_one", "enabled": i % 2 == 0}))
                .await;
        }
        // b converges on the new environment: only new_one, at revision 3.
        let mut seen = Value::Null;
        for _ in 0..100 {
            let response = b
                .admin(reqwest::Method::GET, "/api/v1/sdk/flags")
                .header("X-Guidon-Environment", "qa")
                .send()
                .await
                .expect("flags");
            seen = response.json().await.expect("document");
            if seen["revision"] == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let keys: Vec<&str> = seen["flags"]
            .as_array()
            .map(|f| f.iter().filter_map(|f| f["key"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            (seen["revision"].clone(), keys),
            (json!(3), vec!["new_one"]),
            "{n}: {seen}"
        );
        b.stop().await;
        a.stop().await;
    }
}

/// A client naming a revision this server never reached (a restored
/// backup, another server) is told to take the whole document: 409
/// `revision_ahead` from the changes endpoint and from both streams, not an
/// empty list of changes it would sit on.
#[tokio::test]
async fn a_client_ahead_of_the_server_is_told_to_resync() {
    for (db, server) in guidon_server::testing::servers("ahead").await {
        let n = db.name;
        server
            .put_flag(
                "production",
                serde_json::json!({"key": "a", "enabled": true}),
            )
            .await;
        let token = server.sdk_token("ahead", "production").await;
        let client = reqwest::Client::new();
        for path in [
            "/api/v1/sdk/changes?since=99",
            "/api/v1/sdk/stream?since=99",
        ] {
            let response = client
                .get(server.at(path))
                .bearer_auth(&token)
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status(), 409, "{n}: {path}");
            let body: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(body["error"], "revision_ahead", "{n}: {path}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("99") && message.contains("/api/v1/sdk/flags"),
                "{n}: {message}"
            );
        }
        // The revision it has is not ahead: an empty list, as before.
        let response = client
            .get(server.at("/api/v1/sdk/changes?since=1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200, "{n}");
    }
}

/// Reads from a raw stream socket until `needle` has arrived (within
/// [`WAIT`]); everything read so far.
async fn read_until(socket: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0_u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within {WAIT:?}: {}",
                    String::from_utf8_lossy(seen)
                )
            })
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

/// The value of `guidon_stream_clients{transport="sse"}`.
async fn sse_clients(server: &TestServer) -> Option<f64> {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("guidon_stream_clients{transport=\"sse\"} "))
        .and_then(|v| v.trim().parse().ok())
}

/// A stream requested as a connection's first request (as `EventSource`
/// and the fan-out harness do) on a raw socket: a chunked event stream
/// with the snapshot, each revision, heartbeats, resumption with
/// `?since=`; the client's close is noticed; a bad token is a JSON 401;
/// a path that only starts like the stream's is not the stream.
#[tokio::test]
async fn a_stream_as_a_connections_first_request() {
    use tokio::io::AsyncWriteExt as _;
    let db = testing::sqlite("first-request");
    let server = TestServer::start_with(guidon_server::Config {
        heartbeat: Duration::from_secs(1),
        ..testing::config(&db.url)
    })
    .await;
    let token = server.sdk_token("raw", testing::ENV).await;
    let first = server
        .put_flag(testing::ENV, json!({"key": "raw", "enabled": true}))
        .await["revision"]
        .as_u64()
        .expect("revision");
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut seen = Vec::new();
    read_until(&mut socket, &mut seen, &format!("id: {first}\ndata: ")).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "transfer-encoding: chunked",
    ] {
        assert!(head.contains(line), "{line} in {head}");
    }
    assert!(text.contains("event: snapshot\n"), "{text}");
    let second = server
        .put_flag(testing::ENV, json!({"key": "raw", "enabled": false}))
        .await["revision"]
        .as_u64()
        .expect("revision");
    read_until(
        &mut socket,
        &mut seen,
        &format!("event: update\nid: {second}\ndata: "),
    )
    .await;
    read_until(&mut socket, &mut seen, ": heartbeat\n\n").await;
    assert_eq!(sse_clients(&server).await, Some(1.0));
    drop(socket);
    let mut gone = false;
    for _ in 0..100 {
        if sse_clients(&server).await == Some(0.0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the closed client is still counted");

    // Resuming after the first revision: the second as an update, no snapshot.
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /api/v1/sdk/stream?since={first} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut seen = Vec::new();
    read_until(
        &mut socket,
        &mut seen,
        &format!("event: update\nid: {second}\n"),
    )
    .await;
    assert!(!String::from_utf8_lossy(&seen).contains("snapshot"));
    drop(socket);

    for (request, status, error) in [
        (
            "GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\n\r\n",
            401,
            "unauthorized",
        ),
        (
            "GET /api/v1/sdk/streams HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            404,
            "not_found",
        ),
    ] {
        let mut socket = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        socket.write_all(request.as_bytes()).await.expect("request");
        let got = testing::until_closed(&mut socket, WAIT).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(body["error"], error, "{body}");
    }
    server.stop().await;
}
