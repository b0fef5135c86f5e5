//! Bayeux on the redis store: a page whose node dies re-handshakes on
//! another node (sessions live in a node's memory) and gets what arrived
//! in between: the new session starts after what a reply carried, a mark
//! kept in Redis, not at the mailbox's end. The page's subscription is a
//! wildcard, matched in Redis by the node the message is posted to.

use serde_json::{json, Value};

use crate::harness::{token, Scratch, Server};
use crate::nodes::node;
use crate::redis_server::{Kind, Persistence, TestRedis};

async fn bayeux(node: &Server, batch: Value) -> Vec<Value> {
    let reply = node
        .http
        .post(format!("http://{}/bayeux", node.public))
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .expect("the node answers");
    assert_eq!(reply.status(), 200);
    reply
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

async fn handshake(node: &Server, token: &str) -> String {
    let reply = bayeux(
        node,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "ext": {"cometbox": {"token": token}}}]),
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

/// The data of what a connect (answered at once) delivered.
async fn connect(node: &Server, client_id: &str) -> Vec<Value> {
    let reply = bayeux(
        node,
        json!([{"channel": "/meta/connect", "clientId": client_id,
                "connectionType": "long-polling", "advice": {"timeout": 0}}]),
    )
    .await;
    assert_eq!(reply.last().unwrap()["successful"], true, "{reply:?}");
    reply[..reply.len() - 1]
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

async fn a_page_whose_node_dies_loses_nothing(kind: Kind) {
    let dir = Scratch::new("bayeux-redis");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let on = [("COMETBOX_BAYEUX__ENABLED", "true")];
    let a = node(&redis, &dir.0, &on).await;
    let b = node(&redis, &dir.0, &on).await;
    let grant = token("bea", &["/chat/*"]);
    let id = handshake(&a, &grant).await;
    let subscribed = bayeux(
        &a,
        // A wildcard: held in Redis like a channel, matched when published.
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/chat/*"}]),
    )
    .await;
    assert_eq!(subscribed[0]["successful"], true, "{subscribed:?}");
    b.post_ok(r#"<message channel="/chat/demo">1</message>"#, 1)
        .await;
    assert_eq!(connect(&a, &id).await, [json!(1)]);
    b.post_ok(r#"<message channel="/chat/demo">2</message>"#, 1)
        .await;
    a.kill9().await;

    let stale = bayeux(&b, json!([{"channel": "/meta/connect", "clientId": id}])).await;
    assert_eq!(stale[0]["error"], "402::session_unknown");
    let again = handshake(&b, &grant).await;
    assert_eq!(
        connect(&b, &again).await,
        [json!(2)],
        "what arrived after the last reply, once"
    );
}

crate::on_both!(a_page_whose_node_dies_loses_nothing);
