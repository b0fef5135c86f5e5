//! Pusher's HTTP API on the ingest listener (with `[pusher] enabled`):
//! `POST /apps/<app_id>/events`, `POST /apps/<app_id>/batch_events`,
//! `GET /apps/<app_id>/channels`, `GET /apps/<app_id>/channels/<name>` and
//! `GET /apps/<app_id>/channels/<name>/users`.
//!
//! Every request is authenticated by Pusher's signature
//! ([`super::signing::verify_request`]), not by the ingest key: the
//! official SDKs cannot send a bearer key, and the signature already proves
//! the sender holds the app secret. The rule that an ingest listener open
//! to the network needs `ingest.key` still holds (the other endpoints need
//! it), and there the default `pusher.secret` is refused at start-up, so
//! that a publicly known secret never guards a network port.
//!
//! An event is an ordinary channel message: `Command::Message` to the
//! channel with the event's name, its `data` as the payload (JSON when it
//! parses as JSON, else a string), and its `socket_id` as `exclude`. A
//! batch (every channel of an event, or every event of `batch_events`) is
//! one `hub.apply`: all of it is applied, or none. Errors answer with a
//! status and a text message, as Pusher's API does.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Map, Value};

use super::signing::{is_socket_id, verify_request};
use crate::http::error::{IngestError, Rejected};
use crate::http::ingest::{read_body, refuse_declared_length};
use crate::http::AppState;
use crate::hub::ApplyError;
use crate::protocol::ingest::event_name;
use crate::protocol::{ChannelName, Command, Payload, Target};

/// Most channels one event may name (Pusher's limit).
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Most events in one `batch_events` (Pusher's limit).
pub const MAX_BATCH_EVENTS: usize = 10;
/// Presence channels, the only ones with users.
const PRESENCE: &str = "presence-";

/// The Pusher routes, merged into the ingest router when enabled (outside
/// its ingest-key check: see the module's documentation).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app_id}/events", post(events))
        .route("/apps/{app_id}/batch_events", post(batch_events))
        .route("/apps/{app_id}/channels", get(channels))
        .route("/apps/{app_id}/channels/{name}", get(channel))
        .route("/apps/{app_id}/channels/{name}/users", get(users))
}

/// An error as Pusher's API answers it: a status and a text message.
#[derive(Debug)]
pub enum PusherError {
    /// 400: a body or parameter Pusher would refuse.
    BadRequest(String),
    /// 401: a missing, wrong or stale signature, or another key.
    Unauthorized(String),
    /// 404: no such app.
    NotFound(String),
    /// 413: an event's data over `limits.max_payload_bytes`, or a body
    /// over `limits.max_body_bytes`.
    TooLarge(String),
    /// Anything the ingest face would refuse as it refuses XML (a declared
    /// length over `max_body_bytes`, which also closes the connection; a
    /// slow body, overload, shutting down, the store unavailable), with
    /// its status, answered as text.
    Ingest(IngestError),
}

impl From<IngestError> for PusherError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::TooLarge(m) => PusherError::TooLarge(m),
            IngestError::InvalidRequest(m) => PusherError::BadRequest(m),
            other => PusherError::Ingest(other),
        }
    }
}

impl From<ApplyError> for PusherError {
    fn from(e: ApplyError) -> Self {
        PusherError::Ingest(e.into())
    }
}

impl IntoResponse for PusherError {
    fn into_response(self) -> Response {
        let mut connection = None;
        let (status, code, message) = match self {
            PusherError::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid-request", m),
            PusherError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            PusherError::NotFound(m) => (StatusCode::NOT_FOUND, "not-found", m),
            PusherError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large", m),
            PusherError::Ingest(e) => {
                // Its status and code, with the message as text.
                let reply = e.to_string();
                let xml = e.into_response();
                // `Connection: close` after a refused declared length: the
                // unread body is not another request.
                connection = xml.headers().get(header::CONNECTION).cloned();
                let code = xml
                    .extensions()
                    .get::<Rejected>()
                    .map_or("invalid-request", |r| r.0);
                (xml.status(), code, reply)
            }
        };
        tracing::info!(code, status = status.as_u16(), error = %message, "pusher API request rejected");
        let mut reply = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response();
        reply.extensions_mut().insert(Rejected(code));
        if let Some(value) = connection {
            reply.headers_mut().insert(header::CONNECTION, value);
        }
        reply
    }
}

