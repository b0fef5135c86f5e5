//! `GET /ws` with a plain WebSocket client (`tokio-tungstenite`): the
//! upgrade and its refusals, messages as poll-reply frames, resume with
//! `since`, the browser's subscribe/unsubscribe/publish frames and their
//! answers, close codes, the socket counting as an open poll, and a
//! stalled reader cut by `send_timeout`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

use crate::helpers::{now, token, token_with, TestServer, SECRET};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/ws?{query}`; the upgrade must succeed.
async fn open(server: &TestServer, query: &str) -> Socket {
    let url = format!("ws://{}/ws?{query}", server.public);
    let (socket, reply) = connect_async(url).await.expect("the upgrade succeeds");
    assert_eq!(reply.status(), 101);
    socket
}

/// The next text frame as JSON, within 10 s (pings skipped).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; its code and reason.
async fn close_of(socket: &mut Socket) -> (u16, String) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a close within 10 s");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                return (u16::from(close.code), close.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Sends a frame from the browser and reads the answer carrying `ref`.
async fn ask(socket: &mut Socket, frame: Value) -> Value {
    socket.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        let answer = next_json(socket).await;
        if answer.get("ref").is_some() {
            return answer;
        }
    }
}

fn datas(frame: &Value) -> Vec<Value> {
    frame["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {frame}"))
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

/// A raw request to the public port; the status line and headers of the
/// answer.
async fn raw(server: &TestServer, request: String) -> String {
    let mut stream = TcpStream::connect(server.public).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        reply.extend_from_slice(&buf[..n]);
        if n == 0 || reply.windows(4).any(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&reply).into_owned();
        }
    }
}

#[tokio::test]
async fn messages_arrive_as_poll_reply_frames_and_resume_from_the_cursor() {
    let server = TestServer::start().await;
    let mut socket = open(&server, &format!("token={}", token("wsa", &[]))).await;
    server.until_open_polls("wsa", 1).await;
    server.post_ok(r#"<message to="wsa">1</message>"#, 1).await;
    let first = next_json(&mut socket).await;
    assert_eq!(datas(&first), vec![json!(1)]);
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    server
        .post_ok(r#"<message to="wsa" event="tick">{"n":2}</message>"#, 1)
        .await;
    let second = next_json(&mut socket).await;
    assert_eq!(datas(&second), vec![json!({"n": 2})]);
    assert_eq!(second["messages"][0]["event"], "tick");
    socket.close(None).await.unwrap();
    server.until_open_polls("wsa", 0).await;

    // Away: a message comes; back with the first frame's cursor, the socket
    // gets the second and third messages, not the first.
    server.post_ok(r#"<message to="wsa">3</message>"#, 1).await;
    let mut back = open(
        &server,
        &format!("token={}&since={cursor}", token("wsa", &[])),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(datas(&next_json(&mut back).await));
    }
    assert_eq!(seen, vec![json!({"n": 2}), json!(3)]);

    // A cursor the server cannot honour: a frame with `reset`.
    let mut lost = open(
        &server,
        &format!("token={}&since=zzzz-1", token("wsa", &[])),
    )
    .await;
    let frame = next_json(&mut lost).await;
    assert_eq!(frame["reset"], true, "{frame}");
    server.stop().await;
}

#[tokio::test]
async fn since_now_starts_after_what_the_mailbox_holds() {
    let server = TestServer::start().await;
    server
        .post_ok(r#"<message to="wsn">"old"</message>"#, 1)
        .await;
    let mut socket = open(&server, &format!("token={}&since=now", token("wsn", &[]))).await;
    server.until_open_polls("wsn", 1).await;
    server
        .post_ok(r#"<message to="wsn">"new"</message>"#, 1)
        .await;
    let frame = next_json(&mut socket).await;
    assert_eq!(datas(&frame), vec![json!("new")]);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_carries_at_most_max_reply_bytes_of_messages() {
    let server = TestServer::with(|s| s.limits.max_reply_bytes = 4096).await;
    for i in 0..20 {
        let body = format!("\"{i:04}{}\"", "x".repeat(1000));
        server
            .post_ok(&format!(r#"<message to="wsb">{body}</message>"#), 1)
            .await;
    }
    let mut socket = open(&server, &format!("token={}", token("wsb", &[]))).await;
    let mut seen = 0;
    let mut frames = 0;
    while seen < 20 {
        let frame = next_json(&mut socket).await;
        let messages = frame["messages"].as_array().unwrap();
        let bytes: usize = messages.iter().map(|m| m.to_string().len()).sum();
        assert!(bytes <= 4096, "a frame of {bytes} bytes of messages");
        for m in messages {
            let data = m["data"].as_str().unwrap();
            assert_eq!(&data[..4], format!("{seen:04}"), "in order, none twice");
            seen += 1;
        }
        frames += 1;
    }
    assert!(frames >= 5, "20 KB came in {frames} frames");
    server.stop().await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_frames_are_checked_against_the_grant() {
    let server = TestServer::start().await;
    let mut socket = open(
        &server,
        &format!("token={}", token("wss", &["news", "sport.*"])),
    )
    .await;
    server.until_open_polls("wss", 1).await;

    // An empty subscribe is answered at once: client-js pings with it.
    let ping = ask(
        &mut socket,
        json!({"type": "subscribe", "channels": [], "ref": 0}),
    )
    .await;
    assert_eq!(ping, json!({"type": "ok", "ref": 0}));
    let ok = ask(
        &mut socket,
        json!({"type": "subscribe", "channels": ["news", "sport.tennis", "sport.golf"], "ref": 1}),
    )
    .await;
    assert_eq!(ok, json!({"type": "ok", "ref": 1}));
    server
        .post_ok(r#"<message channel="news">"headline"</message>"#, 1)
        .await;
    let frame = next_json(&mut socket).await;
    assert_eq!(datas(&frame), vec![json!("headline")]);
    assert_eq!(frame["messages"][0]["channel"], "news");
    server
        .post_ok(r#"<message channel="sport.tennis">"ace"</message>"#, 1)
        .await;
    assert_eq!(datas(&next_json(&mut socket).await), vec![json!("ace")]);

    // Not granted: refused with the reference, nothing joined.
    let refused = ask(
        &mut socket,
        json!({"type": "subscribe", "channels": ["news", "admin"], "ref": "r2"}),
    )
    .await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["ref"], "r2");
    assert_eq!(refused["code"], "channel-forbidden");

    let left = ask(
        &mut socket,
        json!({"type": "unsubscribe", "channels": ["news"], "ref": 3}),
    )
    .await;
    assert_eq!(left, json!({"type": "ok", "ref": 3}));
    server
        .post_ok(r#"<message channel="news">"unheard"</message>"#, 1)
        .await;
    server
        .post_ok(r#"<message channel="sport.golf">"birdie"</message>"#, 1)
        .await;
    assert_eq!(
        datas(&next_json(&mut socket).await),
        vec![json!("birdie")],
        "only the channel still joined"
    );

    // The query's `channels=` joins as a poll's does.
    let mut second = open(
        &server,
        &format!("token={}&channels=news", token("wss2", &["news"])),
    )
    .await;
    server.until_open_polls("wss2", 1).await;
    server
        .post_ok(r#"<message channel="news">"both"</message>"#, 1)
        .await;
    assert_eq!(datas(&next_json(&mut second).await), vec![json!("both")]);
    server.stop().await;
}

#[tokio::test]
async fn publish_frames_need_the_tokens_publish_claim() {
    let server = TestServer::start().await;
    let publisher = token_with(
        json!({"sub": "wsp", "exp": now() + 600, "channels": ["room"], "publish": ["room"]}),
        SECRET,
    );
    let mut socket = open(&server, &format!("token={publisher}")).await;
    let reader = token("reader", &["room"]);
    let (_, first, _) = server
        .poll_raw(&format!("token={reader}&channels=room&timeout=0"))
        .await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();

    let ok = ask(
        &mut socket,
        json!({"type": "publish", "channel": "room", "event": "said", "data": {"text": "hi"}, "ref": 7}),
    )
    .await;
    assert_eq!(ok, json!({"type": "ok", "ref": 7}));
    let (_, got, _) = server
        .poll_raw(&format!("token={reader}&channels=room&since={cursor}"))
        .await;
    assert_eq!(got["messages"][0]["data"], json!({"text": "hi"}));
    assert_eq!(got["messages"][0]["event"], "said");

    let denied = ask(
        &mut socket,
        json!({"type": "publish", "channel": "elsewhere", "data": 1, "ref": 8}),
    )
    .await;
    assert_eq!(denied["code"], "denied", "{denied}");

    // Without a publish claim (and no publish hook) nothing is published.
    let mut plain = open(&server, &format!("token={}", token("wsq", &["room"]))).await;
    let denied = ask(
        &mut plain,
        json!({"type": "publish", "channel": "room", "data": 1, "ref": 9}),
    )
    .await;
    assert_eq!(denied["code"], "denied", "{denied}");
    server.stop().await;
}

#[tokio::test]
async fn a_frame_that_is_not_ours_closes_with_1008() {
    let server = TestServer::start().await;
    let mut socket = open(&server, &format!("token={}", token("wsx", &[]))).await;
    socket.send(Message::text("not json")).await.unwrap();
    assert_eq!(close_of(&mut socket).await.0, 1008);

    let mut socket = open(&server, &format!("token={}", token("wsx", &[]))).await;
    socket
        .send(Message::text(r#"{"type":"teleport"}"#))
        .await
        .unwrap();
    assert_eq!(close_of(&mut socket).await.0, 1008);

    let mut socket = open(&server, &format!("token={}", token("wsx", &[]))).await;
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_of(&mut socket).await.0, 1008);
    server.stop().await;
}

#[tokio::test]
async fn refusals_after_the_upgrade_are_close_codes() {
    let server = TestServer::with(|s| s.limits.max_polls_per_client = 1).await;
    let mut bad = open(&server, "token=nonsense").await;
    assert_eq!(close_of(&mut bad).await, (4003, "invalid-token".into()));

    let mut forbidden = open(
        &server,
        &format!("token={}&channels=admin", token("wsr", &["news"])),
    )
    .await;
    assert_eq!(close_of(&mut forbidden).await.0, 4003);

    let _held = open(&server, &format!("token={}", token("wsr", &[]))).await;
    server.until_open_polls("wsr", 1).await;
    let mut second = open(&server, &format!("token={}", token("wsr", &[]))).await;
    assert_eq!(close_of(&mut second).await, (4029, "too-many-polls".into()));

    // A token that expires while the socket is open: 4001 at `exp`.
    let brief = token_with(json!({"sub": "wse", "exp": now() + 2}), SECRET);
    let mut expiring = open(&server, &format!("token={brief}")).await;
    let (code, reason) = close_of(&mut expiring).await;
    assert_eq!((code, reason.as_str()), (4001, "token-expired"));
    server.stop().await;
}

#[tokio::test]
async fn the_socket_counts_as_an_open_poll_and_a_shutdown_closes_it_with_1001() {
    let server = TestServer::start().await;
    let mut socket = open(&server, &format!("token={}", token("wsc", &[]))).await;
    server.until_open_polls("wsc", 1).await;
    let (_, presence) = server.presence("wsc").await;
    assert_eq!(presence["online"], true, "{presence}");
    assert_eq!(server.stats().await["open_polls"], 1);
    let closing = tokio::spawn(async move { close_of(&mut socket).await });
    server.stop().await;
    assert_eq!(closing.await.unwrap().0, 1001);
}

#[tokio::test]
async fn bad_upgrades_are_refused_over_http() {
    let server = TestServer::start().await;
    let t = token("wsu", &[]);
    let handshake = |extra: &str| format!("GET /ws?token={t} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let no_upgrade = raw(
        &server,
        handshake(&format!("{key}Sec-WebSocket-Version: 13\r\n")),
    )
    .await;
    assert!(no_upgrade.starts_with("HTTP/1.1 400"), "{no_upgrade}");
    assert!(no_upgrade.contains("bad-upgrade") || no_upgrade.contains("400"));

    let old = raw(
        &server,
        handshake(&format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 8\r\n"
        )),
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{old}"
    );

    let no_key = raw(
        &server,
        handshake("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"),
    )
    .await;
    assert!(no_key.starts_with("HTTP/1.1 400"), "{no_key}");

    let post = raw(
        &server,
        format!("POST /ws?token={t} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let head = raw(
        &server,
        format!("HEAD /ws?token={t} HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    // None of it opened anything.
    assert_eq!(server.stats().await["open_polls"], 0);
    let (_, presence) = server.presence("wsu").await;
    assert_ne!(presence["online"], true, "{presence}");

    let good = raw(
        &server,
        handshake(&format!(
            "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\n"
        )),
    )
    .await;
    assert!(good.starts_with("HTTP/1.1 101"), "{good}");
    // RFC 6455 §1.3's example key and its accept value.
    assert!(
        good.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{good}"
    );
    server.stop().await;
}

/// A socket whose reader stalls is cut by `send_timeout`, like a poll: its
/// connection closes and it stops counting as an open poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_reader_is_cut_by_send_timeout() {
    let server = TestServer::with(|s| {
        s.limits.send_timeout = Duration::from_secs(2);
        s.limits.max_payload_bytes = 64 << 10;
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stream = socket.connect(server.public).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token("wsslow", &[])
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    server.until_open_polls("wsslow", 1).await;
    let payload = format!("\"{}\"", "x".repeat(60_000));
    for _ in 0..100 {
        server
            .post_ok(&format!(r#"<message to="wsslow">{payload}</message>"#), 1)
            .await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.stats().await["open_polls"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled socket still counts after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_disconnect_sends_a_last_frame_and_closes_with_1000() {
    let server = TestServer::start().await;
    let mut socket = open(&server, &format!("token={}", token("wsd", &[]))).await;
    server.until_open_polls("wsd", 1).await;
    server.post_ok(r#"<disconnect client="wsd"/>"#, 1).await;
    let last = next_json(&mut socket).await;
    assert_eq!(last["disconnected"], true, "{last}");
    assert_eq!(last["messages"], json!([]));
    assert_eq!(close_of(&mut socket).await, (1000, "disconnected".into()));
    server.until_total_open_polls(0).await;
    server.stop().await;
}

/// A WebSocket is not subject to CORS in the browser: the server checks
/// `Origin` itself. The site's own pages (the origin of the `Host` they
/// connect to), origins in `cors_origins` and non-browser clients (no
/// `Origin`) upgrade; a page elsewhere gets `403 cors-forbidden`.
#[tokio::test]
async fn an_upgrade_from_another_origin_is_refused_unless_cors_origins_lists_it() {
    let server =
        TestServer::with(|s| s.public.cors_origins = vec!["https://app.example".into()]).await;
    let t = token("wso", &[]);
    let upgrade = |host: &str, origin: Option<&str>| {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        format!(
            "GET /ws?token={t} HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let evil = raw(
        &server,
        upgrade("push.example", Some("https://evil.example")),
    )
    .await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(evil.contains("cors-forbidden"), "{evil}");
    let other_port = raw(
        &server,
        upgrade("push.example:8480", Some("http://push.example:9999")),
    )
    .await;
    assert!(other_port.starts_with("HTTP/1.1 403"), "{other_port}");
    for (host, origin) in [
        ("push.example", Some("https://app.example")),
        ("push.example:8480", Some("http://push.example:8480")),
        // A proxy passing `$host` drops the port.
        ("push.example", Some("http://push.example:8080")),
        ("push.example", None),
    ] {
        let reply = raw(&server, upgrade(host, origin)).await;
        assert!(
            reply.starts_with("HTTP/1.1 101"),
            "{host} {origin:?}: {reply}"
        );
    }
    server.stop().await;
}
