//! The sync state machine: connect, take a snapshot, follow the stream.
//!
//! ```text
//!            ┌──────────── backoff (exponential, jitter, cap) ◀──────────┐
//!            ▼                                                           │
//!   connect stream (?since=our revision) ──fails──▶ Stale ───────────────┤
//!            │ 200                                                       │
//!            ▼                                                           │
//!   read messages (dead after 2 silent heartbeats) ──ends/dies/garbage───┘
//!     snapshot: take it unless older than ours
//!     update N: N ≤ ours → drop (stale or duplicate); N = ours+1 → apply;
//!               N > ours+1 → gap: GET changes?since=ours (410 → full document)
//!
//!   after `failures_before_polling` failed streams in a row: poll
//!   GET /sdk/flags with If-None-Match every `poll_interval`, and try the
//!   stream again every `stream_retry_interval`.
//! ```
//!
//! Every message is checked against the revision the client holds, so
//! duplicates (a resumed stream replaying what was already applied) and
//! stale messages (a lagging server instance) change nothing, and no
//! revision is ever skipped: a gap is filled before anything after it is
//! applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use guidon_engine::Snapshot;
use guidon_protocol::{Changes, DecodeError, Document, StreamMessage, Update};
use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::SyncError;
use crate::state::{Shared, Status};
use crate::transport::{self, Endpoint, LiveStream};

/// How the client follows the server's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Server-Sent Events (`/api/v1/sdk/stream`), the default.
    #[default]
    Sse,
    /// WebSocket (`/api/v1/sdk/ws`): the same messages as text frames.
    #[cfg(feature = "websocket")]
    WebSocket,
    /// No stream: `GET /api/v1/sdk/flags` with `If-None-Match` every poll interval.
    Polling,
}

/// One step of the sync, for a relay ([`crate::ClientBuilder::relay`],
/// `guidon edge`): the document now held, compiled, and the revisions that
/// led to it from the one before, so a relay can pass on exactly what its
/// server sent.
#[derive(Debug, Clone)]
pub struct Applied {
    pub document: Arc<Document>,
    pub snapshot: Arc<Snapshot>,
    /// The revisions applied, in order. Empty when a whole document was
    /// taken instead: a stream snapshot, a fetched or polled document, or
    /// the saved snapshot or bootstrap at start.
    pub updates: Vec<Update>,
}

#[derive(Debug, Clone)]
pub(crate) struct SyncConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) transport: Transport,
    pub(crate) poll_interval: Duration,
    /// A stream silent this long is dead (2 × the server's heartbeat).
    pub(crate) dead_after: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) failures_before_polling: u32,
    pub(crate) stream_retry_interval: Duration,
}

/// Counters of what the sync did, for tests and operators.
#[derive(Debug, Default)]
pub(crate) struct SyncCounters {
    pub(crate) connects: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) full_fetches: AtomicU64,
    /// Documents taken although older than ours (409 `revision_ahead`).
    pub(crate) resets: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) dead_streams: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Polling { since: Instant },
}

pub(crate) struct Syncer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<SyncCounters>,
    pub(crate) http: reqwest::Client,
    pub(crate) config: SyncConfig,
    /// What the client holds; `revision` is the resume point when set.
    pub(crate) doc: Arc<Document>,
    /// The document came from this server in this process (not a
    /// bootstrap file or a saved snapshot).
    pub(crate) live: bool,
    pub(crate) stop: watch::Receiver<bool>,
    /// Told of every new document (for saving it to disk).
    pub(crate) saved: Option<watch::Sender<Option<Arc<Document>>>>,
    /// Set once the first connection attempt has an outcome.
    pub(crate) settled: watch::Sender<bool>,
    pub(crate) rng: u64,
    /// The ETag of the last document polled, and the revision it tagged.
    pub(crate) etag: Option<(u64, String)>,
    /// Told of every step, with its revisions (a relay).
    pub(crate) relay: Option<tokio::sync::mpsc::UnboundedSender<Applied>>,
}

