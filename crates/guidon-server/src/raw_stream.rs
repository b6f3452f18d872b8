//! The SSE stream's own path: a connection whose first request is
//! `GET /api/v1/sdk/stream` is served without a hyper connection.
//!
//! A hyper HTTP/1 connection keeps a read buffer (≈ 16 KiB once touched)
//! and a write buffer (8 KiB) for as long as it lives, and an SSE stream
//! lives for hours while it only ever writes. So the listener reads a
//! connection's first request head itself ([`read_first`]): when it is a
//! stream request it can serve here, the head is parsed (`httparse`, the
//! parser hyper uses), run through the same router (authentication, CORS,
//! metrics, the handler) as any other request, and the handler hands the
//! stream over ([`Handoff`]) instead of answering with a body. This path
//! then writes the response head and the chunked body itself ([`serve`]):
//! each message is one `write` of a frame encoded once for every client
//! ([`FrameCache`]), a heartbeat comment every heartbeat, and the
//! connection is watched for the client closing it. Nothing else is kept
//! per connection but the socket, the task and the stream's own state.
//!
//! Anything else (another path, HTTP/1.0, a body, pipelined bytes, a head
//! it cannot parse, one past the size bounds) goes to hyper with the bytes
//! already read in front ([`Prefixed`]), and is served exactly as before;
//! so is a stream requested later on a kept-alive connection. One
//! exception: a first head with more than [`MAX_HEADERS`] headers gets the
//! JSON 431 here (hyper parses at most that many, on its stack; past them
//! its own 431 has no body).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Version, header};
use axum::response::Response;
use futures_util::stream::{Stream, StreamExt as _};
use guidon_protocol::Encoded;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tower::ServiceExt as _;

use crate::listener::{MAX_HEADER_BYTES, MAX_HEADERS};
use crate::shutdown::Shutdown;

/// The path served here.
const STREAM_PATH: &str = "/api/v1/sdk/stream";
/// What a stream request starts with.
const STREAM_PREFIX: &[u8] = b"GET /api/v1/sdk/stream";
/// The first read's buffer; a head may grow it to [`MAX_HEADER_BYTES`].
const FIRST_READ: usize = 4096;
/// The heartbeat comment, as a chunk.
const HEARTBEAT: &[u8] = b"d\r\n: heartbeat\n\n\r\n";
/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The largest response body (an error's JSON) written here.
const MAX_ANSWER: usize = 64 * 1024;

/// A connection's first request, as read by the listener.
pub(crate) enum First {
    /// A stream request this path serves.
    Stream(Box<Request<Body>>),
    /// A head of more than [`MAX_HEADERS`] headers: answered here with the
    /// JSON 431 (hyper's own 431 has no body).
    TooManyHeaders,
    /// Anything else: the bytes read so far, for hyper.
    Other(Vec<u8>),
    /// The client closed (or the read failed) before sending a request.
    Gone,
}

/// Reads until the first request head is whole or is clearly not a
/// stream request. The caller bounds it in time.
pub(crate) async fn read_first<I: AsyncRead + Unpin>(io: &mut I) -> First {
    let mut buf = Vec::with_capacity(FIRST_READ);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return First::Gone,
            Ok(_) => {}
        }
        let n = buf.len().min(STREAM_PREFIX.len());
        let stream = buf[..n] == STREAM_PREFIX[..n]
            && buf
                .get(STREAM_PREFIX.len())
                .is_none_or(|next| matches!(next, b' ' | b'?'));
        if !stream || buf.len() > MAX_HEADER_BYTES {
            return other(buf);
        }
        match parse(&buf) {
            Parsed::Partial => {}
            Parsed::Stream(request) => return First::Stream(request),
            Parsed::Other => return other(buf),
        }
    }
}

/// Not a stream request: hyper's, unless what was read already has too
/// many headers.
fn other(buf: Vec<u8>) -> First {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(&buf) {
        Err(httparse::Error::TooManyHeaders) => First::TooManyHeaders,
        _ => First::Other(buf),
    }
}

enum Parsed {
    Partial,
    Stream(Box<Request<Body>>),
    Other,
}

