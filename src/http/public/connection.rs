//! One connection of the public port: reading its requests' heads and
//! bodies and writing their replies, under the port's limits. The loop that
//! reads one request after another and routes it is the caller's (`mod.rs`);
//! this file knows no route.
//!
//! - A head must arrive whole within `request_timeout` of the wait for it
//!   starting and within `max_header_bytes`; otherwise `408` (nothing, if no
//!   byte came) or `431`, and the connection closes.
//! - The read buffer is freed whenever it holds nothing unparsed, so a
//!   held poll keeps no buffer: what it costs is its socket, this task and
//!   the hub's waiter.
//! - While a poll waits, the socket is watched: bytes the client pipelines
//!   are kept for later (up to `max_header_bytes`), and an end of stream
//!   (the browser left, or shut its sending side) drops the poll at once, so
//!   presence and `max_polls_per_client` see it gone.
//! - A request body is read only by a route that wants one (a Bayeux
//!   POST), whole, within `request_timeout` and its route's limit; a body
//!   left unread closes the connection after the reply, since what follows
//!   it cannot be framed. A body first takes its bytes from the port's
//!   budget (`max_public_body_bytes_in_flight`, shared by every
//!   connection): past it, `503 overloaded` before reading. Its buffer
//!   grows with what arrives, not with what was declared.
//! - `Expect: 100-continue` is answered `100 Continue` once the body is
//!   about to be read, or with the final status at once when it will not
//!   be (too large, over the budget, or a route that reads no body).
//! - A reply the client accepts no byte of for `send_timeout` ends the
//!   connection with a reset, which frees the kernel's buffers too.
//! - A connection closed after an error, or after a reply that left the
//!   request's body unread, first reads and discards what the client is
//!   still sending (briefly, boundedly): closing with unread data resets
//!   the connection, and a client still writing its body then fails on the
//!   reset instead of reading the reply.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::face::Face;
use super::request::{self, BodyFraming, Head, HeadError, Method, Parsed};
use super::response::Response;
use crate::http::send_timeout::Abort;

/// What the port accepts: TCP or Unix sockets, read through readiness so
/// that watching a waiting poll's socket needs no buffer.
pub trait Socket: AsyncRead + AsyncWrite + Abort + Unpin + Send + 'static {
    /// Resolves when the socket may have bytes (or an end of stream).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what is there without waiting.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

macro_rules! impl_socket {
    ($($stream:ty),*) => {$(
        impl Socket for $stream {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$stream>::readable(self)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$stream>::try_read(self, buf)
            }
        }
    )*};
}
impl_socket!(tokio::net::TcpStream, tokio::net::UnixStream);

/// First allocation of the read buffer: a browser's poll with its cookies
/// usually fits; it grows by doubling up to `max_header_bytes`.
const FIRST_READ: usize = 2048;

/// Longest chunk-size line of a chunked body (a size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// Most hex digits of a chunk size: 8 is up to 4 GiB, far over any body
/// limit, so a longer size is refused rather than overflowing.
const MAX_CHUNK_DIGITS: usize = 8;

/// What a body's buffer takes before its bytes arrive; it then grows by
/// doubling with what is read, up to the declared length.
const FIRST_BODY: usize = 16 << 10;

/// The interim reply to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How long, and how much, a closing connection reads and discards.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Why reading a head stopped.
enum ReadError {
    /// The client closed (or the socket failed); `partial` if it had sent
    /// part of a head.
    Closed,
    /// No whole head within `request_timeout`.
    TimedOut { partial: bool },
    /// The server is shutting down and the connection was idle.
    ShuttingDown,
    /// A head that cannot be served.
    Refused(HeadError),
}

