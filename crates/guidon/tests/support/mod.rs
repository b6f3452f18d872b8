//! The `guidon` binary as a process of a test: started with its
//! arguments, ready once it prints where it listens, killed on drop;
//! and the requests those tests make of it.

// Each test file uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guidon_server::testing::{ADMIN, ENV};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One `guidon` process (`serve` or `edge`), SIGKILLed on drop.
pub(crate) struct Guidon {
    child: Child,
    /// `http://ADDR`, as it printed it.
    pub(crate) base: String,
    pub(crate) pid: u32,
}

impl Guidon {
    /// Runs `guidon ARGS` with `envs`, its stderr appended to `log`, until
    /// it prints `listening on URL`; an error with the log's tail if it
    /// exits first or says nothing within 30 s.
    pub(crate) fn try_spawn(
        args: &[&str],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Result<Guidon, String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_guidon"));
        command
            .args(args)
            .env("GUIDON_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log_file);
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn guidon");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, url)) = line.split_once("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let pid = child.id();
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => Ok(Guidon { child, base, pid }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(format!(
                    "exited {status:?}; log tail: {}",
                    tail(&std::fs::read_to_string(log).unwrap_or_default(), 5)
                ))
            }
        }
    }

    /// [`Guidon::try_spawn`], retried for 30 s: a port may still be held
    /// for a moment after a SIGKILL.
    pub(crate) fn spawn(args: &[&str], envs: &[(&str, &str)], log: &Path) -> Guidon {
        let start = Instant::now();
        loop {
            match Guidon::try_spawn(args, envs, log) {
                Ok(process) => return process,
                Err(why) if start.elapsed() < Duration::from_secs(30) => {
                    eprintln!("guidon {} did not start ({why}); retrying", args[0]);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("guidon {} did not start within 30 s: {why}", args[0]),
            }
        }
    }

    /// SIGKILL, and reaped.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        self.child.wait().expect("reaped")
    }
}

impl Drop for Guidon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An answer: its status and JSON body (`Value::Null` when it is not JSON).
pub(crate) async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) async fn put_flag(
    http: &reqwest::Client,
    base: &str,
    flag: &Value,
) -> (StatusCode, Value) {
    let key = flag["key"].as_str().unwrap();
    answer(
        http.put(format!("{base}/api/v1/envs/{ENV}/flags/{key}"))
            .bearer_auth(ADMIN)
            .json(flag)
            .send()
            .await
            .unwrap(),
    )
    .await
}

pub(crate) async fn sdk_token(http: &reqwest::Client, base: &str, name: &str) -> String {
    let (status, body) = answer(
        http.post(format!("{base}/api/v1/tokens"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": name, "role": "sdk", "env": ENV}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

pub(crate) async fn post_events(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    events: &[Value],
) -> Result<(StatusCode, Value), reqwest::Error> {
    let response = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(token)
        .json(&json!({ "events": events }))
        .send()
        .await?;
    Ok(answer(response).await)
}

/// Event `n`: an exposure to the experiment flag, or a purchase, with a
/// unique id and a fixed time (so a resend is a duplicate).
pub(crate) fn event(label: &str, n: u64) -> Value {
    let user = format!("u{}", n % 97);
    if n.is_multiple_of(2) {
        json!({"type": "exposure", "event_id": format!("{label}-{n}"), "flag": "exp",
               "variant": if n.is_multiple_of(4) { "control" } else { "treatment" },
               "context": {"user_id": user}, "timestamp": "2026-11-20T10:00:00Z"})
    } else {
        json!({"type": "conversion", "event_id": format!("{label}-{n}"), "metric": "purchase",
               "value": 1.5, "context": {"user_id": user}, "timestamp": "2026-11-20T10:00:01Z"})
    }
}

/// The experiment flag events refer to (never changed by the writers).
pub(crate) fn experiment_flag() -> Value {
    json!({"key": "exp", "enabled": true,
           "variants": [{"key": "control", "weight": 50, "value": false},
                        {"key": "treatment", "weight": 50, "value": true}]})
}

/// Resends every acknowledged event: each must be a duplicate, that is,
/// stored. The number found.
pub(crate) async fn events_found(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    acked: &[Value],
) -> u64 {
    let mut found = 0;
    for batch in acked.chunks(500) {
        let (status, body) = post_events(http, base, token, batch).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["accepted"], 0,
            "acknowledged events were missing: {body}"
        );
        found += body["duplicates"].as_u64().unwrap();
    }
    found
}
