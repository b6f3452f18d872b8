//! The fault campaign: the real `guidon serve` binary, as an operator runs
//! it, under the faults an unlucky operator meets.
//!
//! - `a_postgres_outage_*`: the PostgreSQL server stops under a running
//!   `guidon serve` (a private instance, `PrivatePostgres`). Evaluations,
//!   documents and streams (open ones and new ones) keep serving the last
//!   state, writes and events fail with a 503 JSON error, and everything
//!   works again once the database is back.
//! - `sqlite_disk_full_*`: the database lives on a tmpfs of a few
//!   megabytes, filled up. Writes fail with a JSON error, the server keeps
//!   serving, nothing acknowledged is lost, nothing failed is half there,
//!   and SQLite's integrity check passes.
//! - `a_mixed_load_soak_*`: writers, evaluators, event senders and four
//!   SDKs (SSE and WebSocket) through the fault proxy (chaos: cuts
//!   mid-message, delays, refused connections, and every connection cut at
//!   random moments), while the server is SIGKILLed and restarted at
//!   random moments. At the end every acknowledged write and event is
//!   there, every SDK holds the server's document, and the server's memory
//!   over the kill-free last third is stable.
//!
//! Size: `GUIDON_SOAK_SECS` (default 20) and `GUIDON_FAULT_ROUNDS` (the
//! SIGKILLs, default 4). The default runs in `cargo test --workspace`
//! (and so in `.ci/run`); the long form and its figures are in
//! `docs/faults.md`. Each test prints its figures (`--nocapture`).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guidon_client::{Client, Context, EventOptions, Transport};
use guidon_server::testing::{
    ADMIN, ENV, Faults, PrivatePostgres, Proxy, Rng, SmallFs, SseEventJson, SseReader, TempDir,
    canonical, eventually, free_port, sqlite_integrity, valued_flag,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    Guidon, answer, event, events_found, experiment_flag, http, post_events, put_flag, sdk_token,
};

/// How long the SDKs may take to converge once the faults are over.
const CONVERGE: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One `guidon serve` process, killed (SIGKILL) on drop.
struct Serve {
    process: Guidon,
    base: String,
    pid: u32,
}

impl Serve {
    /// Starts `guidon serve` on 127.0.0.1:`port` over `url`, logging to
    /// `log`, and waits until it says it listens. The port may still be held
    /// for a moment after a SIGKILL: it retries.
    fn spawn(url: &str, port: u16, log: &Path) -> Serve {
        let listen = format!("127.0.0.1:{port}");
        let process = Guidon::spawn(
            &[
                "serve",
                "--listen",
                &listen,
                "--database-url",
                url,
                "--heartbeat-secs",
                "1",
                "--poll-ms",
                "100",
            ],
            &[("GUIDON_ADMIN_TOKEN", ADMIN)],
            log,
        );
        Serve {
            base: process.base.clone(),
            pid: process.pid,
            process,
        }
    }

    /// The resident set size and its anonymous part (the heap: what a
    /// leak grows; the rest is the binary and SQLite's memory map of the
    /// database file), in KiB.
    fn rss_kib(&self) -> Option<(u64, u64)> {
        Some((
            status_kib(self.pid, "VmRSS")?,
            status_kib(self.pid, "RssAnon")?,
        ))
    }

    /// SIGKILL, and reaped.
    fn kill(self) {
        self.process.kill();
    }

    /// SIGTERM; the exit status.
    fn stop(self) -> std::process::ExitStatus {
        self.process.stop()
    }
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn document(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/api/v1/sdk/flags"))
        .bearer_auth(ADMIN)
        .header("X-Guidon-Environment", ENV)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// OFREP evaluation of `key` for `user`: the status and the answer.
async fn ofrep(http: &reqwest::Client, base: &str, token: &str, key: &str) -> (StatusCode, Value) {
    match http
        .post(format!("{base}/ofrep/v1/evaluate/flags/{key}"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "user-1"}}))
        .send()
        .await
    {
        Ok(response) => answer(response).await,
        Err(_) => (StatusCode::BAD_GATEWAY, Value::Null),
    }
}

