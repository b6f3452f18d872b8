//! A real `guidon serve` for tests.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use super::{ADMIN, TestDb, TestTls};
use crate::{Config, ENV_HEADER, Running, TlsError};

/// The tests' configuration: 127.0.0.1:0, the admin token [`ADMIN`], a
/// one-second heartbeat and a 100 ms store poll (so other instances'
/// commits arrive quickly).
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

/// A running server (in this runtime) and an HTTP client for it.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` over TLS.
    pub base: String,
    pub addr: SocketAddr,
    /// The database it serves (another instance can start over it).
    pub database_url: String,
    /// A client with a 30 s timeout (no token: see [`TestServer::admin`]);
    /// over TLS it trusts the server's CA.
    pub http: reqwest::Client,
    /// The CA and certificate files, for a server started with
    /// [`TestServer::start_tls`].
    pub tls: Option<TestTls>,
    config: Config,
    running: Option<Running>,
}

impl TestServer {
    /// A server over `database_url` with [`config`].
    pub async fn start(database_url: &str) -> TestServer {
        TestServer::start_with(config(database_url)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        TestServer::launch(config, None).await
    }

    /// A server over `database_url` with [`config`], serving HTTPS with a
    /// certificate of a CA made for it ([`TestTls`]).
    pub async fn start_tls(database_url: &str) -> TestServer {
        let tls = TestTls::new("server");
        TestServer::start_tls_with(config(database_url), tls).await
    }

    /// A server with `config`, serving HTTPS with `tls`'s files.
    pub async fn start_tls_with(config: Config, tls: TestTls) -> TestServer {
        TestServer::launch(
            Config {
                tls: Some(tls.files()),
                ..config
            },
            Some(tls),
        )
        .await
    }

    async fn launch(config: Config, tls: Option<TestTls>) -> TestServer {
        let running = crate::start(config.clone()).await.expect("server starts");
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let base = match &tls {
            Some(tls) => {
                let ca = reqwest::Certificate::from_pem(tls.ca_pem().as_bytes())
                    .expect("the CA certificate");
                http = http.add_root_certificate(ca);
                format!("https://{}", running.addr)
            }
            None => format!("http://{}", running.addr),
        };
        TestServer {
            base,
            addr: running.addr,
            database_url: config.database_url.clone(),
            http: http.build().expect("an HTTP client"),
            tls,
            config,
            running: Some(running),
        }
    }

    /// Reads the certificate files again ([`Running::reload_tls`]), as
    /// `guidon serve` does on SIGHUP.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        self.running
            .as_ref()
            .expect("running until stopped")
            .reload_tls()
    }

    /// Its configuration, listening on the address it has now: to start
    /// it again on the same port (`TestServer::start_with`) after
    /// [`TestServer::stop`], as a restarted server would be.
    pub fn same_address(&self) -> Config {
        Config {
            listen: self.addr.to_string(),
            ..self.config.clone()
        }
    }

    /// Where `/metrics` is served without a token (`Config::metrics_listen`).
    pub fn running_metrics_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().and_then(|r| r.metrics_addr)
    }

    /// Graceful shutdown: streams end, requests finish.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    /// The URL of `path` on this server.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.at(path)).bearer_auth(ADMIN)
    }

    /// PUTs `body` at `path` as admin, which must succeed; the answer's JSON.
    pub async fn put(&self, path: &str, body: Value) -> Value {
        let response = self
            .admin(Method::PUT, path)
            .json(&body)
            .send()
            .await
            .expect("PUT");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert!(status.is_success(), "PUT {path}: {status} {body}");
        body
    }

    /// DELETEs `path` as admin; the status.
    pub async fn delete(&self, path: &str) -> StatusCode {
        self.admin(Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
            .status()
    }

    /// PUTs a flag in `env`; the answer (`{flag, version, revision}`).
    pub async fn put_flag(&self, env: &str, flag: Value) -> Value {
        let key = flag["key"].as_str().expect("flag key").to_owned();
        self.put(&format!("/api/v1/envs/{env}/flags/{key}"), flag)
            .await
    }

    /// PUTs a segment in `env`; the answer.
    pub async fn put_segment(&self, env: &str, segment: Value) -> Value {
        let key = segment["key"].as_str().expect("segment key").to_owned();
        self.put(&format!("/api/v1/envs/{env}/segments/{key}"), segment)
            .await
    }

    /// A new sdk token for `env`.
    pub async fn sdk_token(&self, name: &str, env: &str) -> String {
        self.token(name, "sdk", Some(env)).await
    }

    /// A new token of `role` (scoped to `env`, for sdk and client tokens):
    /// its secret.
    pub async fn token(&self, name: &str, role: &str, env: Option<&str>) -> String {
        let response = self
            .admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": name, "role": role, "env": env}))
            .send()
            .await
            .expect("POST token");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("token body");
        body["token"].as_str().expect("token").to_owned()
    }

    /// The SDK document of `env` (`GET /api/v1/sdk/flags`, as admin).
    pub async fn document(&self, env: &str) -> Value {
        self.admin(Method::GET, "/api/v1/sdk/flags")
            .header(ENV_HEADER, env)
            .send()
            .await
            .expect("GET document")
            .json()
            .await
            .expect("document JSON")
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.at("/metrics"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// One server per available backend, each over a fresh database.
pub async fn servers(label: &str) -> Vec<(TestDb, TestServer)> {
    let mut out = Vec::new();
    for db in super::databases(label).await {
        let server = TestServer::start(&db.url).await;
        out.push((db, server));
    }
    out
}

/// A [`TestServer`] over a fresh SQLite file, on a runtime of its own (two
/// worker threads), for tests that are plain blocking code (running the
/// `guidon` binary, say). Stopped, and its database removed, on drop.
pub struct BlockingServer {
    server: Option<TestServer>,
    runtime: tokio::runtime::Runtime,
    _db: TestDb,
}

impl BlockingServer {
    pub fn start(label: &str) -> BlockingServer {
        BlockingServer::launch(label, false)
    }

    /// The same, serving HTTPS ([`TestServer::start_tls`]).
    pub fn start_tls(label: &str) -> BlockingServer {
        BlockingServer::launch(label, true)
    }

    fn launch(label: &str, tls: bool) -> BlockingServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let db = super::sqlite(label);
        let server = runtime.block_on(async {
            if tls {
                TestServer::start_tls(&db.url).await
            } else {
                TestServer::start(&db.url).await
            }
        });
        BlockingServer {
            server: Some(server),
            runtime,
            _db: db,
        }
    }

    pub fn server(&self) -> &TestServer {
        self.server.as_ref().expect("running until dropped")
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS).
    pub fn base(&self) -> &str {
        &self.server().base
    }

    /// Runs `future` to completion on the server's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for BlockingServer {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take()
            && let Some(running) = server.running.take()
        {
            // No panic here: this may run while a failed test unwinds.
            let _ = self.runtime.block_on(running.shutdown());
        }
    }
}
