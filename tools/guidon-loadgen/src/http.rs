//! A minimal HTTP/1.1 client over one keep-alive `TcpStream`: requests are
//! written by hand, responses read with `Content-Length` or chunked bodies.
//! It does what the benchmarks need and nothing else, so the load generator
//! spends its share of the two cores sending requests rather than in a
//! client library, and ten thousand stream clients fit in one process.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head or body accepted (a guard against a runaway peer).
const MAX_BUFFER: usize = 64 * 1024 * 1024;

/// The server's address and the `Host` header, from `http://HOST:PORT`.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
}

impl Server {
    pub(crate) fn parse(url: &str) -> Result<Server> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--server must be an http:// URL, got {url:?}"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("--server must be a base URL such as http://127.0.0.1:8080, got {url:?}");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority:?}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority:?} resolves to no address"))?;
        Ok(Server {
            addr,
            host: authority.to_owned(),
        })
    }

    pub(crate) async fn connect(&self) -> Result<Conn> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(Conn::new(stream))
    }

    /// A request's bytes: the request line, `Host`, the given headers, and
    /// a JSON body with its length when there is one.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Vec<u8> {
        let mut out = String::with_capacity(256 + body.map_or(0, str::len));
        let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if let Some(body) = body {
            let _ = write!(
                out,
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            out.push_str("\r\n");
        }
        out.into_bytes()
    }
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The server will close the connection after this response.
    pub(crate) closes: bool,
}

/// One connection with its read buffer (`buf[start..end]` is unread).
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last response's body.
    pub(crate) body: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            body: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, request: &[u8]) -> Result<()> {
        self.stream
            .write_all(request)
            .await
            .context("writing the request")
    }

    /// Sends a request and reads the whole response; the body is in `self.body`.
    pub(crate) async fn roundtrip(&mut self, request: &[u8]) -> Result<Head> {
        self.send(request).await?;
        let head = self.read_head().await?;
        self.read_body(head).await?;
        Ok(head)
    }

    /// Reads more bytes into the buffer; an error at end of stream.
    async fn fill(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() >= MAX_BUFFER {
                bail!("response larger than {MAX_BUFFER} bytes");
            } else {
                let larger = self.buf.len() * 2;
                self.buf.resize(larger, 0);
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .context("reading the response")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.end += n;
        Ok(())
    }

    /// Gives back the buffer's spare capacity (for many idle stream clients).
    pub(crate) fn shrink(&mut self, to: usize) {
        if self.buf.len() > to && self.end - self.start <= to {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(to.max(self.end));
            self.buf.shrink_to_fit();
        }
    }

    /// The next line (without CRLF) as a range of the buffer.
    async fn read_line(&mut self) -> Result<std::ops::Range<usize>> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = self.start..self.start + i;
                self.start += i + 2;
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    /// Reads a response's status line and headers.
    pub(crate) async fn read_head(&mut self) -> Result<Head> {
        let end = loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break self.start + i;
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[self.start..end])?;
        self.start = end + 4;
        Ok(head)
    }

    /// Reads the body of a response whose head was just read into `self.body`.
    pub(crate) async fn read_body(&mut self, head: Head) -> Result<()> {
        self.body.clear();
        match head.framing {
            Framing::Length(n) => {
                if n > MAX_BUFFER {
                    bail!("response body of {n} bytes is too large");
                }
                while self.end - self.start < n {
                    self.fill().await?;
                }
                self.body
                    .extend_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
            }
            Framing::Chunked => {
                let mut body = std::mem::take(&mut self.body);
                let result = async {
                    while self.read_chunk(&mut body).await? {}
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                self.body = body;
                result?;
            }
            Framing::Close => bail!("response without length on a keep-alive request"),
        }
        Ok(())
    }

    /// Reads one chunk of a chunked body, appending its data to `out`;
    /// false after the last (empty) chunk and its trailers.
    pub(crate) async fn read_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        let line = self.read_line().await?;
        let size_text = std::str::from_utf8(&self.buf[line])
            .map_err(|_| anyhow!("chunk size line is not UTF-8"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let line = self.read_line().await?;
                if line.is_empty() {
                    return Ok(false);
                }
            }
        }
        if size > MAX_BUFFER {
            bail!("chunk of {size} bytes is too large");
        }
        while self.end - self.start < size + 2 {
            self.fill().await?;
        }
        out.extend_from_slice(&self.buf[self.start..self.start + size]);
        if &self.buf[self.start + size..self.start + size + 2] != b"\r\n" {
            bail!("chunk not followed by CRLF");
        }
        self.start += size + 2;
        Ok(true)
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| anyhow!("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut closes = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| anyhow!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            closes = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"));
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Head {
        status,
        framing,
        closes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() -> Result<()> {
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx: y")?;
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(12));
        assert!(!h.closes);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close")?;
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.closes);
        assert!(parse_head(b"SSH-2.0").is_err());
        assert!(parse_head(b"HTTP/1.1 abc").is_err());
        Ok(())
    }

    #[test]
    fn server_urls() -> Result<()> {
        let s = Server::parse("http://127.0.0.1:8080/")?;
        assert_eq!(s.addr.port(), 8080);
        assert_eq!(s.host, "127.0.0.1:8080");
        assert!(Server::parse("https://127.0.0.1:8080").is_err());
        assert!(Server::parse("http://127.0.0.1:8080/api").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn chunked_and_length_bodies() -> Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = vec![0; 1024];
            let _ = s.read(&mut buf).await?;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n")
                .await?;
            Ok::<_, std::io::Error>(())
        });
        let server_url = Server::parse(&format!("http://{addr}"))?;
        let mut conn = server_url.connect().await?;
        let req = server_url.request("GET", "/", &[], None);
        let head = conn.roundtrip(&req).await?;
        assert_eq!((head.status, conn.body.as_slice()), (200, &b"hello"[..]));
        let head = conn.roundtrip(&req).await?;
        assert_eq!((head.status, conn.body.as_slice()), (404, &b"abcde"[..]));
        server.await??;
        Ok(())
    }
}
