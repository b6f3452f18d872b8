//! Opening a live stream (SSE or WebSocket) and reading it as one kind of
//! item: a JSON message, or a sign of life (an SSE comment, a WebSocket
//! ping). Requests to the server (document, catch-up, events) live here too.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use guidon_protocol::sse::{Item, SseParser};
use guidon_protocol::{Event, StreamMessage};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::error::SyncError;

/// What a live stream yields: a message, or `None` for a heartbeat or any
/// other sign that the connection is alive.
pub(crate) type LiveStream =
    Pin<Box<dyn Stream<Item = Result<Option<StreamMessage>, SyncError>> + Send>>;

fn decode(text: &str) -> Result<Option<StreamMessage>, SyncError> {
    Ok(Some(StreamMessage::from_json(text)?))
}

/// How the client reaches the server.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `http://host:port`, without a trailing slash.
    pub(crate) base: String,
    pub(crate) token: String,
    /// `X-Guidon-Environment`, for admin tokens.
    pub(crate) environment: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    /// The TLS trust of every connection (the HTTP client has the same);
    /// `None` for an `http://` server. Read by the WebSocket transport
    /// (`wss://`); without that feature only the HTTP client uses it.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    pub(crate) fn headers(&self) -> Result<HeaderMap, SyncError> {
        let mut headers = HeaderMap::new();
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|e| SyncError::Connect(format!("token is not a valid header: {e}")))?;
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        if let Some(env) = &self.environment {
            let v = HeaderValue::from_str(env)
                .map_err(|e| SyncError::Connect(format!("environment header: {e}")))?;
            headers.insert("x-guidon-environment", v);
        }
        Ok(headers)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A non-success answer as an error, with (the start of) its body.
pub(crate) async fn refuse(response: reqwest::Response) -> SyncError {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(500).collect();
    SyncError::Status { status, body }
}

/// `GET /api/v1/sdk/stream[?since=N]` as a stream of items.
pub(crate) async fn open_sse(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    since: Option<u64>,
) -> Result<LiveStream, SyncError> {
    let mut url = endpoint.url("/api/v1/sdk/stream");
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    let request = http
        .get(url)
        .headers(endpoint.headers()?)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send();
    let response =
        tokio::time::timeout(endpoint.connect_timeout + endpoint.request_timeout, request)
            .await
            .map_err(|_| SyncError::Connect("timed out opening the stream".into()))?
            .map_err(|e| connect_failed(&e))?;
    if response.status() != StatusCode::OK {
        return Err(refuse(response).await);
    }
    let parser = SseParser::new(endpoint.max_message_bytes);
    let bytes = response.bytes_stream();
    let state = (
        bytes,
        parser,
        std::collections::VecDeque::<Result<Option<StreamMessage>, SyncError>>::new(),
        false,
    );
    let stream = futures_util::stream::unfold(
        state,
        |(mut bytes, mut parser, mut queue, mut done)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    done |= item.is_err();
                    return Some((item, (bytes, parser, queue, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    None => return None,
                    Some(Err(e)) => {
                        done = true;
                        return Some((
                            Err(SyncError::Read(error_chain(&e))),
                            (bytes, parser, queue, done),
                        ));
                    }
                    Some(Ok(chunk)) => {
                        let mut items = Vec::new();
                        if let Err(e) = parser.feed(&chunk, &mut items) {
                            done = true;
                            return Some((
                                Err(SyncError::Read(e.to_string())),
                                (bytes, parser, queue, done),
                            ));
                        }
                        if items.is_empty() {
                            // Part of an event: the connection is alive.
                            queue.push_back(Ok(None));
                        }
                        for item in items {
                            queue.push_back(match item {
                                Item::Event(e)
                                    if e.event == Event::Snapshot.name()
                                        || e.event == Event::Update.name() =>
                                {
                                    decode(&e.data)
                                }
                                Item::Comment | Item::Event(_) => Ok(None),
                            });
                        }
                    }
                }
            }
        },
    );
    Ok(Box::pin(stream))
}

/// `GET /api/v1/sdk/ws[?since=N]` (WebSocket) as a stream of items.
#[cfg(feature = "websocket")]
pub(crate) async fn open_ws(
    endpoint: &Endpoint,
    since: Option<u64>,
) -> Result<LiveStream, SyncError> {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let base = if let Some(rest) = endpoint.base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = endpoint.base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        return Err(SyncError::Connect(
            "WebSocket needs an http:// or https:// server URL".into(),
        ));
    };
    let mut url = format!("{base}/api/v1/sdk/ws");
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    let mut request = url
        .into_client_request()
        .map_err(|e| SyncError::Connect(e.to_string()))?;
    for (name, value) in &endpoint.headers()? {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(endpoint.max_message_bytes);
    config.max_frame_size = Some(endpoint.max_message_bytes);
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        false,
        endpoint
            .tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls),
    );
    let (socket, _) =
        tokio::time::timeout(endpoint.connect_timeout + endpoint.request_timeout, connect)
            .await
            .map_err(|_| SyncError::Connect("timed out opening the WebSocket".into()))?
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => SyncError::Status {
                    status: response.status().as_u16(),
                    body: response
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).chars().take(500).collect())
                        .unwrap_or_default(),
                },
                other => connect_failed(&other),
            })?;
    // Pongs to the server's pings are sent by the library while it reads.
    let stream = socket.filter_map(|message| async move {
        match message {
            Ok(Message::Text(text)) => Some(decode(&text)),
            Ok(Message::Close(_)) => Some(Err(SyncError::Ended)),
            Ok(_) => Some(Ok(None)),
            Err(e) => Some(Err(SyncError::Read(e.to_string()))),
        }
    });
    // End after the first error or close.
    let stream = stream.scan(false, |ended, item| {
        let out = if *ended { None } else { Some(item) };
        if matches!(out, Some(Err(_))) {
            *ended = true;
        }
        futures_util::future::ready(out)
    });
    Ok(Box::pin(stream))
}

/// Why a connection failed: a refused certificate said as such, else the
/// error with its sources.
pub(crate) fn connect_failed(e: &(dyn std::error::Error + 'static)) -> SyncError {
    match crate::tls::certificate_refused(e) {
        Some(reason) => SyncError::Certificate(reason),
        None => SyncError::Connect(error_chain(e)),
    }
}

/// The error with its sources, for logs ("error sending request: connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
