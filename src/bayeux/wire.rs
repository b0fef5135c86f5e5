//! Bayeux messages on the wire: reading a request's batch, and building the
//! replies. Only the fields cometbox reads are typed; a reply echoes the
//! request's `id` whatever its JSON type (clients send strings, some
//! numbers).

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Messages one request may carry at most: CometD batches a page's
/// subscribes and publishes, which stay far below this.
pub const MAX_BATCH: usize = 256;

/// The connection types served. `cross-origin-long-polling` is Faye's
/// name for long-polling with CORS (a `text/plain` POST of `message=`);
/// listing it keeps a Faye page on another origin off callback-polling.
pub const CONNECTION_TYPES: [&str; 3] = [
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
];

/// One message a client sent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    /// `/meta/handshake`, `/meta/connect`, ..., or a channel to publish to.
    pub channel: String,
    /// Echoed in the reply.
    #[serde(default)]
    pub id: Option<Value>,
    /// The session, on everything but a handshake.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `/meta/subscribe`, `/meta/unsubscribe`: one channel or several.
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// A publish's payload.
    #[serde(default)]
    pub data: Option<Value>,
    /// Extensions: `ext.cometbox.token` on a handshake, `ext.ack` on a
    /// connect (CometD's acknowledgement extension).
    #[serde(default)]
    pub ext: Option<Value>,
    /// `advice.timeout` on a connect: how long the client lets it wait (ms).
    #[serde(default)]
    pub advice: Option<Value>,
    /// A connect's transport.
    #[serde(default)]
    pub connection_type: Option<String>,
    /// A handshake's transports.
    #[serde(default)]
    pub supported_connection_types: Option<Vec<String>>,
}

/// A subscription field: a channel, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Subscription {
    /// One channel.
    One(String),
    /// Several, answered together.
    Many(Vec<String>),
}

impl Subscription {
    /// The channels named.
    pub fn names(&self) -> &[String] {
        match self {
            Subscription::One(name) => std::slice::from_ref(name),
            Subscription::Many(names) => names,
        }
    }

    /// As the reply echoes it.
    pub fn to_value(&self) -> Value {
        match self {
            Subscription::One(name) => Value::from(name.as_str()),
            Subscription::Many(names) => Value::from(names.clone()),
        }
    }
}

/// Why a request body is not a batch of Bayeux messages.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Not JSON, or not messages.
    #[error("not a Bayeux message or array of messages: {0}")]
    Invalid(String),
    /// More than [`MAX_BATCH`] messages.
    #[error("more than {MAX_BATCH} messages in one request")]
    TooMany,
    /// No message at all.
    #[error("an empty batch")]
    Empty,
}

/// Reads a batch: a JSON array of messages, or one message.
pub fn parse_batch(text: &[u8]) -> Result<Vec<Inbound>, BatchError> {
    let value: Value =
        serde_json::from_slice(text).map_err(|e| BatchError::Invalid(e.to_string()))?;
    let values = match value {
        Value::Array(values) => values,
        one @ Value::Object(_) => vec![one],
        _ => return Err(BatchError::Invalid("expected an array or an object".into())),
    };
    if values.is_empty() {
        return Err(BatchError::Empty);
    }
    if values.len() > MAX_BATCH {
        return Err(BatchError::TooMany);
    }
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).map_err(|e| BatchError::Invalid(e.to_string())))
        .collect()
}

/// A reply to `message`: its channel, `successful`, and its `id` and
/// `clientId` echoed.
pub fn reply(message: &Inbound, successful: bool) -> Map<String, Value> {
    let mut reply = Map::new();
    reply.insert("channel".into(), Value::from(message.channel.as_str()));
    reply.insert("successful".into(), Value::from(successful));
    if let Some(id) = &message.id {
        reply.insert("id".into(), id.clone());
    }
    if let Some(client) = &message.client_id {
        reply.insert("clientId".into(), Value::from(client.as_str()));
    }
    if let Some(subscription) = &message.subscription {
        reply.insert("subscription".into(), subscription.to_value());
    }
    reply
}

