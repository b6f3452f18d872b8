//! Store figures for BENCHMARKS.md, on SQLite and (when
//! `GUIDON_TEST_DATABASE_URL` is set) PostgreSQL:
//! single-writer durable upserts/s, loading a 10,000-flag snapshot,
//! `changes_since` for 100 changes, and time travel (`document_at`) 500
//! revisions back.
//!
//! `GUIDON_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p guidon-store --bench store`

use std::time::{Duration, Instant};

use guidon_engine::model::Flag;
use guidon_store::{AsOf, Store};
use serde_json::json;
use sqlx::AnyPool;

fn flag(key: &str, i: u64) -> Flag {
    serde_json::from_value(json!({"key": key, "enabled": true,
        "rules": [{"name": "staff", "conditions": [
            {"attribute": "email", "operator": "ends_with", "values": ["@acme.com"]}],
            "serve": {"enabled": true}}],
        "rollout": {"percentage": i % 100}}))
    .expect("flag")
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

async fn raw(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.expect("raw pool")
}

async fn bench(name: &str, url: &str) {
    let store = Store::open(url).await.expect("open");

    // Single writer, durable commits, a small environment.
    for i in 0..10 {
        store
            .upsert_flag("development", &flag(&format!("warm{i}"), i), None, "bench")
            .await
            .expect("warm");
    }
    let n = 1000u64;
    let start = Instant::now();
    for i in 0..n {
        store
            .upsert_flag(
                "development",
                &flag(&format!("f{}", i % 10), i),
                None,
                "bench",
            )
            .await
            .expect("upsert");
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();

    // changes_since over the last 100 changes.
    let rev = store.revision("development").await.expect("rev");
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let c = store
            .changes_since("development", rev - 100)
            .await
            .expect("changes");
        times.push(t.elapsed());
        assert_eq!(c.changes.len(), 100);
    }
    let changes_100 = median(times);

    // Time travel: the environment 500 revisions back (500 changes undone)
    // and at the current revision (none), then compiled.
    let mut back_500 = Vec::new();
    let mut at_head = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let past = store
            .document_at("development", AsOf::Revision(rev - 500))
            .await
            .expect("past");
        past.document.compile().expect("valid");
        back_500.push(t.elapsed());
        let t = Instant::now();
        let head = store
            .document_at("development", AsOf::Revision(rev))
            .await
            .expect("head");
        head.document.compile().expect("valid");
        at_head.push(t.elapsed());
    }
    let (back_500, at_head) = (median(back_500), median(at_head));

    // A 10,000-flag environment, written straight into the tables (through
    // the API each write validates the whole environment: see below).
    store.create_env("big").await.expect("env");
    let pool = raw(url).await;
    let mut tx = pool.begin().await.expect("tx");
    for i in 0..10_000u64 {
        let key = format!("flag_{i:05}");
        sqlx::query("INSERT INTO definitions (env, kind, key, version, revision, definition) VALUES ('big', 'flag', $1, 1, 1, $2)")
            .bind(&key)
            .bind(serde_json::to_string(&flag(&key, i)).expect("json"))
            .execute(&mut *tx)
            .await
            .expect("insert");
    }
    sqlx::query("UPDATE environments SET revision = 1 WHERE name = 'big'")
        .execute(&mut *tx)
        .await
        .expect("rev");
    tx.commit().await.expect("commit");
    pool.close().await;
    let mut load = Vec::new();
    let mut compile = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let snap = store.snapshot("big").await.expect("snapshot");
        load.push(t.elapsed());
        let t = Instant::now();
        let compiled = snap.compile().expect("valid");
        compile.push(t.elapsed());
        assert_eq!(compiled.len(), 10_000);
    }
    let mut big_upserts = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        store
            .upsert_flag("big", &flag("flag_00001", i), None, "bench")
            .await
            .expect("upsert");
        big_upserts.push(t.elapsed());
    }
    println!(
        "{name:8} upserts/s (1 writer, 10-flag env): {per_sec:7.0} | changes_since(100): {:>8.2?} | \
         time travel 500 back: {:>8.2?}, at head: {:>8.2?} | \
         snapshot 10k load: {:>8.2?} + compile: {:>8.2?} | upsert into 10k env: {:>8.2?}",
        changes_100,
        back_500,
        at_head,
        median(load),
        median(compile),
        median(big_upserts)
    );
    store.close().await;
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("guidon-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    bench(
        "sqlite",
        &format!("sqlite://{}", dir.join("bench.db").display()),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    match std::env::var("GUIDON_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("guidon_bench_{}", std::process::id());
            let admin = raw(&base).await;
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .expect("schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            bench(
                "postgres",
                &format!("{base}{sep}options=-c%20search_path%3D{schema}"),
            )
            .await;
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .expect("drop");
        }
        _ => println!("postgres: skipped, GUIDON_TEST_DATABASE_URL is not set"),
    }
}
