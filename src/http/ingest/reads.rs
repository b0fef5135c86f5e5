//! What backends and operators read: `GET /stats`, `/metrics`,
//! `/clients/<id>`, `/channels`, `/channels/<name>` and `/health`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::http::error::IngestError;
use crate::http::AppState;
use crate::hub::Stats;
use crate::protocol::{ChannelName, ClientId};
/// The `/stats` body: the hub's counters plus the server's.
#[derive(Serialize)]
pub(super) struct ServerStats {
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
    /// Pusher's webhooks' counters (as `hooks`'), when
    /// `pusher.webhook_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pusher_webhooks: Option<crate::hooks::HookStats>,
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

pub(super) async fn stats(State(state): State<AppState>) -> Result<Json<ServerStats>, IngestError> {
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
        pusher_webhooks: (state.pusher_webhooks.as_ref()).map(|w| w.hooks().stats()),
        version: env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /metrics`: OpenMetrics text (see [`crate::metrics`]).
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, IngestError> {
    let mut snapshot = crate::metrics::Snapshot::from_stats(&hub_stats(&state).await?);
    let (public, ingest) = open_connections(&state);
    (snapshot.public_connections, snapshot.ingest_connections) = (public as u64, ingest as u64);
    snapshot.bayeux_sessions = state.bayeux.as_ref().map(|b| b.sessions() as u64);
    let text = state.metrics.encode(snapshot);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

pub(super) async fn presence(
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
pub(super) async fn channels(State(state): State<AppState>) -> Result<Response, IngestError> {
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
pub(super) async fn channel(
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
pub(super) async fn health(State(state): State<AppState>) -> Response {
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
