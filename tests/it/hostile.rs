//! Hostile input: entity bombs, external entities, deep nesting, bad UTF-8,
//! endless bodies and slow clients get a clear refusal, quickly, and leave
//! nothing behind.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestServer;

async fn refused(server: &TestServer, body: Vec<u8>, status: StatusCode, code: &str) {
    let started = Instant::now();
    let reply = server
        .http
        .post(server.ingest_url("/"))
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), status);
    let text = reply.text().await.unwrap();
    assert!(text.contains(&format!(r#"code="{code}""#)), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused quickly: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn entity_bombs_and_external_entities_are_refused() {
    let server = TestServer::start().await;
    let mut laughs =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    laughs.push_str("]>\n<message to=\"victim\" type=\"text\">&lol9;</message>");
    refused(
        &server,
        laughs.into_bytes(),
        StatusCode::BAD_REQUEST,
        "malformed-xml",
    )
    .await;
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><message to="victim" type="text">&xxe;</message>"#;
    refused(
        &server,
        xxe.into(),
        StatusCode::BAD_REQUEST,
        "malformed-xml",
    )
    .await;
    let undeclared = r#"<message to="victim" type="text">&xxe;</message>"#;
    refused(
        &server,
        undeclared.into(),
        StatusCode::BAD_REQUEST,
        "malformed-xml",
    )
    .await;
    assert_eq!(server.stats().await["clients"], 0);
}

#[tokio::test]
async fn deep_nesting_and_bad_utf8_are_refused() {
    let server = TestServer::with(|s| s.limits.max_body_bytes = 4 << 20).await;
    let deep = format!(
        "<batch>{}{}</batch>",
        "<batch>".repeat(100_000),
        "</batch>".repeat(100_000)
    );
    refused(
        &server,
        deep.into_bytes(),
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    let deep_message = format!(
        "{}{}",
        "<message to=\"a\">".repeat(100_000),
        "</message>".repeat(100_000)
    );
    refused(
        &server,
        deep_message.into_bytes(),
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    let mut bad_utf8 = b"<message to=\"a\" type=\"text\">".to_vec();
    bad_utf8.extend_from_slice(&[0xC3, 0x28, 0xFF]);
    bad_utf8.extend_from_slice(b"</message>");
    refused(&server, bad_utf8, StatusCode::BAD_REQUEST, "malformed-xml").await;
    assert_eq!(server.stats().await["clients"], 0);
}

#[tokio::test]
async fn a_declared_huge_body_is_refused_before_reading() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.ingest).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: 2147483648\r\n\r\n<batch>";
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains(r#"code="too-large""#), "{reply}");
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_off_at_the_limit() {
    let server = TestServer::with(|s| s.limits.max_body_bytes = 64 << 10).await;
    let mut stream = TcpStream::connect(server.ingest).await.unwrap();
    stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    // Stream up to 2 GB in 16 KiB chunks; the server must answer long before.
    let chunk = format!("4000\r\n{}\r\n", "<".repeat(0x4000));
    let started = Instant::now();
    let mut sent: u64 = 0;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        while sent < 2 << 30 {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 0x4000;
        }
        sent
    });
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut reply))
        .await
        .expect("a reply within 10 s")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let sent = tokio::time::timeout(Duration::from_secs(10), writing)
        .await
        .expect("the server stops reading")
        .unwrap();
    assert!(
        sent < 64 << 20,
        "the server stopped the upload early: {sent} bytes"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.stats().await["clients"], 0);
}

#[tokio::test]
async fn slow_clients_are_timed_out() {
    let server = TestServer::with(|s| s.limits.request_timeout = Duration::from_millis(500)).await;
    // Headers that never finish: the connection is closed.
    let mut slow_headers = TcpStream::connect(server.public).await.unwrap();
    slow_headers
        .write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut slow_headers).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the header timeout"
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    // A body that never finishes: 408 with the code, nothing applied.
    let mut slow_body = TcpStream::connect(server.ingest).await.unwrap();
    slow_body.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: 100\r\n\r\n<batch>").await.unwrap();
    let reply = read_reply(&mut slow_body).await;
    assert!(
        reply.starts_with("HTTP/1.1 408") && reply.contains(r#"code="timeout""#),
        "{reply}"
    );
    assert_eq!(server.stats().await["clients"], 0);
}

/// Reads until the server closes or a full reply with a body arrived.
async fn read_reply(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Err(_) if reply.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn a_client_that_sends_its_whole_over_limit_body_first_still_reads_the_413() {
    let server = TestServer::with(|s| s.limits.max_body_bytes = 1 << 20).await;
    let body = format!("<batch>{}</batch>", " ".repeat(1_200_000));
    let mut stream = TcpStream::connect(server.ingest).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(body.as_bytes())
        .await
        .expect("the server reads the body instead of resetting");
    let reply = read_reply(&mut stream).await;
    assert!(
        reply.starts_with("HTTP/1.1 413") && reply.contains(r#"code="too-large""#),
        "{reply}"
    );
}
