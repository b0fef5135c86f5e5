//! The scenarios: each starts its own Redis and nodes in a scratch dir.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{token, wait_until, Scratch};
use crate::nodes::{ids, ingest_get, node, nodes, numbers, poll_ok, stats, PROMPT};
use crate::redis_server::{Kind, Persistence, TestRedis};

/// A poll held on node B is answered within milliseconds of a message
/// accepted on node A; ids and cursors are the same from every node; one
/// client's polls alternate between nodes without loss or duplicates.
async fn cross_node_delivery_and_alternating_polls(kind: Kind) {
    let dir = Scratch::new("cross-node");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis, &dir.0, 3).await;
    let alice = token("alice", &[]);
    let first = poll_ok(&n[1], &alice, "timeout=0").await;
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();

    // Latency: held poll on node 1, message on node 0, ten times.
    let mut latencies = Vec::new();
    for i in 0..10 {
        let held = {
            let (server, alice, cursor) = (&n[1], alice.clone(), cursor.clone());
            let url = format!(
                "http://{}/poll?token={alice}&since={cursor}&timeout=20",
                server.public
            );
            let http = server.http.clone();
            tokio::spawn(async move {
                let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                (body, Instant::now())
            })
        };
        // The poll is registered once presence says so (any node answers).
        wait_until("the held poll is open", PROMPT, || async {
            let (_, body) = ingest_get(&n[2], "/clients/alice").await;
            body.contains("\"open_polls\":1")
        })
        .await;
        let sent = Instant::now();
        n[0].post_ok(&format!(r#"<message to="alice">{{"n":{i}}}</message>"#), 1)
            .await;
        let (body, answered) = tokio::time::timeout(PROMPT, held)
            .await
            .expect("answered promptly")
            .unwrap();
        latencies.push(answered.saturating_duration_since(sent));
        assert_eq!(body["messages"][0]["data"]["n"], i, "{body}");
        cursor = body["cursor"].as_str().unwrap().to_owned();
    }
    latencies.sort();
    eprintln!("cross-node wake-up latency (post on A -> held poll on B answered): min {:?}, median {:?}, max {:?}", latencies[0], latencies[5], latencies[9]);
    assert!(
        latencies[5] < Duration::from_secs(1),
        "median {:?}",
        latencies[5]
    );

    // Every node reads the same mailbox the same way.
    let everything: Vec<Vec<String>> = {
        let mut all = Vec::new();
        for server in &n {
            all.push(ids(&poll_ok(server, &alice, "timeout=0").await));
        }
        all
    };
    assert_eq!(everything[0].len(), 10);
    assert!(
        everything.iter().all(|i| *i == everything[0]),
        "{everything:?}"
    );

    // Alternating nodes: 60 messages posted on random nodes, polled with
    // the cursor on node 0, 1, 2, 0, ... ; each exactly once, in order.
    let mut got = Vec::new();
    let mut cursor = cursor.clone();
    for i in 0..60 {
        n[(i * 7) % 3]
            .post_ok(&format!(r#"<message to="alice">{{"k":{i}}}</message>"#), 1)
            .await;
        if i % 4 == 3 {
            let body = poll_ok(
                &n[(i / 4) % 3],
                &alice,
                &format!("since={cursor}&timeout=0"),
            )
            .await;
            assert_ne!(body["reset"], true, "{body}");
            got.extend(
                body["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["data"]["k"].as_i64().unwrap()),
            );
            cursor = body["cursor"].as_str().unwrap().to_owned();
        }
    }
    assert_eq!(got, (0..60).collect::<Vec<_>>());
}

/// A channel message reaches members polling on every node; the payload is
/// stored once in Redis, not once per member; presence and /stats are
/// cluster-wide.
async fn channel_fan_out_across_nodes(kind: Kind) {
    let dir = Scratch::new("fan-out");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis, &dir.0, 3).await;
    let members: Vec<(String, String)> = (0..30)
        .map(|i| (format!("m{i}"), token(&format!("m{i}"), &["room"])))
        .collect();
    let mut cursors = Vec::new();
    for (i, (_, t)) in members.iter().enumerate() {
        let body = poll_ok(&n[i % 3], t, "channels=room&timeout=0").await;
        cursors.push(body["cursor"].as_str().unwrap().to_owned());
    }
    let (_, presence) = ingest_get(&n[0], "/clients/m4").await;
    assert!(presence.contains(r#""channels":["room"]"#), "{presence}");
    // Hold every member's poll, each on the node it joined through.
    let mut held = Vec::new();
    for (i, (_, t)) in members.iter().enumerate() {
        let server = &n[i % 3];
        let url = format!(
            "http://{}/poll?token={t}&since={}&timeout=20",
            server.public, cursors[i]
        );
        let http = server.http.clone();
        held.push(tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }));
    }
    wait_until("30 polls open cluster-wide", PROMPT, || async {
        let mut open = 0;
        for server in &n {
            open += stats(server).await["open_polls"].as_u64().unwrap();
        }
        open == 30
    })
    .await;
    n[1].post_ok(
        r#"<message channel="room" event="news">{"big":"payload"}</message>"#,
        1,
    )
    .await;
    for h in held {
        let body = tokio::time::timeout(PROMPT, h)
            .await
            .expect("every member answered")
            .unwrap();
        assert_eq!(body["messages"][0]["data"]["big"], "payload", "{body}");
        assert_eq!(body["messages"][0]["channel"], "room");
    }
    let payloads = redis.payload_keys().await;
    assert!(
        !payloads.is_empty() && payloads.len() <= redis.payload_copies(),
        "the payload is stored once (per slot group in a cluster): {payloads:?}"
    );
    let s = stats(&n[2]).await;
    assert_eq!(
        (
            s["clients"].as_u64(),
            s["subscriptions"].as_u64(),
            s["channels"].as_u64()
        ),
        (Some(30), Some(30), Some(1)),
        "{s}"
    );
    assert_eq!(s["scope"]["store"], "redis");
    assert_eq!(s["scope"]["nodes"], 3, "{s}");
}

/// A node SIGKILLed while its clients poll and backends post: the clients
/// re-poll another node with their cursors and get every acknowledged
/// message, without `reset`.
async fn node_killed_under_load_loses_nothing(kind: Kind) {
    let dir = Scratch::new("kill-node");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let mut n = nodes(&redis, &dir.0, 3).await;
    let clients: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let tokens: Vec<String> = clients.iter().map(|c| token(c, &[])).collect();
    let mut cursors = Vec::new();
    for t in &tokens {
        cursors.push(
            poll_ok(&n[1], t, "timeout=0").await["cursor"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Backends post through node 0 and node 2 while clients poll node 1.
    let (ingest_a, ingest_b) = (n[0].ingest.clone(), n[2].ingest.clone());
    let http = n[0].http.clone();
    let writer = tokio::spawn(async move {
        let mut acked: Vec<(usize, u64)> = Vec::new();
        for k in 0..400u64 {
            let c = (k % 8) as usize;
            let ingest = if k % 2 == 0 { &ingest_a } else { &ingest_b };
            let reply = http
                .post(format!("http://{ingest}/"))
                .header("content-type", "application/xml")
                .body(format!(r#"<message to="k{c}">{{"k":{k}}}</message>"#))
                .send()
                .await
                .unwrap();
            if reply.status() == 200 {
                acked.push((c, k));
            }
        }
        acked
    });
    let mut received: Vec<Vec<u64>> = vec![Vec::new(); 8];
    // Poll node 1 a while, then kill it, then carry on with node 2.
    for round in 0..6 {
        for c in 0..8 {
            let body = poll_ok(
                &n[1],
                &tokens[c],
                &format!("since={}&timeout=0", cursors[c]),
            )
            .await;
            assert_ne!(body["reset"], true, "{body}");
            received[c].extend(
                body["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["data"]["k"].as_u64().unwrap()),
            );
            cursors[c] = body["cursor"].as_str().unwrap().to_owned();
        }
        let _ = round;
    }
    // Each client holds a poll on node 1 when it is killed.
    let held: Vec<_> = (0..8)
        .map(|c| {
            let url = format!(
                "http://{}/poll?token={}&since={}&timeout=30",
                n[1].public, tokens[c], cursors[c]
            );
            let http = n[1].http.clone();
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    let killed = n.remove(1);
    killed.kill9().await;
    for h in held {
        // Either answered before the kill (a message arrived: its reply
        // is lost with the connection, and the cursor re-fetches it) or
        // cut off by it.
        let _ = h.await.unwrap();
    }
    let acked = writer.await.unwrap();
    assert_eq!(
        acked.len(),
        400,
        "every post through the living nodes was acknowledged"
    );
    for c in 0..8 {
        loop {
            let body = poll_ok(
                &n[1],
                &tokens[c],
                &format!("since={}&timeout=0", cursors[c]),
            )
            .await;
            assert_ne!(body["reset"], true, "no reset after a node died: {body}");
            let messages = body["messages"].as_array().unwrap();
            if messages.is_empty() {
                break;
            }
            received[c].extend(messages.iter().map(|m| m["data"]["k"].as_u64().unwrap()));
            cursors[c] = body["cursor"].as_str().unwrap().to_owned();
        }
    }
    for (c, got) in received.iter().enumerate() {
        let expected: Vec<u64> = acked
            .iter()
            .filter(|(to, _)| *to == c)
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(
            *got, expected,
            "client k{c}: every acknowledged message, once, in order"
        );
    }
}

/// Redis restarted with AOF and `appendfsync always`: cursors are honoured
/// and nothing is lost. With `appendfsync everysec` (Redis's default, which
/// a machine crash can cut by a second of writes, whose ids Redis would give
/// again) the data comes back but the cursors get `reset`. Restarted without
/// persistence: the cursors get `reset`, and only new messages are there.
async fn redis_restart_with_and_without_persistence(kind: Kind) {
    for persistence in [
        Persistence::Aof,
        Persistence::AofEverysec,
        Persistence::None,
    ] {
        let dir = Scratch::new("redis-restart");
        let mut redis = TestRedis::start(kind, &dir.0.join("redis"), persistence).await;
        let n = nodes(&redis, &dir.0, 2).await;
        let bob = token("bob", &[]);
        for i in 0..5 {
            n[0].post_ok(&format!(r#"<message to="bob">{{"i":{i}}}</message>"#), 1)
                .await;
        }
        let body = poll_ok(&n[1], &bob, "timeout=0").await;
        assert_eq!(ids(&body).len(), 5);
        let second = ids(&body)[1].clone();
        match persistence {
            Persistence::Aof => redis.stop().await,
            Persistence::AofEverysec | Persistence::None => redis.kill9().await,
        }
        redis.restart().await;
        // The nodes reconnect by themselves; a post succeeds once they have.
        wait_until(
            "ingest works again after the restart",
            Duration::from_secs(20),
            || async {
                matches!(
                    n[0].post(r#"<message to="bob">{"i":5}</message>"#).await,
                    Ok((200, _))
                )
            },
        )
        .await;
        let body = poll_ok(&n[1], &bob, &format!("since={second}&timeout=0")).await;
        match persistence {
            Persistence::Aof => {
                assert_ne!(body["reset"], true, "{body}");
                let got = numbers(&body);
                assert_eq!(got, vec![2, 3, 4, 5], "{body}");
            }
            Persistence::AofEverysec => {
                assert_eq!(
                    body["reset"], true,
                    "an everysec AOF may have lost acknowledged writes: {body}"
                );
                let got = numbers(&body);
                assert_eq!(got, vec![0, 1, 2, 3, 4, 5], "what was kept: {body}");
            }
            Persistence::None => {
                assert_eq!(
                    body["reset"], true,
                    "data lost in Redis must reset the cursor: {body}"
                );
                let got = numbers(&body);
                assert_eq!(got, vec![5], "{body}");
            }
        }
    }
}

/// Redis unreachable: ingest answers 503 storage-unavailable and applies
/// nothing, polls answer 503, held polls end, /health says degraded; once
/// Redis is back the nodes serve again by themselves.
async fn redis_down_then_back(kind: Kind) {
    let dir = Scratch::new("redis-down");
    let mut redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::Aof).await;
    let n = nodes(&redis, &dir.0, 2).await;
    let carol = token("carol", &[]);
    n[0].post_ok(r#"<message to="carol">{"before":1}</message>"#, 1)
        .await;
    let cursor = poll_ok(&n[1], &carol, "timeout=0").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = {
        let url = format!(
            "http://{}/poll?token={carol}&since={cursor}&timeout=60",
            n[1].public
        );
        let http = n[1].http.clone();
        tokio::spawn(async move {
            let reply = http.get(url).send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        })
    };
    wait_until("the held poll is open", PROMPT, || async {
        stats(&n[1]).await["open_polls"] == 1
    })
    .await;
    redis.stop().await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held poll ends")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage-unavailable"), "{body}");
    let (status, body) = n[0]
        .post(r#"<message to="carol">{"during":1}</message>"#)
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage-unavailable"), "{body}");
    let (status, body) = n[1]
        .poll(&carol, &format!("since={cursor}&timeout=0"))
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("storage-unavailable")),
        "{body}"
    );
    wait_until("/health says degraded", PROMPT, || async {
        let (status, body) = ingest_get(&n[0], "/health").await;
        status == 503 && body.contains("degraded")
    })
    .await;
    // The public port says so too (load balancers probe that one).
    wait_until("public /health says degraded", PROMPT, || async {
        let reply = n[1]
            .http
            .get(format!("http://{}/health", n[1].public))
            .send()
            .await
            .unwrap();
        reply.status().as_u16() == 503 && reply.text().await.unwrap().contains("degraded")
    })
    .await;
    redis.restart().await;
    wait_until("ingest works again", Duration::from_secs(20), || async {
        matches!(
            n[0].post(r#"<message to="carol">{"after":1}</message>"#)
                .await,
            Ok((200, _))
        )
    })
    .await;
    wait_until("/health is ok again", PROMPT, || async {
        let (status, _) = ingest_get(&n[1], "/health").await;
        // Any call through that node refreshes its view of Redis.
        let _ = stats(&n[1]).await;
        status == 200
    })
    .await;
    let body = poll_ok(&n[1], &carol, &format!("since={cursor}&timeout=0")).await;
    assert_ne!(body["reset"], true, "{body}");
    let got: Vec<&Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(
        got.len(),
        1,
        "nothing of the refused post, the later one once: {body}"
    );
    assert_eq!(got[0]["after"], 1);
}

/// `max_clients` counts clients on every node; idle eviction is cluster-wide.
async fn limits_and_eviction_are_cluster_wide(kind: Kind) {
    let dir = Scratch::new("limits");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let settings = [
        ("COMETBOX_LIMITS__MAX_CLIENTS", "3"),
        ("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "1s"),
    ];
    let a = node(&redis, &dir.0, &settings).await;
    let b = node(&redis, &dir.0, &settings).await;
    a.post_ok(
        r#"<batch><message to="x1">1</message><message to="x2">2</message></batch>"#,
        2,
    )
    .await;
    poll_ok(&b, &token("x3", &[]), "timeout=0").await;
    let (status, body) = b.poll(&token("x4", &[]), "timeout=0").await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("overloaded")),
        "{body}"
    );
    let (status, body) = a.post(r#"<message to="x5">5</message>"#).await.unwrap();
    assert_eq!(status, 503, "{body}");
    // Idle for a second: forgotten everywhere, and room again.
    wait_until(
        "idle clients evicted cluster-wide",
        Duration::from_secs(20),
        || async { stats(&a).await["clients"] == 0 },
    )
    .await;
    assert!(stats(&b).await["clients_evicted"].as_u64().unwrap() >= 3);
    let (status, _) = ingest_get(&b, "/clients/x1").await;
    assert_eq!(status, 404);
    a.post_ok(r#"<message to="x5">5</message>"#, 1).await;
}

/// Measurement (run by `tests/cluster/run-tests.sh`, figures printed for
/// docs/performance.md): one channel message to 10,000 members, 300 of
/// them holding polls spread over 3 nodes. Asserts what must hold (one
/// stored payload, every held poll answered, every mailbox has it).
async fn fan_out_to_10000_members_over_3_nodes(kind: Kind) {
    let dir = Scratch::new("fan-out-10k");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    // One script appends to every member of its group: on a loaded test
    // machine that may take longer than the suite's usual 1 s timeout.
    let slow = [("COMETBOX_STORE__TIMEOUT", "10s")];
    let mut n = Vec::new();
    for _ in 0..3 {
        n.push(node(&redis, &dir.0, &slow).await);
    }
    const MEMBERS: usize = 10_000;
    const HELD: usize = 300;
    for chunk in (0..MEMBERS).collect::<Vec<_>>().chunks(2_000) {
        let xml: String = chunk
            .iter()
            .map(|i| format!(r#"<subscribe client="f{i}" channel="big"/>"#))
            .collect();
        n[chunk[0] % 3]
            .post_ok(&format!("<batch>{xml}</batch>"), chunk.len())
            .await;
    }
    let mut held = Vec::new();
    for i in 0..HELD {
        let server = &n[i % 3];
        let t = token(&format!("f{i}"), &[]);
        let first = poll_ok(server, &t, "timeout=0").await;
        let url = format!(
            "http://{}/poll?token={t}&since={}&timeout=30",
            server.public,
            first["cursor"].as_str().unwrap()
        );
        let http = server.http.clone();
        held.push(tokio::spawn(async move {
            let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            (body, Instant::now())
        }));
    }
    wait_until("300 polls held", Duration::from_secs(30), || async {
        let mut open = 0;
        for server in &n {
            open += stats(server).await["open_polls"].as_u64().unwrap();
        }
        open == HELD as u64
    })
    .await;
    let before = redis.used_memory().await;
    let payload = format!(r#"{{"text":"{}"}}"#, "x".repeat(1000));
    let sent = Instant::now();
    n[0].post_ok(&format!(r#"<message channel="big">{payload}</message>"#), 1)
        .await;
    let acked = sent.elapsed();
    let mut last = Duration::ZERO;
    for h in held {
        let (body, at) = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body["messages"][0]["channel"], "big", "{body}");
        last = last.max(at.saturating_duration_since(sent));
    }
    let after = redis.used_memory().await;
    let payloads = redis.payload_keys().await;
    assert_eq!(
        payloads.len(),
        redis.payload_copies(),
        "stored once (per slot group in a cluster): {payloads:?}"
    );
    let s = stats(&n[1]).await;
    assert_eq!(s["queued_messages"], MEMBERS as u64, "{s}");
    eprintln!(
        "{kind:?}: fan-out to {MEMBERS} members (1 KB payload), {HELD} polls held over 3 nodes: <ok> after {acked:?}, \
         last held poll answered after {last:?}; Redis memory +{} bytes ({} B per member entry; {} payload copies)",
        after.saturating_sub(before),
        after.saturating_sub(before) / MEMBERS as u64,
        payloads.len()
    );
}

/// A batch spread over slot groups that a limit refuses in one of them
/// applies nothing in any (on a Cluster each group's share is its own
/// script: they are all checked before any applies).
async fn a_refused_batch_applies_nothing_in_any_group(kind: Kind) {
    let dir = Scratch::new("refused-batch");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = node(
        &redis,
        &dir.0,
        &[("COMETBOX_LIMITS__MAX_CHANNELS_PER_CLIENT", "2")],
    )
    .await;
    // Twenty clients (spread over every group of a Cluster), then a
    // subscribe past the limit, last.
    let mut batch: String = (0..20)
        .map(|i| format!(r#"<message to="r{i}">{{"i":{i}}}</message>"#))
        .collect();
    for ch in ["a", "b", "c"] {
        batch.push_str(&format!(r#"<subscribe client="zed" channel="{ch}"/>"#));
    }
    let (status, body) = n.post(&format!("<batch>{batch}</batch>")).await.unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too-large"), "{body}");
    for i in 0..20 {
        let body = poll_ok(&n, &token(&format!("r{i}"), &[]), "timeout=0").await;
        assert!(
            ids(&body).is_empty(),
            "r{i} got a message of a refused batch: {body}"
        );
    }
    // The same batch within the limit is applied whole.
    let fits = batch.replace(r#"<subscribe client="zed" channel="c"/>"#, "");
    n.post_ok(&format!("<batch>{fits}</batch>"), 22).await;
    for i in 0..20 {
        let body = poll_ok(&n, &token(&format!("r{i}"), &[]), "timeout=0").await;
        assert_eq!(ids(&body).len(), 1, "r{i}: {body}");
    }
}

/// A Cluster whose master is down while a batch spread over every group
/// comes: the answer says exactly what was applied (`partly-applied` with
/// the applied command numbers, or `storage-unavailable` when nothing was),
/// never "nothing" when something was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_a_dead_master_cut_says_what_was_applied() {
    let dir = Scratch::new("partly-applied");
    let mut redis = TestRedis::start(Kind::Cluster, &dir.0.join("redis"), Persistence::Aof).await;
    let n = node(&redis, &dir.0, &[]).await;
    // Every client exists before, so each group's share is its own.
    let batch = |tag: &str| -> String {
        (0..20)
            .map(|i| format!(r#"<message to="p{i}">"{tag}"</message>"#))
            .collect()
    };
    n.post_ok(&format!("<batch>{}</batch>", batch("before")), 20)
        .await;
    redis.servers[0].kill9().await;
    let (mut status, mut body) = (0, String::new());
    // The first calls after the kill may fail on every group (the
    // connection notices the dead master); the next ones reach the live
    // masters. Until the cluster itself marks the master failed.
    for _ in 0..20 {
        (status, body) = n
            .post(&format!("<batch>{}</batch>", batch("during")))
            .await
            .unwrap();
        if status != 503 || body.contains("partly-applied") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{status} {body}");
    assert_eq!(status, 503, "{body}");
    let applied: Vec<usize> = if body.contains(r#"code="partly-applied""#) {
        let attr = body.split(r#"applied=""#).nth(1).unwrap();
        let list = &attr[..attr.find('"').unwrap()];
        list.split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    } else {
        assert!(body.contains("storage-unavailable"), "{body}");
        Vec::new()
    };
    eprintln!("partly applied: {applied:?} ({body})");
    redis.servers[0].restart().await;
    redis.wait_ready().await;
    for i in 0..20 {
        let client = format!("p{i}");
        let tok = token(&client, &[]);
        let body = loop {
            let (status, body) = n.poll(&tok, "timeout=0").await.unwrap();
            if status == 200 {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let datas: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_str().unwrap())
            .collect();
        let during = datas.contains(&"during");
        assert_eq!(
            during,
            applied.contains(&(i + 1)),
            "{client}: the reply said {applied:?}, the mailbox holds {datas:?}"
        );
    }
}

/// A poll whose browser leaves while its start script is in flight (Redis
/// paused) ends its lease when the script has run, instead of holding one
/// of the client's `max_polls_per_client` for its timeout plus 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poll_dropped_during_its_start_leaves_no_lease() {
    use tokio::io::AsyncWriteExt;
    let dir = Scratch::new("dropped-start");
    let redis = TestRedis::start(Kind::Single, &dir.0.join("redis"), Persistence::None).await;
    let n = node(
        &redis,
        &dir.0,
        &[
            ("COMETBOX_LIMITS__MAX_POLLS_PER_CLIENT", "1"),
            ("COMETBOX_STORE__TIMEOUT", "5s"),
        ],
    )
    .await;
    let t = token("leaver", &[]);
    poll_ok(&n, &t, "timeout=0").await;
    redis.servers[0]
        .command(&["CLIENT", "PAUSE", "1000", "WRITE"])
        .await
        .expect("CLIENT PAUSE");
    let mut browser = tokio::net::TcpStream::connect(&n.public).await.unwrap();
    let request = format!("GET /poll?token={t}&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n");
    browser.write_all(request.as_bytes()).await.unwrap();
    // The poll is in its start script (paused); the browser leaves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(browser);
    wait_until(
        "the client's one poll slot is free again",
        Duration::from_secs(15),
        || async {
            let (status, _) = n.poll(&t, "timeout=0").await.expect("poll answers");
            status == 200
        },
    )
    .await;
}

crate::on_both!(
    a_refused_batch_applies_nothing_in_any_group,
    cross_node_delivery_and_alternating_polls,
    channel_fan_out_across_nodes,
    node_killed_under_load_loses_nothing,
    redis_restart_with_and_without_persistence,
    redis_down_then_back,
    limits_and_eviction_are_cluster_wide,
    fan_out_to_10000_members_over_3_nodes,
);

/// `--check-config` says whether Redis answers (one server, and every
/// master of a Cluster), and succeeds when it does not: the server itself
/// starts and waits for Redis (it is the unit's `ExecStartPre`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_config_says_whether_redis_answers() {
    let dir = Scratch::new("check-config");
    let check = |env: Vec<(&'static str, String)>| async move {
        let out = tokio::process::Command::new(crate::harness::bin())
            .arg("--check-config")
            .env("COMETBOX_STORE__KIND", "redis")
            .env("COMETBOX_STORE__TIMEOUT", "2s")
            .envs(env)
            .output()
            .await
            .expect("the binary runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for kind in [Kind::Single, Kind::Cluster] {
        let mut redis =
            TestRedis::start(kind, &dir.0.join(format!("{kind:?}")), Persistence::None).await;
        let said = check(redis.store_env()).await;
        assert!(said.contains("redis: answers"), "{kind:?}: {said}");
        let env = redis.store_env();
        redis.stop().await;
        let said = check(env).await;
        assert!(
            said.contains("redis: does not answer now"),
            "{kind:?}: {said}"
        );
    }
}
