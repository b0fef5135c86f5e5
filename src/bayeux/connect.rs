//! `/meta/connect`: a poll of the session's mailbox, and what it read as
//! Bayeux messages.
//!
//! The connect reads after the session's cursor, or, when the client
//! speaks CometD's acknowledgement extension, after the batch it says it
//! received (`ext.ack`): a reply lost on the way is then sent again rather
//! than skipped. Without the extension the cursor moves when the reply is
//! made, so a reply lost after that is lost, as with every Bayeux server.
//!
//! Each mailbox message becomes `{"channel", "data", "id"}`: `id` is its
//! cursor, a channel message keeps its channel, a message sent to the
//! client alone (`<message to=...>`) comes on [`DIRECT`], and an event name
//! rides in `ext.cometbox.event`. When the cursor could not be honoured
//! (messages after it are gone), a message on [`RESET`] comes first.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::meta::poll_failure;
use super::session::Session;
use super::wire::{self, Inbound, Reconnect, CONNECTION_TYPES};
use super::Bayeux;
use crate::hub::{OpenPoll, PollRequest, Waited};
use crate::protocol::Cursor;
use crate::store::ReadOutcome;

/// The channel of messages sent to one client rather than to a channel.
pub const DIRECT: &str = "/cometbox/direct";

/// The channel that says messages were lost before those that follow.
pub const RESET: &str = "/cometbox/reset";

/// A connect accepted, to be waited on.
pub struct PendingConnect {
    message: Inbound,
    holding: Holding,
    since: Cursor,
    timeout: Duration,
    /// This connect's number: a newer one supersedes it.
    number: u64,
}

/// What a connect came to: the messages it read and its own reply, in that
/// order, and the poll to keep open until they are written.
pub struct Connected {
    /// Delivered messages, then the connect's reply.
    pub messages: Vec<Value>,
    /// Counts as an open poll until dropped.
    pub open: Option<OpenPoll>,
}

/// Counts a held connect on its session, so it does not lapse meanwhile;
/// the lapse clock starts again when it is dropped.
struct Holding(Arc<Session>);

impl Drop for Holding {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.holding -= 1;
        state.last_seen = Instant::now();
    }
}

/// A mailbox message's shared members, as `protocol::reply` wrote them.
#[derive(Deserialize)]
struct Stored {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    event: Option<String>,
    data: Value,
}

impl Bayeux {
    /// Checks a connect and counts it on its session; a connect the
    /// session was holding answers at once.
    pub(super) fn prepare_connect(&self, message: Inbound) -> Result<PendingConnect, Value> {
        let session = self.live_session_of(&message)?;
        if let Some(kind) = &message.connection_type {
            if !CONNECTION_TYPES.contains(&kind.as_str()) {
                return Err(wire::failure(
                    &message,
                    400,
                    &format!("connectionType {kind:?} is not served"),
                    Reconnect::Handshake,
                ));
            }
        }
        let limits = self.hub.limits();
        let mut timeout = wire::timeout_of(message.advice.as_ref())
            .map_or(limits.poll_timeout, |ms| {
                Duration::from_millis(ms).min(limits.max_poll_timeout)
            });
        if let Some(grant) = &session.grant {
            // Held no later than the token's `exp`: the next connect is then
            // told to handshake again.
            let left = grant.expires_at.saturating_sub(super::meta::unix_now());
            timeout = timeout.min(Duration::from_secs(left));
        }
        let acked = wire::ack_of(message.ext.as_ref()).filter(|_| session.ack);
        let (since, number) = {
            let mut state = session.lock();
            state.connects += 1;
            state.holding += 1;
            let since = match acked {
                Some(seq) => Cursor {
                    epoch: state.cursor.epoch,
                    seq,
                },
                None => state.cursor,
            };
            (since, state.connects)
        };
        session.nudge.notify_waiters();
        Ok(PendingConnect {
            message,
            holding: Holding(session),
            since,
            timeout,
            number,
        })
    }

    /// Waits until the session's mailbox has something after the cursor,
    /// the timeout passes, a newer connect comes or the session ends.
    pub async fn connect(&self, pending: PendingConnect) -> Connected {
        let PendingConnect {
            message,
            holding,
            since,
            timeout,
            number,
        } = pending;
        let session = &holding.0;
        let open = match self.hub.open_for(&poll_of(session, since, timeout)).await {
            Ok(open) => open,
            Err(e) => {
                return Connected {
                    messages: vec![poll_failure(&message, &e)],
                    open: None,
                }
            }
        };
        let waited = self
            .wait_for_mail(session, &open, since, timeout, number)
            .await;
        let (mut messages, cursor) = match self.delivered(session, &message, waited) {
            Ok(delivered) => delivered,
            Err(reply) => {
                return Connected {
                    messages: vec![reply],
                    open: Some(open),
                }
            }
        };
        {
            let mut state = session.lock();
            // A newer connect read from where this one started: moving the
            // cursor under it could skip what it is about to read.
            if state.connects == number {
                state.cursor = cursor;
            }
        }
        messages.push(self.connect_reply(&message, session, cursor));
        Connected {
            messages,
            open: Some(open),
        }
    }

