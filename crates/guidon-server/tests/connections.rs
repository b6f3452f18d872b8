//! Bounded connections, against a real server on loopback driven with raw
//! sockets: silent and slow clients are cut, the connection cap holds,
//! trickled bodies end, and evaluations answer meanwhile. The timeouts
//! are configured short; no test asserts how long anything took (each
//! read has a generous guard only so that a regression fails instead of
//! hanging).

use std::time::Duration;

use guidon_server::ConnLimits;
use guidon_server::testing::{self, ENV, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Past this, a connection the server should have cut is a failure.
const GUARD: Duration = Duration::from_secs(60);

async fn server(label: &str, limits: ConnLimits) -> (testing::TestDb, TestServer) {
    let db = testing::sqlite(label);
    let server = TestServer::start_with(guidon_server::Config {
        connections: limits,
        ..testing::config(&db.url)
    })
    .await;
    server
        .put_flag(ENV, json!({"key": "on", "enabled": true}))
        .await;
    (db, server)
}

/// Reads until the server closes the connection (EOF or reset); what it
/// sent before. Panics if it keeps the connection past [`GUARD`].
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout(GUARD, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// An OFREP evaluation with an sdk token: it must answer true.
async fn evaluate(server: &TestServer, token: &str) {
    let response = server
        .http
        .post(server.at("/ofrep/v1/evaluate/flags/on"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("the evaluation answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["value"], true, "{body}");
}

#[tokio::test]
async fn silent_and_slow_header_clients_are_cut_while_evaluations_answer() {
    let (_db, server) = server(
        "slow-headers",
        ConnLimits {
            header_timeout: Duration::from_millis(300),
            ..ConnLimits::default()
        },
    )
    .await;
    let token = server.sdk_token("app", ENV).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Slow clients: one header line every 50 ms, for longer than the
    // header timeout allows.
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        slow.push(tokio::spawn(async move {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
                .await;
            for line in 0..400 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if stream
                    .write_all(format!("x-slow-{i}-{line}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            until_closed(&mut stream).await
        }));
    }
    for _ in 0..20 {
        evaluate(&server, &token).await;
    }
    for mut stream in silent {
        let got = until_closed(&mut stream).await;
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "a silent client was answered"
        );
    }
    for task in slow {
        let got = task.await.expect("slow client task");
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "a slow header was waited for: {}",
            String::from_utf8_lossy(&got)
        );
    }
    evaluate(&server, &token).await;
    server.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_until_some_end() {
    let (_db, server) = server(
        "conn-cap",
        ConnLimits {
            max_connections: 20,
            header_timeout: Duration::from_secs(600),
            ..ConnLimits::default()
        },
    )
    .await;
    let token = server.sdk_token("app", ENV).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // The accept loop takes the 20 first; the next one is closed unanswered.
    let mut extra = TcpStream::connect(server.addr).await.expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let got = until_closed(&mut extra).await;
    assert!(
        got.is_empty(),
        "answered past the cap: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(held);
    // Once they are gone, evaluations answer again.
    let mut answered = false;
    for _ in 0..200 {
        let ok = server
            .http
            .get(server.at("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the server did not take connections again");
    evaluate(&server, &token).await;
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_body_with_a_valid_token_is_cut_with_a_408() {
    let (_db, server) = server(
        "slow-body",
        ConnLimits {
            body_timeout: Duration::from_millis(300),
            ..ConnLimits::default()
        },
    )
    .await;
    let token = server.sdk_token("app", ENV).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let head = format!(
                "POST /ofrep/v1/evaluate/flags/on HTTP/1.1\r\nhost: x\r\n\
                 authorization: Bearer {token}\r\ncontent-type: application/json\r\n\
                 content-length: 100000\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.expect("head");
            for _ in 0..2000 {
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            until_closed(&mut stream).await
        }));
    }
    evaluate(&server, &token).await;
    for task in tasks {
        let got = String::from_utf8_lossy(&task.await.expect("task")).into_owned();
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("\"error\":\"request_timeout\""), "{got}");
    }
    server.stop().await;
}

/// Sends `head` and reads the answer until the server closes or answers.
async fn answer(server: &TestServer, head: &str) -> (u16, Value) {
    let response = server
        .http
        .get(server.at("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    // Until the JSON body is complete (the connection may stay open).
    loop {
        let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && let Ok(body) = serde_json::from_str::<Value>(body)
        {
            let status = head[9..12].parse().expect("status");
            return (status, body);
        }
        assert!(n > 0, "closed without a JSON answer: {text}");
    }
}

#[tokio::test]
async fn too_large_headers_and_failed_upgrades_answer_json() {
    let (_db, server) = server("errors-json", ConnLimits::default()).await;
    let token = server.sdk_token("app", ENV).await;
    let big = "a".repeat(40 * 1024);
    let (status, body) = answer(
        &server,
        &format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["error"], "headers_too_large", "{body}");
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, body) = answer(
        &server,
        &format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
    )
    .await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["error"], "headers_too_large", "{body}");
    // A WebSocket route without the upgrade.
    let (status, body) = answer(
        &server,
        &format!("GET /api/v1/sdk/ws HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"),
    )
    .await;
    assert!(status == 400 || status == 426, "{status} {body}");
    assert_eq!(body["error"], "upgrade_failed", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    server.stop().await;
}
