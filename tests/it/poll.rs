//! `GET /poll`: every success path and every error of the contract's table.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{cursor, datas, now, token, token_with, wait_until, TestServer, SECRET};

#[tokio::test]
async fn messages_sent_before_the_first_poll_are_not_lost() {
    let server = TestServer::start().await;
    server
        .post_ok(
            r#"<batch><message to="alice" event="notice">{"text": "ready"}</message><message to="alice" type="text">plain</message></batch>"#,
            2,
        )
        .await;
    let reply = server.poll("alice", "").await;
    assert_eq!(
        datas(&reply),
        vec![json!({"text": "ready"}), json!("plain")]
    );
    let first = &reply["messages"][0];
    assert_eq!(first["event"], "notice");
    assert!(first["ts"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(first.get("channel").is_none());
    assert_eq!(
        reply["messages"][1]["id"], reply["cursor"],
        "the last id is the cursor"
    );
    assert!(reply.get("reset").is_none());
}

#[tokio::test]
async fn a_held_poll_answers_the_moment_a_message_arrives() {
    let server = TestServer::with(|s| s.limits.poll_timeout = Duration::from_secs(20)).await;
    let start = server.poll("bob", "timeout=0").await;
    let since = cursor(&start);
    let held = {
        let http = server.http.clone();
        let url = server.public_url(&format!("/poll?token={}&since={since}", token("bob", &[])));
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            (started.elapsed(), body)
        })
    };
    server.until_open_polls("bob", 1).await;
    server.post_ok(r#"<message to="bob">42</message>"#, 1).await;
    let (waited, body) = held.await.unwrap();
    assert_eq!(datas(&body), vec![json!(42)]);
    assert!(
        waited < Duration::from_secs(5),
        "answered on arrival, not at the timeout: {waited:?}"
    );
}

#[tokio::test]
async fn an_empty_poll_times_out_with_an_empty_array_and_the_same_cursor() {
    let server = TestServer::start().await;
    let first = server.poll("carol", "timeout=0").await;
    let started = Instant::now();
    let reply = server
        .poll("carol", &format!("since={}&timeout=0.5", cursor(&first)))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(reply["messages"], json!([]));
    assert_eq!(cursor(&reply), cursor(&first));
    // Without `timeout` the server's poll_timeout applies; `timeout` is
    // capped by max_poll_timeout.
    let capped = TestServer::with(|s| {
        s.limits.poll_timeout = Duration::from_millis(200);
        s.limits.max_poll_timeout = Duration::from_secs(3);
    })
    .await;
    // Lower bounds are the promise (a poll waits its timeout); the upper
    // ones only tell the two timeouts apart, with room for a loaded machine.
    let started = Instant::now();
    capped.poll("dave", "").await;
    let default = started.elapsed();
    assert!(
        default >= Duration::from_millis(190) && default < Duration::from_millis(2900),
        "poll_timeout: {default:?}"
    );
    let started = Instant::now();
    capped.poll("dave", "timeout=30").await;
    let cap = started.elapsed();
    assert!(
        cap >= Duration::from_millis(2990) && cap < Duration::from_secs(20),
        "max_poll_timeout: {cap:?}"
    );
}

#[tokio::test]
async fn resuming_from_a_cursor_skips_what_was_seen_and_older_cursors_get_it_again() {
    let server = TestServer::start().await;
    server.post_ok(r#"<message to="erin">1</message>"#, 1).await;
    let first = server.poll("erin", "").await;
    server
        .post_ok(
            r#"<batch><message to="erin">2</message><message to="erin">3</message></batch>"#,
            2,
        )
        .await;
    let next = server
        .poll("erin", &format!("since={}", cursor(&first)))
        .await;
    assert_eq!(datas(&next), vec![json!(2), json!(3)]);
    let again = server.poll("erin", "").await;
    assert_eq!(
        datas(&again),
        vec![json!(1), json!(2), json!(3)],
        "at least once: retained and redelivered"
    );
    let ids: Vec<String> = again["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let seq = |id: &str| id.rsplit_once('-').unwrap().1.parse::<u64>().unwrap();
    assert!(ids.windows(2).all(|w| seq(&w[0]) < seq(&w[1])), "{ids:?}");
}

#[tokio::test]
async fn two_tabs_of_one_client_each_get_every_message() {
    let server = TestServer::start().await;
    let tab = |since: String| {
        server.spawn_poll(format!(
            "/poll?token={}&since={since}&timeout=5",
            token("frank", &[])
        ))
    };
    let start = cursor(&server.poll("frank", "timeout=0").await);
    let (a, b) = (tab(start.clone()), tab(start));
    server.until_open_polls("frank", 2).await;
    server
        .post_ok(r#"<message to="frank">"both"</message>"#, 1)
        .await;
    assert_eq!(datas(&a.await.unwrap()), vec![json!("both")]);
    assert_eq!(datas(&b.await.unwrap()), vec![json!("both")]);
}

#[tokio::test]
async fn a_cursor_from_another_server_life_gets_reset_and_everything_queued() {
    let before = TestServer::start().await;
    before
        .post_ok(r#"<message to="gina">"old"</message>"#, 1)
        .await;
    let old_cursor = cursor(&before.poll("gina", "").await);
    before.stop().await;
    let after = TestServer::start().await;
    after
        .post_ok(r#"<message to="gina">"new"</message>"#, 1)
        .await;
    let reply = after.poll("gina", &format!("since={old_cursor}")).await;
    assert_eq!(reply["reset"], json!(true));
    assert_eq!(datas(&reply), vec![json!("new")]);
}

#[tokio::test]
async fn messages_dropped_by_retention_reset_older_cursors() {
    let server = TestServer::with(|s| s.limits.mailbox_max_messages = 3).await;
    let start = cursor(&server.poll("hank", "timeout=0").await);
    server
        .post_ok(
            &format!(
                "<batch>{}</batch>",
                (1..=5)
                    .map(|i| format!(r#"<message to="hank">{i}</message>"#))
                    .collect::<String>()
            ),
            5,
        )
        .await;
    let reply = server.poll("hank", &format!("since={start}")).await;
    assert_eq!(
        reply["reset"],
        json!(true),
        "two messages were dropped after this cursor"
    );
    assert_eq!(datas(&reply), vec![json!(3), json!(4), json!(5)]);
    let resumed = server
        .poll("hank", &format!("since={}&timeout=0", cursor(&reply)))
        .await;
    assert!(resumed.get("reset").is_none());
}

#[tokio::test]
async fn message_ttl_expiry_resets_but_a_messages_own_ttl_does_not() {
    let server = TestServer::with(|s| s.limits.message_ttl = Duration::from_secs(1)).await;
    let start = cursor(&server.poll("ivy", "timeout=0").await);
    server
        .post_ok(r#"<message to="ivy">"expires"</message>"#, 1)
        .await;
    // Not a synchronisation: the message's retention must really pass.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server
        .post_ok(r#"<message to="ivy">"fresh"</message>"#, 1)
        .await;
    let reply = server.poll("ivy", &format!("since={start}")).await;
    assert_eq!(reply["reset"], json!(true));
    assert_eq!(datas(&reply), vec![json!("fresh")]);

    let server = TestServer::start().await;
    let start = cursor(&server.poll("jack", "timeout=0").await);
    server.post_ok(r#"<batch><message to="jack" ttl="1">"short"</message><message to="jack">"kept"</message></batch>"#, 2).await;
    // Again the time itself must pass.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = server.poll("jack", &format!("since={start}")).await;
    assert!(reply.get("reset").is_none(), "{reply}");
    assert_eq!(datas(&reply), vec![json!("kept")]);
}

#[tokio::test]
async fn disconnect_ends_open_polls_and_forgets_the_client() {
    let server = TestServer::start().await;
    server.post_ok(r#"<batch><message to="kim">1</message><subscribe client="kim" channel="room"/></batch>"#, 2).await;
    let since = cursor(&server.poll("kim", "").await);
    let held = server.spawn_poll(format!(
        "/poll?token={}&since={since}&timeout=10",
        token("kim", &[])
    ));
    server.until_open_polls("kim", 1).await;
    server.post_ok(r#"<disconnect client="kim"/>"#, 1).await;
    let reply = tokio::time::timeout(Duration::from_secs(3), held)
        .await
        .expect("the poll ends at once")
        .unwrap();
    assert_eq!(reply["disconnected"], json!(true));
    assert_eq!(reply["messages"], json!([]));
    assert_eq!(server.presence("kim").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.stats().await["subscriptions"], 0);
}

#[tokio::test]
async fn idle_clients_are_forgotten_with_their_mailbox() {
    let server =
        TestServer::with(|s| s.limits.client_idle_timeout = Duration::from_millis(300)).await;
    server.post_ok(r#"<message to="lou">1</message>"#, 1).await;
    assert_eq!(server.presence("lou").await.0, StatusCode::OK);
    wait_until("lou is forgotten", Duration::from_secs(3), || async {
        server.presence("lou").await.0 == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(server.stats().await["clients_evicted"], 1);
}

#[tokio::test]
async fn a_client_with_an_open_poll_is_never_evicted() {
    let server =
        TestServer::with(|s| s.limits.client_idle_timeout = Duration::from_millis(200)).await;
    let held = server.spawn_poll(format!("/poll?token={}&timeout=1.5", token("max", &[])));
    server.until_open_polls("max", 1).await;
    // Four idle timeouts pass while the poll is held; the reaper sweeps
    // several times meanwhile.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, presence) = server.presence("max").await;
    assert_eq!(presence["online"], json!(true));
    held.await.unwrap();
}

#[tokio::test]
async fn token_in_the_authorization_header_works_too() {
    let server = TestServer::start().await;
    server.post_ok(r#"<message to="nia">1</message>"#, 1).await;
    let reply = server
        .http
        .get(server.public_url("/poll"))
        .bearer_auth(token("nia", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(datas(&reply.json().await.unwrap()), vec![json!(1)]);
}

async fn expect_error(server: &TestServer, query: &str, status: StatusCode, code: &str) {
    let (got, body, headers) = server.poll_raw(query).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "{query}: {body}"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn every_poll_error_has_its_status_and_code() {
    let server = TestServer::with(|s| s.limits.max_polls_per_client = 1).await;
    let alice = token("alice", &["room:*"]);
    expect_error(&server, "", StatusCode::UNAUTHORIZED, "invalid-token").await;
    expect_error(
        &server,
        "token=garbage",
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    let wrong_secret = token_with(json!({"sub": "alice", "exp": now() + 60}), "not-the-secret");
    expect_error(
        &server,
        &format!("token={wrong_secret}"),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    let no_exp = token_with(json!({"sub": "alice"}), SECRET);
    expect_error(
        &server,
        &format!("token={no_exp}"),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    let bad_sub = token_with(json!({"sub": "not an id", "exp": now() + 60}), SECRET);
    expect_error(
        &server,
        &format!("token={bad_sub}"),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    let expired = token_with(json!({"sub": "alice", "exp": now() - 10}), SECRET);
    expect_error(
        &server,
        &format!("token={expired}"),
        StatusCode::UNAUTHORIZED,
        "token-expired",
    )
    .await;
    expect_error(
        &server,
        &format!("token={alice}&since=nonsense"),
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    expect_error(
        &server,
        &format!("token={alice}&timeout=soon"),
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    expect_error(
        &server,
        &format!("token={alice}&timeout=-1"),
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    expect_error(
        &server,
        &format!("token={alice}&channels=bad%20name"),
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    expect_error(
        &server,
        &format!("token={alice}&channels=room:1,news"),
        StatusCode::FORBIDDEN,
        "channel-forbidden",
    )
    .await;

    let held = {
        let http = server.http.clone();
        let url = server.public_url(&format!("/poll?token={alice}&timeout=2"));
        tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
    };
    server.until_open_polls("alice", 1).await;
    expect_error(
        &server,
        &format!("token={alice}"),
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-polls",
    )
    .await;
    assert_eq!(held.await.unwrap(), StatusCode::OK);

    let full = TestServer::with(|s| s.limits.max_clients = 1).await;
    full.post_ok(r#"<message to="first">1</message>"#, 1).await;
    expect_error(
        &full,
        &format!("token={}", token("second", &[])),
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
    )
    .await;

    let unknown = server
        .http
        .get(server.public_url("/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn a_poll_after_shutdown_began_is_refused_with_shutting_down() {
    use tower::ServiceExt;
    let mut settings = cometbox::config::Settings::default();
    settings.auth.secret = SECRET.into();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store = cometbox::open_store(&settings).unwrap();
    let state = cometbox::app_state(settings, store, Default::default(), shutdown.clone());
    shutdown.cancel();
    wait_until("the hub shuts down", Duration::from_secs(1), || async {
        state.hub.is_shutting_down()
    })
    .await;
    // The listener stopped accepting on shutdown: serve one connection by
    // hand, as the public port would have.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = state.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        cometbox::http::public::serve_connection(stream, serving).await;
    });
    let reply = reqwest::get(format!("http://{addr}/poll?token={}", token("olga", &[])))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "shutting-down");
    let request = axum::http::Request::post("/")
        .body(axum::body::Body::from(r#"<message to="olga">1</message>"#))
        .unwrap();
    let reply = cometbox::http::ingest::router(state)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(reply.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains(r#"code="shutting-down""#));
}

#[tokio::test]
async fn shutdown_answers_every_open_poll_empty() {
    let server = TestServer::with(|s| s.limits.poll_timeout = Duration::from_secs(30)).await;
    let polls: Vec<_> = (0..20)
        .map(|i| {
            let http = server.http.clone();
            let url = server.public_url(&format!("/poll?token={}", token(&format!("p{i}"), &[])));
            tokio::spawn(async move {
                let reply = http.get(url).send().await.unwrap();
                (reply.status(), reply.json::<Value>().await.unwrap())
            })
        })
        .collect();
    server.until_total_open_polls(20).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for poll in polls {
        let (status, body) = poll.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["messages"], json!([]));
    }
}

#[tokio::test]
async fn the_browser_class_is_served() {
    let server = TestServer::start().await;
    let reply = server
        .http
        .get(server.public_url("/cometbox.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert!(reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert_eq!(reply.headers()["cache-control"], "no-store");
    assert!(reply.text().await.unwrap().contains("CometBox"));
}

#[tokio::test]
async fn a_browser_that_goes_away_closes_its_poll() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::with(|s| s.limits.poll_timeout = Duration::from_secs(30)).await;
    let mut browser = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let request = format!(
        "GET /poll?token={} HTTP/1.1\r\nHost: x\r\n\r\n",
        token("gone", &[])
    );
    browser.write_all(request.as_bytes()).await.unwrap();
    server.until_open_polls("gone", 1).await;
    drop(browser);
    server.until_open_polls("gone", 0).await;
}

#[tokio::test]
async fn a_full_mailbox_is_delivered_in_pages_of_max_reply_bytes() {
    let server = TestServer::with(|s| s.limits.max_reply_bytes = 10_000).await;
    let text = "x".repeat(3_000);
    let batch: String = (0..10)
        .map(|i| format!(r#"<message to="pia" type="text">{i}{text}</message>"#))
        .collect();
    server.post_ok(&format!("<batch>{batch}</batch>"), 10).await;
    let mut since = String::new();
    let mut received = vec![];
    let mut pages = vec![];
    loop {
        let (status, body, _) = server
            .poll_raw(&format!(
                "token={}&since={since}&timeout=0",
                token("pia", &[])
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        let got = datas(&body);
        if got.is_empty() {
            break;
        }
        assert!(body.to_string().len() <= 10_000 + 100, "a page is bounded");
        pages.push(got.len());
        received.extend(got);
        since = cursor(&body);
        assert_eq!(
            body["messages"][pages.last().unwrap() - 1]["id"].as_str(),
            Some(since.as_str())
        );
    }
    assert_eq!(pages, vec![3, 3, 3, 1]);
    let expected: Vec<Value> = (0..10).map(|i| json!(format!("{i}{text}"))).collect();
    assert_eq!(received, expected, "every message once, in order");
}

/// What a held poll costs is mostly its connection's future: every route's
/// state is part of it unless boxed. Bayeux's (a batch, hook requests, a
/// held connect) once made every held poll 3 KB bigger. The figure is the
/// future of `serve_connection` (the connection's loop and its routes) in
/// a debug build, where this runs: 2,984 bytes with Bayeux boxed, 5,664
/// without (release builds are smaller); 3,224 once a WebSocket's session
/// moved to a task of its own (the loop hands its socket over, and this
/// test's `serve_connection` awaits that session after the loop).
#[tokio::test]
async fn a_connections_future_stays_small() {
    let mut settings = cometbox::config::Settings::default();
    settings.auth.secret = SECRET.into();
    settings.bayeux.enabled = true;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store = cometbox::open_store(&settings).unwrap();
    let state = cometbox::app_state(settings, store, Default::default(), shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (stream, _) = tokio::join!(listener.accept(), client).0.unwrap();
    let future = cometbox::http::public::serve_connection(stream, state);
    let size = std::mem::size_of_val(&future);
    assert!(size <= 3300, "a connection's future is {size} bytes");
    shutdown.cancel();
}
