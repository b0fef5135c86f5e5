//! `[pusher]` on every store: an event published through Pusher's HTTP
//! API (signed here by hand) reaches a channel's members with its
//! `socket_id` kept as the message's `"exclude"`, which is inside the
//! message as stored, so it comes back from a restart and across Redis
//! slot groups.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::json;

use crate::harness::token;
use crate::nodes::poll_ok;

use super::fixture::Fixture;
use super::looks::{spread, unix_now};

const SETTINGS: [(&str, &str); 4] = [
    ("COMETBOX_PUSHER__ENABLED", "true"),
    ("COMETBOX_PUSHER__APP_ID", "9"),
    ("COMETBOX_PUSHER__KEY", "conformance-key"),
    ("COMETBOX_PUSHER__SECRET", "conformance-secret"),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pusher's query string for `POST path` of `body`, signed.
fn signed(path: &str, body: &str) -> String {
    let query = format!(
        "auth_key=conformance-key&auth_timestamp={}&auth_version=1.0&body_md5={}",
        unix_now(),
        hex(&Md5::digest(body.as_bytes()))
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"conformance-secret").unwrap();
    mac.update(format!("POST\n{path}\n{query}").as_bytes());
    format!(
        "{query}&auth_signature={}",
        hex(&mac.finalize().into_bytes())
    )
}

/// Members spread over every slot group get one event with its `exclude`,
/// before and after a checkpoint.
pub async fn a_pusher_event_keeps_its_exclude(fx: Fixture) {
    let n = fx.node(&SETTINGS).await;
    let members = spread("pusher", 4);
    let joins: String = members
        .iter()
        .map(|m| format!(r#"<subscribe client="{m}" channel="presence-room"/>"#))
        .collect();
    n.post_ok(&format!("<batch>{joins}</batch>"), members.len())
        .await;
    let body = json!({"name": "said", "data": "{\"i\":1}", "channel": "presence-room", "socket_id": "12.34"})
        .to_string();
    let path = "/apps/9/events";
    let reply = n
        .http
        .post(format!("http://{}{path}?{}", n.ingest, signed(path, &body)))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status().as_u16(),
        200,
        "{}",
        reply.text().await.unwrap()
    );
    let n = fx.checkpoint(n).await;
    for member in &members {
        let got = poll_ok(&n, &token(member, &[]), "timeout=0").await;
        let messages = got["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{member}: {got}");
        let m = &messages[0];
        assert_eq!(
            (&m["channel"], &m["event"], &m["data"], &m["exclude"]),
            (
                &json!("presence-room"),
                &json!("said"),
                &json!({"i": 1}),
                &json!("12.34")
            ),
            "{member}: {got}"
        );
    }
}
