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
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if take == left {
                        State::Head
                    } else {
                        State::Body(left - take)
                    };
                }
                State::ChunkData(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if take == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - take)
                    };
                }
                State::Head => {
                    let old = self.pending.len();
                    self.pending.extend_from_slice(bytes);
                    bytes = &[];
                    // A head ends in a line end: parse only when one came.
                    if !self.pending[old..].contains(&b'\n') {
                        if self.pending.len() > self.max_head {
                            self.state = State::Off;
                        }
                        continue;
                    }
                    let Some(taken) = self.head() else {
                        continue;
                    };
                    let rest = self.pending.split_off(taken);
                    self.clear_pending();
                    return (self.state != State::Off && !rest.is_empty()).then_some(rest);
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(end) = memchr::memchr(b'\n', bytes) else {
                        self.pending.extend_from_slice(bytes);
                        if self.pending.len() > MAX_LINE {
                            self.state = State::Off;
                        }
                        return None;
                    };
                    self.pending.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    let line = std::mem::take(&mut self.pending);
                    self.line(line.strip_suffix(b"\r").unwrap_or(&line));
                    self.pending = line;
                    self.pending.clear();
                }
            }
        }
        None
    }

    /// Parses the head in `pending`; how many bytes it took, or `None`
    /// while it is unfinished. Sets the state for what follows it.
    fn head(&mut self) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let taken = match request.parse(&self.pending) {
            Ok(httparse::Status::Complete(taken)) => taken,
            Ok(httparse::Status::Partial) if self.pending.len() <= self.max_head => return None,
            // Too long, or refused by hyper too: hyper answers and closes.
            _ => {
                self.state = State::Off;
                return None;
            }
        };
        let number = self.requests;
        self.requests += 1;
        let (mut length, mut chunked, mut coded) = (None, false, false);
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if length.is_none() {
                    self.state = State::Off;
                    return Some(taken);
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                coded = true;
                chunked = header
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        self.state = match (length, coded) {
            (Some(_), true) => {
                // The first one counts: hyper closes the connection after it.
                let _ = self.verdict.framed_twice.compare_exchange(
                    NONE,
                    number,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                State::Off
            }
            (None, true) if chunked => State::ChunkSize,
            // A coding hyper cannot frame: it refuses the request itself.
            (None, true) => State::Off,
            (Some(0) | None, false) => State::Head,
            (Some(n), false) => State::Body(n),
        };
        if request.method == Some("CONNECT") {
            self.state = State::Off;
        }
        Some(taken)
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
        }
    }
}
