//! Experiment figures for BENCHMARKS.md, on SQLite and (when
//! `GUIDON_TEST_DATABASE_URL` is set) PostgreSQL: events/s ingested in
//! batches of 10,000 (the API's batch limit) by concurrent senders (the
//! store commits the batches waiting together, durably); then the time to
//! read one metric's results over 1,000,000 exposed units and 1,000,000
//! conversions. Acknowledged is durable (the log); the time to fold what
//! is still logged at the end is printed apart, and the rate of both.
//!
//! `GUIDON_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p guidon-events --bench experiments`
//! (`GUIDON_BENCH_UNITS=N` changes the number of units, conversions =
//! units; `GUIDON_BENCH_SENDERS=N` the number of concurrent senders, 16.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guidon_events::{Conversion, Event, EventStore, Exposure, MetricQuery, UnitKey};
use sqlx::AnyPool;

const BATCH: usize = 10_000;
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_795_478_400_000;

/// splitmix64: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random UUID-shaped id, as SDKs send (v4: no order to exploit).
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xffff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// `units` users arriving over two weeks, each exposed once (50/50) when
/// they arrive; 40% of them convert 2 or 3 times (value 1–200) between an
/// hour before and 72 hours after their exposure, until there are `units`
/// conversions. Events are sent in time order, as SDKs flush them, except
/// that 2% arrive late (up to about a day's worth of events later) — so
/// some conversions arrive before their exposure. Unit ids are random
/// strings, as user ids usually are.
fn events(units: usize) -> Vec<Event> {
    let mut rng = Rng(42);
    let span = 14 * 24 * HOUR;
    let mut out = Vec::with_capacity(2 * units);
    let mut conversions = 0;
    for _ in 0..units {
        let at = T0 + rng.below(span as u64) as i64;
        let unit = format!("user_{:016x}", rng.next());
        out.push(Event::Exposure(Exposure {
            event_id: rng.uuid(),
            flag: "checkout".into(),
            variant: if rng.below(2) == 0 {
                "control"
            } else {
                "treatment"
            }
            .into(),
            unit: unit.clone(),
            at_ms: at,
        }));
        if rng.below(10) < 4 {
            for _ in 0..(2 + rng.below(2)).min((units - conversions) as u64) {
                let offset = rng.below(73 * HOUR as u64) as i64 - HOUR;
                out.push(Event::Conversion(Conversion {
                    event_id: rng.uuid(),
                    metric: "purchase".into(),
                    units: vec![UnitKey {
                        attribute: "user_id".into(),
                        unit: unit.clone(),
                    }],
                    value: Some(1.0 + rng.below(20_000) as f64 / 100.0),
                    at_ms: at + offset,
                }));
                conversions += 1;
            }
        }
    }
    out.sort_by_key(Event::at_ms);
    // 2% late.
    let n = out.len();
    for k in 0..n {
        if rng.below(50) == 0 {
            let to = (k + rng.below(n as u64 / 14) as usize).min(n - 1);
            out.swap(k, to);
        }
    }
    out
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

async fn raw(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.expect("raw pool")
}

/// One flag write's latency on the flag store.
async fn flag_write(flags: &guidon_store::Store, i: usize) -> Duration {
    let flag: guidon_engine::model::Flag = serde_json::from_value(serde_json::json!({
        "key": format!("k{}", i % 5), "enabled": i.is_multiple_of(2), "description": format!("write {i}")
    }))
    .expect("flag");
    let t = Instant::now();
    flags
        .upsert_flag("production", &flag, None, "bench")
        .await
        .expect("flag write");
    t.elapsed()
}

fn latencies(mut xs: Vec<Duration>) -> String {
    xs.sort_unstable();
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} writes: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        xs.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

async fn bench(name: &str, url: &str, events: &[Event], senders: usize) {
    // The flag store at `url`, the events next to it (their own file on
    // SQLite), as `guidon serve` opens them.
    let flags = guidon_store::Store::open(url).await.expect("open flags");
    let store = EventStore::open(&guidon_events::events_url(url))
        .await
        .expect("open");
    // Flag writes alone, then one every 20 ms during the ingestion.
    let mut alone = Vec::new();
    for i in 0..100 {
        alone.push(flag_write(&flags, i).await);
    }
    let ingesting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (flags, ingesting) = (flags.clone(), ingesting.clone());
        tokio::spawn(async move {
            let mut during = Vec::new();
            let mut i = 100;
            while ingesting.load(Ordering::SeqCst) {
                during.push(flag_write(&flags, i).await);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            during
        })
    };
    let batches: Vec<Vec<Event>> = events.chunks(BATCH).map(<[Event]>::to_vec).collect();
    let total = batches.len();
    let queue = Arc::new(Mutex::new(batches.into_iter().enumerate()));
    // Events/s over each quarter of the run: does the rate hold as the
    // tables grow?
    let marks = Arc::new(Mutex::new(Vec::new()));
    let completed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (store, queue, marks, completed) = (
            store.clone(),
            queue.clone(),
            marks.clone(),
            completed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").next();
                let Some((_, batch)) = next else { break };
                let n = batch.len();
                let done = store
                    .ingest_events("production", batch)
                    .await
                    .expect("ingest");
                assert_eq!(done.accepted as usize, n);
                let b = completed.fetch_add(1, Ordering::SeqCst) + 1;
                if b % (total / 4).max(1) == 0 {
                    marks.lock().expect("marks").push((b, start.elapsed()));
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let elapsed = start.elapsed();
    ingesting.store(false, Ordering::SeqCst);
    let during = writer.await.expect("flag writer");
    let per_sec = events.len() as f64 / elapsed.as_secs_f64();
    let mut marks = marks.lock().expect("marks").clone();
    marks.sort();
    let mut quarter_rates = Vec::new();
    let mut last = (0, Duration::ZERO);
    for (b, at) in marks {
        let sent = (b * BATCH).min(events.len());
        let took = (at - last.1).as_secs_f64();
        // Batches committed together finish together: no rate between them.
        quarter_rates.push(if took < 0.05 {
            "-".to_owned()
        } else {
            format!("{:.0}", (sent - last.0 * BATCH) as f64 / took)
        });
        last = (b, at);
    }

    // What was acknowledged and not yet folded, folded: results read it
    // first. Ingestion and fold together give the sustained rate.
    let t = Instant::now();
    store.settle().await.expect("settle");
    let settle = t.elapsed();
    let sustained = events.len() as f64 / (elapsed + settle).as_secs_f64();

    // A retried batch: every event a duplicate.
    let t = Instant::now();
    let again = store
        .ingest_events("production", events[..BATCH.min(events.len())].to_vec())
        .await
        .expect("retry");
    let retry = t.elapsed();
    assert_eq!(again.accepted, 0);

    if store.backend() == guidon_events::Backend::Postgres {
        // The statistics autovacuum gathers within a minute of a load.
        let pool = raw(url).await;
        for table in ["ev_exposures", "ev_unit_metrics", "ev_conversions"] {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(&pool)
                .await
                .expect("analyze");
        }
        pool.close().await;
    }
    let mut plain = Vec::new();
    let mut windowed = Vec::new();
    let mut units = 0;
    let mut converted = 0;
    for _ in 0..5 {
        for (window_ms, times) in [(None, &mut plain), (Some(24 * HOUR), &mut windowed)] {
            let t = Instant::now();
            let totals = store
                .experiment_totals(
                    "production",
                    &MetricQuery {
                        flag: "checkout",
                        variants: &["control", "treatment"],
                        metric: "purchase",
                        unit_attribute: "user_id",
                        window_ms,
                        from_ms: None,
                        until_ms: None,
                        cap: None,
                        pre_window_ms: None,
                    },
                )
                .await
                .expect("totals");
            times.push(t.elapsed());
            units = totals.exposed_units();
            if window_ms.is_none() {
                converted = totals.variants.iter().map(|v| v.converted).sum::<u64>();
            }
        }
    }
    println!(
        "{name:8} ingest, {senders} sender(s) of {BATCH}-event batches: {} events in {:.2?} = \
         {per_sec:.0} events/s acknowledged (by quarter: {}) | the rest folded in {settle:.2?}: \
         {sustained:.0} events/s ingested and folded | retried batch of {BATCH}: {retry:.2?} | \
         results over {units} units ({converted} converted): {:.2?}, with a 24 h window: {:.2?}\n\
         {name:8} flag writes alone: {} | during the ingestion: {}",
        events.len(),
        elapsed,
        quarter_rates.join(", "),
        median(plain),
        median(windowed),
        latencies(alone),
        latencies(during),
    );
    store.close().await;
    flags.close().await;
}

#[tokio::main]
async fn main() {
    let var = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let units = var("GUIDON_BENCH_UNITS", 1_000_000);
    let senders = var("GUIDON_BENCH_SENDERS", 16);
    let t = Instant::now();
    let events = events(units);
    println!(
        "generated {} events ({units} exposures, {units} conversions) in {:.2?}",
        events.len(),
        t.elapsed()
    );
    // How busy the machine is (other builds share it): the load average.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the start: {}", load().trim());
    let dir = std::env::temp_dir().join(format!("guidon-exp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    bench(
        "sqlite",
        &format!("sqlite://{}", dir.join("bench.db").display()),
        &events,
        senders,
    )
    .await;
    if std::env::var_os("GUIDON_BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match std::env::var("GUIDON_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("guidon_exp_bench_{}", std::process::id());
            let admin = raw(&base).await;
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .expect("schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            bench(
                "postgres",
                &format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                &events,
                senders,
            )
            .await;
            if std::env::var_os("GUIDON_BENCH_KEEP").is_some() {
                println!("kept schema {schema}");
            } else {
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&admin)
                    .await
                    .expect("drop");
            }
        }
        _ => println!("postgres: skipped, GUIDON_TEST_DATABASE_URL is not set"),
    }
    println!("load average at the end: {}", load().trim());
}
