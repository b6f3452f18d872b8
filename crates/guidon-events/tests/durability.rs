//! Every acknowledged event survives a SIGKILL, and no event is counted
//! twice: the log a batch is acknowledged in, and the fold that applies it
//! to the per-unit tables and deletes it from the log in one transaction.
//!
//! The test runs this test binary again as a child process (the ignored
//! `ingest_child` test) that sends batches in a loop, each of 250 new
//! units' exposures and one conversion (value 1) per unit, and prints each
//! acknowledged batch; the writer folds between batches, so the kill lands
//! in an append, a fold or between them. The test kills the child at a
//! random moment, reopens the store and checks, per round (one flag per
//! round): the units are the acknowledged batches' (or one more, the batch
//! in flight), each with its one conversion; re-sent acknowledged batches
//! are all duplicates. Twelve rounds per backend.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guidon_events::{Conversion, Event, EventStore, Exposure, MetricQuery, UnitKey};

const CHILD_URL: &str = "GUIDON_EVENTS_DURABILITY_URL";
const CHILD_ROUND: &str = "GUIDON_EVENTS_DURABILITY_ROUND";
const ROUNDS: usize = 12;
const UNITS: usize = 250;
const T0: i64 = 1_795_478_400_000;

/// Batch `b` of round `r`: `UNITS` exposures and a conversion per unit.
fn batch(round: usize, b: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(2 * UNITS);
    for k in 0..UNITS {
        let unit = format!("r{round}-b{b}-u{k}");
        let at = T0 + i64::try_from(b * UNITS + k).expect("time");
        out.push(Event::Exposure(Exposure {
            event_id: format!("{unit}-x"),
            flag: format!("flag_{round}"),
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
            value: Some(1.0),
            at_ms: at + 1,
        }));
    }
    out
}

#[tokio::test]
#[ignore = "the child process of acknowledged_events_survive_sigkill"]
async fn ingest_child() {
    let (Ok(url), Ok(round)) = (std::env::var(CHILD_URL), std::env::var(CHILD_ROUND)) else {
        return;
    };
    let round: usize = round.parse().expect("round");
    let store = EventStore::open(&url).await.expect("child opens the store");
    println!("ready");
    for b in 0.. {
        let done = store
            .ingest_events("production", batch(round, b))
            .await
            .expect("ingest");
        assert_eq!(done.accepted as usize, 2 * UNITS);
        // Only what is printed counts as acknowledged.
        println!("ack {b}");
    }
}

/// A pseudo-random delay in [lo, hi) ms, from the clock's nanoseconds.
fn random_ms(lo: u64, hi: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    lo + u64::from(nanos) % (hi - lo)
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill() {
    let exe = std::env::current_exe().expect("test binary");
    for db in guidon_testkit::databases("events_durability").await {
        let n = db.name;
        let url = guidon_events::events_url(&db.url);
        EventStore::open(&url).await.expect("create").close().await;
        let mut acked_total = 0;
        let mut unfolded_at_restart = 0;
        for round in 0..ROUNDS {
            let mut child = Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "ingest_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_URL, &url)
                .env(CHILD_ROUND, round.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child");
            let stdout = child.stdout.take().expect("stdout");
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            // Wait until it has a batch acknowledged, then kill it
            // somewhere in the next stretch.
            let started = Instant::now();
            let mut lines = Vec::new();
            while !lines.iter().any(|l: &String| l.starts_with("ack ")) {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(line) => lines.push(line),
                    Err(_) => panic!(
                        "{n} round {round}: the child never ingested ({:?})",
                        started.elapsed()
                    ),
                }
            }
            std::thread::sleep(Duration::from_millis(random_ms(5, 400)));
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            reader.join().expect("reader");
            lines.extend(rx.try_iter());
            let acked = lines.iter().filter(|l| l.starts_with("ack ")).count();
            acked_total += acked;

            // What the crash left unfolded (the fold after restart is the
            // one results trigger).
            let raw = guidon_testkit::raw_pool(&url).await.expect("raw pool");
            let logged: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM ev_log")
                .fetch_one(&raw)
                .await
                .expect("log rows");
            raw.close().await;
            if logged > 0 {
                unfolded_at_restart += 1;
            }

            let store = EventStore::open(&url).await.expect("reopen after SIGKILL");
            let flag = format!("flag_{round}");
            let totals = store
                .experiment_totals(
                    "production",
                    &MetricQuery::new(&flag, &["control", "treatment"], "purchase", "user_id"),
                )
                .await
                .expect("totals");
            let units = totals.exposed_units() as usize;
            assert!(
                units == acked * UNITS || units == (acked + 1) * UNITS,
                "{n} round {round}: {units} units for {acked} acknowledged batches of {UNITS}"
            );
            let converted: u64 = totals.variants.iter().map(|v| v.converted).sum();
            let sum: f64 = totals.variants.iter().map(|v| v.sum).sum();
            assert_eq!(
                converted as usize, units,
                "{n} round {round}: one conversion each"
            );
            assert_eq!(sum, units as f64, "{n} round {round}: none counted twice");
            // Every acknowledged batch's ids are kept: sent again, all
            // duplicates, nothing changes.
            for b in 0..acked {
                let again = store
                    .ingest_events("production", batch(round, b))
                    .await
                    .expect("resend");
                assert_eq!(again.accepted, 0, "{n} round {round} batch {b}");
            }
            store.close().await;
        }
        assert!(
            acked_total >= ROUNDS,
            "{n}: only {acked_total} batches acknowledged in {ROUNDS} rounds"
        );
        eprintln!(
            "{n}: {acked_total} acknowledged batches ({} events) checked over {ROUNDS} SIGKILLs; \
             {unfolded_at_restart} restarts found acknowledged events still unfolded",
            acked_total * 2 * UNITS
        );
    }
}
