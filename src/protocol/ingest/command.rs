//! From a command element to a [`Command`]: its attributes read and
//! checked against the element's, and a message's target, event, ttl and
//! payload. [`event_name`] and [`PayloadType`] are also the rules a
//! bridge's messages are checked by.

use std::time::Duration;

use quick_xml::events::BytesStart;
use quick_xml::XmlVersion;
use serde_json::value::RawValue;

use super::error::{ErrorCode, ParseError};
use crate::protocol::{ChannelName, ClientId, Command, Payload, Target};

/// A command whose start tag has been read and whose text is being gathered.
pub(super) struct OpenCommand {
    pub(super) element: Element,
    pub(super) start: BytesStart<'static>,
    /// Byte offset of its start tag, for error lines.
    pub(super) at: usize,
    pub(super) text: String,
    pub(super) in_batch: bool,
}

/// The command elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Element {
    Message,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

impl Element {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "message" => Element::Message,
            "subscribe" => Element::Subscribe,
            "unsubscribe" => Element::Unsubscribe,
            "disconnect" => Element::Disconnect,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Element::Message => "message",
            Element::Subscribe => "subscribe",
            Element::Unsubscribe => "unsubscribe",
            Element::Disconnect => "disconnect",
        }
    }

    fn attributes(self) -> &'static [&'static str] {
        match self {
            Element::Message => &["to", "channel", "event", "type", "ttl"],
            Element::Subscribe | Element::Unsubscribe => &["client", "channel"],
            Element::Disconnect => &["client"],
        }
    }
}

/// A finished command element as its [`Command`]; `fail` places an error
/// at the element.
pub(super) fn build(
    open: OpenCommand,
    fail: &impl Fn(ErrorCode, String) -> ParseError,
) -> Result<Command, ParseError> {
    let attrs = Attributes::read(&open, fail)?;
    if open.element != Element::Message && !open.text.trim().is_empty() {
        return Err(fail(
            ErrorCode::InvalidRequest,
            format!("<{}> takes no text", open.element.name()),
        ));
    }
    Ok(match open.element {
        Element::Message => build_message(&attrs, open.text, fail)?,
        Element::Subscribe => Command::Subscribe {
            client: attrs.client_id("client", fail)?,
            channel: attrs.channel("channel", fail)?,
        },
        Element::Unsubscribe => Command::Unsubscribe {
            client: attrs.client_id("client", fail)?,
            channel: attrs.channel("channel", fail)?,
        },
        Element::Disconnect => Command::Disconnect {
            client: attrs.client_id("client", fail)?,
        },
    })
}

/// The attributes of one command element, unescaped and checked against the
/// element's allowed names.
struct Attributes(Vec<(&'static str, String)>);

impl Attributes {
    fn read(
        open: &OpenCommand,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<Self, ParseError> {
        let allowed = open.element.attributes();
        let mut found = Vec::new();
        for attr in open.start.attributes() {
            let attr = attr.map_err(|e| fail(ErrorCode::MalformedXml, e.to_string()))?;
            let key = attr.key.0;
            let Some(&known) = allowed.iter().find(|&&a| a == key) else {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    format!(
                        "unknown attribute {key:?} on <{}> (allowed: {})",
                        open.element.name(),
                        allowed.join(", ")
                    ),
                ));
            };
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| fail(ErrorCode::MalformedXml, e.to_string()))?;
            found.push((known, value.into_owned()));
        }
        Ok(Attributes(found))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(
        &self,
        name: &str,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<&str, ParseError> {
        self.get(name).ok_or_else(|| {
            fail(
                ErrorCode::InvalidRequest,
                format!("missing attribute {name:?}"),
            )
        })
    }

    fn client_id(
        &self,
        name: &str,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<ClientId, ParseError> {
        ClientId::parse(self.required(name, fail)?)
            .map_err(|e| fail(ErrorCode::InvalidId, e.to_string()))
    }

    fn channel(
        &self,
        name: &str,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<ChannelName, ParseError> {
        ChannelName::parse(self.required(name, fail)?)
            .map_err(|e| fail(ErrorCode::InvalidId, e.to_string()))
    }
}

/// Longest `event` name accepted.
const MAX_EVENT_LEN: usize = 128;

fn build_message(
    attrs: &Attributes,
    text: String,
    fail: &impl Fn(ErrorCode, String) -> ParseError,
) -> Result<Command, ParseError> {
    let target = match (attrs.get("to"), attrs.get("channel")) {
        (Some(_), None) => Target::Client(attrs.client_id("to", fail)?),
        (None, Some(_)) => Target::Channel(
            ChannelName::parse_target(attrs.required("channel", fail)?)
                .map_err(|e| fail(ErrorCode::InvalidId, e.to_string()))?,
        ),
        _ => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "needs exactly one of \"to\" or \"channel\"".into(),
            ))
        }
    };
    let event = attrs
        .get("event")
        .map(event_name)
        .transpose()
        .map_err(|m| fail(ErrorCode::InvalidRequest, m))?;
    let ttl = match attrs.get("ttl") {
        None => None,
        Some(s) => match s.trim().parse::<u32>() {
            Ok(secs) if secs > 0 => Some(Duration::from_secs(secs.into())),
            _ => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    format!("\"ttl\" must be a whole number of seconds above 0, got {s:?}"),
                ))
            }
        },
    };
    let payload = match PayloadType::parse(attrs.get("type").unwrap_or("json")) {
        Ok(kind) => kind
            .read(text)
            .map_err(|m| fail(ErrorCode::InvalidJson, m))?,
        Err(m) => return Err(fail(ErrorCode::InvalidRequest, m)),
    };
    Ok(Command::Message {
        target,
        event,
        payload,
        ttl,
        exclude: None,
    })
}

/// A message's `event` name, checked: what ingest's `event` attribute and a
/// bridge's event (fixed or from a header) must both be.
pub fn event_name(e: &str) -> Result<String, String> {
    if e.is_empty() || e.len() > MAX_EVENT_LEN || e.chars().any(char::is_control) {
        return Err(format!(
            "\"event\" must be 1 to {MAX_EVENT_LEN} bytes without control characters"
        ));
    }
    Ok(e.to_owned())
}

/// How a message's text is read: a `<message type="...">`, or a bridge's
/// `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    /// `json`: the text must be one JSON value, delivered verbatim.
    Json,
    /// `text`: delivered as a JSON string.
    Text,
}

impl PayloadType {
    /// `json` or `text`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(PayloadType::Json),
            "text" => Ok(PayloadType::Text),
            other => Err(format!("\"type\" must be json or text, got {other:?}")),
        }
    }

    /// The payload `text` makes, or why it is not valid JSON.
    pub fn read(self, text: String) -> Result<Payload, String> {
        match self {
            PayloadType::Json => parse_json(&text).map(Payload::Json),
            PayloadType::Text => Ok(Payload::Text(text)),
        }
    }
}

fn parse_json(text: &str) -> Result<Box<RawValue>, String> {
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err("empty payload: a json message needs a JSON value (or type=\"text\")".into());
    }
    serde_json::from_str::<Box<RawValue>>(trimmed).map_err(|e| {
        let full = e.to_string();
        let what = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(what, _)| what);
        if e.line() == 1 {
            format!("{what} at column {}", e.column())
        } else {
            format!("{what} at line {} column {}", e.line(), e.column())
        }
    })
}