/// A JSON reply.
fn json_reply(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// The app must be ours (404), then the request signed by its secret
/// (401).
fn authenticate(
    state: &AppState,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<(), PusherError> {
    let pusher = &state.settings.pusher;
    if app_id != pusher.app_id {
        return Err(PusherError::NotFound(format!("unknown app_id {app_id:?}")));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify_request(
        &pusher.key,
        &pusher.secret,
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
        body,
        now,
    )
    .map_err(|e| PusherError::Unauthorized(e.to_string()))
}

/// Reads a POST body within the ingest limits, then authenticates it.
async fn signed_body(
    state: &AppState,
    app_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, PusherError> {
    if state.hub.is_shutting_down() {
        return Err(IngestError::ShuttingDown.into());
    }
    let limits = &state.settings.limits;
    let body =
        refuse_declared_length(headers, body, limits.max_body_bytes, limits.request_timeout)?;
    let _slot = state.ingest_slots.try_acquire().map_err(|_| {
        IngestError::Overloaded(format!(
            "more than {} ingest requests in flight",
            limits.max_ingest_in_flight
        ))
    })?;
    let body = read_body(body, headers, limits.max_body_bytes, limits.request_timeout).await?;
    authenticate(state, app_id, &Method::POST, uri, &body)?;
    Ok(body)
}

/// One event as `events` and each `batch_events` entry send it.
#[derive(Deserialize)]
struct Event {
    name: Option<String>,
    data: Option<Value>,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
}

/// The `batch_events` body.
#[derive(Deserialize)]
struct Batch {
    batch: Vec<Event>,
}

impl Event {
    /// The event's commands, one per channel; `batch` entries name one
    /// channel (`channel`), `events` one or several.
    fn commands(
        self,
        max_payload_bytes: usize,
        in_batch: bool,
    ) -> Result<Vec<Command>, PusherError> {
        let bad = |m: String| PusherError::BadRequest(m);
        let name = self.name.ok_or_else(|| bad("missing \"name\"".into()))?;
        let event = event_name(&name).map_err(|e| bad(e.replace("\"event\"", "\"name\"")))?;
        let data = match self.data {
            Some(Value::String(data)) => data,
            Some(_) => return Err(bad("\"data\" must be a string (JSON-encode objects)".into())),
            None => return Err(bad("missing \"data\"".into())),
        };
        if data.len() > max_payload_bytes {
            return Err(PusherError::TooLarge(format!(
                "\"data\" is {} bytes, over limits.max_payload_bytes ({max_payload_bytes})",
                data.len()
            )));
        }
        let names = match (self.channel, self.channels) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if !in_batch => many,
            (Some(_), Some(_)) => {
                return Err(bad("give \"channel\" or \"channels\", not both".into()))
            }
            _ if in_batch => return Err(bad("missing \"channel\"".into())),
            _ => return Err(bad("missing \"channels\" (or \"channel\")".into())),
        };
        if names.is_empty() {
            return Err(bad("\"channels\" is empty".into()));
        }
        if names.len() > MAX_CHANNELS_PER_EVENT {
            return Err(bad(format!(
                "{} channels: an event may go to at most {MAX_CHANNELS_PER_EVENT}",
                names.len()
            )));
        }
        let exclude = match self.socket_id {
            Some(id) if is_socket_id(&id) => Some(id),
            Some(id) => {
                return Err(bad(format!(
                    "invalid socket_id {id:?}: expected digits, a dot, digits"
                )))
            }
            None => None,
        };
        let payload = payload(data);
        let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
        for name in names {
            let channel = ChannelName::parse_target(&name).map_err(|e| bad(e.to_string()))?;
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        Ok(channels
            .into_iter()
            .map(|channel| Command::Message {
                target: Target::Channel(channel),
                event: Some(event.clone()),
                payload: payload.clone(),
                ttl: None,
                exclude: exclude.clone(),
            })
            .collect())
    }
}

/// `data` as the payload: its JSON value when it is JSON, else the string.
fn payload(data: String) -> Payload {
    let trimmed = data.trim_matches(|c: char| c.is_ascii_whitespace());
    match serde_json::from_str::<Box<RawValue>>(trimmed) {
        Ok(raw) if !trimmed.is_empty() => Payload::Json(raw),
        _ => Payload::Text(data),
    }
}

/// A JSON body, or 400.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PusherError> {
    serde_json::from_slice(body)
        .map_err(|e| PusherError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Applies the commands as one batch, within `max_batch_commands`.
async fn apply(state: &AppState, commands: Vec<Command>) -> Result<Response, PusherError> {
    let max = state.settings.limits.max_batch_commands;
    if commands.len() > max {
        return Err(PusherError::BadRequest(format!(
            "{} channel messages, over limits.max_batch_commands ({max})",
            commands.len()
        )));
    }
    state.hub.apply(commands).await?;
    Ok(json_reply(json!({})))
}

/// `POST /apps/<app_id>/events`.
async fn events(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PusherError> {
    let body = signed_body(&state, &app_id, &uri, &headers, body).await?;
    let event: Event = parse_json(&body)?;
    let commands = event.commands(state.settings.limits.max_payload_bytes, false)?;
    apply(&state, commands).await
}

/// `POST /apps/<app_id>/batch_events`: at most ten events, all applied or
/// none (one invalid event refuses the batch).
async fn batch_events(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PusherError> {
    let body = signed_body(&state, &app_id, &uri, &headers, body).await?;
    let batch: Batch = parse_json(&body)?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(PusherError::BadRequest(format!(
            "{} events: a batch holds at most {MAX_BATCH_EVENTS}",
            batch.batch.len()
        )));
    }
    let max_payload = state.settings.limits.max_payload_bytes;
    let mut commands = Vec::new();
    for (i, event) in batch.batch.into_iter().enumerate() {
        let mine = event.commands(max_payload, true).map_err(|e| match e {
            PusherError::BadRequest(m) => PusherError::BadRequest(format!("batch[{i}]: {m}")),
            PusherError::TooLarge(m) => PusherError::TooLarge(format!("batch[{i}]: {m}")),
            other => other,
        })?;
        commands.extend(mine);
    }
    apply(&state, commands).await
}

/// The decoded query parameters a GET reads (`filter_by_prefix`, `info`).
struct Query {
    filter_by_prefix: Option<String>,
    info: Vec<String>,
}

impl Query {
    fn of(uri: &Uri) -> Self {
        let mut query = Query {
            filter_by_prefix: None,
            info: Vec::new(),
        };
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            match k.to_ascii_lowercase().as_str() {
                "filter_by_prefix" => query.filter_by_prefix = Some(v.into_owned()),
                "info" => {
                    query.info = v
                        .split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                _ => {}
            }
        }
        query
    }

    /// Refuses an attribute not in `allowed`.
    fn check_info(&self, allowed: &[&str]) -> Result<(), PusherError> {
        match self.info.iter().find(|a| !allowed.contains(&a.as_str())) {
            Some(a) => Err(PusherError::BadRequest(format!(
                "info attribute {a:?} is not supported here (supported: {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn wants(&self, attribute: &str) -> bool {
        self.info.iter().any(|a| a == attribute)
    }
}

/// A GET: the app and the signature over an empty body.
fn signed_get(state: &AppState, app_id: &str, uri: &Uri) -> Result<Query, PusherError> {
    authenticate(state, app_id, &Method::GET, uri, b"")?;
    Ok(Query::of(uri))
}

fn storage(e: crate::store::journal::StoreError) -> PusherError {
    PusherError::Ingest(IngestError::StorageUnavailable(e.to_string()))
}

/// `GET /apps/<app_id>/channels`: occupied channels (with members),
/// `filter_by_prefix`, and `info=user_count` for `presence-` prefixes.
async fn channels(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    uri: Uri,
) -> Result<Response, PusherError> {
    let query = signed_get(&state, &app_id, &uri)?;
    query.check_info(&["user_count"])?;
    let prefix = query.filter_by_prefix.as_deref().unwrap_or("");
    if query.wants("user_count") && !prefix.starts_with(PRESENCE) {
        return Err(PusherError::BadRequest(
            "info=user_count needs filter_by_prefix=presence-".into(),
        ));
    }
    let all = state.hub.current_channels().await.map_err(storage)?;
    let mut listed = Map::new();
    for summary in all {
        // A wildcard pattern (`/chat/*`) is subscribed to, not a channel.
        if summary.members == 0 || summary.name.ends_with('*') || !summary.name.starts_with(prefix)
        {
            continue;
        }
        let mut attributes = Map::new();
        if query.wants("user_count") {
            attributes.insert("user_count".into(), summary.members.into());
        }
        listed.insert(summary.name, Value::Object(attributes));
    }
    Ok(json_reply(json!({ "channels": listed })))
}

/// The channel of a path, or 400.
fn channel_name(name: &str) -> Result<ChannelName, PusherError> {
    ChannelName::parse_target(name).map_err(|e| PusherError::BadRequest(e.to_string()))
}

/// `GET /apps/<app_id>/channels/<name>`: `occupied`, and with `info`,
/// `subscription_count` and (presence channels only) `user_count`.
async fn channel(
    State(state): State<AppState>,
    Path((app_id, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, PusherError> {
    let query = signed_get(&state, &app_id, &uri)?;
    query.check_info(&["subscription_count", "user_count"])?;
    let channel = channel_name(&name)?;
    if query.wants("user_count") && !name.starts_with(PRESENCE) {
        return Err(PusherError::BadRequest(
            "info=user_count is only for presence- channels".into(),
        ));
    }
    let members = members_of(&state, &channel).await?;
    let mut reply = Map::new();
    reply.insert("occupied".into(), (!members.is_empty()).into());
    if query.wants("subscription_count") {
        reply.insert("subscription_count".into(), members.len().into());
    }
    if query.wants("user_count") {
        let users = state
            .pusher_members
            .user_ids_everywhere(&state.hub, &channel, &members)
            .await;
        reply.insert("user_count".into(), users.len().into());
    }
    Ok(json_reply(Value::Object(reply)))
}

/// The channel's members (client ids), cluster-wide.
async fn members_of(state: &AppState, channel: &ChannelName) -> Result<Vec<String>, PusherError> {
    Ok(state
        .hub
        .current_channel(channel)
        .await
        .map_err(storage)?
        .map(|detail| detail.members)
        .unwrap_or_default())
}

/// `GET /apps/<app_id>/channels/<name>/users`: a presence channel's
/// users: a Pusher socket as the user it signed in as, another client by
/// its id.
async fn users(
    State(state): State<AppState>,
    Path((app_id, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, PusherError> {
    signed_get(&state, &app_id, &uri)?;
    let channel = channel_name(&name)?;
    if !name.starts_with(PRESENCE) {
        return Err(PusherError::BadRequest(
            "users are only listed for presence- channels".into(),
        ));
    }
    let members = members_of(&state, &channel).await?;
    let users: Vec<Value> = state
        .pusher_members
        .user_ids_everywhere(&state.hub, &channel, &members)
        .await
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(json_reply(json!({ "users": users })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_that_is_json_stays_json_and_anything_else_is_text() {
        assert!(
            matches!(payload(r#"{"a":1}"#.into()), Payload::Json(r) if r.get() == r#"{"a":1}"#)
        );
        assert!(matches!(payload("42".into()), Payload::Json(_)));
        assert!(matches!(payload("hello".into()), Payload::Text(t) if t == "hello"));
        assert!(matches!(payload(String::new()), Payload::Text(t) if t.is_empty()));
    }

    #[test]
    fn an_event_becomes_one_message_per_channel() {
        let event = Event {
            name: Some("e".into()),
            data: Some(Value::String("x".into())),
            channel: None,
            channels: Some(vec!["a".into(), "b".into(), "a".into()]),
            socket_id: Some("1.2".into()),
        };
        let commands = event.commands(100, false).unwrap();
        assert_eq!(commands.len(), 2);
        assert!(matches!(&commands[0], Command::Message { exclude: Some(s), .. } if s == "1.2"));
        let bad_socket = Event {
            name: Some("e".into()),
            data: Some(Value::String("x".into())),
            channel: Some("a".into()),
            channels: None,
            socket_id: Some("1".into()),
        };
        assert!(matches!(
            bad_socket.commands(100, false),
            Err(PusherError::BadRequest(_))
        ));
    }
}
