//! The ingest port: commands, atomic batches, every error code, the key,
//! `/token`, `/stats`, `/clients/<id>`, `/health`, and a Unix socket.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{datas, token, TestServer};

/// Asserts an XML error reply with its status, code and (if given) line.
fn assert_error(got: &(StatusCode, String), status: StatusCode, code: &str, line: Option<usize>) {
    assert_eq!(got.0, status, "{}", got.1);
    assert!(
        got.1.starts_with(&format!(r#"<error code="{code}""#)),
        "{}",
        got.1
    );
    if let Some(line) = line {
        assert!(got.1.contains(&format!(r#" line="{line}""#)), "{}", got.1);
    }
}

#[tokio::test]
async fn the_contract_example_batch_applies_in_order() {
    let server = TestServer::start().await;
    server
        .post_ok(r#"<subscribe client="alice" channel="room:7"/>"#, 1)
        .await;
    server
        .post_ok(
            r#"<batch>
  <message to="alice" event="notice">{"text": "Your export is ready"}</message>
  <message channel="room:42" event="chat">{"from": "bob", "text": "hello"}</message>
  <message to="alice" type="text">plain text, delivered as a JSON string</message>
  <subscribe client="alice" channel="room:42"/>
  <unsubscribe client="alice" channel="room:7"/>
  <disconnect client="mallory"/>
</batch>"#,
            6,
        )
        .await;
    server
        .post_ok(
            r#"<message channel="room:42" event="chat">{"from": "bob", "text": "again"}</message>"#,
            1,
        )
        .await;
    server
        .post_ok(r#"<message channel="room:7">"not any more"</message>"#, 1)
        .await;
    let reply = server.poll("alice", "").await;
    assert_eq!(
        datas(&reply),
        vec![
            json!({"text": "Your export is ready"}),
            json!("plain text, delivered as a JSON string"),
            json!({"from": "bob", "text": "again"})
        ],
        "the first room:42 message came before alice subscribed"
    );
    assert_eq!(reply["messages"][2]["channel"], "room:42");
    assert_eq!(reply["messages"][2]["event"], "chat");
}

#[tokio::test]
async fn escaped_text_cdata_and_unicode_arrive_intact() {
    let server = TestServer::start().await;
    server
        .post_ok(
            "<batch><message to=\"u\" type=\"text\">&lt;b&gt; &amp; &quot;q&quot; &#x1F600; é\u{263A}</message>\
             <message to=\"u\" type=\"text\"><![CDATA[<raw> & ]]]]><![CDATA[> done]]></message>\
             <message to=\"u\" event=\"a &amp; b\">{\"k\": \"\\u0001 line\\nbreak\"}</message></batch>",
            3,
        )
        .await;
    let reply = server.poll("u", "").await;
    assert_eq!(
        datas(&reply),
        vec![
            json!("<b> & \"q\" \u{1F600} é\u{263A}"),
            json!("<raw> & ]]> done"),
            json!({"k": "\u{1} line\nbreak"})
        ]
    );
    assert_eq!(reply["messages"][2]["event"], "a & b");
}

#[tokio::test]
async fn a_rejected_batch_queues_nothing() {
    let server = TestServer::start().await;
    let bad = r#"<batch>
<message to="atom">1</message>
<subscribe client="atom" channel="c"/>
<message to="atom">{"x": }</message>
</batch>"#;
    assert_error(
        &server.post(bad).await,
        StatusCode::BAD_REQUEST,
        "invalid-json",
        Some(4),
    );
    let stats = server.stats().await;
    assert_eq!(
        (
            stats["clients"].as_u64(),
            stats["queued_messages"].as_u64(),
            stats["subscriptions"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let full = TestServer::with(|s| s.limits.max_clients = 2).await;
    let over = r#"<batch><message to="a">1</message><message to="b">1</message><message to="c">1</message></batch>"#;
    assert_error(
        &full.post(over).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        None,
    );
    assert_eq!(full.stats().await["clients"], 0);
}

#[tokio::test]
async fn every_ingest_error_has_its_status_and_code() {
    let server = TestServer::with(|s| {
        s.limits.max_payload_bytes = 100;
        s.limits.max_body_bytes = 1000;
        s.limits.max_batch_commands = 3;
    })
    .await;
    let cases: &[(&str, StatusCode, &str)] = &[
        ("<batch><message to='a'>1</batch>", StatusCode::BAD_REQUEST, "malformed-xml"),
        ("not xml at all", StatusCode::BAD_REQUEST, "malformed-xml"),
        ("<message to='a'>{bad json}</message>", StatusCode::BAD_REQUEST, "invalid-json"),
        ("<message to='a b'>1</message>", StatusCode::BAD_REQUEST, "invalid-id"),
        ("<subscribe client='a' channel='no spaces'/>", StatusCode::BAD_REQUEST, "invalid-id"),
        ("<message>1</message>", StatusCode::BAD_REQUEST, "invalid-request"),
        ("<shout to='a'>1</shout>", StatusCode::BAD_REQUEST, "invalid-request"),
        ("<message to='a' type='yaml'>1</message>", StatusCode::BAD_REQUEST, "invalid-request"),
        ("<batch><disconnect client='a'/><disconnect client='a'/><disconnect client='a'/><disconnect client='a'/></batch>", StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
    ];
    for (xml, status, code) in cases {
        assert_error(&server.post(xml).await, *status, code, None);
    }
    let big_payload = format!("<message to='a' type='text'>{}</message>", "x".repeat(101));
    assert_error(
        &server.post(&big_payload).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        Some(1),
    );
    let big_body = format!("<batch>{}</batch>", " ".repeat(1001));
    assert_error(
        &server.post(&big_body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        None,
    );

    let json = server
        .http
        .post(server.ingest_url("/"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(json
        .text()
        .await
        .unwrap()
        .contains(r#"code="unsupported-media-type""#));
    let form = server
        .http
        .post(server.ingest_url("/"))
        .form(&[("a", "b")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for ok_type in [
        "text/xml",
        "application/xml; charset=utf-8",
        "application/atom+xml",
    ] {
        let reply = server
            .http
            .post(server.ingest_url("/"))
            .header("content-type", ok_type)
            .body("<batch/>")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{ok_type}");
    }
    let untyped = server
        .http
        .post(server.ingest_url("/"))
        .body("<batch/>")
        .send()
        .await
        .unwrap();
    assert_eq!(
        untyped.status(),
        StatusCode::OK,
        "a missing Content-Type is taken as XML"
    );
    assert_eq!(
        server.stats().await["clients"],
        0,
        "no rejected request left anything behind"
    );
}

#[tokio::test]
async fn the_ingest_key_guards_everything_but_health() {
    let server = TestServer::with(|s| s.ingest.key = "k3y".into()).await;
    let post = |auth: Option<&'static str>| {
        let mut request = server
            .http
            .post(server.ingest_url("/"))
            .header("content-type", "application/xml")
            .body("<batch/>");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic k3y"),
        Some("Bearer k3"),
    ] {
        let reply = post(auth).await.unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(reply
            .text()
            .await
            .unwrap()
            .contains(r#"code="unauthorized""#));
    }
    assert_eq!(
        post(Some("Bearer k3y")).await.unwrap().status(),
        StatusCode::OK
    );
    for path in ["/stats", "/clients/a", "/status"] {
        assert_eq!(
            server.get_status(server.ingest_url(path)).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        server
            .http
            .post(server.ingest_url("/token?client=a"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get_status(server.ingest_url("/health")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_endpoint_mints_tokens_the_public_port_accepts() {
    let server = TestServer::start().await;
    let reply = server
        .http
        .post(server.ingest_url("/token"))
        .form(&[
            ("client", "tina"),
            ("ttl", "60"),
            ("channel", "room:*"),
            ("channel", "news"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let body = reply.text().await.unwrap();
    let expires: u64 = body.split('"').nth(1).unwrap().parse().unwrap();
    assert!(
        (crate::helpers::now() + 55..=crate::helpers::now() + 61).contains(&expires),
        "{body}"
    );
    let jwt = body.split('>').nth(1).unwrap().split('<').next().unwrap();
    server
        .post_ok(r#"<message channel="room:1">"via grant"</message>"#, 1)
        .await;
    let (status, subscribed, _) = server
        .poll_raw(&format!("token={jwt}&channels=room:1,news&timeout=0"))
        .await;
    assert_eq!(status, StatusCode::OK, "{subscribed}");
    server
        .post_ok(r#"<message channel="room:1">"after"</message>"#, 1)
        .await;
    let (_, reply, _) = server
        .poll_raw(&format!(
            "token={jwt}&since={}",
            subscribed["cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(datas(&reply), vec![json!("after")]);
    // Query parameters work as well as a form body.
    let by_query = server
        .http
        .post(server.ingest_url("/token?client=q"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    for (form, code) in [
        (vec![("ttl", "60")], "invalid-request"),
        (vec![("client", "no way")], "invalid-id"),
        (vec![("client", "a"), ("ttl", "forever")], "invalid-request"),
        (
            vec![("client", "a"), ("channel", "bad name*")],
            "invalid-id",
        ),
        (vec![("client", "a"), ("colour", "red")], "invalid-request"),
    ] {
        let reply = server
            .http
            .post(server.ingest_url("/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{form:?}");
        assert!(
            reply
                .text()
                .await
                .unwrap()
                .contains(&format!(r#"code="{code}""#)),
            "{form:?}"
        );
    }
}

#[tokio::test]
async fn stats_presence_and_health_report_what_happened() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get_status(server.ingest_url("/health")).await,
        StatusCode::OK
    );
    assert_eq!(
        server.get_status(server.public_url("/health")).await,
        StatusCode::OK
    );
    server.post_ok(r#"<batch><message to="sam">1</message><message to="sam">2</message><subscribe client="sam" channel="news"/></batch>"#, 3).await;
    server.poll("sam", "").await;
    let stats = server.stats().await;
    for key in [
        "clients",
        "open_polls",
        "queued_messages",
        "messages_in",
        "messages_out",
        "uptime_s",
        "channels",
        "subscriptions",
        "connections",
    ] {
        assert!(stats[key].is_u64(), "{key} in {stats}");
    }
    assert_eq!(
        (
            stats["clients"].as_u64(),
            stats["messages_in"].as_u64(),
            stats["messages_out"].as_u64()
        ),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(
        stats["queued_messages"], 2,
        "delivered messages stay retained"
    );
    let (_, presence) = server.presence("sam").await;
    assert_eq!(presence["online"], json!(false));
    assert_eq!(presence["open_polls"], 0);
    assert_eq!(presence["pending_messages"], 2);
    assert_eq!(presence["channels"], json!(["news"]));
    let unknown = server
        .http
        .get(server.ingest_url("/clients/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains(r#"code="not-found""#));
    assert_eq!(server.presence("bad%20id").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn both_listeners_work_on_unix_sockets() {
    use crate::helpers::{post_request, unix_exchange as exchange};
    use cometbox::config::{ListenAddr, Settings};
    use cometbox::listener::Listener;

    let dir = std::env::temp_dir().join(format!("cometbox-it-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (public_path, ingest_path) = (dir.join("public.sock"), dir.join("ingest.sock"));
    let public = Listener::bind(&ListenAddr::Unix(public_path.clone()), 0o600)
        .await
        .unwrap();
    let ingest = Listener::bind(&ListenAddr::Unix(ingest_path.clone()), 0o660)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ingest_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o660
    );
    let mut settings = Settings::default();
    settings.auth.secret = crate::helpers::SECRET.into();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store = cometbox::open_store(&settings).unwrap();
    let server = tokio::spawn(cometbox::run(
        settings,
        store,
        Default::default(),
        cometbox::Listeners { public, ingest },
        shutdown.clone(),
    ));

    let body = r#"<message to="sock">"over a unix socket"</message>"#;
    let posted = exchange(&ingest_path, post_request(body)).await;
    assert!(
        posted.starts_with("HTTP/1.1 200") && posted.ends_with(r#"<ok accepted="1"/>"#),
        "{posted}"
    );
    let polled = exchange(
        &public_path,
        format!(
            "GET /poll?token={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            token("sock", &[])
        ),
    )
    .await;
    assert!(
        polled.starts_with("HTTP/1.1 200") && polled.contains("over a unix socket"),
        "{polled}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(!ingest_path.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}
