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
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::face::Face;
use super::request::{self, BodyFraming, Head, HeadError, Method, Parsed};
use super::response::Response;
use crate::http::send_timeout::Abort;

pub mod body;

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

/// A protocol's session on a socket taken over from the HTTP loop (a
/// WebSocket), run as a task of its own ([`Connection::hand_over`]).
pub type Session = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What takes a socket over: called with the socket and the bytes read
/// past the last head, it returns the session to run.
pub type TakeOver<S> = Box<dyn FnOnce(S, Vec<u8>) -> Session + Send>;

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
    /// A protocol to hand the socket to once the loop ends
    /// ([`Connection::hand_over`]).
    take_over: Option<TakeOver<S>>,
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
            take_over: None,
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

    /// Hands the socket, once the route returns `Routed::Upgraded`, to
    /// `take_over` (a WebSocket after its `101`): the HTTP loop ends and
    /// its future is freed, and the session runs as a task of its own, so
    /// a held socket costs its session's state and not the loop's too.
    pub fn hand_over(&mut self, take_over: TakeOver<S>) {
        self.take_over = Some(take_over);
    }

    /// The session [`Connection::hand_over`] was given, on the socket and
    /// the bytes read past the last head; `None` when nothing took over.
    pub fn into_session(self) -> Option<Session> {
        let take_over = self.take_over?;
        Some(take_over(self.socket, self.buf))
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

/// Polls `future` once, handing back whether it finished.
async fn poll_once<F: Future + ?Sized>(mut future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}
