//! What the public port answers: `GET /poll` (the hub's long-poll),
//! `GET /events`, the Bayeux path (`bayeux.rs`) when enabled,
//! `GET /cometbox.js`, `GET /health`, CORS preflights, and `404`/`405` with
//! their codes for everything else. `HEAD` is answered as `GET` without the
//! body, except where a `GET` does something: `HEAD /poll` and
//! `HEAD /events` check the token and parameters and answer the `GET`'s
//! status and headers, without a poll (no mailbox made, no channel joined,
//! no hook asked, no message marked carried, no presence).

use std::time::Duration;

use super::connection::{Connection, Socket};
use super::request::{Head, Method};
use super::response::{AllowOrigin, Response};
use super::Face;
use crate::http::error::PublicError;
use crate::hub::{OpenPoll, PollRequest};
use crate::protocol::{ChannelName, Cursor};

/// The browser class, embedded at build time so the binary serves the very
/// version it was built with.
const SCRIPT: &str = include_str!("../../../client-js/cometbox.js");

/// What a preflight answers, besides the origin.
const PREFLIGHT: &[(&str, &str)] = &[
    ("access-control-allow-methods", "GET,OPTIONS"),
    ("access-control-allow-headers", "authorization,content-type"),
    ("access-control-max-age", "600"),
];

/// Where a request went.
pub enum Routed {
    /// A reply to write; `poll` keeps a poll counted until it is written.
    Reply {
        response: Response,
        poll: Option<OpenPoll>,
    },
    /// The client closed its side while its poll waited: nothing to write.
    ClientLeft,
    /// A stream was written and ended: the connection closes.
    Streamed,
    /// A last reply, after which the connection closes (a request body
    /// that could not be read).
    Close(Response),
}

impl From<Response> for Routed {
    fn from(response: Response) -> Self {
        Routed::Reply {
            response,
            poll: None,
        }
    }
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
    let allow_origin = face.cors.allow(head.origin.take(), false);
    let result = match (head.path(), method) {
        ("/poll" | "/events", Method::Head) => head_only(&face, &head),
        ("/poll", Method::Get) => poll(connection, &face, head).await,
        ("/events", Method::Get) => {
            super::events::stream(connection, &face, head, allow_origin.clone()).await
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

/// Origins refused so far are logged once each, up to this many (an
/// `Origin` header is the client's to invent).
const REFUSED_ORIGINS_LOGGED: usize = 64;

/// The configured CORS origins.
pub struct Cors {
    /// `*` was configured.
    any: bool,
    origins: Vec<String>,
    /// Refused origins already logged.
    logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Cors {
    /// From `[public] cors_origins` (validated at start-up).
    pub fn new(origins: &[String]) -> Self {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.to_vec(),
            logged: Default::default(),
        }
    }

    /// What `Access-Control-Allow-Origin` says to a request from `origin`;
    /// `credentials` (Bayeux): browsers refuse `*` with credentials, so an
    /// allowed origin is always echoed. A refused origin is logged once.
    /// No copy of the origin is made on the way (this runs on every poll of
    /// a cross-origin page).
    fn allow(&self, origin: Option<String>, credentials: bool) -> Option<AllowOrigin> {
        if self.any && !credentials {
            return Some(AllowOrigin::Any);
        }
        let origin = origin?;
        if self.any || self.origins.contains(&origin) {
            return Some(AllowOrigin::Echo(origin));
        }
        self.note_refused(origin);
        None
    }

    /// Logs a refused origin the first time it is seen.
    fn note_refused(&self, origin: String) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() < REFUSED_ORIGINS_LOGGED && !logged.contains(&origin) {
            tracing::warn!(
                origin,
                "a page on another origin is refused: add it to [public] cors_origins (COMETBOX_PUBLIC__CORS_ORIGINS) to allow it; logged once per origin"
            );
            logged.insert(origin);
        }
    }
}

/// `GET /poll`'s query parameters.
#[derive(Default)]
struct PollParams {
    token: Option<String>,
    since: Option<String>,
    channels: Option<String>,
    timeout: Option<String>,
}

impl PollParams {
    /// Reads the known parameters; others (cache busters) are ignored.
    /// Values are percent-decoded only when they hold an escape: a token is
    /// plain base64url, and this runs on every poll.
    fn parse(query: &str) -> Self {
        let mut params = PollParams::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "token" => &mut params.token,
                "since" => &mut params.since,
                "channels" => &mut params.channels,
                "timeout" => &mut params.timeout,
                _ => continue,
            };
            slot.get_or_insert_with(|| {
                if value.contains(['%', '+']) {
                    let value = value.replace('+', " ");
                    percent_encoding::percent_decode_str(&value)
                        .decode_utf8_lossy()
                        .into_owned()
                } else {
                    value.to_owned()
                }
            });
        }
        params
    }
}

/// Checks a poll's (or a stream's) token and parameters; returns what the
/// hub needs, and when the token expires.
pub(super) fn admit(face: &Face, head: &Head) -> Result<(PollRequest, u64), PublicError> {
    let state = &face.state;
    if state.hub.is_shutting_down() {
        return Err(PublicError::ShuttingDown);
    }
    let params = PollParams::parse(head.query());
    let token = params
        .token
        .or_else(|| bearer(head.authorization.as_deref()))
        .ok_or_else(|| {
            crate::auth::TokenError::Invalid(
                "no token: pass ?token= or Authorization: Bearer <token>".into(),
            )
        })?;
    let grant = state.tokens.verify(&token)?;
    // `Last-Event-ID` wins: an `EventSource` reconnects to the URL it was
    // opened with, `since` included, and says in `Last-Event-ID` where it
    // stopped; `since` would replay what it already has. An empty one (no
    // event yet) is no cursor.
    let since = head
        .last_event_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .or(params.since.as_deref());
    let from_now = since == Some("now");
    let since = match since {
        None | Some("") | Some("now") => None,
        Some(s) => {
            Some(Cursor::parse(s).map_err(|e| PublicError::InvalidRequest(format!("since: {e}")))?)
        }
    };
    let timeout = params.timeout.as_deref().map(parse_timeout).transpose()?;
    let mut subscribe = Vec::new();
    for name in params
        .channels
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|n| !n.is_empty())
    {
        let channel = ChannelName::parse(name)
            .map_err(|e| PublicError::InvalidRequest(format!("channels: {e}")))?;
        if !grant.allows(&channel) {
            return Err(PublicError::ChannelForbidden(name.to_owned()));
        }
        subscribe.push(channel);
    }
    let request = PollRequest {
        client: grant.client,
        issued_at: grant.issued_at,
        since,
        subscribe,
        timeout,
        connect_ext: None,
        open_only: false,
        from_now,
    };
    Ok((request, grant.expires_at))
}

fn bearer(authorization: Option<&str>) -> Option<String> {
    let (scheme, token) = authorization?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `timeout` in seconds, fractions allowed (`0` answers at once).
fn parse_timeout(s: &str) -> Result<Duration, PublicError> {
    s.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(86_400.0)))
        .ok_or_else(|| {
            PublicError::InvalidRequest(format!("timeout: {s:?} is not a number of seconds"))
        })
}
