//! The messages answered at once: handshake, subscribe, unsubscribe,
//! disconnect, and a page's publish.
//!
//! Subscribing and the handshake go through [`Hub::open_for`] with a poll
//! that ends at once: the same path as a `/poll` with `channels=`, so the
//! `connect` and `subscribe` hooks, `max_clients`, `max_channels_per_client`
//! and every store (Redis included) behave as they do for polls.
//!
//! [`Hub::open_for`]: crate::hub::Hub::open_for

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, value::RawValue, Value};

use super::session::Session;
use super::wire::{self, Inbound, Reconnect, CONNECTION_TYPES};
use super::Bayeux;
use crate::auth::{Grant, TokenError, Tokens};
use crate::hooks::{Denied, EventType};
use crate::hub::{ApplyError, PollError, PollRequest};
use crate::protocol::{ChannelName, ClientId, Command, Cursor, Payload, Target};

/// Where every service channel starts: a publish there goes to the backend
/// (the `publish` hook) only.
const SERVICE: &str = "/service/";

/// cometbox's own channels (see `connect.rs`).
const OWN: &str = "/cometbox/";

impl Bayeux {
    /// `/meta/handshake`: checks the token (or leaves it to the hooks),
    /// brings the client online (asking `connect` with the handshake's
    /// `ext`), and starts a session where the client's lapsed session had
    /// read to, or else after the last message any reply carried (so a
    /// restart, a node's death or a reload skips nothing undelivered).
    pub(super) async fn handshake(&self, tokens: &Tokens, message: &Inbound) -> Value {
        self.start_session(tokens, message)
            .await
            .unwrap_or_else(|failure| failure)
    }

    /// [`Bayeux::handshake`]: the reply, or the failure that answers it.
    async fn start_session(&self, tokens: &Tokens, message: &Inbound) -> Result<Value, Value> {
        check_connection_types(message)?;
        if self.hub.is_shutting_down() {
            return Err(wire::failure(
                message,
                503,
                "shutting down",
                Reconnect::RetryAfter(1000),
            ));
        }
        let (client, grant) = self.handshake_client(tokens, message)?;
        let start = self.session_start(message, &client, grant.as_ref()).await?;
        let ack = wire::wants_ack(message.ext.as_ref());
        let per_client = self.hub.limits().max_polls_per_client as usize;
        let session = self.sessions.create(client, grant, ack, start, per_client);
        let mut reply = wire::reply(message, true);
        reply.insert("clientId".into(), Value::from(session.id.as_str()));
        reply.insert("version".into(), Value::from("1.0"));
        reply.insert("supportedConnectionTypes".into(), json!(CONNECTION_TYPES));
        reply.insert("advice".into(), self.advice(self.hub.limits().poll_timeout));
        if ack {
            reply.insert(
                "ext".into(),
                json!({"ack": {"enabled": true, "batch": start.seq}}),
            );
        }
        Ok(Value::Object(reply))
    }

    /// Who is handshaking: the client its token names, or, without a
    /// token and with the `connect` hook asked, a client of its own (the
    /// backend decides).
    fn handshake_client(
        &self,
        tokens: &Tokens,
        message: &Inbound,
    ) -> Result<(ClientId, Option<Grant>), Value> {
        match wire::token_of(message.ext.as_ref()) {
            Some(token) => match tokens.verify(token) {
                Ok(grant) => Ok((grant.client.clone(), Some(grant))),
                Err(e) => {
                    let code = match e {
                        TokenError::Expired => "token-expired",
                        TokenError::Invalid(_) => "invalid-token",
                    };
                    let reason = format!("{code}: {e}");
                    Err(wire::failure(message, 401, &reason, Reconnect::None))
                }
            },
            None if self.hooks_ask(EventType::Connect) => Ok((anonymous_client(), None)),
            None => Err(wire::failure(
                message,
                401,
                "a token is required in ext.cometbox.token",
                Reconnect::None,
            )),
        }
    }

