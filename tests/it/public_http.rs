//! The public port's HTTP/1.1 edge cases, spoken over raw sockets:
//! keep-alive, pipelining, half-closed connections, `HEAD`, `Expect`,
//! bodies where none belong, HTTP/1.0, unknown paths and methods.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{token, TestServer};

/// One reply as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A raw connection that reads replies one after another.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(server: &TestServer) -> Self {
        Raw {
            stream: TcpStream::connect(server.public).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// The next reply; `head_only` for replies to `HEAD` (no body follows
    /// their `Content-Length`).
    async fn reply(&mut self, head_only: bool) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), self.read_reply(head_only))
            .await
            .expect("a reply within 10 s")
    }

    async fn read_reply(&mut self, head_only: bool) -> Reply {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(at) = response.parse(&self.buf).unwrap() {
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let length = if head_only { 0 } else { length };
                if self.buf.len() >= at + length {
                    let status = response.code.unwrap();
                    let body = String::from_utf8_lossy(&self.buf[at..at + length]).into_owned();
                    self.buf.drain(..at + length);
                    return Reply {
                        status,
                        headers,
                        body,
                    };
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before a whole reply: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server closes the connection (within 5 s) with nothing
    /// more to read.
    async fn closes(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => self.buf.is_empty(),
            _ => false,
        }
    }
}

fn poll_request(client: &str, extra: &str) -> String {
    format!(
        "GET /poll?token={}&timeout={extra} HTTP/1.1\r\nHost: x\r\n\r\n",
        token(client, &[])
    )
}

#[tokio::test]
async fn polls_follow_each_other_on_one_kept_alive_connection() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&poll_request("kai", "0")).await;
    let first = raw.reply(false).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert!(first.header("date").is_some());
    let cursor = first.json()["cursor"].as_str().unwrap().to_owned();
    // The second poll waits on the same connection and is answered by a
    // message.
    raw.send(&format!(
        "GET /poll?since={cursor}&token={}&timeout=20 HTTP/1.1\r\nHost: x\r\n\r\n",
        token("kai", &[])
    ))
    .await;
    server.until_open_polls("kai", 1).await;
    server
        .post_ok(r#"<message to="kai" type="text">hi</message>"#, 1)
        .await;
    let second = raw.reply(false).await;
    assert_eq!(second.json()["messages"][0]["data"], "hi");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start().await;
    server
        .post_ok(r#"<message to="pip" type="text">one</message>"#, 1)
        .await;
    let mut raw = Raw::connect(&server).await;
    // Three requests in one write: a poll with a message waiting, a
    // missing page, the health check.
    raw.send(&format!(
        "{}GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        poll_request("pip", "5")
    ))
    .await;
    let poll = raw.reply(false).await;
    assert_eq!(poll.json()["messages"][0]["data"], "one");
    let missing = raw.reply(false).await;
    assert_eq!(
        (missing.status, missing.json()["error"].as_str()),
        (404, Some("not-found"))
    );
    let health = raw.reply(false).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn a_request_pipelined_behind_a_waiting_poll_waits_its_turn() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&poll_request("turn", "20")).await;
    server.until_open_polls("turn", 1).await;
    raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    server
        .post_ok(r#"<message to="turn" type="text">first</message>"#, 1)
        .await;
    assert_eq!(
        raw.reply(false).await.json()["messages"][0]["data"],
        "first"
    );
    assert_eq!(raw.reply(false).await.body, "ok\n");
}

#[tokio::test]
async fn a_client_that_half_closes_is_gone_and_its_poll_ends() {
    let server = TestServer::start().await;
    // A quick request, then the sending side shut: the reply still comes.
    let mut quick = Raw::connect(&server).await;
    quick.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    quick.stream.shutdown().await.unwrap();
    assert_eq!(quick.reply(false).await.status, 200);
    assert!(quick.closes().await);
    // A waiting poll whose client shuts its side is taken as the browser
    // leaving (as nginx does by default): the poll stops counting.
    let mut waiting = Raw::connect(&server).await;
    waiting.send(&poll_request("half", "30")).await;
    server.until_open_polls("half", 1).await;
    waiting.stream.shutdown().await.unwrap();
    server.until_open_polls("half", 0).await;
}

#[tokio::test]
async fn head_requests_get_the_headers_without_a_body() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send("HEAD /cometbox.js HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let head = raw.reply(true).await;
    assert_eq!(head.status, 200);
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 1000, "the script's own length: {length}");
    // Nothing else was sent: the next reply on the connection starts clean.
    raw.send(&poll_request("hd", "0").replacen("GET", "HEAD", 1))
        .await;
    let poll = raw.reply(true).await;
    assert_eq!(poll.status, 200);
    raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw.reply(false).await.body, "ok\n");
}

