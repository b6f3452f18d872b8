//! The `guidon` command as a user runs it: exit codes, one-line errors, and
//! the result objects it prints.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use guidon_server::testing::{TempDir, TestTls, served_certificate};
use serde_json::Value;

fn guidon(args: &[&str]) -> Output {
    guidon_with_stdin(args, "")
}

fn guidon_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guidon runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("guidon finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/flags.json")
        .to_string_lossy()
        .into_owned()
}

/// Runs `guidon eval` on the example file; it must succeed with one JSON line.
fn eval_example(flag: &str, context: &str, extra: &[&str]) -> Value {
    let file = example();
    let mut args = vec![
        "eval",
        "--file",
        &file,
        "--flag",
        flag,
        "--context",
        context,
    ];
    args.extend_from_slice(extra);
    let out = guidon(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(stdout.trim()).expect("the result is JSON")
}

/// The first `rule` step of an explanation.
fn first_rule_step(result: &Value) -> &Value {
    result["explain"]
        .as_array()
        .expect("explain steps")
        .iter()
        .find(|s| s["step"] == "rule")
        .expect("a rule step")
}

/// A failure is one line on stderr, a non-zero exit, and no panic.
fn assert_clean_failure(out: &Output, fragment: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err:?}"
    );
    assert!(
        err.contains(fragment),
        "{err:?} should mention {fragment:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
}

#[test]
fn validate_summarises_a_valid_file() {
    let out = guidon(&["validate", "--file", &example()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("valid, 5 flags and 1 segment"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
}

#[test]
fn validate_lists_every_problem_with_its_path() {
    let dir = TempDir::new("validate");
    let path = dir.file(
        "bad.json",
        r#"{"flags": [{"key": "x", "enabled": true,
            "variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 49.5}],
            "rules": [{"name": "r", "conditions": [
                {"attribute": "email", "operator": "matches", "values": ["("]}],
                "serve": {"enabled": true}}]},
          {"key": "x", "enabled": true}]}"#,
    );
    let out = guidon(&["validate", "--file", &path]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        err.contains("flags[0].variants[1].weight: weights sum to 99.5, must be 100"),
        "{err}"
    );
    assert!(
        err.contains("flags[0].rules[0].conditions[0].values[0]: invalid regex"),
        "{err}"
    );
    assert!(err.contains("flags[1].key: duplicate flag key"), "{err}");
}

