//! The persistent HTTP/1.1 connections to cometbox's ingest listener, one per
//! address per PHP worker, and the rules for when a request may be retried.
//!
//! A PHP worker (PHP-FPM child, mod_php process) serves one request at a
//! time, so the pool is per thread (`thread_local!`: one pool per process on
//! NTS builds, one per thread on ZTS ones) and needs no lock. A connection is
//! taken out of the pool for a request and put back only after a complete
//! reply that leaves it reusable (keep-alive, no stray bytes).
//!
//! The ingest protocol has no idempotency key (docs/protocol.md), so a
//! request is retried only when no byte of it reached the socket:
//! - before sending, an idle pooled connection is checked with a
//!   non-blocking read; end of stream (the server closed it: idle timeout,
//!   restart) or stray bytes mean it is dropped and a fresh one is opened;
//! - a write that fails before any byte is accepted on a reused connection
//!   is redone once on a fresh connection.
//!
//! Once a byte was written, a missing or broken reply is reported
//! (`timeout`, `connection-lost`: the server may have applied it), never
//! retried; php-client turns those into `Unavailable`, whose
//! `isSafeToRetry()` is false for them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Reply heads above this are refused (the server's are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Reply bodies above this are refused (`/stats` and `/channels` are the
/// largest, far below).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Where the ingest listener is.
#[derive(Clone, Debug)]
pub enum Address {
    /// `host:port` (a name is resolved, every address tried in turn).
    Tcp(String),
    /// A Unix socket path.
    Unix(String),
}

impl Address {
    /// `tcp:host:port` or `unix:/path` (what php-client's NativeTransport passes).
    pub fn parse(s: &str) -> Option<Address> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            (!rest.is_empty()).then(|| Address::Tcp(rest.to_string()))
        } else if let Some(rest) = s.strip_prefix("unix:") {
            (!rest.is_empty() && !rest.contains('\0')).then(|| Address::Unix(rest.to_string()))
        } else {
            None
        }
    }

    fn describe(&self) -> String {
        match self {
            Address::Tcp(a) => format!("http://{a}"),
            Address::Unix(p) => format!("unix:{p}"),
        }
    }
}

/// Why a request has no reply. `code()` is php-client's error code.
#[derive(Debug)]
pub enum Failure {
    /// Nothing of the request was sent (refused, no socket, connect timeout,
    /// or a write that failed before its first byte): safe to retry.
    NotSent(String),
    /// Sent, but no complete reply in time: the server may have applied it.
    Timeout(String),
    /// Sent (at least partly), then the connection broke or the reply was
    /// not HTTP: the server may have applied it.
    Lost(String),
}

impl Failure {
    pub fn code(&self) -> &'static str {
        match self {
            Failure::NotSent(_) => "connection-failed",
            Failure::Timeout(_) => "timeout",
            Failure::Lost(_) => "connection-lost",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::NotSent(m) | Failure::Timeout(m) | Failure::Lost(m) => m,
        }
    }
}

/// One request. `headers` are written as given; Content-Length is added
/// when there is a body or the method is POST.
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Option<&'a [u8]>,
}

