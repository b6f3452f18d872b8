//! Experiment events: exposures (recorded by evaluations that put a unit in
//! a flag's weight split) and conversions (`track`), queued without ever
//! blocking the caller and sent in batches to `POST /api/v1/events`.
//!
//! - The queue is bounded: when it is full an event is dropped and counted.
//! - Exposures are deduplicated per process by (flag, unit, variant) in a
//!   fixed table of atomics (lossy: a collision only means one more
//!   exposure sent; the server keeps the first per unit anyway).
//! - A batch goes when it is full, every `flush_interval`, on `flush()`,
//!   and when the client is closed or dropped (the queue closes and the
//!   sender drains it). A batch the server cannot take (unreachable, 5xx)
//!   is kept, up to the queue's capacity, and retried.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use guidon_engine::Context;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use crate::transport::{self, Endpoint};

/// How events are queued and sent.
#[derive(Debug, Clone, Copy)]
pub struct EventOptions {
    /// Record exposures and send events at all.
    pub enabled: bool,
    /// Events held in memory at most; more are dropped (and counted).
    pub capacity: usize,
    /// Events per request at most.
    pub batch_size: usize,
    /// How often a partial batch is sent.
    pub flush_interval: Duration,
    /// Slots of the exposure deduplication table (8 bytes each).
    pub dedupe_slots: usize,
}

impl Default for EventOptions {
    fn default() -> EventOptions {
        EventOptions {
            enabled: true,
            capacity: 10_000,
            batch_size: 500,
            flush_interval: Duration::from_secs(5),
            dedupe_slots: 65_536,
        }
    }
}

/// What happened to events so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Accepted into the queue.
    pub queued: u64,
    /// Dropped: the queue was full, or `capacity` events were already held
    /// waiting for the server (some of those were counted in `queued` first).
    pub dropped: u64,
    /// Accepted by the server.
    pub sent: u64,
    /// Refused by the server (each with its error), or given up on.
    pub rejected: u64,
    /// Exposures not queued because this process had sent them already.
    pub deduplicated: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    rejected: AtomicU64,
    deduplicated: AtomicU64,
}

impl Counters {
    pub(crate) fn stats(&self) -> EventStats {
        EventStats {
            queued: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
        }
    }
}

enum Item {
    Event(Value),
    Flush(oneshot::Sender<Result<(), ClientError>>),
}

/// The producer side, held by the client.
#[derive(Debug)]
pub(crate) struct Events {
    tx: mpsc::Sender<Item>,
    seen: Box<[AtomicU64]>,
    pub(crate) counters: Arc<Counters>,
    /// Random per process: event ids are (prefix, counter).
    id_prefix: u64,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Event(e) => f.debug_tuple("Event").field(e).finish(),
            Item::Flush(_) => f.write_str("Flush"),
        }
    }
}

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x6775_6964_6f6e_6576)
}

impl Events {
    /// The queue and its sender task (spawned on the current runtime).
    pub(crate) fn start(
        options: EventOptions,
        http: reqwest::Client,
        endpoint: Endpoint,
    ) -> Events {
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let counters = Arc::new(Counters::default());
        let sender = Sender {
            rx,
            http,
            endpoint,
            options,
            counters: counters.clone(),
            pending: Vec::new(),
        };
        tokio::spawn(sender.run());
        let slots = options.dedupe_slots.max(1);
        Events {
            tx,
            seen: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            counters,
            id_prefix: getrandom::u64().unwrap_or(0x5eed_u64 ^ u64::from(std::process::id())),
            next_id: AtomicU64::new(1),
        }
    }

