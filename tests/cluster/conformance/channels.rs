//! Channels: fan-out to exactly the members at the time of the message,
//! each once, whether a client matches by the exact name, by `/chat/*`
//! (one level below), by `/chat/**` (any depth) or by several of them at
//! once, joined by ingest or by a poll's `channels=`; and a backend's
//! `<unsubscribe>` standing against a browser's grant issued before it.

use std::time::Duration;

use crate::harness::token;
use crate::nodes::{numbers, poll_ok};

use super::fixture::Fixture;
use super::looks::{presence, refusal, spread, token_issued, unix_now};

/// What a client's mailbox holds now (`{"i": n}` payloads).
async fn holds(n: &crate::harness::Server, client: &str) -> Vec<i64> {
    numbers(&poll_ok(n, &token(client, &[]), "timeout=0").await)
}

fn to_channel(channel: &str, i: i64) -> String {
    format!(r#"<message channel="{channel}">{{"i":{i}}}</message>"#)
}

/// Ingest `<subscribe>`s put mailboxes (spread over every slot group) in a
/// channel's fan-out; an `<unsubscribe>` takes one out, for the messages
/// after it only; every delivery names its channel.
pub async fn a_channel_reaches_its_members_at_the_time(fx: Fixture) {
    let n = fx.node(&[]).await;
    let members = spread("fan", 8);
    let joins: String = members
        .iter()
        .map(|m| format!(r#"<subscribe client="{m}" channel="news"/>"#))
        .collect();
    n.post_ok(&format!("<batch>{joins}</batch>"), members.len())
        .await;
    let n = fx.checkpoint(n).await;
    n.post_ok(&to_channel("news", 1), 1).await;
    let leaver = &members[0];
    n.post_ok(
        &format!(r#"<unsubscribe client="{leaver}" channel="news"/>"#),
        1,
    )
    .await;
    n.post_ok(&to_channel("news", 2), 1).await;
    let n = fx.checkpoint(n).await;
    for member in &members {
        let body = poll_ok(&n, &token(member, &[]), "timeout=0").await;
        let want: &[i64] = if member == leaver { &[1] } else { &[1, 2] };
        assert_eq!(numbers(&body), want, "{member}: {body}");
        for m in body["messages"].as_array().unwrap() {
            assert_eq!(m["channel"], "news", "{member}: {m}");
        }
    }
    assert_eq!(holds(&n, "outsider").await, Vec::<i64>::new());
}

/// `/chat/*` holds one level below `/chat/`, `/chat/**` every level, and
/// neither `/chat` itself nor `/chatty`; a client matching a message by
/// its exact name and by both patterns (by ingest, or by `channels=` on a
/// poll granted `/chat/*`) gets it once; leaving a pattern ends its
/// deliveries; a pattern is never a message's target (`400 invalid-id`).
pub async fn wildcards_reach_each_member_once(fx: Fixture) {
    let n = fx.node(&[]).await;
    let who = spread("w", 5);
    let (one, deep, all, other, polled) = (&who[0], &who[1], &who[2], &who[3], &who[4]);
    let mut joins = String::new();
    for (client, channel) in [
        (one, "/chat/*"),
        (deep, "/chat/**"),
        (all, "/chat/a"),
        (all, "/chat/*"),
        (all, "/chat/**"),
        (other, "/other/*"),
        (polled, "/chat/a"),
    ] {
        joins.push_str(&format!(
            r#"<subscribe client="{client}" channel="{channel}"/>"#
        ));
    }
    n.post_ok(&format!("<batch>{joins}</batch>"), 7).await;
    let grant = token(polled, &["/chat/*"]);
    poll_ok(&n, &grant, "channels=/chat/*,/chat/**&timeout=0").await;
    let n = fx.checkpoint(n).await;
    for (channel, i) in [
        ("/chat/a", 1),
        ("/chat/a/b", 2),
        ("/chatty", 3),
        ("/chat", 4),
    ] {
        n.post_ok(&to_channel(channel, i), 1).await;
    }
    assert_eq!(holds(&n, one).await, [1], "one level below /chat/");
    assert_eq!(holds(&n, deep).await, [1, 2], "every level below /chat/");
    assert_eq!(holds(&n, all).await, [1, 2], "each message once");
    assert_eq!(
        holds(&n, polled).await,
        [1, 2],
        "each once, joined by a poll"
    );
    assert_eq!(holds(&n, other).await, Vec::<i64>::new());
    n.post_ok(
        &format!(r#"<unsubscribe client="{deep}" channel="/chat/**"/>"#),
        1,
    )
    .await;
    n.post_ok(&to_channel("/chat/c", 5), 1).await;
    assert_eq!(holds(&n, deep).await, [1, 2], "nothing after leaving");
    assert_eq!(holds(&n, one).await, [1, 5]);
    let refused = refusal(&n, &to_channel("/chat/*", 6)).await;
    assert_eq!(
        refused,
        (400, "invalid-id".to_owned()),
        "a pattern is not a target"
    );
}

/// A backend's `<unsubscribe>` outlasts the browser's `channels=`: a poll
/// with a token issued before it (`iat`, or no `iat` at all) is served but
/// does not rejoin; a token issued after it does (docs/protocol-notes.md).
pub async fn an_unsubscribe_stands_against_older_grants(fx: Fixture) {
    let n = fx.node(&[]).await;
    let client = "una";
    let older = token_issued(client, &["news"], unix_now() - 60);
    let without_iat = token(client, &["news"]);
    poll_ok(&n, &older, "channels=news&timeout=0").await;
    let channels = |look: Option<serde_json::Value>| look.unwrap()["channels"].clone();
    assert_eq!(
        channels(presence(&n, client).await),
        serde_json::json!(["news"])
    );
    n.post_ok(
        &format!(r#"<unsubscribe client="{client}" channel="news"/>"#),
        1,
    )
    .await;
    let unsubscribed_at = unix_now();
    let n = fx.checkpoint(n).await;
    for (what, t) in [("iat before", &older), ("no iat", &without_iat)] {
        poll_ok(&n, t, "channels=news&timeout=0").await;
        let look = presence(&n, client).await;
        assert_eq!(
            channels(look),
            serde_json::json!([]),
            "{what}: not rejoined"
        );
    }
    n.post_ok(&to_channel("news", 1), 1).await;
    assert_eq!(holds(&n, client).await, Vec::<i64>::new(), "not a member");
    // Issued after the unsubscribe: a later second than it.
    while unix_now() <= unsubscribed_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let newer = token_issued(client, &["news"], unix_now());
    poll_ok(&n, &newer, "channels=news&timeout=0").await;
    let look = presence(&n, client).await;
    assert_eq!(channels(look), serde_json::json!(["news"]), "rejoined");
    n.post_ok(&to_channel("news", 2), 1).await;
    assert_eq!(holds(&n, client).await, [2]);
}
