//! The ingest port's guard against a request framed twice: both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! That is request smuggling's classic: a proxy in front that reads the
//! body by its length and a server that reads it by its chunks see
//! different requests. hyper reads such a request by `Transfer-Encoding`
//! (and closes the connection after it), and drops the `Content-Length`
//! before any handler sees the headers, so no middleware can tell. Hence
//! [`Watched`]: it sees the bytes hyper reads, finds each request head in
//! them (following each body's framing to the next head), and notes which
//! request, by number, was framed twice. The connection's service marks
//! that request with [`FramedTwice`], and the ingest router refuses it
//! (`400`, see `ingest.rs`).
//!
//! What it costs: one `httparse` pass over each head (hyper makes its own),
//! a count per body read, and a look at each chunk-size line. When the
//! bytes stop making sense (a head hyper will refuse too, an upgrade) it
//! stops looking: hyper answers those itself and closes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Headers hyper reads in a request by default; a head with more is
/// refused by hyper, so it need not be looked at.
const MAX_HEADERS: usize = 100;

/// Longest chunk-size or trailer line followed; past it the watch stops
/// (hyper refuses such a body itself).
const MAX_LINE: usize = 4096;

/// No request was framed twice (yet).
const NONE: u64 = u64::MAX;

/// Marks a request whose head carried both `Content-Length` and
/// `Transfer-Encoding` (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct FramedTwice;

/// What one connection's watch found, shared with its service.
#[derive(Debug)]
pub struct Verdict {
    /// The number (from 0) of the first request framed twice, or [`NONE`].
    framed_twice: AtomicU64,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            framed_twice: AtomicU64::new(NONE),
            served: AtomicU64::new(0),
        }
    }
}

impl Verdict {
    /// For the service, once per request in order: whether this one was
    /// framed twice. Its head was read (and watched) before hyper could
    /// hand it over.
    pub fn next_is_framed_twice(&self) -> bool {
        let number = self.served.fetch_add(1, Ordering::Relaxed);
        self.framed_twice.load(Ordering::Relaxed) == number
    }
}

/// A connection whose incoming bytes are watched for requests framed twice.
pub struct Watched<S> {
    inner: S,
    tracker: Tracker,
}

impl<S> Watched<S> {
    /// Watches `inner`; heads past `max_head` bytes are left to hyper.
    pub fn new(inner: S, verdict: Arc<Verdict>, max_head: usize) -> Self {
        Watched {
            inner,
            tracker: Tracker {
                state: State::Head,
                pending: Vec::new(),
                requests: 0,
                verdict,
                max_head,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.tracker.feed(&buf.filled()[before..]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
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

/// Where in the stream of requests the watch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a head (its bytes so far in `pending`).
    Head,
    /// In a body with a length: this many bytes left.
    Body(u64),
    /// In a chunk-size line (in `pending`).
    ChunkSize,
    /// In a chunk: this many bytes left, then its line end.
    ChunkData(u64),
    /// After a chunk's bytes, up to the end of its line.
    ChunkEnd,
    /// In the trailers after the last chunk, a line at a time.
    Trailers,
    /// Not watching any more (a request framed twice, which hyper closes
    /// the connection after, or bytes hyper refuses itself).
    Off,
}

/// The watch's state machine, fed the bytes as they are read.
struct Tracker {
    state: State,
    /// An unfinished head or line.
    pending: Vec<u8>,
    /// Heads seen so far.
    requests: u64,
    verdict: Arc<Verdict>,
    max_head: usize,
}

impl Tracker {
    fn feed(&mut self, bytes: &[u8]) {
        // What followed a finished head is fed again, in the state the head
        // set; a loop, not recursion, however many requests were pipelined.
        let mut rest = self.step(bytes);
        while let Some(more) = rest {
            rest = self.step(&more);
        }
    }

    /// Follows `bytes` until they end or a head is finished; what followed
    /// that head, if anything.
    fn step(&mut self, mut bytes: &[u8]) -> Option<Vec<u8>> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return None,
                State::Body(left) => {
                    let (rest, left) = skip(bytes, left);
                    bytes = rest;
                    self.state = match left {
                        0 => State::Head,
                        left => State::Body(left),
                    };
                }
                State::ChunkData(left) => {
                    let (rest, left) = skip(bytes, left);
                    bytes = rest;
                    self.state = match left {
                        0 => State::ChunkEnd,
                        left => State::ChunkData(left),
                    };
                }
                // The usual case: a head that starts a read is parsed
                // where it lies, nothing copied.
                State::Head if self.pending.is_empty() => bytes = self.head_in_place(bytes),
                State::Head => return self.head_in_pending(bytes),
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    bytes = self.line_from(bytes)?;
                }
            }
        }
        None
    }

