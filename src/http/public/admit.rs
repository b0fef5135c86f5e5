//! Admitting a poll or a stream: its token (`?token=` or
//! `Authorization: Bearer`), its cursor (`since`, or `Last-Event-ID`), its
//! channels and its timeout, checked into the request the hub takes. Shared
//! by `GET /poll`, `HEAD /poll` and `/events`.

use std::time::Duration;

use super::error::PublicError;
use super::face::Face;
use super::request::Head;
use crate::auth::Grant;
use crate::hub::PollRequest;
use crate::protocol::{ChannelName, Cursor};

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
pub fn admit(face: &Face, head: &Head) -> Result<(PollRequest, u64), PublicError> {
    let state = &face.state;
    if state.hub.is_shutting_down() {
        return Err(PublicError::ShuttingDown);
    }
    let mut params = PollParams::parse(head.query());
    let grant = verified(face, params.token.take(), head)?;
    let (since, from_now) = cursor_of(head, params.since.as_deref())?;
    let timeout = params.timeout.as_deref().map(parse_timeout).transpose()?;
    let subscribe = granted_channels(&grant, params.channels.as_deref().unwrap_or(""))?;
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

/// The token's grant alone (a WebSocket keeps it, to check the channels
/// and publishes its frames ask for later).
pub fn grant_of(face: &Face, head: &Head) -> Result<Grant, PublicError> {
    verified(face, PollParams::parse(head.query()).token, head)
}

/// Checks `?token=`, or else `Authorization: Bearer`.
fn verified(face: &Face, token: Option<String>, head: &Head) -> Result<Grant, PublicError> {
    let token = token
        .or_else(|| bearer(head.authorization.as_deref()))
        .ok_or_else(|| {
            crate::auth::TokenError::Invalid(
                "no token: pass ?token= or Authorization: Bearer <token>".into(),
            )
        })?;
    Ok(face.state.tokens.verify(&token)?)
}

/// Where the poll reads from, and whether `since=now` asked for only what
/// comes next. `Last-Event-ID` wins: an `EventSource` reconnects to the
/// URL it was opened with, `since` included, and says in `Last-Event-ID`
/// where it stopped; `since` would replay what it already has. An empty
/// one (no event yet) is no cursor.
fn cursor_of(head: &Head, since: Option<&str>) -> Result<(Option<Cursor>, bool), PublicError> {
    let since = head
        .last_event_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .or(since);
    let from_now = since == Some("now");
    let since = match since {
        None | Some("") | Some("now") => None,
        Some(s) => {
            Some(Cursor::parse(s).map_err(|e| PublicError::InvalidRequest(format!("since: {e}")))?)
        }
    };
    Ok((since, from_now))
}

/// The channels of `?channels=` (comma-separated), each one the token
/// grants.
fn granted_channels(grant: &Grant, channels: &str) -> Result<Vec<ChannelName>, PublicError> {
    let mut subscribe = Vec::new();
    for name in channels.split(',').filter(|n| !n.is_empty()) {
        let channel = ChannelName::parse(name)
            .map_err(|e| PublicError::InvalidRequest(format!("channels: {e}")))?;
        if !grant.allows(&channel) {
            return Err(PublicError::ChannelForbidden(name.to_owned()));
        }
        subscribe.push(channel);
    }
    Ok(subscribe)
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
