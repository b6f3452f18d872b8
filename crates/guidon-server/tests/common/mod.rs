//! A real `guidon serve` on 127.0.0.1:0 over a fresh database, and a client.

#![allow(dead_code)] // each test file uses part of this

use std::time::Duration;

use guidon_server::{Config, Running};
use guidon_testkit::TestDb;
use serde_json::{Value, json};

pub(crate) const ADMIN: &str = "test-admin-secret";

pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
    running: Option<Running>,
}

pub(crate) fn config(database_url: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.to_owned(),
        admin_token: Some(ADMIN.into()),
        heartbeat: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

impl TestServer {
    pub(crate) async fn start(database_url: &str) -> TestServer {
        TestServer::start_with(config(database_url)).await
    }

    pub(crate) async fn start_with(config: Config) -> TestServer {
        let url = config.database_url.clone();
        let running = guidon_server::start(config).await.expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr),
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            running: Some(running),
        }
    }

    /// Graceful shutdown.
    pub(crate) async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.at(path)).bearer_auth(ADMIN)
    }

    /// PUT a flag as admin; the response's JSON body.
    pub(crate) async fn put_flag(&self, env: &str, flag: Value) -> Value {
        let key = flag["key"].as_str().expect("flag key").to_owned();
        let response = self
            .admin(
                reqwest::Method::PUT,
                &format!("/api/v1/envs/{env}/flags/{key}"),
            )
            .json(&flag)
            .send()
            .await
            .expect("PUT flag");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert!(status.is_success(), "PUT {key}: {status} {body}");
        body
    }

    /// A new sdk token for `env`.
    pub(crate) async fn sdk_token(&self, name: &str, env: &str) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/api/v1/tokens")
            .json(&json!({"name": name, "role": "sdk", "env": env}))
            .send()
            .await
            .expect("POST token");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("token body");
        body["token"].as_str().expect("token").to_owned()
    }
}

/// One server per available backend, each over a fresh database.
pub(crate) async fn servers(label: &str) -> Vec<(TestDb, TestServer)> {
    let mut out = Vec::new();
    for db in guidon_testkit::databases(label).await {
        let server = TestServer::start(&db.url).await;
        out.push((db, server));
    }
    out
}

/// Reads Server-Sent Events from a response: (event, id, data) triples.
pub(crate) struct SseReader {
    response: reqwest::Response,
    buffer: String,
    /// The server ended the stream (as opposed to a wait running out).
    pub(crate) closed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

impl SseEvent {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

impl SseReader {
    pub(crate) fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: String::new(),
            closed: false,
        }
    }

    /// The next event (comments, such as heartbeats, skipped), or None when
    /// the stream ends or `wait` passes.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) | Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }
}
