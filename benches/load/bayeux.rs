//! Bayeux subscribers, as the CometD JavaScript library is one: a
//! handshake carrying the token in `ext.cometbox.token`, a subscribe to the
//! channel (for fan-out), then `/meta/connect` after `/meta/connect`, each a
//! `POST` of a JSON array with the headers CometD's long-polling transport
//! sends, the first with `advice.timeout = 0` as CometD's is. cometbox only:
//! Nchan speaks no Bayeux.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::client::{request, Client, Response};
use crate::wire::{now_us, Payload, POLL_TIMEOUT};
use crate::worker::Note;

/// What CometD's long-polling transport sends with every request.
const HEADERS: [(&str, &str); 1] = [("Content-Type", "application/json;charset=UTF-8")];

/// One delivered Bayeux message (or a meta reply, which has no `data`).
#[derive(Deserialize)]
struct Delivered {
    channel: String,
    #[serde(default)]
    data: Option<Payload>,
    #[serde(default)]
    successful: Option<bool>,
    #[serde(default, rename = "clientId")]
    client_id: Option<String>,
}

/// Handshakes, subscribes (when `channel` is given), then connects in a
/// loop until the worker ends. A failed step is reported and the
/// subscriber stops: a load run is shorter than any session's life.
pub async fn subscribe(
    idx: u32,
    addr: SocketAddr,
    token: String,
    channel: Option<String>,
    connecting: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Note>,
) {
    let mut client = Client::new(addr);
    let mut ids = 0u64;
    let mut next_id = || {
        ids += 1;
        ids.to_string()
    };
    let started = {
        let _permit = connecting.acquire().await.expect("never closed");
        start(&mut client, &mut next_id, &token, channel.as_deref()).await
    };
    let client_id = match started {
        Ok(client_id) => {
            let _ = tx.send(Note::Sent { ok: true });
            client_id
        }
        Err(e) => {
            let _ = tx.send(Note::Sent { ok: false });
            let _ = tx.send(Note::Error(format!("bayeux: {e}")));
            return;
        }
    };
    let read_limit = POLL_TIMEOUT * 2 + Duration::from_secs(10);
    let mut first = true;
    loop {
        let mut connect = json!({
            "id": next_id(), "channel": "/meta/connect",
            "connectionType": "long-polling", "clientId": client_id,
        });
        if first {
            connect["advice"] = json!({"timeout": 0});
            first = false;
        }
        let sent = tokio::time::timeout(read_limit, post(&mut client, "/bayeux/connect", connect));
        let replies = match sent.await {
            Ok(Ok(replies)) => replies,
            Ok(Err(e)) => {
                let _ = tx.send(Note::Error(format!("connect: {e}")));
                return;
            }
            Err(_) => {
                let _ = tx.send(Note::Error(format!(
                    "connect: no reply within {read_limit:?}"
                )));
                return;
            }
        };
        let at_us = now_us();
        let mut payloads = Vec::new();
        for reply in replies {
            match reply.data {
                Some(data) => payloads.push(data),
                None if reply.channel == "/meta/connect" && reply.successful != Some(true) => {
                    let _ = tx.send(Note::Error("connect: unsuccessful".into()));
                    return;
                }
                None => {}
            }
        }
        if !payloads.is_empty() {
            let note = Note::Got {
                idx,
                payloads,
                reset: false,
                at_us,
            };
            if tx.send(note).is_err() {
                return;
            }
        }
    }
}

/// The handshake and the subscribe; the session's `clientId`.
async fn start(
    client: &mut Client,
    next_id: &mut impl FnMut() -> String,
    token: &str,
    channel: Option<&str>,
) -> Result<String, String> {
    let handshake = json!({
        "id": next_id(), "version": "1.0", "minimumVersion": "1.0",
        "channel": "/meta/handshake",
        "supportedConnectionTypes": ["long-polling", "callback-polling"],
        "advice": {"timeout": 60000, "interval": 0},
        "ext": {"cometbox": {"token": token}},
    });
    let replies = post(client, "/bayeux/handshake", handshake).await?;
    let client_id = replies
        .into_iter()
        .find(|r| r.channel == "/meta/handshake" && r.successful == Some(true))
        .and_then(|r| r.client_id)
        .ok_or("handshake refused")?;
    if let Some(channel) = channel {
        let subscribe = json!({
            "id": next_id(), "channel": "/meta/subscribe",
            "subscription": channel, "clientId": client_id,
        });
        let replies = post(client, "/bayeux", subscribe).await?;
        if !replies.iter().any(|r| r.successful == Some(true)) {
            return Err("subscribe refused".into());
        }
    }
    Ok(client_id)
}

/// POSTs one message as a batch; the reply's messages.
async fn post(client: &mut Client, path: &str, message: Value) -> Result<Vec<Delivered>, String> {
    let body = Value::Array(vec![message]).to_string();
    let response: Response = client
        .request(&request("POST", path, &HEADERS, body.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!(
            "status {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    serde_json::from_slice(&response.body).map_err(|e| format!("reply: {e}"))
}
