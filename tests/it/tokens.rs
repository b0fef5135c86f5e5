//! Channel grants in tokens: `?channels=` subscribes within the grant.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{cursor, datas, now, token, token_with, TestServer, SECRET};

#[tokio::test]
async fn a_token_grant_lets_the_browser_subscribe_itself() {
    let server = TestServer::start().await;
    let jwt = token("vera", &["room:*", "news"]);
    let (status, first, _) = server
        .poll_raw(&format!("token={jwt}&channels=room:9,news&timeout=0"))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let held = server.spawn_poll(format!(
        "/poll?token={jwt}&since={}&timeout=5",
        cursor(&first)
    ));
    server.until_open_polls("vera", 1).await;
    server
        .post_ok(
            r#"<message channel="room:9" event="chat">{"t": 1}</message>"#,
            1,
        )
        .await;
    let reply = held.await.unwrap();
    assert_eq!(datas(&reply), vec![json!({"t": 1})]);
    assert_eq!(reply["messages"][0]["channel"], "room:9");
    server
        .post_ok(r#"<message channel="news">"n"</message>"#, 1)
        .await;
    server
        .post_ok(
            r#"<message channel="room:10">"not subscribed"</message>"#,
            1,
        )
        .await;
    let next = server
        .poll("vera", &format!("since={}", cursor(&reply)))
        .await;
    assert_eq!(datas(&next), vec![json!("n")]);
}

#[tokio::test]
async fn grants_are_exact_names_or_prefixes() {
    let server = TestServer::start().await;
    for (grants, channel, status) in [
        (vec!["*"], "anything/at:all", StatusCode::OK),
        (vec!["room:*"], "room:", StatusCode::OK),
        (vec!["room:*"], "roomy", StatusCode::FORBIDDEN),
        (vec!["news"], "news2", StatusCode::FORBIDDEN),
        (vec![], "news", StatusCode::FORBIDDEN),
    ] {
        let (got, body, _) = server
            .poll_raw(&format!(
                "token={}&channels={channel}&timeout=0",
                token("w", &grants)
            ))
            .await;
        assert_eq!(got, status, "{grants:?} {channel}: {body}");
    }
    let bad_grant = token_with(
        json!({"sub": "w", "exp": now() + 60, "channels": ["bad grant"]}),
        SECRET,
    );
    let (got, _, _) = server
        .poll_raw(&format!("token={bad_grant}&timeout=0"))
        .await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_prefix_grant_cannot_subscribe_without_end() {
    let server = TestServer::with(|s| s.limits.max_channels_per_client = 3).await;
    let jwt = token("greedy", &["room:*"]);
    let (ok, _, _) = server
        .poll_raw(&format!(
            "token={jwt}&channels=room:1,room:2,room:3&timeout=0"
        ))
        .await;
    assert_eq!(ok, StatusCode::OK);
    let (over, body, _) = server
        .poll_raw(&format!("token={jwt}&channels=room:4&timeout=0"))
        .await;
    assert_eq!(
        (over, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-request")),
        "{body}"
    );
    let (status, text) = server
        .post(r#"<subscribe client="greedy" channel="room:5"/>"#)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains(r#"code="too-large""#));
    assert_eq!(server.stats().await["subscriptions"], 3);
}

/// `POST /token` answers as `Accept` asks: JSON, the bare token, or XML by
/// default; each token works for a poll.
#[tokio::test]
async fn post_token_honours_accept() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let mint = |accept: Option<&'static str>| {
        let mut request = http.post(server.ingest_url("/token?client=acc&channel=room"));
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        request.send()
    };
    let json = mint(Some("application/json")).await.unwrap();
    assert_eq!(json.headers()["content-type"], "application/json");
    let json: Value = json.json().await.unwrap();
    assert!(json["expires"].as_u64().unwrap() > now());
    let plain = mint(Some("text/plain")).await.unwrap();
    assert!(plain.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let plain = plain.text().await.unwrap();
    let xml = mint(None).await.unwrap().text().await.unwrap();
    assert!(xml.starts_with("<token expires="), "{xml}");
    for token in [json["token"].as_str().unwrap(), plain.as_str()] {
        let (status, _, _) = server
            .poll_raw(&format!("token={token}&channels=room&timeout=0"))
            .await;
        assert_eq!(status, 200);
    }
}