    /// A UUID-shaped id, unique per process (random prefix and a counter).
    fn event_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hi = (self.id_prefix & 0xffff_ffff_ffff_0fff) | 0x4000; // version 4
        let lo = (n & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000; // variant 10
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    fn enqueue(&self, event: Value) -> bool {
        match self.tx.try_send(Item::Event(event)) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records an exposure unless this process sent it already. Never blocks.
    ///
    /// The table is two-choice: a key may sit in either of two slots, so an
    /// exposure is forgotten (and sent once more) only when both are taken.
    pub(crate) fn exposure(&self, flag: &str, variant: &str, unit: &str, ctx: &Context) {
        let h = hasher().hash_one((flag, unit, variant)).max(1);
        let len = self.seen.len() as u64;
        let a = &self.seen[usize::try_from(h % len).unwrap_or(0)];
        let b = &self.seen[usize::try_from(h.rotate_left(32) % len).unwrap_or(0)];
        if a.load(Ordering::Relaxed) == h || b.load(Ordering::Relaxed) == h {
            self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let slot = if a.load(Ordering::Relaxed) == 0 || b.load(Ordering::Relaxed) != 0 {
            a
        } else {
            b
        };
        slot.store(h, Ordering::Relaxed);
        let event = json!({
            "type": "exposure",
            "event_id": self.event_id(),
            "flag": flag,
            "variant": variant,
            "context": context_json(ctx),
            "timestamp": guidon_engine::Timestamp::now().to_string(),
        });
        if !self.enqueue(event) {
            // Not sent: let a later evaluation try again.
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Records a conversion. Never blocks.
    pub(crate) fn conversion(&self, metric: &str, ctx: &Context, value: Option<f64>) {
        let mut event = json!({
            "type": "conversion",
            "event_id": self.event_id(),
            "metric": metric,
            "context": context_json(ctx),
            "timestamp": guidon_engine::Timestamp::now().to_string(),
        });
        if let Some(v) = value.filter(|v| v.is_finite()) {
            event["value"] = json!(v);
        }
        self.enqueue(event);
    }

    /// Sends everything queued so far; waits for the answer.
    pub(crate) async fn flush(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Item::Flush(done))
            .await
            .map_err(|_| ClientError::Closed)?;
        wait.await.map_err(|_| ClientError::Closed)?
    }
}

/// The context as a JSON object.
pub(crate) fn context_json(ctx: &Context) -> Value {
    let map: Map<String, Value> = ctx.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
    Value::Object(map)
}

/// The consumer side: batches and sends.
struct Sender {
    rx: mpsc::Receiver<Item>,
    http: reqwest::Client,
    endpoint: Endpoint,
    options: EventOptions,
    counters: Arc<Counters>,
    /// Events not yet accepted by the server, oldest first.
    pending: Vec<Value>,
}

impl Sender {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.options.flush_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(Item::Event(e)) => {
                        if self.pending.len() >= self.options.capacity {
                            // Held in memory at most `capacity` (the server is
                            // away or slow): drop and count.
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        self.pending.push(e);
                        if self.pending.len() >= self.options.batch_size {
                            let _ = self.send_pending().await;
                        }
                    }
                    Some(Item::Flush(done)) => {
                        let result = self.send_pending().await;
                        let _ = done.send(result);
                    }
                    None => {
                        // The client is gone: one last attempt.
                        let _ = self.send_pending().await;
                        return;
                    }
                },
                _ = ticker.tick() => {
                    if !self.pending.is_empty() {
                        let _ = self.send_pending().await;
                    }
                }
            }
        }
    }

    /// Sends the pending events in batches; on failure keeps them (bounded).
    async fn send_pending(&mut self) -> Result<(), ClientError> {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.options.batch_size.max(1));
            let batch: Vec<Value> = self.pending[..n].to_vec();
            match self.send_batch(batch).await {
                Ok(rejected) => {
                    self.pending.drain(..n);
                    let rejected = rejected.min(n as u64);
                    self.counters
                        .sent
                        .fetch_add(n as u64 - rejected, Ordering::Relaxed);
                    self.counters
                        .rejected
                        .fetch_add(rejected, Ordering::Relaxed);
                }
                Err(Failure::Refused(e)) => {
                    // Retrying will not help (a 4xx for the whole batch).
                    self.pending.drain(..n);
                    self.counters
                        .rejected
                        .fetch_add(n as u64, Ordering::Relaxed);
                    return Err(e);
                }
                Err(Failure::Retry(e)) => {
                    let over = self.pending.len().saturating_sub(self.options.capacity);
                    if over > 0 {
                        self.pending.drain(..over);
                        self.counters
                            .dropped
                            .fetch_add(over as u64, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One batch, retried a few times on network errors and 5xx/429.
    /// The number of events the server refused individually.
    async fn send_batch(&self, batch: Vec<Value>) -> Result<u64, Failure> {
        let body = json!({ "events": batch });
        let mut delay = Duration::from_millis(100);
        let mut last = ClientError::Transport("not sent".into());
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            let headers = match self.endpoint.headers() {
                Ok(h) => h,
                Err(e) => return Err(Failure::Refused(ClientError::Transport(e.to_string()))),
            };
            let sent = self
                .http
                .post(self.endpoint.url("/api/v1/events"))
                .headers(headers)
                .timeout(self.endpoint.connect_timeout + self.endpoint.request_timeout)
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = ClientError::Transport(match transport::connect_failed(&e) {
                        crate::error::SyncError::Connect(chain) => chain,
                        other => other.to_string(),
                    });
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(rejected_count(&text));
            }
            let error = ClientError::Status {
                status: status.as_u16(),
                body: text.chars().take(500).collect(),
            };
            if status.is_server_error() || status.as_u16() == 429 {
                last = error;
                continue;
            }
            tracing::warn!(%error, "guidon: the server refused a batch of events");
            return Err(Failure::Refused(error));
        }
        tracing::debug!(error = %last, "guidon: events not sent; kept for the next attempt");
        Err(Failure::Retry(last))
    }
}

enum Failure {
    Refused(ClientError),
    Retry(ClientError),
}

/// How many events a successful answer (200, or 207 for a partly refused
/// batch) lists as refused: `{"accepted", "duplicates", "rejected": [{"index",
/// "error", "message"}]}`; 0 when it says nothing.
fn rejected_count(body: &str) -> u64 {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return 0;
    };
    match v.get("rejected") {
        Some(Value::Array(items)) => return items.len() as u64,
        Some(Value::Number(n)) => return n.as_u64().unwrap_or(0),
        _ => {}
    }
    v.get("errors")
        .and_then(Value::as_array)
        .map_or(0, |e| e.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_counts() {
        assert_eq!(
            rejected_count(r#"{"accepted": 3, "errors": [{"index": 1}]}"#),
            1
        );
        assert_eq!(rejected_count(r#"{"accepted": 3, "rejected": 2}"#), 2);
        assert_eq!(
            rejected_count(
                r#"{"accepted": 1, "duplicates": 0, "rejected": [{"index": 0}, {"index": 2}]}"#
            ),
            2
        );
        assert_eq!(rejected_count("not json"), 0);
    }
}