#[test]
fn validate_names_the_path_of_a_type_error_and_an_unknown_field() {
    let dir = TempDir::new("types");
    let wrong_type = dir.file("t.json", r#"{"flags": [{"key": "x", "enabled": "yes"}]}"#);
    let out = guidon(&["validate", "--file", &wrong_type]);
    assert_clean_failure(&out, "flags[0].enabled: invalid type");
    let unknown = dir.file(
        "u.yaml",
        "flags:\n  - key: x\n    enabled: true\n    rollout: {percentage: 5, sallt: x}\n",
    );
    let out = guidon(&["validate", "--file", &unknown]);
    assert_clean_failure(&out, "flags[0].rollout.sallt: unknown field `sallt`");
}

#[test]
fn eval_prints_the_result_object_in_spec_order() {
    let out = guidon(&[
        "eval",
        "--file",
        &example(),
        "--flag",
        "new_checkout",
        "--context",
        r#"{"user_id":"user_42"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.trim_end(),
        r#"{"flag":"new_checkout","enabled":true,"variant":"treatment","value":{"layout":"single_page"},"reason":"TARGETING_MATCH","error_code":null,"flag_version":null,"metadata":{"target":true}}"#
    );
}

#[test]
fn eval_reads_contexts_line_by_line_in_order() {
    let dir = TempDir::new("jsonl");
    let contexts = dir.file(
        "c.jsonl",
        "{\"user_id\":\"u1\",\"country\":\"CA\",\"app_version\":\"2.3.0\"}\n\n{\"user_id\":\"u2\",\"country\":\"CA\",\"app_version\":\"2.2.9\"}\n{\"country\":\"US\"}\n",
    );
    let out = guidon(&[
        "eval",
        "--file",
        &example(),
        "--flag",
        "canada_new_app",
        "--contexts",
        &contexts,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let results: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["enabled"], true);
    assert_eq!(results[0]["reason"], "TARGETING_MATCH");
    assert_eq!(results[1]["enabled"], false);
    assert_eq!(results[1]["reason"], "SPLIT");
    assert_eq!(results[2]["metadata"]["missing_bucketing_value"], true);
}

#[test]
fn eval_names_the_bad_line_of_a_contexts_file() {
    let dir = TempDir::new("badline");
    let contexts = dir.file("c.jsonl", "{\"user_id\":\"u1\"}\n[1,2]\n");
    let out = guidon(&[
        "eval",
        "--file",
        &example(),
        "--flag",
        "dark_mode",
        "--contexts",
        &contexts,
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("must be a JSON object"),
        "{err}"
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the first line was evaluated"
    );
}

#[test]
fn eval_explain_records_each_rule_and_condition() {
    let v = eval_example(
        "new_checkout",
        r#"{"user_id":"u5","email":"bob@example.org","country":"US"}"#,
        &["--explain"],
    );
    let staff = first_rule_step(&v);
    assert_eq!(staff["rule"], "staff");
    assert_eq!(staff["outcome"], "not_matched");
    assert_eq!(staff["conditions"][0]["attribute"], "email");
    assert_eq!(staff["conditions"][0]["actual"], "bob@example.org");
    assert_eq!(staff["conditions"][0]["outcome"], "not_matched");
    let steps = v["explain"].as_array().expect("explain steps");
    assert!(steps.iter().any(|s| s["step"] == "rollout"), "{steps:?}");
}

#[test]
fn eval_uses_now_for_time_attributes() {
    let at = |now: &str| {
        let v = eval_example("weekend_banner", r#"{"user_id":"u1"}"#, &["--now", now]);
        v["enabled"].as_bool().expect("enabled")
    };
    // Friday 23:30 UTC is already Saturday 00:30 in Paris (UTC+1 in November).
    assert!(at("2026-11-27T23:30:00Z"));
    assert!(!at("2026-11-27T22:30:00Z"));
}

#[test]
fn validate_accepts_a_byte_order_mark_and_upper_case_yaml() {
    let dir = TempDir::new("bom");
    let bom = dir.file(
        "bom.json",
        "\u{feff}{\"flags\": [{\"key\": \"f\", \"enabled\": true}]}",
    );
    let out = guidon(&["validate", "--file", &bom]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = dir.file("FLAGS.YAML", "flags:\n  - key: f\n    enabled: true\n");
    let out = guidon(&["validate", "--file", &yaml]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn explain_shows_segment_membership_and_unevaluated_conditions() {
    let v = eval_example(
        "dark_mode",
        r#"{"user_id":"user_9","plan":"enterprise"}"#,
        &["--explain"],
    );
    let condition = &first_rule_step(&v)["conditions"][0];
    assert_eq!(condition["outcome"], "not_matched");
    let detail = condition["detail"].as_str().expect("segment detail");
    assert!(
        detail.contains("\"beta_testers\" out: user_id \"user_9\" is excluded"),
        "{detail}"
    );

    let v = eval_example(
        "canada_new_app",
        r#"{"user_id":"u1","country":"FR"}"#,
        &["--explain"],
    );
    let conditions = &first_rule_step(&v)["conditions"];
    assert_eq!(conditions[0]["outcome"], "not_matched");
    assert_eq!(conditions[1]["attribute"], "app_version");
    assert_eq!(conditions[1]["outcome"], "not_evaluated");
}

#[test]
fn eval_reads_a_flag_file_from_stdin() {
    let out = guidon_with_stdin(
        &["eval", "--file", "-", "--flag", "f", "--context", "{}"],
        r#"{"flags": [{"key": "f", "enabled": true}]}"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#""reason":"STATIC""#));
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let ex = example();
    let cases: [(&[&str], &str); 7] = [
        (
            &["eval", "--file", &ex, "--flag", "nope", "--context", "{}"],
            "unknown flag \"nope\"",
        ),
        (
            &[
                "eval",
                "--file",
                &ex,
                "--flag",
                "dark_mode",
                "--context",
                "{",
            ],
            "not valid JSON",
        ),
        (
            &[
                "eval",
                "--file",
                &ex,
                "--flag",
                "dark_mode",
                "--context",
                "42",
            ],
            "must be a JSON object",
        ),
        (
            &[
                "eval",
                "--file",
                &ex,
                "--flag",
                "dark_mode",
                "--context",
                r#"{"targetingKey": "a", "targetingKey": "b"}"#,
            ],
            "targetingKey: duplicate key \"targetingKey\"",
        ),
        (
            &[
                "eval",
                "--file",
                "/nonexistent/flags.json",
                "--flag",
                "x",
                "--context",
                "{}",
            ],
            "cannot read /nonexistent/flags.json",
        ),
        (
            &[
                "eval",
                "--file",
                &ex,
                "--flag",
                "dark_mode",
                "--context",
                "{}",
                "--now",
                "yesterday",
            ],
            "--now \"yesterday\"",
        ),
        (
            &["validate", "--file", "/nonexistent/flags.json"],
            "cannot read",
        ),
    ];
    for (args, fragment) in cases {
        assert_clean_failure(&guidon(args), fragment);
    }
    let dir = TempDir::new("bad");
    let invalid = dir.file(
        "i.json",
        r#"{"flags": [{"key": "a", "enabled": true, "off_variant": "x"}]}"#,
    );
    assert_clean_failure(
        &guidon(&["eval", "--file", &invalid, "--flag", "a", "--context", "{}"]),
        "flags[0].off_variant",
    );
    let both_stdin = guidon(&["eval", "--file", "-", "--flag", "f", "--contexts", "-"]);
    assert_clean_failure(&both_stdin, "cannot both read standard input");
    let malformed = dir.file("m.json", "{\"flags\": [");
    assert_clean_failure(
        &guidon(&["validate", "--file", &malformed]),
        "EOF while parsing",
    );
}

/// The seed's experiment as `testdata/hashing/` computed it with Python's
/// hashlib: per arm (control, treatment) the units assigned and the
/// purchases of the seed's pattern (treatment when i % 4 == 0, control when
/// i % 6 == 0). Read from the committed vectors, not from the demo's code.
fn seed_experiment() -> (String, [u32; 2], [u32; 2]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/hashing/new_checkout_experiment.json");
    let text = std::fs::read_to_string(&path).expect("the hashing vectors");
    let vectors: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let units = vectors["units"].as_array().expect("units");
    assert_eq!(units.len(), 1000);
    let (mut exposures, mut purchases) = ([0_u32; 2], [0_u32; 2]);
    for (i, unit) in units.iter().enumerate() {
        assert_eq!(unit["unit"], format!("user_{i}"));
        let treatment = match unit["variant"].as_str() {
            Some("control") => false,
            Some("treatment") => true,
            other => panic!("unit {i}: variant {other:?}"),
        };
        let arm = usize::from(treatment);
        exposures[arm] += 1;
        if (treatment && i.is_multiple_of(4)) || (!treatment && i.is_multiple_of(6)) {
            purchases[arm] += 1;
        }
    }
    let flag = vectors["flag"].as_str().expect("flag").to_owned();
    (flag, exposures, purchases)
}

/// `guidon demo`: the seed's experiment through a real server and the real
/// ingestion path. The split is the SHA-256 buckets' of the seed's flag
/// (the committed hashing vectors); the purchases follow the seed's pattern.
#[test]
fn demo_prints_the_seeds_numbers_and_the_statistics() {
    let (flag, exposures, purchases) = seed_experiment();
    let out = guidon(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("Experiment: {flag} ")),
        "{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let rate = |arm: usize| {
        format!(
            "{:.2}%",
            f64::from(purchases[arm]) / f64::from(exposures[arm]) * 100.0
        )
    };
    for (arm, name) in ["control ", "treatment "].into_iter().enumerate() {
        assert_eq!(
            row(name)[1..4],
            [
                exposures[arm].to_string(),
                purchases[arm].to_string(),
                rate(arm)
            ],
            "{stdout}"
        );
    }
    let events = 1000 + purchases[0] + purchases[1];
    assert!(
        stdout.contains(&format!("{events} events accepted")),
        "{stdout}"
    );
    for column in ["LIFT (95% CI)", "P-VALUE", "CHANCE TO WIN"] {
        assert!(stdout.contains(column), "{column}: {stdout}");
    }
    // The relative lift of the conversion rates.
    let lift = (f64::from(purchases[1]) / f64::from(exposures[1]))
        / (f64::from(purchases[0]) / f64::from(exposures[0]))
        - 1.0;
    assert!(
        stdout.contains(&format!("{:+.1}%", lift * 100.0)),
        "{stdout}"
    );
}

/// `guidon serve` in a fresh directory with `args`, expected to fail at
/// once: its output, and whether it left a database file behind.
fn serve_fails(label: &str, args: &[&str]) -> (Output, bool) {
    let dir = TempDir::new(label);
    let db = dir.join("guidon.db");
    let url = format!("sqlite://{}", db.display());
    let mut all = vec!["serve", "--database-url", &url];
    all.extend_from_slice(args);
    let out = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(&all)
        .env_remove("GUIDON_ADMIN_TOKEN")
        .env_remove("GUIDON_DATABASE_URL")
        .env_remove("GUIDON_LISTEN")
        .stdin(Stdio::null())
        .output()
        .expect("guidon runs");
    (out, db.exists())
}

#[test]
fn a_failed_start_is_one_line_naming_the_fault_and_creates_no_database() {
    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (out, db) = serve_fails(
        "taken",
        &["--listen", &addr, "--admin-token", "a-long-enough-secret"],
    );
    assert_clean_failure(&out, &format!("cannot listen on {addr}"));
    let err = text(&out.stderr);
    assert_eq!(err.matches("in use").count(), 1, "said once: {err}");
    assert!(!db, "no database file after a failed listen: {err}");

    // A secret too short to be one.
    let (out, db) = serve_fails(
        "short",
        &["--listen", "127.0.0.1:0", "--admin-token", "abc"],
    );
    assert_clean_failure(&out, "GUIDON_ADMIN_TOKEN");
    let err = text(&out.stderr);
    assert!(
        err.contains("3 characters") && err.contains("at least 16"),
        "{err}"
    );
    assert!(!db, "no database file after a refused secret: {err}");

    // A database that cannot be opened: the message names it, once.
    let dir = TempDir::new("nodir");
    let missing = dir.join("no/such/dir/guidon.db");
    let url = format!("sqlite://{}", missing.display());
    let out = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env_remove("GUIDON_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("guidon runs");
    assert_clean_failure(&out, &format!("cannot open the database {url}"));
    let err = text(&out.stderr);
    let cause = err
        .split_once(&url)
        .map(|(_, rest)| rest.trim_start_matches(": ").trim_end().to_owned())
        .unwrap_or_default();
    assert!(!cause.is_empty(), "a cause is given: {err}");
    let first = cause.split(": ").next().unwrap_or_default();
    assert_eq!(
        err.matches(first).count(),
        1,
        "the cause {first:?} is said once: {err}"
    );
}

/// Logs written to a pipe carry no ANSI colour codes.
#[test]
fn serve_logs_have_no_colour_in_a_pipe() {
    let dir = TempDir::new("nocolour");
    let url = format!("sqlite://{}", dir.join("guidon.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env("GUIDON_ADMIN_TOKEN", "a-long-enough-secret")
        .env("GUIDON_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guidon runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"));
    let _ = child.kill();
    let out = child.wait_with_output().expect("guidon ends");
    assert!(listening.is_some(), "it started: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("guidon serving"), "logs were written: {err}");
    assert!(!err.contains('\u{1b}'), "no escape codes: {err:?}");
}

#[test]
fn serve_refuses_half_a_tls_setup_and_bad_tls_files_in_one_line_without_a_database() {
    let tls = TestTls::new("cli-refused");
    let files = tls.files();
    let cert = files.cert.to_string_lossy().into_owned();
    let key = files.key.to_string_lossy().into_owned();
    let listen = [
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        "a-long-enough-secret",
    ];

    let (out, db) = serve_fails("tls-half", &[&listen[..], &["--tls-cert", &cert]].concat());
    assert_clean_failure(&out, "--tls-cert needs --tls-key (give both, or neither)");
    assert!(!db, "no database file: {}", text(&out.stderr));
    let (out, db) = serve_fails(
        "tls-half-key",
        &[&listen[..], &["--tls-key", &key]].concat(),
    );
    assert_clean_failure(&out, "--tls-key needs --tls-cert");
    assert!(!db, "no database file: {}", text(&out.stderr));

    // The key given as the certificate, and the certificate as the key.
    let (out, db) = serve_fails(
        "tls-swapped",
        &[&listen[..], &["--tls-cert", &key, "--tls-key", &cert]].concat(),
    );
    assert_clean_failure(&out, &format!("--tls-cert {key}: no certificate in it"));
    assert!(!db, "no database file: {}", text(&out.stderr));
}

/// The real binary over HTTPS: a SIGHUP (`kill -HUP`) makes it serve the
/// renewed certificate; a SIGHUP with broken files logs one line and keeps
/// serving the certificate it had.
#[test]
fn serve_reloads_its_certificate_on_sighup() {
    let tls = TestTls::new("cli-sighup");
    let files = tls.files();
    let ca = tls.ca_pem();
    let dir = TempDir::new("cli-sighup");
    let url = format!("sqlite://{}", dir.join("guidon.db").display());
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_guidon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .env("GUIDON_ADMIN_TOKEN", "a-long-enough-secret")
        .env("GUIDON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("guidon runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines.by_ref().map_while(Result::ok).find_map(|l| {
        l.strip_prefix("guidon: listening on https://")
            .map(str::to_owned)
    });
    let Some(addr) = listening else {
        let _ = child.kill();
        panic!(
            "it did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let addr: std::net::SocketAddr = addr.trim().parse().expect("an address");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let served = || runtime.block_on(served_certificate(addr, &ca));
    let hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP");
    };
    assert_eq!(served(), tls.cert.der);

    let second = tls.renew("second");
    hangup();
    // Each check is a new handshake; the reload is done soon after the
    // signal (a bounded number of tries, no time asserted).
    let reloaded = (0..2000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        served() == second.der
    });
    assert!(
        reloaded,
        "the renewed certificate is served: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Broken files: one error line, and the second certificate still served.
    std::fs::write(&files.key, "not a key").expect("write");
    hangup();
    let said = (0..2000).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::read_to_string(&log).ok().and_then(|l| {
            l.lines()
                .find(|l| l.contains("not reloaded"))
                .map(str::to_owned)
        })
    });
    let line = said.unwrap_or_else(|| {
        panic!(
            "no error line: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        line.contains("still serving the previous one")
            && line.contains(&format!("--tls-key {}", files.key.display())),
        "{line}"
    );
    assert_eq!(served(), second.der);
    assert!(
        child.try_wait().expect("wait").is_none(),
        "a SIGHUP does not end the server"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait().expect("guidon ends");
    assert!(out.success(), "a clean exit after SIGTERM: {out:?}");
}
