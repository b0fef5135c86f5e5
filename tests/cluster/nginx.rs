//! Three (or two) real nodes behind a real nginx configured with the deploy
//! kit (`deploy/nginx/cometbox.conf` and `cometbox-upstream-cluster.conf`):
//! browsers' polls go through nginx, round robin over the nodes; backends
//! post to the nodes' ingest ports. Cross-node delivery, polls of one
//! client answered by the nodes in turn, channel fan-out, a node SIGKILLed
//! under load (nginx passes its held polls on; nothing acknowledged lost, no
//! `reset`), Redis stopped and started again (503s through nginx, then
//! recovery).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{token, wait_until, Scratch, Server};
use crate::nginx_server::Nginx;
use crate::nodes::{ingest_get, nodes, stats, PROMPT};
use crate::redis_server::{Persistence, RedisServer};

fn publics(n: &[Server]) -> Vec<String> {
    n.iter().map(|s| s.public.clone()).collect()
}

/// A poll through nginx that must answer 200 without `reset`; its body.
async fn poll_ok(nginx: &Nginx, token: &str, query: &str) -> Value {
    let (status, body) = nginx.poll(token, query).await.expect("nginx answers");
    assert_eq!(status, 200, "poll through nginx ?{query}: {body}");
    assert_ne!(body["reset"], true, "{body}");
    body
}

fn data_of(body: &Value, field: &str) -> Vec<i64> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"][field].as_i64().expect("numbered message"))
        .collect()
}

/// A poll held through nginx, answered later: the body and when.
fn hold(nginx: &Nginx, token: &str, query: &str) -> tokio::task::JoinHandle<(Value, Instant)> {
    let (http, url) = (
        nginx.http.clone(),
        nginx.url(&format!("poll?token={token}&{query}")),
    );
    tokio::spawn(async move {
        let reply = http.get(url).send().await.expect("nginx answers");
        assert_eq!(reply.status().as_u16(), 200);
        (reply.json::<Value>().await.unwrap(), Instant::now())
    })
}

/// Open polls per node, each as the node itself counts them.
async fn open_per_node(n: &[Server]) -> Vec<u64> {
    let mut open = Vec::new();
    for server in n {
        open.push(stats(server).await["open_polls"].as_u64().unwrap());
    }
    open
}

