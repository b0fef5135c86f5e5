//! The accept loop: one HTTP/1.1 connection task per accepted socket.
//!
//! Written against hyper directly rather than `axum::serve` for what a
//! long-poll server needs: a connection cap taken *before* accept (so
//! overload waits in the kernel backlog instead of failing), a deadline for
//! request headers (slow-loris clients), a bound on their size, a deadline
//! for replies a client stops reading ([`SendTimeout`]), and a graceful
//! drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use tower::ServiceExt;

use super::framing::{FramedTwice, Verdict, Watched};
use super::send_timeout::{Abort, SendTimeout};
use crate::listener::Listener;

/// How long open connections get to finish once shutdown starts. Open polls
/// answer at once on shutdown, so this only bounds a stuck client.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every connection of one listener shares.
#[derive(Clone)]
pub struct ConnectionPolicy {
    /// Permits for open connections of this listener.
    pub connections: Arc<Semaphore>,
    /// Deadline for a request's headers.
    pub header_timeout: Duration,
    /// Largest request line plus headers (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// Longest a reply may make no progress (`send_timeout`).
    pub send_timeout: Duration,
    /// For log lines: "public" or "ingest".
    pub name: &'static str,
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: Listener,
    router: Router,
    policy: ConnectionPolicy,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    accept_loop(listener, &policy, &shutdown, |accepted, permit, peer| {
        let span = tracing::debug_span!("conn", listener = policy.name, peer = %Peer(peer));
        match accepted {
            Accepted::Tcp(stream) => {
                spawn_connection(stream, &router, &policy, &graceful, permit, span)
            }
            Accepted::Unix(stream) => {
                spawn_connection(stream, &router, &policy, &graceful, permit, span)
            }
        }
    })
    .await;
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = policy.name,
            "connections still open after {SHUTDOWN_GRACE:?}; closing them"
        );
    }
}

/// Accepts connections until `shutdown`, each under one of the policy's
/// permits, and hands each to `serve_one` with its peer's address (`None`:
/// a Unix socket); closes the listener on return. A face that logs per
/// connection makes its span from the address; the public face, whose
/// connections are mostly held polls, makes none.
pub async fn accept_loop(
    listener: Listener,
    policy: &ConnectionPolicy,
    shutdown: &CancellationToken,
    mut serve_one: impl FnMut(Accepted, OwnedSemaphorePermit, Option<std::net::SocketAddr>),
) {
    loop {
        let permit = tokio::select! {
            permit = policy.connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((io, peer)) => serve_one(io, permit, peer),
            Err(e) => {
                // Typically EMFILE: out of file descriptors. Back off briefly
                // instead of spinning; the permit is released on the way.
                tracing::warn!(listener = policy.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection, of either kind of listener.
pub enum Accepted {
    /// From a TCP listener.
    Tcp(tokio::net::TcpStream),
    /// From a Unix socket listener.
    Unix(tokio::net::UnixStream),
}

/// A peer as a connection's span names it.
struct Peer(Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

async fn accept(listener: &Listener) -> std::io::Result<(Accepted, Option<std::net::SocketAddr>)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            // Replies are small and latency is the point: no Nagle delay.
            stream.set_nodelay(true)?;
            Ok((Accepted::Tcp(stream), Some(peer)))
        }
        Listener::Unix { listener, .. } => {
            let (stream, _) = listener.accept().await?;
            Ok((Accepted::Unix(stream), None))
        }
    }
}

/// Serves one connection on its own task, holding its permit until it ends.
fn spawn_connection<S>(
    stream: S,
    router: &Router,
    policy: &ConnectionPolicy,
    graceful: &GracefulShutdown,
    permit: OwnedSemaphorePermit,
    span: Span,
) where
    S: AsyncRead + AsyncWrite + Abort + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_timeout)
        // Past the limit hyper answers 431 and closes. The read buffer is
        // capped too (hyper's floor is 8 KiB): by default it grows to
        // ~400 KiB, which an unfinished header could fill on every
        // connection. The cap also bounds what a reply queues in user space.
        .max_header_size(policy.max_header_bytes)
        .max_buf_size(policy.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper hides a request framed twice (see `framing.rs`): the
    // connection's bytes are watched, and such a request is marked for the
    // router to refuse.
    let verdict = Arc::new(Verdict::default());
    let service = router.clone().map_request({
        let verdict = verdict.clone();
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            if verdict.next_is_framed_twice() {
                request.extensions_mut().insert(FramedTwice);
            }
            request
        }
    });
    let io = Watched::new(
        SendTimeout::new(stream, policy.send_timeout),
        verdict,
        policy.max_header_bytes,
    );
    let connection = graceful
        .watch(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)));
    tokio::spawn(
        async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        }
        .instrument(span),
    );
}
