//! A real `guidon serve` on 127.0.0.1:0 over a fresh database, and a client.

#![allow(dead_code)] // each test file uses part of this

use std::time::Duration;

use guidon_server::{Config, Running};
use guidon_testkit::TestDb;
use serde_json::{Value, json};

pub const ADMIN: &str = "test-admin-secret";

pub struct TestServer {
    pub base: String,
    pub url: String,
    pub http: reqwest::Client,
    running: Option<Running>,
}

pub fn config(database_url: &str) -> Config {
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
    pub async fn start(database_url: &str) -> TestServer {
        TestServer::start_with(config(database_url)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
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
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.at(path))
            .bearer_auth(ADMIN)
    }

    /// PUT a flag as admin; the response's JSON body.
    pub async fn put_flag(&self, env: &str, flag: Value) -> Value {
        let key = flag["key"].as_str().expect("flag key").to_owned();
        let response = self
            .admin(reqwest::Method::PUT, &format!("/api/v1/envs/{env}/flags/{key}"))
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
    pub async fn sdk_token(&self, name: &str, env: &str) -> String {
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
pub async fn servers(label: &str) -> Vec<(TestDb, TestServer)> {
    let mut out = Vec::new();
    for db in guidon_testkit::databases(label).await {
        let server = TestServer::start(&db.url).await;
        out.push((db, server));
    }
    out
}

/// Reads Server-Sent Events from a response: (event, id, data) triples.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments, such as heartbeats, skipped), or None when
    /// the stream ends or `wait` passes.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
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
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