/// Through nginx: one client's polls go to every node in turn and read one
/// mailbox (each message once, in order); a poll held on one node is
/// answered promptly for a message posted on another; a channel message
/// reaches members whose polls nginx spread over all three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_polls_alternate_deliver_cross_node_and_fan_out() {
    let dir = Scratch::new("nginx-cross");
    let redis = RedisServer::start(&dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis.url(), &dir.0, 3).await;
    let nginx = Nginx::start(&dir.0.join("nginx"), &publics(&n)).await;

    // Alternating: 30 polls with the cursor, a message posted on a
    // different node's ingest before each.
    let alt = token("alt", &[]);
    let mut cursor = poll_ok(&nginx, &alt, "timeout=0").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut got = Vec::new();
    for i in 0..30 {
        n[i % 3]
            .post_ok(&format!(r#"<message to="alt">{{"k":{i}}}</message>"#), 1)
            .await;
        let body = poll_ok(&nginx, &alt, &format!("since={cursor}&timeout=0")).await;
        got.extend(data_of(&body, "k"));
        cursor = body["cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(got, (0..30).collect::<Vec<_>>(), "each once, in order");
    let answered_by = nginx.upstreams_of(&format!("token={alt}"));
    assert_eq!(answered_by.len(), 31, "{answered_by:?}");
    let distinct: BTreeSet<&String> = answered_by.iter().collect();
    assert_eq!(
        distinct,
        publics(&n).iter().collect(),
        "every node answered some of the client's polls"
    );
    let switches = answered_by.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches >= 20,
        "consecutive polls went to different nodes ({switches} switches): {answered_by:?}"
    );

    // Cross-node: a poll held through nginx, a message posted on a node
    // that is not the one holding it.
    let mut latencies = Vec::new();
    for i in 0..6 {
        let held = hold(&nginx, &alt, &format!("since={cursor}&timeout=20"));
        wait_until("the held poll is open on a node", PROMPT, || async {
            open_per_node(&n).await.iter().sum::<u64>() == 1
        })
        .await;
        let holder = open_per_node(&n).await.iter().position(|&o| o == 1);
        let poster = (holder.expect("one node holds it") + 1 + i % 2) % 3;
        let sent = Instant::now();
        n[poster]
            .post_ok(&format!(r#"<message to="alt">{{"x":{i}}}</message>"#), 1)
            .await;
        let (body, at) = tokio::time::timeout(PROMPT, held)
            .await
            .expect("answered promptly")
            .unwrap();
        assert_eq!(data_of(&body, "x"), vec![i as i64], "{body}");
        latencies.push(at.saturating_duration_since(sent));
        cursor = body["cursor"].as_str().unwrap().to_owned();
    }
    latencies.sort();
    eprintln!(
        "through nginx, post on node A -> poll held on node B answered: min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[3], latencies[5]
    );

    // Fan-out: 30 members join `room` through nginx and hold polls there.
    let members: Vec<String> = (0..30)
        .map(|i| token(&format!("fan{i}"), &["room"]))
        .collect();
    let mut held = Vec::new();
    for t in &members {
        let body = poll_ok(&nginx, t, "channels=room&timeout=0").await;
        let since = body["cursor"].as_str().unwrap().to_owned();
        held.push(hold(&nginx, t, &format!("since={since}&timeout=20")));
    }
    wait_until("30 polls held over the nodes", PROMPT, || async {
        open_per_node(&n).await.iter().sum::<u64>() == 30
    })
    .await;
    let spread = open_per_node(&n).await;
    assert!(
        spread.iter().all(|&o| o > 0),
        "nginx spread the held polls over every node: {spread:?}"
    );
    n[1].post_ok(r#"<message channel="room">{"k":99}</message>"#, 1)
        .await;
    for h in held {
        let (body, _) = tokio::time::timeout(PROMPT, h)
            .await
            .expect("every member answered")
            .unwrap();
        assert_eq!(data_of(&body, "k"), vec![99], "{body}");
        assert_eq!(body["messages"][0]["channel"], "room");
    }
    eprintln!("fan-out through nginx: held polls per node {spread:?}");
}

/// What one browser-like poller saw.
#[derive(Default, Debug)]
struct Seen {
    got: Vec<u64>,
    /// Statuses other than 200 and transport errors, in order.
    failures: Vec<String>,
    resets: usize,
}

/// Polls through nginx with its cursor like client-js does (held polls of
/// `hold_s`, a short pause after a failure) until `stop`.
async fn poller(
    http: reqwest::Client,
    base: String,
    token: String,
    hold_s: u32,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let mut cursor: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let since = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&since={c}"));
        let url = format!("{base}poll?token={token}&timeout={hold_s}{since}");
        let failure = match http.get(url).send().await {
            Ok(reply) if reply.status() == 200 => match reply.json::<Value>().await {
                Ok(body) => {
                    let mut seen = seen.lock().unwrap();
                    if body["reset"] == true && cursor.is_some() {
                        seen.resets += 1;
                    }
                    seen.got.extend(
                        body["messages"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|m| m["data"]["k"].as_u64().unwrap()),
                    );
                    cursor = Some(body["cursor"].as_str().unwrap().to_owned());
                    None
                }
                Err(e) => Some(format!("body: {e}")),
            },
            Ok(reply) => Some(format!(
                "{} {}",
                reply.status(),
                reply.text().await.unwrap_or_default()
            )),
            Err(e) => Some(format!("transport: {e}")),
        };
        if let Some(f) = failure {
            seen.lock().unwrap().failures.push(f);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A node SIGKILLed while 9 clients hold polls through nginx and backends
/// post to every node: nginx passes the killed node's held polls on to the
/// others (the clients see no error), every acknowledged message arrives
/// once and in order, nobody gets `reset`. Three more clients get nothing
/// and hold one long poll each, one per node (opened one after the other:
/// round robin), so a poll is surely held on the node when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_a_node_killed_under_load_loses_nothing() {
    const CLIENTS: usize = 9;
    const POSTS: u64 = 900;
    let dir = Scratch::new("nginx-kill");
    let redis = RedisServer::start(&dir.0.join("redis"), Persistence::None).await;
    let mut n = nodes(&redis.url(), &dir.0, 3).await;
    let nginx = Nginx::start(&dir.0.join("nginx"), &publics(&n)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let idle: Vec<Arc<Mutex<Seen>>> = (0..3).map(|_| Arc::default()).collect();
    let mut idlers = Vec::new();
    for (i, s) in idle.iter().enumerate() {
        idlers.push(tokio::spawn(poller(
            nginx.http.clone(),
            nginx.url(""),
            token(&format!("idle{i}"), &[]),
            60,
            s.clone(),
            stop.clone(),
        )));
        wait_until("the idle poll is held", PROMPT, || async {
            open_per_node(&n).await.iter().sum::<u64>() == i as u64 + 1
        })
        .await;
    }
    assert_eq!(open_per_node(&n).await, [1, 1, 1], "round robin");
    let seen: Vec<Arc<Mutex<Seen>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut pollers = Vec::new();
    for (c, s) in seen.iter().enumerate() {
        pollers.push(tokio::spawn(poller(
            nginx.http.clone(),
            nginx.url(""),
            token(&format!("load{c}"), &[]),
            2,
            s.clone(),
            stop.clone(),
        )));
    }
    wait_until("every client holds a poll", PROMPT, || async {
        open_per_node(&n).await.iter().sum::<u64>() == CLIENTS as u64 + 3
    })
    .await;

    // Backends post round robin to every node's ingest; a post that fails
    // (the killed node) is not acknowledged, and not retried.
    let ingests: Vec<String> = n.iter().map(|s| s.ingest.clone()).collect();
    let acked = Arc::new(Mutex::new(Vec::<(usize, u64)>::new()));
    let writer = {
        let (http, acked) = (n[0].http.clone(), acked.clone());
        tokio::spawn(async move {
            for k in 0..POSTS {
                let c = (k as usize) % CLIENTS;
                let ingest = &ingests[(k as usize / CLIENTS) % ingests.len()];
                let reply = http
                    .post(format!("http://{ingest}/"))
                    .header("content-type", "application/xml")
                    .body(format!(r#"<message to="load{c}">{{"k":{k}}}</message>"#))
                    .send()
                    .await;
                if matches!(&reply, Ok(r) if r.status() == 200) {
                    acked.lock().unwrap().push((c, k));
                }
                if k % 30 == 0 {
                    // Let the polls be answered and re-held now and then.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    wait_until(
        "a third of the posts acknowledged",
        Duration::from_secs(30),
        || async { acked.lock().unwrap().len() as u64 >= POSTS / 3 },
    )
    .await;
    let open_at_kill = open_per_node(&n).await;
    let killed = n.remove(1);
    let killed_addr = killed.public.clone();
    killed.kill9().await;
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "node killed with {} polls held on it (per node {open_at_kill:?}); {} of {POSTS} posts acknowledged",
        open_at_kill[1],
        acked.len()
    );
    wait_until(
        "every acknowledged message reached its client",
        Duration::from_secs(60),
        || async {
            acked
                .iter()
                .all(|(c, k)| seen[*c].lock().unwrap().got.contains(k))
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for p in pollers {
        tokio::time::timeout(Duration::from_secs(20), p)
            .await
            .expect("pollers stop")
            .unwrap();
    }
    // The idle ones hold their (re-sent) poll for up to a minute: enough.
    for p in idlers {
        p.abort();
    }
    for (i, s) in idle.iter().enumerate() {
        let s = s.lock().unwrap();
        assert_eq!((s.resets, s.got.len()), (0, 0), "idle{i}");
        failures.extend(s.failures.iter().map(|f| format!("idle{i}: {f}")));
    }

    for (c, s) in seen.iter().enumerate() {
        let s = s.lock().unwrap();
        assert_eq!(s.resets, 0, "client load{c}: no reset");
        assert!(
            s.got.windows(2).all(|w| w[0] < w[1]),
            "client load{c}: in order, no duplicate: {:?}",
            s.got
        );
        assert!(
            s.got
                .iter()
                .all(|k| (*k as usize) % CLIENTS == c && *k < POSTS),
            "client load{c}: only its own messages"
        );
        failures.extend(s.failures.iter().map(|f| format!("load{c}: {f}")));
    }
    // nginx logs a request when it ends: the idle ones' when they were cut.
    let passed_on = || {
        nginx
            .access_log()
            .lines()
            .filter(|l| l.contains(&killed_addr) && l.contains(", "))
            .count()
    };
    wait_until("nginx logged the polls it passed on", PROMPT, || async {
        passed_on() >= 1
    })
    .await;
    let retried = passed_on();
    let errors = nginx.error_log();
    let why: Vec<(&str, usize)> = [
        "upstream prematurely closed connection",
        "Connection reset by peer",
        "Connection refused",
    ]
    .into_iter()
    .map(|reason| {
        let lines = errors.lines();
        (reason, lines.filter(|l| l.contains(reason)).count())
    })
    .collect();
    eprintln!(
        "polls nginx passed on from the killed node to another: {retried} (nginx's reasons: {why:?}); failures the clients saw: {failures:?}"
    );
    assert!(
        failures.is_empty(),
        "nginx retried on another node, the clients saw no error: {failures:?}\n{}",
        nginx.error_log()
    );
}

/// Redis stopped: a poll held through nginx ends with 503
/// `storage-unavailable` (passed on, not retried: every node says the same),
/// polls are refused with it; Redis back (AOF): polls through nginx work
/// again by themselves, from the same cursor, without `reset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_nginx_redis_stopped_and_started_again() {
    let dir = Scratch::new("nginx-redis-down");
    let mut redis = RedisServer::start(&dir.0.join("redis"), Persistence::Aof).await;
    let n = nodes(&redis.url(), &dir.0, 2).await;
    let nginx = Nginx::start(&dir.0.join("nginx"), &publics(&n)).await;
    let dora = token("dora", &[]);
    n[0].post_ok(r#"<message to="dora">{"k":1}</message>"#, 1)
        .await;
    let body = poll_ok(&nginx, &dora, "timeout=0").await;
    assert_eq!(data_of(&body, "k"), vec![1]);
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    let held = {
        let (http, url) = (
            nginx.http.clone(),
            nginx.url(&format!("poll?token={dora}&since={cursor}&timeout=30")),
        );
        tokio::spawn(async move {
            let reply = http.get(url).send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        })
    };
    wait_until("the poll is held", PROMPT, || async {
        let (_, body) = ingest_get(&n[0], "/clients/dora").await;
        body.contains("\"open_polls\":1")
    })
    .await;
    redis.stop().await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), held)
        .await
        .expect("the held poll ends")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage-unavailable"), "{body}");
    // Both nodes (round robin) refuse, with the JSON error.
    for _ in 0..4 {
        let (status, body) = nginx
            .poll(&dora, &format!("since={cursor}&timeout=0"))
            .await
            .unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("storage-unavailable")),
            "{body}"
        );
    }
    let down_statuses: Vec<String> = nginx
        .access_log()
        .lines()
        .filter(|l| l.contains(&dora))
        .skip(2)
        .map(|l| l.split('|').nth(3).unwrap_or("").to_owned())
        .collect();
    assert!(
        down_statuses.iter().all(|s| s == "503"),
        "one node tried per poll (no retry of a 503): {down_statuses:?}"
    );
    redis.restart().await;
    wait_until(
        "polls through nginx work again",
        Duration::from_secs(30),
        || async {
            matches!(nginx.poll(&dora, &format!("since={cursor}&timeout=0")).await,
                Ok((200, body)) if body["reset"] != true)
        },
    )
    .await;
    n[1].post_ok(r#"<message to="dora">{"k":2}</message>"#, 1)
        .await;
    for _ in 0..2 {
        // Each node in turn reads the same mailbox from the same cursor.
        let body = poll_ok(&nginx, &dora, &format!("since={cursor}&timeout=0")).await;
        assert_eq!(data_of(&body, "k"), vec![2], "{body}");
    }
}
