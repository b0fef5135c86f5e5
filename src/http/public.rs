//! The public face: `GET /poll` for browsers, `GET /cometbox.js`, CORS, and
//! `Cache-Control: no-store` on every reply.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::error::PublicError;
use super::reply_body::ReplyBody;
use super::AppState;
use crate::hub::PollRequest;
use crate::protocol::{ChannelName, Cursor};

/// The browser class, embedded at build time so the binary serves the very
/// version it was built with.
const SCRIPT: &str = include_str!("../../client-js/cometbox.js");

/// The router of the public listener.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.settings.public.cors_origins);
    let mut router = Router::new()
        .route("/poll", get(poll))
        .route("/cometbox.js", get(script))
        .route("/health", get(|| async { "ok\n" }))
        .fallback(|| async { PublicError::NotFound })
        .with_state(state);
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.layer(SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ))
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Validated at start-up (config), so every origin is a valid header.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
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

async fn poll(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PublicError> {
    // Everything taken from the request is consumed before waiting: the
    // header values share hyper's read buffer, which would otherwise stay
    // allocated for the whole (long) wait.
    let request = admit(&state, headers, query)?;
    let reply = state.hub.poll(request).await?;
    // The body owns the poll's guard: the poll counts until it is written.
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::new(ReplyBody::new(reply.body, reply.open)),
    )
        .into_response())
}

/// Checks a poll's token and parameters; returns what the hub needs.
fn admit(
    state: &AppState,
    headers: HeaderMap,
    query: Option<String>,
) -> Result<PollRequest, PublicError> {
    if state.hub.is_shutting_down() {
        return Err(PublicError::ShuttingDown);
    }
    let params = PollParams::parse(query.as_deref().unwrap_or(""));
    let token = params.token.or_else(|| bearer(&headers)).ok_or_else(|| {
        crate::auth::TokenError::Invalid(
            "no token: pass ?token= or Authorization: Bearer <token>".into(),
        )
    })?;
    let grant = state.tokens.verify(&token)?;
    let since = match params.since.as_deref() {
        None | Some("") => None,
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
    Ok(PollRequest {
        client: grant.client,
        issued_at: grant.issued_at,
        since,
        subscribe,
        timeout,
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
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
