//! `/bayeux` over raw HTTP: handshake, subscribe (wildcards too), publish,
//! connect, acknowledgements, lapsed sessions, callback-polling, CORS and
//! hostile requests. The hooks' part is in hooks.rs; the real CometD and
//! Faye clients run in tests/bayeux/.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bayeux_client::{deliveries, BayeuxClient};
use crate::helpers::{now, token, token_with, wait_until, TestServer, SECRET};

async fn server() -> TestServer {
    server_with(|_| {}).await
}

async fn server_with(tweak: impl FnOnce(&mut cometbox::config::Settings)) -> TestServer {
    TestServer::with(|s| {
        s.bayeux.enabled = true;
        s.public.cors_origins = vec!["https://app.example".into()];
        tweak(s);
    })
    .await
}

/// A token granting `channels` and the `publish` claim.
fn publisher(client: &str, channels: &[&str], publish: &[&str]) -> String {
    token_with(
        json!({"sub": client, "exp": now() + 600, "channels": channels, "publish": publish}),
        SECRET,
    )
}

/// A page on `/chat/demo` that read message 1; message 2 is posted after
/// its last connect.
async fn read_one_then_miss_one(server: &TestServer, grant: &str) -> BayeuxClient {
    let mut page = BayeuxClient::with_token(server, grant).await;
    page.subscribe(json!("/chat/demo")).await;
    server
        .post_ok(r#"<message channel="/chat/demo">1</message>"#, 1)
        .await;
    assert_eq!(deliveries(&page.connect(0).await.0).len(), 1);
    server
        .post_ok(r#"<message channel="/chat/demo">2</message>"#, 1)
        .await;
    page
}

#[tokio::test]
async fn the_endpoint_is_off_unless_enabled() {
    let server = TestServer::start().await;
    let reply = server
        .http
        .post(server.public_url("/bayeux"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
}

#[tokio::test]
async fn a_handshake_needs_a_valid_token_and_names_its_client() {
    let server = server().await;
    let refused = BayeuxClient::handshake_reply(&server, json!({})).await;
    assert_eq!(refused["successful"], false);
    assert_eq!(
        refused["error"],
        "401::a token is required in ext.cometbox.token"
    );
    assert_eq!(refused["advice"]["reconnect"], "none");
    let bad =
        json!({"cometbox": {"token": token_with(json!({"sub": "a", "exp": now() + 60}), "other")}});
    let refused = BayeuxClient::handshake_reply(&server, bad).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("401::invalid-token"),
        "{refused}"
    );
    let websocket_only = json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
        "supportedConnectionTypes": ["websocket"]}]);
    let (_, refused) = BayeuxClient::post(&server, websocket_only).await;
    assert!(
        refused[0]["error"].as_str().unwrap().starts_with("406::"),
        "{refused}"
    );
    assert_eq!(
        refused[0]["supportedConnectionTypes"],
        json!([
            "long-polling",
            "cross-origin-long-polling",
            "callback-polling"
        ])
    );

    let ok =
        BayeuxClient::handshake_reply(&server, json!({"cometbox": {"token": token("alice", &[])}}))
            .await;
    assert_eq!(ok["successful"], true);
    assert_eq!(ok["version"], "1.0");
    assert_eq!(ok["id"], "1", "the id is echoed");
    assert_eq!(ok["advice"]["reconnect"], "retry");
    assert_eq!(ok["advice"]["timeout"], 2000, "the poll timeout");
    assert!(ok["clientId"].as_str().unwrap().len() >= 32);
    assert_eq!(server.stats().await["bayeux_sessions"], 1);
    let metrics = server.metrics().await;
    assert!(metrics.contains("cometbox_bayeux_sessions 1"), "{metrics}");
    let (status, presence) = server.presence("alice").await;
    assert_eq!(status, 200, "the token's client exists: {presence}");
}

