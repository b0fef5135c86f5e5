//! Pusher's events on a socket: the page's (`pusher:ping`,
//! `pusher:subscribe`, `pusher:unsubscribe`, `client-*`) read and
//! answered, and the hub's messages written as Pusher events.
//!
//! Pusher's `data` is a string on the wire (JSON text, as pusher-js
//! expects to parse), so a message's JSON `data` is written as its text,
//! and a JSON string as that string.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{close, Ending, Session};
use crate::http::public::face::Face;
use crate::hub::PollRequest;
use crate::protocol::{ChannelName, ClientId, Command, Payload, Target};
use crate::pusher::members::Member;
use crate::pusher::signing::check_channel_auth;

/// Channels that need the site's signature.
const PRIVATE: &str = "private-";
const PRESENCE: &str = "presence-";
/// What Pusher answers a client event when they are off.
const CLIENT_EVENTS_OFF: &str =
    "To send client events, you must enable this feature in the Settings page of your dashboard.";

/// `pusher:connection_established`, the socket's first frame.
pub fn connection_established(socket_id: &str) -> String {
    let data = json!({"socket_id": socket_id, "activity_timeout": super::ACTIVITY_TIMEOUT});
    event("pusher:connection_established", None, &data.to_string())
}

/// `pusher:error` with Pusher's code (none for errors that keep the socket).
pub fn error(code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

/// One event frame; `data` is sent as a JSON string.
fn event(name: &str, channel: Option<&str>, data: &str) -> String {
    match channel {
        Some(channel) => json!({"event": name, "channel": channel, "data": data}),
        None => json!({"event": name, "data": data}),
    }
    .to_string()
}

/// A message of the hub as it is stored (`protocol::reply::message_tail`).
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    channel: Option<&'a str>,
    event: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    exclude: Option<String>,
}

/// The Pusher event for one message of the socket's mailbox: `None` for a
/// message to no channel (Pusher has no such thing) or one this socket
/// sent (`exclude`). A message without an event is event `message`.
pub fn outbound(tail: &str, socket_id: &str) -> Option<String> {
    let object = format!("{{{tail}");
    let stored: Stored = serde_json::from_str(&object).ok()?;
    let channel = stored.channel?;
    if stored.exclude.as_deref() == Some(socket_id) {
        return None;
    }
    let text = stored.data.get();
    let data = match serde_json::from_str::<String>(text) {
        Ok(string) if text.starts_with('"') => string,
        _ => text.to_owned(),
    };
    let name = stored.event.as_deref().unwrap_or("message");
    Some(event(name, Some(channel), &data))
}

