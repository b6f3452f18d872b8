//! The committed fuzz corpora of `fuzz/` (README's "Fuzzing") replayed
//! through the server's fuzzing entry points, with the targets' checks: a
//! body is accepted or refused with a 4xx, and every event of a batch is
//! accepted or rejected once, by its index. So CI runs what the fuzzer
//! found without building libFuzzer, and the entry points stay working.

use std::path::PathBuf;

use guidon_engine::{FlagFile, Snapshot, Timestamp};
use guidon_server::fuzzing::{event_batch, request_input};

/// Every input of `fuzz/corpus/TARGET`.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

#[test]
fn request_body_corpus_is_accepted_or_refused_with_a_4xx() {
    let mut accepted = 0;
    for (path, input) in corpus("request_body") {
        match request_input(&input) {
            None => {}
            Some(Ok(())) => accepted += 1,
            Some(Err((status, message))) => assert!(
                (400..500).contains(&status),
                "{}: {status} {message}",
                path.display()
            ),
        }
    }
    assert!(accepted > 0, "no input of the corpus is a valid body");
}

#[test]
fn event_corpus_accounts_for_every_event() {
    let file = FlagFile::from_json_str(include_str!("../../../examples/flags.json"))
        .expect("the example flag file");
    let snapshot = Snapshot::compile(&file).expect("it compiles");
    let now = Timestamp::from_second(1_795_600_000).expect("a valid time");
    let mut accepted_events = 0;
    for (path, input) in corpus("events") {
        match event_batch(&file, &snapshot, &input, now) {
            Ok((accepted, rejected)) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&input).expect("an accepted batch is JSON");
                let count = value["events"].as_array().map_or(0, Vec::len);
                assert_eq!(accepted + rejected.len(), count, "{}", path.display());
                let indexes: Vec<u64> = rejected
                    .iter()
                    .map(|r| r["index"].as_u64().expect("an index"))
                    .collect();
                assert!(
                    indexes.windows(2).all(|w| w[0] < w[1]),
                    "{}",
                    path.display()
                );
                accepted_events += accepted;
            }
            Err((status, message)) => assert!(
                (400..500).contains(&status),
                "{}: {status} {message}",
                path.display()
            ),
        }
    }
    assert!(accepted_events > 0, "no event of the corpus is valid");
}
