//! The hashing of flag-format.md §6 against values computed independently by
//! `testdata/hashing/vectors.py` (Python's hashlib): the exact 1,000-user
//! split of the seed's `new_checkout_experiment`, unit by unit.

use std::path::Path;

use guidon_engine::{Context, FlagFile, Snapshot, Timestamp, rollout_bucket, variant_selection};
use serde_json::{Value, json};

#[test]
fn new_checkout_experiment_matches_python() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/hashing/new_checkout_experiment.json");
    let text = std::fs::read_to_string(&path).expect("run testdata/hashing/vectors.py");
    let doc: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let flag = doc["flag"].as_str().expect("flag");
    let salt = doc["salt"].as_str().expect("salt");
    let file = FlagFile::from_json_value(json!({"flags": [{
        "key": flag, "enabled": true, "variants": doc["variants"].clone()
    }]}))
    .expect("flag parses");
    let snapshot = Snapshot::compile(&file).expect("flag is valid");
    let now = Timestamp::UNIX_EPOCH;

    let units = doc["units"].as_array().expect("units");
    assert_eq!(units.len(), 1000);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for u in units {
        let unit = u["unit"].as_str().expect("unit");
        assert_eq!(
            rollout_bucket(flag, unit, salt),
            u["bucket"].as_f64().expect("bucket"),
            "{unit}"
        );
        assert_eq!(
            variant_selection(flag, unit),
            u["selection"].as_f64().expect("selection"),
            "{unit}"
        );
        let result = snapshot.evaluate(flag, &Context::new().with("user_id", unit), now);
        assert_eq!(result.variant, u["variant"].as_str(), "{unit}");
        *counts
            .entry(result.variant.unwrap_or("none").to_owned())
            .or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(doc["counts"].clone()).expect("counts");
    assert_eq!(counts, expected);
}
