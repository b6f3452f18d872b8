//! The client: a builder, the evaluation methods, status and listeners.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guidon_engine::{Context, ErrorCode, Evaluation, Reason, Timestamp};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ClientError;
use crate::events::{EventOptions, EventStats, Events};
use crate::offline;
use guidon_protocol::Document;

use crate::state::{Published, Shared, Status};
use crate::sync::{Applied, SyncConfig, SyncCounters, Syncer, Transport};
use crate::transport::Endpoint;

/// Options for a client that follows a server. Start with
/// [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    server_url: String,
    sdk_token: String,
    environment: Option<String>,
    transport: Transport,
    poll_interval: Duration,
    start_timeout: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    heartbeat: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    failures_before_polling: u32,
    stream_retry_interval: Duration,
    bootstrap: Option<Bootstrap>,
    snapshot_path: Option<PathBuf>,
    events: EventOptions,
    max_message_bytes: usize,
    /// PEM certificates trusted besides the system's roots.
    ca_pem: Option<Vec<u8>>,
    relay: Option<tokio::sync::mpsc::UnboundedSender<Applied>>,
}

#[derive(Debug, Clone)]
enum Bootstrap {
    Path(PathBuf),
    Document(Box<Document>),
}

impl ClientBuilder {
    fn new(server_url: &str, sdk_token: &str) -> ClientBuilder {
        ClientBuilder {
            server_url: server_url.trim_end_matches('/').to_owned(),
            sdk_token: sdk_token.to_owned(),
            environment: None,
            transport: Transport::Sse,
            poll_interval: Duration::from_secs(30),
            start_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            failures_before_polling: 5,
            stream_retry_interval: Duration::from_secs(120),
            bootstrap: None,
            snapshot_path: None,
            events: EventOptions::default(),
            max_message_bytes: 64 * 1024 * 1024,
            ca_pem: None,
            relay: None,
        }
    }

