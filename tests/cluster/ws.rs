//! `GET /ws` on the redis store: a WebSocket held on one node gets what is
//! posted on another, counts as an open poll cluster-wide (presence), joins
//! a channel by a subscribe frame there, and resumes on a third node from
//! its cursor.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

use crate::harness::{token, wait_until, Scratch, Server};
use crate::nodes::{ingest_get, nodes, PROMPT};
use crate::redis_server::{Kind, Persistence, TestRedis};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(server: &Server, query: &str) -> Socket {
    let (socket, _) = connect_async(format!("ws://{}/ws?{query}", server.public))
        .await
        .expect("the upgrade succeeds");
    socket
}

/// The next text frame as JSON (pings skipped).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(PROMPT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn ws_on_one_node_gets_messages_posted_on_another(kind: Kind) {
    let dir = Scratch::new("ws");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis, &dir.0, 3).await;
    let erin = token("erin", &["news", "sport"]);
    let mut socket = open(&n[1], &format!("token={erin}&channels=news")).await;
    wait_until("the socket counts as an open poll", PROMPT, || async {
        let (_, body) = ingest_get(&n[2], "/clients/erin").await;
        body.contains("\"open_polls\":1") && body.contains("\"online\":true")
    })
    .await;

    n[0].post_ok(r#"<message to="erin" event="ping">{"n":1}</message>"#, 1)
        .await;
    let first = next_json(&mut socket).await;
    assert_eq!(first["messages"][0]["data"]["n"], 1, "{first}");
    assert_eq!(first["messages"][0]["event"], "ping", "{first}");
    let after_first = first["cursor"].as_str().unwrap().to_owned();

    n[2].post_ok(r#"<message channel="news">{"n":2}</message>"#, 1)
        .await;
    let second = next_json(&mut socket).await;
    assert_eq!(second["messages"][0]["channel"], "news", "{second}");
    assert_eq!(second["messages"][0]["data"]["n"], 2, "{second}");

    // A subscribe frame on node B; a channel message posted on node A.
    socket
        .send(Message::text(
            json!({"type": "subscribe", "channels": ["sport"], "ref": 1}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "ok", "ref": 1})
    );
    n[0].post_ok(r#"<message channel="sport">{"n":3}</message>"#, 1)
        .await;
    let third = next_json(&mut socket).await;
    assert_eq!(third["messages"][0]["channel"], "sport", "{third}");

    // The cursor is any node's: a socket on node C resuming after the
    // first message gets the second and the third.
    let mut resumed = open(&n[2], &format!("token={erin}&since={after_first}")).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = next_json(&mut resumed).await;
        for m in frame["messages"].as_array().unwrap() {
            seen.push(m["data"]["n"].as_i64().unwrap());
        }
    }
    assert_eq!(seen, vec![2, 3]);

    // Both closed: the client goes offline cluster-wide.
    socket.close(None).await.unwrap();
    resumed.close(None).await.unwrap();
    wait_until("both sockets stop counting", PROMPT, || async {
        let (_, body) = ingest_get(&n[0], "/clients/erin").await;
        body.contains("\"open_polls\":0")
    })
    .await;
}

crate::on_both!(ws_on_one_node_gets_messages_posted_on_another);
