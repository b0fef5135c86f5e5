//! A request body, read whole by the route that wants one (a Bayeux POST):
//! by its `Content-Length`, or chunked (`Transfer-Encoding: chunked`,
//! strictly), within `request_timeout`, the route's limit and the port's
//! budget of body bytes in flight (`max_public_body_bytes_in_flight`),
//! with `100 Continue` sent first if the client asked for it. See the
//! connection's module doc for what an unread or refused body does to the
//! connection.

use bytes::BufMut;
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{Connection, Socket};
use crate::http::public::request::BodyFraming;

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
