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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::admit::admit;
use super::connection::{Connection, Socket};
use super::error::PublicError;
use super::face::Face;
use super::request::Head;
use super::response::{AllowOrigin, Response};
use super::routed::Routed;
use crate::hub::Waited;
use crate::protocol::reply::event_of;
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
        let event = event_of(&message.json_tail)
            .filter(|e| !e.is_empty() && !e.contains(['\r', '\n']))
            .unwrap_or_else(|| "message".to_owned());
        out.push_str(&format!("id: {id}\nevent: {event}\n"));
        // `data` is one line unless a backend's JSON payload kept its own
        // line breaks: each line becomes a `data:` line, which the browser
        // joins back with newlines (JSON whitespace).
        let object = format!("{{\"id\":\"{id}\",{}", message.json_tail);
        for line in object.split(['\r', '\n']).filter(|l| !l.is_empty()) {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Time until the unix second `at` (zero once it passed).
fn until_unix(at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(at).saturating_sub(now)
}
