//! The browser's frames on `/ws`: `subscribe`, `unsubscribe` and `publish`,
//! each checked as its HTTP or Bayeux twin is, and answered `ok` or
//! `error` (with the frame's `ref`) when the frame carries a `ref`.
//!
//! - `subscribe`: each channel granted by the token, then a poll opened
//!   and closed at once with the channels (`open_only`), so the
//!   `subscribe` hook and `max_channels_per_client` apply on every store,
//!   as for `channels=` and Bayeux's `/meta/subscribe`; all or none join.
//! - `unsubscribe`: a `Leave` per channel through the hub.
//! - `publish`: the token's `publish` claim bounds the page; the `publish`
//!   hook, when asked, decides (and may replace the data); without either
//!   nothing is published (Bayeux's rule, `src/bayeux/meta.rs`).
//!
//! A frame that is not a JSON object with a known `type` is a protocol
//! error: the socket closes with `1008`.

use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

use super::subscribe_request;
use crate::auth::Grant;
use crate::bayeux::is_reserved_for_publish;
use crate::hooks::{Denied, EventType};
use crate::http::public::face::Face;
use crate::hub::{ApplyError, PollError};
use crate::protocol::{ChannelName, Command, Payload, Target};

/// A frame that is not one of ours: the socket closes with `1008`.
#[derive(Debug)]
pub struct ProtocolError;

/// One frame from the browser.
#[derive(Deserialize)]
struct Inbound {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Subscribe,
    Unsubscribe,
    Publish,
}

/// A refused frame: its error code and why.
struct Refused(&'static str, String);

/// The answer to one frame (`None` when it carries no `ref`).
pub async fn answer(
    face: &Face,
    grant: &Grant,
    text: &str,
) -> Result<Option<String>, ProtocolError> {
    let frame: Inbound = serde_json::from_str(text).map_err(|_| ProtocolError)?;
    let done = match frame.kind {
        Kind::Subscribe => subscribe(face, grant, &frame.channels).await,
        Kind::Unsubscribe => unsubscribe(face, grant, &frame.channels).await,
        Kind::Publish => publish(face, grant, &frame).await,
    };
    let Some(reference) = frame.reference else {
        return Ok(None);
    };
    let reply = match done {
        Ok(()) => json!({"type": "ok", "ref": reference}),
        Err(Refused(code, message)) => {
            json!({"type": "error", "ref": reference, "code": code, "message": message})
        }
    };
    Ok(Some(reply.to_string()))
}

/// Channel names, as `channels=` takes them (a grant's prefix is not a
/// name to join).
fn names(channels: &[String]) -> Result<Vec<ChannelName>, Refused> {
    channels
        .iter()
        .map(|name| {
            ChannelName::parse(name)
                .map_err(|e| Refused("invalid-request", format!("channels: {e}")))
        })
        .collect()
}

async fn subscribe(face: &Face, grant: &Grant, channels: &[String]) -> Result<(), Refused> {
    let channels = names(channels)?;
    if let Some(refused) = channels.iter().find(|c| !grant.allows(c)) {
        return Err(Refused(
            "channel-forbidden",
            format!("the token does not allow channel {refused}"),
        ));
    }
    if channels.is_empty() {
        return Ok(());
    }
    let request = subscribe_request(grant, channels);
    match face.state.hub.open_for(&request).await {
        Ok(open) => {
            drop(open);
            Ok(())
        }
        Err(e) => Err(Refused(poll_code(&e), e.to_string())),
    }
}

async fn unsubscribe(face: &Face, grant: &Grant, channels: &[String]) -> Result<(), Refused> {
    let leaves: Vec<Command> = names(channels)?
        .into_iter()
        .map(|channel| Command::Leave {
            client: grant.client.clone(),
            channel,
        })
        .collect();
    if leaves.is_empty() {
        return Ok(());
    }
    face.state
        .hub
        .apply(leaves)
        .await
        .map(drop)
        .map_err(|e| Refused(apply_code(&e), e.to_string()))
}

async fn publish(face: &Face, grant: &Grant, frame: &Inbound) -> Result<(), Refused> {
    let invalid = |why: String| Refused("invalid-request", why);
    let name = frame
        .channel
        .as_deref()
        .ok_or_else(|| invalid("a publish needs a channel".into()))?;
    let channel = ChannelName::parse_target(name).map_err(|e| invalid(e.to_string()))?;
    if is_reserved_for_publish(name) {
        return Err(Refused(
            "denied",
            format!("{name} is reserved for the server's own messages"),
        ));
    }
    let data = frame
        .data
        .as_ref()
        .ok_or_else(|| invalid("a publish needs data".into()))?;
    let data = allowed_data(face, grant, &channel, data).await?;
    let payload = RawValue::from_string(data.to_string()).map_err(|e| invalid(e.to_string()))?;
    let most = face.state.settings.limits.max_payload_bytes;
    if payload.get().len() > most {
        return Err(Refused("too-large", format!("data is over {most} bytes")));
    }
    let command = Command::Message {
        target: Target::Channel(channel),
        event: frame.event.clone().filter(|e| !e.is_empty()),
        payload: Payload::Json(payload),
        ttl: None,
        exclude: None,
    };
    face.state
        .hub
        .apply(vec![command])
        .await
        .map(drop)
        .map_err(|e| Refused(apply_code(&e), e.to_string()))
}

/// The data the page may publish on `channel`: as sent, or as the
/// `publish` hook replaced it. A token's `publish` claim bounds the page
/// whatever the hook would say; without a claim the hook decides; without
/// either nothing is published.
async fn allowed_data(
    face: &Face,
    grant: &Grant,
    channel: &ChannelName,
    data: &Value,
) -> Result<Value, Refused> {
    let claim = !grant.publish.is_empty();
    let by_token = claim && grant.allows_publish(channel);
    let refused = || {
        Refused(
            "denied",
            format!("the token does not allow publishing to {channel}"),
        )
    };
    if claim && !by_token {
        return Err(refused());
    }
    let hub = &face.state.hub;
    match hub.hooks().filter(|h| h.wants(EventType::Publish)) {
        Some(hooks) => hooks
            .publish(grant.client.as_str(), channel.as_str(), data.clone())
            .await
            .map(|replaced| replaced.unwrap_or_else(|| data.clone()))
            .map_err(|Denied(reason)| Refused("denied", reason)),
        None if !by_token => Err(refused()),
        None => Ok(data.clone()),
    }
}

/// The code of a refused subscribe, as `/poll` names it.
fn poll_code(e: &PollError) -> &'static str {
    match e {
        PollError::Denied(_) => "denied",
        PollError::TooManyChannels(_) => "invalid-request",
        PollError::TooManyPolls(_) => "too-many-polls",
        PollError::TooManyClients(_) => "overloaded",
        PollError::Storage(_) => "storage-unavailable",
    }
}

/// The code of a refused unsubscribe or publish.
fn apply_code(e: &ApplyError) -> &'static str {
    match e {
        ApplyError::TooManyChannels { .. } => "invalid-request",
        ApplyError::TooManyClients { .. } => "overloaded",
        _ => "storage-unavailable",
    }
}