    /// The hub's wait on the session's mailbox, cut short by a newer
    /// connect or the session's end (the session's `nudge`).
    async fn wait_for_mail(
        &self,
        session: &Session,
        open: &OpenPoll,
        since: Cursor,
        timeout: Duration,
        number: u64,
    ) -> Waited {
        let mut nudged = pin!(session.nudge.notified());
        nudged.as_mut().enable();
        if self.superseded(session, number) {
            return Waited::Nothing(since);
        }
        tokio::select! {
            waited = self.hub.wait(open, Some(since), timeout) => waited,
            _ = nudged => Waited::Nothing(since),
        }
    }

    /// What a wait delivered, as Bayeux messages, and the cursor after
    /// them; or the connect's failure reply (the session ended, the backend
    /// disconnected the client, the store failed).
    fn delivered(
        &self,
        session: &Session,
        message: &Inbound,
        waited: Waited,
    ) -> Result<(Vec<Value>, Cursor), Value> {
        if session.lock().ended {
            return Err(wire::failure(
                message,
                402,
                "session_unknown",
                Reconnect::None,
            ));
        }
        match waited {
            Waited::Read(outcome) => {
                let cursor = outcome.cursor;
                Ok((bayeux_messages(outcome), cursor))
            }
            Waited::Nothing(cursor) | Waited::Replaced(cursor) => Ok((Vec::new(), cursor)),
            Waited::Disconnected(_) => {
                // The backend disconnected the client: its mailbox is gone.
                self.sessions.end(&session.id);
                Err(wire::failure(
                    message,
                    402,
                    "session_unknown",
                    Reconnect::None,
                ))
            }
            Waited::Failed(_) => Err(wire::failure(
                message,
                503,
                "storage-unavailable",
                Reconnect::RetryAfter(1000),
            )),
        }
    }

    /// The connect's own successful reply: advice, and with the
    /// acknowledgement extension the batch it acknowledges.
    fn connect_reply(&self, message: &Inbound, session: &Session, cursor: Cursor) -> Value {
        let mut reply = wire::reply(message, true);
        reply.insert("advice".into(), self.advice(self.hub.limits().poll_timeout));
        if session.ack {
            reply.insert("ext".into(), json!({"ack": cursor.seq}));
        }
        Value::Object(reply)
    }

    fn superseded(&self, session: &Session, number: u64) -> bool {
        let state = session.lock();
        state.ended || state.connects != number
    }
}

/// The hub's poll of a session's mailbox, from `since`.
fn poll_of(session: &Session, since: Cursor, timeout: Duration) -> PollRequest {
    PollRequest {
        client: session.client.clone(),
        issued_at: session.grant.as_ref().and_then(|g| g.issued_at),
        since: Some(since),
        subscribe: Vec::new(),
        timeout: Some(timeout),
        connect_ext: None,
        open_only: false,
        from_now: false,
    }
}

/// What a connect read, as Bayeux messages.
fn bayeux_messages(outcome: ReadOutcome) -> Vec<Value> {
    let epoch = outcome.cursor.epoch;
    let mut out = Vec::with_capacity(outcome.messages.len() + 1);
    if outcome.reset {
        out.push(json!({
            "channel": RESET,
            "data": {"cursor": outcome.cursor.to_string()},
        }));
    }
    for (seq, message) in &outcome.messages {
        let id = Cursor { epoch, seq: *seq }.to_string();
        let Ok(stored) = serde_json::from_str::<Stored>(&format!("{{{}", message.json_tail)) else {
            // Every tail was written by `protocol::reply`; one that does
            // not read back is a bug, logged rather than sent half.
            tracing::error!(id, "a stored message does not read back as JSON");
            continue;
        };
        let mut bayeux = Map::new();
        bayeux.insert(
            "channel".into(),
            Value::from(stored.channel.unwrap_or_else(|| DIRECT.into())),
        );
        bayeux.insert("data".into(), stored.data);
        bayeux.insert("id".into(), Value::from(id));
        if let Some(event) = stored.event {
            bayeux.insert("ext".into(), json!({"cometbox": {"event": event}}));
        }
        out.push(Value::Object(bayeux));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{reply::message_tail, ChannelName, Payload};
    use crate::store::StoredMessage;

    fn stored(channel: Option<&str>, event: Option<&str>, data: &str) -> Arc<StoredMessage> {
        let channel = channel.map(|c| ChannelName::parse(c).unwrap());
        let payload = Payload::Json(serde_json::value::RawValue::from_string(data.into()).unwrap());
        Arc::new(StoredMessage::new(
            message_tail(channel.as_ref(), event, None, &payload, 1),
            Instant::now(),
            false,
        ))
    }

    #[test]
    fn mailbox_messages_become_bayeux_messages() {
        let outcome = ReadOutcome {
            messages: vec![
                (4, stored(Some("/chat/demo"), None, r#"{"text":"hi"}"#)),
                (5, stored(None, Some("notice"), "7")),
            ],
            cursor: Cursor { epoch: 3, seq: 5 },
            reset: true,
        };
        let out = bayeux_messages(outcome);
        assert_eq!(out[0]["channel"], RESET);
        assert_eq!(
            out[1],
            json!({"channel": "/chat/demo", "data": {"text": "hi"}, "id": Cursor { epoch: 3, seq: 4 }.to_string()})
        );
        assert_eq!(out[2]["channel"], DIRECT);
        assert_eq!(out[2]["data"], 7);
        assert_eq!(out[2]["ext"]["cometbox"]["event"], "notice");
    }
}
