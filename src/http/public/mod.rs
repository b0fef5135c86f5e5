//! The public face: what browsers talk to. `GET /poll`, `GET /events`
//! (Server-Sent Events), `GET /ws` (WebSocket), `GET /cometbox.js`, `GET /health`, CORS, and
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
//! Dependencies point one way, from this file down:
//!
//! - here: accepting connections, and each connection's loop (read a
//!   request, route it, write the reply, keep alive or close);
//! - `routes.rs`: the router: what each path answers, dispatching to the
//!   transports;
//! - `events.rs`: `GET /events`, a poll that goes on as a stream;
//! - `ws/`: `GET /ws`, a poll that goes on as a WebSocket, with frames
//!   from the browser (subscribe, unsubscribe, publish);
//! - `pusher_ws/`: `GET /app/<key>`, the Pusher Channels protocol over a
//!   WebSocket (`[pusher]`), on the same framing;
//! - `bayeux.rs`: the Bayeux path (`[bayeux]`), POST bodies and
//!   callback-polling;
//! - `connection.rs`: one connection's I/O: reading heads and bodies,
//!   timeouts, watching a waiting poll's socket, writing replies;
//! - the shared vocabulary below them all: `face.rs` (what connections
//!   share), `admit.rs` (a poll's token and parameters), `cors.rs`,
//!   `routed.rs` (where a request went), `error.rs` (refusals),
//!   `request.rs` (reading a head, strictly, with `httparse`) and
//!   `response.rs` (encoding a reply).
//!
//! Transports never import the router, and the connection knows neither.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::serve::{accept_loop, Accepted, ConnectionPolicy, SHUTDOWN_GRACE};
use super::AppState;
use crate::listener::Listener;
use connection::{Connection, Session, Socket};
use face::Face;
use request::Method;
use routed::Routed;
use tokio::sync::OwnedSemaphorePermit;

mod admit;
mod bayeux;
mod connection;
mod cors;
mod error;
mod events;
mod face;
mod pusher_ws;
mod request;
mod response;
mod routed;
mod routes;
mod ws;

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
        let (face, tracker) = (face.clone(), connections.clone());
        match accepted {
            Accepted::Tcp(stream) => {
                connections.spawn(serve_socket(stream, face, permit, tracker));
            }
            Accepted::Unix(stream) => {
                connections.spawn(serve_socket(stream, face, permit, tracker));
            }
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

/// Serves one connection, holding its permit until it ends: its requests,
/// then, if a route handed the socket over (a WebSocket), that session as
/// a task of its own (tracked with the connections), so the requests'
/// loop is freed while the socket is held.
async fn serve_socket<S: Socket>(
    socket: S,
    face: Arc<Face>,
    permit: OwnedSemaphorePermit,
    connections: TaskTracker,
) {
    if let Some(session) = serve_requests(socket, face).await {
        connections.spawn(async move {
            session.await;
            drop(permit);
        });
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
    if let Some(session) = serve_requests(stream, Face::new(state, &policy)).await {
        session.await;
    }
}

/// Serves requests on `socket` one after another (keep-alive, pipelining)
/// until either side closes it: each head read, routed, and its reply
/// written. Returns the session of a protocol the socket was handed to.
async fn serve_requests<S: Socket>(socket: S, face: Arc<Face>) -> Option<Session> {
    let mut connection = Connection::new(socket, face);
    while let Some(head) = connection.next_request().await {
        let head_only = head.method == Method::Head;
        let keep_alive = head.keep_alive;
        let (response, poll) = match routes::route(&mut connection, head).await {
            Routed::Reply { response, poll } => (response, poll),
            // The client left while its poll waited, or a stream ended.
            Routed::ClientLeft | Routed::Streamed => return None,
            Routed::Upgraded => return connection.into_session(),
            Routed::Close(response) => {
                connection.fail(response).await;
                return None;
            }
        };
        let close = connection.closes_after(keep_alive);
        let sent = connection.send(&response, head_only, close).await;
        // The poll counted (against `max_polls_per_client`, and as
        // presence) until its reply was written or given up on.
        drop(poll);
        if sent.is_err() {
            return None;
        }
        if close {
            connection.close().await;
            return None;
        }
    }
    None
}
