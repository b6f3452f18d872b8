//! Flag files: text → `FlagFile` (JSON or YAML, by the first byte) →
//! `Snapshot::compile` → every flag evaluated and explained. No input may
//! panic; a file that compiles must survive a JSON round trip unchanged and
//! still compile, and explaining a flag must give the evaluation's result.
#![no_main]

use guidon_engine::{Context, FlagFile, Format, Snapshot, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Json
    } else {
        Format::Yaml
    };
    let Ok(file) = FlagFile::parse(text, format) else {
        return;
    };
    let Ok(snapshot) = Snapshot::compile(&file) else {
        return;
    };
    let json = serde_json::to_string(&file).expect("a parsed flag file serializes");
    let again = FlagFile::from_json_str(&json).expect("a serialized flag file parses");
    assert_eq!(again, file, "JSON round trip changed the file");
    Snapshot::compile(&again).expect("the round-tripped file compiles");

    let context = Context::new().with("user_id", "u1").with("country", "US");
    let now = Timestamp::from_second(1_795_000_000).expect("a valid time");
    for flag in &file.flags {
        let evaluation = snapshot.evaluate(&flag.key, &context, now);
        let (explained, _) = snapshot.explain(&flag.key, &context, now);
        assert_eq!(evaluation, explained, "explain disagrees with evaluate");
    }
    let _ = snapshot.evaluate_all(&context, now);
});
