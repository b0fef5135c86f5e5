//! The ingest face: XML commands at `POST /`, `POST /token`, `GET /stats`,
//! `GET /metrics`, `GET /status`, `GET /clients/<id>` and `GET /health`.
//! Every endpoint but `/health` requires the ingest key when one is
//! configured: as a bearer token, or, for reading (`GET`), as the password
//! of HTTP Basic credentials, which is what a browser opening `/status`
//! can send (see `status.rs`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::StreamExt;
use serde::Serialize;

use super::error::{xml, IngestError, Rejected};
use super::framing::FramedTwice;
use super::AppState;
use crate::hub::Stats;
use crate::protocol::ids::is_valid_channel_grant;
use crate::protocol::ingest::{self, ParseLimits};
use crate::protocol::{ChannelName, ClientId};

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
    Router::new()
        .route("/health", get(health))
        .merge(guarded)
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

/// `POST /`: parse the whole body, then apply every command or none.
async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    if state.hub.is_shutting_down() {
        return Err(IngestError::ShuttingDown);
    }
    check_xml_content_type(&headers)?;
    let limits = &state.settings.limits;
    let body = refuse_declared_length(
        &headers,
        body,
        limits.max_body_bytes,
        limits.request_timeout,
    )?;
    let _slot = state.ingest_slots.try_acquire().map_err(|_| {
        IngestError::Overloaded(format!(
            "more than {} ingest requests in flight",
            state.settings.limits.max_ingest_in_flight
        ))
    })?;
    let body = read_body(
        body,
        &headers,
        limits.max_body_bytes,
        limits.request_timeout,
    )
    .await?;
    let parse_limits = ParseLimits {
        max_payload_bytes: limits.max_payload_bytes,
        max_commands: limits.max_batch_commands,
    };
    let commands = ingest::parse(&body, parse_limits)?;
    let accepted = state.hub.apply(commands).await?;
    Ok(xml(
        StatusCode::OK,
        format!(r#"<ok accepted="{accepted}"/>"#),
    ))
}

/// XML by any of its media types; a missing Content-Type is taken as XML
/// (documented), anything else is refused before the body is read.
fn check_xml_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let value = value.to_str().unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(essence.as_str(), "application/xml" | "text/xml") || essence.ends_with("+xml") {
        Ok(())
    } else {
        Err(IngestError::UnsupportedMediaType(value.to_owned()))
    }
}

/// Over-limit bodies up to this size are read to the end and discarded, so
/// that a client still sending sees the 413 rather than a reset connection
/// (closing a socket with unread data resets it). Larger ones are cut off.
const MAX_DRAINED_BODY_BYTES: u64 = 16 << 20;

/// A body whose declared `Content-Length` is over `max` is answered `413`
/// at once, before any of it is read. The connection then closes; what the
/// client still sends (up to [`MAX_DRAINED_BODY_BYTES`], within `timeout`) is read and
/// dropped in the background so that it reads the reply instead of a reset.
fn refuse_declared_length(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Body, IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|len| *len > max as u64) else {
        return Ok(body);
    };
    if declared <= MAX_DRAINED_BODY_BYTES {
        tokio::spawn(drain(body, timeout));
    }
    Err(IngestError::DeclaredTooLarge(format!(
        "Content-Length {declared} is over limits.max_body_bytes ({max} bytes)"
    )))
}

/// Reads and drops `body` (at most [`MAX_DRAINED_BODY_BYTES`] bytes, bounded by the
/// declared length already checked) for at most `timeout`.
async fn drain(body: Body, timeout: Duration) {
    let mut body = body.into_data_stream();
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}

/// Reads at most `max` bytes within `timeout`; a declared length over the
/// limit is refused before reading anything.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, IngestError> {
    let too_large =
        || IngestError::TooLarge(format!("body over limits.max_body_bytes ({max} bytes)"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_DRAINED_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let reading = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                IngestError::InvalidRequest(format!("could not read the body: {e}"))
            })?;
            seen += chunk.len() as u64;
            if seen > MAX_DRAINED_BODY_BYTES {
                return Err(too_large());
            }
            if seen <= max as u64 {
                collected.extend_from_slice(&chunk);
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, reading)
        .await
        .map_err(|_| IngestError::BodyTimeout(timeout))??;
    if seen > max as u64 {
        return Err(too_large());
    }
    Ok(collected.freeze())
}

/// A token request is a client id, a ttl and at most
/// `max_channels_per_client` grants of at most 128 bytes each: 64 KiB is
/// room for the default 256 grants with their `channel=` and escapes.
const TOKEN_BODY_BYTES: usize = 64 << 10;