    /// The environment, for an admin token (`X-Guidon-Environment`); an
    /// sdk token implies its own.
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = Some(env.into());
        self
    }

    /// SSE (default), WebSocket, or polling only.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// How often to poll when polling (30 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How long `build()` waits for the server's flags (5 s). It never
    /// waits longer; with a bootstrap file or saved snapshot it returns as
    /// soon as the first attempt to reach the server fails.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Time to establish a connection (5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time for one request, after connecting (10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The server's heartbeat interval (`--heartbeat-secs`, 15 s): a stream
    /// silent for two of them is taken as dead and reconnected.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Reconnection delays: the first, and the cap (250 ms, 30 s); each
    /// failure doubles the delay, randomized within [d/2, d].
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// After this many stream failures in a row, poll instead (5), and try
    /// the stream again every `retry_stream_every` (2 min).
    pub fn fallback_to_polling(
        mut self,
        after_failures: u32,
        retry_stream_every: Duration,
    ) -> Self {
        self.failures_before_polling = after_failures.max(1);
        self.stream_retry_interval = retry_stream_every;
        self
    }

    /// Flags to serve until the server answers: a flag file (JSON, or YAML
    /// for `.yaml`/`.yml`) or a document saved by the SDK. Evaluations from
    /// it are marked `STALE`.
    pub fn bootstrap_file(mut self, path: impl AsRef<Path>) -> Self {
        self.bootstrap = Some(Bootstrap::Path(path.as_ref().to_owned()));
        self
    }

    /// Like [`ClientBuilder::bootstrap_file`], from flags in memory.
    pub fn bootstrap_flags(mut self, file: guidon_engine::FlagFile) -> Self {
        self.bootstrap = Some(Bootstrap::Document(Box::new(Document {
            file,
            ..Document::default()
        })));
        self
    }

    /// Where to keep the last flags received (written atomically, at most
    /// once a second), read at start when the server cannot be reached.
    /// Preferred over the bootstrap file when both exist.
    pub fn snapshot_path(mut self, path: impl AsRef<Path>) -> Self {
        self.snapshot_path = Some(path.as_ref().to_owned());
        self
    }

    /// Event queueing and batching.
    pub fn events(mut self, options: EventOptions) -> Self {
        self.events = options;
        self
    }

    /// Largest message accepted from the server (64 MiB).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Trusts the CA certificates in `pem` (PEM, one or more), besides the
    /// system's roots, for an `https://` server: a private CA, or the
    /// server's own self-signed certificate. Requests, SSE and WebSocket
    /// all use it.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Sends every step of the sync to `relay`, in order: the document
    /// held, compiled, with the revisions that led to it (none when a whole
    /// document was taken, as the saved snapshot at start). For a relay
    /// that serves what it follows (`guidon edge`).
    pub fn relay(mut self, relay: tokio::sync::mpsc::UnboundedSender<Applied>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Starts the client: loads the saved snapshot or bootstrap, starts
    /// following the server, and waits for its flags up to the start
    /// timeout. Never fails because the server is unreachable: check
    /// [`Client::status`] (or use [`Client::wait_ready`]).
    ///
    /// Must be called within a Tokio runtime, which then runs the
    /// background tasks.
    pub async fn build(self) -> Result<Client, ClientError> {
        let url = self.server_url.clone();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if host.is_none_or(str::is_empty) {
            return Err(ClientError::InvalidUrl {
                url,
                message: "expected http://HOST:PORT or https://HOST:PORT".into(),
            });
        }
        // The TLS trust (reading the system's roots) only where it is used;
        // a CA given is checked whatever the URL.
        let tls = if url.starts_with("https://") || self.ca_pem.is_some() {
            Some(crate::tls::client_config(self.ca_pem.as_deref()).map_err(ClientError::Ca)?)
        } else {
            None
        };
        // Offline start: the saved snapshot, else the bootstrap.
        let mut start: Option<Document> = None;
        if let Some(path) = &self.snapshot_path
            && path.exists()
        {
            match offline::read_document(path) {
                Ok(doc) => start = Some(doc),
                Err(e) => tracing::warn!(error = %e, "guidon: ignoring the saved snapshot"),
            }
        }
        if start.is_none() {
            start = match &self.bootstrap {
                Some(Bootstrap::Path(path)) => Some(offline::read_document(path)?),
                Some(Bootstrap::Document(doc)) => Some(Document::clone(doc)),
                None => None,
            };
        }
        let (published, status, doc) = match start {
            Some(doc) => {
                let snapshot = doc.compile().map_err(|e| ClientError::Invalid {
                    origin: "bootstrap".into(),
                    message: e.to_string(),
                })?;
                let doc = Arc::new(doc);
                let snapshot = Arc::new(snapshot);
                if let Some(relay) = &self.relay {
                    let _ = relay.send(Applied {
                        document: doc.clone(),
                        snapshot: snapshot.clone(),
                        updates: Vec::new(),
                    });
                }
                (Published::new(doc.clone(), snapshot), Status::Stale, doc)
            }
            None => {
                let published = Published::empty();
                let doc = published.document.clone();
                (published, Status::Starting, doc)
            }
        };
        let has_start_data = status == Status::Stale;
        let shared = Arc::new(Shared::new(published, status));
        let endpoint = Endpoint {
            base: self.server_url.clone(),
            token: self.sdk_token.clone(),
            environment: self.environment.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            max_message_bytes: self.max_message_bytes,
            tls: tls.clone(),
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        }
        let http = http.build().map_err(|e| ClientError::Http(e.to_string()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (settled_tx, mut settled_rx) = watch::channel(false);
        let counters = Arc::new(SyncCounters::default());
        let mut tasks = Vec::new();
        let saved = match &self.snapshot_path {
            Some(path) => {
                let (tx, rx) = watch::channel(None);
                tasks.push(tokio::spawn(offline::save_loop(
                    path.clone(),
                    rx,
                    Duration::from_secs(1),
                )));
                Some(tx)
            }
            None => None,
        };
        let syncer = Syncer {
            shared: shared.clone(),
            counters: counters.clone(),
            http: http.clone(),
            config: SyncConfig {
                endpoint: endpoint.clone(),
                transport: self.transport,
                poll_interval: self.poll_interval,
                dead_after: self.heartbeat * 2,
                backoff_initial: self.backoff_initial,
                backoff_max: self.backoff_max,
                failures_before_polling: self.failures_before_polling,
                stream_retry_interval: self.stream_retry_interval,
            },
            doc,
            live: false,
            stop: stop_rx,
            saved,
            settled: settled_tx,
            rng: getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15) | 1,
            etag: None,
            relay: self.relay.clone(),
        };
        tasks.insert(0, tokio::spawn(syncer.run()));
        let events = self
            .events
            .enabled
            .then(|| Events::start(self.events, http, endpoint));
        let client = Client {
            inner: Arc::new(Inner {
                shared,
                events,
                counters: Some(counters),
                stop: Some(stop_tx),
                tasks: Mutex::new(tasks),
                close_timeout: self.connect_timeout + self.request_timeout,
            }),
        };
        // Wait for the server's flags; with flags already in hand, only
        // until the first attempt has an outcome.
        let mut status = client.inner.shared.watch_status();
        let wait = async {
            loop {
                if *status.borrow_and_update() == Status::Ready {
                    return;
                }
                if has_start_data && *settled_rx.borrow_and_update() {
                    return;
                }
                tokio::select! {
                    r = status.changed() => if r.is_err() { return },
                    r = settled_rx.changed() => if r.is_err() { return },
                }
            }
        };
        if tokio::time::timeout(self.start_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.start_timeout,
                status = ?client.status(),
                "guidon: no flags from the server yet; starting anyway"
            );
        }
        Ok(client)
    }
}