#[tokio::test]
async fn subscriptions_follow_the_grant_and_wildcards_deliver_each_message_once() {
    let server = server_with(|s| s.limits.max_channels_per_client = 8).await;
    let mut page = BayeuxClient::with_token(&server, &token("alice", &["/chat/*"])).await;
    let refused = page.subscribe(json!("/news")).await;
    assert_eq!(refused["successful"], false);
    assert_eq!(
        refused["error"],
        "403::the token does not allow channel /news"
    );
    assert_eq!(refused["subscription"], "/news");
    let ok = page
        .subscribe(json!(["/chat/*", "/chat/**", "/chat/demo"]))
        .await;
    assert_eq!(ok["successful"], true, "{ok}");
    assert_eq!(
        ok["subscription"],
        json!(["/chat/*", "/chat/**", "/chat/demo"])
    );
    assert_eq!(
        server.presence("alice").await.1["channels"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    server
        .post_ok(r#"<message channel="/chat/demo">1</message>"#, 1)
        .await;
    server
        .post_ok(r#"<message channel="/chat/room/7">2</message>"#, 1)
        .await;
    server
        .post_ok(r#"<message channel="/news">3</message>"#, 1)
        .await;
    let (messages, own) = page.connect(0).await;
    assert_eq!(own["successful"], true);
    assert_eq!(
        deliveries(&messages),
        vec![
            ("/chat/demo".into(), json!(1)),
            ("/chat/room/7".into(), json!(2))
        ]
    );
    let ids: Vec<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_ne!(ids[0], ids[1], "each message has its own id (a cursor)");

    let left = page
        .one(json!({"channel": "/meta/unsubscribe", "subscription": "/chat/**"}))
        .await;
    assert_eq!(left["successful"], true, "{left}");
    server
        .post_ok(r#"<message channel="/chat/room/7">4</message>"#, 1)
        .await;
    server
        .post_ok(r#"<message channel="/chat/x">5</message>"#, 1)
        .await;
    let (messages, _) = page.connect(0).await;
    assert_eq!(
        deliveries(&messages),
        vec![("/chat/x".into(), json!(5))],
        "/chat/* is one level"
    );
    let again = page.subscribe(json!("/chat/**")).await;
    assert_eq!(again["successful"], true, "a page may join what it left");
}

#[tokio::test]
async fn a_publish_reaches_bayeux_and_poll_members_when_the_token_allows() {
    let server = server().await;
    let mut writer =
        BayeuxClient::with_token(&server, &publisher("wendy", &["/chat/*"], &["/chat/*"])).await;
    let mut reader = BayeuxClient::with_token(&server, &token("rita", &["/chat/*"])).await;
    assert_eq!(
        reader.subscribe(json!("/chat/**")).await["successful"],
        true
    );
    // A /poll client on the same channel.
    let poll = server.spawn_poll(format!(
        "/poll?token={}&channels=/chat/demo&timeout=5",
        token("paul", &["/chat/demo"])
    ));
    server.until_open_polls("paul", 1).await;

    let ok = writer.publish("/chat/demo", json!({"text": "hello"})).await;
    assert_eq!(ok["successful"], true, "{ok}");
    let polled = poll.await.unwrap();
    assert_eq!(polled["messages"][0]["data"], json!({"text": "hello"}));
    assert_eq!(polled["messages"][0]["channel"], "/chat/demo");
    let (messages, _) = reader.connect(0).await;
    assert_eq!(
        deliveries(&messages),
        vec![("/chat/demo".into(), json!({"text": "hello"}))]
    );

    let denied = reader.publish("/chat/demo", json!("no claim")).await;
    assert_eq!(denied["successful"], false);
    assert_eq!(
        denied["error"],
        "403::the token does not allow publishing to /chat/demo"
    );
    let outside = writer.publish("/news", json!(1)).await;
    assert_eq!(outside["successful"], false, "outside the publish claim");
    let pattern = writer.publish("/chat/*", json!(1)).await;
    assert!(
        pattern["error"].as_str().unwrap().starts_with("400::"),
        "{pattern}"
    );
    let service = writer.publish("/service/echo", json!(1)).await;
    assert!(
        service["error"].as_str().unwrap().contains("[hooks]"),
        "{service}"
    );
    let (messages, _) = reader.connect(0).await;
    assert!(
        messages.is_empty(),
        "nothing refused was delivered: {messages:?}"
    );
}

#[tokio::test]
async fn a_held_connect_answers_when_a_message_arrives() {
    let server = server().await;
    let mut page = BayeuxClient::with_token(&server, &token("hana", &["/chat/*"])).await;
    page.subscribe(json!("/chat/demo")).await;
    // Faye hands a page only what it subscribed to: cometbox's own
    // channels are always answered, and join nothing.
    let own = page
        .subscribe(json!(["/cometbox/direct", "/cometbox/reset"]))
        .await;
    assert_eq!(own["successful"], true, "{own}");
    let started = Instant::now();
    let held = tokio::spawn(async move { page.connect(10_000).await });
    server.until_open_polls("hana", 1).await;
    server
        .post_ok(r#"<message to="hana" event="notice">{"n":1}</message>"#, 1)
        .await;
    let (messages, own) = held.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    assert_eq!(own["successful"], true);
    assert_eq!(messages[0]["channel"], "/cometbox/direct");
    assert_eq!(messages[0]["data"], json!({"n": 1}));
    assert_eq!(messages[0]["ext"]["cometbox"]["event"], "notice");
}

#[tokio::test]
async fn an_unknown_or_ended_session_is_told_to_handshake_again() {
    let server = server().await;
    let (_, reply) = BayeuxClient::post(
        &server,
        json!([{"channel": "/meta/connect", "clientId": "nope", "id": "9"}]),
    )
    .await;
    assert_eq!(
        reply[0],
        json!({"channel": "/meta/connect", "successful": false, "clientId": "nope", "id": "9",
               "error": "402::session_unknown", "advice": {"reconnect": "handshake", "interval": 0}})
    );
    let mut page = BayeuxClient::with_token(&server, &token("ivan", &[])).await;
    let id = page.client_id.clone();
    // The same session's disconnect, sent while its connect is held.
    let mut other = BayeuxClient::with_token(&server, &token("ivan", &[])).await;
    other.client_id = id;
    let held = tokio::spawn(async move { page.connect(10_000).await });
    server.until_open_polls("ivan", 1).await;
    let bye = other.one(json!({"channel": "/meta/disconnect"})).await;
    assert_eq!(bye["successful"], true);
    let (_, own) = held.await.unwrap();
    assert_eq!(
        own["error"], "402::session_unknown",
        "the held connect ends: {own}"
    );
    assert_eq!(other.connect(0).await.1["error"], "402::session_unknown");
}

#[tokio::test]
async fn a_newer_connect_answers_the_older_one() {
    let server = server().await;
    let mut page = BayeuxClient::with_token(&server, &token("nora", &[])).await;
    let mut same = BayeuxClient::with_token(&server, &token("nora", &[])).await;
    same.client_id = page.client_id.clone();
    let started = Instant::now();
    let older = tokio::spawn(async move { page.connect(10_000).await });
    server.until_open_polls("nora", 1).await;
    let newer = tokio::spawn(async move { same.connect(10_000).await });
    let (_, own) = older.await.unwrap();
    assert_eq!(own["successful"], true);
    assert!(started.elapsed() < Duration::from_secs(5));
    server
        .post_ok(r#"<message to="nora">"late"</message>"#, 1)
        .await;
    let (messages, _) = newer.await.unwrap();
    assert_eq!(
        deliveries(&messages),
        vec![("/cometbox/direct".into(), json!("late"))]
    );
}

#[tokio::test]
async fn acknowledged_batches_are_sent_again_until_acknowledged() {
    let server = server().await;
    let ext = json!({"cometbox": {"token": token("ada", &[])}, "ack": true});
    let reply = BayeuxClient::handshake_reply(&server, ext.clone()).await;
    assert_eq!(reply["ext"]["ack"]["enabled"], true);
    let start = reply["ext"]["ack"]["batch"].as_u64().unwrap();
    let mut page = BayeuxClient::handshake(&server, ext).await;
    server.post_ok(r#"<message to="ada">1</message>"#, 1).await;
    let (messages, own) = page.connect_with(0, Some(json!({"ack": start}))).await;
    assert_eq!(deliveries(&messages).len(), 1);
    let batch = own["ext"]["ack"].as_u64().unwrap();
    assert!(batch > start);
    // The reply was lost: the client acknowledges the old batch again.
    let (again, _) = page.connect_with(0, Some(json!({"ack": start}))).await;
    assert_eq!(deliveries(&again), deliveries(&messages), "sent again");
    let (none, _) = page.connect_with(0, Some(json!({"ack": batch}))).await;
    assert!(none.is_empty(), "acknowledged: not sent again");
}

#[tokio::test]
async fn a_lapsed_session_resumes_where_it_stopped_after_a_new_handshake() {
    let server = server_with(|s| s.bayeux.session_timeout = Duration::from_millis(300)).await;
    let grant = token("lena", &["/chat/*"]);
    // The page's network goes away after message 1; meanwhile 2 comes.
    let mut page = read_one_then_miss_one(&server, &grant).await;
    wait_until("the session lapses", Duration::from_secs(10), || async {
        server.stats().await["bayeux_sessions"] == 0
    })
    .await;
    let (_, own) = page.connect(0).await;
    assert_eq!(own["error"], "402::session_unknown");
    assert_eq!(own["advice"]["reconnect"], "handshake");
    let mut back = BayeuxClient::with_token(&server, &grant).await;
    let (messages, _) = back.connect(0).await;
    assert_eq!(
        deliveries(&messages),
        vec![("/chat/demo".into(), json!(2))],
        "nothing lost, nothing repeated"
    );
    // A new session starts after what any reply carried: what was accepted
    // before the page came is delivered, what was delivered is not again.
    server
        .post_ok(r#"<message to="otto">"first"</message>"#, 1)
        .await;
    let mut fresh = BayeuxClient::with_token(&server, &token("otto", &[])).await;
    let (messages, _) = fresh.connect(0).await;
    assert_eq!(
        deliveries(&messages),
        vec![("/cometbox/direct".into(), json!("first"))]
    );
    let mut reloaded = BayeuxClient::with_token(&server, &token("otto", &[])).await;
    assert!(
        reloaded.connect(0).await.0.is_empty(),
        "delivered history is not replayed"
    );
}

#[tokio::test]
async fn callback_polling_and_form_bodies_carry_batches() {
    let server = server().await;
    let page = BayeuxClient::with_token(&server, &token("carl", &[])).await;
    server
        .post_ok(r#"<message to="carl">"hi"</message>"#, 1)
        .await;
    let batch = json!([{"channel": "/meta/connect", "clientId": page.client_id, "id": "5",
        "connectionType": "callback-polling", "advice": {"timeout": 0}}]);
    let query = format!(
        "/bayeux/connect?jsonp=_cometd_cb_7&message={}",
        percent_encoding::utf8_percent_encode(
            &batch.to_string(),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let reply = server
        .http
        .get(server.public_url(&query))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let text = reply.text().await.unwrap();
    let inner = text
        .strip_prefix("/**/_cometd_cb_7(")
        .and_then(|t| t.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a callback call: {text}"));
    let replies: Value = serde_json::from_str(inner).unwrap();
    assert_eq!(replies[0]["data"], "hi");
    assert_eq!(replies[1]["id"], "5");

    let bad = server
        .http
        .get(server.public_url("/bayeux?jsonp=alert(1)&message=[]"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "a callback name that is script");

    let form = format!(
        "message={}",
        percent_encoding::utf8_percent_encode(
            &json!([{"channel": "/meta/connect", "clientId": page.client_id, "advice": {"timeout": 0}}]).to_string(),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let reply = server
        .http
        .post(server.public_url("/bayeux"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let replies: Value = reply.json().await.unwrap();
    assert_eq!(replies[0]["successful"], true, "{replies}");
}

#[tokio::test]
async fn credentialed_cors_echoes_the_configured_origin() {
    let server = server_with(|s| s.public.cors_origins = vec!["*".into()]).await;
    let preflight = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            server.public_url("/bayeux/handshake"),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let h = preflight.headers();
    assert_eq!(
        h["access-control-allow-origin"], "https://shop.example",
        "never * with credentials"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let reply = server
        .http
        .post(server.public_url("/bayeux"))
        .header("origin", "https://shop.example")
        .header("content-type", "application/json")
        .body(json!([{"channel": "/meta/connect", "clientId": "x"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(reply.headers()["access-control-allow-credentials"], "true");
}

#[tokio::test]
async fn hostile_requests_are_refused_with_their_codes() {
    let server = server_with(|s| {
        s.limits.max_body_bytes = 8192;
        s.limits.max_payload_bytes = 4096;
        s.limits.request_timeout = Duration::from_secs(1);
    })
    .await;
    let post = |body: String, content_type: &'static str| {
        let server = &server;
        async move {
            let reply = server
                .http
                .post(server.public_url("/bayeux"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post("x".repeat(10_000), "application/json").await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too-large")));
    let (status, body) = post("{not json".into(), "application/json").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid-request"))
    );
    let (status, _) = post("[]".into(), "application/json").await;
    assert_eq!(status, 400, "an empty batch");
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let (status, _) = post(deep, "application/json").await;
    assert_eq!(status, 400, "nesting past serde_json's limit");
    let many = json!((0..300)
        .map(|_| json!({"channel": "/x"}))
        .collect::<Vec<_>>());
    let (status, _) = post(many.to_string(), "application/json").await;
    assert_eq!(status, 400, "more than 256 messages");
    let get = server
        .http
        .get(server.public_url("/bayeux"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400, "a GET without message");

    // A chunked body (Node's http.request, so CometD's Node adapter) is
    // decoded, in chunks split anywhere, extensions and trailers ignored;
    // the connection stays open for the next request.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let batch = json!([{"channel": "/meta/connect", "clientId": "x"}]).to_string();
    let (one, two) = batch.split_at(7);
    let chunked = format!(
        "POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};ext=1\r\n{one}\r\n{:x}\r\n{two}\r\n0\r\nX-Trailer: t\r\n\r\n",
        one.len(),
        two.len()
    );
    let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
    for piece in chunked.as_bytes().chunks(5) {
        raw.write_all(piece).await.unwrap();
    }
    raw.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_string(&mut reply))
        .await
        .expect("both answered, then closed")
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("402::session_unknown"),
        "the batch was read: {reply}"
    );
    assert!(
        reply.contains("\r\n\r\nok\n"),
        "the next request too: {reply}"
    );

    // Chunks past max_body_bytes (413), a bad size line (400): answered,
    // then the connection closes.
    let big = "x".repeat(5000);
    let too_big = format!(
        "POST /bayeux HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{0:x}\r\n{big}\r\n{0:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    for (request, status) in [
        (too_big, "413"),
        (
            "POST /bayeux HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(),
            "400",
        ),
    ] {
        let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
        raw.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut reply))
            .await
            .expect("closed after the reply")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}")), "{reply}");
    }
    let gzip = "POST /bayeux HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
    let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
    raw.write_all(gzip.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut reply)).await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 501"),
        "a coding that frames nothing"
    );

    // A body that never finishes: 408 after request_timeout, not a hang.
    let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
    raw.write_all(b"POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(30), raw.read_to_string(&mut reply))
        .await
        .expect("answered within request_timeout")
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // Keep-alive after a whole body: a second request on the connection.
    let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let body = json!([{"channel": "/meta/connect", "clientId": "x"}]).to_string();
    let one = format!("POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    raw.write_all(format!("{one}{one}").as_bytes())
        .await
        .unwrap();
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while seen.matches("402::session_unknown").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut chunk))
            .await
            .expect("both pipelined requests answered")
            .unwrap();
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

/// Sessions live in memory: a restart forgets them, and every client is
/// told to handshake again. With the disk store its mailbox is still there,
/// and the new session starts after what a reply carried: what was posted
/// around the restart arrives (what the restart made it repeat may too).
#[tokio::test]
async fn after_a_restart_of_the_disk_store_a_new_handshake_loses_nothing() {
    let dir = crate::helpers::scratch_dir("bayeux-disk");
    let on_disk = |dir: std::path::PathBuf| {
        move |s: &mut cometbox::config::Settings| {
            s.bayeux.enabled = true;
            s.store.kind = cometbox::store::StoreKind::Disk;
            s.store.path = dir;
        }
    };
    let server = TestServer::with(on_disk(dir.clone())).await;
    let grant = token("dora", &["/chat/*"]);
    let page = read_one_then_miss_one(&server, &grant).await;
    server.stop().await;

    let server = TestServer::with(on_disk(dir.clone())).await;
    server
        .post_ok(r#"<message channel="/chat/demo">3</message>"#, 1)
        .await;
    let mut stale = BayeuxClient::with_token(&server, &grant).await;
    stale.client_id = page.client_id.clone();
    let (_, own) = stale.connect(0).await;
    assert_eq!(
        own["error"], "402::session_unknown",
        "sessions do not survive"
    );
    let mut back = BayeuxClient::with_token(&server, &grant).await;
    let (messages, _) = back.connect(0).await;
    let got: Vec<Value> = deliveries(&messages).into_iter().map(|(_, d)| d).collect();
    assert!(
        got.ends_with(&[json!(2), json!(3)]),
        "the messages posted around the restart arrive: {got:?}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A session lives no longer than its token: at `exp` a connect, a
/// subscribe and a publish are refused with `401::token-expired` and the
/// advice to handshake again, and the session is gone.
#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let server = server().await;
    let exp = now() + 2;
    let short = token_with(
        json!({"sub": "eve", "exp": exp, "channels": ["/chat/*"], "publish": ["/chat/*"]}),
        SECRET,
    );
    let mut page = BayeuxClient::with_token(&server, &short).await;
    assert_eq!(page.subscribe(json!("/chat/a")).await["successful"], true);
    // A connect held past `exp` answers at `exp`, not at its timeout.
    let held = Instant::now();
    let (_, reply) = page.connect(10_000).await;
    assert_eq!(reply["successful"], true, "{reply}");
    assert!(held.elapsed() < Duration::from_secs(8), "held past exp");
    wait_until("the token expired", Duration::from_secs(5), || async {
        now() > exp
    })
    .await;
    let refused = page.publish("/chat/a", json!(1)).await;
    assert_eq!(refused["successful"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("401::token-expired"),
        "{refused}"
    );
    assert_eq!(refused["advice"]["reconnect"], "handshake", "{refused}");
    // The session is gone: what follows is told to handshake as well.
    let refused = page.subscribe(json!("/chat/b")).await;
    assert_eq!(refused["successful"], false, "{refused}");
    assert_eq!(refused["advice"]["reconnect"], "handshake", "{refused}");
    let mut again = BayeuxClient::with_token(&server, &token("eve", &["/chat/*"])).await;
    let (_, reply) = again.connect(0).await;
    assert_eq!(reply["successful"], true, "a fresh token works: {reply}");
}

/// `/cometbox/*` and `/meta/*` carry the server's own messages: no token
/// may publish there (a publish to `/cometbox/direct` looked exactly like a
/// backend's direct message to every `/**` subscriber), and `POST /token`
/// refuses such publish grants.
#[tokio::test]
async fn the_server_s_own_channels_cannot_be_published_to() {
    let server = server().await;
    let mut writer = BayeuxClient::with_token(&server, &publisher("mal", &["/*"], &["*"])).await;
    let mut reader = BayeuxClient::with_token(&server, &token("rita", &["/*"])).await;
    assert_eq!(reader.subscribe(json!("/**")).await["successful"], true);
    for channel in ["/cometbox/direct", "/cometbox/reset"] {
        let refused = writer.publish(channel, json!({"fake": true})).await;
        assert_eq!(refused["successful"], false, "{channel}: {refused}");
        assert!(
            refused["error"].as_str().unwrap().starts_with("403::"),
            "{refused}"
        );
    }
    let (messages, _) = reader.connect(0).await;
    assert!(messages.is_empty(), "{messages:?}");
    let client = reqwest::Client::new();
    for grant in ["/cometbox/*", "/cometbox/direct", "/meta/*"] {
        let answer = client
            .post(server.ingest_url(&format!("/token?client=mal&publish={grant}")))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{grant}");
        let body = answer.text().await.unwrap();
        assert!(body.contains("reserved"), "{body}");
    }
}
