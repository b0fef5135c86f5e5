//! What the conformance checks do and look at, as a backend and a browser
//! would: numbered messages, cursors, presence, `/stats`, tokens with an
//! `iat`, and which Redis Cluster slot group a client id lands in.

use serde_json::{json, Value};

use crate::harness::{self, jwt, Server};
use crate::nodes::{ingest_get, poll_ok, stats};

/// Messages `{"i": n}` for each `n` of `range` to client `to`, one post each.
pub async fn post(node: &Server, to: &str, range: std::ops::Range<i64>) {
    for i in range {
        node.post_ok(&format!(r#"<message to="{to}">{{"i":{i}}}</message>"#), 1)
            .await;
    }
}

/// The `cursor` of a poll reply.
pub fn cursor(body: &Value) -> String {
    body["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a cursor in {body}"))
        .to_owned()
}

/// A poll from `since` with `timeout=0`, answering 200.
pub async fn read_since(node: &Server, token: &str, since: &str) -> Value {
    poll_ok(node, token, &format!("since={since}&timeout=0")).await
}

/// `GET /clients/<id>`: the presence, or `None` for a 404 (unknown).
pub async fn presence(node: &Server, client: &str) -> Option<Value> {
    let (status, body) = ingest_get(node, &format!("/clients/{client}")).await;
    match status {
        200 => Some(serde_json::from_str(&body).unwrap()),
        404 => None,
        _ => panic!("/clients/{client}: {status} {body}"),
    }
}

/// `GET /channels` (every channel and its member count), or with a name
/// `GET /channels/<name>` (its members and how many are online; `None`
/// for a 404: no members).
pub async fn channels(node: &Server, name: Option<&str>) -> Option<Value> {
    let path = match name {
        None => "/channels".to_owned(),
        Some(name) => format!("/channels/{name}"),
    };
    let (status, body) = ingest_get(node, &path).await;
    match status {
        200 => Some(serde_json::from_str(&body).unwrap()),
        404 => None,
        _ => panic!("{path}: {status} {body}"),
    }
}

/// Everything a backend can see of `clients` and of the node's figures
/// that a command could change (idle times and uptime left out): equal
/// before and after a refused batch when it applied nothing.
pub async fn observe(node: &Server, clients: &[&str]) -> Value {
    let mut seen = serde_json::Map::new();
    for client in clients {
        let mut look = presence(node, client).await.unwrap_or(Value::Null);
        if let Some(fields) = look.as_object_mut() {
            fields.remove("idle_ms");
        }
        seen.insert((*client).to_owned(), look);
    }
    let figures = stats(node).await;
    let keys = [
        "clients",
        "channels",
        "subscriptions",
        "queued_messages",
        "messages_in",
    ];
    for key in keys {
        seen.insert(format!("/stats {key}"), figures[key].clone());
    }
    Value::Object(seen)
}

/// The ingest's refusal of `xml`: the status and the `code` of its
/// `<error>`.
pub async fn refusal(node: &Server, xml: &str) -> (u16, String) {
    let (status, body) = node.post(xml).await.expect("ingest answers");
    let code = body
        .split(r#"code=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("an <error code=…> for {xml}: {status} {body}"));
    (status, code.to_owned())
}

/// A browser token for `client` with `channels` grants, issued at `iat`
/// (unix seconds), minted by hand like [`harness::token`].
pub fn token_issued(client: &str, channels: &[&str], iat: u64) -> String {
    jwt::token_with(
        json!({ "sub": client, "exp": jwt::now() + 3600, "iat": iat, "channels": channels }),
        harness::SECRET,
    )
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    jwt::now()
}

/// The Redis Cluster slot group of a client id (docs/storage.md, "Redis
/// Cluster": 16 groups over the 16,384 slots, by CRC16/XMODEM of the id),
/// computed here so that a check can spread its clients over groups on
/// purpose, or keep them in one.
pub fn slot_group(client: &str) -> usize {
    let mut crc: u16 = 0;
    for &b in client.as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    usize::from(crc) % 16384 * 16 / 16384
}

/// How many slot groups `clients` span.
pub fn groups_spanned<'a>(clients: impl IntoIterator<Item = &'a str>) -> usize {
    let groups: std::collections::BTreeSet<usize> = clients.into_iter().map(slot_group).collect();
    groups.len()
}

/// `count` client ids `<prefix><k>`, each in a slot group of its own.
pub fn spread(prefix: &str, count: usize) -> Vec<String> {
    assert!(count <= 16, "there are 16 slot groups");
    let mut taken = std::collections::BTreeSet::new();
    (0..)
        .map(|k| format!("{prefix}{k}"))
        .filter(|id| taken.insert(slot_group(id)))
        .take(count)
        .collect()
}

/// `count` client ids `<prefix><k>`, all in one slot group.
pub fn together(prefix: &str, count: usize) -> Vec<String> {
    let group = slot_group(&format!("{prefix}0"));
    (0..)
        .map(|k| format!("{prefix}{k}"))
        .filter(|id| slot_group(id) == group)
        .take(count)
        .collect()
}
