//! `GET /events`: Server-Sent Events. The same parameters, auth, channels,
//! limits and CORS as `/poll` (`HEAD /events` is answered in `routes.rs`,
//! without a stream); the stream counts as an open poll for as long
//! as it lasts (`max_polls_per_client`, presence).
//!
//! Each message is one event whose `id` is the message's id (a cursor), so
//! an `EventSource` resumes by itself through `Last-Event-ID`; `event` is
//! the message's event (or `message`); `data` the same JSON object as in a
//! poll reply. `Last-Event-ID` wins over `since` (see `admit.rs`). A
//! cursor that cannot be honoured is told by an event named
//! `reset` first. A `: keep-alive` comment goes out when the stream has
//! been quiet for [`KEEP_ALIVE`], so proxies keep it open. The stream ends
//! when the token expires (the client reconnects with a new one), when the
//! server shuts down, and after a `disconnected` event.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::admit::admit;
use super::connection::{Connection, Socket};
use super::error::PublicError;
use super::face::Face;
use super::request::Head;
use super::response::{AllowOrigin, Response};
use super::routed::Routed;
use crate::hub::Waited;
use crate::protocol::Cursor;
use crate::store::ReadOutcome;

/// Longest a stream stays silent: under the 60 s idle timeouts proxies
/// (nginx's `proxy_read_timeout`, load balancers) commonly use.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Serves one stream until it ends.
pub async fn stream<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    head: Head,
    allow_origin: Option<AllowOrigin>,
) -> Result<Routed, PublicError> {
    let (request, expires_at) = admit(face, &head)?;
    let hub = &face.state.hub;
    let open = hub.open_for(&request).await?;
    let mut since = hub.start_cursor(&open, &request)?;
    let mut response = Response::stream("text/event-stream");
    response.allow_origin = allow_origin;
    drop(head);
    // The head and a first comment together: the browser's `open` fires
    // at once, through proxies too.
    let head = response.encode_head(true);
    if connection.write_all(&head, b": ok\n\n").await.is_err() {
        return Ok(Routed::Streamed);
    }
    loop {
        let quiet_for = KEEP_ALIVE.min(until_unix(expires_at));
        let Some(waited) = connection.wait_for(hub.wait(&open, since, quiet_for)).await else {
            break; // the client went away
        };
        let (events, more) = match waited {
            Waited::Read(outcome) => {
                let cursor = outcome.cursor;
                let events = encode(&outcome);
                since = Some(cursor);
                (events, true)
            }
            Waited::Disconnected(_) => ("event: disconnected\ndata: {}\n\n".to_owned(), false),
            // Redis unreachable: the browser reconnects (and is told 503
            // until it is back).
            Waited::Replaced(_) | Waited::Failed(_) => break,
            Waited::Nothing(cursor) => {
                since = Some(cursor);
                let over = hub.is_shutting_down() || until_unix(expires_at).is_zero();
                (": keep-alive\n\n".to_owned(), !over)
            }
        };
        if connection.write_all(events.as_bytes(), &[]).await.is_err() || !more {
            break;
        }
    }
    // The stream counted as an open poll until here.
    drop(open);
    Ok(Routed::Streamed)
}

/// The events for what a wait read: `reset` first when the cursor was not
/// honoured, then one event per message.
fn encode(outcome: &ReadOutcome) -> String {
    let epoch = outcome.cursor.epoch;
    let size: usize = outcome
        .messages
        .iter()
        .map(|(_, m)| m.json_tail.len() + 64)
        .sum();
    let mut out = String::with_capacity(size + 64);
    if outcome.reset {
        // Where the stream resumes if it breaks right after the reset: just
        // before the first message it carries.
        let resume = outcome
            .messages
            .first()
            .map_or(outcome.cursor, |(seq, _)| Cursor {
                epoch,
                seq: seq - 1,
            });
        out.push_str(&format!(
            "id: {resume}\nevent: reset\ndata: {{\"cursor\":\"{resume}\"}}\n\n"
        ));
    }
    for (seq, message) in &outcome.messages {
        let id = Cursor { epoch, seq: *seq };
        // Written in place: this runs once per subscriber's stream for
        // every channel message, and only the id differs between them.
        let _ = write!(
            out,
            "id: {id}\nevent: {}\ndata: {{\"id\":\"{id}\",",
            message.sse_event()
        );
        push_data_lines(&mut out, &message.json_tail);
        out.push_str("\n\n");
    }
    out
}

/// `tail`, the rest of an event's `data` line. It is one line unless a
/// backend's JSON payload kept its own line breaks: each further line
/// becomes a `data:` line, which the browser joins back with newlines
/// (JSON whitespace); empty ones are left out.
fn push_data_lines(out: &mut String, tail: &str) {
    let mut lines = tail.split(['\r', '\n']);
    out.push_str(lines.next().unwrap_or(""));
    for line in lines.filter(|l| !l.is_empty()) {
        out.push_str("\ndata: ");
        out.push_str(line);
    }
}

/// Time until the unix second `at` (zero once it passed).
fn until_unix(at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(at).saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::encode;
    use crate::protocol::Cursor;
    use crate::store::{ReadOutcome, StoredMessage};

    fn outcome(tails: &[&str]) -> ReadOutcome {
        let messages = (tails.iter().enumerate())
            .map(|(i, tail)| {
                let message = StoredMessage::new((*tail).into(), Instant::now(), false);
                (i as u64 + 1, Arc::new(message))
            })
            .collect();
        let cursor = Cursor {
            epoch: 7,
            seq: tails.len() as u64,
        };
        ReadOutcome {
            messages,
            cursor,
            reset: false,
        }
    }

    #[test]
    fn each_message_is_one_event_named_by_its_event() {
        let out = outcome(&[
            r#""event":"tick","data":1}"#,
            r#""channel":"news","data":2}"#,
        ]);
        let (first, second) = (Cursor { epoch: 7, seq: 1 }, Cursor { epoch: 7, seq: 2 });
        assert_eq!(
            encode(&out),
            format!(
                "id: {first}\nevent: tick\ndata: {{\"id\":\"{first}\",\"event\":\"tick\",\"data\":1}}\n\n\
                 id: {second}\nevent: message\ndata: {{\"id\":\"{second}\",\"channel\":\"news\",\"data\":2}}\n\n"
            )
        );
    }

    #[test]
    fn a_payload_with_line_breaks_becomes_several_data_lines() {
        let out = outcome(&["\"data\":{\r\n\"a\":1,\n\n\"b\":2}}"]);
        let id = Cursor { epoch: 7, seq: 1 };
        assert_eq!(
            encode(&out),
            format!("id: {id}\nevent: message\ndata: {{\"id\":\"{id}\",\"data\":{{\ndata: \"a\":1,\ndata: \"b\":2}}}}\n\n")
        );
    }

    #[test]
    fn an_event_name_a_line_cannot_carry_is_named_message() {
        let out = outcome(&[r#""event":"a\nb","data":1}"#]);
        assert!(
            encode(&out).contains("\nevent: message\n"),
            "{}",
            encode(&out)
        );
    }
}