    /// Brings the client online (the hub's open, which asks the `connect`
    /// hook with the handshake's `ext`) and says where its session starts
    /// reading: where its lapsed session had read to, or else after the
    /// last message any reply carried.
    async fn session_start(
        &self,
        message: &Inbound,
        client: &ClientId,
        grant: Option<&Grant>,
    ) -> Result<Cursor, Value> {
        let request = PollRequest {
            client: client.clone(),
            issued_at: grant.and_then(|g| g.issued_at),
            since: None,
            subscribe: Vec::new(),
            timeout: Some(Duration::ZERO),
            connect_ext: message.ext.clone().map(Box::new),
            open_only: true,
            from_now: false,
        };
        let open = self
            .hub
            .open_for(&request)
            .await
            .map_err(|e| poll_failure(message, &e))?;
        if let Some(cursor) = self.sessions.take_resume(client) {
            return Ok(cursor);
        }
        self.hub.unread_from(&open).await.map_err(|_| {
            wire::failure(
                message,
                503,
                "storage-unavailable",
                Reconnect::RetryAfter(1000),
            )
        })
    }

    /// Whether `[hooks]` asks the backend about `kind`.
    fn hooks_ask(&self, kind: EventType) -> bool {
        self.hub.hooks().is_some_and(|h| h.wants(kind))
    }

    /// The advice every successful handshake and connect carries.
    pub(super) fn advice(&self, timeout: Duration) -> Value {
        json!({
            "reconnect": "retry",
            "interval": 0,
            "timeout": timeout.as_millis() as u64,
            "maxInterval": self.config.session_timeout.as_millis() as u64,
        })
    }

    /// The session a message names, or the reply that it is unknown.
    pub(super) fn session_of(&self, message: &Inbound) -> Result<Arc<Session>, Value> {
        message
            .client_id
            .as_deref()
            .and_then(|id| self.sessions.get(id))
            .ok_or_else(|| wire::failure(message, 402, "session_unknown", Reconnect::Handshake))
    }

    /// [`Bayeux::session_of`], for a message that acts on the session's
    /// grant (connect, subscribe, unsubscribe, publish): a session lives no
    /// longer than its token, as a poll or a stream does. At `exp` the
    /// session ends, and the page is told to handshake again (with a fresh
    /// token).
    pub(super) fn live_session_of(&self, message: &Inbound) -> Result<Arc<Session>, Value> {
        let session = self.session_of(message)?;
        if session
            .grant
            .as_ref()
            .is_some_and(|g| g.expires_at <= unix_now())
        {
            self.sessions.end(&session.id);
            return Err(wire::failure(
                message,
                401,
                "token-expired: the session's token expired; handshake again with a fresh one",
                Reconnect::Handshake,
            ));
        }
        Ok(session)
    }

