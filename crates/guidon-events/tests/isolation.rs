//! Flag writes while events are ingested at full speed: the event store has
//! its own connections (on SQLite its own file, so its group commits never
//! hold the lock flag writes wait on). Prints the flag-write latency alone
//! and under ingestion; asserts no time (performance is measured, see
//! BENCHMARKS.md), only that every write succeeded while events were
//! really being acknowledged.
//!
//! `cargo test --workspace --test isolation -- --nocapture` to see the
//! figures (`--release` for figures worth comparing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guidon_engine::model::Flag;
use guidon_events::{Conversion, Event, EventStore, Exposure, UnitKey};
use guidon_store::Store;
use serde_json::json;

const SENDERS: usize = 8;
const BATCH: usize = 2_000;
const WRITES: usize = 100;

/// Batch `b` of sender `s`: 1,000 new units, an exposure and a conversion
/// each.
fn batch(s: usize, b: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(BATCH);
    for k in 0..BATCH / 2 {
        let unit = format!("s{s}-b{b}-u{k}");
        let at = 1_795_478_400_000 + i64::try_from(b * BATCH + k).expect("time");
        out.push(Event::Exposure(Exposure {
            event_id: format!("{unit}-x"),
            flag: "checkout".into(),
            variant: if k % 2 == 0 { "control" } else { "treatment" }.into(),
            unit: unit.clone(),
            at_ms: at,
        }));
        out.push(Event::Conversion(Conversion {
            event_id: format!("{unit}-c"),
            metric: "purchase".into(),
            units: vec![UnitKey {
                attribute: "user_id".into(),
                unit,
            }],
            value: Some(2.5),
            at_ms: at + 1,
        }));
    }
    out
}

/// `WRITES` flag upserts one after another; their latencies, sorted.
async fn flag_writes(store: &Store, label: &str) -> Vec<Duration> {
    let mut times = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let flag: Flag = serde_json::from_value(json!({
            "key": format!("k{}", i % 5), "enabled": i % 2 == 0,
            "description": format!("{label} write {i}")
        }))
        .expect("flag");
        let t = Instant::now();
        store
            .upsert_flag("production", &flag, None, "isolation")
            .await
            .expect("a flag write succeeds");
        times.push(t.elapsed());
    }
    times.sort_unstable();
    times
}

fn summary(times: &[Duration]) -> String {
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flag_writes_while_events_are_ingested_at_full_speed() {
    for db in guidon_testkit::databases("isolation").await {
        let n = db.name;
        let store = Store::open(&db.url).await.expect("flag store");
        let events_url = guidon_events::events_url(&db.url);
        if n == "sqlite" {
            assert_ne!(events_url, db.url, "{n}: a file of its own");
        }
        let events = EventStore::open(&events_url).await.expect("event store");

        let alone = flag_writes(&store, "alone").await;

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            let (events, stop, acked) = (events.clone(), stop.clone(), acked.clone());
            senders.push(tokio::spawn(async move {
                let mut b = 0;
                while !stop.load(Ordering::SeqCst) {
                    let done = events
                        .ingest_events("production", batch(s, b))
                        .await
                        .expect("ingest");
                    acked.fetch_add(done.accepted, Ordering::SeqCst);
                    b += 1;
                }
            }));
        }
        // Ingestion running: wait for its first acknowledgements.
        while acked.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = acked.load(Ordering::SeqCst);
        let t = Instant::now();
        let during = flag_writes(&store, "during").await;
        let took = t.elapsed();
        let ingested = acked.load(Ordering::SeqCst) - before;
        stop.store(true, Ordering::SeqCst);
        for s in senders {
            s.await.expect("sender");
        }
        assert!(
            ingested > 0,
            "{n}: events were acknowledged while the flags were written"
        );
        println!(
            "{n}: {WRITES} flag writes alone: {}\n{n}: {WRITES} flag writes while {SENDERS} senders \
             ingest {BATCH}-event batches ({ingested} events acknowledged in {took:.2?} = {:.0} events/s): {}",
            summary(&alone),
            ingested as f64 / took.as_secs_f64(),
            summary(&during)
        );
        events.close().await;
        store.close().await;
    }
}
