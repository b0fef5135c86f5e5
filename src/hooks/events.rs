//! Hook events as the backend receives them: one JSON object per request,
//! `{"id","type","client","channel","ts","node"}` (plus `data` for
//! `publish`, `ext` for a Bayeux `connect`), and the backend's answer to a
//! cancellable one. The same outbox carries Pusher's webhooks
//! (`src/pusher/webhooks.rs`): their types are here too, written in
//! Pusher's body by [`Event::pusher_body`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every kind of event; the names are the contract's (`events = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Cancellable: a client comes online.
    Connect,
    /// Cancellable: a browser asks for a channel it does not hold.
    Subscribe,
    /// Cancellable: a browser publishes (Bayeux).
    Publish,
    /// Notification: the client came online.
    Online,
    /// Notification: the client went offline.
    Offline,
    /// Notification: the client joined a channel.
    Subscribed,
    /// Notification: the client left a channel.
    Unsubscribed,
    /// Pusher webhook: a channel's first Pusher socket subscribed.
    ChannelOccupied,
    /// Pusher webhook: a channel's last Pusher socket left.
    ChannelVacated,
    /// Pusher webhook: a user joined a presence channel.
    MemberAdded,
    /// Pusher webhook: a user left a presence channel.
    MemberRemoved,
    /// Pusher webhook: a page sent a `client-` event.
    ClientEvent,
}

impl EventType {
    /// Every type, for the default of `events`.
    pub const ALL: [EventType; 7] = [
        EventType::Connect,
        EventType::Subscribe,
        EventType::Publish,
        EventType::Online,
        EventType::Offline,
        EventType::Subscribed,
        EventType::Unsubscribed,
    ];

    /// Whether it is one of Pusher's webhooks (never in `hooks.events`).
    pub fn is_pusher(self) -> bool {
        matches!(
            self,
            EventType::ChannelOccupied
                | EventType::ChannelVacated
                | EventType::MemberAdded
                | EventType::MemberRemoved
                | EventType::ClientEvent
        )
    }

    /// Whether the action waits for the backend's answer.
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            EventType::Connect | EventType::Subscribe | EventType::Publish
        )
    }

    /// The bit of this type in an [`EventSet`].
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Which event types are sent (`hooks.events`): a bit set, so asking
/// "is this one on" costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u16);

impl EventSet {
    /// The set of these types.
    pub fn of(types: &[EventType]) -> Self {
        EventSet(types.iter().fold(0, |bits, t| bits | t.bit()))
    }

    /// Whether `t` is in the set.
    pub fn contains(self, t: EventType) -> bool {
        self.0 & t.bit() != 0
    }
}

/// One event, serialised as the request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (`evt-` and 32 hex digits): a retry carries the
    /// same id, so the backend can drop duplicates.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The client it is about.
    pub client: String,
    /// The channel, for subscribe, publish, subscribed, unsubscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// When it happened, unix milliseconds.
    pub ts: u64,
    /// The node that saw it (`hooks.node`).
    pub node: String,
    /// `publish`: the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// `connect` from a Bayeux handshake: its `ext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Value>,
    /// Pusher webhooks: the member's `user_id` (member events, and a client
    /// event on a presence channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Pusher's `client_event`: the event's name and the sender's socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Pusher's `client_event`: the socket that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
}

impl Event {
    /// A new event of `kind` about `client`, stamped now with a fresh id.
    pub fn new(kind: EventType, client: &str, channel: Option<&str>, node: &str) -> Self {
        Event {
            id: new_id(),
            kind,
            client: client.to_owned(),
            channel: channel.map(str::to_owned),
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            node: node.to_owned(),
            data: None,
            ext: None,
            user_id: None,
            event: None,
            socket_id: None,
        }
    }

    /// The request body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event always serialises")
    }

    /// A Pusher webhook's body: `{"time_ms", "events": [this one]}`, the
    /// event named as Pusher names it (`channel_occupied`, ...), a client
    /// event's `data` as the JSON text the page sent.
    pub fn pusher_body(&self) -> Vec<u8> {
        let name = serde_json::to_value(self.kind).expect("a type serialises");
        let mut event = serde_json::json!({"name": name, "channel": self.channel});
        for (key, value) in [
            ("user_id", &self.user_id),
            ("event", &self.event),
            ("socket_id", &self.socket_id),
        ] {
            if let Some(value) = value {
                event[key] = Value::String(value.clone());
            }
        }
        if let Some(data) = &self.data {
            event["data"] = match data {
                Value::String(text) => Value::String(text.clone()),
                other => Value::String(other.to_string()),
            };
        }
        serde_json::to_vec(&serde_json::json!({"time_ms": self.ts, "events": [event]}))
            .expect("a webhook serialises")
    }
}