/// `POST /token`: `client`, optional `ttl` (seconds), repeated `channel`
/// and `publish` (Bayeux publish grants), from the query string and/or a
/// form-encoded body.
async fn token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let timeout = state.settings.limits.request_timeout;
    let body = refuse_declared_length(&headers, body, TOKEN_BODY_BYTES, timeout)?;
    let body = read_body(body, &headers, TOKEN_BODY_BYTES, timeout).await?;
    let query = query.unwrap_or_default();
    let params = TokenParams::parse(&query, &body, state.settings.limits.max_channels_per_client)?;
    let (client, ttl, channels, publish) =
        (params.client, params.ttl, params.channels, params.publish);
    let client =
        client.ok_or_else(|| IngestError::InvalidRequest("missing parameter client".into()))?;
    let client = ClientId::parse(&client).map_err(|e| IngestError::InvalidId(e.to_string()))?;
    let auth = &state.settings.auth;
    let ttl = match ttl {
        None => auth.token_ttl,
        Some(s) => match s.parse::<u64>() {
            Ok(secs) if secs > 0 => Duration::from_secs(secs).min(auth.max_token_ttl),
            _ => {
                return Err(IngestError::InvalidRequest(format!(
                    "ttl: {s:?} is not a whole number of seconds above 0"
                )))
            }
        },
    };
    let grants = channels.iter().chain(&publish);
    if let Some(bad) = grants.into_iter().find(|c| !is_valid_channel_grant(c)) {
        return Err(IngestError::InvalidId(format!(
            "invalid channel grant {bad:?}: a channel name, or a prefix ending in *"
        )));
    }
    // A grant inside the reserved namespace is refused outright; a broader
    // one (`*`, `/*`) stays valid: the publish itself is refused there.
    let reserved_grant = |g: &&String| g.starts_with("/cometbox") || g.starts_with("/meta");
    if let Some(reserved) = publish.iter().find(reserved_grant) {
        return Err(IngestError::InvalidId(format!(
            "publish grant {reserved:?} names a reserved channel: /meta/ and /cometbox/ carry the server's own messages"
        )));
    }
    let (jwt, expires) = state
        .tokens
        .mint_with_publish(&client, ttl, channels, publish);
    Ok(token_reply(&headers, &jwt, expires))
}

/// The minted token as the `Accept` header asks: JSON
/// (`{"token": …, "expires": …}`), the bare token (`text/plain`), or by
/// default XML like every other ingest reply.
fn token_reply(headers: &HeaderMap, jwt: &str, expires: u64) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wants = |kind: &str| accept.split(',').any(|t| t.trim().starts_with(kind));
    if wants("application/json") {
        let body = serde_json::json!({"token": jwt, "expires": expires}).to_string();
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else if wants("text/plain") {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            jwt.to_owned(),
        )
            .into_response()
    } else {
        xml(
            StatusCode::OK,
            format!(r#"<token expires="{expires}">{jwt}</token>"#),
        )
    }
}

/// `POST /token`'s parameters, from the query string and the form body.
struct TokenParams {
    client: Option<String>,
    ttl: Option<String>,
    channels: Vec<String>,
    publish: Vec<String>,
}

