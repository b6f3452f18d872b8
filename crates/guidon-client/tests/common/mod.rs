//! Test support: a real `guidon serve` on 127.0.0.1:0, a TCP proxy that
//! injects faults, and a scripted fake server for exact protocol cases.

#![allow(dead_code)] // each test file uses part of this
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guidon_server::{Config, Running};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) const ADMIN: &str = "test-admin-secret";
pub(crate) const ENV: &str = "production";

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

/// A running server and an admin HTTP client for it.
pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) addr: SocketAddr,
    pub(crate) http: reqwest::Client,
    running: Option<Running>,
}

impl TestServer {
    pub(crate) async fn start(config: Config) -> TestServer {
        let running = guidon_server::start(config).await.expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr),
            addr: running.addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            running: Some(running),
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    pub(crate) fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
    }

    /// PUT a flag in `production`; the answer's JSON (`{flag, version, revision}`).
    pub(crate) async fn put_flag(&self, flag: Value) -> Value {
        let key = flag["key"].as_str().expect("flag key").to_owned();
        self.put(&format!("/api/v1/envs/{ENV}/flags/{key}"), flag)
            .await
    }

    pub(crate) async fn put_segment(&self, segment: Value) -> Value {
        let key = segment["key"].as_str().expect("segment key").to_owned();
        self.put(&format!("/api/v1/envs/{ENV}/segments/{key}"), segment)
            .await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Value {
        let response = self
            .admin(reqwest::Method::PUT, path)
            .json(&body)
            .send()
            .await
            .expect("PUT");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert!(status.is_success(), "PUT {path}: {status} {body}");
        body
    }

    pub(crate) async fn delete(&self, path: &str) -> reqwest::StatusCode {
        self.admin(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
            .status()
    }

    /// A new sdk token for `production`.
    pub(crate) async fn sdk_token(&self, name: &str) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/api/v1/tokens")
            .json(&json!({"name": name, "role": "sdk", "env": ENV}))
            .send()
            .await
            .expect("POST token");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("token body");
        body["token"].as_str().expect("token").to_owned()
    }

    /// The server's SDK document for `production`.
    pub(crate) async fn document(&self) -> Value {
        self.admin(reqwest::Method::GET, "/api/v1/sdk/flags")
            .header("X-Guidon-Environment", ENV)
            .send()
            .await
            .expect("GET document")
            .json()
            .await
            .expect("document JSON")
    }
}

/// Flags and segments sorted by key, so documents compare whatever order
/// each side applied changes in.
pub(crate) fn canonical(doc: &Value) -> Value {
    let mut doc = doc.clone();
    for list in ["flags", "segments"] {
        if let Some(items) = doc.get_mut(list).and_then(Value::as_array_mut) {
            items.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
        }
    }
    if doc.get("segments").is_none() {
        doc["segments"] = json!([]);
    }
    if let Some(o) = doc.as_object_mut() {
        o.remove("type");
    }
    doc
}

/// A port nothing listens on (yet).
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Polls `check` until it holds or `deadline` passes; the time it took.
pub(crate) async fn eventually(
    deadline: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    check().then(|| start.elapsed())
}

pub(crate) fn temp_path(label: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "guidon-client-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// ---------------------------------------------------------------------------
// The fault-injecting proxy.

/// What the proxy does to connections.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Random delays, cuts mid-message and short connection lifetimes.
    pub(crate) chaos: bool,
    /// Accept and close at once (the server looks down).
    pub(crate) refuse: bool,
    /// Refuse stream requests (SSE and WebSocket) only.
    pub(crate) block_streams: bool,
    /// Keep connections open but stop forwarding the server's bytes.
    pub(crate) stall: bool,
}

pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    faults: Arc<Mutex<Faults>>,
    /// Bumped to cut every open connection.
    epoch: watch::Sender<u64>,
    pub(crate) cuts: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let upstream = Arc::new(Mutex::new(upstream));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (epoch, _) = watch::channel(0_u64);
        let cuts = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let proxy = Proxy {
            addr,
            upstream: upstream.clone(),
            faults: faults.clone(),
            epoch: epoch.clone(),
            cuts: cuts.clone(),
            stopped: stopped.clone(),
        };
        tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                n += 1;
                let rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n);
                let up = *upstream.lock().unwrap();
                let f = *faults.lock().unwrap();
                tokio::spawn(relay(
                    client,
                    up,
                    f,
                    faults.clone(),
                    rng,
                    epoch.subscribe(),
                    cuts.clone(),
                ));
            }
        });
        proxy
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    pub(crate) fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap() = addr;
    }

    /// Cuts every open connection.
    pub(crate) fn cut_all(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.cut_all();
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    at_accept: Faults,
    faults: Arc<Mutex<Faults>>,
    mut rng: Rng,
    mut epoch: watch::Receiver<u64>,
    cuts: Arc<AtomicU64>,
) {
    if at_accept.refuse || (at_accept.chaos && rng.chance(5)) {
        cuts.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // The request's first bytes tell a stream from other requests.
    let mut first = vec![0_u8; 8192];
    let n = match tokio::time::timeout(Duration::from_secs(10), client.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    first.truncate(n);
    let head = String::from_utf8_lossy(&first);
    let is_stream = head.contains("/api/v1/sdk/stream") || head.contains("/api/v1/sdk/ws");
    if at_accept.block_streams && is_stream {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if server.write_all(&first).await.is_err() {
        return;
    }
    // A chaotic connection lives a random while (cut even when idle).
    let lifetime = if at_accept.chaos {
        Duration::from_millis(50 + rng.below(1500))
    } else {
        Duration::from_secs(3600)
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up_rng = Rng::new(rng.next());
    let upward = async move {
        let mut buf = vec![0_u8; 16384];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if at_accept.chaos && up_rng.chance(2) {
                return;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downward = async move {
        let mut buf = vec![0_u8; 16384];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = *faults.lock().unwrap();
            if now.stall {
                // Hold the connection open, forward nothing.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            if now.chaos {
                if rng.chance(20) {
                    tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
                }
                if rng.chance(8) {
                    // Cut mid-message: forward a prefix, then close.
                    let cut = usize::try_from(rng.below(n as u64)).unwrap_or(0);
                    let _ = cw.write_all(&buf[..cut]).await;
                    return;
                }
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upward => {}
        () = downward => {}
        () = tokio::time::sleep(lifetime) => {}
        _ = epoch.changed() => {}
    }
    cuts.fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// A scripted fake server, for protocol cases a real server never produces.

/// A request the fake server received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

/// What the fake server answers.
pub(crate) enum Reply {
    /// Status, content type, body; then close.
    Full(u16, &'static str, String),
    /// An SSE response: each chunk written after its delay; then held open
    /// for `hold`, then closed.
    Sse(Vec<(Duration, String)>, Duration),
}

pub(crate) type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    pub(crate) async fn start(handler: Handler) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_one(socket, handler.clone(), log.clone()));
            }
        });
        FakeServer { addr, seen }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_one(mut socket: TcpStream, handler: Handler, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 8192];
    let header_end = loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().unwrap().push(seen.clone());
    match handler(&seen) {
        Reply::Full(status, content_type, body) => {
            let text = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(text.as_bytes()).await;
        }
        Reply::Sse(chunks, hold) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for (delay, text) in chunks {
                tokio::time::sleep(delay).await;
                if socket.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(hold).await;
        }
    }
    let _ = socket.shutdown().await;
}

/// An SSE event's text.
pub(crate) fn sse_event(event: &str, id: u64, data: &Value) -> String {
    format!("event: {event}\nid: {id}\ndata: {data}\n\n")
}

/// A boolean flag whose `override` serves a variant valued `value`.
pub(crate) fn valued_flag(key: &str, value: Value) -> Value {
    json!({
        "key": key,
        "enabled": true,
        "variants": [{"key": "v", "weight": 100, "value": value}],
        "override": {"enabled": true, "variant": "v"}
    })
}
