//! Presence (`GET /clients/<id>` on the ingest port), channels (`GET
//! /channels`, `/channels/<name>`) and `/stats` figures
//! after a known sequence of commands and polls: what they say must be what
//! happened, on every store (a Redis store counts over every slot group).

use serde_json::{json, Value};

use crate::harness::{token, wait_until};
use crate::nodes::{poll_ok, stats, PROMPT};

use super::fixture::Fixture;
use super::looks::{channels, cursor, presence};

/// The figures a sequence fixes (`open_polls` and the counts of clients,
/// channels, memberships and retained messages), from `/stats`.
async fn figures(n: &crate::harness::Server) -> Value {
    let s = stats(n).await;
    json!({
        "clients": s["clients"],
        "channels": s["channels"],
        "subscriptions": s["subscriptions"],
        "open_polls": s["open_polls"],
        "queued_messages": s["queued_messages"],
    })
}

/// `(online, open_polls, pending_messages, channels)` of a client.
async fn seen(n: &crate::harness::Server, client: &str) -> Value {
    let look = presence(n, client)
        .await
        .unwrap_or_else(|| panic!("{client} is known"));
    json!([
        look["online"],
        look["open_polls"],
        look["pending_messages"],
        look["channels"]
    ])
}

/// Three clients, four memberships (a pattern among them), two messages
/// (one to a channel of two members), then a poll held open; then the
/// held poll answered, an unsubscribe and a disconnect.
pub async fn presence_and_stats_follow_a_known_sequence(fx: Fixture) {
    let n = fx.node(&[]).await;
    n.post_ok(
        r#"<batch>
            <subscribe client="pa" channel="s1"/><subscribe client="pa" channel="s2"/>
            <subscribe client="pb" channel="s1"/><subscribe client="pc" channel="/chat/*"/>
            <message channel="s1">{"i":1}</message><message to="pa">{"i":2}</message>
        </batch>"#,
        6,
    )
    .await;
    let n = fx.checkpoint(n).await;
    let pc = token("pc", &[]);
    let since = cursor(&poll_ok(&n, &pc, "timeout=0").await);
    let held = {
        let url = format!(
            "http://{}/poll?token={pc}&since={since}&timeout=20",
            n.public
        );
        let http = n.http.clone();
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await })
    };
    wait_until("pc's poll is open", PROMPT, || async {
        presence(&n, "pc").await.unwrap()["open_polls"] == 1
    })
    .await;
    assert_eq!(seen(&n, "pa").await, json!([false, 0, 2, ["s1", "s2"]]));
    assert_eq!(seen(&n, "pb").await, json!([false, 0, 1, ["s1"]]));
    assert_eq!(seen(&n, "pc").await, json!([true, 1, 0, ["/chat/*"]]));
    assert_eq!(presence(&n, "nobody").await, None);
    let want = json!({"clients": 3, "channels": 3, "subscriptions": 4, "open_polls": 1, "queued_messages": 3});
    assert_eq!(figures(&n).await, want);
    let listed = json!({"channels": [
        {"name": "/chat/*", "members": 1}, {"name": "s1", "members": 2}, {"name": "s2", "members": 1},
    ]});
    assert_eq!(channels(&n, None).await, Some(listed));
    let s1 = json!({"channel": "s1", "members": ["pa", "pb"], "online": 0});
    assert_eq!(channels(&n, Some("s1")).await, Some(s1));
    // A Bayeux-style name after the slash, and the pattern's own name.
    let chat = json!({"channel": "/chat/*", "members": ["pc"], "online": 1});
    assert_eq!(channels(&n, Some("/chat/*")).await, Some(chat));
    assert_eq!(channels(&n, Some("nobody-here")).await, None);

    n.post_ok(r#"<message channel="/chat/x">{"i":3}</message>"#, 1)
        .await;
    let answer = tokio::time::timeout(PROMPT, held)
        .await
        .expect("the held poll is answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer["messages"][0]["data"]["i"], 3, "{answer}");
    wait_until("pc's poll is closed", PROMPT, || async {
        presence(&n, "pc").await.unwrap()["open_polls"] == 0
    })
    .await;
    n.post_ok(
        r#"<batch><unsubscribe client="pb" channel="s1"/><disconnect client="pa"/></batch>"#,
        2,
    )
    .await;
    assert_eq!(presence(&n, "pa").await, None, "disconnected");
    assert_eq!(seen(&n, "pb").await, json!([false, 0, 1, []]));
    // A delivered message stays retained (delivery is at least once).
    assert_eq!(seen(&n, "pc").await, json!([false, 0, 1, ["/chat/*"]]));
    let want = json!({"clients": 2, "channels": 1, "subscriptions": 1, "open_polls": 0, "queued_messages": 2});
    assert_eq!(figures(&n).await, want);
    let listed = json!({"channels": [{"name": "/chat/*", "members": 1}]});
    assert_eq!(channels(&n, None).await, Some(listed));
}
