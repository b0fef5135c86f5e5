//! `X-Content-Type-Options: nosniff` on every reply of the public port, and
//! JSONP callbacks that are plain identifiers only.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{token, TestServer};

async fn server() -> TestServer {
    TestServer::with(|s| {
        s.bayeux.enabled = true;
        s.public.cors_origins = vec!["https://app.example".into()];
    })
    .await
}

fn nosniff(what: &str, headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "{what}: {headers:?}"
    );
}

#[tokio::test]
async fn every_public_reply_says_nosniff() {
    let server = server().await;
    let http = &server.http;
    let grant = token("ns", &[]);
    let gets = [
        format!("/poll?timeout=0&token={grant}"),
        "/poll".to_owned(),
        "/cometbox.js".to_owned(),
        "/health".to_owned(),
        "/nowhere".to_owned(),
        "/bayeux?jsonp=cb".to_owned(),
    ];
    for path in gets {
        let reply = http.get(server.public_url(&path)).send().await.unwrap();
        nosniff(&path, reply.headers());
    }
    let stream = http
        .get(server.public_url(&format!("/events?token={grant}")))
        .send()
        .await
        .unwrap();
    nosniff("/events", stream.headers());
    drop(stream);
    let bayeux = http
        .post(server.public_url("/bayeux"))
        .header("content-type", "application/json")
        .body(json!([{"channel": "/meta/connect", "clientId": "x"}]).to_string())
        .send()
        .await
        .unwrap();
    nosniff("POST /bayeux", bayeux.headers());
    for path in ["/poll", "/bayeux"] {
        let preflight = http
            .request(reqwest::Method::OPTIONS, server.public_url(path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        nosniff(&format!("OPTIONS {path}"), preflight.headers());
    }
    // A head refused before routing (the connection's own error reply).
    let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
    raw.write_all(b"GET /poll HTTP/1.1\r\nFolded: a\r\n b\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        raw.read_to_string(&mut reply),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("x-content-type-options: nosniff\r\n"),
        "{reply}"
    );
}

#[tokio::test]
async fn jsonp_callbacks_are_plain_identifiers() {
    let server = server().await;
    let message = percent_encoding::utf8_percent_encode(
        &json!([{"channel": "/meta/connect", "clientId": "x"}]).to_string(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let call = |callback: String| {
        let url = server.public_url(&format!("/bayeux?message={message}&jsonp={callback}"));
        let http = server.http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    for good in ["cb", "_cometd_cb_7", "$jq1234", "a".repeat(64).as_str()] {
        assert_eq!(call(good.to_owned()).await, 200, "{good}");
    }
    for bad in [
        "location.assign",
        "constructor.constructor",
        "_cometd.cb_7",
        "a.b",
        "1a",
        "a%20b",
        "a-b",
        "",
        "a".repeat(65).as_str(),
    ] {
        assert_eq!(call(bad.to_owned()).await, 400, "{bad:?}");
    }
}