    /// `/meta/subscribe`: each channel (or pattern) must be granted by the
    /// token, and allowed by the `subscribe` hook; all or none join.
    pub(super) async fn subscribe(&self, message: &Inbound) -> Value {
        let session = match self.live_session_of(message) {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let channels = match self.subscriptions(message, &session) {
            Ok(channels) => channels,
            Err(reply) => return reply,
        };
        if channels.is_empty() {
            return Value::Object(wire::reply(message, true));
        }
        let request = PollRequest {
            client: session.client.clone(),
            issued_at: session.grant.as_ref().and_then(|g| g.issued_at),
            since: None,
            subscribe: channels,
            timeout: Some(Duration::ZERO),
            connect_ext: None,
            open_only: true,
            from_now: false,
        };
        match self.hub.open_for(&request).await {
            Ok(open) => {
                drop(open);
                Value::Object(wire::reply(message, true))
            }
            Err(e) => poll_failure(message, &e),
        }
    }

    /// A subscribe's channels, checked against the token. Without a token
    /// nothing is granted: only the `subscribe` hook, when configured, can
    /// allow a channel (the hub asks it for each).
    fn subscriptions(
        &self,
        message: &Inbound,
        session: &Session,
    ) -> Result<Vec<ChannelName>, Value> {
        let channels = named_channels(message)?;
        let grant = session.grant.as_ref();
        if grant.is_none() && !channels.is_empty() && !self.hooks_ask(EventType::Subscribe) {
            return Err(wire::failure(
                message,
                403,
                "a session without a token may subscribe only where the subscribe hook allows it, and [hooks] does not ask it",
                Reconnect::Unchanged,
            ));
        }
        if let Some(refused) = channels
            .iter()
            .find(|c| grant.is_some_and(|grant| !grant.allows(c)))
        {
            return Err(wire::failure(
                message,
                403,
                &format!("the token does not allow channel {refused}"),
                Reconnect::Unchanged,
            ));
        }
        Ok(channels)
    }

    /// `/meta/unsubscribe`: the client leaves the channels (a browser's own
    /// leave: it may join again).
    pub(super) async fn unsubscribe(&self, message: &Inbound) -> Value {
        let session = match self.live_session_of(message) {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let leaves: Vec<Command> = match named_channels(message) {
            Ok(channels) => channels
                .into_iter()
                .map(|channel| Command::Leave {
                    client: session.client.clone(),
                    channel,
                })
                .collect(),
            Err(reply) => return reply,
        };
        if leaves.is_empty() {
            return Value::Object(wire::reply(message, true));
        }
        match self.hub.apply(leaves).await {
            Ok(_) => Value::Object(wire::reply(message, true)),
            Err(e) => apply_failure(message, &e),
        }
    }

    /// `/meta/disconnect`: the session ends; a connect it holds answers.
    pub(super) fn disconnect(&self, message: &Inbound) -> Value {
        match self.session_of(message) {
            Ok(session) => {
                self.sessions.end(&session.id);
                Value::Object(wire::reply(message, true))
            }
            Err(reply) => reply,
        }
    }

    /// A page publishes: allowed by the token's `publish` claim and/or the
    /// `publish` hook (which may replace the data); then it is a channel
    /// message like ingest's, reaching Bayeux and `/poll` members alike.
    /// A service channel's publish goes to the hook only.
    pub(super) async fn publish(&self, message: &Inbound) -> Value {
        self.try_publish(message)
            .await
            .unwrap_or_else(|failure| failure)
    }

    /// [`Bayeux::publish`]: the reply, or the failure that answers it.
    async fn try_publish(&self, message: &Inbound) -> Result<Value, Value> {
        let session = self.live_session_of(message)?;
        let Some(data) = &message.data else {
            return Err(wire::failure(
                message,
                400,
                "a publish needs data",
                Reconnect::Unchanged,
            ));
        };
        let channel = publish_channel(message)?;
        let service = message.channel.starts_with(SERVICE);
        let data = self
            .allowed_data(message, &session, &channel, data, service)
            .await?;
        if service {
            return Ok(Value::Object(wire::reply(message, true)));
        }
        let command = Command::Message {
            target: Target::Channel(channel),
            event: None,
            payload: Payload::Json(self.payload_of(message, &data)?),
            ttl: None,
            exclude: None,
        };
        match self.hub.apply(vec![command]).await {
            Ok(_) => Ok(Value::Object(wire::reply(message, true))),
            Err(e) => Err(apply_failure(message, &e)),
        }
    }

    /// The data a page may publish on `channel`: as sent, or as the
    /// `publish` hook replaced it. A token's `publish` claim, when it has
    /// one, bounds the page whatever the hook would say; without a claim
    /// the hook decides, and without hooks nothing may be published.
    async fn allowed_data(
        &self,
        message: &Inbound,
        session: &Session,
        channel: &ChannelName,
        data: &Value,
        service: bool,
    ) -> Result<Value, Value> {
        let claim = session.grant.as_ref().filter(|g| !g.publish.is_empty());
        let by_token = claim.is_some_and(|grant: &Grant| grant.allows_publish(channel));
        let refused = || {
            let reason = format!("the token does not allow publishing to {}", message.channel);
            wire::failure(message, 403, &reason, Reconnect::Unchanged)
        };
        if claim.is_some() && !by_token && !service {
            return Err(refused());
        }
        match self.hub.hooks().filter(|h| h.wants(EventType::Publish)) {
            Some(hooks) => hooks
                .publish(session.client.as_str(), channel.as_str(), data.clone())
                .await
                .map(|replaced| replaced.unwrap_or_else(|| data.clone()))
                .map_err(|Denied(reason)| {
                    wire::failure(message, 403, &reason, Reconnect::Unchanged)
                }),
            None if service => Err(wire::failure(
                message,
                403,
                "service channels go to the publish hook, and [hooks] is not configured",
                Reconnect::Unchanged,
            )),
            None if !by_token => Err(refused()),
            None => Ok(data.clone()),
        }
    }

    /// Published data as a message payload, within `max_payload_bytes`.
    fn payload_of(&self, message: &Inbound, data: &Value) -> Result<Box<RawValue>, Value> {
        match RawValue::from_string(data.to_string()) {
            Ok(raw) if raw.get().len() <= self.max_payload_bytes => Ok(raw),
            _ => Err(wire::failure(
                message,
                413,
                &format!("data is over {} bytes", self.max_payload_bytes),
                Reconnect::Unchanged,
            )),
        }
    }
}

/// The channel a publish names: one channel (no pattern), and not one of
/// those [`is_reserved_for_publish`] keeps for the server.
fn publish_channel(message: &Inbound) -> Result<ChannelName, Value> {
    let channel = ChannelName::parse_target(&message.channel)
        .map_err(|e| wire::failure(message, 400, &e.to_string(), Reconnect::Unchanged))?;
    if is_reserved_for_publish(&message.channel) {
        return Err(wire::failure(
            message,
            403,
            &format!(
                "{} is reserved: /meta/ and /cometbox/ carry the server's own messages",
                message.channel
            ),
            Reconnect::Unchanged,
        ));
    }
    Ok(channel)
}

/// A handshake that names the connection types it supports must name one
/// that is served.
fn check_connection_types(message: &Inbound) -> Result<(), Value> {
    let Some(types) = &message.supported_connection_types else {
        return Ok(());
    };
    if types.iter().any(|t| CONNECTION_TYPES.contains(&t.as_str())) {
        return Ok(());
    }
    let mut reply = wire::failure(
        message,
        406,
        "no common connection type: long-polling and callback-polling are served",
        Reconnect::None,
    );
    reply["supportedConnectionTypes"] = json!(CONNECTION_TYPES);
    Err(reply)
}

/// The channels (and patterns) a subscribe or unsubscribe names, but for
/// those [`is_own_channel`] leaves out.
fn named_channels(message: &Inbound) -> Result<Vec<ChannelName>, Value> {
    let Some(subscription) = &message.subscription else {
        return Err(wire::failure(
            message,
            400,
            "subscription is required",
            Reconnect::Unchanged,
        ));
    };
    subscription
        .names()
        .iter()
        .filter(|name| !is_own_channel(name))
        .map(|name| {
            ChannelName::parse(name)
                .map_err(|e| wire::failure(message, 400, &e.to_string(), Reconnect::Unchanged))
        })
        .collect()
}

/// Channels a subscribe answers without joining anything: meta channels,
/// service channels, and cometbox's own (`/cometbox/direct` and
/// `/cometbox/reset` carry only this session's messages, which come
/// anyway; Faye hands a page only what it subscribed to, so it must be
/// able to subscribe to them).
fn is_own_channel(name: &str) -> bool {
    name.starts_with("/meta/") || name.starts_with(SERVICE) || name.starts_with(OWN)
}

/// Channels no page may publish to, whatever its token grants: cometbox's
/// own (a publish there would look exactly like a backend's direct message
/// or a reset to every `/**` subscriber) and the meta channels.
pub fn is_reserved_for_publish(name: &str) -> bool {
    name.starts_with(OWN) || name.starts_with("/meta/")
}

/// Seconds since the epoch, as a token's `exp` counts them.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A client id for a session without a token: the hooks decide who it is
/// allowed to be, and it is nobody else.
fn anonymous_client() -> ClientId {
    let id = format!("bayeux-{:032x}", rand::random::<u128>());
    ClientId::parse(&id).expect("hex after a prefix is a valid client id")
}

/// A refused open (handshake, subscribe) as a Bayeux reply.
pub(super) fn poll_failure(message: &Inbound, e: &PollError) -> Value {
    let (code, reconnect) = match e {
        PollError::Denied(_) => (403, Reconnect::Unchanged),
        PollError::TooManyChannels(_) => (400, Reconnect::Unchanged),
        PollError::TooManyPolls(_) => (429, Reconnect::RetryAfter(1000)),
        PollError::TooManyClients(_) | PollError::Storage(_) => (503, Reconnect::RetryAfter(1000)),
    };
    let reconnect = match (message.channel.as_str(), reconnect) {
        // A refused handshake is final until something changes.
        ("/meta/handshake", Reconnect::Unchanged) => Reconnect::None,
        (_, reconnect) => reconnect,
    };
    wire::failure(message, code, &e.to_string(), reconnect)
}

/// A refused change (publish, unsubscribe) as a Bayeux reply.
fn apply_failure(message: &Inbound, e: &ApplyError) -> Value {
    let code = match e {
        ApplyError::TooManyChannels { .. } => 400,
        ApplyError::TooManyClients { .. }
        | ApplyError::Storage(_)
        | ApplyError::PartlyApplied { .. } => 503,
    };
    wire::failure(message, code, &e.to_string(), Reconnect::Unchanged)
}