impl Syncer {
    pub(crate) async fn run(mut self) {
        let mut mode = match self.config.transport {
            Transport::Polling => Mode::Polling {
                since: Instant::now(),
            },
            _ => Mode::Stream,
        };
        // Consecutive failures: for the backoff, and for falling back to polling.
        let mut failures: u32 = 0;
        let mut stream_failures: u32 = 0;
        loop {
            if *self.stop.borrow() {
                return;
            }
            match mode {
                Mode::Stream => {
                    let end = self.stream_session().await;
                    self.settled.send_replace(true);
                    let healthy = matches!(end, SessionEnd::Healthy(_));
                    let e = end.into_error();
                    if matches!(e, SyncError::Stopped) {
                        return;
                    }
                    if healthy {
                        failures = 0;
                        stream_failures = 0;
                    } else {
                        failures = failures.saturating_add(1);
                        stream_failures = stream_failures.saturating_add(1);
                    }
                    self.after_failure(&e);
                    if stream_failures >= self.config.failures_before_polling {
                        tracing::warn!(
                            failures = stream_failures,
                            "guidon: the stream keeps failing; polling instead"
                        );
                        mode = Mode::Polling {
                            since: Instant::now(),
                        };
                        // Polling starts at once.
                        continue;
                    }
                    // After a stream that worked, reconnect at once (with a
                    // little jitter, so many clients do not arrive together).
                    let wait = if healthy {
                        self.backoff(1) / 4
                    } else {
                        self.backoff(failures)
                    };
                    if !self.sleep(wait).await {
                        return;
                    }
                }
                Mode::Polling { since } => {
                    let outcome = self.poll().await;
                    self.settled.send_replace(true);
                    match outcome {
                        Ok(()) => failures = 0,
                        Err(SyncError::Stopped) => return,
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            self.after_failure(&e);
                        }
                    }
                    let retry_stream = self.config.transport != Transport::Polling
                        && since.elapsed() >= self.config.stream_retry_interval;
                    if retry_stream {
                        tracing::info!("guidon: trying the stream again");
                        mode = Mode::Stream;
                        // One more failure sends it back to polling.
                        stream_failures = self.config.failures_before_polling.saturating_sub(1);
                        continue;
                    }
                    let wait = if failures == 0 {
                        self.config.poll_interval
                    } else {
                        self.backoff(failures).max(self.config.poll_interval)
                    };
                    if !self.sleep(wait).await {
                        return;
                    }
                }
            }
        }
    }

    fn after_failure(&self, e: &SyncError) {
        if e.is_refusal() {
            tracing::error!(error = %e, "guidon: the server refuses this client");
            self.shared.fail(e.to_string());
        } else if matches!(e, SyncError::Certificate(_)) {
            tracing::error!(error = %e, "guidon: cannot connect");
            self.shared.fail(e.to_string());
        } else if matches!(
            e,
            SyncError::Compile(_) | SyncError::Decode(_) | SyncError::Protocol(_)
        ) {
            tracing::error!(error = %e, "guidon: cannot use what the server sent");
            self.shared.fail(e.to_string());
        } else {
            tracing::debug!(error = %e, "guidon: sync interrupted");
            if matches!(e, SyncError::Silent(_)) {
                self.counters.dead_streams.fetch_add(1, Ordering::Relaxed);
            }
            // A stream that ended cleanly reconnects at once and stays Ready;
            // a dead one or an unreachable server means the copy may be old.
            if !matches!(e, SyncError::Ended | SyncError::Read(_))
                || self.shared.status() == Status::Starting
            {
                self.stale();
            }
        }
    }

    fn stale(&self) {
        if self.shared.current.load().document.revision.is_some()
            || !self.shared.current.load().document.file.flags.is_empty()
        {
            self.shared.set_status(Status::Stale);
        } else if self.shared.status() != Status::Error {
            self.shared.set_status(Status::Starting);
        }
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let random = self.random();
        backoff_delay(
            self.config.backoff_initial,
            self.config.backoff_max,
            failures,
            random,
        )
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Sleeps unless stopped first; false when stopped.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }

    /// The revision to resume from: ours, when the server numbered it.
    fn resume_point(&self) -> Option<u64> {
        self.doc.revision
    }

    async fn open(&self) -> Result<LiveStream, SyncError> {
        let since = self.resume_point();
        match self.config.transport {
            #[cfg(feature = "websocket")]
            Transport::WebSocket => transport::open_ws(&self.config.endpoint, since).await,
            _ => transport::open_sse(&self.http, &self.config.endpoint, since).await,
        }
    }

    /// One connection: open, read until it ends (it always ends: closed,
    /// cut, dead, garbage, or stopped).
    async fn stream_session(&mut self) -> SessionEnd {
        let mut stop = self.stop.clone();
        let opened = tokio::select! {
            r = self.open() => r,
            _ = stop.wait_for(|s| *s) => return SessionEnd::Failed(SyncError::Stopped),
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) if e.is_ahead() => {
                // Take the server's document, older or not, and reconnect
                // from it at once.
                return match self.reset_to_server(&e).await {
                    Ok(()) => SessionEnd::Healthy(SyncError::Ended),
                    Err(e) => SessionEnd::Failed(e),
                };
            }
            Err(e) => return SessionEnd::Failed(e),
        };
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        // With a resume point the server sends what we missed at once (or
        // nothing, when we have it all): we are current.
        if self.resume_point().is_some() {
            self.shared.set_status(Status::Ready);
        }
        let mut alive = false;
        let dead_after = self.config.dead_after;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(dead_after, stream.next()) => next,
                _ = self.stop.wait_for(|s| *s) => return SessionEnd::Failed(SyncError::Stopped),
            };
            let error = match next {
                Err(_) => SyncError::Silent(dead_after),
                Ok(None) => SyncError::Ended,
                Ok(Some(Err(e))) => e,
                Ok(Some(Ok(None))) => {
                    alive = true;
                    continue;
                }
                Ok(Some(Ok(Some(message)))) => {
                    alive = true;
                    match self.handle(message).await {
                        Ok(()) => {
                            if self.live {
                                self.shared.set_status(Status::Ready);
                            }
                            continue;
                        }
                        Err(e) => e,
                    }
                }
            };
            let unusable = matches!(
                error,
                SyncError::Decode(_) | SyncError::Compile(_) | SyncError::Protocol(_)
            );
            return if alive && !unusable {
                SessionEnd::Healthy(error)
            } else {
                SessionEnd::Failed(error)
            };
        }
    }

    async fn handle(&mut self, message: StreamMessage) -> Result<(), SyncError> {
        match message {
            StreamMessage::Snapshot(doc) => self.take_snapshot(doc),
            StreamMessage::Update(update) => self.update(update).await,
        }
    }

    /// A full document from the server: taken unless it is older than ours.
    fn take_snapshot(&mut self, doc: Document) -> Result<(), SyncError> {
        let Some(revision) = doc.revision else {
            return Err(SyncError::Decode("a snapshot without revision".into()));
        };
        // The same environment (a re-created one restarts its revisions).
        let same_env = match (self.doc.epoch, doc.epoch) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if let Some(ours) = self.doc.revision
            && self.live
            && same_env
            && revision <= ours
        {
            // Stale (a lagging server instance) or what we have.
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.publish(doc, Vec::new())?;
        self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One revision's changes.
    async fn update(&mut self, update: Update) -> Result<(), SyncError> {
        let Some(ours) = self.doc.revision else {
            // Nothing to apply it to (a bootstrap file): take the whole document.
            self.fetch_document().await?;
            return self.update_checked(update);
        };
        if update.revision <= ours {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if update.revision > ours + 1 {
            self.counters.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                ours,
                revision = update.revision,
                "guidon: revision gap; catching up"
            );
            self.catch_up(ours).await?;
        }
        self.update_checked(update)
    }

    /// Applies `revision` when it is the next one; drops it when already
    /// covered; a gap still open is an error (the stream is resumed).
    fn update_checked(&mut self, update: Update) -> Result<(), SyncError> {
        let ours = self.doc.revision.unwrap_or(0);
        if update.revision <= ours {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if update.revision != ours + 1 {
            return Err(SyncError::Gap {
                have: ours,
                got: update.revision,
            });
        }
        let relayed = self.relay.as_ref().map(|_| vec![update.clone()]);
        let mut doc = Document::clone(&self.doc);
        doc.advance(update.revision, update.changes);
        self.publish(doc, relayed.unwrap_or_default())
    }

    /// `GET /sdk/changes?since=ours`, or the whole document past the
    /// server's catch-up horizon (410).
    async fn catch_up(&mut self, ours: u64) -> Result<(), SyncError> {
        let endpoint = &self.config.endpoint;
        let response = self
            .http
            .get(endpoint.url(&format!("/api/v1/sdk/changes?since={ours}")))
            .headers(endpoint.headers()?)
            .timeout(endpoint.request_timeout)
            .send()
            .await
            .map_err(|e| transport::connect_failed(&e))?;
        if response.status() == StatusCode::GONE {
            tracing::debug!(
                ours,
                "guidon: too far behind for catch-up; taking the document"
            );
            return self.fetch_document().await;
        }
        if !response.status().is_success() {
            let refused = transport::refuse(response).await;
            if refused.is_ahead() {
                return self.reset_to_server(&refused).await;
            }
            return Err(refused);
        }
        let answer = Changes::from_json(&read_text(response).await?)?;
        if answer.epoch.is_some() && answer.epoch != self.doc.epoch {
            // The environment was re-created: its revisions start again.
            return self.fetch_document().await;
        }
        if answer.revision <= ours {
            return Ok(());
        }
        let relayed = self.relay.as_ref().map(|_| {
            let mut updates = answer.clone().into_updates();
            updates.retain(|u| u.revision > ours);
            updates
        });
        let mut doc = Document::clone(&self.doc);
        doc.catch_up(answer);
        self.publish(doc, relayed.unwrap_or_default())
    }

    /// The server says it never reached our revision: its document is the
    /// truth now, even though it is older than ours.
    async fn reset_to_server(&mut self, why: &SyncError) -> Result<(), SyncError> {
        tracing::warn!(
            ours = self.doc.revision,
            error = %why,
            "guidon: the server is behind this client's revision; taking its document"
        );
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        self.live = false;
        self.etag = None;
        self.fetch_document().await
    }

    /// `GET /sdk/flags`: the whole document, taken unless older than ours.
    async fn fetch_document(&mut self) -> Result<(), SyncError> {
        self.counters.full_fetches.fetch_add(1, Ordering::Relaxed);
        let endpoint = &self.config.endpoint;
        let response = self
            .http
            .get(endpoint.url("/api/v1/sdk/flags"))
            .headers(endpoint.headers()?)
            .timeout(endpoint.request_timeout)
            .send()
            .await
            .map_err(|e| transport::connect_failed(&e))?;
        if !response.status().is_success() {
            return Err(transport::refuse(response).await);
        }
        let doc = Document::from_json(&read_text(response).await?)?;
        self.take_snapshot(doc)
    }

    /// One poll: `GET /sdk/flags` with `If-None-Match` (our revision).
    async fn poll(&mut self) -> Result<(), SyncError> {
        self.counters.polls.fetch_add(1, Ordering::Relaxed);
        let endpoint = &self.config.endpoint;
        let mut request = self
            .http
            .get(endpoint.url("/api/v1/sdk/flags"))
            .headers(endpoint.headers()?)
            .timeout(endpoint.connect_timeout + endpoint.request_timeout);
        // The server's own ETag, sent back while we still hold what it tagged.
        if let Some((revision, etag)) = &self.etag
            && self.doc.revision == Some(*revision)
            && self.live
        {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag.as_str());
        }
        let send = tokio::select! {
            r = request.send() => r,
            _ = self.stop.wait_for(|s| *s) => return Err(SyncError::Stopped),
        };
        let response = send.map_err(|e| transport::connect_failed(&e))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => {}
            s if s.is_success() => {
                let etag = response
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let doc = Document::from_json(&read_text(response).await?)?;
                let revision = doc.revision;
                self.take_snapshot(doc)?;
                self.etag = match (etag, revision) {
                    (Some(etag), Some(revision)) if self.doc.revision == Some(revision) => {
                        Some((revision, etag))
                    }
                    _ => None,
                };
            }
            _ => return Err(transport::refuse(response).await),
        }
        self.shared.set_status(Status::Ready);
        Ok(())
    }

    /// Compiles and publishes a document; tells the saver and the relay.
    fn publish(&mut self, doc: Document, updates: Vec<Update>) -> Result<(), SyncError> {
        let snapshot = Arc::new(
            doc.compile()
                .map_err(|e| SyncError::Compile(e.to_string()))?,
        );
        let doc = Arc::new(doc);
        self.doc = doc.clone();
        self.shared.publish(doc.clone(), snapshot.clone());
        if let Some(relay) = &self.relay {
            let _ = relay.send(Applied {
                document: doc.clone(),
                snapshot,
                updates,
            });
        }
        self.live = true;
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(saved) = &self.saved {
            saved.send_replace(Some(doc));
        }
        Ok(())
    }
}

