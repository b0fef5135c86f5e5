//! A stream wrapper that fails writes which make no progress for too long.
//!
//! A browser (or an attacker) that stops reading leaves the server's writes
//! pending forever: the connection, its reply and the kernel's socket
//! buffers stay allocated, and a poll being written keeps counting against
//! its client. hyper has no write timeout, so the stream it writes to gives
//! up instead: when the socket answers `Pending`, a deadline starts; any
//! byte accepted clears it; reaching it fails the write with `TimedOut`,
//! which ends the connection (and drops the reply with its poll guard).
//!
//! On timeout the socket is also set to close abortively (a TCP reset,
//! `SO_LINGER` 0): a plain close would leave the kernel an orphan socket
//! still holding its unsent data (megabytes per socket once the send
//! buffer has grown) and probing a peer that will not read, for minutes.
//!
//! The deadline is allocated lazily, only while a write is blocked, so a
//! held poll or an idle keep-alive connection costs no timer at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What a stream does when its peer is given up on.
pub trait Abort {
    /// Makes the coming close discard unsent data and free the kernel's
    /// buffers at once.
    fn abort_on_close(&self);
}

impl Abort for tokio::net::TcpStream {
    fn abort_on_close(&self) {
        // Failing leaves an ordinary close: still closed, just later freed.
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!(error = %e, "could not set SO_LINGER 0");
        }
    }
}

impl Abort for tokio::net::UnixStream {
    /// A Unix socket's buffers go with its last descriptor: nothing to do.
    fn abort_on_close(&self) {}
}

/// `S` whose writes and flushes time out after `timeout` without progress.
pub struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Set while a write is blocked; `None` whenever the last write made
    /// progress (or nothing was written yet).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S: Abort> SendTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        SendTimeout {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// Turns a blocked write into an error once the deadline passes; clears
    /// the deadline on progress.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.deadline = None;
            return polled;
        }
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.inner.abort_on_close();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer accepted no byte for {timeout:?} (limits.send_timeout)"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Abort + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    impl Abort for tokio::io::DuplexStream {
        fn abort_on_close(&self) {}
    }

    #[tokio::test]
    async fn a_stalled_reader_times_the_write_out() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut stream = SendTimeout::new(near, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let err = stream.write_all(&[0u8; 64 << 10]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut_off() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(1024);
        let mut stream = SendTimeout::new(near, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            total
        });
        // 8 KiB through a 1 KiB pipe at 512 B per 20 ms takes ~320 ms, over
        // the timeout in total but never 200 ms without progress.
        stream.write_all(&[0u8; 8192]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 8192);
    }
}
