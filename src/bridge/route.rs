//! A broker message (headers and payload) to the [`Command`] ingest would
//! have built for it, with the same checks: ids, channel names, event names
//! and JSON are validated by `protocol`'s own code.

use crate::protocol::ingest::{event_name, PayloadType};
use crate::protocol::{ChannelName, ClientId, Command, Target};

/// How one bridge routes its messages.
#[derive(Debug, Clone)]
pub struct Route {
    /// The fixed channel, if any.
    pub channel: Option<ChannelName>,
    /// A header naming the channel.
    pub channel_header: Option<String>,
    /// A header naming a client (wins over any channel).
    pub client_header: Option<String>,
    /// A header naming the event (wins over `event`).
    pub event_header: Option<String>,
    /// The fixed event name, if any.
    pub event: Option<String>,
    /// How payloads are read.
    pub kind: PayloadType,
    /// `[limits] max_payload_bytes`.
    pub max_payload_bytes: usize,
}

/// Why a message was skipped (counted, never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// A header named an invalid client id or channel, or no target at all.
    #[error("no valid target: {0}")]
    Target(String),
    /// An event header that is not a valid event name.
    #[error("invalid event: {0}")]
    Event(String),
    /// The payload is not UTF-8, not JSON for `type = "json"`, or too large.
    #[error("invalid payload: {0}")]
    Payload(String),
}

impl Route {
    /// The command for a message whose headers `header` looks up.
    pub fn command<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        payload: &[u8],
    ) -> Result<Command, Skip> {
        let named = |name: &Option<String>| name.as_deref().and_then(&header);
        let target = if let Some(id) = named(&self.client_header) {
            Target::Client(ClientId::parse(id).map_err(|e| Skip::Target(e.to_string()))?)
        } else if let Some(name) = named(&self.channel_header) {
            Target::Channel(
                ChannelName::parse_target(name).map_err(|e| Skip::Target(e.to_string()))?,
            )
        } else if let Some(channel) = &self.channel {
            Target::Channel(channel.clone())
        } else {
            return Err(Skip::Target(
                "the message has none of the routing headers and the bridge has no channel".into(),
            ));
        };
        let event = match named(&self.event_header) {
            Some(e) => Some(event_name(e).map_err(Skip::Event)?),
            None => self.event.clone(),
        };
        if payload.len() > self.max_payload_bytes {
            return Err(Skip::Payload(format!(
                "{} bytes, over max_payload_bytes ({})",
                payload.len(),
                self.max_payload_bytes
            )));
        }
        let text = std::str::from_utf8(payload)
            .map_err(|e| Skip::Payload(format!("not UTF-8: {e}")))?
            .to_owned();
        let payload = self.kind.read(text).map_err(Skip::Payload)?;
        Ok(Command::Message {
            target,
            event,
            payload,
            ttl: None,
            exclude: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;

    fn route() -> Route {
        Route {
            channel: Some(ChannelName::parse("fixed").unwrap()),
            channel_header: Some("cometbox-channel".into()),
            client_header: Some("cometbox-client".into()),
            event_header: Some("cometbox-event".into()),
            event: Some("default".into()),
            kind: PayloadType::Json,
            max_payload_bytes: 64,
        }
    }

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    fn target_event(c: Command) -> (Target, Option<String>) {
        match c {
            Command::Message { target, event, .. } => (target, event),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn headers_win_over_the_fixed_channel_and_event() {
        let r = route();
        let (t, e) = target_event(r.command(headers(&[]), b"{}").unwrap());
        assert_eq!(t, Target::Channel(ChannelName::parse("fixed").unwrap()));
        assert_eq!(e.as_deref(), Some("default"));
        let h = [("cometbox-channel", "room:1"), ("cometbox-event", "chat")];
        let (t, e) = target_event(r.command(headers(&h), b"1").unwrap());
        assert_eq!(t, Target::Channel(ChannelName::parse("room:1").unwrap()));
        assert_eq!(e.as_deref(), Some("chat"));
        let h = [("cometbox-channel", "room:1"), ("cometbox-client", "alice")];
        let (t, _) = target_event(r.command(headers(&h), b"1").unwrap());
        assert_eq!(t, Target::Client(ClientId::parse("alice").unwrap()));
    }

    #[test]
    fn invalid_messages_are_skipped_with_a_reason() {
        let r = route();
        assert!(matches!(
            r.command(headers(&[]), b"{nope"),
            Err(Skip::Payload(_))
        ));
        assert!(matches!(
            r.command(headers(&[]), b"\xff"),
            Err(Skip::Payload(_))
        ));
        assert!(matches!(
            r.command(headers(&[]), &[b'1'; 65]),
            Err(Skip::Payload(_))
        ));
        let h = [("cometbox-client", "not valid!")];
        assert!(matches!(r.command(headers(&h), b"1"), Err(Skip::Target(_))));
        let h = [("cometbox-event", "")];
        assert!(matches!(r.command(headers(&h), b"1"), Err(Skip::Event(_))));
        let none = Route {
            channel: None,
            ..route()
        };
        assert!(matches!(
            none.command(headers(&[]), b"1"),
            Err(Skip::Target(_))
        ));
    }

    #[test]
    fn text_payloads_become_strings() {
        let r = Route {
            kind: PayloadType::Text,
            ..route()
        };
        match r.command(headers(&[]), b"not json").unwrap() {
            Command::Message {
                payload: Payload::Text(t),
                ..
            } => assert_eq!(t, "not json"),
            other => panic!("{other:?}"),
        }
    }
}