/// Exponential backoff with jitter: a delay in [d/2, d] (placed by
/// `random`), where d = initial × 2^(failures−1), capped at `max`.
fn backoff_delay(initial: Duration, max: Duration, failures: u32, random: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = initial.saturating_mul(1 << exp).min(max);
    let half = base / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = if nanos == 0 { 0 } else { random % nanos };
    half + Duration::from_nanos(jitter)
}

async fn read_text(response: reqwest::Response) -> Result<String, SyncError> {
    response
        .text()
        .await
        .map_err(|e| SyncError::Read(transport::error_chain(&e)))
}

impl From<DecodeError> for SyncError {
    fn from(e: DecodeError) -> SyncError {
        match e {
            DecodeError::Protocol { .. } => SyncError::Protocol(e.to_string()),
            DecodeError::Malformed(m) => SyncError::Decode(m),
        }
    }
}

/// How a stream session ended.
#[derive(Debug)]
enum SessionEnd {
    /// It delivered messages or heartbeats before ending.
    Healthy(SyncError),
    /// It never worked.
    Failed(SyncError),
}

impl SessionEnd {
    fn into_error(self) -> SyncError {
        match self {
            SessionEnd::Healthy(e) | SessionEnd::Failed(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let initial = Duration::from_millis(250);
        let cap = Duration::from_secs(30);
        for (failures, d) in [(1, 250), (2, 500), (3, 1000), (8, 30_000), (50, 30_000)] {
            let d = Duration::from_millis(d);
            let low = backoff_delay(initial, cap, failures, 0);
            let half = u64::try_from((d / 2).as_nanos()).unwrap_or(0);
            let high = backoff_delay(initial, cap, failures, half - 1);
            assert_eq!(low, d / 2, "{failures}");
            assert_eq!(high, d - Duration::from_nanos(1), "{failures}");
            assert_eq!(
                backoff_delay(initial, cap, failures, half),
                d / 2,
                "{failures}"
            );
        }
    }
}
