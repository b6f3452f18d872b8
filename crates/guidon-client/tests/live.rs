//! The client against a real `guidon serve` (and, for exact protocol cases,
//! a scripted fake server).

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guidon_client::{Client, Context, EventOptions, Reason, Status, Transport};
use guidon_server::testing::{
    ADMIN, ENV, FakeServer, Faults, Handler, Proxy, Reply, Seen, TempDir, TestServer, config,
    eventually, free_port, sqlite, sse_event, valued_flag,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_reaches_evaluate_within_milliseconds() {
    let db = sqlite("client_latency");
    let server = TestServer::start(&db.url).await;
    server.put_flag(ENV, valued_flag("price", json!(0))).await;
    let token = server.sdk_token("latency", ENV).await;
    for (n, transport) in [Transport::Sse, Transport::WebSocket]
        .into_iter()
        .enumerate()
    {
        let client = Client::builder(&server.base, &token)
            .transport(transport)
            .heartbeat(Duration::from_secs(1))
            .build()
            .await
            .unwrap();
        assert_eq!(client.status(), Status::Ready, "{transport:?}");
        let ctx = Context::new().with("user_id", "u1");
        let base = 100 * n as i64;
        let mut latencies = Vec::new();
        for i in 1..=30 {
            let value = base + i;
            let start = Instant::now();
            server
                .put_flag(ENV, valued_flag("price", json!(value)))
                .await;
            let seen = eventually(WAIT, || {
                client.number_value("price", &ctx, -1.0) == value as f64
            })
            .await;
            assert!(seen.is_some(), "{transport:?}: change {i} never arrived");
            latencies.push(start.elapsed());
        }
        latencies.sort();
        println!(
            "{transport:?}: admin PUT -> evaluate sees it: p50 {:?}, max {:?} (30 changes)",
            percentile(&latencies, 0.5),
            latencies[latencies.len() - 1]
        );
        let r = client.evaluate("price", &ctx);
        assert_eq!(r.reason, Reason::Static);
        assert_eq!(r.revision, server.document(ENV).await["revision"].as_u64());
        client.close().await.unwrap();
    }
    server.stop().await;
}

/// Duplicates and stale messages are dropped; a gap is filled from
/// `changes?since=` (or, past the horizon, 410, from the whole document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_checked_and_gaps_filled() {
    let doc = |revision: u64, value: i64| {
        json!({"revision": revision, "versions": {"a": revision},
               "flags": [valued_flag("a", json!(value))], "segments": []})
    };
    let update = |revision: u64, value: i64| {
        json!({"type": "update", "revision": revision, "changes": [
            {"revision": revision, "kind": "flag", "key": "a", "op": "upsert", "version": revision,
             "definition": valued_flag("a", json!(value))}]})
    };
    let script = {
        let mut snapshot = doc(5, 5);
        snapshot["type"] = json!("snapshot");
        let ms = Duration::from_millis(20);
        vec![
            (ms, sse_event("snapshot", 5, &snapshot)),
            (ms, sse_event("update", 5, &update(5, -1))), // duplicate
            (ms, sse_event("update", 4, &update(4, -1))), // stale
            (ms, ": heartbeat\n\n".to_owned()),
            (ms, sse_event("update", 6, &update(6, 6))),
            (ms, sse_event("update", 9, &update(9, 9))), // gap 7..8: 410, document at 8
            (ms, sse_event("update", 12, &update(12, 12))), // gap 10..11: changes
            // Cut in the middle of an event: never applied.
            (
                ms,
                "event: update\nid: 13\ndata: {\"type\":\"update\",\"revision\":13,\"chan"
                    .to_owned(),
            ),
        ]
    };
    let script = Arc::new(Mutex::new(Some(script)));
    let handler: Handler = Arc::new(move |seen: &Seen| {
        if seen.path.starts_with("/api/v1/sdk/stream") {
            match script.lock().unwrap().take() {
                Some(script) => Reply::Sse(script, Duration::from_millis(100)),
                None => Reply::Sse(vec![], Duration::from_secs(60)),
            }
        } else if seen.path == "/api/v1/sdk/changes?since=6" {
            Reply::Full(
                410,
                "application/json",
                r#"{"error":"too_old","message":"x"}"#.into(),
            )
        } else if seen.path == "/api/v1/sdk/changes?since=9" {
            let body = json!({"revision": 11, "changes": [
                {"revision": 10, "kind": "flag", "key": "a", "op": "upsert", "version": 10, "definition": valued_flag("a", json!(10))},
                {"revision": 11, "kind": "flag", "key": "a", "op": "upsert", "version": 11, "definition": valued_flag("a", json!(11))}]});
            Reply::Full(200, "application/json", body.to_string())
        } else if seen.path == "/api/v1/sdk/flags" {
            Reply::Full(200, "application/json", doc(8, 8).to_string())
        } else {
            Reply::Full(404, "application/json", "{}".into())
        }
    });
    let fake = FakeServer::start(handler).await;
    let client = Client::builder(&fake.base(), "token")
        .heartbeat(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .events(EventOptions {
            enabled: false,
            ..EventOptions::default()
        })
        .build()
        .await
        .unwrap();
    let ctx = Context::new();
    assert!(
        eventually(WAIT, || client.revision() == Some(12))
            .await
            .is_some()
    );
    // The stream was cut mid-event and resumed from 12.
    assert!(
        eventually(WAIT, || {
            fake.seen()
                .iter()
                .any(|s| s.path == "/api/v1/sdk/stream?since=12")
        })
        .await
        .is_some()
    );
    assert_eq!(client.revision(), Some(12));
    assert_eq!(client.number_value("a", &ctx, -1.0), 12.0);
    let stats = client.sync_stats();
    assert_eq!(stats.dropped, 2, "{stats:?}");
    assert_eq!(stats.gaps, 2, "{stats:?}");
    assert_eq!(stats.full_fetches, 1, "{stats:?}");
    let paths: Vec<String> = fake.seen().into_iter().map(|s| s.path).collect();
    assert!(
        paths.contains(&"/api/v1/sdk/changes?since=6".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/api/v1/sdk/changes?since=9".to_owned()),
        "{paths:?}"
    );
    let auth = &fake.seen()[0].headers;
    assert!(
        auth.iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer token")
    );
    client.close().await.unwrap();
}

/// An SDK meeting a server of a newer protocol says so, rather than
/// failing on whatever field it could not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_protocol_is_refused_with_a_clear_reason() {
    let snapshot = json!({"type": "snapshot", "protocol": 99, "revision": 3,
        "versions": {}, "flags": [{"key": "a", "enabled": true}], "segments": []});
    let handler: Handler = Arc::new(move |seen: &Seen| {
        if seen.path.starts_with("/api/v1/sdk/stream") {
            Reply::Sse(
                vec![(
                    Duration::from_millis(10),
                    sse_event("snapshot", 3, &snapshot),
                )],
                Duration::from_secs(60),
            )
        } else {
            // The document endpoint too (the client polls it after failed
            // streams).
            Reply::Full(200, "application/json", snapshot.to_string())
        }
    });
    let fake = FakeServer::start(handler).await;
    let client = Client::builder(&fake.base(), "token")
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .events(EventOptions {
            enabled: false,
            ..EventOptions::default()
        })
        .build()
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || client.status() == Status::Error)
            .await
            .is_some()
    );
    let reason = client.last_error().expect("a reason");
    assert!(
        reason.contains("protocol 99") && reason.contains("upgrade the client"),
        "{reason}"
    );
    assert_eq!(client.revision(), None, "nothing of it was taken");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_with_a_bootstrap_file_starts_stale_then_converges() {
    let dir = TempDir::new("client-bootstrap");
    let bootstrap = dir.join("flags.json");
    std::fs::write(
        &bootstrap,
        json!({"flags": [valued_flag("price", json!(1))]}).to_string(),
    )
    .unwrap();
    let port = free_port();
    let started = Instant::now();
    let client = Client::builder(&format!("http://127.0.0.1:{port}"), ADMIN)
        .environment(ENV)
        .bootstrap_file(&bootstrap)
        .start_timeout(Duration::from_secs(10))
        .backoff(Duration::from_millis(50), Duration::from_millis(300))
        .heartbeat(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let took = started.elapsed();
    println!("build() with the server down and a bootstrap file: {took:?}");
    assert!(took < Duration::from_secs(5), "build waited {took:?}");
    assert_eq!(client.status(), Status::Stale);
    let ctx = Context::new().with("user_id", "u1");
    let r = client.evaluate("price", &ctx);
    assert_eq!((r.reason, r.value.clone()), (Reason::Stale, Some(json!(1))));
    assert_eq!(r.revision, None);
    // The server appears, with other flags.
    let db = sqlite("client_bootstrap");
    let mut cfg = config(&db.url);
    cfg.listen = format!("127.0.0.1:{port}");
    let server = TestServer::start_with(cfg).await;
    server.put_flag(ENV, valued_flag("price", json!(2))).await;
    let converged = eventually(WAIT, || {
        client.status() == Status::Ready && client.number_value("price", &ctx, -1.0) == 2.0
    })
    .await;
    assert!(converged.is_some(), "status {:?}", client.status());
    assert_eq!(client.evaluate("price", &ctx).reason, Reason::Static);
    assert_eq!(
        client.revision(),
        server.document(ENV).await["revision"].as_u64()
    );
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saved_snapshot_serves_while_the_server_is_down() {
    let db = sqlite("client_saved");
    let server = TestServer::start(&db.url).await;
    // Started again later on the same port, as a restarted server.
    let again = server.same_address();
    let base = server.base.clone();
    server.put_flag(ENV, valued_flag("price", json!(7))).await;
    let token = server.sdk_token("saved", ENV).await;
    let dir = TempDir::new("client-saved");
    let saved = dir.join("last.json");
    let ctx = Context::new().with("user_id", "u1");
    let first = Client::builder(&server.base, &token)
        .snapshot_path(&saved)
        .build()
        .await
        .unwrap();
    assert_eq!(first.number_value("price", &ctx, -1.0), 7.0);
    let revision = first.revision();
    first.close().await.unwrap();
    assert!(saved.exists());
    server.stop().await;

    // Server down: the saved copy, marked stale, at its revision.
    let second = Client::builder(&base, &token)
        .snapshot_path(&saved)
        .backoff(Duration::from_millis(50), Duration::from_millis(300))
        .heartbeat(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert_eq!(second.status(), Status::Stale);
    assert_eq!(second.revision(), revision);
    let r = second.evaluate("price", &ctx);
    assert_eq!((r.reason, r.value), (Reason::Stale, Some(json!(7))));

    // Back, with a change made meanwhile (through a second server on the
    // same database file): resumed from the saved revision.
    let server = TestServer::start_with(again).await;
    server.put_flag(ENV, valued_flag("price", json!(8))).await;
    assert!(
        eventually(WAIT, || second.number_value("price", &ctx, -1.0) == 8.0
            && second.status() == Status::Ready)
        .await
        .is_some()
    );
    assert_eq!(second.sync_stats().full_fetches, 0);
    second.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_follows_changes_with_etags() {
    let db = sqlite("client_polling");
    let server = TestServer::start(&db.url).await;
    server.put_flag(ENV, valued_flag("price", json!(1))).await;
    let token = server.sdk_token("poller", ENV).await;
    let client = Client::builder(&server.base, &token)
        .transport(Transport::Polling)
        .poll_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let ctx = Context::new();
    assert_eq!(client.status(), Status::Ready);
    assert_eq!(client.number_value("price", &ctx, -1.0), 1.0);
    server.put_flag(ENV, valued_flag("price", json!(2))).await;
    assert!(
        eventually(WAIT, || client.number_value("price", &ctx, -1.0) == 2.0)
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = client.sync_stats();
    assert_eq!(stats.connects, 0);
    assert!(stats.polls >= 3, "{stats:?}");
    // Unchanged polls are 304s: nothing applied.
    assert_eq!(stats.applied, 2, "{stats:?}");
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_streams_fall_back_to_polling_and_come_back() {
    let db = sqlite("client_fallback");
    let server = TestServer::start(&db.url).await;
    server.put_flag(ENV, valued_flag("price", json!(1))).await;
    let token = server.sdk_token("fallback", ENV).await;
    let proxy = Proxy::start(server.addr, 1).await;
    proxy.set_faults(Faults {
        block_streams: true,
        ..Faults::default()
    });
    let client = Client::builder(&proxy.base(), &token)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .fallback_to_polling(2, Duration::from_secs(1))
        .poll_interval(Duration::from_millis(100))
        .heartbeat(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let ctx = Context::new();
    assert!(client.wait_ready(WAIT).await);
    server.put_flag(ENV, valued_flag("price", json!(2))).await;
    assert!(
        eventually(WAIT, || client.number_value("price", &ctx, -1.0) == 2.0)
            .await
            .is_some()
    );
    let stats = client.sync_stats();
    assert_eq!(stats.connects, 0, "{stats:?}");
    assert!(stats.polls >= 1, "{stats:?}");
    // Streams allowed again: the client returns to streaming.
    proxy.set_faults(Faults::default());
    assert!(
        eventually(WAIT, || client.sync_stats().connects >= 1)
            .await
            .is_some()
    );
    let polls = client.sync_stats().polls;
    server.put_flag(ENV, valued_flag("price", json!(3))).await;
    assert!(
        eventually(WAIT, || client.number_value("price", &ctx, -1.0) == 3.0)
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(client.sync_stats().polls <= polls + 1, "still polling");
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_declared_dead_and_replaced() {
    let db = sqlite("client_dead");
    let server = TestServer::start(&db.url).await;
    server.put_flag(ENV, valued_flag("price", json!(1))).await;
    let token = server.sdk_token("dead", ENV).await;
    let proxy = Proxy::start(server.addr, 2).await;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let client = Client::builder(&proxy.base(), &token)
        .heartbeat(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let seen = statuses.clone();
    client.on_status(move |s| seen.lock().unwrap().push(s));
    assert_eq!(client.status(), Status::Ready);
    // The connection stays open but nothing comes through (a half-dead NAT).
    proxy.set_faults(Faults {
        stall: true,
        ..Faults::default()
    });
    let started = Instant::now();
    assert!(
        eventually(WAIT, || client.sync_stats().dead_streams >= 1)
            .await
            .is_some()
    );
    println!(
        "dead stream detected after {:?} (heartbeat 1 s)",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(statuses.lock().unwrap().contains(&Status::Stale));
    proxy.set_faults(Faults::default());
    server.put_flag(ENV, valued_flag("price", json!(2))).await;
    let ctx = Context::new();
    assert!(
        eventually(WAIT, || client.number_value("price", &ctx, -1.0) == 2.0
            && client.status() == Status::Ready)
        .await
        .is_some()
    );
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hear_which_flags_changed() {
    let db = sqlite("client_listeners");
    let server = TestServer::start(&db.url).await;
    server
        .put_segment(ENV, json!({"key": "beta", "included": ["u1"]}))
        .await;
    server
        .put_flag(ENV, json!({"key": "plain", "enabled": true}))
        .await;
    server
        .put_flag(ENV, json!({"key": "gated", "enabled": true, "rules": [
            {"conditions": [{"operator": "in_segment", "values": ["beta"]}], "serve": {"enabled": false}}]}))
        .await;
    let token = server.sdk_token("listen", ENV).await;
    let client = Client::builder(&server.base, &token).build().await.unwrap();
    let heard: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let h = heard.clone();
    client.on_change(move |keys| h.lock().unwrap().push(keys.to_vec()));
    server
        .put_flag(ENV, json!({"key": "plain", "enabled": false}))
        .await;
    server
        .put_segment(ENV, json!({"key": "beta", "included": ["u1", "u2"]}))
        .await;
    server
        .delete(&format!("/api/v1/envs/{ENV}/flags/plain"))
        .await;
    assert!(
        eventually(WAIT, || heard.lock().unwrap().len() == 3)
            .await
            .is_some()
    );
    assert_eq!(
        *heard.lock().unwrap(),
        vec![
            vec!["plain".to_owned()],
            vec!["gated".to_owned()],
            vec!["plain".to_owned()]
        ]
    );
    client.close().await.unwrap();
    server.stop().await;
}

/// Eight threads evaluate a million times while 200 revisions arrive. Each
/// revision sets all ten flags to its own number, so an evaluation that saw
/// a mix of two revisions would show a value other than its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evaluations_never_see_a_torn_revision() {
    let db = sqlite("client_concurrency");
    let server = TestServer::start(&db.url).await;
    let file = |value: u64| json!({"flags": (0..10).map(|i| valued_flag(&format!("r{i}"), json!(value))).collect::<Vec<_>>()});
    let path = format!("/api/v1/envs/{ENV}/flags");
    let mut revision = server.document(ENV).await["revision"].as_u64().unwrap();
    let answer = server.put(&path, file(revision + 1)).await;
    revision += 1;
    assert_eq!(answer["revision"].as_u64(), Some(revision), "{answer}");
    let token = server.sdk_token("torn", ENV).await;
    let client = Client::builder(&server.base, &token).build().await.unwrap();
    assert_eq!(client.revision(), Some(revision));

    let done = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let client = client.clone();
            let done = done.clone();
            let total = total.clone();
            std::thread::spawn(move || {
                let ctx = Context::new().with("user_id", format!("u{t}"));
                let mut n: u64 = 0;
                let mut max = Duration::ZERO;
                let mut revisions = std::collections::BTreeSet::new();
                // At least 125,000 each (a million in all), and on until
                // the writer is done.
                while n < 125_000 || !done.load(Ordering::Relaxed) {
                    let key = format!("r{}", n % 10);
                    let start = Instant::now();
                    let r = client.evaluate(&key, &ctx);
                    max = max.max(start.elapsed());
                    let value = r.value.as_ref().and_then(Value::as_u64);
                    assert_eq!(value, r.revision, "torn read: {r:?}");
                    revisions.insert(r.revision);
                    if n.is_multiple_of(1000) {
                        let all = client.all(&ctx);
                        let values: Vec<Option<u64>> = all
                            .iter()
                            .map(|r| r.value.as_ref().and_then(Value::as_u64))
                            .collect();
                        assert!(values.iter().all(|v| *v == all[0].revision), "{values:?}");
                    }
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
                (max, revisions.len())
            })
        })
        .collect();
    for _ in 0..200 {
        let answer = server.put(&path, file(revision + 1)).await;
        revision += 1;
        assert_eq!(answer["revision"].as_u64(), Some(revision));
    }
    assert!(
        eventually(WAIT, || client.revision() == Some(revision))
            .await
            .is_some()
    );
    done.store(true, Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    let mut distinct = 0;
    for t in threads {
        let (max, revisions) = t.join().expect("no torn read");
        slowest = slowest.max(max);
        distinct = distinct.max(revisions);
    }
    let total = total.load(Ordering::Relaxed);
    println!(
        "{total} evaluations on 8 threads during 200 revisions; slowest single evaluation {slowest:?}; \
         most revisions seen by one thread {distinct}"
    );
    assert!(total >= 1_000_000);
    assert!(distinct > 1, "the evaluations did not overlap the updates");
    // No evaluation waited on the writer: a generous bound (a blocked
    // reader would wait for whole recompiles and network round trips).
    assert!(
        slowest < Duration::from_secs(1),
        "an evaluation took {slowest:?}"
    );
    client.close().await.unwrap();
    server.stop().await;
}

fn checkout_flag() -> Value {
    json!({"key": "new_checkout", "enabled": true,
           "variants": [
               {"key": "control", "weight": 50, "enabled": false, "value": {"layout": "classic"}},
               {"key": "treatment", "weight": 50, "enabled": true, "value": {"layout": "single_page"}}],
           "off_variant": "control"})
}

async fn exposed_units(server: &TestServer) -> u64 {
    let results: Value = server
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/envs/{ENV}/experiments/new_checkout/results?metric=purchase"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    results["exposures"]["units"]
        .as_u64()
        .unwrap_or_else(|| panic!("{results}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposures_and_conversions_reach_the_server_in_batches() {
    let db = sqlite("client_events");
    let server = TestServer::start(&db.url).await;
    server.put_flag(ENV, checkout_flag()).await;
    let token = server.sdk_token("events", ENV).await;
    let manual = EventOptions {
        flush_interval: Duration::from_secs(3600),
        batch_size: 100,
        ..EventOptions::default()
    };
    let client = Client::builder(&server.base, &token)
        .events(manual)
        .build()
        .await
        .unwrap();
    // 300 users, each evaluated twice: one exposure each.
    for round in 0..2 {
        for i in 0..300 {
            let user = Context::new().with("user_id", format!("user_{i}"));
            let variant = client.variant("new_checkout", &user);
            assert!(variant.is_some(), "{round}");
        }
    }
    // No unit, no exposure (it is in no experiment).
    client.variant("new_checkout", &Context::new());
    for i in 0..30 {
        let user = Context::new().with("user_id", format!("user_{i}"));
        client.track("purchase", &user, Some(99.99));
    }
    client.track(
        "not a metric!",
        &Context::new().with("user_id", "user_1"),
        None,
    );
    let stats = client.event_stats();
    assert_eq!(
        (stats.queued, stats.deduplicated, stats.dropped),
        (331, 300, 0)
    );
    client.flush().await.unwrap();
    let stats = client.event_stats();
    assert_eq!((stats.sent, stats.rejected), (330, 1), "{stats:?}");
    assert_eq!(exposed_units(&server).await, 300);

    // Sent on close.
    let closing = Client::builder(&server.base, &token)
        .events(manual)
        .build()
        .await
        .unwrap();
    for i in 300..310 {
        closing.variant(
            "new_checkout",
            &Context::new().with("user_id", format!("user_{i}")),
        );
    }
    closing.close().await.unwrap();
    assert_eq!(exposed_units(&server).await, 310);

    // Sent when the last handle is dropped.
    let dropped = Client::builder(&server.base, &token)
        .events(manual)
        .build()
        .await
        .unwrap();
    for i in 310..320 {
        dropped.variant(
            "new_checkout",
            &Context::new().with("user_id", format!("user_{i}")),
        );
    }
    drop(dropped);
    let mut units = 0;
    let start = Instant::now();
    while start.elapsed() < WAIT && units < 320 {
        units = exposed_units(&server).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(units, 320);

    // A full queue drops and counts; evaluation goes on.
    let tiny = Client::builder(&server.base, &token)
        .events(EventOptions {
            capacity: 10,
            ..manual
        })
        .build()
        .await
        .unwrap();
    for i in 0..1000 {
        tiny.variant(
            "new_checkout",
            &Context::new().with("user_id", format!("other_{i}")),
        );
    }
    let stats = tiny.event_stats();
    assert!(stats.dropped > 0, "{stats:?}");
    tiny.flush().await.unwrap();
    let stats = tiny.event_stats();
    assert!(stats.sent <= 20 && stats.sent > 0, "{stats:?}");
    println!("tiny queue: {stats:?}");
    tiny.close().await.unwrap();
    client.close().await.unwrap();
    server.stop().await;
}

/// The README's example, against a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_works() {
    let db = sqlite("client_readme");
    let server = TestServer::start(&db.url).await;
    server.put_flag(ENV, checkout_flag()).await;
    let token = server.sdk_token("readme", ENV).await;
    let run = async {
        let client = Client::builder(&server.base, &token).build().await?; // an sdk token
        let user = Context::new()
            .with("user_id", "user_42")
            .with("country", "CA");
        if client.is_enabled("new_checkout", &user) {
            println!("new checkout: {:?}", client.variant("new_checkout", &user));
        }
        client.track("purchase", &user, Some(99.99)); // a conversion
        client.close().await?; // sends the queued events
        Ok::<_, guidon_client::ClientError>(client.event_stats())
    };
    let stats = run.await.unwrap();
    assert_eq!((stats.sent, stats.rejected), (2, 0), "{stats:?}");
    server.stop().await;
}