impl ReadError {
    /// The reply before closing, if the client is owed one: nothing to a
    /// client that closed, to an idle connection at shutdown, or when no
    /// byte of a head came before the timeout.
    fn reply(&self) -> Option<Response> {
        match self {
            ReadError::Closed | ReadError::ShuttingDown => None,
            ReadError::TimedOut { partial: false } => None,
            ReadError::TimedOut { partial: true } => Some(Response::error(
                408,
                "timeout",
                "the request headers did not arrive in time",
            )),
            ReadError::Refused(e) => {
                let (status, code) = match e {
                    HeadError::TooLarge => (431, "invalid-request"),
                    HeadError::Malformed(_) => (400, "invalid-request"),
                    HeadError::UnknownCoding(_) => (501, "not-implemented"),
                };
                Some(Response::error(status, code, &e.to_string()))
            }
        }
    }
}

/// One connection and its unparsed bytes.
pub struct Connection<S> {
    socket: S,
    /// Bytes read and not parsed yet: the start of the next request.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no end of head.
    scanned: usize,
    /// Whether a reply was written already: a connection waiting for its
    /// next request is idle, one waiting for its first is not.
    served: bool,
    /// The current request has a body its route did not read.
    body_unread: bool,
    /// The current request asked for `100 Continue` before its body.
    expect_continue: bool,
    face: Arc<Face>,
}

/// A request body read whole, with its share of the port's body budget,
/// given back when it is dropped.
pub struct Body {
    bytes: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Body {
    /// The bytes, and the budget they hold (to drop once they are parsed).
    pub fn into_parts(self) -> (Vec<u8>, Option<OwnedSemaphorePermit>) {
        (self.bytes, self._budget)
    }
}

/// Why a request body could not be read; each closes the connection after
/// its reply.
#[derive(Debug)]
pub enum BodyError {
    /// `Content-Length` (or the chunks so far) over the route's limit:
    /// `413`, the rest unread.
    TooLarge(u64),
    /// Chunked framing that is not chunked framing: `400`.
    BadChunk(&'static str),
    /// Not all there within `request_timeout`: `408`.
    TimedOut,
    /// The port's bodies in flight would pass
    /// `max_public_body_bytes_in_flight`: `503`, the body unread.
    Overloaded,
    /// The client closed first.
    Closed,
}

impl<S: Socket> Connection<S> {
    /// A connection on `socket`, nothing read yet.
    pub fn new(socket: S, face: Arc<Face>) -> Self {
        Connection {
            socket,
            buf: Vec::new(),
            scanned: 0,
            served: false,
            body_unread: false,
            expect_continue: false,
            face,
        }
    }

    /// The next request's head, to route; `None` once the connection is
    /// over (closed, timed out, shutting down, or refused: a refusal has
    /// had its reply).
    pub async fn next_request(&mut self) -> Option<Head> {
        let head = match self.read_head().await {
            Ok(head) => head,
            Err(e) => {
                if let Some(reply) = e.reply() {
                    self.fail(reply).await;
                }
                return None;
            }
        };
        if head.body != BodyFraming::None && head.method != Method::Post {
            let reply = Response::error(
                400,
                "invalid-request",
                "requests to this port carry no body",
            );
            self.fail(reply).await;
            return None;
        }
        self.body_unread = head.body != BodyFraming::None;
        self.expect_continue = head.expect_continue;
        Some(head)
    }

    /// Whether the connection closes after the current reply: the client
    /// asked to, its body was left unread (what follows it cannot be
    /// framed), or the server is shutting down.
    pub fn closes_after(&self, keep_alive: bool) -> bool {
        !keep_alive || self.body_unread || self.face.state.hub.is_shutting_down()
    }

    /// Closes after a reply: shuts the sending side, then reads and
    /// discards a body the route left unread (see the module doc).
    pub async fn close(&mut self) {
        let _ = self.socket.shutdown().await;
        if self.body_unread {
            self.linger().await;
        }
    }

    /// The shared state of the port.
    pub fn face(&self) -> &Arc<Face> {
        &self.face
    }

    /// Reads until a whole head is in the buffer and parses it.
    async fn read_head(&mut self) -> Result<Head, ReadError> {
        let deadline = Instant::now() + self.face.header_timeout;
        loop {
            if self.buf.is_empty() {
                // Nothing to parse yet.
            } else if let Some(head) = self.parse_buffered()? {
                return Ok(head);
            }
            self.read_more(deadline).await?;
        }
    }

