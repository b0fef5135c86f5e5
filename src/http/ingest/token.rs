//! `POST /token`: a browser token minted for a backend, answered as XML,
//! JSON or plain text as `Accept` asks.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error::{xml, IngestError};
use crate::http::AppState;
use crate::protocol::ids::is_valid_channel_grant;
use crate::protocol::ClientId;

use super::commands::{read_body, refuse_declared_length};

/// A token request is a client id, a ttl and at most
/// `max_channels_per_client` grants of at most 128 bytes each: 64 KiB is
/// room for the default 256 grants with their `channel=` and escapes.
const TOKEN_BODY_BYTES: usize = 64 << 10;

/// `POST /token`: `client`, optional `ttl` (seconds), repeated `channel`
/// and `publish` (Bayeux publish grants), from the query string and/or a
/// form-encoded body.
pub(super) async fn token(
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
