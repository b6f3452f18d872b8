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

/// [`testing::until_closed`] within [`GUARD`].
async fn until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    testing::until_closed(stream, GUARD).await
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

/// A socket to the server whose receive buffer is small, so that a client
/// that stops reading backs the server's writes up quickly.
async fn small_window(server: &TestServer) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(8 * 1024).expect("SO_RCVBUF");
    socket.connect(server.addr).await.expect("connect")
}

/// The server side's unsent bytes (`tx_queue` of `/proc/net/tcp`) of the
/// connection from `client_port`, while it is established.
fn server_send_queue(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, state, queues) = (
            fields.get(1)?,
            fields.get(2)?,
            fields.get(3)?,
            fields.get(4)?,
        );
        if port(local)? != server_port || port(remote)? != client_port || *state != "01" {
            return None;
        }
        u64::from_str_radix(queues.split(':').next()?, 16).ok()
    })
}

/// The value of `guidon_stream_clients{transport="…"}`.
fn stream_clients(metrics: &str, transport: &str) -> Option<f64> {
    let prefix = format!("guidon_stream_clients{{transport=\"{transport}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Two stream clients that never read (SSE and WebSocket, each with a
/// small receive window), one that reads, and 40 revisions of 60 KB each
/// written meanwhile: the largest send queue the server's kernel held for
/// each stuck client while the revisions went out.
struct Stuck {
    server: TestServer,
    _db: testing::TestDb,
    sse: TcpStream,
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    reader: testing::SseReader,
    sse_max: u64,
    ws_max: u64,
}

impl Stuck {
    /// Closes the clients' ends; the server.
    fn close(self) -> TestServer {
        drop((self.sse, self.ws, self.reader));
        self.server
    }
}

/// The stuck client backed up for real (the server had bytes it could not
/// send), and no further than [`SEND_QUEUE_BOUND`].
fn assert_bounded(what: &str, max_queue: u64) {
    assert!(max_queue > 0, "the {what} stream never backed up");
    assert!(
        max_queue <= SEND_QUEUE_BOUND,
        "{what} send queue {max_queue} > {SEND_QUEUE_BOUND}"
    );
}

const SEND_BUFFER: usize = 64 * 1024;
/// What a stuck socket may hold: Linux doubles `SO_SNDBUF`; one write may
/// go a little past it.
const SEND_QUEUE_BOUND: u64 = 2 * SEND_BUFFER as u64 + 64 * 1024;

async fn stuck_streams(label: &str, write_timeout: Duration) -> Stuck {
    let db = testing::sqlite(label);
    // Heartbeats far enough apart that the writes below start well within
    // the WebSocket's two-heartbeat allowance: its send is blocked when
    // the rule cuts it.
    let server = TestServer::start_with(guidon_server::Config {
        heartbeat: Duration::from_secs(3),
        connections: ConnLimits {
            write_timeout,
            send_buffer: Some(SEND_BUFFER),
            ..ConnLimits::default()
        },
        ..testing::config(&db.url)
    })
    .await;
    let token = server.sdk_token("app", ENV).await;
    let port = server.addr.port();

    // The stuck SSE client: sends its request, reads the head, then nothing.
    let mut sse = small_window(&server).await;
    let request = format!(
        "GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    sse.write_all(request.as_bytes())
        .await
        .expect("SSE request");
    let mut head = [0_u8; 512];
    let n = tokio::time::timeout(GUARD, sse.read(&mut head))
        .await
        .expect("the SSE head within the guard")
        .expect("the SSE head");
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sse_port = sse.local_addr().expect("local address").port();

    // The stuck WebSocket client: the handshake, then it is never polled
    // (so it answers no ping either).
    let ws_socket = small_window(&server).await;
    let ws_port = ws_socket.local_addr().expect("local address").port();
    let mut ws_request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/api/v1/sdk/ws",
            server.addr
        ))
        .expect("ws request");
    ws_request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (ws, _) = tokio::time::timeout(
        GUARD,
        tokio_tungstenite::client_async(ws_request, ws_socket),
    )
    .await
    .expect("the handshake within the guard")
    .expect("the handshake");

    // A client that reads.
    let response = server
        .http
        .get(server.at("/api/v1/sdk/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the reading stream");
    let mut reader = testing::SseReader::new(response);
    assert_eq!(
        reader.next(GUARD).await.expect("snapshot").event,
        "snapshot"
    );

    // Sample both stuck sockets' send queues while the revisions go out.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::task::spawn_blocking(move || {
            let (mut sse_max, mut ws_max) = (0, 0);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                sse_max = sse_max.max(server_send_queue(port, sse_port).unwrap_or(0));
                ws_max = ws_max.max(server_send_queue(port, ws_port).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            (sse_max, ws_max)
        })
    };
    let payload = "x".repeat(60 * 1024);
    let mut last = 0;
    for i in 0..40 {
        let stored = server
            .put_flag(
                ENV,
                testing::valued_flag("big", json!(format!("{i}{payload}"))),
            )
            .await;
        last = stored["revision"].as_u64().unwrap_or(last);
    }
    // The reader gets every revision, up to the last.
    loop {
        let event = reader
            .next(GUARD)
            .await
            .expect("the reader keeps receiving");
        if event.id.as_deref().and_then(|id| id.parse::<u64>().ok()) >= Some(last) {
            break;
        }
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (sse_max, ws_max) = sampler.await.expect("the sampler");
    Stuck {
        server,
        _db: db,
        sse,
        ws,
        reader,
        sse_max,
        ws_max,
    }
}

/// Waits (within the guard) until the stream-client gauges read `ws` and
/// `sse`.
async fn until_clients(server: &TestServer, ws: f64, sse: f64) {
    for _ in 0..600 {
        let metrics = server.metrics().await;
        if stream_clients(&metrics, "ws") == Some(ws)
            && stream_clients(&metrics, "sse") == Some(sse)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "stream clients never came to ws {ws}, sse {sse}:\n{}",
        server.metrics().await
    );
}

/// Issue 15, item 4: a WebSocket client that stops reading is cut by the
/// two-heartbeat rule although its send is blocked, with the write
/// timeout out of the way (an hour); the stuck SSE client beside it is
/// still connected then, which shows it was the rule. While stuck, the
/// server's kernel send queue for it stayed under the socket's send buffer
/// instead of growing to megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_never_reads_is_cut_by_the_heartbeat_rule_while_its_send_is_blocked()
 {
    let stuck = stuck_streams("stuck-ws", Duration::from_secs(3600)).await;
    until_clients(&stuck.server, 0.0, 2.0).await;
    assert_bounded("WebSocket", stuck.ws_max);
    // The stuck SSE client goes away by itself: the stream ends.
    let server = stuck.close();
    until_clients(&server, 0.0, 0.0).await;
    server.stop().await;
}

/// Issue 15, item 4: an SSE client that stops reading is cut by the write
/// timeout, with its kernel send queue bounded meanwhile; the client that
/// reads stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_never_reads_is_cut_by_the_write_timeout_with_bounded_memory() {
    let stuck = stuck_streams("stuck-sse", Duration::from_secs(3)).await;
    until_clients(&stuck.server, 0.0, 1.0).await;
    assert_bounded("SSE", stuck.sse_max);
    stuck.close().stop().await;
}