    /// Parses the buffer once it may hold a whole head; `None` until then.
    fn parse_buffered(&mut self) -> Result<Option<Head>, ReadError> {
        // A head nearly always arrives in one read and is parsed at once.
        // After a partial parse, parse again only once a blank line came:
        // a client trickling its head byte by byte must not make each byte
        // re-parse everything before it.
        if self.scanned > 0 {
            let from = self.scanned.saturating_sub(3);
            let ended = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n").is_some()
                || memchr::memmem::find(&self.buf[from..], b"\n\n").is_some();
            if !ended {
                self.scanned = self.buf.len();
                return self.partial();
            }
        }
        match request::parse(&self.buf) {
            Ok(Parsed::Complete(head, taken)) => {
                self.consume(taken);
                Ok(Some(head))
            }
            Ok(Parsed::Partial) => {
                self.scanned = self.buf.len().max(1);
                self.partial()
            }
            Err(e) => Err(ReadError::Refused(e)),
        }
    }

    /// An unfinished head: read on, unless it is already at the limit.
    fn partial(&self) -> Result<Option<Head>, ReadError> {
        if self.buf.len() >= self.face.max_header_bytes {
            Err(ReadError::Refused(HeadError::TooLarge))
        } else {
            Ok(None)
        }
    }

    /// Drops the first `n` bytes; frees the buffer when nothing is left.
    fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..n);
        }
        self.scanned = 0;
    }

    /// Reads more of a head, growing the buffer up to `max_header_bytes`.
    async fn read_more(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let limit = self.face.max_header_bytes;
        if self.buf.len() == self.buf.capacity() {
            let grown = (self.buf.capacity() * 2).clamp(FIRST_READ, limit.max(1));
            self.buf.reserve_exact(grown - self.buf.len());
        }
        let room = limit.saturating_sub(self.buf.len()).max(1);
        let partial = !self.buf.is_empty();
        let idle = !partial && self.served;
        let Connection {
            socket, buf, face, ..
        } = self;
        let mut room = buf.limit(room);
        let mut read = pin!(socket.read_buf(&mut room));
        // Most reads find their bytes already there: no timer for those.
        let read = match poll_once(read.as_mut()).await {
            Poll::Ready(read) => read,
            Poll::Pending => tokio::select! {
                read = read => read,
                _ = tokio::time::sleep_until(deadline) => return Err(ReadError::TimedOut { partial }),
                // An idle keep-alive connection ends at once on shutdown;
                // one in the middle of a head gets to finish it.
                _ = face.state.shutdown.cancelled(), if idle => return Err(ReadError::ShuttingDown),
            },
        };
        match read {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
        }
    }

    /// Reads the current request's body, whole: what the buffer holds of it
    /// already, then the socket, within `request_timeout`, at most `limit`
    /// bytes (a longer declared length is refused unread), within the
    /// port's budget of body bytes in flight.
    pub async fn read_body(
        &mut self,
        framing: BodyFraming,
        limit: usize,
    ) -> Result<Body, BodyError> {
        let deadline = Instant::now() + self.face.header_timeout;
        let length = match framing {
            BodyFraming::None => {
                return Ok(Body {
                    bytes: Vec::new(),
                    _budget: None,
                })
            }
            BodyFraming::Chunked => {
                self.send_continue().await?;
                let body = self.read_chunks(limit, deadline).await?;
                self.body_unread = false;
                return Ok(body);
            }
            BodyFraming::Length(n) if n > limit as u64 => return Err(BodyError::TooLarge(n)),
            BodyFraming::Length(n) => n as usize,
        };
        // The whole declared length, before reading: a client that
        // declares a body and stalls holds the budget, not memory beyond it.
        let budget = self.budget(length)?;
        self.send_continue().await?;
        let mut body = Vec::with_capacity(length.min(FIRST_BODY));
        let buffered = length.min(self.buf.len());
        body.extend_from_slice(&self.buf[..buffered]);
        self.consume(buffered);
        while body.len() < length {
            let missing = length - body.len();
            if body.len() == body.capacity() {
                body.reserve_exact(missing.min(body.capacity().max(FIRST_BODY)));
            }
            let mut room = (&mut body).limit(missing);
            match tokio::time::timeout_at(deadline, self.socket.read_buf(&mut room)).await {
                Err(_) => return Err(BodyError::TimedOut),
                Ok(Ok(0) | Err(_)) => return Err(BodyError::Closed),
                Ok(Ok(_)) => {}
            }
        }
        self.body_unread = false;
        Ok(Body {
            bytes: body,
            _budget: Some(budget),
        })
    }

    /// Takes `bytes` from the port's budget of body bytes in flight, or
    /// says the port is overloaded.
    fn budget(&self, bytes: usize) -> Result<OwnedSemaphorePermit, BodyError> {
        let bytes = u32::try_from(bytes).map_err(|_| BodyError::Overloaded)?;
        self.face
            .bodies
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| BodyError::Overloaded)
    }

    /// `100 Continue`, once, if the client asked for it: its body is about
    /// to be read.
    async fn send_continue(&mut self) -> Result<(), BodyError> {
        if std::mem::take(&mut self.expect_continue) {
            self.write_all(CONTINUE, &[])
                .await
                .map_err(|_| BodyError::Closed)?;
        }
        Ok(())
    }

    /// A chunked body, decoded: each chunk's size line (at most
    /// [`MAX_CHUNK_LINE`] bytes, extensions ignored), its bytes, until the
    /// last chunk and the trailers (read and dropped, within
    /// `max_header_bytes`). The decoded body may not pass `limit`; each
    /// chunk takes its size from the budget before it is read.
    async fn read_chunks(&mut self, limit: usize, deadline: Instant) -> Result<Body, BodyError> {
        let mut body = Vec::new();
        let mut budget: Option<OwnedSemaphorePermit> = None;
        loop {
            let line = self.chunk_line(MAX_CHUNK_LINE, deadline).await?;
            let size = chunk_size(&line).ok_or(BodyError::BadChunk(
                "a chunk size is not hexadecimal digits",
            ))?;
            if size == 0 {
                break;
            }
            if body.len() + size > limit {
                return Err(BodyError::TooLarge((body.len() + size) as u64));
            }
            let more = self.budget(size)?;
            match &mut budget {
                Some(held) => held.merge(more),
                None => budget = Some(more),
            }
            // Copied out as it arrives: the read buffer never holds a
            // whole chunk.
            let mut missing = size;
            loop {
                let take = missing.min(self.buf.len());
                body.extend_from_slice(&self.buf[..take]);
                self.consume(take);
                missing -= take;
                if missing == 0 {
                    break;
                }
                self.fill(deadline).await?;
            }
            while self.buf.len() < 2 {
                self.fill(deadline).await?;
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(BodyError::BadChunk("a chunk does not end with CRLF"));
            }
            self.consume(2);
        }
        // Trailers, up to the blank line.
        let mut trailers = 0;
        loop {
            let line = self
                .chunk_line(self.face.max_header_bytes, deadline)
                .await?;
            trailers += line.len() + 2;
            if line.is_empty() {
                return Ok(Body {
                    bytes: body,
                    _budget: budget,
                });
            }
            if trailers > self.face.max_header_bytes {
                return Err(BodyError::BadChunk("trailers too large"));
            }
        }
    }

    /// One CRLF-ended line from the buffer (reading more as needed),
    /// without its CRLF; at most `max` bytes.
    async fn chunk_line(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf, b"\r\n") {
                let line = self.buf[..at].to_vec();
                self.consume(at + 2);
                return Ok(line);
            }
            if self.buf.len() > max {
                return Err(BodyError::BadChunk("a chunk line is too long"));
            }
            self.fill(deadline).await?;
        }
    }

    /// Reads what the socket has into the buffer, by the deadline.
    async fn fill(&mut self, deadline: Instant) -> Result<(), BodyError> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(16 << 10);
        }
        match tokio::time::timeout_at(deadline, self.socket.read_buf(&mut self.buf)).await {
            Err(_) => Err(BodyError::TimedOut),
            Ok(Ok(0) | Err(_)) => Err(BodyError::Closed),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Runs `work` (a waiting poll) while watching the socket; `None` when
    /// the client closed its side first, or pipelined past the limit.
    pub async fn wait_for<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        loop {
            tokio::select! {
                biased;
                output = &mut work => return Some(output),
                ready = self.socket.readable() => {
                    ready.ok()?;
                    let mut chunk = [0u8; 1024];
                    match self.socket.try_read(&mut chunk) {
                        Ok(0) => return None,
                        Ok(n) if self.buf.len() + n > self.face.max_header_bytes => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return None,
                    }
                }
            }
        }
    }

    /// Writes a reply: the head and the body in as few writes as the socket
    /// takes, each allowed `send_timeout` without progress.
    pub async fn send(
        &mut self,
        response: &Response,
        head_only: bool,
        close: bool,
    ) -> io::Result<()> {
        let head = response.encode_head(close);
        let body: &[u8] = if head_only { &[] } else { &response.body };
        self.write_all(&head, body).await?;
        self.served = true;
        Ok(())
    }

    /// Writes `first` then `second`, each write allowed `send_timeout`
    /// without progress.
    pub async fn write_all(&mut self, first: &[u8], second: &[u8]) -> io::Result<()> {
        let (mut head, mut body) = (first, second);
        while !head.is_empty() || !body.is_empty() {
            let written = self
                .write_some(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if written < head.len() {
                head = &head[written..];
            } else {
                body = &body[written - head.len()..];
                head = &[];
            }
        }
        Ok(())
    }

    async fn write_some(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let timeout = self.face.send_timeout;
        let mut write = pin!(self.socket.write_vectored(slices));
        if let Poll::Ready(written) = poll_once(write.as_mut()).await {
            return written;
        }
        match tokio::time::timeout(timeout, write).await {
            Ok(written) => written,
            Err(_) => {
                self.socket.abort_on_close();
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }

    /// Sends a last reply and closes, reading and discarding what the
    /// client still sends meanwhile (see the module doc).
    pub async fn fail(&mut self, response: Response) {
        if self.send(&response, false, true).await.is_err() {
            return;
        }
        let _ = self.socket.shutdown().await;
        self.linger().await;
    }

    /// Reads and discards what the client still sends, at most
    /// [`LINGER_BYTES`] for at most [`LINGER`], before the connection is
    /// dropped (see the module doc).
    async fn linger(&mut self) {
        let mut discarded = 0;
        let mut chunk = vec![0u8; 16 << 10];
        let deadline = Instant::now() + LINGER;
        while discarded < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, self.socket.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }
}

/// A chunk-size line's size: only hex digits (at most
/// [`MAX_CHUNK_DIGITS`]) before an optional `;` and extensions. No sign,
/// no space, no `0x`: a proxy that reads `+5` or ` 5` differently would
/// frame the next request elsewhere.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let end = memchr::memchr(b';', line).unwrap_or(line.len());
    let digits = &line[..end];
    if digits.is_empty()
        || digits.len() > MAX_CHUNK_DIGITS
        || !digits.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    // Only hex digits, at most 8 of them: this cannot fail.
    let text = std::str::from_utf8(digits).ok()?;
    usize::from_str_radix(text, 16).ok()
}

/// Polls `future` once, handing back whether it finished.
async fn poll_once<F: Future + ?Sized>(mut future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

#[cfg(test)]
mod tests {
    use super::chunk_size;

    #[test]
    fn chunk_sizes_are_bare_hex_digits() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"00FF;name=value"), Some(255));
        assert_eq!(chunk_size(b"0"), Some(0));
        for bad in [
            &b"+5"[..],
            b" 5",
            b"5 ",
            b"5 ;x",
            b"-0",
            b"+0",
            b"0x5",
            b"",
            b";x",
            b"123456789",
        ] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
