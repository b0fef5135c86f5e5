//! `[pusher]`: Pusher's HTTP API on the ingest listener, signed here by
//! hand (HMAC-SHA256 and MD5 from the crates, the string to sign written
//! out as Pusher's HTTP API reference gives it: no code shared with
//! `cometbox::pusher`), its effect read through real `/poll`s.

use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{datas, now, token, TestServer};

const APP: &str = "test-app";
const KEY: &str = "test-key";
const SECRET: &str = "test-secret";

async fn pusher_server() -> TestServer {
    TestServer::with(|s| {
        s.pusher.enabled = true;
        s.pusher.app_id = APP.into();
        s.pusher.key = KEY.into();
        s.pusher.secret = SECRET.into();
        // Exercised below: data over the payload limit, or a body over
        // the body limit, is 413.
        s.limits.max_payload_bytes = 1000;
        s.limits.max_body_bytes = 8192;
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signed query string for `method path` with `params` (already as
/// they go on the wire), `body` and a timestamp.
fn signed_query(
    secret: &str,
    key: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
    timestamp: u64,
) -> String {
    let mut all: Vec<(String, String)> = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        all.push(("body_md5".into(), hex(&Md5::digest(body.as_bytes()))));
    }
    all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all.sort();
    let query = all
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{method}\n{path}\n{query}").as_bytes());
    format!(
        "{query}&auth_signature={}",
        hex(&mac.finalize().into_bytes())
    )
}

/// A correctly signed POST of `body` to `/apps/<app>/<what>`.
async fn post(server: &TestServer, what: &str, body: &Value) -> (StatusCode, String) {
    post_as(server, APP, SECRET, now(), what, &body.to_string()).await
}

async fn post_as(
    server: &TestServer,
    app: &str,
    secret: &str,
    timestamp: u64,
    what: &str,
    body: &str,
) -> (StatusCode, String) {
    let path = format!("/apps/{app}/{what}");
    let query = signed_query(secret, KEY, "POST", &path, &[], body, timestamp);
    let reply = server
        .http
        .post(server.ingest_url(&format!("{path}?{query}")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (reply.status(), reply.text().await.unwrap())
}

/// A correctly signed GET of `/apps/<app>/<what>` with `params`.
async fn get(server: &TestServer, what: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let path = format!("/apps/{APP}/{what}");
    let query = signed_query(SECRET, KEY, "GET", &path, params, "", now());
    let reply = server
        .http
        .get(server.ingest_url(&format!("{path}?{query}")))
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let text = reply.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Subscribes `client` to `channel` through ingest XML.
async fn subscribe(server: &TestServer, client: &str, channel: &str) {
    server
        .post_ok(
            &format!(r#"<subscribe client="{client}" channel="{channel}"/>"#),
            1,
        )
        .await;
}

/// What `client` has waiting, read by a real poll.
async fn messages(server: &TestServer, client: &str) -> Vec<Value> {
    let reply = server.poll(client, "timeout=1").await;
    reply["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_signed_event_reaches_poll_subscribers_of_its_channels() {
    let server = pusher_server().await;
    subscribe(&server, "alice", "my-channel").await;
    subscribe(&server, "bob", "other-channel").await;
    let (status, body) = post(
        &server,
        "events",
        &json!({"name": "my-event", "data": "{\"message\":\"hello\"}", "channels": ["my-channel", "other-channel"]}),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
    for client in ["alice", "bob"] {
        let got = messages(&server, client).await;
        assert_eq!(got.len(), 1, "{client}: {got:?}");
        assert_eq!(got[0]["event"], "my-event");
        assert_eq!(got[0]["data"], json!({"message": "hello"}));
        assert!(got[0].get("exclude").is_none());
    }
    // Data that is not JSON arrives as a string; socket_id as "exclude".
    let (status, _) = post(
        &server,
        "events",
        &json!({"name": "plain", "data": "just text", "channel": "my-channel", "socket_id": "123.456"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let got = messages(&server, "alice").await;
    let last = got.last().unwrap();
    assert_eq!(
        (&last["channel"], &last["data"], &last["exclude"]),
        (&json!("my-channel"), &json!("just text"), &json!("123.456"))
    );
    // A waiting poll with channels= is woken by an event.
    let carol = token("carol", &["live"]);
    let waiting = server.spawn_poll(format!("/poll?token={carol}&channels=live&timeout=5"));
    server.until_open_polls("carol", 1).await;
    let (status, _) = post(
        &server,
        "events",
        &json!({"name": "tick", "data": "1", "channel": "live"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(datas(&reply), vec![json!(1)]);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_is_applied_whole_or_not_at_all() {
    let server = pusher_server().await;
    subscribe(&server, "alice", "a").await;
    subscribe(&server, "alice", "b").await;
    let bad = json!({"batch": [
        {"name": "one", "data": "1", "channel": "a"},
        {"name": "two", "data": "2", "channel": "bad channel"},
    ]});
    let (status, body) = post(&server, "batch_events", &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("batch[1]"), "{body}");
    let bad_socket = json!({"batch": [
        {"name": "one", "data": "1", "channel": "a"},
        {"name": "two", "data": "2", "channel": "b", "socket_id": "nope"},
    ]});
    assert_eq!(
        post(&server, "batch_events", &bad_socket).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(messages(&server, "alice").await, Vec::<Value>::new());
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"name": "n", "data": i.to_string(), "channel": "a"}))
        .collect();
    assert_eq!(
        post(&server, "batch_events", &json!({ "batch": eleven }))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let good = json!({"batch": [
        {"name": "one", "data": "1", "channel": "a"},
        {"name": "two", "data": "{\"n\":2}", "channel": "b", "socket_id": "1.2"},
    ]});
    let (status, body) = post(&server, "batch_events", &good).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
    let got = messages(&server, "alice").await;
    let events: Vec<_> = got.iter().map(|m| m["event"].clone()).collect();
    assert_eq!(events, vec![json!("one"), json!("two")]);
    assert_eq!(got[1]["data"], json!({"n": 2}));
    assert_eq!(got[1]["exclude"], "1.2");
    server.stop().await;
}

#[tokio::test]
async fn bad_signatures_and_unknown_apps_are_refused_and_apply_nothing() {
    let server = pusher_server().await;
    subscribe(&server, "alice", "c").await;
    let body = json!({"name": "e", "data": "x", "channel": "c"}).to_string();
    let (status, text) = post_as(&server, APP, "wrong-secret", now(), "events", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let (status, text) = post_as(&server, APP, SECRET, now() - 601, "events", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("auth_timestamp"), "{text}");
    let (status, _) = post_as(&server, "other-app", SECRET, now(), "events", &body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A body that is not the one body_md5 was computed for.
    let path = format!("/apps/{APP}/events");
    let query = signed_query(SECRET, KEY, "POST", &path, &[], &body, now());
    let tampered = body.replace("\"x\"", "\"y\"");
    let reply = server
        .http
        .post(server.ingest_url(&format!("{path}?{query}")))
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(reply.text().await.unwrap().contains("body_md5"));
    // Another key, signed with the right secret.
    let query = signed_query(SECRET, "other-key", "POST", &path, &[], &body, now());
    let reply = server
        .http
        .post(server.ingest_url(&format!("{path}?{query}")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    // No signature at all.
    let reply = server
        .http
        .post(server.ingest_url(&path))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(messages(&server, "alice").await, Vec::<Value>::new());
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_400_and_data_over_the_payload_limit_413() {
    let server = pusher_server().await;
    let cases = [
        json!({"data": "x", "channel": "c"}),
        json!({"name": "e", "channel": "c"}),
        json!({"name": "e", "data": {"not": "a string"}, "channel": "c"}),
        json!({"name": "e", "data": "x"}),
        json!({"name": "e", "data": "x", "channels": []}),
        json!({"name": "e", "data": "x", "channel": "c", "socket_id": "12"}),
        json!({"name": "e", "data": "x", "channels": (0..101).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
    ];
    for case in cases {
        let (status, text) = post(&server, "events", &case).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {text}");
    }
    let (status, _) = post_as(&server, APP, SECRET, now(), "events", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let big = json!({"name": "e", "data": "x".repeat(1001), "channel": "c"});
    assert_eq!(
        post(&server, "events", &big).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // A declared length over max_body_bytes: 413 before reading, and the
    // connection closes (its unread body is not another request).
    let huge = json!({"name": "e", "data": "x".repeat(9000), "channel": "c"}).to_string();
    let path = format!("/apps/{APP}/events");
    let query = signed_query(SECRET, KEY, "POST", &path, &[], &huge, now());
    let reply = server
        .http
        .post(server.ingest_url(&format!("{path}?{query}")))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.headers()["connection"], "close");
    assert!(reply.text().await.unwrap().contains("max_body_bytes"));
    server.stop().await;
}

#[tokio::test]
async fn channel_queries_reflect_subscribers() {
    let server = pusher_server().await;
    subscribe(&server, "alice", "presence-room").await;
    subscribe(&server, "bob", "presence-room").await;
    subscribe(&server, "bob", "private-orders").await;
    // A poll subscribing by channels= counts too.
    let carol = token("carol", &["news"]);
    let held = server.spawn_poll(format!("/poll?token={carol}&channels=news&timeout=3"));
    server.until_open_polls("carol", 1).await;

    let (status, all) = get(&server, "channels", &[]).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        all,
        json!({"channels": {"news": {}, "presence-room": {}, "private-orders": {}}})
    );
    let (_, presence) = get(
        &server,
        "channels",
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
    )
    .await;
    assert_eq!(
        presence,
        json!({"channels": {"presence-room": {"user_count": 2}}})
    );
    let (status, _) = get(&server, "channels", &[("info", "user_count")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, room) = get(
        &server,
        "channels/presence-room",
        &[("info", "subscription_count,user_count")],
    )
    .await;
    assert_eq!(
        room,
        json!({"occupied": true, "subscription_count": 2, "user_count": 2})
    );
    let (_, news) = get(&server, "channels/news", &[("info", "subscription_count")]).await;
    assert_eq!(news, json!({"occupied": true, "subscription_count": 1}));
    let (_, empty) = get(&server, "channels/nobody-here", &[]).await;
    assert_eq!(empty, json!({"occupied": false}));
    let (status, _) = get(&server, "channels/news", &[("info", "user_count")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, users) = get(&server, "channels/presence-room/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "alice"}, {"id": "bob"}]}));
    let (status, _) = get(&server, "channels/private-orders/users", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    server
        .post_ok(r#"<unsubscribe client="bob" channel="presence-room"/>"#, 1)
        .await;
    let (_, users) = get(&server, "channels/presence-room/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "alice"}]}));
    held.abort();
    server.stop().await;
}

#[tokio::test]
async fn signed_requests_need_no_ingest_key_but_the_rest_of_ingest_still_does() {
    let server = TestServer::with(|s| {
        s.ingest.key = "ingest-key".into();
        s.pusher.enabled = true;
        s.pusher.app_id = APP.into();
        s.pusher.key = KEY.into();
        s.pusher.secret = SECRET.into();
    })
    .await;
    let (status, _) = get(&server, "channels", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &server,
        "events",
        &json!({"name": "e", "data": "x", "channel": "c"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get_status(server.ingest_url("/channels")).await,
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

#[tokio::test]
async fn disabled_the_api_is_not_there() {
    let server = TestServer::with(|s| {
        s.pusher.app_id = APP.into();
        s.pusher.key = KEY.into();
        s.pusher.secret = SECRET.into();
    })
    .await;
    let (status, _) = post(
        &server,
        "events",
        &json!({"name": "e", "data": "x", "channel": "c"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(get(&server, "channels", &[]).await.0, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// `exclude` is inside the message as stored: the disk store's journal
/// brings it back after a restart.
#[tokio::test]
async fn exclude_survives_a_disk_store_restart() {
    let dir = crate::helpers::scratch_dir("pusher-disk");
    let start = |dir: std::path::PathBuf| {
        TestServer::with(move |s| {
            s.store.kind = cometbox::store::StoreKind::Disk;
            s.store.path = dir;
            s.pusher.enabled = true;
            s.pusher.app_id = APP.into();
            s.pusher.key = KEY.into();
            s.pusher.secret = SECRET.into();
        })
    };
    let server = start(dir.clone()).await;
    subscribe(&server, "alice", "orders").await;
    let (status, _) = post(
        &server,
        "events",
        &json!({"name": "shipped", "data": "{\"id\":42}", "channel": "orders", "socket_id": "77.88"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
    let lock = std::fs::File::open(dir.join("LOCK")).unwrap();
    crate::helpers::wait_until(
        "the store's lock is released",
        Duration::from_secs(5),
        || {
            let free = lock.try_lock().is_ok();
            let _ = lock.unlock();
            async move { free }
        },
    )
    .await;
    let server = start(dir.clone()).await;
    let got = messages(&server, "alice").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (&got[0]["event"], &got[0]["data"], &got[0]["exclude"]),
        (&json!("shipped"), &json!({"id": 42}), &json!("77.88"))
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
