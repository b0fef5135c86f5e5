//! Encodes poll replies.
//!
//! A message is serialised once, when it is accepted, into the JSON members
//! every recipient shares (`"channel":..,"event":..,"data":..,"ts":..}`). A
//! reply only prefixes each with its per-mailbox `{"id":"<cursor>",`, so a
//! channel message to 10,000 clients is one allocation, not 10,000.

use std::fmt::Write as _;

use super::{ChannelName, Cursor, Payload};

/// Builds the shared tail of a message's JSON object, from after the `id`
/// member to the closing brace.
///
/// `exclude` (a Pusher socket id, digits and a dot) is written after
/// `data` as `"exclude":"<socket id>"`, for a Pusher connection layer to
/// skip the sender; other transports pass it along unread.
pub fn message_tail(
    channel: Option<&ChannelName>,
    event: Option<&str>,
    exclude: Option<&str>,
    payload: &Payload,
    ts_ms: u64,
) -> Box<str> {
    let data_len = match payload {
        Payload::Json(raw) => raw.get().len(),
        Payload::Text(text) => text.len() + 2,
    };
    let mut out = String::with_capacity(data_len + 64);
    if let Some(channel) = channel {
        // Channel names are restricted to characters that need no escaping.
        let _ = write!(out, r#""channel":"{channel}","#);
    }
    if let Some(event) = event {
        out.push_str(r#""event":"#);
        push_json_string(&mut out, event);
        out.push(',');
    }
    out.push_str(r#""data":"#);
    match payload {
        Payload::Json(raw) => out.push_str(raw.get()),
        Payload::Text(text) => push_json_string(&mut out, text),
    }
    if let Some(exclude) = exclude {
        out.push_str(r#","exclude":"#);
        push_json_string(&mut out, exclude);
    }
    let _ = write!(out, r#","ts":{ts_ms}}}"#);
    out.into_boxed_str()
}

/// The `event` of a message, read back from the tail [`message_tail`]
/// wrote (`"channel":"<name>",` first when there is one, then
/// `"event":<JSON string>,`): streams name each event by it.
pub fn event_of(tail: &str) -> Option<String> {
    let mut rest = tail;
    if let Some(after) = rest.strip_prefix(r#""channel":""#) {
        // Channel names are validated: no quote or backslash inside.
        let end = after.find('"')?;
        rest = after[end + 1..].strip_prefix(',')?;
    }
    let value = rest.strip_prefix(r#""event":"#)?;
    let mut strings = serde_json::Deserializer::from_str(value).into_iter::<String>();
    strings.next()?.ok()
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a str always serialises"));
}

/// The most a message's per-reply prefix can add to its shared tail:
/// `{"id":"` + the longest cursor (7 base-36 digits, `-`, 20 decimal digits)
/// + `",` + the `,` between array entries.
pub const MAX_ENTRY_OVERHEAD: usize = 7 + 28 + 2 + 1;

/// An upper bound on the bytes a message with this tail adds to a reply:
/// what `max_reply_bytes` is measured in.
pub fn encoded_len(tail: &str) -> usize {
    tail.len() + MAX_ENTRY_OVERHEAD
}

/// Writes one poll reply: `{"cursor":..,"messages":[..]}` plus the flags.
pub struct ReplyWriter {
    out: String,
    first: bool,
}

impl ReplyWriter {
    /// Starts a reply that resumes at `cursor`, sized for `capacity` bytes of
    /// message tails.
    pub fn new(cursor: Cursor, capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity + 64);
        let _ = write!(out, r#"{{"cursor":"{cursor}","messages":["#);
        ReplyWriter { out, first: true }
    }

    /// Appends one message, identified by the cursor just after it.
    pub fn push(&mut self, id: Cursor, tail: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        let _ = write!(self.out, r#"{{"id":"{id}","#);
        self.out.push_str(tail);
    }

    /// Closes the array and writes the flags.
    pub fn finish(mut self, reset: bool, disconnected: bool) -> String {
        self.out.push(']');
        if reset {
            self.out.push_str(r#","reset":true"#);
        }
        if disconnected {
            self.out.push_str(r#","disconnected":true"#);
        }
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn the_event_is_read_back_from_a_tail() {
        let chan = ChannelName::parse("room:42").unwrap();
        let text = Payload::Text("x".into());
        let tail = |c, e| message_tail(c, e, None, &text, 1);
        assert_eq!(event_of(&tail(None, None)), None);
        assert_eq!(event_of(&tail(Some(&chan), None)), None);
        assert_eq!(
            event_of(&tail(None, Some("notice"))).as_deref(),
            Some("notice")
        );
        assert_eq!(
            event_of(&tail(Some(&chan), Some("say \"hi\"\n"))).as_deref(),
            Some("say \"hi\"\n")
        );
    }

    #[test]
    fn exclude_is_a_member_after_data_and_the_event_still_reads_back() {
        let chan = ChannelName::parse("presence-room").unwrap();
        let text = Payload::Text("x".into());
        let tail = message_tail(Some(&chan), Some("e"), Some("123.456"), &text, 7);
        assert_eq!(event_of(&tail).as_deref(), Some("e"));
        let object: Value = serde_json::from_str(&format!("{{{tail}")).unwrap();
        assert_eq!(
            object,
            json!({"channel": "presence-room", "event": "e", "data": "x", "exclude": "123.456", "ts": 7})
        );
        assert!(!message_tail(None, None, None, &text, 7).contains("exclude"));
    }

    #[test]
    fn encodes_a_reply_that_parses_as_the_contract_says() {
        let chan = ChannelName::parse("room:42").unwrap();
        let json = Payload::Json(serde_json::from_str(r#"{"from": "bob"}"#).unwrap());
        let text = Payload::Text("a \"quoted\"\nline".into());
        let t1 = message_tail(None, Some("notice"), None, &text, 5);
        let t2 = message_tail(Some(&chan), Some("chat\"x"), None, &json, 6);
        let mut w = ReplyWriter::new(Cursor { epoch: 10, seq: 2 }, 100);
        w.push(Cursor { epoch: 10, seq: 1 }, &t1);
        w.push(Cursor { epoch: 10, seq: 2 }, &t2);
        let reply: Value = serde_json::from_str(&w.finish(true, false)).unwrap();
        assert_eq!(
            reply,
            json!({
                "cursor": "a-2",
                "reset": true,
                "messages": [
                    {"id": "a-1", "event": "notice", "data": "a \"quoted\"\nline", "ts": 5},
                    {"id": "a-2", "channel": "room:42", "event": "chat\"x", "data": {"from": "bob"}, "ts": 6},
                ]
            })
        );
    }

    #[test]
    fn an_empty_reply_has_an_empty_array() {
        let reply: Value = serde_json::from_str(
            &ReplyWriter::new(Cursor { epoch: 1, seq: 0 }, 0).finish(false, true),
        )
        .unwrap();
        assert_eq!(
            reply,
            json!({"cursor": "1-0", "messages": [], "disconnected": true})
        );
    }
}
