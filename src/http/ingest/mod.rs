//! The ingest face: XML commands at `POST /`, `POST /token`, `GET /stats`,
//! `GET /metrics`, `GET /status`, `GET /clients/<id>`, `GET /channels` and
//! `GET /health`; with `[pusher] enabled`, Pusher's HTTP API under
//! `/apps/<app_id>/` (`crate::pusher::api`), authenticated by Pusher's
//! request signature instead of the ingest key.
//! Every other endpoint but `/health` requires the ingest key when one is
//! configured: as a bearer token, or, for reading (`GET`), as the password
//! of HTTP Basic credentials, which is what a browser opening `/status`
//! can send (see `status.rs`).
//!
//! This file holds the router and the key check; `commands.rs` the XML
//! batches (and reading a body), `token.rs` `POST /token`, `reads.rs` the
//! figures and lookups.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;

use super::error::{IngestError, Rejected};
use super::framing::FramedTwice;
use super::AppState;

mod commands;
mod reads;
mod token;

pub(crate) use commands::{read_body, refuse_declared_length};

use commands::commands;
use reads::{channel, channels, health, metrics, presence, stats};
use token::token;

/// The router of the ingest listener.
pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/", post(commands))
        .route("/token", post(token))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/status", get(super::status::page))
        .route("/clients/{id}", get(presence))
        .route("/channels", get(channels))
        .route("/channels/{*name}", get(channel))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    // Pusher's HTTP API authenticates by its own signature, not the key.
    let pusher = match state.settings.pusher.enabled {
        true => crate::pusher::api::routes(),
        false => Router::new(),
    };
    Router::new()
        .route("/health", get(health))
        .merge(guarded)
        .merge(pusher)
        .fallback(|| async {
            IngestError::NotFound("no such endpoint: POST / takes XML commands".into())
        })
        .layer(middleware::from_fn(refuse_framed_twice))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_rejections,
        ))
        .with_state(state)
}

/// Counts every [`IngestError`] reply (the key check's and the fallback's
/// included) by its code, for `cometbox_ingest_rejected_total`.
async fn count_rejections(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(Rejected(code)) = response.extensions().get::<Rejected>() {
        state.metrics.rejected(code);
    }
    response
}

/// Refuses a request that carried both `Content-Length` and
/// `Transfer-Encoding` (marked by the connection: hyper hides it, see
/// `http::framing`), before anything else looks at it.
async fn refuse_framed_twice(request: Request, next: Next) -> Response {
    if request.extensions().get::<FramedTwice>().is_some() {
        return IngestError::FramedTwice.into_response();
    }
    next.run(request).await
}

async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = &state.settings.ingest.key;
    if key.is_empty() {
        return next.run(request).await;
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let sent = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| presented_key(v, reads));
    if sent.is_some_and(|sent| constant_time_eq(sent.trim().as_bytes(), key.as_bytes())) {
        return next.run(request).await;
    }
    let mut refused = IngestError::Unauthorized.into_response();
    if reads {
        // A browser (opening /status) then asks its user for the key, and
        // sends it with the page's own requests to /stats and /health.
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(r#"Basic realm="cometbox ingest", charset="UTF-8""#),
        );
    }
    refused
}

/// The key an `Authorization` value presents: `Bearer <key>`, or, when
/// `basic` (reading requests only), `Basic base64(<any user>:<key>)`. A
/// browser's remembered Basic credentials go with every request to the
/// origin, those a form on another site makes included: they may read
/// figures, never apply commands or mint tokens.
fn presented_key(authorization: &str, basic: bool) -> Option<String> {
    if let Some(key) = authorization.strip_prefix("Bearer ") {
        return Some(key.to_owned());
    }
    let encoded = authorization.strip_prefix("Basic ").filter(|_| basic)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let credentials = String::from_utf8(decoded).ok()?;
    let (_user, key) = credentials.split_once(':')?;
    Some(key.to_owned())
}

/// Compares without returning early, so response timing does not reveal
/// how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
