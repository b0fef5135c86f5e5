//! WebSocket subscribers, as a page's `new WebSocket(url)` is one: the
//! opening handshake with the headers a browser sends on an upgrade
//! (`Origin`, `Cache-Control` / `Pragma: no-cache`, the
//! `permessage-deflate` offer, a fresh `Sec-WebSocket-Key`), then frames
//! read as they come. cometbox's `/ws?token=&channels=` (each text frame a
//! poll reply) and Nchan's `nchan_subscriber websocket` (each text frame
//! one message) are both read here.
//!
//! The handshake is written and checked here, so the request is exactly a
//! browser's; the framing after it is tokio-tungstenite's, with a 4 KiB
//! read buffer (not its 128 KiB default) and no write buffer, so that
//! 9,000 sockets in one worker stay small. It answers the server's pings
//! (cometbox pings every 25 s) with pongs on the next read.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::find;
use crate::wire::{client_id, encode_uri_component, now_us, Kind, Payload};
use crate::worker::Note;

/// What each socket of the tool reserves for reading (the server's frames
/// are one message batch each, usually a few hundred bytes).
const READ_BUFFER: usize = 4096;

/// The socket's request path. On cometbox: `/ws?token=<t>[&channels=<c>]`
/// (a page's `WebSocket` cannot send headers: the token is in the query,
/// as for `/events`), the subscriber's own mailbox plus `channel` if given.
/// On Nchan: `/ws/<channel>`, or the client's own channel `c<i>` (as a
/// long-poll subscriber of `hold` polls its own).
pub fn path(kind: Kind, token: Option<&str>, client: u32, channel: Option<&str>) -> String {
    match kind {
        Kind::Cometbox => {
            let mut path = format!(
                "/ws?token={}",
                encode_uri_component(token.expect("cometbox sockets need a token"))
            );
            if let Some(channel) = channel {
                path.push_str(&format!("&channels={}", encode_uri_component(channel)));
            }
            path
        }
        Kind::Nchan => format!(
            "/ws/{}",
            channel.map_or_else(|| client_id(client), str::to_owned)
        ),
    }
}

/// The opening handshake as a browser sends it for `new WebSocket(url)`
/// from a page served by the same host (Chrome's header set, less
/// `User-Agent` and `Accept-Language`, which no server here reads).
pub fn upgrade_request(addr: SocketAddr, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         Upgrade: websocket\r\n\
         Origin: http://{addr}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         \r\n"
    )
    .into_bytes()
}

#[derive(Deserialize)]
struct CometboxFrame {
    #[serde(default)]
    messages: Vec<CometboxMessage>,
    #[serde(default)]
    reset: bool,
    /// Set on answers to a page's own frames (it sends none here).
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct CometboxMessage {
    data: Payload,
}

/// The payloads of one text frame, and whether it said `reset`.
pub fn frame_payloads(kind: Kind, text: &str) -> Result<(Vec<Payload>, bool), String> {
    match kind {
        Kind::Cometbox => {
            let frame: CometboxFrame =
                serde_json::from_str(text).map_err(|e| format!("ws frame {text:?}: {e}"))?;
            if frame.kind.is_some() {
                return Ok((Vec::new(), false));
            }
            Ok((
                frame.messages.into_iter().map(|m| m.data).collect(),
                frame.reset,
            ))
        }
        Kind::Nchan => serde_json::from_str::<Payload>(text)
            .map(|p| (vec![p], false))
            .map_err(|e| format!("ws frame {text:?}: {e}")),
    }
}

/// Opens one socket (under a connect permit) and reads it until it closes
/// or the receiver goes away. No reconnect: a run is shorter than any
/// socket's life, and a socket that closes is counted as an error.
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
    let mut ws = match opened {
        Ok(Ok(ws)) => {
            let _ = tx.send(Note::Sent { ok: true });
            ws
        }
        Ok(Err(e)) => {
            let _ = tx.send(Note::Sent { ok: false });
            let _ = tx.send(Note::Error(format!("ws: {e}")));
            return;
        }
        Err(_) => {
            let _ = tx.send(Note::Sent { ok: false });
            let _ = tx.send(Note::Error("ws: no handshake within 30 s".into()));
            return;
        }
    };
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                let _ = tx.send(Note::Error(format!("ws: {e}")));
                return;
            }
            None => {
                let _ = tx.send(Note::Error("ws: socket ended".into()));
                return;
            }
        };
        let at_us = now_us();
        match message {
            Message::Text(text) => match frame_payloads(kind, text.as_str()) {
                Ok((payloads, reset)) => {
                    if payloads.is_empty() && !reset {
                        continue;
                    }
                    let note = Note::Got {
                        idx,
                        payloads,
                        reset,
                        at_us,
                    };
                    if tx.send(note).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Note::Error(e));
                }
            },
            Message::Close(frame) => {
                let _ = tx.send(Note::Error(format!("ws: closed by the server: {frame:?}")));
                return;
            }
            // Pings are answered by the framing itself.
            _ => {}
        }
    }
}