/// One event from the page.
#[derive(Deserialize)]
struct Inbound {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// `pusher:subscribe`'s data.
#[derive(Deserialize)]
struct Subscribe {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

/// A presence channel's `channel_data`, as the site's auth endpoint signed
/// it.
#[derive(Deserialize)]
struct ChannelData {
    user_id: Value,
    #[serde(default)]
    user_info: Option<Value>,
}

/// The frames answering one event of the page; `Err` ends the socket.
pub async fn answer(session: &mut Session<'_>, text: &str) -> Result<Vec<String>, Ending> {
    let inbound: Inbound =
        serde_json::from_str(text).map_err(|_| Some((close::PROTOCOL, "not a Pusher event")))?;
    let data = inbound.data.as_deref().map(RawValue::get).unwrap_or("{}");
    match inbound.event.as_str() {
        "pusher:ping" => Ok(vec![event("pusher:pong", None, "{}")]),
        "pusher:pong" => Ok(Vec::new()),
        "pusher:subscribe" => Ok(vec![subscribe(session, data).await]),
        "pusher:unsubscribe" => {
            unsubscribe(session, data).await;
            Ok(Vec::new())
        }
        name if name.starts_with("client-") => Ok(client_event(session, &inbound).await),
        other => Ok(vec![error(None, &format!("Unsupported event {other}"))]),
    }
}

/// `pusher:subscribe`: checks the signature (private and presence
/// channels), joins the channel through the hub (which asks the
/// `subscribe` hook and `max_channels_per_client`), tells the others of a
/// new presence member, and answers `subscription_succeeded` or a
/// `pusher:subscription_error`.
async fn subscribe(session: &mut Session<'_>, data: &str) -> String {
    let Ok(request) = serde_json::from_str::<Subscribe>(data) else {
        return error(None, "pusher:subscribe needs data.channel");
    };
    let name = request.channel.as_str();
    let refused = |status: u16, why: String| {
        let data = json!({"type": "AuthError", "error": why, "status": status});
        event("pusher:subscription_error", Some(name), &data.to_string())
    };
    let Ok(channel) = ChannelName::parse(name) else {
        return refused(400, format!("invalid channel name {name:?}"));
    };
    let presence = name.starts_with(PRESENCE);
    let pusher = &session.face.state.settings.pusher;
    if presence || name.starts_with(PRIVATE) {
        let signed_data = if presence {
            request.channel_data.as_deref()
        } else {
            None
        };
        let auth = request.auth.as_deref().unwrap_or("");
        if !check_channel_auth(
            &pusher.secret,
            &pusher.key,
            &session.socket_id,
            name,
            signed_data,
            auth,
        ) {
            return refused(
                401,
                format!(
                    "Invalid signature for {name} and socket {}",
                    session.socket_id
                ),
            );
        }
    }
    let member = match presence {
        true => match member_of(request.channel_data.as_deref()) {
            Some(member) => Some(member),
            None => return refused(400, "presence channel_data needs a user_id".into()),
        },
        false => None,
    };
    let hub = &session.face.state.hub;
    let join = PollRequest {
        client: session.client.clone(),
        issued_at: None,
        since: None,
        subscribe: vec![channel.clone()],
        timeout: Some(std::time::Duration::ZERO),
        connect_ext: None,
        open_only: true,
        from_now: false,
    };
    let webhooks = session.face.state.pusher_webhooks.as_deref();
    let new = !session.channels.iter().any(|c| c == name);
    let occupancy = match webhooks {
        Some(webhooks) if new => Some(webhooks.occupancy(&channel).await),
        _ => None,
    };
    if let Err(e) = hub.open_for(&join).await {
        return refused(403, e.to_string());
    }
    if let Some(occupancy) = occupancy {
        occupancy.joined(hub).await;
    }
    if new {
        session.channels.push(name.to_owned());
    }
    let Some(member) = member else {
        return event("pusher_internal:subscription_succeeded", Some(name), "{}");
    };
    let members = &session.face.state.pusher_members;
    members
        .share(hub, &channel, &session.socket_id, Some(&member))
        .await;
    if members.join(name, &session.socket_id, member.clone()) {
        if let Some(webhooks) = webhooks {
            webhooks.member_added(&channel, &member.user_id);
        }
        let added = membership(
            &channel,
            "pusher_internal:member_added",
            &member,
            &session.socket_id,
        );
        if let Err(e) = hub.apply(vec![added]).await {
            tracing::debug!(error = %e, "member_added could not be published");
        }
    }
    let users = members.users_everywhere(hub, &channel).await;
    let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    let hash: serde_json::Map<String, Value> = users
        .iter()
        .map(|u| {
            (
                u.user_id.clone(),
                u.user_info.clone().unwrap_or(Value::Null),
            )
        })
        .collect();
    let data = json!({"presence": {"ids": ids, "hash": hash, "count": users.len()}});
    event(
        "pusher_internal:subscription_succeeded",
        Some(name),
        &data.to_string(),
    )
}

/// The member a presence subscription signed for.
fn member_of(channel_data: Option<&str>) -> Option<Member> {
    let data: ChannelData = serde_json::from_str(channel_data?).ok()?;
    let user_id = match data.user_id {
        Value::String(s) if !s.is_empty() => s,
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(Member {
        user_id,
        user_info: data.user_info,
    })
}

/// A member event as a channel message, so every socket of the channel
/// hears it, on every node; the socket it is about is skipped.
fn membership(channel: &ChannelName, name: &str, member: &Member, socket_id: &str) -> Command {
    let mut data = json!({"user_id": member.user_id});
    if name.ends_with("added") {
        data["user_info"] = member.user_info.clone().unwrap_or(Value::Null);
    }
    Command::Message {
        target: Target::Channel(channel.clone()),
        event: Some(name.to_owned()),
        payload: Payload::Json(RawValue::from_string(data.to_string()).expect("valid JSON")),
        ttl: None,
        exclude: Some(socket_id.to_owned()),
    }
}

/// `socket_id` leaves presence channel `channel` (its profile forgotten in
/// the store too); the `member_removed` to publish when that was its
/// user's last socket there, on this node and every other.
pub async fn member_left(face: &Face, channel: &str, socket_id: &str) -> Option<Command> {
    let channel = presence_channel(channel)?;
    let members = &face.state.pusher_members;
    let hub = &face.state.hub;
    members.share(hub, &channel, socket_id, None).await;
    let gone = members.leave(channel.as_str(), socket_id)?;
    let everywhere = members.users_everywhere(hub, &channel).await;
    if everywhere.iter().any(|m| m.user_id == gone.user_id) {
        return None; // another node still holds a socket of theirs
    }
    if let Some(webhooks) = &face.state.pusher_webhooks {
        webhooks.member_removed(&channel, &gone.user_id);
    }
    Some(membership(
        &channel,
        "pusher_internal:member_removed",
        &gone,
        socket_id,
    ))
}

/// `channel` when it is a presence channel.
pub fn presence_channel(channel: &str) -> Option<ChannelName> {
    channel
        .starts_with(PRESENCE)
        .then(|| ChannelName::parse(channel).ok())
        .flatten()
}

/// `pusher:unsubscribe`: leaves the channel (and its presence).
async fn unsubscribe(session: &mut Session<'_>, data: &str) {
    #[derive(Deserialize)]
    struct Unsubscribe {
        channel: String,
    }
    let Ok(request) = serde_json::from_str::<Unsubscribe>(data) else {
        return;
    };
    let Ok(channel) = ChannelName::parse(&request.channel) else {
        return;
    };
    let held = session.channels.contains(&request.channel);
    session.channels.retain(|c| *c != request.channel);
    leave(
        session.face,
        &session.client,
        &channel,
        &session.socket_id,
        held,
    )
    .await;
}

/// Socket `socket_id` (client `client`) leaves `channel` and its presence;
/// with Pusher's webhooks, under the channel's occupancy lock when it
/// `held` the channel.
pub async fn leave(
    face: &Face,
    client: &ClientId,
    channel: &ChannelName,
    socket_id: &str,
    held: bool,
) {
    let occupancy = match face.state.pusher_webhooks.as_deref() {
        Some(webhooks) if held => Some(webhooks.occupancy(channel).await),
        _ => None,
    };
    let mut commands = vec![Command::Leave {
        client: client.clone(),
        channel: channel.clone(),
    }];
    commands.extend(member_left(face, channel.as_str(), socket_id).await);
    if let Err(e) = face.state.hub.apply(commands).await {
        tracing::debug!(error = %e, "a Pusher socket's leave could not be applied");
    }
    if let Some(occupancy) = occupancy {
        occupancy.left(&face.state.hub).await;
    }
}

/// A `client-*` event: with `client_events` on, from a socket subscribed
/// to the private or presence channel, published to the channel's others.
async fn client_event(session: &mut Session<'_>, inbound: &Inbound) -> Vec<String> {
    if !session.face.state.settings.pusher.client_events {
        return vec![error(None, CLIENT_EVENTS_OFF)];
    }
    let Some(name) = inbound.channel.as_deref() else {
        return vec![error(None, "a client event needs a channel")];
    };
    if !(name.starts_with(PRIVATE) || name.starts_with(PRESENCE)) {
        return vec![error(
            None,
            "Client events are only allowed on private and presence channels",
        )];
    }
    if !session.channels.iter().any(|c| c == name) {
        return vec![error(None, &format!("Not subscribed to {name}"))];
    }
    let Ok(channel) = ChannelName::parse(name) else {
        return vec![error(None, "invalid channel name")];
    };
    let data = inbound
        .data
        .as_deref()
        .map(|d| d.get().to_owned())
        .unwrap_or_else(|| "{}".into());
    let most = session.face.state.settings.limits.max_payload_bytes;
    if data.len() > most {
        return vec![error(
            None,
            &format!("Client event data is over {most} bytes"),
        )];
    }
    let command = Command::Message {
        target: Target::Channel(channel.clone()),
        event: Some(inbound.event.clone()),
        payload: Payload::Json(RawValue::from_string(data.clone()).expect("it came as JSON")),
        ttl: None,
        exclude: Some(session.socket_id.clone()),
    };
    let state = &session.face.state;
    if let Err(e) = state.hub.apply(vec![command]).await {
        return vec![error(None, &e.to_string())];
    }
    if let Some(webhooks) = &state.pusher_webhooks {
        let user_id = state.pusher_members.user_of(name, &session.socket_id);
        webhooks.client_event(&channel, &inbound.event, &data, &session.socket_id, user_id);
    }
    Vec::new()
}