/// The error body of a failed write: JSON, with a code and a message.
fn assert_clear_error(what: &str, status: StatusCode, body: &Value, code: &str) {
    assert_eq!(status, 503, "{what}: {status} {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("database") && message.len() > 20,
        "{what}: unclear message {body}"
    );
}

fn sdk(base: &str, token: &str, transport: Transport) -> guidon_client::ClientBuilder {
    Client::builder(base, token)
        .transport(transport)
        .heartbeat(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        .poll_interval(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
        .start_timeout(Duration::from_secs(10))
        .events(EventOptions {
            enabled: false,
            ..EventOptions::default()
        })
}

/// Four SDKs: SSE and WebSocket, each once stream-only (never falling back
/// to polling) and once with the default fallback.
async fn sdks(base: &str, token: &str) -> Vec<Client> {
    let mut out = Vec::new();
    for (transport, stream_only) in [
        (Transport::Sse, true),
        (Transport::WebSocket, true),
        (Transport::Sse, false),
        (Transport::WebSocket, false),
    ] {
        let mut b = sdk(base, token, transport);
        if stream_only {
            b = b.fallback_to_polling(u32::MAX, Duration::from_secs(3600));
        } else {
            b = b.fallback_to_polling(4, Duration::from_secs(2));
        }
        out.push(b.build().await.unwrap());
    }
    out
}

/// Waits until every SDK holds the server's document (revision and
/// content); panics with the differences otherwise. The revision.
async fn converged(http: &reqwest::Client, base: &str, clients: &[Client], label: &str) -> u64 {
    let want = document(http, base).await;
    let revision = want["revision"].as_u64().unwrap();
    let waited = eventually(CONVERGE, || {
        clients.iter().all(|c| c.revision() == Some(revision))
    })
    .await;
    let want = canonical(&want);
    for (n, c) in clients.iter().enumerate() {
        assert_eq!(
            c.revision(),
            Some(revision),
            "{label}: sdk {n} at {:?}, server at {revision}; {:?}",
            c.revision(),
            c.sync_stats()
        );
        let got = canonical(&serde_json::from_str(&c.document().to_json()).unwrap());
        assert_eq!(got, want, "{label}: sdk {n} content differs");
    }
    println!(
        "{label}: {} SDKs on revision {revision} (waited {waited:?})",
        clients.len()
    );
    revision
}

/// A stream opened now (`since`: the resume point): its first event.
async fn first_stream_event(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    since: Option<u64>,
) -> (StatusCode, Option<Value>) {
    let mut request = http
        .get(format!("{base}/api/v1/sdk/stream"))
        .bearer_auth(token);
    if let Some(since) = since {
        request = request.header("Last-Event-ID", since.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if status != 200 {
        return (status, Some(answer(response).await.1));
    }
    let mut reader = SseReader::new(response);
    let first = reader.next(Duration::from_secs(5)).await;
    (
        status,
        first.map(|e| json!({"event": e.event, "data": e.json()})),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_keeps_evaluations_and_streams_and_fails_writes_with_503() {
    let pg = match tokio::task::block_in_place(PrivatePostgres::start) {
        Ok(pg) => pg,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = TempDir::new("campaign-pg");
    let log = dir.join("serve.log");
    let port = free_port();
    let url = pg.url("guidon_campaign");
    let server = tokio::task::block_in_place(|| Serve::spawn(&url, port, &log));
    let base = server.base.clone();
    let http = http();
    for key in ["a", "b", "c"] {
        let (status, body) = put_flag(&http, &base, &valued_flag(key, json!(1))).await;
        assert_eq!(status, 201, "{body}");
    }
    put_flag(&http, &base, &experiment_flag()).await;
    let token = sdk_token(&http, &base, "campaign").await;
    let clients = sdks(&base, &token).await;
    let before = converged(&http, &base, &clients, "before the outage").await;
    let acked: Vec<Value> = (0..20).map(|n| event("pg", n)).collect();
    let (status, body) = post_events(&http, &base, &token, &acked).await.unwrap();
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(20))
    );

    let stopped = Instant::now();
    tokio::task::block_in_place(|| pg.pg_ctl_stop()).expect("stop the private server");
    println!("PostgreSQL stopped (pg_ctl -m immediate)");

    // Writes and events fail, with a 503 naming the database, in bounded
    // time (the pool's acquire timeout).
    let t = Instant::now();
    let (status, body) = put_flag(&http, &base, &valued_flag("a", json!(2))).await;
    assert_clear_error("PUT during the outage", status, &body, "unavailable");
    println!("  PUT: {status} after {:.2?}: {body}", t.elapsed());
    let t = Instant::now();
    let (status, body) = post_events(&http, &base, &token, &[event("pg", 100)])
        .await
        .unwrap();
    assert_clear_error("events during the outage", status, &body, "unavailable");
    println!("  POST events: {status} after {:.2?}: {body}", t.elapsed());

    // Evaluations, the document and streams serve the last state.
    for _ in 0..10 {
        let (status, body) = ofrep(&http, &base, &token, "a").await;
        assert_eq!(status, 200, "OFREP during the outage: {body}");
        assert_eq!(body["value"], 1, "{body}");
    }
    assert_eq!(document(&http, &base).await["revision"], before);
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the process is alive: /healthz");
    // Still in rotation: it serves the last state, and says the database is away.
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "/readyz during the outage");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["database"].as_str().is_some_and(|d| !d.is_empty()),
        "{ready}"
    );
    for since in [None, Some(before), Some(before - 1)] {
        let (status, first) = first_stream_event(&http, &base, &token, since).await;
        assert_eq!(
            status, 200,
            "a stream opened with since {since:?}: {first:?}"
        );
        match since {
            // Up to date: nothing to send before the next change (the
            // heartbeat is a comment, not an event).
            Some(s) if s == before => assert_eq!(first, None, "{first:?}"),
            _ => {
                let first = first.expect("a first event");
                assert_eq!(first["event"], "snapshot", "{first}");
                assert_eq!(first["data"]["revision"], before, "{first}");
            }
        }
    }
    for (n, c) in clients.iter().enumerate() {
        assert_eq!(c.revision(), Some(before), "sdk {n}");
        assert_eq!(
            c.evaluate("a", &Context::new().with("user_id", "u")).value,
            Some(json!(1)),
            "sdk {n}"
        );
    }
    println!(
        "  OFREP, /sdk/flags, new streams and 4 SDKs served revision {before} during the outage \
         ({:.2?} so far)",
        stopped.elapsed()
    );

    // Back: writes succeed again, the SDKs hear of them.
    let restart = Instant::now();
    tokio::task::block_in_place(|| pg.pg_ctl_start());
    let mut failures = 0;
    let written = loop {
        let (status, body) = put_flag(&http, &base, &valued_flag("a", json!(3))).await;
        if status == 200 {
            break body;
        }
        assert_clear_error("PUT while recovering", status, &body, "unavailable");
        failures += 1;
        assert!(
            restart.elapsed() < Duration::from_secs(60),
            "no write succeeded within 60 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "  the first write succeeded {:.2?} after the restart ({failures} failed before): \
         revision {}",
        restart.elapsed(),
        written["revision"]
    );
    assert_eq!(
        written["revision"].as_u64(),
        Some(before + 1),
        "no failed write took a revision"
    );
    let after = converged(&http, &base, &clients, "after the outage").await;
    assert_eq!(after, before + 1);
    assert_eq!(events_found(&http, &base, &token, &acked).await, 20);
    let (status, body) = post_events(&http, &base, &token, &[event("pg", 100)])
        .await
        .unwrap();
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    for c in &clients {
        c.close().await.unwrap();
    }
    assert!(tokio::task::block_in_place(|| server.stop()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_fails_a_write_cleanly_and_corrupts_nothing() {
    let fs = match SmallFs::mount("diskfull", 8 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let logs = TempDir::new("campaign-disk");
    let log = logs.join("serve.log");
    let url = format!("sqlite://{}", fs.join("guidon.db").display());
    let port = free_port();
    let server = Serve::spawn(&url, port, &log);
    let base = server.base.clone();
    let http = http();
    let mut acked: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let big = "x".repeat(20_000);
    let flag = |key: &str| json!({"key": key, "enabled": true, "description": big});
    for n in 0..5 {
        let key = format!("before{n}");
        let (status, body) = put_flag(&http, &base, &flag(&key)).await;
        assert_eq!(status, 201, "{}", body["error"]);
        acked.insert(
            key,
            (
                body["version"].as_u64().unwrap(),
                body["revision"].as_u64().unwrap(),
            ),
        );
    }
    let token = sdk_token(&http, &base, "disk").await;
    let filled = fs.fill();
    println!("filled the {} MiB tmpfs with {filled} bytes", 8);

    // Writes until the disk refuses one (SQLite may still have room in its
    // WAL): each either succeeds whole or fails with a JSON error.
    let mut refused = Vec::new();
    for n in 0..200 {
        let key = format!("full{n}");
        let (status, body) = put_flag(&http, &base, &flag(&key)).await;
        if status == 201 {
            acked.insert(
                key,
                (
                    body["version"].as_u64().unwrap(),
                    body["revision"].as_u64().unwrap(),
                ),
            );
            continue;
        }
        assert_clear_error("a write on a full disk", status, &body, "unavailable");
        if refused.is_empty() {
            println!("  write {n} on the full disk: {status} {body}");
        }
        refused.push(key);
        if refused.len() == 3 {
            break;
        }
    }
    assert_eq!(refused.len(), 3, "the full disk never refused a write");
    let (status, body) = post_events(&http, &base, &token, &[event("disk", 0)])
        .await
        .unwrap();
    println!("  events on the full disk: {status} {body}");
    assert!(
        status == 200 || status == 503,
        "events on a full disk: {status} {body}"
    );
    if status == 503 {
        assert_clear_error("events on a full disk", status, &body, "unavailable");
    }
    // Still serving.
    let (status, body) = ofrep(&http, &base, &token, "before0").await;
    assert_eq!(status, 200, "{body}");
    let served = document(&http, &base).await["revision"].as_u64().unwrap();

    // Space again: writes work without a restart.
    fs.free();
    let (status, body) = put_flag(&http, &base, &flag("after")).await;
    assert_eq!(
        status, 201,
        "a write once there is space again: {}",
        body["error"]
    );
    acked.insert(
        "after".into(),
        (
            body["version"].as_u64().unwrap(),
            body["revision"].as_u64().unwrap(),
        ),
    );
    assert_eq!(
        body["revision"].as_u64(),
        Some(served + 1),
        "refused writes took no revision"
    );
    assert!(server.stop().success(), "clean exit");

    // Nothing corrupted: SQLite's check, then the API on a new process.
    let integrity = sqlite_integrity(&url).await.unwrap();
    assert_eq!(integrity, "ok");
    let server = Serve::spawn(&url, port, &log);
    let doc = document(&http, &server.base).await;
    let flags: HashMap<&str, &Value> = doc["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap(), f))
        .collect();
    for (key, (version, revision)) in &acked {
        let f = flags
            .get(key.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "{key} lost: the restarted server is at revision {}, with {:?}; acknowledged {acked:?}",
                    doc["revision"],
                    flags.keys().collect::<Vec<_>>()
                )
            });
        assert_eq!(f["description"].as_str().map(str::len), Some(big.len()));
        let history: Value = http
            .get(format!(
                "{}/api/v1/envs/{ENV}/flags/{key}/history",
                server.base
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entry = &history["history"][0];
        assert_eq!(
            (entry["version"].as_u64(), entry["revision"].as_u64()),
            (Some(*version), Some(*revision)),
            "{key}: {history}"
        );
    }
    for key in &refused {
        assert!(!flags.contains_key(key.as_str()), "refused {key} is there");
    }
    assert_eq!(doc["revision"].as_u64(), Some(served + 1));
    println!(
        "  {} acknowledged writes found, {} refused writes absent, integrity_check ok",
        acked.len(),
        refused.len()
    );
    drop(server);
}

/// Events per batch the soak's sender posts.
const BATCH: u64 = 25;

/// What the soak's writers were told.
#[derive(Default)]
struct Tally {
    /// (key, version) → (revision, value) of each acknowledged write.
    writes: Mutex<BTreeMap<(String, u64), (u64, u64)>>,
    /// Acknowledgements that named a (key, version) or a revision already
    /// acknowledged: an acknowledged write was lost and its number reused.
    reused: Mutex<Vec<String>>,
    /// Writes whose answer never came (cut, refused, server killed).
    unknown: AtomicU64,
    /// The first event number of each acknowledged batch of [`BATCH`]
    /// (the events themselves are `event("soak", n)`: kept as numbers, the
    /// test's own memory stays small over a long run).
    events: Mutex<Vec<u64>>,
    events_unknown: AtomicU64,
    evals_ok: AtomicU64,
    evals_failed: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_load_soak_with_sigkills_and_network_cuts_loses_nothing() {
    let soak = Duration::from_secs(env_u64("GUIDON_SOAK_SECS", 20));
    let rounds = env_u64("GUIDON_FAULT_ROUNDS", 4).max(1);
    let started = Instant::now();
    let dir = TempDir::new("campaign-soak");
    let log = dir.join("serve.log");
    let url = format!("sqlite://{}", dir.join("guidon.db").display());
    let port = free_port();
    let server = Serve::spawn(&url, port, &log);
    let base = server.base.clone();
    let http = http();
    put_flag(&http, &base, &experiment_flag()).await;
    let token = sdk_token(&http, &base, "soak").await;
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap(), 2026).await;
    let clients = sdks(&proxy.base(), &token).await;
    proxy.set_faults(Faults {
        chaos: true,
        ..Faults::default()
    });
    let sdk_rss_start = status_kib(std::process::id(), "VmRSS");

    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..2_u64 {
        let (tally, done, base) = (tally.clone(), done.clone(), proxy.base());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut rng = Rng::new(100 + w);
            let mut n = 0_u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let value = w * 1_000_000_000 + n;
                let flag = valued_flag(&format!("f{}", rng.below(20)), json!(value));
                let key = flag["key"].as_str().unwrap().to_owned();
                let sent = http
                    .put(format!("{base}/api/v1/envs/{ENV}/flags/{key}"))
                    .bearer_auth(ADMIN)
                    .json(&flag)
                    .send()
                    .await;
                let answered = match sent {
                    Ok(response) => match answer(response).await {
                        // 200, 201, or 202 (committed, not yet served here).
                        (status, body) if status.is_success() => Some(body),
                        _ => None,
                    },
                    Err(_) => None,
                };
                match answered.and_then(|b| Some((b["version"].as_u64()?, b["revision"].as_u64()?)))
                {
                    Some((version, revision)) => {
                        let earlier = tally
                            .writes
                            .lock()
                            .unwrap()
                            .insert((key.clone(), version), (revision, value));
                        if let Some(earlier) = earlier {
                            tally.reused.lock().unwrap().push(format!(
                                "{key} v{version}: revision {} then {revision}",
                                earlier.0
                            ));
                        }
                    }
                    None => {
                        tally.unknown.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    {
        let (tally, done, base, token) = (tally.clone(), done.clone(), proxy.base(), token.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut n = 0_u64;
            while !done.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (n..n + BATCH).map(|i| event("soak", i)).collect();
                n += BATCH;
                match post_events(&http, &base, &token, &batch).await {
                    Ok((status, body))
                        if status == 200
                            && body["accepted"].as_u64().unwrap_or(0)
                                + body["duplicates"].as_u64().unwrap_or(0)
                                == BATCH =>
                    {
                        tally.events.lock().unwrap().push(n - BATCH);
                    }
                    _ => {
                        tally.events_unknown.fetch_add(BATCH, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    {
        let (tally, done, base, token) = (tally.clone(), done.clone(), proxy.base(), token.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !done.load(Ordering::Relaxed) {
                match ofrep(&http, &base, &token, "exp").await {
                    (status, _) if status == 200 => tally.evals_ok.fetch_add(1, Ordering::Relaxed),
                    _ => tally.evals_failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // The SDKs evaluate as an application would (in process, no network).
    let evaluations = Arc::new(AtomicU64::new(0));

    // The faults: SIGKILLs spread over the first two thirds, a cut of
    // every connection now and then; the last third has no SIGKILL, for
    // a steady reading of the server's memory.
    let mut rng = Rng::new(99);
    let kill_phase = soak * 2 / 3;
    let mut server = Some(server);
    let mut kills = 0;
    let mut cuts = 0;
    // (ms since start, the server's VmRSS and RssAnon, the test process's
    // VmRSS: the SDKs and the load), every second; the steady third's.
    let mut rss: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut steady: Vec<(u64, u64)> = Vec::new();
    // From each SIGKILL to the restarted server listening.
    let mut outages: Vec<Duration> = Vec::new();
    let tick = Duration::from_millis(250);
    // Kill k falls at a random moment of the k-th slice of the kill phase.
    let kill_every = u64::try_from(kill_phase.as_millis()).unwrap() / rounds;
    let kill_at = |k: u64, rng: &mut Rng| {
        Duration::from_millis(k * kill_every + kill_every / 10 + rng.below(kill_every * 8 / 10 + 1))
    };
    let mut next_kill = kill_at(0, &mut rng);
    let mut last_rss = Instant::now();
    while started.elapsed() < soak {
        tokio::time::sleep(tick).await;
        let now = started.elapsed();
        for c in &clients {
            let ctx = Context::new().with("user_id", format!("u{}", rng.below(1000)));
            let _ = c.evaluate("exp", &ctx);
            evaluations.fetch_add(1, Ordering::Relaxed);
        }
        if kills < rounds && now >= next_kill {
            let down = Instant::now();
            server.take().unwrap().kill();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(700))).await;
            server = Some(tokio::task::block_in_place(|| {
                Serve::spawn(&url, port, &log)
            }));
            outages.push(down.elapsed());
            next_kill = kill_at(kills, &mut rng);
        }
        if rng.chance(4) {
            proxy.cut_all();
            cuts += 1;
        }
        if last_rss.elapsed() >= Duration::from_secs(1) {
            last_rss = Instant::now();
            if let Some((all, anon)) = server.as_ref().and_then(Serve::rss_kib) {
                let test = status_kib(std::process::id(), "VmRSS").unwrap_or(0);
                rss.push((u64::try_from(now.as_millis()).unwrap(), all, anon, test));
                if kills == rounds && now > kill_phase {
                    steady.push((all, anon));
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let server = server.unwrap();
    let base = server.base.clone();
    assert_eq!(kills, rounds, "every SIGKILL round ran");
    let rss_end = server.rss_kib();
    // Before the checks below, which hold every acknowledgement in memory.
    let sdk_rss_end = status_kib(std::process::id(), "VmRSS");

    // Every SDK converges (the chaos goes on meanwhile).
    let revision = converged(&http, &base, &clients, "soak").await;
    proxy.set_faults(Faults::default());

    // Every acknowledged write is in its flag's history, as acknowledged.
    let writes = std::mem::take(&mut *tally.writes.lock().unwrap());
    let mut histories: HashMap<String, Vec<Value>> = HashMap::new();
    for ((key, version), (rev, value)) in &writes {
        if !histories.contains_key(key) {
            let h: Value = http
                .get(format!("{base}/api/v1/envs/{ENV}/flags/{key}/history"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            histories.insert(key.clone(), h["history"].as_array().unwrap().clone());
        }
        let entry = histories[key]
            .iter()
            .find(|e| e["version"].as_u64() == Some(*version))
            .unwrap_or_else(|| panic!("acknowledged {key} v{version} (revision {rev}) lost"));
        assert_eq!(entry["revision"].as_u64(), Some(*rev), "{key} v{version}");
        assert_eq!(
            entry["after"]["variants"][0]["value"].as_u64(),
            Some(*value),
            "{key} v{version} holds what was acknowledged"
        );
    }
    let reused = std::mem::take(&mut *tally.reused.lock().unwrap());
    assert!(reused.is_empty(), "acknowledged writes lost: {reused:?}");
    let mut revisions: Vec<u64> = writes.values().map(|w| w.0).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        writes.len(),
        "two acknowledgements of one revision"
    );
    let batches = std::mem::take(&mut *tally.events.lock().unwrap());
    let mut found = 0;
    for chunk in batches.chunks(20) {
        let events: Vec<Value> = chunk
            .iter()
            .flat_map(|&n| (n..n + BATCH).map(|i| event("soak", i)))
            .collect();
        found += events_found(&http, &base, &token, &events).await;
    }
    let acked_events = batches.len() as u64 * BATCH;
    assert_eq!(found, acked_events);

    let first = steady.first().copied().unwrap_or_default();
    let last = steady.last().copied().unwrap_or_default();
    let max_rss = rss.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "soak: {:.1} s, {kills} SIGKILLs, {cuts} cuts of every connection and {} connections \
         ended by the proxy; writes acknowledged {} (found {}), unanswered {}; events \
         acknowledged {} (found {found}), unanswered {}; OFREP evaluations {} ok, {} failed; \
         SDK evaluations {}; final revision {revision}; server RSS over the steady third \
         (VmRSS, RssAnon): {first:?} KiB -> {last:?} KiB ({} samples), largest VmRSS of the \
         run {max_rss} KiB, at the end {rss_end:?} KiB; test process (the SDKs) VmRSS \
         {sdk_rss_start:?} -> {sdk_rss_end:?} KiB",
        started.elapsed().as_secs_f64(),
        proxy.cuts.load(Ordering::Relaxed),
        writes.len(),
        writes.len(),
        tally.unknown.load(Ordering::Relaxed),
        acked_events,
        tally.events_unknown.load(Ordering::Relaxed),
        tally.evals_ok.load(Ordering::Relaxed),
        tally.evals_failed.load(Ordering::Relaxed),
        evaluations.load(Ordering::Relaxed),
        steady.len(),
    );
    let longest = outages.iter().max().copied().unwrap_or_default();
    let down: Duration = outages.iter().sum();
    println!(
        "  server down {down:.2?} in all over {kills} SIGKILLs (longest {longest:.2?}); \
         (s, server VmRSS KiB, server RssAnon KiB, test process VmRSS KiB) at tenths of the \
         run: {:?}",
        (0..10)
            .filter_map(|i| rss.get(i * rss.len() / 10))
            .map(|r| (r.0 / 1000, r.1, r.2, r.3))
            .collect::<Vec<_>>()
    );
    assert!(!writes.is_empty() && acked_events > 0, "the soak did work");
    assert!(tally.evals_ok.load(Ordering::Relaxed) > 0);
    // Stable memory: over the steady third the server's heap does not grow
    // past twice its first reading plus 160 MiB: the page caches of
    // SQLite's connections fill as the database grows (up to 128 MiB for
    // the event writer's), a leak per request or connection would not stop.
    if steady.len() >= 2 {
        assert!(
            last.1 <= 2 * first.1 + 160 * 1024,
            "server heap grew from {} KiB to {} KiB: {rss:?}",
            first.1,
            last.1
        );
    }
    for c in &clients {
        c.close().await.unwrap();
    }
    assert!(tokio::task::block_in_place(|| server.stop()).success());
    drop(dir);
}
