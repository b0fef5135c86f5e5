//! `GET /events` (Server-Sent Events): messages as events with their ids,
//! resuming through `Last-Event-ID`, `reset` and `disconnected` events,
//! the stream counting as an open poll, ending when its token expires.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{now, token, token_with, TestServer, SECRET};

#[path = "../shared/sse.rs"]
mod sse;
use sse::{SseEvent as Event, SseReader};

/// An open stream, read event by event.
struct Stream(SseReader);

impl Stream {
    async fn open(server: &TestServer, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = server
            .http
            .get(server.public_url(&format!("/events?{query}")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers()["content-type"], "text/event-stream");
        assert_eq!(reply.headers()["cache-control"], "no-store");
        assert_eq!(reply.headers()["x-accel-buffering"], "no");
        Stream(SseReader::new(reply))
    }

    /// The next event (comments skipped); `None` when the stream ends
    /// cleanly; a broken stream fails the test.
    async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(Duration::from_secs(10), self.0.read_event())
            .await
            .expect("an event or the end within 10 s")
    }
}

#[tokio::test]
async fn messages_arrive_as_events_and_last_event_id_resumes() {
    let server = TestServer::start().await;
    let query = format!("token={}&channels=news", token("sse", &["news"]));
    let mut stream = Stream::open(&server, &query, None).await;
    server.until_open_polls("sse", 1).await;
    server
        .post_ok(
            r#"<batch><message to="sse" event="notice" type="text">one</message><message channel="news" type="json">{"n":
2}</message></batch>"#,
            2,
        )
        .await;
    let first = stream.next().await.unwrap();
    assert_eq!(first.event, "notice");
    assert_eq!(first.data["data"], "one");
    assert_eq!(
        first.id.as_deref(),
        first.data["id"].as_str(),
        "the event id is the message id"
    );
    let second = stream.next().await.unwrap();
    assert_eq!(second.event, "message", "no event name: `message`");
    assert_eq!(second.data["channel"], "news");
    assert_eq!(
        second.data["data"],
        json!({"n": 2}),
        "a payload's own line break survives"
    );
    drop(stream);
    server.until_open_polls("sse", 0).await;

    // What came after the last seen id, and only that, on reconnecting.
    server
        .post_ok(r#"<message to="sse" type="text">three</message>"#, 1)
        .await;
    let mut resumed = Stream::open(&server, &query, first.id.as_deref()).await;
    assert_eq!(resumed.next().await.unwrap(), second);
    assert_eq!(resumed.next().await.unwrap().data["data"], "three");
}

#[tokio::test]
async fn an_unknown_cursor_gets_a_reset_event_first() {
    let server = TestServer::start().await;
    server
        .post_ok(r#"<message to="rs" type="text">kept</message>"#, 1)
        .await;
    let query = format!("token={}&since=zz-9", token("rs", &[]));
    let mut stream = Stream::open(&server, &query, None).await;
    let reset = stream.next().await.unwrap();
    assert_eq!(reset.event, "reset");
    let resume = reset.id.clone().unwrap();
    assert_eq!(reset.data["cursor"], resume.as_str());
    let kept = stream.next().await.unwrap();
    assert_eq!(kept.data["data"], "kept");
    // The reset's id resumes just before what followed it.
    drop(stream);
    let mut again = Stream::open(
        &server,
        &format!("token={}", token("rs", &[])),
        Some(&resume),
    )
    .await;
    assert_eq!(again.next().await.unwrap().data["data"], "kept");
}

#[tokio::test]
async fn a_disconnect_ends_the_stream_with_an_event() {
    let server = TestServer::start().await;
    let mut stream = Stream::open(&server, &format!("token={}", token("dc", &[])), None).await;
    server.until_open_polls("dc", 1).await;
    server.post_ok(r#"<disconnect client="dc"/>"#, 1).await;
    assert_eq!(stream.next().await.unwrap().event, "disconnected");
    assert_eq!(stream.next().await, None, "then the stream ends");
}

#[tokio::test]
async fn the_stream_ends_when_its_token_expires() {
    let server = TestServer::start().await;
    let short = token_with(json!({"sub": "exp", "exp": now() + 2}), SECRET);
    let mut stream = Stream::open(&server, &format!("token={short}"), None).await;
    server.until_open_polls("exp", 1).await;
    let started = std::time::Instant::now();
    assert_eq!(stream.next().await, None);
    assert!(started.elapsed() < Duration::from_secs(5));
    server.until_open_polls("exp", 0).await;
}

#[tokio::test]
async fn streams_count_against_max_polls_and_errors_are_json() {
    let server = TestServer::with(|s| s.limits.max_polls_per_client = 1).await;
    let query = format!("token={}", token("lim", &[]));
    let _stream = Stream::open(&server, &query, None).await;
    server.until_open_polls("lim", 1).await;
    let refused = server
        .http
        .get(server.public_url(&format!("/events?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "too-many-polls"
    );
    let no_token = server
        .http
        .get(server.public_url("/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        no_token.json::<Value>().await.unwrap()["error"],
        "invalid-token"
    );
}

#[tokio::test]
async fn last_event_id_wins_over_since() {
    // An EventSource reconnects to the URL it was opened with, `since`
    // included, and adds `Last-Event-ID`: that is where it stopped.
    let server = TestServer::start().await;
    server
        .post_ok(r#"<message to="lei" type="text">zero</message>"#, 1)
        .await;
    let start = crate::helpers::cursor(&server.poll("lei", "timeout=0").await);
    server
        .post_ok(
            r#"<batch><message to="lei" type="text">one</message><message to="lei" type="text">two</message><message to="lei" type="text">three</message></batch>"#,
            3,
        )
        .await;
    let read = server
        .poll("lei", &format!("since={start}&timeout=0"))
        .await;
    let seen = read["messages"][1]["id"].as_str().unwrap().to_owned();
    let query = format!("token={}&since={start}", token("lei", &[]));
    let mut resumed = Stream::open(&server, &query, Some(&seen)).await;
    assert_eq!(
        resumed.next().await.unwrap().data["data"],
        "three",
        "only what followed the last event seen"
    );
    // An empty Last-Event-ID (a stream that had no event yet) is no cursor.
    drop(resumed);
    let mut fresh = Stream::open(&server, &query, Some("")).await;
    assert_eq!(fresh.next().await.unwrap().data["data"], "one");
}

/// `since=now` starts after whatever the mailbox holds: a poll and a stream
/// carry only what arrives afterwards (and a cursor to resume from).
#[tokio::test]
async fn since_now_starts_after_what_is_retained() {
    let server = TestServer::start().await;
    server
        .post_ok(r#"<message to="nov" type="text">old</message>"#, 1)
        .await;
    let empty = server.poll("nov", "since=now&timeout=0").await;
    assert_eq!(empty["messages"], json!([]), "{empty}");
    assert_ne!(empty["reset"], json!(true));
    let waiting = server.spawn_poll(format!(
        "/poll?token={}&since=now&timeout=10",
        token("nov", &[])
    ));
    server.until_open_polls("nov", 1).await;
    server
        .post_ok(r#"<message to="nov" type="text">new</message>"#, 1)
        .await;
    let reply = waiting.await.unwrap();
    assert_eq!(crate::helpers::datas(&reply), vec![json!("new")], "{reply}");
    let query = format!("token={}&since=now", token("nov", &[]));
    let mut stream = Stream::open(&server, &query, None).await;
    server.until_open_polls("nov", 1).await;
    server
        .post_ok(r#"<message to="nov" type="text">newer</message>"#, 1)
        .await;
    assert_eq!(stream.next().await.unwrap().data["data"], "newer");
}
