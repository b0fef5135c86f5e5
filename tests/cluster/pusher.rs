//! Pusher pages (`GET /app/<key>`) on several nodes on one Redis: a socket
//! on one node gets what is posted on another (XML ingest), a client event
//! sent on one node reaches a socket on another and not its sender, and
//! presence crosses nodes: member lists name users held by any node,
//! member events reach every node, and a user leaving one node while
//! still present on another is not said to have left. Pusher's webhooks
//! count a channel's sockets on every node: one `channel_occupied` for
//! the first socket in, wherever, one `channel_vacated` for the last out.

use std::time::Duration;

use serde_json::json;

use crate::harness::Scratch;
use crate::nodes::node;
use crate::redis_server::{Kind, Persistence, TestRedis};

#[path = "../shared/pusher_page.rs"]
mod pusher_page;
use pusher_page::{data_of, Page};
#[path = "../shared/webhook_receiver.rs"]
#[allow(dead_code)] // the signature checks are tests/it's
mod webhook_receiver;
use webhook_receiver::Receiver;

const KEY: &str = "cluster-key";
const SECRET: &str = "cluster-secret";

async fn pusher_pages_on_two_nodes_share_channels(kind: Kind) {
    let dir = Scratch::new("pusher");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let pusher = [
        ("COMETBOX_PUSHER__ENABLED", "true"),
        ("COMETBOX_PUSHER__KEY", KEY),
        ("COMETBOX_PUSHER__SECRET", SECRET),
        ("COMETBOX_PUSHER__CLIENT_EVENTS", "true"),
    ];
    let a = node(&redis, &dir.0, &pusher).await;
    let b = node(&redis, &dir.0, &pusher).await;

    let mut on_a = Page::connect(&a.public, KEY, SECRET).await;
    let mut on_b = Page::connect(&b.public, KEY, SECRET).await;
    for page in [&mut on_a, &mut on_b] {
        let ok = page.subscribe("private-orders", None).await;
        assert_eq!(
            ok["event"], "pusher_internal:subscription_succeeded",
            "{ok}"
        );
    }

    // Posted on node A, heard on node B.
    a.post_ok(
        r#"<message channel="private-orders" event="shipped">{"id":1}</message>"#,
        1,
    )
    .await;
    let shipped = on_b.next().await;
    assert_eq!(shipped["event"], "shipped", "{shipped}");
    assert_eq!(data_of(&shipped), json!({"id": 1}));
    assert_eq!(on_a.next().await["event"], "shipped");

    // A client event sent on node A: node B's socket hears it, the sender
    // does not.
    on_a.send(json!({"event": "client-typing", "channel": "private-orders", "data": {"who": "a"}}))
        .await;
    let typing = on_b.next().await;
    assert_eq!(typing["event"], "client-typing", "{typing}");
    assert_eq!(data_of(&typing), json!({"who": "a"}));
    on_a.quiet(Duration::from_millis(500)).await;

    // A presence member joining on node B is announced to node A's socket;
    // node B's member list names the user node A holds.
    let joined = on_a
        .subscribe(
            "presence-room",
            Some(json!({"user_id": "ann", "user_info": {"n": 1}})),
        )
        .await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let joined = on_b
        .subscribe("presence-room", Some(json!({"user_id": "bob"})))
        .await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let presence = &data_of(&joined)["presence"];
    assert_eq!(presence["ids"], json!(["ann", "bob"]), "{joined}");
    assert_eq!(presence["hash"]["ann"], json!({"n": 1}));
    let added = on_a.next().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(data_of(&added)["user_id"], "bob");

    // Ann in a second tab on node B, which then closes: Ann is still there
    // through node A, so nobody is told she left. Bob leaving is told.
    let mut ann_on_b = Page::connect(&b.public, KEY, SECRET).await;
    let joined = ann_on_b
        .subscribe(
            "presence-room",
            Some(json!({"user_id": "ann", "user_info": {"n": 1}})),
        )
        .await;
    assert_eq!(data_of(&joined)["presence"]["count"], 2, "{joined}");
    ann_on_b.socket.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    on_b.socket.close(None).await.unwrap();
    loop {
        let event = on_a.next().await;
        if event["event"] == "pusher_internal:member_removed" {
            assert_eq!(data_of(&event)["user_id"], "bob", "only Bob left: {event}");
            break;
        }
        assert_eq!(event["event"], "pusher_internal:member_added", "{event}");
    }
}

crate::on_both!(pusher_pages_on_two_nodes_share_channels);

/// Sockets join a channel one after another on two nodes and leave in the
/// other order: one `channel_occupied` (from the node of the first), one
/// `channel_vacated` (from the node of the last), whichever node sends it.
async fn occupancy_webhooks_count_sockets_on_every_node(kind: Kind) {
    let dir = Scratch::new("pusher-webhooks");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let pusher = [
        ("COMETBOX_PUSHER__ENABLED", "true"),
        ("COMETBOX_PUSHER__KEY", KEY),
        ("COMETBOX_PUSHER__SECRET", SECRET),
        ("COMETBOX_PUSHER__WEBHOOK_URL", url.as_str()),
    ];
    let a = node(&redis, &dir.0, &pusher).await;
    let b = node(&redis, &dir.0, &pusher).await;
    let mut on_a = Page::connect(&a.public, KEY, SECRET).await;
    let mut on_b = Page::connect(&b.public, KEY, SECRET).await;
    on_a.subscribe("news", None).await;
    receiver.until("channel_occupied", 1).await;
    on_b.subscribe("news", None).await;
    on_a.socket.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.named("channel_vacated").is_empty(),
        "node B still holds a socket: {:?}",
        receiver.delivered()
    );
    on_b.socket.close(None).await.unwrap();
    receiver.until("channel_vacated", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<_> = receiver
        .delivered()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, ["channel_occupied", "channel_vacated"]);
    drop(a);
    drop(b);
}

crate::on_both!(occupancy_webhooks_count_sockets_on_every_node);
