//! Every acknowledged write survives a SIGKILL, and no write is half there.
//!
//! The test runs this test binary again as a child process (the ignored
//! `writer_child` test) that upserts in a loop and prints each acknowledged
//! revision; it kills the child at a random moment, reopens the store and
//! checks what the child was told is there and that the log, the counter and
//! the definitions agree. Twenty times per backend.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guidon_engine::model::Flag;
use guidon_protocol::Op;
use guidon_store::Store;
use serde_json::json;

const CHILD_URL: &str = "GUIDON_DURABILITY_CHILD_URL";
const ROUNDS: usize = 20;

#[tokio::test]
#[ignore = "the child process of acknowledged_writes_survive_sigkill"]
async fn writer_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let store = Store::open(&url).await.expect("child opens the store");
    println!("ready");
    for i in 0u64.. {
        let flag: Flag = serde_json::from_value(json!({
            "key": format!("k{}", i % 5), "enabled": i % 2 == 0,
            "description": format!("write {i}")
        }))
        .expect("flag");
        let c = store
            .upsert_flag("production", &flag, None, "child")
            .await
            .expect("upsert");
        // Only what is printed counts as acknowledged.
        println!("ack {} {} {}", c.revision, flag.key, c.version);
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
async fn acknowledged_writes_survive_sigkill() {
    let exe = std::env::current_exe().expect("test binary");
    for db in guidon_testkit::databases("durability").await {
        let n = db.name;
        Store::open(&db.url).await.expect("create").close().await;
        let mut acked: BTreeMap<u64, (String, u64)> = BTreeMap::new();
        for round in 0..ROUNDS {
            let mut child = Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "writer_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_URL, &db.url)
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
            // Wait until it writes, then kill it somewhere in the next stretch.
            let started = Instant::now();
            let mut lines = Vec::new();
            while !lines.iter().any(|l: &String| l.starts_with("ack ")) {
                match rx.recv_timeout(Duration::from_secs(20)) {
                    Ok(line) => lines.push(line),
                    Err(_) => panic!(
                        "{n} round {round}: the child never wrote ({:?})",
                        started.elapsed()
                    ),
                }
            }
            std::thread::sleep(Duration::from_millis(random_ms(5, 150)));
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            reader.join().expect("reader");
            lines.extend(rx.try_iter());
            for line in &lines {
                if let Some(rest) = line.strip_prefix("ack ") {
                    let parts: Vec<&str> = rest.split(' ').collect();
                    let revision: u64 = parts[0].parse().expect("revision");
                    acked.insert(
                        revision,
                        (parts[1].to_owned(), parts[2].parse().expect("version")),
                    );
                }
            }

            let store = Store::open(&db.url).await.expect("reopen after SIGKILL");
            let changes = store.changes_since("production", 0).await.expect("log");
            // The counter, the log and the definitions agree: no partial write.
            let revs: Vec<u64> = changes.changes.iter().map(|c| c.revision()).collect();
            assert_eq!(
                revs,
                (1..=changes.revision).collect::<Vec<_>>(),
                "{n} round {round}: gapless log"
            );
            for (revision, (key, version)) in &acked {
                let change = &changes.changes[usize::try_from(*revision - 1).expect("index")];
                assert_eq!(
                    (change.key(), change.version(), change.op()),
                    (key.as_str(), *version, Op::Upsert),
                    "{n} round {round}: acknowledged revision {revision} is there"
                );
            }
            let snap = store.snapshot("production").await.expect("snapshot");
            for flag in &snap.file.flags {
                let last = changes
                    .changes
                    .iter()
                    .rev()
                    .find(|c| c.key() == flag.key)
                    .expect("logged");
                assert_eq!(
                    snap.versions.get(&flag.key),
                    Some(&last.version()),
                    "{n}: definition is the last logged"
                );
                assert_eq!(
                    Some(serde_json::to_value(flag).expect("json")),
                    last.definition()
                        .map(|d| serde_json::to_value(d).expect("json")),
                    "{n}"
                );
            }
            store.close().await;
        }
        assert!(
            acked.len() >= ROUNDS,
            "{n}: only {} writes acknowledged in {ROUNDS} rounds",
            acked.len()
        );
        eprintln!(
            "{n}: {} acknowledged writes checked over {ROUNDS} SIGKILLs",
            acked.len()
        );
    }
}