/// A whole head that is a plain HTTP/1.1 GET of the stream, with nothing
/// after it, becomes a request for the router; anything else is hyper's.
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Parsed::Other,
    };
    let path = head.path.unwrap_or_default();
    let ours = head.method == Some("GET")
        && head.version == Some(1)
        && len == buf.len()
        && (path == STREAM_PATH || path.starts_with("/api/v1/sdk/stream?"));
    if !ours {
        return Parsed::Other;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    match path.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return Parsed::Other,
    }
    for h in head.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Other;
        };
        // A body, or a protocol change, is hyper's to handle.
        if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
            || (name == header::CONTENT_LENGTH && value != "0")
        {
            return Parsed::Other;
        }
        request.headers_mut().append(name, value);
    }
    request.extensions_mut().insert(RawStream);
    Parsed::Stream(Box::new(request))
}

/// Marks a request that came through this path: its handler may answer
/// with a [`Handoff`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawStream;

/// A stream handed over by its handler (in the response's extensions):
/// the messages to send, encoded through the environment's cache.
#[derive(Clone)]
pub(crate) struct Handoff(Arc<Mutex<Option<Handed>>>);

struct Handed {
    messages: Pin<Box<dyn Stream<Item = Arc<Encoded>> + Send>>,
    frames: Arc<FrameCache>,
    heartbeat: Duration,
}

impl Handoff {
    pub(crate) fn new(
        messages: impl Stream<Item = Arc<Encoded>> + Send + 'static,
        frames: Arc<FrameCache>,
        heartbeat: Duration,
    ) -> Handoff {
        Handoff(Arc::new(Mutex::new(Some(Handed {
            messages: Box::pin(messages),
            frames,
            heartbeat,
        }))))
    }

    fn take(&self) -> Option<Handed> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The SSE frame (as an HTTP/1.1 chunk) of the last message sent, so that
/// every client of the environment is sent the same bytes, encoded once.
/// A message is known by its JSON's allocation (shared by every client's
/// copy); the weak reference keeps that address from being reused.
#[derive(Debug, Default)]
pub(crate) struct FrameCache {
    last: Mutex<Option<Cached>>,
}

/// A message (its JSON's allocation, revision and kind) and its frame.
type Cached = (Weak<str>, u64, guidon_protocol::Event, Bytes);

impl FrameCache {
    fn frame(&self, message: &Encoded) -> Bytes {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((json, revision, event, frame)) = &*last
            && std::ptr::addr_eq(json.as_ptr(), Arc::as_ptr(&message.json))
            && *revision == message.revision
            && *event == message.event
        {
            return frame.clone();
        }
        let frame = encode(message);
        *last = Some((
            Arc::downgrade(&message.json),
            message.revision,
            message.event,
            frame.clone(),
        ));
        frame
    }
}

/// `event: NAME`, `id: REVISION`, one `data:` line per line of the JSON,
/// and the blank line (as axum's `Sse` writes them), as one chunk.
fn encode(message: &Encoded) -> Bytes {
    let mut event = Vec::with_capacity(message.json.len() + 64);
    event.extend_from_slice(b"event: ");
    event.extend_from_slice(message.event.name().as_bytes());
    event.extend_from_slice(b"\nid: ");
    event.extend_from_slice(message.revision.to_string().as_bytes());
    event.push(b'\n');
    for line in message.json.split('\n') {
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line.as_bytes());
        event.push(b'\n');
    }
    event.push(b'\n');
    let size = format!("{:x}\r\n", event.len());
    let mut chunk = Vec::with_capacity(size.len() + event.len() + 2);
    chunk.extend_from_slice(size.as_bytes());
    chunk.extend_from_slice(&event);
    chunk.extend_from_slice(b"\r\n");
    Bytes::from(chunk)
}

/// Serves a stream request read by [`read_first`]: runs it through the
/// router, then writes the stream the handler handed over, or the
/// handler's answer (an error) and closes.
pub(crate) async fn serve<I>(
    mut io: I,
    request: Box<Request<Body>>,
    app: Router,
    shutdown: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(response) = app.oneshot(*request).await;
    let (mut parts, body) = response.into_parts();
    let handed = parts.extensions.remove::<Handoff>().and_then(|h| h.take());
    match handed {
        Some(stream) if parts.status == StatusCode::OK => {
            let head = head(&parts, None);
            drop(parts);
            drop(body);
            if io.write_all(&head).await.is_ok() {
                drop(head);
                let _ = run(&mut io, stream, &shutdown).await;
            }
        }
        _ => return answer(io, Response::from_parts(parts, body)).await,
    }
    let _ = io.shutdown().await;
}