/// A Guidon client: evaluates flags locally, from a copy it keeps current.
///
/// Cheap to clone (all clones share one copy, one connection, one events
/// queue). Evaluation methods never block, never do I/O and never fail:
/// an unknown flag is a result (`ERROR`/`FLAG_NOT_FOUND`), and the typed
/// helpers then return their default.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    events: Option<Events>,
    counters: Option<Arc<SyncCounters>>,
    /// Tells the background tasks to stop; `None` for a client without server.
    stop: Option<watch::Sender<bool>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// How long `close()` waits for the events to be sent.
    close_timeout: Duration,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.send_replace(true);
        }
        // Dropping `events` closes the queue: its sender sends what is left.
    }
}

/// One evaluation, owned (see [`Client::with_evaluation`] for one that
/// borrows and allocates nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationDetails {
    pub flag: String,
    pub enabled: bool,
    pub variant: Option<String>,
    /// The variant's payload, or `enabled` for a boolean flag; `None` when
    /// off without an off variant (use your default).
    pub value: Option<Value>,
    /// `STALE` when the client is not `Ready` (serving a copy that may be old).
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    pub flag_version: Option<u64>,
    /// The revision of the flags this was evaluated against (`None` for a flag file).
    pub revision: Option<u64>,
    /// The metadata of flag-format.md §7, as JSON.
    pub metadata: Value,
}

impl EvaluationDetails {
    fn new(ev: &Evaluation<'_>, revision: Option<u64>) -> EvaluationDetails {
        EvaluationDetails {
            flag: ev.flag.to_owned(),
            enabled: ev.enabled,
            variant: ev.variant.map(str::to_owned),
            value: ev.value.cloned(),
            reason: ev.reason,
            error_code: ev.error_code,
            flag_version: ev.flag_version,
            revision,
            metadata: serde_json::to_value(ev.metadata).unwrap_or(Value::Null),
        }
    }
}

/// Counters of the sync, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Stream connections opened.
    pub connects: u64,
    /// Documents published (snapshots and revisions applied).
    pub applied: u64,
    /// Whole documents taken (stream snapshots, fetched or polled documents).
    pub snapshots: u64,
    /// Messages dropped as stale or duplicate.
    pub dropped: u64,
    /// Revision gaps detected (each filled from `changes?since=`).
    pub gaps: u64,
    /// Whole documents fetched (410 past the horizon, or no base to apply to).
    pub full_fetches: u64,
    /// Documents taken although older than the one held: the server said it
    /// never reached the client's revision (409 `revision_ahead`: restored
    /// from a backup, or another server).
    pub resets: u64,
    pub polls: u64,
    /// Streams found dead (silent past two heartbeats).
    pub dead_streams: u64,
}

impl Client {
    /// A client that follows the server at `server_url` (`http://host:port`)
    /// with an sdk token.
    pub fn builder(server_url: &str, sdk_token: &str) -> ClientBuilder {
        ClientBuilder::new(server_url, sdk_token)
    }

