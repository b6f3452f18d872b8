//! A real outage: the PostgreSQL server itself stops under running stores
//! and starts again later. While it is down, reads and writes fail with a
//! clear error in bounded time and nothing panics; once it is back, the
//! stores recover without being reopened: writes succeed again, the revision
//! continues without a gap, a snapshot holds every acknowledged write and a
//! watching instance hears of the new revisions.
//!
//! The test runs its own private server (`guidon_testkit::PrivatePostgres`:
//! initdb and pg_ctl of the installed PostgreSQL, a temporary data
//! directory, a free port) so that it can stop it; a shared server is never
//! touched. Without the PostgreSQL binaries it
//! prints why it is skipped and passes.

use std::time::{Duration, Instant};

use guidon_engine::model::Flag;
use guidon_protocol::Kind;
use guidon_store::{Revised, Store, StoreError, StoreOptions};
use guidon_testkit::PrivatePostgres;
use serde_json::json;
use sqlx::Connection;
use tokio::sync::broadcast;

/// How long one call may take to fail while the server is down: the pool's
/// acquire timeout (10 s) and some slack.
const FAIL_WITHIN: Duration = Duration::from_secs(15);
/// How long after the restart the stores may take to work again.
const RECOVER_WITHIN: Duration = Duration::from_secs(20);
/// The watching instance's application name, to find its LISTEN session.
const WATCHER_APP: &str = "guidon_outage_watcher";

fn simple(key: &str, enabled: bool) -> Flag {
    serde_json::from_value(json!({"key": key, "enabled": enabled})).expect("test flag")
}

/// Waits until `rx` announces `env` at `revision` or later; how long it took.
async fn hear(
    rx: &mut broadcast::Receiver<Revised>,
    env: &str,
    revision: u64,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(r)) if r.env == env && r.revision >= revision => return Some(start.elapsed()),
            Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// Waits until the watching instance has a session listening for
