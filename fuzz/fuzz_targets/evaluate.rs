//! The evaluator: each flag set of `testdata/spec/` compiled once, then
//! every flag evaluated against a context read from the input (JSON) at a
//! time taken from the input. No input may panic; evaluation must be
//! deterministic (twice, the same result), `explain` must give the same
//! result as `evaluate`, and `evaluate_all` the same as each flag alone.
#![no_main]

use std::sync::LazyLock;

use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use libfuzzer_sys::fuzz_target;

macro_rules! specs {
    ($($name:literal),* $(,)?) => {
        [$(include_str!(concat!("../../testdata/spec/", $name, ".json"))),*]
    };
}

const SPECS: [&str; 22] = specs!(
    "bucketing_value",
    "evaluation_order",
    "off_variant",
    "operators_cidr",
    "operators_equality",
    "operators_exists",
    "operators_numbers",
    "operators_semver",
    "operators_strings",
    "operators_time",
    "override_and_disabled",
    "prerequisites",
    "rollout",
    "rollout_boundary",
    "rules",
    "segments",
    "serve_percentage",
    "special_time_attributes",
    "targets",
    "unknown_flag",
    "variants",
    "weights_tolerance",
);

static SNAPSHOTS: LazyLock<Vec<(FlagFile, Snapshot)>> = LazyLock::new(|| {
    SPECS
        .iter()
        .map(|text| {
            let spec: serde_json::Value = serde_json::from_str(text).expect("a spec file");
            let file = FlagFile::from_json_value(spec["flags"].clone()).expect("its flags");
            let snapshot = Snapshot::compile(&file).expect("its flags compile");
            (file, snapshot)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    // [spec index][8 bytes: seconds since the epoch][context JSON]
    if data.len() < 9 {
        return;
    }
    let (file, snapshot) = &SNAPSHOTS[usize::from(data[0]) % SNAPSHOTS.len()];
    let seconds = i64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let Ok(now) = Timestamp::from_second(seconds.rem_euclid(253_402_300_799)) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&data[9..]) else {
        return;
    };
    let Ok(context) = Context::from_json_str(text) else {
        return;
    };
    let all = snapshot.evaluate_all(&context, now);
    for flag in &file.flags {
        let first = snapshot.evaluate(&flag.key, &context, now);
        let second = snapshot.evaluate(&flag.key, &context, now);
        assert_eq!(first, second, "evaluation is not deterministic");
        let (explained, _) = snapshot.explain(&flag.key, &context, now);
        assert_eq!(first, explained, "explain disagrees with evaluate");
        if let Some(from_all) = all.iter().find(|e| e.flag == flag.key) {
            assert_eq!(&first, from_all, "evaluate_all disagrees with evaluate");
        }
        let _ = snapshot.bucketing_value(&flag.key, &context);
    }
    let _ = snapshot.evaluate("no_such_flag", &context, now);
});