/// Connects, sends the opening handshake, checks the `101` and its
/// `Sec-WebSocket-Accept`; the framing takes the socket over from there.
async fn open(addr: SocketAddr, path: &str) -> io::Result<WebSocketStream<TcpStream>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let key = generate_key();
    stream.write_all(&upgrade_request(addr, path, &key)).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 || stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::other("no response head"));
        }
    };
    check_upgrade(&buf[..head_end], &key)?;
    let rest = buf.split_off(head_end);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    Ok(WebSocketStream::from_partially_read(stream, rest, Role::Client, Some(config)).await)
}

/// A `101 Switching Protocols` whose `Sec-WebSocket-Accept` answers `key`
/// and that agreed to no extension but the `permessage-deflate` offered
/// (a browser fails the socket on one it did not offer). cometbox agrees to
/// none; Nchan agrees to `permessage-deflate` but compresses nothing unless
/// `nchan_deflate_message_for_websocket` is on (it is not here): the framing
/// here reads no compressed frame, and one (RSV1 set) would fail the socket,
/// counted as a subscriber error.
pub fn check_upgrade(head: &[u8], key: &str) -> io::Result<()> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        let rest: String = lines.collect::<Vec<_>>().join(" | ");
        return Err(io::Error::other(format!("status {status:?} ({rest})")));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let expected = derive_accept_key(key.as_bytes());
    match header("sec-websocket-accept") {
        Some(accept) if accept == expected => {}
        other => {
            return Err(io::Error::other(format!(
                "Sec-WebSocket-Accept {other:?}, expected {expected:?}"
            )))
        }
    }
    if let Some(ext) = header("sec-websocket-extensions") {
        let offered = ext
            .split(',')
            .map(|e| e.split(';').next().unwrap_or("").trim())
            .all(|name| name.is_empty() || name.eq_ignore_ascii_case("permessage-deflate"));
        if !offered {
            return Err(io::Error::other(format!(
                "the server agreed to extensions {ext:?}, not offered"
            )));
        }
    }
    Ok(())
}

/// Self-checks run by `smoke`.
pub mod checks {
    use super::*;

    /// The upgrade carries what a browser's does; a `101` with the right
    /// accept key passes, a wrong one or a refusal does not; frames are
    /// read as poll replies (cometbox) or bare messages (Nchan).
    pub fn handshake_and_frames() {
        let addr: SocketAddr = ([127, 0, 0, 1], 8080).into();
        let p = path(Kind::Cometbox, Some("a.b-c"), 3, Some("room:1"));
        assert_eq!(p, "/ws?token=a.b-c&channels=room%3A1");
        assert_eq!(path(Kind::Cometbox, Some("t"), 3, None), "/ws?token=t");
        assert_eq!(path(Kind::Nchan, None, 3, None), "/ws/c3");
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = String::from_utf8(upgrade_request(addr, &p, key)).unwrap();
        assert!(req.starts_with("GET /ws?token=a.b-c&channels=room%3A1 HTTP/1.1\r\n"));
        for header in [
            "Host: 127.0.0.1:8080\r\n",
            "Connection: Upgrade\r\n",
            "Upgrade: websocket\r\n",
            "Origin: http://127.0.0.1:8080\r\n",
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ] {
            assert!(req.contains(header), "{header} missing in {req}");
        }
        assert!(req.ends_with("\r\n\r\n"));
        // RFC 6455's own example key and answer.
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        check_upgrade(ok, key).unwrap();
        let deflate =
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\
                        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        check_upgrade(deflate, key).unwrap();
        let other = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\
                      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_upgrade(other, key).is_err());
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: xxx\r\n\r\n";
        assert!(check_upgrade(wrong, key).is_err());
        assert!(check_upgrade(b"HTTP/1.1 400 Bad Request\r\n\r\n", key).is_err());

        let (p, reset) = frame_payloads(
            Kind::Cometbox,
            r#"{"messages":[{"id":"1","channel":"fan","event":"m","data":{"k":2,"t":5},"ts":1}],"cursor":"x"}"#,
        )
        .unwrap();
        assert_eq!((p.len(), p[0].k, p[0].t, reset), (1, 2, 5, false));
        let (p, _) = frame_payloads(Kind::Cometbox, r#"{"type":"ok","ref":1}"#).unwrap();
        assert!(p.is_empty());
        let (p, _) = frame_payloads(Kind::Nchan, r#"{"k":4,"t":9}"#).unwrap();
        assert_eq!((p[0].k, p[0].t), (4, 9));
    }
}