/// `evt-` and 128 random bits in hex: unique without coordination between
/// nodes or across restarts.
fn new_id() -> String {
    let bits: u128 = rand::random();
    format!("evt-{bits:032x}")
}

/// The backend's answer to a cancellable event: `{"allow": true}` or
/// `{"allow": false, "reason": "..."}`; for `publish`, `data` may replace
/// the payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Answer {
    /// Whether the action may happen.
    pub allow: bool,
    /// Why not (given to the browser).
    #[serde(default)]
    pub reason: Option<String>,
    /// `publish`: the payload to publish instead. `Some(Value::Null)` when
    /// the backend sent `"data": null`.
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Value>,
}

/// Tells `"data": null` (replace with null) from no `data` (keep).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_contract_fields() {
        let event = Event::new(EventType::Subscribe, "alice", Some("room:42"), "n1");
        let json: Value = serde_json::from_slice(&event.body()).unwrap();
        assert_eq!(json["type"], "subscribe");
        assert_eq!(json["client"], "alice");
        assert_eq!(json["channel"], "room:42");
        assert_eq!(json["node"], "n1");
        assert!(json["ts"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(json["id"].as_str().unwrap().starts_with("evt-"));
        assert!(json.get("data").is_none() && json.get("ext").is_none());
        let online = Event::new(EventType::Online, "alice", None, "n1");
        assert!(serde_json::from_slice::<Value>(&online.body()).unwrap()["channel"].is_null());
        assert_ne!(online.id, event.id);
    }

    #[test]
    fn answers() {
        let allow: Answer = serde_json::from_str(r#"{"allow":true}"#).unwrap();
        assert_eq!((allow.allow, allow.data), (true, None));
        let deny: Answer = serde_json::from_str(r#"{"allow":false,"reason":"no"}"#).unwrap();
        assert_eq!((deny.allow, deny.reason.as_deref()), (false, Some("no")));
        let null: Answer = serde_json::from_str(r#"{"allow":true,"data":null}"#).unwrap();
        assert_eq!(null.data, Some(Value::Null));
        assert!(serde_json::from_str::<Answer>(r#"{"reason":"x"}"#).is_err());
    }

    #[test]
    fn event_sets() {
        let set = EventSet::of(&[EventType::Connect, EventType::Offline]);
        assert!(set.contains(EventType::Connect) && set.contains(EventType::Offline));
        assert!(!set.contains(EventType::Online));
        assert!(EventSet::of(&EventType::ALL).contains(EventType::Unsubscribed));
        assert!(!EventSet::of(&EventType::ALL).contains(EventType::ClientEvent));
    }

    #[test]
    fn pusher_bodies_are_pushers() {
        let mut added = Event::new(
            EventType::MemberAdded,
            "presence-a",
            Some("presence-a"),
            "n1",
        );
        added.user_id = Some("7".into());
        let json: Value = serde_json::from_slice(&added.pusher_body()).unwrap();
        assert_eq!(json["time_ms"], added.ts);
        assert_eq!(
            json["events"],
            serde_json::json!([{"name": "member_added", "channel": "presence-a", "user_id": "7"}])
        );
        let mut client = Event::new(EventType::ClientEvent, "private-a", Some("private-a"), "n1");
        client.event = Some("client-typing".into());
        client.socket_id = Some("1.2".into());
        client.data = Some(Value::String(r#"{"who":"ann"}"#.into()));
        let json: Value = serde_json::from_slice(&client.pusher_body()).unwrap();
        assert_eq!(json["events"][0]["name"], "client_event");
        assert_eq!(json["events"][0]["data"], r#"{"who":"ann"}"#);
        assert_eq!(json["events"][0]["socket_id"], "1.2");
        assert!(json["events"][0].get("user_id").is_none());
    }
}
