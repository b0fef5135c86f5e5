//! Commands a backend sends through the ingest port, after validation.

use std::time::Duration;

use serde_json::value::RawValue;

use super::{ChannelName, ClientId};

/// Where a `<message>` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `to="id"`: one client's mailbox.
    Client(ClientId),
    /// `channel="name"`: every client subscribed at that moment.
    Channel(ChannelName),
}

/// A message body, already checked.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `type="json"` (the default): delivered as this JSON value, verbatim.
    Json(Box<RawValue>),
    /// `type="text"`: delivered as a JSON string.
    Text(String),
}

/// One validated command of an ingest request.
#[derive(Debug, Clone)]
pub enum Command {
    /// `<message>`: queue a payload for a client or a channel.
    Message {
        /// Recipient(s).
        target: Target,
        /// Optional event name the browser can dispatch on.
        event: Option<String>,
        /// The body.
        payload: Payload,
        /// How long the message may wait undelivered; capped by `message_ttl`.
        ttl: Option<Duration>,
        /// A Pusher socket id (`<digits>.<digits>`, checked by whoever
        /// builds the command) whose connection should not receive it:
        /// written into the message as `"exclude"` (docs/protocol.md).
        /// Never set by the XML ingest or the bridges.
        exclude: Option<String>,
    },
    /// `<subscribe>`: add a channel membership.
    Subscribe {
        /// Who joins.
        client: ClientId,
        /// What they join.
        channel: ChannelName,
    },
    /// `<unsubscribe>`: remove a channel membership.
    Unsubscribe {
        /// Who leaves.
        client: ClientId,
        /// What they leave.
        channel: ChannelName,
    },
    /// A browser's own unsubscribe (Bayeux `/meta/unsubscribe`): leaves the
    /// channel without the memory of a kick that a backend's
    /// `<unsubscribe>` leaves, so the browser may join it again. Never
    /// parsed from ingest.
    Leave {
        /// Who leaves.
        client: ClientId,
        /// What they leave.
        channel: ChannelName,
    },
    /// `<disconnect>`: forget a client and end its open polls.
    Disconnect {
        /// Who is dropped.
        client: ClientId,
    },
}

impl Command {
    /// The client this command may create a mailbox for, if any.
    pub fn creates_client(&self) -> Option<&ClientId> {
        match self {
            Command::Message {
                target: Target::Client(id),
                ..
            } => Some(id),
            Command::Subscribe { client, .. } => Some(client),
            _ => None,
        }
    }
}

/// How long a message is retained: its own `ttl` under `message_ttl`, or
/// `message_ttl`; and whether its own `ttl` decided it (such a message was
/// meant to lapse, so losing it does not make older cursors `reset`). The
/// one rule every store applies.
pub fn lifetime(ttl: Option<Duration>, message_ttl: Duration) -> (Duration, bool) {
    let own = ttl.is_some_and(|t| t < message_ttl);
    (ttl.map_or(message_ttl, |t| t.min(message_ttl)), own)
}
