//! A poll reply's body that keeps the poll open until it is written.
//!
//! The poll counts against `max_polls_per_client` until its guard drops.
//! Dropping it when the handler returns would let a client that never
//! reads open poll after poll, each holding a whole reply in memory. So the
//! body owns the guard and hands the reply to hyper in chunks: hyper asks
//! for the next chunk only once the previous one is (mostly) written, and
//! drops the body, and so the guard, after the last one or when the
//! connection ends (send timeout, peer gone).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::hub::OpenPoll;

/// Handed to hyper per frame: large enough for few syscalls, small enough
/// that the guard lives until the reply is nearly all sent.
const CHUNK: usize = 64 << 10;

/// The rest of a reply, and the guard of its poll.
pub struct ReplyBody {
    rest: Bytes,
    /// Dropped with the body; `None` once the last chunk is taken.
    open: Option<OpenPoll>,
}

impl ReplyBody {
    /// A body for `reply` that holds `open` until its last chunk is taken.
    pub fn new(reply: String, open: OpenPoll) -> Self {
        ReplyBody {
            rest: Bytes::from(reply),
            open: Some(open),
        }
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            self.open = None;
            return Poll::Ready(None);
        }
        let take = self.rest.len().min(CHUNK);
        let chunk = self.rest.split_to(take);
        if self.rest.is_empty() {
            self.open = None;
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    /// Exact, so the reply keeps its `Content-Length`.
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}
