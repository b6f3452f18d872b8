//! Event ingestion: a batch body checked as `POST /api/v1/events` checks
//! it, against the example flag file. No input may panic; every event is
//! either accepted or rejected once, by its index, and a rejected batch
//! is a 4xx.
#![no_main]

use std::sync::LazyLock;

use guidon_engine::{FlagFile, Snapshot, Timestamp};
use guidon_server::fuzzing::event_batch;
use libfuzzer_sys::fuzz_target;

static FLAGS: LazyLock<(FlagFile, Snapshot)> = LazyLock::new(|| {
    let file = FlagFile::from_json_str(include_str!("../../examples/flags.json"))
        .expect("the example flag file");
    let snapshot = Snapshot::compile(&file).expect("it compiles");
    (file, snapshot)
});

fuzz_target!(|data: &[u8]| {
    let (file, snapshot) = &*FLAGS;
    let now = Timestamp::from_second(1_795_600_000).expect("a valid time");
    match event_batch(file, snapshot, data, now) {
        Ok((accepted, rejected)) => {
            let count = serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .and_then(|v| v["events"].as_array().map(Vec::len));
            if let Some(count) = count {
                assert_eq!(accepted + rejected.len(), count, "an event was lost");
            }
            let mut last = None;
            for rejection in &rejected {
                let index = rejection["index"].as_u64().expect("an index");
                assert!(last < Some(index), "rejections out of order");
                assert!(rejection["error"].is_string() && rejection["message"].is_string());
                last = Some(index);
            }
        }
        Err((status, message)) => {
            assert!(
                (400..500).contains(&status),
                "a batch got {status}: {message}"
            );
        }
    }
});
