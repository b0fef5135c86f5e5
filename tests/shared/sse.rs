//! Reading a `GET /events` stream as a browser's `EventSource` does, for
//! every Rust suite: events split on blank lines, `id:`, `event:` (default
//! `message`) and `data:` lines (several joined with a line break, parsed
//! as JSON), comments skipped. A stream broken by an error (a reset, a
//! crashed server) fails the test: it is not an end.

use serde_json::Value;

/// One parsed event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// An open stream's reply, read event by event.
pub struct SseReader {
    reply: reqwest::Response,
    pending: String,
}

impl SseReader {
    pub fn new(reply: reqwest::Response) -> Self {
        SseReader {
            reply,
            pending: String::new(),
        }
    }

    /// The next event; `None` when the stream ends cleanly.
    pub async fn read_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_owned(), Vec::new());
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("id", v)) => id = Some(v.to_owned()),
                        Some(("event", v)) => event = v.to_owned(),
                        Some(("data", v)) => data.push(v.to_owned()),
                        _ => {} // comments: `: ok`, `: keep-alive`
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data.join("\n")).unwrap();
                    return Some(SseEvent { id, event, data });
                }
            }
            let chunk = self
                .reply
                .chunk()
                .await
                .unwrap_or_else(|e| panic!("the stream broke instead of ending: {e}"))?;
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
