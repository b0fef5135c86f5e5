//! `GET /metrics`: what was done shows in the families, read back with a
//! Prometheus text parser (`prometheus-parse`), and the ingest key guards it.

use reqwest::StatusCode;

use crate::helpers::{token, TestServer};

/// Scrapes `/metrics` (with `key` as the ingest key if given) and parses it.
async fn scrape(server: &TestServer, key: Option<&str>) -> prometheus_parse::Scrape {
    let mut request = server.http.get(server.ingest_url("/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let reply = request.send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        reply.headers()["content-type"],
        cometbox::metrics::CONTENT_TYPE
    );
    let text = reply.text().await.unwrap();
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics ends in # EOF: {text}"
    );
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is not a single value: {other:?}"),
    }
}

/// The commit histogram's `_count`: every bucket's `+Inf` count.
fn commit_count(scrape: &prometheus_parse::Scrape) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "cometbox_store_commit_seconds")
        .expect("the commit histogram family is there");
    match &sample.value {
        prometheus_parse::Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than == f64::INFINITY)
            .map_or(0.0, |b| b.count),
        other => panic!("not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_what_was_done() {
    let server = TestServer::with(|s| s.limits.mailbox_max_messages = 3).await;
    server
        .post_ok(r#"<subscribe client="alice" channel="room:1"/>"#, 1)
        .await;
    server
        .post_ok(
            r#"<batch>
  <message to="alice">1</message>
  <message to="alice">2</message>
  <message channel="room:1">3</message>
</batch>"#,
            3,
        )
        .await;
    // bob never polls: his fourth message pushes out the first, undelivered.
    for n in 1..=4 {
        server
            .post_ok(&format!(r#"<message to="bob">{n}</message>"#), 1)
            .await;
    }
    assert_eq!(
        server.poll("alice", "").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // alice's oldest goes too, but she had it: not lost.
    server
        .post_ok(r#"<message to="alice">4</message>"#, 1)
        .await;
    // Rejected: a wrong media type and malformed XML.
    let wrong_type = server
        .http
        .post(server.ingest_url("/"))
        .header("content-type", "text/plain")
        .body("<message to='x'>1</message>")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        server.post("<message to='x'>").await.0,
        StatusCode::BAD_REQUEST
    );
    // One poll held open.
    let held = server.spawn_poll(format!("/poll?token={}", token("carol", &[])));
    server.until_open_polls("carol", 1).await;

    let m = scrape(&server, None).await;
    let expect = [
        ("cometbox_open_polls", 1.0),
        ("cometbox_clients", 3.0),
        ("cometbox_channels", 1.0),
        ("cometbox_subscriptions", 1.0),
        ("cometbox_queued_messages", 6.0),
        ("cometbox_messages_in_total", 8.0),
        ("cometbox_messages_out_total", 3.0),
        ("cometbox_messages_lost_total", 1.0),
        ("cometbox_polls_total", 2.0),
        ("cometbox_clients_evicted_total", 0.0),
    ];
    for (name, want) in expect {
        assert_eq!(value(&m, name, &[]), want, "{name}");
    }
    let rejected = |code| value(&m, "cometbox_ingest_rejected_total", &[("code", code)]);
    assert_eq!(rejected("unsupported-media-type"), 1.0);
    assert_eq!(rejected("malformed-xml"), 1.0);
    assert_eq!(rejected("too-large"), 0.0, "every code is there from zero");
    assert!(value(&m, "cometbox_connections", &[("listener", "public")]) >= 1.0);
    assert!(value(&m, "cometbox_connections", &[("listener", "ingest")]) >= 1.0);
    assert_eq!(commit_count(&m), 0.0, "the memory store commits nothing");

    server
        .post_ok(r#"<message to="carol">"hi"</message>"#, 1)
        .await;
    held.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_disk_store_observes_commit_latency() {
    let dir = crate::helpers::scratch_dir("metrics");
    let server = TestServer::with(|s| {
        s.store.kind = cometbox::store::StoreKind::Disk;
        s.store.path = dir.clone();
    })
    .await;
    for n in 1..=3 {
        server
            .post_ok(&format!(r#"<message to="dave">{n}</message>"#), 1)
            .await;
    }
    let m = scrape(&server, None).await;
    assert!(
        commit_count(&m) >= 3.0,
        "one observation per batch at least"
    );
    assert_eq!(value(&m, "cometbox_messages_in_total", &[]), 3.0);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn metrics_need_the_ingest_key() {
    let server = TestServer::with(|s| s.ingest.key = "k3y".into()).await;
    let status = server.get_status(server.ingest_url("/metrics")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let m = scrape(&server, Some("k3y")).await;
    assert_eq!(
        value(
            &m,
            "cometbox_ingest_rejected_total",
            &[("code", "unauthorized")]
        ),
        1.0
    );
    server.stop().await;
}
