//! `GET /app/<key>`: the Pusher Channels protocol 7 over a WebSocket,
//! spoken here by hand as pusher-js speaks it (the channel signatures
//! made with the tests' own HMAC, as a site's auth endpoint would):
//! connection, public/private/presence subscriptions, member events,
//! client events, ping, refusals; and one hub with the other transports.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{token, TestServer};

const KEY: &str = "ws-key";
const SECRET: &str = "ws-secret";

#[path = "../shared/pusher_page.rs"]
pub mod pusher_page;
use pusher_page::{data_of, next_event, Page};

async fn pusher_server(client_events: bool) -> TestServer {
    TestServer::with(|s| {
        s.pusher.enabled = true;
        s.pusher.key = KEY.into();
        s.pusher.secret = SECRET.into();
        s.pusher.client_events = client_events;
    })
    .await
}

/// A page on `server`, with the app's key and secret.
async fn page(server: &TestServer) -> Page {
    Page::connect(server.public, KEY, SECRET).await
}

#[tokio::test]
async fn public_channels_get_ingest_messages_and_ping_is_answered() {
    let server = pusher_server(false).await;
    let mut page = page(&server).await;
    let ok = page.subscribe("orders", None).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    assert_eq!(ok["channel"], "orders");

    server
        .post_ok(
            r#"<message channel="orders" event="shipped">{"id":7}</message>"#,
            1,
        )
        .await;
    let shipped = page.next().await;
    assert_eq!(shipped["event"], "shipped");
    assert_eq!(shipped["channel"], "orders");
    assert_eq!(data_of(&shipped), json!({"id": 7}));

    // A text payload arrives as that text; no event name is `message`.
    server
        .post_ok(
            r#"<message channel="orders" type="text">plain</message>"#,
            1,
        )
        .await;
    let plain = page.next().await;
    assert_eq!(
        (plain["event"].as_str(), plain["data"].as_str()),
        (Some("message"), Some("plain"))
    );

    page.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(page.next().await["event"], "pusher:pong");

    page.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "orders"}}))
        .await;
    // Pusher does not answer an unsubscribe; the pong to a ping sent after
    // it says it was handled (a socket's events are handled in order).
    page.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(page.next().await["event"], "pusher:pong");
    server
        .post_ok(r#"<message channel="orders">"unheard"</message>"#, 1)
        .await;
    page.quiet(Duration::from_millis(500)).await;
    server.stop().await;
}

