//! Server-Sent Events subscribers, as a page's `EventSource` is one: one
//! `GET` with `Accept: text/event-stream` and `Cache-Control: no-cache`
//! (what browsers send), then events read off the stream as they come.
//! cometbox's `/events?token=&channels=` (close-delimited) and Nchan's
//! `nchan_subscriber eventsource` (chunked) are both read here.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use crate::client::{find, request};
use crate::wire::{client_id, encode_uri_component, now_us, Kind, Payload};
use crate::worker::Note;

/// What an `EventSource` sends.
const HEADERS: [(&str, &str); 2] = [
    ("Accept", "text/event-stream"),
    ("Cache-Control", "no-cache"),
];

/// The stream's request path for subscriber `client`: on cometbox its own
/// mailbox plus `channel` if given; on Nchan `channel`, or its own channel
/// `c<i>` (as a long-poll subscriber of `hold` polls its own).
pub fn path(kind: Kind, token: Option<&str>, client: u32, channel: Option<&str>) -> String {
    match kind {
        // An EventSource cannot send headers: the token is in the query.
        Kind::Cometbox => {
            let mut path = format!(
                "/events?token={}",
                token.expect("cometbox streams need a token")
            );
            if let Some(channel) = channel {
                path.push_str(&format!("&channels={}", encode_uri_component(channel)));
            }
            path
        }
        Kind::Nchan => format!(
            "/es/{}",
            channel.map_or_else(|| client_id(client), str::to_owned)
        ),
    }
}

#[derive(Deserialize)]
struct CometboxMessage {
    data: Payload,
}

/// Opens one stream (under a connect permit) and reads it until it ends or
/// the receiver goes away. No reconnect: a fan-out run is shorter than any
/// stream's life, and a stream that ends is counted as an error.
pub async fn subscribe(
    idx: u32,
    addr: SocketAddr,
    kind: Kind,
    path: String,
    connecting: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Note>,
) {
    let opened = {
        let _permit = connecting.acquire().await.expect("never closed");
        tokio::time::timeout(Duration::from_secs(30), open(addr, &path)).await
    };
    let (mut stream, mut body) = match opened {
        Ok(Ok(open)) => {
            let _ = tx.send(Note::Sent { ok: true });
            open
        }
        Ok(Err(e)) => {
            let _ = tx.send(Note::Sent { ok: false });
            let _ = tx.send(Note::Error(format!("stream: {e}")));
            return;
        }
        Err(_) => {
            let _ = tx.send(Note::Sent { ok: false });
            let _ = tx.send(Note::Error("stream: no head within 30 s".into()));
            return;
        }
    };
    let mut events = Vec::new();
    loop {
        while let Some(end) = find(&events, b"\n\n") {
            let block: Vec<u8> = events.drain(..end + 2).collect();
            if let Some(payload) = data_of(kind, &block) {
                let note = Note::Got {
                    idx,
                    payloads: vec![payload],
                    reset: false,
                    at_us: now_us(),
                };
                if tx.send(note).is_err() {
                    return;
                }
            }
        }
        match body.next(&mut stream).await {
            Ok(Some(bytes)) => events.extend_from_slice(&bytes),
            Ok(None) => {
                let _ = tx.send(Note::Error("stream ended".into()));
                return;
            }
            Err(e) => {
                let _ = tx.send(Note::Error(format!("stream: {e}")));
                return;
            }
        }
    }
}

/// The payload of one event block (`None` for comments and other events).
fn data_of(kind: Kind, block: &[u8]) -> Option<Payload> {
    let text = std::str::from_utf8(block).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    if data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    match kind {
        Kind::Cometbox => serde_json::from_str::<CometboxMessage>(&data)
            .ok()
            .map(|m| m.data),
        Kind::Nchan => serde_json::from_str::<Payload>(&data).ok(),
    }
}

/// Connects, sends the request, reads the head; the body reader follows.
async fn open(addr: SocketAddr, path: &str) -> io::Result<(TcpStream, Body)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream
        .write_all(&request("GET", path, &HEADERS, b""))
        .await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 || stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::other("no response head"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(io::Error::other(format!(
            "status {:?}",
            head.lines().next().unwrap_or("")
        )));
    }
    let chunked = head.contains("transfer-encoding: chunked");
    let rest = buf.split_off(head_end);
    Ok((
        stream,
        Body {
            chunked,
            buf: rest,
            chunk_left: 0,
        },
    ))
}

/// Reads a streamed body as it comes, taking chunked framing off.
struct Body {
    chunked: bool,
    /// Bytes read and not handed out yet.
    buf: Vec<u8>,
    /// Bytes of the current chunk still to hand out (chunked only).
    chunk_left: usize,
}

impl Body {
    /// The next bytes of the body; `None` at its end.
    async fn next(&mut self, stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
        loop {
            if !self.chunked {
                if !self.buf.is_empty() {
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
            } else if self.chunk_left > 0 && !self.buf.is_empty() {
                let take = self.chunk_left.min(self.buf.len());
                self.chunk_left -= take;
                let rest = self.buf.split_off(take);
                return Ok(Some(std::mem::replace(&mut self.buf, rest)));
            } else if self.chunk_left == 0 {
                // A chunk-size line (after the previous chunk's CRLF).
                let start = if self.buf.starts_with(b"\r\n") { 2 } else { 0 };
                if let Some(at) = find(&self.buf[start..], b"\r\n") {
                    let line = std::str::from_utf8(&self.buf[start..start + at])
                        .map_err(|_| io::Error::other("bad chunk size"))?;
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
                    if size == 0 {
                        return Ok(None);
                    }
                    self.buf.drain(..start + at + 2);
                    self.chunk_left = size;
                    continue;
                }
            }
            self.buf.reserve(4096);
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}
