//! Bayeux on the redis store: a page whose node dies re-handshakes on
//! another node (sessions live in a node's memory) and gets what arrived
//! in between: the new session starts after what a reply carried, a mark
//! kept in Redis, not at the mailbox's end. The page's subscription is a
//! wildcard, matched in Redis by the node the message is posted to.

use serde_json::{json, Value};

use crate::bayeux_client::{BayeuxClient, BayeuxServer};
use crate::harness::{token, Scratch, Server};
use crate::nodes::node;
use crate::redis_server::{Kind, Persistence, TestRedis};

impl BayeuxServer for Server {
    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn bayeux_url(&self) -> String {
        format!("http://{}/bayeux", self.public)
    }
}

/// The data of what a connect (answered at once) delivered.
async fn connect(session: &mut BayeuxClient) -> Vec<Value> {
    let (delivered, own) = session.connect(0).await;
    assert_eq!(own["successful"], true, "{own}");
    delivered.iter().map(|m| m["data"].clone()).collect()
}

async fn a_page_whose_node_dies_loses_nothing(kind: Kind) {
    let dir = Scratch::new("bayeux-redis");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let on = [("COMETBOX_BAYEUX__ENABLED", "true")];
    let a = node(&redis, &dir.0, &on).await;
    let b = node(&redis, &dir.0, &on).await;
    let grant = token("bea", &["/chat/*"]);
    let mut page = BayeuxClient::with_token(&a, &grant).await;
    // A wildcard: held in Redis like a channel, matched when published.
    let subscribed = page.subscribe(json!("/chat/*")).await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");
    b.post_ok(r#"<message channel="/chat/demo">1</message>"#, 1)
        .await;
    assert_eq!(connect(&mut page).await, [json!(1)]);
    b.post_ok(r#"<message channel="/chat/demo">2</message>"#, 1)
        .await;
    a.kill9().await;

    // The session lived in the dead node's memory: the other one does not
    // know it, and the page handshakes again there.
    let stale = json!([{"channel": "/meta/connect", "clientId": page.client_id}]);
    let (status, stale) = BayeuxClient::post(&b, stale).await;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(stale[0]["error"], "402::session_unknown");
    let mut again = BayeuxClient::with_token(&b, &grant).await;
    assert_eq!(
        connect(&mut again).await,
        [json!(2)],
        "what arrived after the last reply, once"
    );
}

crate::on_both!(a_page_whose_node_dies_loses_nothing);
