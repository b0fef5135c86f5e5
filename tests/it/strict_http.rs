//! The public port's strictness at the framing edges, over raw sockets:
//! chunk sizes, `Transfer-Encoding` lists, `Host`, `Expect: 100-continue`,
//! closing after an unread body, and the ingest port's refusal of
//! `Content-Length` with `Transfer-Encoding`.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{token, TestServer};

async fn bayeux_server() -> TestServer {
    TestServer::with(|s| s.bayeux.enabled = true).await
}

/// Sends `request` on a new connection and reads until the server closes
/// (or 5 s pass); what was read.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream).await
}

/// Reads until the server closes or 5 s pass; what was read. A reset after
/// some bytes keeps those bytes.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// A Bayeux batch the server answers `200` (an unknown session).
fn batch() -> String {
    json!([{"channel": "/meta/connect", "clientId": "x"}]).to_string()
}

#[tokio::test]
async fn chunk_sizes_are_hex_digits_only() {
    let server = bayeux_server().await;
    let body = batch();
    let n = body.len();
    let head = "POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    // The control: pure hex digits (and an extension) are read.
    let good = exchange(
        server.public,
        &format!("{head}{n:x};e=1\r\n{body}\r\n0\r\n\r\n"),
    )
    .await;
    assert!(good.starts_with("HTTP/1.1 200"), "{good}");
    for size_line in [
        format!("+{n:x}\r\n{body}\r\n0\r\n\r\n"),
        format!(" {n:x}\r\n{body}\r\n0\r\n\r\n"),
        format!("{n:x} \r\n{body}\r\n0\r\n\r\n"),
        format!("0x{n:x}\r\n{body}\r\n0\r\n\r\n"),
        format!("{n:x}\r\n{body}\r\n+0\r\n\r\n"),
        format!("{n:x}\r\n{body}\r\n-0\r\n\r\n"),
    ] {
        let reply = exchange(server.public, &format!("{head}{size_line}")).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{size_line:?}: {reply}");
        assert!(reply.contains("invalid-request"), "{size_line:?}: {reply}");
        assert!(
            reply.contains("connection: close"),
            "{size_line:?}: {reply}"
        );
    }
}

#[tokio::test]
async fn transfer_codings_other_than_a_single_chunked_are_refused() {
    let server = bayeux_server().await;
    let body = batch();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for (version, coding, status) in [
        ("1.1", "Transfer-Encoding: gzip, chunked", "501"),
        ("1.1", "Transfer-Encoding: gzip", "501"),
        ("1.1", "Transfer-Encoding: chunked, chunked", "400"),
        (
            "1.1",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "400",
        ),
        ("1.1", "Transfer-Encoding: chunked,", "400"),
        ("1.0", "Transfer-Encoding: chunked", "400"),
        (
            "1.0",
            "Transfer-Encoding: chunked\r\nConnection: keep-alive",
            "400",
        ),
    ] {
        let request = format!(
            "POST /bayeux HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n{coding}\r\n\r\n{chunked}"
        );
        let reply = exchange(server.public, &request).await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{version} {coding:?}: {reply}"
        );
        assert!(reply.contains("connection: close"), "{coding:?}: {reply}");
        assert_eq!(
            reply.matches("HTTP/1.1 ").count(),
            1,
            "one reply, then closed: {reply}"
        );
    }
}

#[tokio::test]
async fn http_1_1_needs_one_host_naming_the_target() {
    let server = TestServer::start().await;
    for request in [
        "GET /health HTTP/1.1\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET http://other.example/health HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a:81/health HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let reply = exchange(server.public, request).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{request:?}: {reply}");
        assert!(reply.contains("invalid-request"), "{request:?}: {reply}");
        assert!(reply.contains("connection: close"), "{request:?}: {reply}");
    }
    for request in [
        "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET http://A:81/health HTTP/1.1\r\nHost: a:81\r\nConnection: close\r\n\r\n",
        "GET /health HTTP/1.0\r\n\r\n",
    ] {
        let reply = exchange(server.public, request).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{request:?}: {reply}");
    }
    // A poll without Host did nothing.
    let reply = exchange(
        server.public,
        &format!(
            "GET /poll?timeout=0&token={} HTTP/1.1\r\n\r\n",
            token("nohost", &[])
        ),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(server.stats().await["clients"], 0);
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let server = TestServer::with(|s| {
        s.bayeux.enabled = true;
        s.limits.max_body_bytes = 4096;
    })
    .await;
    let body = batch();
    let mut stream = TcpStream::connect(server.public).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut interim))
        .await
        .expect("100 Continue before the body is sent")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(
        rest.contains("session_unknown"),
        "the body was read: {rest}"
    );
    assert!(rest.ends_with("ok\n"), "and the next request: {rest}");

    // Too large: the final status at once, no 100.
    let reply = exchange(
        server.public,
        "POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}

#[tokio::test]
async fn a_reply_before_an_unread_body_is_read_not_reset() {
    let server = TestServer::start().await;
    // A body the route does not read (a 404), sent whole before reading.
    // A small send buffer (no autotuning) keeps the client writing while
    // the server answers and closes, as a client on a real network is.
    let body = vec![b'x'; 900_000];
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(32 << 10).unwrap();
    let mut stream = socket.connect(server.public).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.write_all(&body))
        .await
        .expect("the body is taken")
        .expect("the server reads the rest of the body instead of resetting");
    let reply = read_until_closed(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[tokio::test]
async fn ingest_refuses_content_length_with_transfer_encoding() {
    let server = TestServer::start().await;
    let xml = r#"<message to="smug" type="text">hi</message>"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{xml}\r\n0\r\n\r\n",
        xml.len()
    );
    let reply = exchange(server.ingest, &request).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains(r#"code="invalid-request""#), "{reply}");
    assert_eq!(server.stats().await["clients"], 0, "nothing was applied");
}
