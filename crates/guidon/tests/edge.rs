//! `guidon edge` against a real upstream `guidon serve`, both the built
//! binary, with the fault-injecting proxy between them: the relay serves
//! the upstream's documents, revisions and ETags (OFREP, `/sdk/flags`,
//! `/sdk/changes`, SSE and WebSocket); it keeps serving through the
//! upstream's death and its own restart (from its saved snapshot); a
//! revoked token stops within the token cache's TTL; events it
//! acknowledged all arrive upstream across restarts of both; and a bad
//! start is one line and a failure.

#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use guidon_client::{Client, EventOptions, Transport};
use guidon_server::testing::{
    ADMIN, ENV, Faults, Proxy, SseEventJson, SseReader, TempDir, TestTls, canonical, free_port,
    valued_flag,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Guidon, answer, event, events_found, experiment_flag, http, sdk_token};

/// `PUT` a flag upstream; the revision it made.
async fn put_flag(http: &reqwest::Client, base: &str, flag: &Value) -> u64 {
    let (status, body) = support::put_flag(http, base, flag).await;
    assert!(status.is_success(), "{status} {body}");
    body["revision"].as_u64().unwrap()
}

/// `POST /api/v1/events`; a failed connection is a 502.
async fn post_events(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    events: &[Value],
) -> (StatusCode, Value) {
    support::post_events(http, base, token, events)
        .await
        .unwrap_or((StatusCode::BAD_GATEWAY, Value::Null))
}

/// How long the edge may take to follow a change or an outage.
const FOLLOW: Duration = Duration::from_secs(30);
/// The token cache's TTL the edges run with (`--token-cache-ttl`).
const TTL_SECS: u64 = 2;

/// Polls `check` every 50 ms until it holds; the time it took, or a panic
/// naming `what` after `deadline`.
async fn until<F, Fut>(deadline: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The upstream: `guidon serve` on a fixed port (kept across restarts) over
/// a SQLite file.
fn upstream(dir: &TempDir, port: u16) -> Guidon {
    let listen = format!("127.0.0.1:{port}");
    let db = format!("sqlite://{}", dir.join("upstream.db").display());
    Guidon::spawn(
        &[
            "serve",
            "--listen",
            &listen,
            "--database-url",
            &db,
            "--heartbeat-secs",
            "1",
            "--poll-ms",
            "100",
        ],
        &[("GUIDON_ADMIN_TOKEN", ADMIN)],
        &dir.join("upstream.log"),
    )
}

fn edge_args<'a>(upstream: &'a str, data: &'a str, ttl: &'a str) -> Vec<&'a str> {
    vec![
        "edge",
        "--upstream",
        upstream,
        "--token",
        ADMIN,
        "--env",
        ENV,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--token-cache-ttl",
        ttl,
        "--heartbeat-secs",
        "1",
        "--upstream-heartbeat-secs",
        "1",
        "--env",
        "development",
    ]
}

/// `guidon edge` relaying `ENV` of `upstream`, keeping its state in `data`.
fn edge(dir: &TempDir, upstream: &str, data: &Path) -> Guidon {
    let data = data.display().to_string();
    let ttl = TTL_SECS.to_string();
    Guidon::spawn(
        &edge_args(upstream, &data, &ttl),
        &[],
        &dir.join("edge.log"),
    )
}

/// `GET /api/v1/sdk/flags`: status, ETag and body.
async fn sdk_flags(http: &reqwest::Client, base: &str, token: &str) -> (StatusCode, String, Value) {
    let response = http
        .get(format!("{base}/api/v1/sdk/flags"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let etag = header(&response, "etag");
    let (status, body) = answer(response).await;
    (status, etag, body)
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// OFREP bulk evaluation for one context: status, ETag and body.
async fn ofrep_bulk(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<(StatusCode, String, Value), reqwest::Error> {
    let response = http
        .post(format!("{base}/ofrep/v1/evaluate/flags"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "user-7"}}))
        .send()
        .await?;
    let etag = header(&response, "etag");
    let (status, body) = answer(response).await;
    Ok((status, etag, body))
}

/// OFREP evaluation of one flag: status and value.
async fn ofrep_value(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
) -> (StatusCode, Value) {
    match http
        .post(format!("{base}/ofrep/v1/evaluate/flags/{key}"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "user-7"}}))
        .send()
        .await
    {
        Ok(response) => {
            let (status, body) = answer(response).await;
            (status, body["value"].clone())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Value::Null),
    }
}