/// An unsuccessful reply: `error` is `<code>::<reason>`, as Bayeux writes
/// them; `advice.reconnect` says what the client should do next.
pub fn failure(message: &Inbound, code: u16, reason: &str, reconnect: Reconnect) -> Value {
    let mut reply = reply(message, false);
    reply.insert("error".into(), Value::from(format!("{code}::{reason}")));
    if let Some(advice) = reconnect.advice() {
        reply.insert("advice".into(), advice);
    }
    Value::Object(reply)
}

/// What a failed reply advises.
#[derive(Debug, Clone, Copy)]
pub enum Reconnect {
    /// Nothing: the failure is about this message only (a denied
    /// subscribe or publish).
    Unchanged,
    /// Handshake again (the session is unknown).
    Handshake,
    /// Retry after a pause (the store is unavailable).
    RetryAfter(u64),
    /// Stop (a refused handshake).
    None,
}

impl Reconnect {
    fn advice(self) -> Option<Value> {
        match self {
            Reconnect::Unchanged => None,
            Reconnect::Handshake => Some(json!({"reconnect": "handshake", "interval": 0})),
            Reconnect::RetryAfter(ms) => Some(json!({"reconnect": "retry", "interval": ms})),
            Reconnect::None => Some(json!({"reconnect": "none"})),
        }
    }
}

/// `ext.cometbox.token` of a handshake.
pub fn token_of(ext: Option<&Value>) -> Option<&str> {
    ext?.get("cometbox")?.get("token")?.as_str()
}

/// Whether a handshake asks for CometD's acknowledgement extension.
pub fn wants_ack(ext: Option<&Value>) -> bool {
    ext.and_then(|e| e.get("ack")).and_then(Value::as_bool) == Some(true)
}

/// A connect's acknowledged batch (CometD's `ext.ack`).
pub fn ack_of(ext: Option<&Value>) -> Option<u64> {
    let ack = ext?.get("ack")?;
    ack.as_u64()
        .or_else(|| ack.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// A connect's `advice.timeout`, in milliseconds.
pub fn timeout_of(advice: Option<&Value>) -> Option<u64> {
    let timeout = advice?.get("timeout")?;
    timeout
        .as_u64()
        .or_else(|| timeout.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_an_array_or_one_object() {
        let batch =
            parse_batch(br#"[{"channel":"/meta/connect","clientId":"c","id":"2"}]"#).unwrap();
        assert_eq!(batch[0].client_id.as_deref(), Some("c"));
        let one =
            parse_batch(br#"{"channel":"/meta/subscribe","subscription":["/a","/b"],"id":3}"#)
                .unwrap();
        assert_eq!(one[0].subscription.as_ref().unwrap().names(), ["/a", "/b"]);
        for bad in [&b"[]"[..], b"3", b"[{\"id\":1}]", b"{", b"[1]"] {
            assert!(
                parse_batch(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = format!("[{}]", vec![r#"{"channel":"/a"}"#; MAX_BATCH + 1].join(","));
        assert!(matches!(
            parse_batch(many.as_bytes()),
            Err(BatchError::TooMany)
        ));
    }

    #[test]
    fn failures_echo_the_id_and_carry_the_advice() {
        let message = parse_batch(br#"{"channel":"/meta/connect","clientId":"x","id":7}"#)
            .unwrap()
            .remove(0);
        let reply = failure(&message, 402, "session_unknown", Reconnect::Handshake);
        assert_eq!(
            reply,
            json!({"channel":"/meta/connect","successful":false,"id":7,"clientId":"x",
                   "error":"402::session_unknown","advice":{"reconnect":"handshake","interval":0}})
        );
    }

    #[test]
    fn extensions_are_read_where_clients_put_them() {
        let ext = json!({"cometbox": {"token": "t"}, "ack": true});
        assert_eq!(token_of(Some(&ext)), Some("t"));
        assert!(wants_ack(Some(&ext)));
        assert_eq!(ack_of(Some(&json!({"ack": 12}))), Some(12));
        assert_eq!(ack_of(Some(&json!({"ack": true}))), None);
        assert_eq!(timeout_of(Some(&json!({"timeout": 0}))), Some(0));
    }
}