#[tokio::test]
async fn bodies_on_get_are_refused_and_the_connection_closes() {
    let server = TestServer::start().await;
    for (framing, body) in [
        ("Content-Length: 5", "hello"),
        ("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
    ] {
        let mut raw = Raw::connect(&server).await;
        raw.send(&format!(
            "GET /poll?token={}&timeout=0 HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{body}",
            token("body", &[])
        ))
        .await;
        let reply = raw.reply(false).await;
        assert_eq!(reply.status, 400, "{framing}");
        assert_eq!(reply.json()["error"], "invalid-request");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(raw.closes().await, "{framing}");
    }
    assert_eq!(server.stats().await["clients"], 0, "nothing was applied");
}

#[tokio::test]
async fn expect_continue_without_a_body_is_simply_answered() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&format!(
        "GET /poll?token={}&timeout=0 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        token("exp", &[])
    ))
    .await;
    let reply = raw.reply(false).await;
    assert_eq!(reply.status, 200, "a final reply, no interim 100");
    assert!(reply.json()["cursor"].is_string());
}

#[tokio::test]
async fn http_1_0_gets_one_reply_then_the_connection_closes() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send("GET /health HTTP/1.0\r\n\r\n").await;
    let reply = raw.reply(false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(raw.closes().await);
    // `Connection: close` on 1.1 too.
    let mut raw = Raw::connect(&server).await;
    raw.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(raw.reply(false).await.status, 200);
    assert!(raw.closes().await);
}

#[tokio::test]
async fn wrong_methods_and_malformed_heads_get_their_codes() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send("DELETE /poll HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let reply = raw.reply(false).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"], "method-not-allowed");
    assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));
    // The connection is still good after a 405.
    raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw.reply(false).await.status, 200);
    for bad in [
        "GET /poll HTTP/1.1\r\nFolded: a\r\n b\r\n\r\n",
        "GET /poll HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET poll HTTP/1.1\r\n\r\n",
        "GET /poll HTTP/9.9\r\n\r\n",
        "\x00\x01\x02 garbage\r\n\r\n",
    ] {
        let mut raw = Raw::connect(&server).await;
        raw.send(bad).await;
        let reply = raw.reply(false).await;
        assert_eq!(reply.status, 400, "{bad:?}");
        assert_eq!(reply.json()["error"], "invalid-request", "{bad:?}");
        assert!(raw.closes().await, "{bad:?}");
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_on_shutdown() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw.reply(false).await.status, 200);
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped at once, not after the grace period"
    );
    assert!(raw.closes().await);
}

#[tokio::test]
async fn head_on_poll_and_events_changes_nothing() {
    let server = TestServer::start().await;
    let grant = token("hh", &["room:h"]);
    for (path, content_type) in [
        ("/poll", "application/json"),
        ("/events", "text/event-stream"),
    ] {
        let mut raw = Raw::connect(&server).await;
        raw.send(&format!(
            "HEAD {path}?channels=room:h&timeout=0&token={grant} HTTP/1.1\r\nHost: x\r\n\r\n"
        ))
        .await;
        let reply = raw.reply(true).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
    }
    assert_eq!(server.stats().await["clients"], 0, "no mailbox was made");
    assert_eq!(server.presence("hh").await.0, 404);
    // The channel was not joined: a message to it does not reach hh.
    server
        .post_ok(
            r#"<message channel="room:h" type="text">not yours</message>"#,
            1,
        )
        .await;
    let poll = server.poll("hh", "timeout=0").await;
    assert_eq!(poll["messages"], serde_json::json!([]), "{poll}");
    // A HEAD with a bad token is refused as a GET would be.
    let mut raw = Raw::connect(&server).await;
    raw.send("HEAD /poll?token=nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(raw.reply(true).await.status, 401);
}
