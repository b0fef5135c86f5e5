//! A minimal HTTP/1.1 client over one keep-alive `TcpStream`: write a
//! request, read the status line, headers, and a `Content-Length`, chunked
//! or read-to-close body. Just enough for cometbox and nginx, and cheap
//! enough that ten thousand of them fit in one load-generator process.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One parsed response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Builds a request with `Host`, and `Content-Length` when there is a body.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + path.len() + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One connection and its read buffer (bytes past the last response).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Responses read on this connection so far.
    served: u64,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    /// Connects with Nagle off (requests are small and latency is measured).
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            served: 0,
        })
    }

    /// Writes a whole request.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request).await
    }

    /// Reads more bytes into the buffer; EOF is an error.
    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if self.buf.is_empty() {
                    "connection closed before a response"
                } else {
                    "connection closed inside a response"
                },
            ));
        }
        Ok(())
    }

    /// Reads one response (204 and 304 never carry a body).
    pub async fn read_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too long"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        self.buf.drain(..head_end + 4);
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = response
            .header("content-length")
            .map(|v| v.parse::<usize>().map_err(|_| bad("bad Content-Length")))
            .transpose()?;
        if status == 204 || status == 304 || (100..200).contains(&status) {
            // No body.
        } else if chunked {
            response.body = self.read_chunked().await?;
        } else if let Some(length) = length {
            if length > MAX_BODY {
                return Err(bad("body too large"));
            }
            while self.buf.len() < length {
                self.fill().await?;
            }
            response.body = self.buf.drain(..length).collect();
        } else {
            // Delimited by close.
            loop {
                if self.buf.len() > MAX_BODY {
                    return Err(bad("body too large"));
                }
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            response.body = std::mem::take(&mut self.buf);
        }
        self.served += 1;
        Ok(response)
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(bad("chunk size line too long"));
                }
                self.fill().await?;
            };
            let line = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| bad("chunk size"))?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("chunk size"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (usually none) end with an empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                        continue;
                    }
                    self.fill().await?;
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// A keep-alive client to one address that reconnects when needed.
pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    /// Connections opened so far.
    pub connects: u64,
}

impl Client {
    /// A client that connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            conn: None,
            connects: 0,
        }
    }

    /// Opens the connection now (so the first request's timing excludes it).
    pub async fn connect(&mut self) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(self.addr).await?);
            self.connects += 1;
        }
        Ok(())
    }

    /// Whether the open connection has already carried a response (so the
    /// server may have closed it meanwhile).
    pub fn reused(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.served > 0)
    }

    /// Drops the connection (the next request opens a new one).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Writes `request`, connecting first if needed; on failure the
    /// connection is dropped.
    pub async fn send_only(&mut self, request: &[u8]) -> io::Result<()> {
        self.connect().await?;
        let conn = self.conn.as_mut().expect("connected above");
        if let Err(e) = conn.send(request).await {
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }

    /// Reads the response to a request sent with [`Client::send_only`].
    pub async fn read(&mut self) -> io::Result<Response> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no request in flight"))?;
        match conn.read_response().await {
            Ok(response) => {
                if response.wants_close() {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Sends and reads, retrying once when a reused connection turns out
    /// to be closed before any byte of the response.
    pub async fn request(&mut self, request: &[u8]) -> io::Result<Response> {
        let reused = self.reused();
        let first = async {
            self.send_only(request).await?;
            self.read().await
        }
        .await;
        match first {
            Err(e) if reused && is_stale(&e) => {
                self.conn = None;
                self.send_only(request).await?;
                self.read().await
            }
            other => other,
        }
    }
}

/// Errors that mean "the server had closed this kept-alive connection".
pub fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Self-checks run by `smoke`.
pub mod checks {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(reply).await.unwrap();
        });
        addr
    }

    pub async fn parses_length_and_chunked_bodies() {
        let addr =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nEtag: 7\r\n\r\nhello").await;
        let mut c = Client::new(addr);
        let r = c.request(&request("GET", "/", &[], b"")).await.unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.header("etag")),
            (200, &b"hello"[..], Some("7"))
        );

        let addr = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let mut c = Client::new(addr);
        let r = c.request(&request("GET", "/", &[], b"")).await.unwrap();
        assert_eq!(&r.body[..], b"abcde");
    }
}