/// notifications; how long it took.
async fn listener_session(url: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
            let n: Option<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND query LIKE 'LISTEN %'",
            )
            .bind(WATCHER_APP)
            .fetch_one(&mut conn)
            .await
            .ok();
            let _ = conn.close().await;
            if n.unwrap_or(0) >= 1 {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A store call made while the server is down: it must fail, with a clear
/// database error, in bounded time, without panicking.
async fn fails_while_down<T: std::fmt::Debug + Send + 'static>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Duration {
    let start = Instant::now();
    let result = tokio::spawn(tokio::time::timeout(FAIL_WITHIN, call))
        .await
        .unwrap_or_else(|e| panic!("{what} during the outage panicked: {e}"));
    let elapsed = start.elapsed();
    let result = result.unwrap_or_else(|_| {
        panic!("{what} during the outage neither failed nor succeeded within {FAIL_WITHIN:?}")
    });
    let err = result.expect_err(what);
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::Database(_)),
        "{what}: not a database error: {err:?}"
    );
    assert!(
        message.starts_with("database error: ") && message.len() > "database error: ".len() + 10,
        "{what}: unclear error {message:?}"
    );
    eprintln!("  {what}: failed after {elapsed:.2?}: {message}");
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_survives_a_postgres_server_stopping_and_starting_again() {
    let test_start = Instant::now();
    let pg = match tokio::task::block_in_place(PrivatePostgres::start) {
        Ok(pg) => pg,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    eprintln!(
        "private PostgreSQL on port {} in {} (started in {:.2?})",
        pg.port,
        pg.dir.display(),
        test_start.elapsed()
    );
    let options = StoreOptions {
        poll_interval: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&pg.url("guidon_outage_writer"), options.clone())
        .await
        .expect("open the writing store");
    // Another instance, as another process would be: it learns of the
    // writer's commits only through the database (LISTEN or polling).
    let watcher = Store::open_with(&pg.url(WATCHER_APP), options)
        .await
        .expect("open the watching store");
    let mut heard = watcher.subscribe();

    // Before: three acknowledged writes, revisions 1 to 3.
    let mut acked = Vec::new();
    for (key, enabled) in [("a", true), ("b", true), ("a", false)] {
        let c = store
            .upsert_flag("production", &simple(key, enabled), None, "cli")
            .await
            .expect("write before the outage");
        acked.push(c.revision);
    }
    assert_eq!(acked, [1, 2, 3]);
    assert!(
        hear(&mut heard, "production", 3, Duration::from_secs(5))
            .await
            .is_some(),
        "the watcher hears revision 3 before the outage"
    );
    let admin = pg.url("guidon_outage_admin");
    assert!(
        listener_session(&admin, Duration::from_secs(5))
            .await
            .is_some(),
        "the watcher listens for notifications before the outage"
    );

    // The outage.
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| pg.pg_ctl_stop()).expect("stop the private server");
    eprintln!(
        "server stopped (pg_ctl -m immediate, {:.2?}); calls during the outage:",
        stopped_at.elapsed()
    );
    let (write, snapshot, revision, get, changes) = tokio::join!(
        fails_while_down("upsert_flag", {
            let store = store.clone();
            async move {
                store
                    .upsert_flag("production", &simple("c", true), None, "cli")
                    .await
            }
        }),
        fails_while_down("snapshot", {
            let store = store.clone();
            async move { store.snapshot("production").await.map(|s| s.revision) }
        }),
        fails_while_down("revision", {
            let store = store.clone();
            async move { store.revision("production").await }
        }),
        fails_while_down("get", {
            let store = store.clone();
            async move { store.get("production", Kind::Flag, "a").await }
        }),
        fails_while_down("changes_since", {
            let store = store.clone();
            async move {
                store
                    .changes_since("production", 0)
                    .await
                    .map(|c| c.revision)
            }
        }),
    );
    let slowest = [write, snapshot, revision, get, changes]
        .into_iter()
        .max()
        .unwrap_or_default();
    eprintln!(
        "every call failed within {slowest:.2?}; server down for {:.2?}",
        stopped_at.elapsed()
    );

    // A write still waiting for a connection when the server comes back
    // gets one and succeeds.
    let in_flight = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .upsert_flag("production", &simple("d", true), None, "cli")
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The server is back.
    let restart = Instant::now();
    tokio::task::block_in_place(|| pg.pg_ctl_start());
    let started_in = restart.elapsed();
    let waited = tokio::time::timeout(FAIL_WITHIN, in_flight)
        .await
        .expect("the waiting write ends")
        .expect("the waiting write did not panic")
        .expect("the write waiting for a connection succeeds once the server is back");
    eprintln!(
        "server restarted in {started_in:.2?}; the write waiting since the outage succeeded \
         {:.2?} after the restart",
        restart.elapsed()
    );
    assert_eq!(
        waited.revision, 4,
        "the revision continues after 3 without a gap: failed writes took none"
    );
    let mut errors = Vec::new();
    let recovered = loop {
        match store
            .upsert_flag("production", &simple("c", true), None, "cli")
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    matches!(e, StoreError::Database(_)),
                    "while recovering: {e:?}"
                );
                errors.push(e.to_string());
                assert!(
                    restart.elapsed() < RECOVER_WITHIN,
                    "no write succeeded within {RECOVER_WITHIN:?} of the restart: {errors:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let write_recovered_in = restart.elapsed();
    eprintln!(
        "the next write succeeded {write_recovered_in:.2?} after the restart, after {} failed \
         attempts {errors:?}",
        errors.len()
    );
    assert_eq!(recovered.revision, 5);
    assert!(recovered.created, "c did not exist before");
    let last = store
        .upsert_flag("production", &simple("b", false), None, "cli")
        .await
        .expect("a second write after the restart");
    assert_eq!(last.revision, 6);
    assert_eq!(last.version, 2, "b's second version");

    // Every acknowledged write is there, once, in order.
    let snapshot = store.snapshot("production").await.expect("snapshot");
    assert_eq!(snapshot.revision, Some(6));
    let mut flags: Vec<(String, bool, u64)> = snapshot
        .file
        .flags
        .iter()
        .map(|f| {
            let value = serde_json::to_value(f).expect("flag as json");
            (
                f.key.clone(),
                value["enabled"].as_bool().expect("enabled"),
                snapshot.versions[&f.key],
            )
        })
        .collect();
    flags.sort();
    assert_eq!(
        flags,
        [
            ("a".to_owned(), false, 2),
            ("b".to_owned(), false, 2),
            ("c".to_owned(), true, 1),
            ("d".to_owned(), true, 1)
        ]
    );
    let log = store.changes_since("production", 0).await.expect("log");
    let revisions: Vec<u64> = log.changes.iter().map(|c| c.revision()).collect();
    assert_eq!(
        revisions,
        [1, 2, 3, 4, 5, 6],
        "one change per revision, no gap"
    );
    assert_eq!(
        watcher.revision("production").await.expect("watcher reads"),
        6,
        "the watching instance reads again too"
    );

    // The watching instance hears of the new revisions, and listens again.
    // Reconnecting the listener (sqlx retries with backoff of up to 6 s) is
    // bounded by the watcher, which polls meanwhile; before that bound it
    // was heard about 5 s after the restart in one run of four.
    let heard_in = hear(&mut heard, "production", 6, RECOVER_WITHIN)
        .await
        .unwrap_or_else(|| {
            panic!("the watcher did not announce revision 6 within {RECOVER_WITHIN:?}")
        });
    let heard_after_restart = restart.elapsed();
    let listening = listener_session(&admin, RECOVER_WITHIN).await;
    let listening_after_restart = restart.elapsed();
    eprintln!(
        "the watcher announced revision 6 {heard_in:.2?} after it was read back \
         ({heard_after_restart:.2?} after the restart); its LISTEN session was seen again \
         {listening_after_restart:.2?} after the restart"
    );
    assert!(
        listening.is_some(),
        "the watcher's LISTEN session is not back within {RECOVER_WITHIN:?} of the restart"
    );

    store.close().await;
    watcher.close().await;
    drop(pg);
    eprintln!("whole test: {:.2?}", test_start.elapsed());
}