impl TokenParams {
    /// `client` and `ttl` at most once each (a second one is refused rather
    /// than one of them silently winning); `channel` repeated, at most
    /// `max_channels` times, since a token cannot usefully grant more
    /// channels than its client may join.
    fn parse(query: &str, body: &[u8], max_channels: usize) -> Result<Self, IngestError> {
        let pairs = form_urlencoded::parse(query.as_bytes()).chain(form_urlencoded::parse(body));
        let mut params = TokenParams {
            client: None,
            ttl: None,
            channels: Vec::new(),
            publish: Vec::new(),
        };
        for (key, value) in pairs {
            let slot = match &*key {
                "client" => &mut params.client,
                "ttl" => &mut params.ttl,
                "channel" if params.channels.len() >= max_channels => {
                    return Err(IngestError::TooLarge(format!(
                        "more than {max_channels} channel grants (limits.max_channels_per_client)"
                    )))
                }
                "channel" => {
                    params.channels.push(value.into_owned());
                    continue;
                }
                "publish" if params.publish.len() >= max_channels => {
                    return Err(IngestError::TooLarge(format!(
                        "more than {max_channels} publish grants (limits.max_channels_per_client)"
                    )))
                }
                "publish" => {
                    params.publish.push(value.into_owned());
                    continue;
                }
                other => {
                    return Err(IngestError::InvalidRequest(format!(
                        "unknown parameter {other:?}: expected client, ttl, channel, publish"
                    )))
                }
            };
            if slot.is_some() {
                return Err(IngestError::InvalidRequest(format!(
                    "parameter {key} given twice"
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(params)
    }
}

/// The `/stats` body: the hub's counters plus the server's.
#[derive(Serialize)]
struct ServerStats {
    #[serde(flatten)]
    hub: Stats,
    /// Open public connections.
    connections: usize,
    max_connections: usize,
    ingest_connections: usize,
    max_ingest_connections: usize,
    /// Each `[[bridge]]`: state and counters.
    bridges: Vec<crate::bridge::BridgeStats>,
    /// Bayeux sessions live on this node, when `[bayeux]` is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    bayeux_sessions: Option<usize>,
    version: &'static str,
}

/// The hub's counters (a walk over every client off the async workers, or
/// the cluster's figures from Redis).
async fn hub_stats(state: &AppState) -> Result<Stats, IngestError> {
    state
        .hub
        .current_stats()
        .await
        .map_err(|e| IngestError::StorageUnavailable(e.to_string()))
}

/// Open connections of the public and the ingest listener.
fn open_connections(state: &AppState) -> (usize, usize) {
    (
        state.max_connections - state.connections.available_permits(),
        state.settings.limits.max_ingest_connections - state.ingest_connections.available_permits(),
    )
}

async fn stats(State(state): State<AppState>) -> Result<Json<ServerStats>, IngestError> {
    let hub_stats = hub_stats(&state).await?;
    let (connections, ingest_connections) = open_connections(&state);
    Ok(Json(ServerStats {
        hub: hub_stats,
        connections,
        max_connections: state.max_connections,
        ingest_connections,
        max_ingest_connections: state.settings.limits.max_ingest_connections,
        bridges: state.bridges.iter().map(|b| b.snapshot()).collect(),
        bayeux_sessions: state.bayeux.as_ref().map(|b| b.sessions()),
        version: env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /metrics`: OpenMetrics text (see [`crate::metrics`]).
async fn metrics(State(state): State<AppState>) -> Result<Response, IngestError> {
    let mut snapshot = crate::metrics::Snapshot::from_stats(&hub_stats(&state).await?);
    let (public, ingest) = open_connections(&state);
    (snapshot.public_connections, snapshot.ingest_connections) = (public as u64, ingest as u64);
    snapshot.bayeux_sessions = state.bayeux.as_ref().map(|b| b.sessions() as u64);
    let text = state.metrics.encode(snapshot);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

async fn presence(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, IngestError> {
    let client = ClientId::parse(&id).map_err(|e| IngestError::InvalidId(e.to_string()))?;
    let presence = state
        .hub
        .current_presence(&client)
        .await
        .map_err(|e| IngestError::StorageUnavailable(e.to_string()))?
        .ok_or_else(|| IngestError::NotFound(format!("no client {id:?}")))?;
    Ok(Json(presence).into_response())
}

/// `GET /channels`: every channel with members, and how many (cluster-wide
/// on Redis), sorted by name.
async fn channels(State(state): State<AppState>) -> Result<Response, IngestError> {
    let channels = state
        .hub
        .current_channels()
        .await
        .map_err(|e| IngestError::StorageUnavailable(e.to_string()))?;
    Ok(Json(ChannelList { channels }).into_response())
}

/// The `GET /channels` body (a struct, so its members keep their order).
#[derive(serde::Serialize)]
struct ChannelList {
    channels: Vec<crate::hub::ChannelSummary>,
}

/// `GET /channels/<name>` (the name percent-encoded, or as it is after the
/// slash: `/channels//chat/room` is `/chat/room`): its members and how many
/// hold a poll.
async fn channel(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, IngestError> {
    let channel = ChannelName::parse(&name).map_err(|e| IngestError::InvalidId(e.to_string()))?;
    let detail = state
        .hub
        .current_channel(&channel)
        .await
        .map_err(|e| IngestError::StorageUnavailable(e.to_string()))?
        .ok_or_else(|| IngestError::NotFound(format!("no members in channel {name:?}")))?;
    Ok(Json(detail).into_response())
}

/// `GET /health`: `ok`, or `503 degraded` while the store (Redis) cannot be
/// reached; the server keeps running and recovers by itself.
async fn health(State(state): State<AppState>) -> Response {
    if state.hub.storage_healthy() {
        "ok\n".into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "degraded: storage unavailable\n",
        )
            .into_response()
    }
}
