//! Convergence under faults: SDK instances behind a proxy that drops
//! connections, delays bytes and cuts streams mid-message, while a writer
//! makes 500 changes. Every instance must end with exactly the server's
//! final revision and content.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use guidon_client::{Client, EventOptions, Transport};
use guidon_server::testing::{
    ENV, Faults, Proxy, Rng, TestServer, canonical, config, eventually, sqlite, valued_flag,
};
use serde_json::{Value, json};

const CHANGES: u64 = 500;
const CONVERGE: Duration = Duration::from_secs(60);

fn builder(base: &str, token: &str, transport: Transport) -> guidon_client::ClientBuilder {
    Client::builder(base, token)
        .transport(transport)
        .heartbeat(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        .fallback_to_polling(4, Duration::from_secs(2))
        .poll_interval(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
        .start_timeout(Duration::from_secs(10))
        .events(EventOptions {
            enabled: false,
            ..EventOptions::default()
        })
}

/// Four SDKs: SSE and WebSocket, each once stream-only (they never fall
/// back to polling, so every outage ends in a resumed stream) and once
/// with the default fallback.
async fn sdks(proxy: &Proxy, token: &str) -> Vec<Client> {
    let mut out = Vec::new();
    for (transport, stream_only) in [
        (Transport::Sse, true),
        (Transport::WebSocket, true),
        (Transport::Sse, false),
        (Transport::WebSocket, false),
    ] {
        let mut b = builder(&proxy.base(), token, transport);
        if stream_only {
            b = b.fallback_to_polling(u32::MAX, Duration::from_secs(3600));
        }
        out.push(b.build().await.unwrap());
    }
    out
}

/// Change number `i`: flag upserts (values, rules on a segment,
/// prerequisites), flag deletes, segment upserts.
async fn change(server: &TestServer, i: u64, rng: &mut Rng) {
    let flag = format!("f{}", rng.below(25));
    match rng.below(10) {
        0 => {
            // Deleting a flag another one depends on is refused (409); both
            // outcomes are fine for the test.
            let _ = server
                .delete(&format!("/api/v1/envs/{ENV}/flags/{flag}"))
                .await;
        }
        1 => {
            server
                .put_segment(
                    ENV,
                    json!({"key": format!("s{}", rng.below(3)),
                                    "included": [format!("u{i}")]}),
                )
                .await;
        }
        2 => {
            server
                .put_flag(
                    ENV,
                    json!({"key": flag, "enabled": true,
                    "rules": [{"conditions": [{"operator": "in_segment",
                        "values": [format!("s{}", rng.below(3))]}],
                        "serve": {"enabled": true, "variant": "v"}}],
                    "variants": [{"key": "v", "weight": 100, "value": i}]}),
                )
                .await;
        }
        _ => {
            server.put_flag(ENV, valued_flag(&flag, json!(i))).await;
        }
    }
}

async fn write_changes(server: &TestServer, range: std::ops::Range<u64>, rng: &mut Rng) {
    // Segments exist before any rule refers to them.
    for s in 0..3 {
        server
            .put_segment(ENV, json!({"key": format!("s{s}"), "included": ["u"]}))
            .await;
    }
    for i in range {
        change(server, i, rng).await;
    }
}

/// Waits until every SDK holds the server's document; panics with the
/// differences otherwise.
async fn assert_converged(server: &TestServer, clients: &[Client], label: &str) {
    let want = server.document(ENV).await;
    let revision = want["revision"].as_u64().unwrap();
    let want = canonical(&want);
    let start = Instant::now();
    let converged = eventually(CONVERGE, || {
        clients.iter().all(|c| c.revision() == Some(revision))
    })
    .await;
    for (n, c) in clients.iter().enumerate() {
        let got = canonical(&serde_json::from_str(&c.document().to_json()).expect("json"));
        assert_eq!(
            c.revision(),
            Some(revision),
            "{label}: sdk {n} at {:?}, server at {revision}; {:?}",
            c.revision(),
            c.sync_stats()
        );
        assert_eq!(got, want, "{label}: sdk {n} content differs");
    }
    println!(
        "{label}: {} SDKs converged on revision {revision} {:?} after the last write (waited {:?})",
        clients.len(),
        converged,
        start.elapsed()
    );
    for (n, c) in clients.iter().enumerate() {
        println!("  sdk {n}: {:?} {:?}", c.status(), c.sync_stats());
    }
}

fn flags_count(doc: &Value) -> usize {
    doc["flags"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_converge_through_a_faulty_network() {
    let db = sqlite("client_faults");
    let server = TestServer::start(&db.url).await;
    let token = server.sdk_token("faults", ENV).await;
    let proxy = Proxy::start(server.addr, 42).await;
    let clients = sdks(&proxy, &token).await;
    proxy.set_faults(Faults {
        chaos: true,
        ..Faults::default()
    });
    let mut rng = Rng::new(7);
    write_changes(&server, 0..CHANGES, &mut rng).await;
    // Faults go on while the SDKs catch up.
    assert_converged(&server, &clients, "chaos").await;
    println!(
        "  proxy cut {} connections; server has {} flags",
        proxy.cuts.load(std::sync::atomic::Ordering::Relaxed),
        flags_count(&server.document(ENV).await)
    );
    for c in &clients {
        c.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_converge_across_a_server_restart() {
    let db = sqlite("client_restart");
    let server = TestServer::start(&db.url).await;
    let token = server.sdk_token("restart", ENV).await;
    let proxy = Proxy::start(server.addr, 43).await;
    let clients = sdks(&proxy, &token).await;
    proxy.set_faults(Faults {
        chaos: true,
        ..Faults::default()
    });
    let mut rng = Rng::new(8);
    write_changes(&server, 0..CHANGES / 2, &mut rng).await;
    // Stop the server mid-run (its streams end), restart it on the same
    // database file at another address.
    server.stop().await;
    proxy.cut_all();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = TestServer::start(&db.url).await;
    proxy.set_upstream(server.addr);
    write_changes(&server, CHANGES / 2..CHANGES, &mut rng).await;
    assert_converged(&server, &clients, "restart").await;
    for c in &clients {
        c.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_converge_after_changes_made_while_disconnected() {
    let db = sqlite("client_disconnected");
    // A short catch-up horizon, so resuming from far behind takes the
    // whole document (410 / snapshot) rather than the changes.
    let mut cfg = config(&db.url);
    cfg.catch_up_horizon = 50;
    let server = TestServer::start_with(cfg).await;
    let token = server.sdk_token("offline", ENV).await;
    let proxy = Proxy::start(server.addr, 44).await;
    let clients = sdks(&proxy, &token).await;
    let mut rng = Rng::new(9);
    write_changes(&server, 0..100, &mut rng).await;
    assert_converged(&server, &clients, "before").await;
    // Cut off: 20 changes (within the horizon), back, converge.
    proxy.set_faults(Faults {
        refuse: true,
        ..Faults::default()
    });
    proxy.cut_all();
    for i in 100..120 {
        change(&server, i, &mut rng).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snapshots: Vec<u64> = clients.iter().map(|c| c.sync_stats().snapshots).collect();
    proxy.set_faults(Faults::default());
    assert_converged(&server, &clients, "short outage").await;
    // Within the horizon, the stream-only SDKs resumed with the changes.
    for n in 0..2 {
        assert_eq!(clients[n].sync_stats().snapshots, snapshots[n], "sdk {n}");
    }
    // Cut off again: 380 changes (past the horizon), back with chaos.
    proxy.set_faults(Faults {
        refuse: true,
        ..Faults::default()
    });
    proxy.cut_all();
    for i in 120..CHANGES {
        change(&server, i, &mut rng).await;
    }
    proxy.set_faults(Faults {
        chaos: true,
        ..Faults::default()
    });
    assert_converged(&server, &clients, "long outage").await;
    // Past the horizon, they took the whole document.
    for n in 0..2 {
        assert!(clients[n].sync_stats().snapshots > snapshots[n], "sdk {n}");
    }
    for c in &clients {
        c.close().await.unwrap();
    }
    server.stop().await;
}

/// Copies a stopped server's SQLite database (with its WAL files, if any).
fn copy_database(from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let source = std::path::PathBuf::from(format!("{}{suffix}", from.display()));
        let target = std::path::PathBuf::from(format!("{}{suffix}", to.display()));
        let _ = std::fs::remove_file(&target);
        if source.exists() {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

/// A server restored from an older backup has never reached the SDKs'
/// revision: it says so (409 `revision_ahead`) and they take its document,
/// instead of holding on to revisions that no longer exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_take_the_document_of_a_server_restored_from_a_backup() {
    let db = sqlite("client_backup");
    let file = std::path::PathBuf::from(db.url.strip_prefix("sqlite://").unwrap());
    let backup = file.with_extension("backup");
    let server = TestServer::start(&db.url).await;
    let token = server.sdk_token("backup", ENV).await;
    let mut rng = Rng::new(10);
    write_changes(&server, 0..20, &mut rng).await;
    server.stop().await;
    copy_database(&file, &backup);
    let server = TestServer::start(&db.url).await;
    let proxy = Proxy::start(server.addr, 45).await;
    let clients = sdks(&proxy, &token).await;
    write_changes(&server, 20..40, &mut rng).await;
    assert_converged(&server, &clients, "before the restore").await;
    let ahead = clients[0].revision().unwrap();

    server.stop().await;
    proxy.cut_all();
    copy_database(&backup, &file);
    let server = TestServer::start(&db.url).await;
    proxy.set_upstream(server.addr);
    let restored = server.document(ENV).await["revision"].as_u64().unwrap();
    assert!(
        restored < ahead,
        "the backup is older: {restored} < {ahead}"
    );
    assert_converged(&server, &clients, "after the restore").await;
    for c in &clients {
        assert!(c.sync_stats().resets >= 1, "{:?}", c.sync_stats());
    }
    // And they follow it from there.
    write_changes(&server, 40..45, &mut rng).await;
    assert_converged(&server, &clients, "after the restore, new writes").await;
    for c in &clients {
        c.close().await.unwrap();
    }
    server.stop().await;
}
