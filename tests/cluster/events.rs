//! `GET /events` (Server-Sent Events) on the redis store: a stream held on
//! one node gets what is posted on another, as events whose ids are the
//! same cursors every node hands out, and resumes on a third node through
//! `Last-Event-ID`.

use std::time::Duration;

use crate::harness::{token, wait_until, Scratch, Server};
use crate::nodes::{ingest_get, nodes, PROMPT};
use crate::redis_server::{Kind, Persistence, TestRedis};

#[path = "../shared/sse.rs"]
mod sse;
use sse::{SseEvent as Event, SseReader};

/// An open stream, read event by event (comments skipped).
struct Stream(SseReader);

impl Stream {
    async fn open(server: &Server, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = server
            .http
            .get(format!("http://{}/events?{query}", server.public));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let reply = request.send().await.expect("/events answers");
        assert_eq!(reply.status().as_u16(), 200);
        assert_eq!(reply.headers()["content-type"], "text/event-stream");
        Stream(SseReader::new(reply))
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(PROMPT, self.0.read_event())
            .await
            .expect("an event in time")
            .expect("the stream stays open")
    }
}

/// A stream on node B gets a message for its client and one for its
/// channel, both posted on node A, promptly; it counts as an open poll
/// cluster-wide; a stream on node C resumes after the first event's id.
async fn events_stream_on_one_node_gets_messages_posted_on_another(kind: Kind) {
    let dir = Scratch::new("events");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis, &dir.0, 3).await;
    let dana = token("dana", &["news"]);
    let mut stream = Stream::open(&n[1], &format!("token={dana}&channels=news"), None).await;
    wait_until("the stream counts as an open poll", PROMPT, || async {
        let (_, body) = ingest_get(&n[2], "/clients/dana").await;
        body.contains("\"open_polls\":1") && body.contains("news")
    })
    .await;

    n[0].post_ok(r#"<message to="dana" event="ping">{"n":1}</message>"#, 1)
        .await;
    let first = stream.next().await;
    assert_eq!(first.event, "ping", "{first:?}");
    assert_eq!(first.data["data"]["n"], 1, "{first:?}");
    assert_eq!(first.data["id"].as_str(), first.id.as_deref());

    n[0].post_ok(r#"<message channel="news">{"n":2}</message>"#, 1)
        .await;
    let second = stream.next().await;
    assert_eq!(second.event, "message", "{second:?}");
    assert_eq!(second.data["channel"], "news", "{second:?}");
    assert_eq!(second.data["data"]["n"], 2, "{second:?}");

    // The ids are the cursors any node understands: a stream on node C
    // resuming after the first event gets the second, and nothing else.
    let mut resumed = Stream::open(&n[2], &format!("token={dana}"), first.id.as_deref()).await;
    let again = resumed.next().await;
    assert_eq!(again.id, second.id, "{again:?}");
    assert_eq!(again.data["data"]["n"], 2, "{again:?}");

    // Both streams still live: a third message reaches each.
    n[2].post_ok(r#"<message to="dana">{"n":3}</message>"#, 1)
        .await;
    for s in [&mut stream, &mut resumed] {
        let third = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .unwrap();
        assert_eq!(third.data["data"]["n"], 3, "{third:?}");
    }
}

crate::on_both!(events_stream_on_one_node_gets_messages_posted_on_another);
