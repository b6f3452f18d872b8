//! The accept loop: hyper's HTTP/1 connections, bounded so that no client
//! (without a token, or with one) can hold the server.
//!
//! - At most [`ConnLimits::max_connections`] connections are open at once
//!   (WebSockets included: the permit lives in the socket); past it a new
//!   connection is closed at once, with a rate-limited warning.
//! - A request's headers must arrive within [`ConnLimits::header_timeout`]
//!   of the connection starting to wait for them: on a new connection, and
//!   on a kept-alive one after its last response (hyper's header read
//!   timer), so it is the idle timeout too. The first request's head is
//!   read by [`crate::raw_stream`] (an SSE stream request is served there,
//!   without hyper); a first head that is not one is handed to hyper as
//!   soon as that shows, and hyper's timer then starts afresh.
//! - A request's whole body must arrive within
//!   [`ConnLimits::body_timeout`] of the handler starting to read it
//!   ([`deadline_body`]): a trickled body is cut with a 408.
//! - A write the client does not take within [`ConnLimits::write_timeout`]
//!   fails and closes the connection ([`ConnIo`]): a stream client that
//!   stopped reading holds at most its kernel send buffer and one message.
//! - Each accepted socket's kernel send buffer is capped at
//!   [`ConnLimits::send_buffer`] (`SO_SNDBUF`), instead of the kernel's
//!   autotuning up to `net.ipv4.tcp_wmem`'s maximum (4 MiB by default):
//!   what a stuck stream client can make the kernel hold is bounded too.
//! - With TLS ([`crate::tls`]), the handshake must end within
//!   [`ConnLimits::header_timeout`] of the connection opening (so a
//!   silent client holds no slot longer over HTTPS than over HTTP), and
//!   then the header timeout runs as above. A connection whose first byte
//!   is not a TLS handshake (plain HTTP to the HTTPS port) gets a JSON 400
//!   saying so, in plain text, and is closed.
//!
//! Graceful shutdown: the loop stops accepting, each connection finishes
//! its request and closes, and the loop returns once every connection
//! (and upgraded WebSocket) is gone.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::raw_stream::{self, First, Prefixed};
use crate::shutdown::Shutdown;
use crate::tls::Tls;

/// The bounds of every connection (`guidon serve --max-connections`,
/// `--header-timeout-secs`, `--body-timeout-secs`, `--write-timeout-secs`,
/// `--send-buffer-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    /// `SO_SNDBUF` of each accepted socket; `None` leaves the kernel's
    /// autotuning. Linux doubles the value for its bookkeeping, so a
    /// socket holds at most about twice this in unsent data.
    pub send_buffer: Option<usize>,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            send_buffer: Some(DEFAULT_SEND_BUFFER),
        }
    }
}

/// The default [`ConnLimits::send_buffer`]: ample for a flag document on
/// a LAN, and what bounds a stuck client's kernel memory.
pub const DEFAULT_SEND_BUFFER: usize = 256 * 1024;

/// hyper's own bound on a request head: past it hyper itself answers 431
/// (with no body). Under it, the router answers a JSON 431 past
/// [`MAX_HEADER_BYTES`]. hyper parses at most [`MAX_HEADERS`] headers, its
/// default, in arrays on the stack (a larger `max_headers` allocates two
/// arrays of that many entries for every request); past them a
/// connection's first request gets the JSON 431 from
/// [`raw_stream::read_first`], a later one hyper's bare 431.
const HEAD_BUFFER: usize = 256 * 1024;
/// The largest request head answered (request line and headers).
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most headers in a request.
pub(crate) const MAX_HEADERS: usize = 100;

