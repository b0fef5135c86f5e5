//! The public face: what browsers talk to. `GET /poll`, `GET /events`
//! (Server-Sent Events), `GET /cometbox.js`, `GET /health`, CORS, and
//! `Cache-Control: no-store` on every reply.
//!
//! A purpose-built HTTP/1.1 server rather than a general-purpose stack:
//! the port serves a few GET requests, nearly all of them polls that wait,
//! and what a poll costs while it waits and when it is answered is the
//! product's cost. Here a waiting poll is its socket, one task, its
//! client's waiter and its timeout's timer; no read buffer, no header map,
//! no tracing span, and no second timer unless its reply is blocked
//! (`send_timeout`). See `docs/performance.md` for what this bought.
//!
//! - `request.rs`: reading a request head (`httparse`), strictly;
//! - `connection.rs`: one connection's loop: keep-alive, pipelining,
//!   timeouts, watching a waiting poll's socket, writing replies;
//! - `routes.rs`: what each path answers, poll parameters, CORS;
//! - `events.rs`: `GET /events`, a poll that goes on as a stream;
//! - `bayeux.rs`: the Bayeux path (`[bayeux]`), POST bodies and
//!   callback-polling;
//! - `response.rs`: encoding a reply.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::serve::{accept_loop, Accepted, ConnectionPolicy, SHUTDOWN_GRACE};
use super::AppState;
use crate::listener::Listener;
use connection::Connection;
use routes::Cors;

mod bayeux;
mod connection;
mod events;
mod request;
mod response;
mod routes;

pub use response::Response;

/// What every connection of the public port shares.
pub struct Face {
    state: AppState,
    cors: Cors,
    /// `request_timeout`: the most a head may take to arrive.
    header_timeout: Duration,
    max_header_bytes: usize,
    send_timeout: Duration,
    /// Bytes of request bodies being read or held at once, across every
    /// connection (`max_public_body_bytes_in_flight`): one permit a byte.
    bodies: Arc<tokio::sync::Semaphore>,
}

impl Face {
    fn new(state: AppState, policy: &ConnectionPolicy) -> Arc<Self> {
        Arc::new(Face {
            cors: Cors::new(&state.settings.public.cors_origins),
            header_timeout: policy.header_timeout,
            max_header_bytes: policy.max_header_bytes,
            send_timeout: policy.send_timeout,
            bodies: Arc::new(tokio::sync::Semaphore::new(
                state.settings.limits.max_public_body_bytes_in_flight,
            )),
            state,
        })
    }
}

/// Serves the public port on `listener` until `shutdown`, then gives open
/// connections [`SHUTDOWN_GRACE`] to finish (open polls answer at once on
/// shutdown; idle keep-alive connections close at once).
pub async fn serve(
    listener: Listener,
    state: AppState,
    policy: ConnectionPolicy,
    shutdown: CancellationToken,
) {
    let face = Face::new(state, &policy);
    let connections = TaskTracker::new();
    accept_loop(listener, &policy, &shutdown, |accepted, permit, _peer| {
        let face = face.clone();
        match accepted {
            Accepted::Tcp(stream) => connections.spawn(async move {
                Connection::run(stream, face).await;
                drop(permit);
            }),
            Accepted::Unix(stream) => connections.spawn(async move {
                Connection::run(stream, face).await;
                drop(permit);
            }),
        };
    })
    .await;
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = policy.name,
            "connections still open after {SHUTDOWN_GRACE:?}; closing them"
        );
    }
}

/// Serves one already-accepted TCP connection as the public port would
/// (for tests that need a state the listener would not accept with, such
/// as one already shutting down).
pub async fn serve_connection(stream: tokio::net::TcpStream, state: AppState) {
    let limits = &state.settings.limits;
    let policy = ConnectionPolicy {
        connections: Arc::new(tokio::sync::Semaphore::new(1)),
        header_timeout: limits.request_timeout,
        max_header_bytes: limits.max_header_bytes,
        send_timeout: limits.send_timeout,
        name: "public",
    };
    Connection::run(stream, Face::new(state, &policy)).await;
}
