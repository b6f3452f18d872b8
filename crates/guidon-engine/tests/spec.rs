//! The language-neutral spec suite of `testdata/`: every case is data (a
//! flag file, a context, the expected result), run by one table-driven check.

use std::path::{Path, PathBuf};

use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
use serde_json::{Value, json};

const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";

fn testdata(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("readable test file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Compares one field, numbers in `metadata.bucket` to 1e-9.
fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9,
            _ => false,
        },
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => expected == actual,
    }
}

#[test]
fn evaluation_cases() {
    let mut failures = Vec::new();
    let mut count = 0;
    for path in testdata("spec") {
        let doc = load(&path);
        let file_name = name_of(&path);
        let file = FlagFile::from_json_value(doc["flags"].clone())
            .unwrap_or_else(|e| panic!("{file_name}: flags do not parse: {e}"));
        let snapshot = Snapshot::compile(&file)
            .unwrap_or_else(|e| panic!("{file_name}: flags do not validate: {e}"));
        let cases = doc["cases"].as_array().expect("cases array");
        for case in cases {
            count += 1;
            let name = format!("{file_name}: {}", case["name"].as_str().unwrap_or("?"));
            let flag = case["flag"].as_str().expect("case.flag");
            let ctx = Context::try_from(case["context"].clone()).expect("case.context object");
            let now: Timestamp = case["now"]
                .as_str()
                .unwrap_or(DEFAULT_NOW)
                .parse()
                .expect("case.now RFC 3339");
            let actual = snapshot.evaluate(flag, &ctx, now).to_json();
            let expect = &case["expect"];
            for field in ["enabled", "value", "reason"] {
                assert!(
                    expect.get(field).is_some(),
                    "{name}: expect.{field} is required"
                );
            }
            let defaults = json!({"variant": null, "error_code": null, "metadata": {}});
            for field in [
                "enabled",
                "variant",
                "value",
                "reason",
                "error_code",
                "metadata",
            ] {
                let want = expect.get(field).unwrap_or(&defaults[field]);
                if !same(want, &actual[field]) {
                    failures.push(format!(
                        "{name}: {field} expected {want}, got {} (whole result {actual})",
                        actual[field]
                    ));
                }
            }
            if actual["flag"] != flag {
                failures.push(format!("{name}: result names flag {}", actual["flag"]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        count >= 150,
        "the spec suite has only {count} evaluation cases"
    );
    eprintln!("{count} evaluation cases passed");
}

#[test]
fn validation_cases() {
    let mut failures = Vec::new();
    let mut count = 0;
    for path in testdata("validation") {
        let doc = load(&path);
        let file_name = name_of(&path);
        for case in doc["cases"].as_array().expect("cases array") {
            count += 1;
            let name = format!("{file_name}: {}", case["name"].as_str().unwrap_or("?"));
            let errors: Vec<(String, String)> =
                match FlagFile::from_json_value(case["flags"].clone()) {
                    Err(e) => vec![(e.path, e.message)],
                    Ok(file) => match Snapshot::compile(&file) {
                        Ok(_) => {
                            failures.push(format!("{name}: accepted, but it is invalid"));
                            continue;
                        }
                        Err(e) => e
                            .problems
                            .into_iter()
                            .map(|p| (p.path, p.message))
                            .collect(),
                    },
                };
            let expected = case["errors"].as_array().expect("case.errors");
            let mut want: Vec<&str> = expected
                .iter()
                .map(|e| e["path"].as_str().expect("path"))
                .collect();
            let mut got: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
            want.sort_unstable();
            got.sort_unstable();
            if want != got {
                failures.push(format!(
                    "{name}: expected problems at {want:?}, got {errors:?}"
                ));
                continue;
            }
            for e in expected {
                if let Some(fragment) = e["contains"].as_str() {
                    let path = e["path"].as_str().unwrap_or_default();
                    if !errors
                        .iter()
                        .any(|(p, m)| p == path && m.contains(fragment))
                    {
                        failures.push(format!(
                            "{name}: no message at {path} contains {fragment:?}; got {errors:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 30, "only {count} validation cases");
    eprintln!("{count} validation cases passed");
}