async fn readyz(http: &reqwest::Client, base: &str) -> (StatusCode, Value) {
    match http.get(format!("{base}/readyz")).send().await {
        Ok(response) => answer(response).await,
        Err(_) => (StatusCode::BAD_GATEWAY, Value::Null),
    }
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    // The sum over its series (one per environment, for some).
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The edge serves the upstream's document with the upstream's ETag, and
/// the same OFREP bulk answer and ETag.
async fn assert_same_as_upstream(
    http: &reqwest::Client,
    up: &str,
    edge: &str,
    token: &str,
    label: &str,
) {
    let (s1, e1, d1) = sdk_flags(http, up, token).await;
    let (s2, e2, d2) = sdk_flags(http, edge, token).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{label}");
    assert_eq!(e1, e2, "{label}: /sdk/flags ETag");
    assert_eq!(
        canonical(&d1),
        canonical(&d2),
        "{label}: /sdk/flags document"
    );
    let (s1, e1, b1) = ofrep_bulk(http, up, token).await.unwrap();
    let (s2, e2, b2) = ofrep_bulk(http, edge, token).await.unwrap();
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{label}: {b2}");
    assert_eq!(e1, e2, "{label}: OFREP bulk ETag");
    assert!(!e1.is_empty(), "{label}: OFREP bulk has an ETag");
    let flags = |b: &Value| {
        let mut f = b["flags"].as_array().cloned().unwrap_or_default();
        f.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
        f
    };
    assert_eq!(flags(&b1), flags(&b2), "{label}: OFREP bulk results");
}

/// Waits until the edge serves the upstream's revision.
async fn caught_up(http: &reqwest::Client, up: &str, edge: &str, token: &str, label: &str) -> u64 {
    let (_, _, doc) = sdk_flags(http, up, token).await;
    let revision = doc["revision"].as_u64().unwrap();
    let took = until(FOLLOW, label, || async {
        sdk_flags(http, edge, token).await.2["revision"].as_u64() == Some(revision)
    })
    .await;
    println!("{label}: the edge serves revision {revision} ({took:?})");
    revision
}

fn sdk(base: &str, token: &str, transport: Transport) -> guidon_client::ClientBuilder {
    Client::builder(base, token)
        .transport(transport)
        .heartbeat(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        .fallback_to_polling(u32::MAX, Duration::from_secs(3600))
        .start_timeout(Duration::from_secs(10))
        .events(EventOptions {
            enabled: false,
            ..EventOptions::default()
        })
}

async fn sdks_at(clients: &[Client], revision: u64, label: &str) {
    until(FOLLOW, label, || async {
        clients.iter().all(|c| c.revision() == Some(revision))
    })
    .await;
}

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_relays_revisions_and_etags_through_upstream_and_edge_restarts_and_a_faulty_proxy()
{
    let dir = TempDir::new("edge-relay");
    let http = http();
    let port = free_port();
    let up = upstream(&dir, port);
    let proxy = Proxy::start(addr(&up.base), 14).await;
    put_flag(&http, &up.base, &valued_flag("a", json!("one"))).await;
    put_flag(
        &http,
        &up.base,
        &json!({"key": "b", "enabled": true, "rollout": {"percentage": 50}}),
    )
    .await;
    let sdk_token = sdk_token(&http, &up.base, "app").await;
    let data = dir.join("edge-data");
    let edge1 = edge(&dir, &proxy.base(), &data);
    let took = until(FOLLOW, "the edge is ready", || async {
        readyz(&http, &edge1.base).await.1["status"] == "ready"
    })
    .await;
    println!("edge ready in {took:?}");
    assert_same_as_upstream(&http, &up.base, &edge1.base, &sdk_token, "start").await;
    // It relays every environment it was given: an admin token names one.
    let development = |base: &str| {
        let request = http
            .get(format!("{base}/api/v1/sdk/flags"))
            .bearer_auth(ADMIN)
            .header("X-Guidon-Environment", "development");
        async move { answer(request.send().await.unwrap()).await }
    };
    assert_eq!(development(&edge1.base).await, development(&up.base).await);
    assert_eq!(
        readyz(&http, &edge1.base).await.1["environments"]["development"]["status"],
        "current"
    );

    // Streams: the edge's SSE carries the upstream's revisions as they come.
    let stream = http
        .get(format!("{}/api/v1/sdk/stream", edge1.base))
        .bearer_auth(&sdk_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut sse = SseReader::new(stream);
    let first = sse.next(Duration::from_secs(5)).await.expect("a snapshot");
    assert_eq!(first.event, "snapshot");
    let r0: u64 = first.id.as_deref().unwrap().parse().unwrap();
    let sdks = vec![
        sdk(&edge1.base, &sdk_token, Transport::Sse)
            .build()
            .await
            .unwrap(),
        sdk(&edge1.base, &sdk_token, Transport::WebSocket)
            .build()
            .await
            .unwrap(),
    ];
    // OFREP's eventStreams on the edge: a browser's EventSource, with the
    // channel in the URL and no header, hears every revision.
    let (_, _, bulk) = ofrep_bulk(&http, &edge1.base, &sdk_token).await.unwrap();
    let uri = bulk["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .expect("eventStreams in the edge's bulk answer")
        .to_owned();
    let events = http
        .get(format!("{}{uri}", edge1.base))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut ofrep_events = SseReader::new(events);
    let r1 = put_flag(&http, &up.base, &valued_flag("a", json!("two"))).await;
    let written = Instant::now();
    assert_eq!(r1, r0 + 1);
    let update = sse.next(FOLLOW).await.expect("an update");
    println!(
        "a write reached an SSE client of the edge {:?} after the upstream answered it",
        written.elapsed()
    );
    let refetch = ofrep_events.next(FOLLOW).await.expect("an OFREP event");
    assert_eq!(refetch.json()["type"], "refetchEvaluation");
    assert_eq!(
        (
            update.event.as_str(),
            update.id.as_deref().unwrap_or_default()
        ),
        ("update", r1.to_string().as_str())
    );
    let changes = |base: &str, since: u64| {
        let url = format!("{base}/api/v1/sdk/changes?since={since}");
        let request = http.get(url).bearer_auth(&sdk_token);
        async move { answer(request.send().await.unwrap()).await }
    };
    let (status, upstream_changes) = changes(&up.base, r0).await;
    assert_eq!(status, 200);
    assert_eq!(
        update.json()["changes"],
        upstream_changes["changes"],
        "the relayed update is the upstream's"
    );
    assert_eq!(
        changes(&edge1.base, r0).await,
        (StatusCode::OK, upstream_changes),
        "/sdk/changes on the edge, from what it relayed"
    );
    // From before the edge started: the edge asks its upstream.
    assert_eq!(
        changes(&edge1.base, 0).await,
        changes(&up.base, 0).await,
        "/sdk/changes on the edge, from before it started"
    );
    sdks_at(&sdks, r1, "SDKs on the edge (SSE, WebSocket) follow").await;
    assert_same_as_upstream(&http, &up.base, &edge1.base, &sdk_token, "after a change").await;
    // The admin token was seen (for /metrics) before the outage below.
    assert_eq!(
        metric(&http, &edge1.base, "guidon_edge_upstream_connected").await,
        Some(2.0),
        "both environments follow"
    );

    // The upstream dies: the edge serves its last state, and says so.
    up.kill();
    let took = until(FOLLOW, "the edge says it is degraded", || async {
        let (status, body) = readyz(&http, &edge1.base).await;
        status == 200
            && body["status"] == "degraded"
            && body["environments"][ENV]["status"] == "stale"
            && body["environments"]["development"]["status"] == "stale"
    })
    .await;
    println!("upstream killed: the edge degraded in {took:?}");
    assert_eq!(
        ofrep_value(&http, &edge1.base, &sdk_token, "a").await,
        (StatusCode::OK, json!("two"))
    );
    let (status, _, doc) = sdk_flags(&http, &edge1.base, &sdk_token).await;
    assert_eq!(
        (status, doc["revision"].as_u64()),
        (StatusCode::OK, Some(r1))
    );
    assert_eq!(
        metric(&http, &edge1.base, "guidon_edge_upstream_connected").await,
        Some(0.0)
    );
    // And for how long: the metric and /readyz count the seconds.
    until(FOLLOW, "the edge counts how long it is stale", || async {
        let stale = readyz(&http, &edge1.base).await.1["environments"][ENV]["stale_secs"].as_u64();
        stale >= Some(1)
            && metric(&http, &edge1.base, "guidon_edge_stale_seconds").await >= Some(2.0)
    })
    .await;

    // It comes back: the edge follows again, and so do its SDKs.
    let up = upstream(&dir, port);
    let r2 = put_flag(&http, &up.base, &valued_flag("a", json!("three"))).await;
    caught_up(
        &http,
        &up.base,
        &edge1.base,
        &sdk_token,
        "upstream restarted",
    )
    .await;
    until(FOLLOW, "the edge is ready again", || async {
        readyz(&http, &edge1.base).await.1["status"] == "ready"
    })
    .await;
    sdks_at(&sdks, r2, "SDKs on the edge after the upstream's restart").await;
    assert_eq!(
        metric(&http, &edge1.base, "guidon_edge_stale_seconds").await,
        Some(0.0)
    );
    assert_same_as_upstream(
        &http,
        &up.base,
        &edge1.base,
        &sdk_token,
        "after the restart",
    )
    .await;

    // Chaos between them (delays, cuts mid-message): writes go on; once it
    // stops the edge converges, without a gap or a duplicate.
    proxy.set_faults(Faults {
        chaos: true,
        ..Faults::default()
    });
    for n in 0..20 {
        put_flag(
            &http,
            &up.base,
            &valued_flag(&format!("c{}", n % 5), json!(n)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.set_faults(Faults::default());
    proxy.cut_all();
    let r3 = caught_up(&http, &up.base, &edge1.base, &sdk_token, "after chaos").await;
    sdks_at(&sdks, r3, "SDKs on the edge after chaos").await;
    assert_same_as_upstream(&http, &up.base, &edge1.base, &sdk_token, "after chaos").await;
    for c in &sdks {
        let got = canonical(&serde_json::from_str(&c.document().to_json()).unwrap());
        let want = canonical(&sdk_flags(&http, &up.base, &sdk_token).await.2);
        assert_eq!(
            got, want,
            "an SDK on the edge holds the upstream's document"
        );
    }
    println!(
        "proxy cuts: {}",
        proxy.cuts.load(std::sync::atomic::Ordering::Relaxed)
    );

    // The edge dies and comes back while the upstream cannot be reached:
    // it serves its saved snapshot (and the tokens it knew), degraded.
    // Saved at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    edge1.kill();
    proxy.set_faults(Faults {
        refuse: true,
        ..Faults::default()
    });
    proxy.cut_all();
    let edge2 = edge(&dir, &proxy.base(), &data);
    until(
        FOLLOW,
        "the restarted edge serves its snapshot, degraded",
        || async {
            let (status, body) = readyz(&http, &edge2.base).await;
            status == StatusCode::OK && body["status"] == "degraded"
        },
    )
    .await;
    let (status, _, doc) = sdk_flags(&http, &edge2.base, &sdk_token).await;
    assert_eq!(
        (status, doc["revision"].as_u64()),
        (StatusCode::OK, Some(r3)),
        "{doc}"
    );
    assert_eq!(
        ofrep_value(&http, &edge2.base, &sdk_token, "a").await,
        (StatusCode::OK, json!("three"))
    );
    // A token it never saw cannot be checked: 503, not a guess.
    let (status, body) = answer(
        http.post(format!("{}/ofrep/v1/evaluate/flags/a", edge2.base))
            .bearer_auth("gdn_never_seen_by_this_edge")
            .json(&json!({"context": {}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    proxy.set_faults(Faults::default());
    let r4 = put_flag(&http, &up.base, &valued_flag("a", json!("four"))).await;
    caught_up(&http, &up.base, &edge2.base, &sdk_token, "edge restarted").await;
    assert!(r4 > r3);
    assert_same_as_upstream(
        &http,
        &up.base,
        &edge2.base,
        &sdk_token,
        "after the edge's restart",
    )
    .await;
    for c in &sdks {
        c.close().await.unwrap();
    }
    // SIGTERM: a graceful stop, exit 0.
    assert!(edge2.stop().success(), "the edge stops cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_revoked_upstream_stops_at_the_edge_within_the_ttl() {
    let dir = TempDir::new("edge-revoke");
    let http = http();
    let up = upstream(&dir, free_port());
    put_flag(&http, &up.base, &valued_flag("a", json!("one"))).await;
    let app = sdk_token(&http, &up.base, "doomed").await;
    let edge = edge(&dir, &up.base, &dir.join("edge-data"));
    until(FOLLOW, "the edge is ready", || async {
        readyz(&http, &edge.base).await.1["status"] == "ready"
    })
    .await;
    assert_eq!(
        ofrep_value(&http, &edge.base, &app, "a").await,
        (StatusCode::OK, json!("one"))
    );
    let stream = http
        .get(format!("{}/api/v1/sdk/stream", edge.base))
        .bearer_auth(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut sse = SseReader::new(stream);
    assert!(sse.next(Duration::from_secs(5)).await.is_some());
    // Beyond the TTL a live token's verdict is renewed, not dropped: its
    // stream stays open (heartbeats only) and its requests work.
    assert!(
        sse.next(Duration::from_secs(TTL_SECS * 2 + 1))
            .await
            .is_none()
    );
    assert!(!sse.closed, "a live token's stream stays open past the TTL");
    assert_eq!(
        ofrep_value(&http, &edge.base, &app, "a").await.0,
        StatusCode::OK
    );

    let (status, _) = answer(
        http.delete(format!("{}/api/v1/tokens/doomed", up.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    let revoked = Instant::now();
    // The bound: the TTL, plus one heartbeat for a stream's check, plus a
    // two seconds for the requests and the scheduling of a loaded machine.
    let bound = Duration::from_secs(TTL_SECS + 1 + 2);
    let refused = until(
        bound,
        "the revoked token is refused at the edge",
        || async { ofrep_value(&http, &edge.base, &app, "a").await.0 == StatusCode::UNAUTHORIZED },
    )
    .await;
    let mut ended = None;
    while revoked.elapsed() < bound {
        if sse.next(Duration::from_millis(200)).await.is_none() && sse.closed {
            ended = Some(revoked.elapsed());
            break;
        }
    }
    println!(
        "revoked: refused after {refused:?}, its stream ended after {ended:?} (TTL {TTL_SECS} s)"
    );
    assert!(
        ended.is_some(),
        "the revoked token's stream ended within {bound:?}"
    );
    // Its events are refused too.
    let (status, _) = answer(
        http.post(format!("{}/api/v1/events", edge.base))
            .bearer_auth(&app)
            .json(&json!({"events": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_the_edge_acknowledged_arrive_upstream_across_edge_and_upstream_restarts() {
    let dir = TempDir::new("edge-events");
    let http = http();
    let port = free_port();
    let mut up = Some(upstream(&dir, port));
    let up_base = up.as_ref().unwrap().base.clone();
    let proxy = Proxy::start(addr(&up_base), 15).await;
    put_flag(&http, &up_base, &experiment_flag()).await;
    let app = sdk_token(&http, &up_base, "app").await;
    let data = dir.join("edge-data");
    let mut edge_process = Some(edge(&dir, &proxy.base(), &data));
    let mut base = edge_process.as_ref().unwrap().base.clone();
    until(FOLLOW, "the edge is ready", || async {
        readyz(&http, &base).await.1["status"] == "ready"
    })
    .await;

    // The edge keeps the verdicts of the tokens it served (every TTL/4)
    // and its snapshot (every second): let it, before the faults.
    assert_eq!(post_events(&http, &base, &app, &[]).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut acked: Vec<Value> = Vec::new();
    let mut sent = 0_u64;
    let mut refused = 0_u64;
    let mut delivered_before = 0;
    // Rounds: normal; upstream unreachable (the proxy refuses); edge
    // killed and restarted while it is; upstream killed and restarted.
    for round in 0..6_u64 {
        match round {
            1 => {
                until(FOLLOW, "round 0 is delivered", || async {
                    metric(&http, &base, "guidon_edge_events_buffered").await == Some(0.0)
                })
                .await;
                delivered_before = acked.len();
                proxy.set_faults(Faults {
                    refuse: true,
                    ..Faults::default()
                });
                proxy.cut_all();
            }
            2 => {
                // The edge keeps the verdicts it learnt (the admin token's,
                // for /metrics, is new) a moment after it learns them.
                tokio::time::sleep(Duration::from_millis(500)).await;
                edge_process.take().unwrap().kill();
                edge_process = Some(edge(&dir, &proxy.base(), &data));
                base = edge_process.as_ref().unwrap().base.clone();
            }
            3 => proxy.set_faults(Faults::default()),
            4 => {
                up.take().unwrap().kill();
            }
            5 => {
                up = Some(upstream(&dir, port));
                edge_process.take().unwrap().kill();
                edge_process = Some(edge(&dir, &proxy.base(), &data));
                base = edge_process.as_ref().unwrap().base.clone();
            }
            _ => {}
        }
        until(FOLLOW, "the edge serves", || async {
            readyz(&http, &base).await.0 == StatusCode::OK
        })
        .await;
        for batch in 0..10_u64 {
            let events: Vec<Value> = (0..20)
                .map(|i| event("ev", round * 1000 + batch * 20 + i))
                .collect();
            sent += events.len() as u64;
            let (status, body) = post_events(&http, &base, &app, &events).await;
            if status == 200 {
                assert_eq!(
                    body["accepted"].as_u64(),
                    Some(events.len() as u64),
                    "{body}"
                );
                acked.extend(events);
            } else {
                refused += events.len() as u64;
            }
        }
        if round == 2 {
            // Nothing could go upstream since round 1: what was
            // acknowledged before the edge's SIGKILL is in its outbox
            // still, with this round's.
            let want = (acked.len() - delivered_before) as f64;
            until(FOLLOW, "the outbox holds both rounds", || async {
                metric(&http, &base, "guidon_edge_events_buffered").await == Some(want)
            })
            .await;
            println!("round 2: {want} events in the restarted edge's outbox");
        }
        println!(
            "round {round}: acknowledged {} of {sent} so far",
            acked.len()
        );
    }
    let up_base = up.as_ref().unwrap().base.clone();
    // Everything acknowledged reaches the upstream once it can.
    until(Duration::from_secs(60), "the outbox drains", || async {
        metric(&http, &base, "guidon_edge_events_buffered").await == Some(0.0)
    })
    .await;
    let found = events_found(&http, &up_base, &app, &acked).await;
    println!(
        "events: sent {sent}, acknowledged by the edge {}, refused {refused}, arrived upstream {found}",
        acked.len()
    );
    assert!(
        acked.len() as u64 >= sent - 20 * 10,
        "nearly all were acknowledged"
    );
    assert_eq!(
        found,
        acked.len() as u64,
        "every acknowledged event arrived upstream"
    );
    drop(edge_process);
}

fn edge_fails(dir: &TempDir, upstream: &str) -> (bool, String) {
    let data = dir.join("bad-edge").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(edge_args(upstream, &data, "2"))
        .output()
        .unwrap();
    (
        out.status.code() == Some(1),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

fn assert_one_line(ok: bool, stderr: &str, fragment: &str) {
    assert!(ok, "exit 1 expected: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("guidon:"))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(fragment), "{fragment:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_upstream_url_token_or_environment_is_one_line_and_a_failure() {
    let dir = TempDir::new("edge-bad");
    let http = http();
    let up = upstream(&dir, free_port());
    let (ok, stderr) = edge_fails(&dir, "ftp://nowhere");
    assert_one_line(ok, &stderr, "--upstream ftp://nowhere");
    // Not a Guidon API: the upstream's metrics-only address would be one; a
    // plain path under the upstream that is not its API is another.
    let (ok, stderr) = edge_fails(&dir, &format!("{}/not-guidon", up.base));
    assert_one_line(ok, &stderr, "not a Guidon server");
    let sdk_token = sdk_token(&http, &up.base, "app").await;
    let data = dir.join("bad-edge").display().to_string();
    for (secret, fragment) in [
        ("gdn_wrong_secret_0000000000", "refuses the edge's token"),
        (sdk_token.as_str(), "needs an admin token"),
    ] {
        let mut args = edge_args(&up.base, &data, "2");
        args[4] = secret;
        let out = Command::new(env!("CARGO_BIN_EXE_guidon"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_one_line(out.status.code() == Some(1), &stderr, fragment);
    }
    let mut args = edge_args(&up.base, &data, "2");
    args[6] = "no-such-env";
    let out = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_one_line(
        out.status.code() == Some(1),
        &stderr,
        "has no environment \"no-such-env\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_at_start_without_a_snapshot_is_not_ready_and_retried() {
    let dir = TempDir::new("edge-unreachable");
    let http = http();
    let port = free_port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let edge = edge(&dir, &nowhere, &dir.join("edge-data"));
    let log = std::fs::read_to_string(dir.join("edge.log")).unwrap();
    assert!(
        log.contains("cannot reach the upstream"),
        "it says so: {log}"
    );
    let (status, body) = readyz(&http, &edge.base).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("starting")),
        "{body}"
    );
    let (status, body) = answer(
        http.post(format!("{}/ofrep/v1/evaluate/flags/a", edge.base))
            .bearer_auth(ADMIN)
            .json(&json!({"context": {}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "no state, and no token it can check: {body}");
    // The upstream appears: the edge reaches it by itself.
    let up = upstream(&dir, port);
    put_flag(&http, &up.base, &valued_flag("a", json!("late"))).await;
    let took = until(FOLLOW, "the edge becomes ready", || async {
        readyz(&http, &edge.base).await.1["status"] == "ready"
    })
    .await;
    println!("ready {took:?} after the upstream appeared");
    let app = sdk_token(&http, &up.base, "app").await;
    caught_up(&http, &up.base, &edge.base, &app, "late upstream").await;
    assert_eq!(
        ofrep_value(&http, &edge.base, &app, "a").await,
        (StatusCode::OK, json!("late"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_followed_with_its_ca_and_refused_without() {
    let dir = TempDir::new("edge-tls");
    let http = http();
    let tls = TestTls::new("edge-tls");
    let files = tls.files();
    let ca = dir.file("ca.pem", &tls.ca_pem());
    let db = format!("sqlite://{}", dir.join("upstream.db").display());
    let (cert, key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    let up = Guidon::spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--heartbeat-secs",
            "1",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[("GUIDON_ADMIN_TOKEN", ADMIN)],
        &dir.join("upstream.log"),
    );
    assert!(up.base.starts_with("https://"), "{}", up.base);
    let data = dir.join("edge-data").display().to_string();
    let ttl = TTL_SECS.to_string();
    // Without its CA: one line naming the certificate, and a failure.
    let out = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(edge_args(&up.base, &data, &ttl))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_one_line(out.status.code() == Some(1), &stderr, "does not trust");
    let mut args = edge_args(&up.base, &data, &ttl);
    args.extend(["--ca-cert", ca.as_str()]);
    let edge = Guidon::spawn(&args, &[], &dir.join("edge.log"));
    until(FOLLOW, "the edge is ready", || async {
        readyz(&http, &edge.base).await.1["status"] == "ready"
    })
    .await;
    let admin = guidon_client::admin::AdminClient::new(&up.base, ADMIN)
        .unwrap()
        .ca_certificate_pem(tls.ca_pem().as_bytes())
        .unwrap();
    let flag = guidon_client::admin::Body::json(&valued_flag("a", json!("secure"))).unwrap();
    let written = admin.set_flag(ENV, "a", flag, None).await.unwrap();
    let app = admin
        .create_token("app", guidon_client::admin::Role::Sdk, Some(ENV))
        .await
        .unwrap()
        .token;
    until(FOLLOW, "the edge follows the https upstream", || async {
        sdk_flags(&http, &edge.base, &app).await.2["revision"].as_u64() == Some(written.revision)
    })
    .await;
    assert_eq!(
        ofrep_value(&http, &edge.base, &app, "a").await,
        (StatusCode::OK, json!("secure"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_a_batch_rather_than_acknowledging_it() {
    let dir = TempDir::new("edge-full");
    let http = http();
    let up = upstream(&dir, free_port());
    put_flag(&http, &up.base, &experiment_flag()).await;
    let app = sdk_token(&http, &up.base, "app").await;
    let proxy = Proxy::start(addr(&up.base), 16).await;
    let data = dir.join("edge-data").display().to_string();
    let ttl = TTL_SECS.to_string();
    let through = proxy.base();
    let mut args = edge_args(&through, &data, &ttl);
    args.extend(["--max-buffered-events", "50"]);
    let edge = Guidon::spawn(&args, &[], &dir.join("edge.log"));
    until(FOLLOW, "the edge is ready", || async {
        readyz(&http, &edge.base).await.1["status"] == "ready"
    })
    .await;
    assert_eq!(post_events(&http, &edge.base, &app, &[]).await.0, 200);
    proxy.set_faults(Faults {
        refuse: true,
        ..Faults::default()
    });
    proxy.cut_all();
    let batch = |from: u64, n: u64| {
        (from..from + n)
            .map(|i| event("full", i))
            .collect::<Vec<_>>()
    };
    let first = batch(0, 40);
    let (status, body) = post_events(&http, &edge.base, &app, &first).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(40)),
        "{body}"
    );
    let (status, body) = post_events(&http, &edge.base, &app, &batch(40, 20)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("buffer is full"),
        "{body}"
    );
    // Once the upstream takes them, there is room again.
    proxy.set_faults(Faults::default());
    until(FOLLOW, "the outbox drains", || async {
        metric(&http, &edge.base, "guidon_edge_events_buffered").await == Some(0.0)
    })
    .await;
    let second = batch(60, 20);
    let (status, body) = post_events(&http, &edge.base, &app, &second).await;
    assert_eq!(status, 200, "{body}");
    let acked: Vec<Value> = first.into_iter().chain(second).collect();
    until(FOLLOW, "the second batch is delivered", || async {
        metric(&http, &edge.base, "guidon_edge_events_buffered").await == Some(0.0)
    })
    .await;
    assert_eq!(events_found(&http, &up.base, &app, &acked).await, 60);
}
