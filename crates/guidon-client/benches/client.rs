//! SDK benchmarks: local evaluation (criterion, single thread), evaluations
//! per second on two threads while live updates arrive, and end-to-end
//! propagation (admin PUT → the SDK has applied it) over 200 changes,
//! against an in-process `guidon serve` on SQLite.
//!
//! `cargo bench -p guidon-client --bench client`

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;
use guidon_client::{Client, Context, EventOptions, FlagFile};
use guidon_server::Config;
use guidon_server::testing::{ADMIN, ENV, TestServer, config, sqlite};
use serde_json::{Value, json};

fn flags_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flags.json")
}

fn user() -> Context {
    Context::new()
        .with("user_id", "user_1002")
        .with("email", "di@example.com")
        .with("country", "DE")
        .with("device", "desktop")
        .with("app_version", "2.4.0")
}

fn local(c: &mut Criterion) {
    let client = Client::from_file(flags_path()).unwrap();
    let ctx = user();
    let mut g = c.benchmark_group("sdk_local");
    g.bench_function("is_enabled dark_mode (rollout)", |b| {
        b.iter(|| client.is_enabled(black_box("dark_mode"), black_box(&ctx)))
    });
    g.bench_function(
        "with_evaluation new_checkout (prerequisite, targets, rules, split)",
        |b| {
            b.iter(|| {
                client.with_evaluation(black_box("new_checkout"), black_box(&ctx), |ev| {
                    ev.variant.map(str::len)
                })
            })
        },
    );
    g.bench_function("evaluate new_checkout (owned result)", |b| {
        b.iter(|| client.evaluate(black_box("new_checkout"), black_box(&ctx)))
    });
    // The engine alone, for the SDK's overhead (ArcSwap load, clock, status).
    let file: FlagFile =
        FlagFile::from_json_str(&std::fs::read_to_string(flags_path()).unwrap()).unwrap();
    let snapshot = guidon_engine::Snapshot::compile(&file).unwrap();
    let now = guidon_engine::Timestamp::now();
    g.bench_function("engine only: evaluate new_checkout", |b| {
        b.iter(|| {
            snapshot
                .evaluate(black_box("new_checkout"), black_box(&ctx), now)
                .variant
                .map(str::len)
        })
    });
    g.finish();
}

/// PUTs a flag in `production`; the revision it made.
async fn put_flag(server: &TestServer, flag: Value) -> u64 {
    server.put_flag(ENV, flag).await["revision"]
        .as_u64()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Two threads evaluating while a writer changes flags; then propagation.
fn live() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sqlite("client_bench");
        // The store's own poll interval, not the tests' 100 ms.
        let server = TestServer::start_with(Config {
            poll_interval: Config::default().poll_interval,
            ..config(&db.url)
        })
        .await;
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(flags_path()).unwrap()).unwrap();
        server.put(&format!("/api/v1/envs/{ENV}/flags"), file).await;
        let client = Client::builder(&server.base, ADMIN)
            .environment(ENV)
            .events(EventOptions {
                enabled: false,
                ..EventOptions::default()
            })
            .build()
            .await
            .unwrap();

        // Evaluations per second on two threads during live updates.
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                let stop = stop.clone();
                let total = total.clone();
                std::thread::spawn(move || {
                    let ctx = user();
                    let mut n = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            black_box(client.is_enabled(black_box("new_checkout"), &ctx));
                        }
                        n += 1000;
                    }
                    total.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        let start_revision = client.revision().unwrap_or(0);
        let started = Instant::now();
        let window = Duration::from_secs(5);
        let mut i = 0;
        while started.elapsed() < window {
            i += 1;
            put_flag(
                &server,
                json!({"key": "dark_mode", "enabled": true, "rollout": {"percentage": i % 100}}),
            )
            .await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let applied = client.revision().unwrap_or(0) - start_revision;
        println!(
            "sdk_live: {:.1} M evaluations/s on 2 threads (is_enabled new_checkout) over {elapsed:.1} s \
             while {applied} revisions were applied ({:.0}/s; the server and the writer share the 2 vCPUs)",
            total.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
            applied as f64 / elapsed
        );

        // Propagation: admin PUT sent → the SDK has applied the revision.
        let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let (s, c) = (seen.clone(), client.clone());
        client.on_change(move |_| {
            if let Some(r) = c.revision() {
                s.lock().unwrap().insert(r, Instant::now());
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut latencies = Vec::new();
        for i in 0..200 {
            let sent = Instant::now();
            let revision = put_flag(
                &server,
                json!({"key": "dark_mode", "enabled": true, "description": format!("p{i}"),
                        "rollout": {"percentage": i % 100 + 1}}),
            )
            .await;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(at) = seen.lock().unwrap().get(&revision) {
                    latencies.push(at.duration_since(sent));
                    break;
                }
                assert!(Instant::now() < deadline, "revision {revision} never arrived");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        latencies.sort();
        println!(
            "sdk_propagation: admin PUT -> SDK applied, 200 changes over SSE: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3
        );
        client.close().await.unwrap();
        server.stop().await;
    });
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    local(&mut c);
    c.final_summary();
    live();
}
