//! Test support for the server's, the SDK's and the CLI's tests (and the
//! SDK's bench), behind the `test-support` feature: one harness, used as a
//! dev-dependency (`guidon-server = { workspace = true, features =
//! ["test-support"] }`). It depends on nothing above the server (not on the
//! SDK), so no dependency cycle forms.
//!
//! - [`TestServer`]: a real `guidon serve` on 127.0.0.1:0 over a database
//!   URL, with an admin HTTP client; [`servers`] starts one per backend;
//!   [`BlockingServer`] runs one on its own runtime for plain blocking tests.
//! - [`TestTls`]: HTTPS for a [`TestServer`] ([`TestServer::start_tls`]):
//!   a CA and certificate made in the test; [`served_certificate`] tells
//!   which certificate a server serves.
//! - [`Proxy`]: a TCP proxy between a client and a server that injects
//!   [`Faults`] (refused connections, cuts mid-message, delays, stalls).
//! - [`FakeServer`]: a scripted HTTP server, for protocol cases a real
//!   server never produces.
//! - [`Rng`]: the seeded generator behind the proxy's chaos and the tests'
//!   random writes.
//! - [`SseReader`]: reads a stream response's events with
//!   [`guidon_protocol::sse`], the parser the SDK uses.
//! - From `guidon-testkit`: [`databases`], [`sqlite`] and [`TestDb`] (fresh
//!   databases), [`TempDir`], [`free_port`], [`TestCa`] and [`ServerCert`],
//!   [`PrivatePostgres`] (a server the test may stop), [`SmallFs`] (a small
//!   filesystem to fill), [`sqlite_integrity`].
//!
//! Everything here panics, with a message, on what a test did not expect:
//! it is for tests only.

mod fake;
mod proxy;
mod rng;
mod server;
mod sse;
mod tls;

use std::time::Duration;

use serde_json::{Value, json};

pub use fake::{FakeServer, Handler, Reply, Seen, sse_event};
pub use guidon_testkit::{
    PrivatePostgres, ServerCert, SmallFs, TempDir, TestCa, TestDb, databases, free_port, sqlite,
    sqlite_integrity,
};
pub use proxy::{Faults, Proxy};
pub use rng::Rng;
pub use server::{BlockingServer, TestServer, config, servers};
pub use sse::{SseEvent, SseEventJson, SseReader};
pub use tls::{TestTls, served_certificate, tls_connect};

/// The admin token every test server is started with.
pub const ADMIN: &str = "test-admin-secret";

/// The environment every new database has.
pub const ENV: &str = "production";

/// Reads `stream` until the server closes it (EOF or reset): what it sent
/// before. Panics if it keeps the connection open past `guard`, so a
/// regression fails instead of hanging.
pub async fn until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    guard: Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout(guard, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Polls `check` (every millisecond) until it holds or `deadline` passes;
/// the time it took, or `None` if it never held.
pub async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    check().then(|| start.elapsed())
}

/// A boolean flag whose `override` serves a variant valued `value`.
pub fn valued_flag(key: &str, value: Value) -> Value {
    json!({
        "key": key,
        "enabled": true,
        "variants": [{"key": "v", "weight": 100, "value": value}],
        "override": {"enabled": true, "variant": "v"}
    })
}

/// A document's flags and segments sorted by key (and no `type`), so two
/// documents compare equal whatever order each side applied changes in.
pub fn canonical(doc: &Value) -> Value {
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