    /// A head at the start of a read, parsed where it lies; what followed
    /// it (nothing, if it is unfinished and kept in `pending`, or refused).
    fn head_in_place<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        match parse_head(bytes, self.max_head) {
            Seen::Partial => {
                self.pending.extend_from_slice(bytes);
                &[]
            }
            Seen::Refused => {
                self.state = State::Off;
                &[]
            }
            Seen::Complete { taken, framing } => {
                self.next_request(framing);
                &bytes[taken..]
            }
        }
    }

    /// More of a head begun in an earlier read, added to `pending`; what
    /// followed it once it is finished.
    fn head_in_pending(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let old = self.pending.len();
        self.pending.extend_from_slice(bytes);
        // A head ends in a line end: parse again only when one came, not
        // for every byte of a trickled head.
        if !self.pending[old..].contains(&b'\n') {
            if self.pending.len() > self.max_head {
                self.state = State::Off;
            }
            return None;
        }
        match parse_head(&self.pending, self.max_head) {
            Seen::Partial => None,
            Seen::Refused => {
                self.state = State::Off;
                None
            }
            Seen::Complete { taken, framing } => {
                self.next_request(framing);
                let rest = self.pending.split_off(taken);
                self.clear_pending();
                (self.state != State::Off && !rest.is_empty()).then_some(rest)
            }
        }
    }

    /// More of a chunk-size, line-end or trailer line, added to `pending`
    /// up to its end, where it is followed ([`Tracker::line`]); what
    /// followed the line, or `None` when it goes on past `bytes`.
    fn line_from<'b>(&mut self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        let Some(end) = memchr::memchr(b'\n', bytes) else {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() > MAX_LINE {
                self.state = State::Off;
            }
            return None;
        };
        self.pending.extend_from_slice(&bytes[..end]);
        let line = std::mem::take(&mut self.pending);
        self.line(line.strip_suffix(b"\r").unwrap_or(&line));
        self.pending = line;
        self.pending.clear();
        Some(&bytes[end + 1..])
    }

    /// A head was read: counts it, notes it if it was framed twice, and
    /// follows its body.
    fn next_request(&mut self, framing: Framing) {
        let number = self.requests;
        self.requests += 1;
        self.state = match framing {
            Framing::Twice => {
                // The first one counts: hyper closes the connection after it.
                let _ = self.verdict.framed_twice.compare_exchange(
                    NONE,
                    number,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                State::Off
            }
            Framing::Length(0) | Framing::Nothing => State::Head,
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Unknown => State::Off,
        };
    }

    /// A whole chunk-size line, line end, or trailer line.
    fn line(&mut self, line: &[u8]) {
        self.state = match self.state {
            State::ChunkSize => {
                let digits = line.split(|b| *b == b';').next().unwrap_or(b"");
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u64::from_str_radix(d.trim(), 16).ok());
                match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                }
            }
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Off,
        };
    }

    /// Empties `pending`, giving back a large buffer (a long head) so an
    /// idle connection keeps none.
    fn clear_pending(&mut self) {
        if self.pending.capacity() > 4096 {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
    }
}

/// What a look at a head found.
enum Seen {
    /// Not all there yet.
    Partial,
    /// Something hyper refuses too (or past `max_head`): stop watching.
    Refused,
    /// A whole head of `taken` bytes, its body framed so.
    Complete { taken: usize, framing: Framing },
}

/// How a request's body is framed, as hyper reads it.
enum Framing {
    /// No body.
    Nothing,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Twice,
    /// Something hyper refuses or switches protocols on: stop watching.
    Unknown,
}

/// Parses the head at the start of `buf`.
fn parse_head(buf: &[u8], max_head: usize) -> Seen {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let taken = match request.parse(buf) {
        Ok(httparse::Status::Complete(taken)) => taken,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Seen::Partial,
        _ => return Seen::Refused,
    };
    let (mut length, mut coded, mut chunked) = (None, false, false);
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            match content_length(header.value) {
                Some(n) => length = Some(n),
                None => return Seen::Refused,
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // hyper goes by the last header's last coding.
            coded = true;
            chunked = header
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let framing = match (length, coded) {
        _ if request.method == Some("CONNECT") => Framing::Unknown,
        (Some(_), true) => Framing::Twice,
        (None, true) if chunked => Framing::Chunked,
        (None, true) => Framing::Unknown,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::Nothing,
    };
    Seen::Complete { taken, framing }
}

/// A `Content-Length` value as hyper takes it: digits, or a list of the
/// same digits (`3, 3`).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|b| *b == b',') {
        let part = std::str::from_utf8(part.trim_ascii()).ok()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = part.parse::<u64>().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// Skips what `bytes` holds of the `left` bytes of a body or chunk: what
/// follows them in `bytes`, and how many are still to come.
#[inline]
fn skip(bytes: &[u8], left: u64) -> (&[u8], u64) {
    let take = left.min(bytes.len() as u64);
    (&bytes[take as usize..], left - take)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of the requests framed twice when `raw` is read in
    /// pieces of `step` bytes.
    fn watch(raw: &str, step: usize) -> Option<u64> {
        let verdict = Arc::new(Verdict::default());
        let mut tracker = Watched::new((), verdict.clone(), 16384).tracker;
        for piece in raw.as_bytes().chunks(step) {
            tracker.feed(piece);
        }
        let n = verdict.framed_twice.load(Ordering::Relaxed);
        (n != NONE).then_some(n)
    }

    #[test]
    fn the_request_framed_twice_is_found_behind_others() {
        let twice = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let length = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n";
        let get = "GET /stats HTTP/1.1\nHost: x\n\n";
        for step in [1, 3, 7, 1000] {
            assert_eq!(watch(twice, step), Some(0), "{step}");
            let all = format!("{length}{chunked}{get}{twice}");
            assert_eq!(watch(&all, step), Some(3), "{step}");
            // A body that looks like a head framed twice is a body.
            let inside = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{twice}{get}",
                twice.len()
            );
            assert_eq!(watch(&inside, step), None, "{step}");
            let reversed = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nHost: x\r\n\r\n";
            assert_eq!(watch(&format!("{get}{reversed}"), step), Some(1), "{step}");
            // A length list hyper reads does not stop the watch.
            let list = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nhi";
            assert_eq!(watch(&format!("{list}{twice}"), step), Some(1), "{step}");
        }
    }
}