/// How often the connection-limit and accept-error warnings may be logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Raises the open-file soft limit to the hard limit (each connection is a
/// file descriptor) and logs both. The limits after, if they can be read.
pub(crate) fn raise_open_file_limit() -> Option<(u64, u64)> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let hard = rlimit::Resource::NOFILE
                .get()
                .map_or(soft, |(_, hard)| hard);
            tracing::info!(soft, hard, "open-file limit");
            Some((soft, hard))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`,
/// then waits for every connection to close.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<Arc<Tls>>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let mut full = RateLimited::default();
    let mut failing = RateLimited::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: nothing to do but wait a
                // little (a busy loop would not help).
                if let Some(missed) = failing.note() {
                    tracing::warn!(error = %e, missed, "cannot accept connections");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(refused) = full.note() {
                tracing::warn!(
                    max_connections = max,
                    refused,
                    "connection limit reached: closing new connections (raise --max-connections, or the open-file limit)"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(bytes) = limits.send_buffer
            && let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes)
        {
            tracing::debug!(error = %e, bytes, "cannot set the socket's send buffer");
        }
        match &tls {
            Some(tls) => {
                tokio::spawn(serve_tls(
                    stream,
                    permit,
                    tls.clone(),
                    app.clone(),
                    peer,
                    limits,
                    shutdown.clone(),
                ));
            }
            None => {
                let io = ConnIo::new(stream, permit, limits.write_timeout);
                tokio::spawn(serve_connection(
                    io,
                    app.clone(),
                    peer,
                    limits,
                    shutdown.clone(),
                ));
            }
        }
    }
    drop(listener);
    // Every permit back: every connection (and WebSocket) has closed.
    let _ = permits
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What plain HTTP to the HTTPS port is answered (then the connection closes).
const PLAIN_HTTP_REFUSAL: &str =
    "{\"error\":\"bad_request\",\"message\":\"this port speaks HTTPS: use https://\"}";

/// One connection over TLS: the handshake within the header timeout
/// (with the certificate current when it starts), then HTTP as
/// [`serve_connection`].
async fn serve_tls(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    tls: Arc<Tls>,
    app: Router,
    peer: SocketAddr,
    limits: ConnLimits,
    shutdown: Shutdown,
) {
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let mut first = [0_u8; 1];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
        () = shutdown.wait() => return,
    };
    match peeked {
        Err(_) => {
            tracing::debug!("no TLS handshake within the header timeout: closed");
            return;
        }
        Ok(Err(_) | Ok(0)) => return,
        Ok(Ok(_)) if first[0] != TLS_HANDSHAKE => {
            refuse_plain_http(stream, deadline, limits.write_timeout).await;
            return;
        }
        Ok(Ok(_)) => {}
    }
    let io = ConnIo::new(stream, permit, limits.write_timeout);
    let accept = tokio_rustls::TlsAcceptor::from(tls.current()).accept(io);
    let accepted = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, accept) => accepted,
        () = shutdown.wait() => return,
    };
    match accepted {
        Ok(Ok(stream)) => serve_connection(stream, app, peer, limits, shutdown).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake not done within the header timeout: closed"),
    }
}

/// Answers plain HTTP on the HTTPS port with a JSON 400, then closes,
/// reading what the client sent until it closes too (so the answer is not
/// lost to a reset), until `deadline` at most.
async fn refuse_plain_http(
    mut stream: TcpStream,
    deadline: tokio::time::Instant,
    write_timeout: Duration,
) {
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_REFUSAL}",
        PLAIN_HTTP_REFUSAL.len()
    );
    let written = tokio::time::timeout(write_timeout, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let mut sink = [0_u8; 4096];
    let _ = tokio::time::timeout_at(deadline, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One HTTP/1 connection (upgradable to a WebSocket), ended gracefully on
/// shutdown.
///
/// The first request head is read here: a stream request goes to
/// [`raw_stream`]'s path, anything else to hyper with those bytes in front.
async fn serve_connection<I>(
    mut io: I,
    app: Router,
    peer: SocketAddr,
    limits: ConnLimits,
    shutdown: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = tokio::select! {
        first = tokio::time::timeout(limits.header_timeout, raw_stream::read_first(&mut io)) => first,
        () = shutdown.wait() => return,
    };
    let prefix = match first {
        Err(_) => {
            tracing::debug!("no request head within the header timeout: closed");
            return;
        }
        Ok(First::Gone) => return,
        Ok(First::TooManyHeaders) => {
            let limit = format!("{MAX_HEADERS} headers");
            let response = crate::error::ApiError::HeadersTooLarge { limit }.into_response();
            return raw_stream::answer(io, response).await;
        }
        Ok(First::Stream(mut request)) => {
            request
                .extensions_mut()
                .insert(crate::people::PeerAddr(peer));
            return raw_stream::serve(io, request, app, shutdown).await;
        }
        Ok(First::Other(prefix)) => prefix,
    };
    let io = Prefixed::new(prefix, io);
    // The peer's address on every request (the sign-in rate limit counts
    // per address).
    let service =
        tower::ServiceExt::map_request(app, move |mut request: Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(crate::people::PeerAddr(peer));
            request
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HEAD_BUFFER)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// Counts events and says when one may be logged (at most every
/// [`WARN_EVERY`]), with how many happened since the last log.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// A connection's socket: holds its connection permit, and fails a write
/// that has waited [`ConnLimits::write_timeout`] for the client to read.
pub(crate) struct ConnIo<S> {
    inner: S,
    write_timeout: Duration,
    /// Armed while a write or flush waits.
    stalled: Option<Pin<Box<Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl<S> ConnIo<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, write_timeout: Duration) -> ConnIo<S> {
        ConnIo {
            inner,
            write_timeout,
            stalled: None,
            _permit: permit,
        }
    }

    /// After a write or flush attempt: clears the timer on progress, arms
    /// it (or checks it) while the client does not read.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if attempt.is_ready() {
            self.stalled = None;
            return attempt;
        }
        let timeout = self.write_timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let attempt = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, attempt)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let attempt = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, attempt)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let attempt = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, attempt)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let attempt = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, attempt)
    }
}

/// Middleware: the request's body must arrive whole within `timeout` of
/// the first read; past it, reading fails with [`BodyTimedOut`].
pub(crate) async fn deadline_body(timeout: Duration, req: Request, next: Next) -> Response {
    let req = req.map(|body| {
        Body::new(Deadline {
            inner: body,
            timeout,
            started: None,
            sleep: None,
        })
    });
    next.run(req).await
}

/// The error a body read gives past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimedOut(pub(crate) Duration);

struct Deadline {
    inner: Body,
    timeout: Duration,
    /// The first read.
    started: Option<tokio::time::Instant>,
    /// Armed once a read has to wait (a body that has arrived with its
    /// head, the usual case, costs no timer).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        let timeout = self.timeout;
        let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
        if let Some(sleep) = self.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.is_none() {
            let mut sleep = Box::pin(tokio::time::sleep_until(started + timeout));
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))));
            }
            self.sleep = Some(sleep);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
