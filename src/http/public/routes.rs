//! What the public port answers: `GET /poll` (the hub's long-poll),
//! `GET /events`, the Bayeux path (`bayeux.rs`) when enabled,
//! `GET /cometbox.js`, `GET /health`, CORS preflights, and `404`/`405` with
//! their codes for everything else. `HEAD` is answered as `GET` without the
//! body, except where a `GET` does something: `HEAD /poll` and
//! `HEAD /events` check the token and parameters and answer the `GET`'s
//! status and headers, without a poll (no mailbox made, no channel joined,
//! no hook asked, no message marked carried, no presence).

use super::admit::admit;
use super::connection::{Connection, Socket};
use super::error::PublicError;
use super::face::Face;
use super::request::{Head, Method};
use super::response::{AllowOrigin, Response};
use super::routed::Routed;

/// The browser class, embedded at build time so the binary serves the very
/// version it was built with.
const SCRIPT: &str = include_str!("../../../client-js/cometbox.js");

/// What a preflight answers, besides the origin.
const PREFLIGHT: &[(&str, &str)] = &[
    ("access-control-allow-methods", "GET,OPTIONS"),
    ("access-control-allow-headers", "authorization,content-type"),
    ("access-control-max-age", "600"),
];

/// The `<key>` of `GET /app/<key>` when `[pusher]` is enabled.
fn pusher_key<'p>(face: &Face, path: &'p str) -> Option<&'p str> {
    let key = path.strip_prefix("/app/")?;
    (face.state.settings.pusher.enabled && !key.is_empty() && !key.contains('/')).then_some(key)
}

/// Answers one request.
pub async fn route<S: Socket>(connection: &mut Connection<S>, mut head: Head) -> Routed {
    let face = connection.face().clone();
    if let Some(bayeux) = &face.state.bayeux {
        if bayeux.config().serves(head.path()) {
            // Boxed: a Bayeux request's state (its batch, hook requests,
            // a held connect) would otherwise be part of every connection's
            // future, and so of every held poll's memory.
            return Box::pin(bayeux_route(connection, &face, bayeux, head)).await;
        }
    }
    let method = head.method;
    if method == Method::Options {
        return preflight(
            face.cors.allow(head.origin.clone(), false),
            head.origin,
            PREFLIGHT,
        );
    }
    // A WebSocket upgrade's Origin is judged by its handshake (the site's
    // own pages send one too, which CORS would log as refused).
    let websocket = head.upgrade.as_ref().is_some_and(|u| u.websocket);
    let allow_origin = match websocket {
        true => None,
        false => face.cors.allow(head.origin.take(), false),
    };
    let result = match (head.path(), method) {
        ("/poll" | "/events", Method::Head) => head_only(&face, &head),
        ("/poll", Method::Get) => poll(connection, &face, head).await,
        ("/events", Method::Get) => {
            super::events::stream(connection, &face, head, allow_origin.clone()).await
        }
        // Boxed, as Bayeux is: a socket's state (the framing, the session,
        // a frame being answered) would otherwise be part of every held
        // poll's future (`a_connections_future_stays_small`).
        ("/ws", Method::Get) => Box::pin(super::ws::serve(connection, &face, head)).await,
        ("/ws", _) => Err(PublicError::WsMethod),
        (path, Method::Get) if pusher_key(&face, path).is_some() => {
            let key = pusher_key(&face, path).unwrap_or_default().to_owned();
            Box::pin(super::pusher_ws::serve(connection, &face, head, &key)).await
        }
        ("/cometbox.js", Method::Get | Method::Head) => Ok(Routed::from(Response::ok(
            "text/javascript; charset=utf-8",
            SCRIPT,
        ))),
        // `degraded` while the store (Redis) cannot be reached, as on the
        // ingest port: one atomic load.
        ("/health", Method::Get | Method::Head) if !face.state.hub.storage_healthy() => {
            Ok(Routed::from(Response {
                status: 503,
                ..Response::ok("text/plain", "degraded: storage unavailable\n")
            }))
        }
        ("/health", Method::Get | Method::Head) => {
            Ok(Routed::from(Response::ok("text/plain", "ok\n")))
        }
        ("/poll" | "/events" | "/cometbox.js" | "/health", _) => Err(PublicError::MethodNotAllowed),
        _ => Err(PublicError::NotFound),
    };
    let mut routed = result.unwrap_or_else(|e| Routed::from(e.response()));
    if let Routed::Reply { response, .. } = &mut routed {
        response.allow_origin = allow_origin;
    }
    routed
}

/// The Bayeux path: CORS with credentials, then `bayeux.rs`.
async fn bayeux_route<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    bayeux: &crate::bayeux::Bayeux,
    mut head: Head,
) -> Routed {
    if head.method == Method::Options {
        let allowed = face.cors.allow(head.origin.clone(), true);
        return preflight(allowed, head.origin, super::bayeux::PREFLIGHT);
    }
    let allow_origin = face.cors.allow(head.origin.take(), true);
    let result = match head.method {
        Method::Get | Method::Head | Method::Post => {
            super::bayeux::serve(connection, face, bayeux, head).await
        }
        _ => Err(PublicError::MethodNotAllowed),
    };
    let mut routed = result.unwrap_or_else(|e| Routed::from(e.response()));
    if let Routed::Reply { response, .. } | Routed::Close(response) = &mut routed {
        if allow_origin.is_some() && response.extra.is_empty() {
            response.extra = super::bayeux::CREDENTIALS;
        }
        response.allow_origin = allow_origin;
    }
    routed
}

/// `HEAD /poll` and `HEAD /events`: the `GET`'s refusal, or its status and
/// content type, and nothing done.
fn head_only(face: &Face, head: &Head) -> Result<Routed, PublicError> {
    admit(face, head)?;
    let content_type = if head.path() == "/events" {
        "text/event-stream"
    } else {
        "application/json"
    };
    Ok(Routed::from(Response::head_of(content_type)))
}

async fn poll<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    head: Head,
) -> Result<Routed, PublicError> {
    let (request, _) = admit(face, &head)?;
    // Nothing of the request is kept while the poll waits.
    drop(head);
    let Some(reply) = connection.wait_for(face.state.hub.poll(request)).await else {
        return Ok(Routed::ClientLeft);
    };
    let reply = reply?;
    Ok(Routed::Reply {
        response: Response::ok("application/json", reply.body),
        poll: Some(reply.open),
    })
}

/// An `OPTIONS` request. A preflight from an allowed origin gets the
/// CORS headers; from any other origin a `403 cors-forbidden` that names
/// `cors_origins` (a browser shows only "CORS error", so the server says
/// it, and logs it once per origin). Without `Origin` it is no preflight:
/// `200` with `Allow`.
fn preflight(
    allowed: Option<AllowOrigin>,
    origin: Option<String>,
    headers: &'static [(&'static str, &'static str)],
) -> Routed {
    match (allowed, origin) {
        (Some(allow), _) => {
            let mut response = Response {
                extra: headers,
                ..Response::ok("text/plain", "")
            };
            response.allow_origin = Some(allow);
            Routed::from(response)
        }
        (None, Some(origin)) => Routed::from(PublicError::CorsForbidden(origin).response()),
        (None, None) => Routed::from(Response {
            extra: &[("allow", "GET, HEAD, OPTIONS")],
            ..Response::ok("text/plain", "")
        }),
    }
}
