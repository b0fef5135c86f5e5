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

/// `/metrics` while publishers, pollers and a scraper run at once: every
/// scrape parses, the counters never go back, the gauges stay in bounds,
/// and once the load has stopped the counters are exact: every message
/// accepted counted once in, every one a poll carried counted once out,
/// every poll counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_stay_consistent_under_concurrent_load() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;

    const CLIENTS: usize = 8;
    const PUBLISHERS: usize = 4;
    const REQUESTS: usize = 50;
    let server = Arc::new(TestServer::with(|s| s.limits.mailbox_max_messages = 10_000).await);
    for c in 0..CLIENTS {
        server
            .post_ok(&format!(r#"<subscribe client="c{c}" channel="load"/>"#), 1)
            .await;
    }
    // What each client is owed: its direct messages and every channel one.
    let mut owed = [0usize; CLIENTS];
    for p in 0..PUBLISHERS {
        for i in (0..REQUESTS).step_by(2) {
            owed[(p * REQUESTS + i) % CLIENTS] += 1;
        }
    }
    let channel_messages = PUBLISHERS * REQUESTS / 2;
    let polls = Arc::new(AtomicU64::new(0));
    let loading = Arc::new(AtomicBool::new(true));

    let scraper = tokio::spawn({
        let (server, loading) = (server.clone(), loading.clone());
        async move {
            let counters = [
                "cometbox_messages_in_total",
                "cometbox_messages_out_total",
                "cometbox_polls_total",
            ];
            let mut last = [0.0; 3];
            let mut scrapes = 0;
            while loading.load(Relaxed) {
                let m = scrape(&server, None).await;
                for (i, name) in counters.iter().enumerate() {
                    let now = value(&m, name, &[]);
                    assert!(now >= last[i], "{name} went back: {} then {now}", last[i]);
                    last[i] = now;
                }
                let open = value(&m, "cometbox_open_polls", &[]);
                assert!((0.0..=CLIENTS as f64).contains(&open), "open polls {open}");
                assert_eq!(value(&m, "cometbox_clients", &[]), CLIENTS as f64);
                scrapes += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            scrapes
        }
    });
    let pollers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (server, polls) = (server.clone(), polls.clone());
            let want = owed[c] + channel_messages;
            tokio::spawn(async move {
                let token = token(&format!("c{c}"), &[]);
                let (mut got, mut since) = (0, String::new());
                while got < want {
                    let cursor = match since.is_empty() {
                        true => String::new(),
                        false => format!("&since={since}"),
                    };
                    let query = format!("token={token}&timeout=1{cursor}");
                    let reply = server.poll_raw(&query).await.1;
                    polls.fetch_add(1, Relaxed);
                    assert_ne!(reply["reset"], true, "c{c}: nothing may be lost: {reply}");
                    got += reply["messages"].as_array().unwrap().len();
                    since = reply["cursor"].as_str().unwrap().to_owned();
                }
                assert_eq!(got, want, "c{c} got each message once");
            })
        })
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let server = server.clone();
            tokio::spawn(async move {
                for i in 0..REQUESTS {
                    let xml = match i % 2 {
                        0 => format!(
                            r#"<message to="c{}">{i}</message>"#,
                            (p * REQUESTS + i) % CLIENTS
                        ),
                        _ => format!(r#"<message channel="load">{i}</message>"#),
                    };
                    server.post_ok(&xml, 1).await;
                }
            })
        })
        .collect();
    for task in publishers.into_iter().chain(pollers) {
        task.await.unwrap();
    }
    loading.store(false, Relaxed);
    let scrapes = scraper.await.unwrap();
    assert!(
        scrapes >= 3,
        "the scraper ran during the load ({scrapes} scrapes)"
    );

    let m = scrape(&server, None).await;
    let direct: usize = owed.iter().sum();
    let expect = [
        (
            "cometbox_messages_in_total",
            (direct + channel_messages) as f64,
        ),
        (
            "cometbox_messages_out_total",
            (direct + CLIENTS * channel_messages) as f64,
        ),
        ("cometbox_polls_total", polls.load(Relaxed) as f64),
        ("cometbox_open_polls", 0.0),
        ("cometbox_messages_lost_total", 0.0),
        (
            "cometbox_queued_messages",
            (direct + CLIENTS * channel_messages) as f64,
        ),
    ];
    for (name, want) in expect {
        assert_eq!(value(&m, name, &[]), want, "{name}");
    }
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}