/// One reply: header names lower-cased, repeated headers joined with ", ",
/// the body with any chunked encoding removed.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Counters of this worker since it started (`cometbox_native_stats()`).
#[derive(Default, Clone, Copy, Debug)]
pub struct Stats {
    /// Connections opened.
    pub connects: u64,
    /// Requests that got a reply.
    pub requests: u64,
    /// Of those, the ones sent on a connection kept from an earlier request.
    pub reused: u64,
    /// Idle pooled connections found closed (or holding stray bytes) before
    /// sending, replaced by a fresh one.
    pub stale_dropped: u64,
    /// Requests redone on a fresh connection after a write that failed
    /// before its first byte.
    pub resent_unwritten: u64,
    /// Requests sent whose reply never came (reported, not retried).
    pub unacknowledged: u64,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(d)),
            Stream::Unix(s) => s.set_read_timeout(Some(d)),
        }
    }

    fn set_write_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(d)),
            Stream::Unix(s) => s.set_write_timeout(Some(d)),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// True when an idle connection can carry a request: nothing to read
    /// and not closed by the peer. (A plain non-blocking read rather than a
    /// peek: UnixStream::peek is not stable, and a connection that has
    /// anything to read is dropped anyway.)
    fn idle_and_open(&mut self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let open = matches!(self.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        open && self.set_nonblocking(false).is_ok()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Conn {
    stream: Stream,
    /// The process that opened it: after a fork (pcntl_fork in a CLI
    /// script) parent and child would share the socket and read each
    /// other's replies, so a child never uses its parent's connections.
    pid: u32,
}

thread_local! {
    static POOL: RefCell<HashMap<String, Conn>> = RefCell::new(HashMap::new());
    static STATS: RefCell<Stats> = RefCell::new(Stats::default());
}

fn bump(f: impl FnOnce(&mut Stats)) {
    STATS.with(|s| f(&mut s.borrow_mut()));
}

pub fn stats() -> Stats {
    STATS.with(|s| *s.borrow())
}

/// Open connections in this worker's pool.
pub fn pooled() -> usize {
    POOL.with(|p| p.borrow().len())
}

/// Closes every pooled connection of this worker.
pub fn close_all() {
    POOL.with(|p| p.borrow_mut().clear());
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (left > Duration::from_millis(0)).then_some(left)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn connect(addr: &Address, timeout: Duration) -> Result<Conn, Failure> {
    let fail = |why: String| Failure::NotSent(format!("cannot connect to cometbox at {}: {why}", addr.describe()));
    let stream = match addr {
        Address::Unix(path) => Stream::Unix(connect_unix(path, timeout).map_err(|e| fail(e.to_string()))?),
        Address::Tcp(hostport) => {
            let candidates: Vec<_> = hostport.to_socket_addrs().map_err(|e| fail(e.to_string()))?.collect();
            let mut last = None;
            let mut found = None;
            for sa in candidates {
                match TcpStream::connect_timeout(&sa, timeout) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let s = found.ok_or_else(|| fail(last.map_or_else(|| "no address".to_string(), |e| e.to_string())))?;
            // Requests are one small write each; Nagle would hold the next
            // one until the previous reply's ACK.
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }
    };
    bump(|s| s.connects += 1);
    Ok(Conn { stream, pid: std::process::id() })
}

/// Connects to a Unix socket without blocking past `timeout`. A plain
/// blocking connect waits for as long as the listener's backlog is full
/// (a server that stopped accepting), holding the PHP worker; here the
/// connect is non-blocking: a full backlog fails at once (EAGAIN), which
/// is reported as not sent, and a connect still in progress is waited for
/// at most `timeout`.
fn connect_unix(path: impl AsRef<std::path::Path>, timeout: Duration) -> io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.connect_timeout(&SockAddr::unix(path)?, timeout)?;
    socket.set_nonblocking(false)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

/// The pooled connection for `key` if it is still usable.
fn take_pooled(key: &str) -> Option<Conn> {
    let mut conn = POOL.with(|p| p.borrow_mut().remove(key))?;
    if conn.pid == std::process::id() && conn.stream.idle_and_open() {
        return Some(conn);
    }
    if conn.pid == std::process::id() {
        bump(|s| s.stale_dropped += 1);
    } else {
        // The parent's socket: forget it without closing the parent's
        // connection (closing a shared fd here only drops our reference,
        // which is what dropping does; the parent keeps its own).
    }
    None
}

/// Bodies over this many bytes are sent with `Expect: 100-continue`, as
/// php-client's socket and curl transports do: a body over the server's
/// `max_body_bytes` gets its 413 before it is sent, rather than a reset
/// connection that may lose the reply.
const EXPECT_CONTINUE_ABOVE: usize = 65536;
/// How long to wait for `100 Continue` before sending the body anyway
/// (RFC 9110 allows it).
const EXPECT_CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// The request head (with Content-Length, and Expect when `expect`).
fn serialize_head(req: &Request<'_>, expect: bool) -> Vec<u8> {
    let body = req.body.unwrap_or(&[]);
    let mut out = Vec::with_capacity(256 + if expect { 0 } else { body.len() });
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if req.body.is_some() || req.method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if expect {
        out.extend_from_slice(b"Expect: 100-continue\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How a write ended: everything sent, or stopped after `written` bytes.
enum WriteEnd {
    Done,
    Stopped { written: usize, timed_out: bool, why: String },
}

fn write_all(stream: &mut Stream, data: &[u8], deadline: Instant) -> WriteEnd {
    let mut written = 0;
    while written < data.len() {
        let Some(left) = remaining(deadline) else {
            return WriteEnd::Stopped { written, timed_out: true, why: "timed out".into() };
        };
        let _ = stream.set_write_timeout(left);
        match stream.write(&data[written..]) {
            Ok(0) => return WriteEnd::Stopped { written, timed_out: false, why: "wrote 0 bytes".into() },
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return WriteEnd::Stopped { written, timed_out: is_timeout(&e), why: e.to_string() },
        }
    }
    WriteEnd::Done
}

/// Sends `req` to `addr` over this worker's connection for `key`, opening
/// one when there is none or the pooled one is closed.
pub fn request(key: &str, addr: &Address, req: &Request<'_>, connect_timeout: Duration, timeout: Duration) -> Result<Reply, Failure> {
    let deadline = Instant::now() + timeout;
    let connect_within = connect_timeout.min(timeout);
    let body = req.body.unwrap_or(&[]);
    let expect = body.len() > EXPECT_CONTINUE_ABOVE;
    // Small requests go out in one write (head and body together).
    let mut first = serialize_head(req, expect);
    if !expect {
        first.extend_from_slice(body);
    }
    let head_only = req.method == "HEAD";

    let (mut conn, mut reused) = match take_pooled(key) {
        Some(c) => (c, true),
        None => (connect(addr, connect_within)?, false),
    };
    loop {
        match write_all(&mut conn.stream, &first, deadline) {
            WriteEnd::Done => break,
            WriteEnd::Stopped { written: 0, .. } if reused => {
                // The server had closed the idle connection after our check
                // (or reset it): nothing of this request left, so it is sent
                // once more on a fresh connection.
                bump(|s| s.resent_unwritten += 1);
                conn = connect(addr, connect_within)?;
                reused = false;
            }
            WriteEnd::Stopped { written: 0, why, .. } => {
                return Err(Failure::NotSent(format!(
                    "could not send the request to cometbox at {}: {why}",
                    addr.describe()
                )));
            }
            end => return finish_broken_write(&mut conn, addr, head_only, deadline, timeout, end),
        }
    }
    let mut early = Vec::new();
    let mut refused = false;
    if expect {
        match await_continue(&mut conn.stream, deadline) {
            Ok(Continue::SendBody) => {
                let end = write_all(&mut conn.stream, body, deadline);
                if !matches!(end, WriteEnd::Done) {
                    return finish_broken_write(&mut conn, addr, head_only, deadline, timeout, end);
                }
            }
            // A final reply instead (413): the body is not sent, and the
            // connection, now out of step, is not kept.
            Ok(Continue::Refused(bytes)) => {
                early = bytes;
                refused = true;
            }
            Err(e) => return Err(read_failure(addr, timeout, reused, e)),
        }
    }
    match read_reply(&mut conn.stream, head_only, deadline, early) {
        Ok((reply, keep)) => {
            bump(|s| {
                s.requests += 1;
                if reused {
                    s.reused += 1;
                }
            });
            if keep && !refused {
                POOL.with(|p| p.borrow_mut().insert(key.to_string(), conn));
            }
            Ok(reply)
        }
        Err(e) => Err(read_failure(addr, timeout, reused, e)),
    }
}

/// After a write that stopped part-way: a timeout is reported; a broken
/// pipe may follow a reply the server sent before reading everything (413
/// for a body over its limit), which is read if it is there.
fn finish_broken_write(conn: &mut Conn, addr: &Address, head_only: bool, deadline: Instant, timeout: Duration, end: WriteEnd) -> Result<Reply, Failure> {
    let WriteEnd::Stopped { timed_out, why, .. } = end else { unreachable!("only a stopped write is finished here") };
    if timed_out {
        bump(|s| s.unacknowledged += 1);
        return Err(timeout_failure(addr, timeout));
    }
    match read_reply(&mut conn.stream, head_only, deadline, Vec::new()) {
        Ok((reply, _)) => {
            bump(|s| s.requests += 1);
            Ok(reply)
        }
        Err(_) => {
            bump(|s| s.unacknowledged += 1);
            Err(Failure::Lost(format!(
                "connection to cometbox at {} lost while sending the request: {why}",
                addr.describe()
            )))
        }
    }
}

fn read_failure(addr: &Address, timeout: Duration, reused: bool, e: ReadError) -> Failure {
    bump(|s| s.unacknowledged += 1);
    match e {
        ReadError::Timeout => timeout_failure(addr, timeout),
        ReadError::Closed => Failure::Lost(format!(
            "cometbox at {} closed the connection before a complete reply{}",
            addr.describe(),
            if reused { " (on a kept-alive connection; the request may have been applied, it is not resent)" } else { "" }
        )),
        ReadError::Io(e) => Failure::Lost(format!("connection to cometbox at {} lost while reading the reply: {e}", addr.describe())),
        ReadError::Invalid(why) => Failure::Lost(format!("invalid HTTP reply from {}: {why}", addr.describe())),
    }
}

enum Continue {
    SendBody,
    /// The bytes of a final reply sent instead of `100 Continue`.
    Refused(Vec<u8>),
}

/// After a head sent with `Expect: 100-continue`.
fn await_continue(stream: &mut Stream, deadline: Instant) -> Result<Continue, ReadError> {
    let wait_until = deadline.min(Instant::now() + EXPECT_CONTINUE_WAIT);
    let mut buf = Vec::new();
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            if head.status == 100 {
                // Nothing final can follow before the body is sent.
                return Ok(Continue::SendBody);
            }
            return Ok(Continue::Refused(buf));
        }
        // Nothing yet when the wait is over: the body goes anyway. Once
        // some bytes came, the rest of that head is waited for.
        let until = if buf.is_empty() { wait_until } else { deadline };
        match fill(stream, &mut buf, until) {
            Ok(true) => {}
            Ok(false) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(false) => return Ok(Continue::Refused(buf)),
            Err(ReadError::Timeout) if buf.is_empty() && Instant::now() < deadline => return Ok(Continue::SendBody),
            Err(e) => return Err(e),
        }
    }
}

fn timeout_failure(addr: &Address, timeout: Duration) -> Failure {
    Failure::Timeout(format!(
        "no complete reply from cometbox at {} within {:.3} s",
        addr.describe(),
        timeout.as_secs_f64()
    ))
}

#[derive(Debug)]
pub enum ReadError {
    Timeout,
    /// End of stream before a complete reply.
    Closed,
    Io(io::Error),
    Invalid(String),
}

/// Reads more bytes into `buf`; Ok(false) at end of stream.
fn fill(stream: &mut Stream, buf: &mut Vec<u8>, deadline: Instant) -> Result<bool, ReadError> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = remaining(deadline).ok_or(ReadError::Timeout)?;
        stream.set_read_timeout(left).map_err(ReadError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ReadError::Timeout),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Reads one reply (skipping interim 1xx ones); also says whether the
/// connection can carry another request.
fn read_reply(stream: &mut Stream, head_only: bool, deadline: Instant, already: Vec<u8>) -> Result<(Reply, bool), ReadError> {
    let mut buf = already;
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(ReadError::Invalid("reply head too large".into()));
            }
            if !fill(stream, &mut buf, deadline)? {
                return Err(ReadError::Closed);
            }
        };
        let head = parse_head(&buf[..head_end])?;
        buf.drain(..head_end + 4);
        if (100..200).contains(&head.status) {
            continue; // 100 Continue and the like: the final reply follows
        }
        let mut keep = head.keep_alive;
        let body = if head_only || head.status == 204 || head.status == 304 {
            Vec::new()
        } else if head.chunked {
            loop {
                match decode_chunked(&buf)? {
                    Some((body, used)) => {
                        buf.drain(..used);
                        break body;
                    }
                    None => {
                        if buf.len() > MAX_BODY_BYTES {
                            return Err(ReadError::Invalid("reply body too large".into()));
                        }
                        if !fill(stream, &mut buf, deadline)? {
                            return Err(ReadError::Closed);
                        }
                    }
                }
            }
        } else if let Some(len) = head.content_length {
            if len > MAX_BODY_BYTES {
                return Err(ReadError::Invalid("reply body too large".into()));
            }
            while buf.len() < len {
                if !fill(stream, &mut buf, deadline)? {
                    return Err(ReadError::Closed);
                }
            }
            buf.drain(..len).collect()
        } else {
            // Delimited by the end of the connection.
            keep = false;
            while fill(stream, &mut buf, deadline)? {
                if buf.len() > MAX_BODY_BYTES {
                    return Err(ReadError::Invalid("reply body too large".into()));
                }
            }
            std::mem::take(&mut buf)
        };
        // Bytes past the reply would be the start of a reply to nothing.
        if !buf.is_empty() {
            keep = false;
        }
        return Ok((Reply { status: head.status, headers: head.headers, body }, keep));
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Result<Head, ReadError> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(ReadError::Invalid(format!("not an HTTP/1.x status line: {:.80}", status_line))),
    };
    let status: u16 = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Invalid(format!("bad status line: {:.80}", status_line)))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let Some(colon) = line.find(':').filter(|&c| c > 0) else { continue };
        let name = line[..colon].trim().to_ascii_lowercase();
        let value = line[colon + 1..].trim().to_string();
        if let Some(existing) = headers.iter_mut().find(|(n, _)| *n == name) {
            existing.1.push_str(", ");
            existing.1.push_str(&value);
        } else {
            headers.push((name, value));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_ascii_lowercase());
    let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let content_length = match get("content-length") {
        None => None,
        Some(v) => {
            // Repeated identical values were joined with ", ".
            let first = v.split(',').next().unwrap_or("").trim().to_string();
            if v.split(',').any(|x| x.trim() != first) {
                return Err(ReadError::Invalid("conflicting Content-Length".into()));
            }
            Some(first.parse().map_err(|_| ReadError::Invalid(format!("bad Content-Length: {v}")))?)
        }
    };
    let connection = get("connection").unwrap_or_default();
    let keep_alive = if http11 { !connection.contains("close") } else { connection.contains("keep-alive") };
    Ok(Head { status, headers, content_length, chunked, keep_alive })
}

/// Decodes a complete chunked body at the start of `buf`: Some((body, bytes
/// used)) or None when more bytes are needed.
fn decode_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ReadError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else { return Ok(None) };
        let size_line = String::from_utf8_lossy(&buf[pos..pos + eol]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ReadError::Invalid(format!("bad chunk size: {:.40}", size_line)))?;
        if size > MAX_BODY_BYTES {
            return Err(ReadError::Invalid("reply body too large".into()));
        }
        pos += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else { return Ok(None) };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ReadError::Invalid("chunk not followed by CRLF".into()));
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_listener_that_accepts_nothing_does_not_hold_the_worker() {
        let dir = std::env::temp_dir().join(format!("cometbox-php-backlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("full.sock");
        let _ = std::fs::remove_file(&path);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Nobody accepts: connects succeed until its backlog is full (made
        // here without connect_unix, which is what is tested below).
        let mut queued = Vec::new();
        let queue_one = || -> io::Result<socket2::Socket> {
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            socket.set_nonblocking(true)?;
            socket.connect(&socket2::SockAddr::unix(&path)?)?;
            Ok(socket)
        };
        while let Ok(socket) = queue_one() {
            queued.push(socket);
            assert!(queued.len() < 10_000, "the backlog never filled");
        }
        // A blocking connect would now wait until one is accepted: forever.
        let (done, outcome) = std::sync::mpsc::channel();
        let full = path.clone();
        std::thread::spawn(move || done.send(connect_unix(&full, Duration::from_secs(1)).is_err()));
        let refused = outcome
            .recv_timeout(Duration::from_secs(30))
            .expect("a connect to a full backlog returns instead of blocking the worker");
        assert!(refused, "no room in the backlog: the connect fails (not sent)");
        drop(queued);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn chunked_bodies_decode_only_when_complete() {
        let whole = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: 1\r\n\r\n";
        for cut in 0..whole.len() {
            assert!(decode_chunked(&whole[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (body, used) = decode_chunked(whole).unwrap().unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(used, whole.len());
    }

    #[test]
    fn heads_give_framing_and_keep_alive() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2").unwrap();
        assert_eq!((h.status, h.content_length, h.chunked, h.keep_alive), (200, Some(12), false, true));
        assert_eq!(h.headers[1], ("x-a".to_string(), "1, 2".to_string()));
        assert!(!parse_head(b"HTTP/1.1 503 Unavailable\r\nConnection: close").unwrap().keep_alive);
        assert!(!parse_head(b"HTTP/1.0 200 OK").unwrap().keep_alive);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
    }

    #[test]
    fn addresses_parse() {
        assert!(matches!(Address::parse("tcp:127.0.0.1:8481"), Some(Address::Tcp(a)) if a == "127.0.0.1:8481"));
        assert!(matches!(Address::parse("unix:/run/x.sock"), Some(Address::Unix(p)) if p == "/run/x.sock"));
        assert!(Address::parse("http://x").is_none());
        assert!(Address::parse("unix:").is_none());
    }
}