    /// A client over a flag file (JSON, or YAML for `.yaml`/`.yml`), with no
    /// server: for tests and offline use. It is `Ready` and records no events.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let doc = offline::read_document(path.as_ref())?;
        Client::from_document(doc, &path.as_ref().display().to_string())
    }

    /// A client over flags in memory, with no server.
    pub fn from_flags(file: guidon_engine::FlagFile) -> Result<Client, ClientError> {
        Client::from_document(
            Document {
                file,
                ..Document::default()
            },
            "flags",
        )
    }

    fn from_document(doc: Document, origin: &str) -> Result<Client, ClientError> {
        let snapshot = doc.compile().map_err(|e| ClientError::Invalid {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let shared = Shared::new(
            Published::new(Arc::new(doc), Arc::new(snapshot)),
            Status::Ready,
        );
        Ok(Client {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                events: None,
                counters: None,
                stop: None,
                tasks: Mutex::new(Vec::new()),
                close_timeout: Duration::ZERO,
            }),
        })
    }

    /// Evaluates `key` for `ctx` now and hands the result to `f`. Allocates
    /// nothing, except for a flag's weight split, where the unit is read to
    /// record (or deduplicate) the exposure. The reason is `STALE` when the
    /// client is not `Ready`.
    #[inline]
    pub fn with_evaluation<R>(
        &self,
        key: &str,
        ctx: &Context,
        f: impl FnOnce(&Evaluation<'_>) -> R,
    ) -> R {
        self.with_evaluation_at(key, ctx, Timestamp::now(), f)
    }

    /// [`Client::with_evaluation`] at a given time.
    pub fn with_evaluation_at<R>(
        &self,
        key: &str,
        ctx: &Context,
        now: Timestamp,
        f: impl FnOnce(&Evaluation<'_>) -> R,
    ) -> R {
        self.evaluate_in(key, ctx, now, |ev, _| f(ev))
    }

    /// Evaluates against one loaded copy of the flags, which `f` sees too.
    #[inline]
    fn evaluate_in<R>(
        &self,
        key: &str,
        ctx: &Context,
        now: Timestamp,
        f: impl FnOnce(&Evaluation<'_>, &Published) -> R,
    ) -> R {
        let shared = &self.inner.shared;
        let current = shared.current.load();
        let mut ev = current.snapshot.evaluate(key, ctx, now);
        if ev.metadata.in_experiment {
            self.expose(&current, &ev, ctx);
        }
        if ev.reason != Reason::Error && shared.serving_stale() {
            ev.reason = Reason::Stale;
        }
        f(&ev, &current)
    }

    #[cold]
    fn expose(&self, current: &Published, ev: &Evaluation<'_>, ctx: &Context) {
        let (Some(events), Some(variant)) = (&self.inner.events, ev.variant) else {
            return;
        };
        // The unit exactly as the engine (and the server's attribution) reads it.
        if let Some(unit) = current.snapshot.bucketing_value(ev.flag, ctx) {
            events.exposure(ev.flag, variant, &unit, ctx);
        }
    }

    /// The full result, owned.
    pub fn evaluate(&self, key: &str, ctx: &Context) -> EvaluationDetails {
        self.evaluate_in(key, ctx, Timestamp::now(), |ev, current| {
            EvaluationDetails::new(ev, current.document.revision)
        })
    }

    /// Whether the flag is on for `ctx` (`false` for an unknown flag).
    pub fn is_enabled(&self, key: &str, ctx: &Context) -> bool {
        self.with_evaluation(key, ctx, |ev| ev.enabled)
    }

    /// The variant served, if any.
    pub fn variant(&self, key: &str, ctx: &Context) -> Option<String> {
        self.with_evaluation(key, ctx, |ev| ev.variant.map(str::to_owned))
    }

    /// The value as a bool (a boolean flag's value is `enabled`), else `default`.
    pub fn bool_value(&self, key: &str, ctx: &Context, default: bool) -> bool {
        self.with_evaluation(key, ctx, |ev| {
            ev.value.and_then(Value::as_bool).unwrap_or(default)
        })
    }

    /// The value as a string, else `default`.
    pub fn string_value(&self, key: &str, ctx: &Context, default: &str) -> String {
        self.with_evaluation(key, ctx, |ev| {
            ev.value
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        })
    }

    /// The value as a number, else `default`.
    pub fn number_value(&self, key: &str, ctx: &Context, default: f64) -> f64 {
        self.with_evaluation(key, ctx, |ev| {
            ev.value.and_then(Value::as_f64).unwrap_or(default)
        })
    }

    /// The value (any JSON), else `default` (when off without an off
    /// variant, or the flag is unknown).
    pub fn json_value(&self, key: &str, ctx: &Context, default: Value) -> Value {
        self.with_evaluation(key, ctx, |ev| match ev.value {
            Some(v) if ev.error_code.is_none() => v.clone(),
            _ => default,
        })
    }

    /// Every flag for `ctx`, all from one revision.
    pub fn all(&self, ctx: &Context) -> Vec<EvaluationDetails> {
        let shared = &self.inner.shared;
        let current = shared.current.load();
        let revision = current.document.revision;
        let now = Timestamp::now();
        let stale = shared.serving_stale();
        current
            .snapshot
            .evaluate_all(ctx, now)
            .iter()
            .map(|ev| {
                if ev.metadata.in_experiment {
                    self.expose(&current, ev, ctx);
                }
                let mut d = EvaluationDetails::new(ev, revision);
                if stale && d.reason != Reason::Error {
                    d.reason = Reason::Stale;
                }
                d
            })
            .collect()
    }

    /// Records a conversion for the unit in `ctx` (an experiment's metric,
    /// such as `purchase`), with an optional value. Never blocks.
    pub fn track(&self, metric: &str, ctx: &Context, value: Option<f64>) {
        if let Some(events) = &self.inner.events {
            events.conversion(metric, ctx, value);
        }
    }

    /// Sends the queued events now and waits for the server's answer.
    pub async fn flush(&self) -> Result<(), ClientError> {
        match &self.inner.events {
            Some(events) => events.flush().await,
            None => Ok(()),
        }
    }

    /// What happened to events so far.
    pub fn event_stats(&self) -> EventStats {
        self.inner
            .events
            .as_ref()
            .map(|e| e.counters.stats())
            .unwrap_or_default()
    }

    /// What the sync did so far.
    pub fn sync_stats(&self) -> SyncStats {
        let Some(c) = &self.inner.counters else {
            return SyncStats::default();
        };
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        SyncStats {
            connects: get(&c.connects),
            applied: get(&c.applied),
            snapshots: get(&c.snapshots),
            dropped: get(&c.dropped),
            gaps: get(&c.gaps),
            full_fetches: get(&c.full_fetches),
            resets: get(&c.resets),
            polls: get(&c.polls),
            dead_streams: get(&c.dead_streams),
        }
    }

    pub fn status(&self) -> Status {
        self.inner.shared.status()
    }

    /// Why the client last went into [`Status::Error`]: the server's
    /// refusal, or what it sent that this SDK cannot use (a newer protocol
    /// says to upgrade the SDK). Kept after the client recovers.
    pub fn last_error(&self) -> Option<String> {
        self.inner.shared.last_error()
    }

    /// The status, to watch (`changed().await`).
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.shared.watch_status()
    }

    /// Waits until the client is `Ready`, up to `timeout`; whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.watch_status();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == Status::Ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The server revision of the flags held (`None` before the server
    /// answered, or for a flag file).
    pub fn revision(&self) -> Option<u64> {
        self.inner.shared.current.load().document.revision
    }

    /// The flags held, as the server's document.
    pub fn document(&self) -> Arc<Document> {
        self.inner.shared.current.load().document.clone()
    }

    /// Calls `listener` with the keys of the flags whose results may have
    /// changed (redefined, added, removed, or depending on a changed segment
    /// or prerequisite), after each change is applied. Runs on the sync
    /// task: keep it short.
    pub fn on_change(&self, listener: impl Fn(&[String]) + Send + Sync + 'static) {
        self.inner.shared.on_change(Arc::new(listener));
    }

    /// Calls `listener` with each new status.
    pub fn on_status(&self, listener: impl Fn(Status) + Send + Sync + 'static) {
        self.inner.shared.on_status(Arc::new(listener));
    }

    /// Stops following the server, sends the queued events (waiting at most
    /// the connect plus request timeouts) and saves the snapshot. Other
    /// clones stop too.
    pub async fn close(&self) -> Result<(), ClientError> {
        let flushed = match tokio::time::timeout(self.inner.close_timeout, self.flush()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Transport(
                "events not sent before the close timeout".into(),
            )),
        };
        if let Some(stop) = &self.inner.stop {
            stop.send_replace(true);
        }
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        flushed
    }
}