#[tokio::test]
async fn private_channels_need_the_sites_signature() {
    let server = pusher_server(false).await;
    let mut page = page(&server).await;
    page.send(json!({"event": "pusher:subscribe", "data": {
        "channel": "private-orders", "auth": format!("{KEY}:{}", "0".repeat(64))}}))
        .await;
    let refused = page.next().await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(refused["channel"], "private-orders");
    assert_eq!(data_of(&refused)["status"], 401);
    server
        .post_ok(r#"<message channel="private-orders">"secret"</message>"#, 1)
        .await;
    page.quiet(Duration::from_millis(500)).await;

    let ok = page.subscribe("private-orders", None).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    server
        .post_ok(
            r#"<message channel="private-orders" event="e">"for you"</message>"#,
            1,
        )
        .await;
    assert_eq!(page.next().await["data"], "for you");
    server.stop().await;
}

#[tokio::test]
async fn presence_channels_list_members_and_announce_arrivals_and_departures() {
    let server = pusher_server(false).await;
    let mut ann = page(&server).await;
    let joined = ann
        .subscribe(
            "presence-room",
            Some(json!({"user_id": "ann", "user_info": {"name": "Ann"}})),
        )
        .await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let presence = &data_of(&joined)["presence"];
    assert_eq!(presence["ids"], json!(["ann"]));
    assert_eq!(presence["hash"]["ann"], json!({"name": "Ann"}));
    assert_eq!(presence["count"], 1);

    let mut bob = page(&server).await;
    let joined = bob
        .subscribe("presence-room", Some(json!({"user_id": 42})))
        .await;
    assert_eq!(data_of(&joined)["presence"]["ids"], json!(["42", "ann"]));
    let added = ann.next().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(data_of(&added)["user_id"], "42");

    // A forged channel_data (signed for another user) is refused.
    let mut eve = page(&server).await;
    let signed = json!({"user_id": "eve"}).to_string();
    eve.send(json!({"event": "pusher:subscribe", "data": {
        "channel": "presence-room",
        "auth": eve.auth("presence-room", Some(&signed)),
        "channel_data": json!({"user_id": "ann"}).to_string()}}))
        .await;
    assert_eq!(eve.next().await["event"], "pusher:subscription_error");

    bob.socket.close(None).await.unwrap();
    let removed = ann.next().await;
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    assert_eq!(data_of(&removed)["user_id"], "42");
    server.stop().await;
}

#[tokio::test]
async fn client_events_reach_the_others_only_when_enabled() {
    let server = pusher_server(true).await;
    let mut one = page(&server).await;
    let mut two = page(&server).await;
    one.subscribe("private-chat", None).await;
    two.subscribe("private-chat", None).await;
    one.send(json!({"event": "client-typing", "channel": "private-chat", "data": {"who": "one"}}))
        .await;
    let typing = two.next().await;
    assert_eq!(typing["event"], "client-typing");
    assert_eq!(data_of(&typing), json!({"who": "one"}));
    one.quiet(Duration::from_millis(300)).await; // never back to the sender

    // Not on a public channel, nor one not subscribed to.
    one.subscribe("lobby", None).await;
    one.send(json!({"event": "client-x", "channel": "lobby", "data": {}}))
        .await;
    assert_eq!(one.next().await["event"], "pusher:error");
    server.stop().await;

    let server = pusher_server(false).await;
    let mut one = page(&server).await;
    one.subscribe("private-chat", None).await;
    one.send(json!({"event": "client-typing", "channel": "private-chat", "data": {}}))
        .await;
    let off = one.next().await;
    assert_eq!(off["event"], "pusher:error", "{off}");
    server.stop().await;
}

#[tokio::test]
async fn one_hub_a_pusher_client_event_reaches_a_poll_and_a_ws() {
    let server = pusher_server(true).await;
    let reader = token("reader", &["private-feed"]);
    let (_, first, _) = server
        .poll_raw(&format!("token={reader}&channels=private-feed&timeout=0"))
        .await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let mut page = page(&server).await;
    page.subscribe("private-feed", None).await;
    page.send(json!({"event": "client-note", "channel": "private-feed", "data": {"n": 1}}))
        .await;
    let (_, got, _) = server
        .poll_raw(&format!(
            "token={reader}&channels=private-feed&since={cursor}"
        ))
        .await;
    assert_eq!(got["messages"][0]["event"], "client-note", "{got}");
    assert_eq!(got["messages"][0]["data"], json!({"n": 1}));
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_key_or_protocol_is_refused_with_pushers_codes() {
    let server = pusher_server(false).await;
    for (path, code) in [
        ("/app/nope?protocol=7".to_string(), 4001),
        (format!("/app/{KEY}?protocol=3"), 4007),
        (format!("/app/{KEY}"), 4007),
    ] {
        let (mut socket, _) = connect_async(format!("ws://{}{path}", server.public))
            .await
            .unwrap();
        let error = next_event(&mut socket).await;
        assert_eq!(error["event"], "pusher:error", "{error}");
        assert_eq!(error["data"]["code"], code, "{path}: {error}");
        let closed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap();
        match closed {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), code),
            other => panic!("{path}: expected a close, got {other:?}"),
        }
    }
    server.stop().await;

    // With [pusher] off, /app/<key> is not served.
    let off = TestServer::start().await;
    let status = off.get_status(off.public_url(&format!("/app/{KEY}"))).await;
    assert_eq!(status, 404);
    off.stop().await;
}