/// Writes `response` (an error's, small) and closes the connection.
pub(crate) async fn answer<I: AsyncWrite + Unpin>(mut io: I, response: Response) {
    let (parts, body) = response.into_parts();
    if let Ok(body) = axum::body::to_bytes(body, MAX_ANSWER).await {
        let mut answer = head(&parts, Some(body.len()));
        answer.extend_from_slice(&body);
        let _ = io.write_all(&answer).await;
    }
    let _ = io.shutdown().await;
}

/// A response head: the status, the handler's and middleware's headers,
/// and either a chunked body or (an answer) its length and `close`.
fn head(parts: &axum::http::response::Parts, length: Option<usize>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        Some(n) => {
            head.extend_from_slice(
                format!("content-length: {n}\r\nconnection: close\r\n\r\n").as_bytes(),
            );
        }
    }
    head
}

/// The stream's messages and heartbeats, until the messages end (lag,
/// revocation, shutdown: then the body is ended), the client closes, or a
/// write fails (the write timeout of [`crate::listener`]'s socket).
async fn run<I>(io: &mut I, stream: Handed, shutdown: &Shutdown) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Handed {
        mut messages,
        frames,
        heartbeat,
    } = stream;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sink = [0_u8; 64];
    loop {
        tokio::select! {
            biased;
            next = messages.next() => match next {
                Some(message) => io.write_all(&frames.frame(&message)).await?,
                None => break,
            },
            _ = beat.tick() => io.write_all(HEARTBEAT).await?,
            // A client sends nothing on a stream: what it sends is read
            // and dropped, and its close ends the stream.
            read = io.read(&mut sink) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
            () = shutdown.wait() => break,
        }
    }
    io.write_all(LAST_CHUNK).await
}

/// A connection's socket with the bytes [`read_first`] took from it put
/// back in front, for hyper.
pub(crate) struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    pub(crate) fn new(prefix: Vec<u8>, inner: I) -> Prefixed<I> {
        Prefixed {
            prefix: Bytes::from(prefix),
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            if self.prefix.is_empty() {
                // Let the buffer go.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guidon_protocol::Event;

    fn message(revision: u64, json: &str) -> Encoded {
        Encoded {
            event: Event::Update,
            revision,
            json: Arc::from(json),
        }
    }

    #[test]
    fn a_frame_is_one_chunk_of_an_sse_event() {
        let frame = encode(&message(7, "{\"a\":1}"));
        let text = std::str::from_utf8(&frame).expect("UTF-8");
        let event = "event: update\nid: 7\ndata: {\"a\":1}\n\n";
        assert_eq!(text, format!("{:x}\r\n{event}\r\n", event.len()));
        // Lines of the data are data lines each.
        let frame = encode(&message(8, "a\nb"));
        assert!(
            std::str::from_utf8(&frame)
                .expect("UTF-8")
                .contains("data: a\ndata: b\n\n")
        );
    }

    #[test]
    fn the_cache_reuses_a_frame_for_the_same_message_only() {
        let cache = FrameCache::default();
        let a = message(1, "{}");
        let first = cache.frame(&a);
        let again = cache.frame(&a.clone());
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes");
        // Equal text in another allocation is another message.
        let b = message(1, "{}");
        let other = cache.frame(&b);
        assert_ne!(first.as_ptr(), other.as_ptr());
        assert_eq!(first, other);
    }

    #[test]
    fn only_a_whole_plain_stream_get_is_taken() {
        let ok = b"GET /api/v1/sdk/stream?since=3 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\n\r\n";
        let Parsed::Stream(request) = parse(ok) else {
            panic!("a stream request")
        };
        assert_eq!(request.uri().query(), Some("since=3"));
        assert_eq!(request.headers()["authorization"], "Bearer t");
        assert!(matches!(
            parse(b"GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\n"),
            Parsed::Partial
        ));
        for other in [
            &b"GET /api/v1/sdk/stream HTTP/1.0\r\nhost: x\r\n\r\n"[..],
            b"GET /api/v1/sdk/streamer HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET /api/v1/sdk/stream HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /api/v1/sdk/stream HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /api/v1/sdk/stream HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(other), Parsed::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
