//! Backend hooks on the redis store: `connect` and `subscribe` are asked
//! before a poll or a stream opens, on any node, and a denial applies
//! nothing in Redis; a client online in the cluster is not asked again on
//! another node. [`Backend`] is the hook receiver the cluster tests share
//! (`presence.rs` checks the notifications with it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{token, wait_until, Scratch};
use crate::nodes::{ingest_get, node, stats};
use crate::redis_server::{Kind, Persistence, TestRedis};

/// A backend on loopback: records `(type, channel)` of every cancellable
/// request (`asked`) and every notification it took (`notified`, whole),
/// denies `subscribe` to `staff`, answers 503 to everything while
/// `failing` is set, refuses for good (`400`, recorded in `refused`)
/// every notification about a client whose id starts with `refused-`, and
/// answers 503 to those about a client starting with `flaky-` while
/// `flaky` is set (counting them in `flaky_refusals`).
pub struct Backend {
    pub url: String,
    asked: Arc<Mutex<Vec<(String, String)>>>,
    pub notified: Arc<Mutex<Vec<Value>>>,
    pub refused: Arc<Mutex<Vec<Value>>>,
    pub failing: Arc<AtomicBool>,
    pub flaky: Arc<AtomicBool>,
    pub flaky_refusals: Arc<AtomicUsize>,
    /// Whether a notification id may be taken (answered 200) more than
    /// once: only where a node is killed while it delivers (its window's
    /// events stay in Redis's queue and are sent again, same ids).
    /// Everywhere else, once.
    pub repeats_allowed: Arc<AtomicBool>,
}

impl Backend {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let notified = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let (record, note, fail) = (asked.clone(), notified.clone(), failing.clone());
        let refuse = refused.clone();
        let flaky = Arc::new(AtomicBool::new(false));
        let flaky_refusals = Arc::new(AtomicUsize::new(0));
        let (flake, flaked) = (flaky.clone(), flaky_refusals.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (record, note, fail) = (record.clone(), note.clone(), fail.clone());
                let refuse = refuse.clone();
                let (flake, flaked) = (flake.clone(), flaked.clone());
                tokio::spawn(async move {
                    let Some(event) = read_request(&mut socket).await else {
                        return;
                    };
                    let kind = event["type"].as_str().unwrap_or("").to_owned();
                    let channel = event["channel"].as_str().unwrap_or("").to_owned();
                    let cancellable = matches!(kind.as_str(), "connect" | "subscribe" | "publish");
                    let about = event["client"].as_str().unwrap_or("");
                    let refused = !cancellable && about.starts_with("refused-");
                    let flaked_now = !cancellable
                        && about.starts_with("flaky-")
                        && flake.load(Ordering::Relaxed);
                    let (status, answer) = if fail.load(Ordering::Relaxed) {
                        ("503 Service Unavailable", r#"{"error": "down"}"#)
                    } else if flaked_now {
                        flaked.fetch_add(1, Ordering::Relaxed);
                        ("503 Service Unavailable", r#"{"error": "later"}"#)
                    } else if refused {
                        refuse.lock().unwrap().push(event.clone());
                        ("400 Bad Request", r#"{"error": "not for us"}"#)
                    } else if kind == "subscribe" && channel == "staff" {
                        ("200 OK", r#"{"allow": false, "reason": "staff only"}"#)
                    } else {
                        ("200 OK", r#"{"allow": true}"#)
                    };
                    if !fail.load(Ordering::Relaxed) && !refused && !flaked_now {
                        if cancellable {
                            record.lock().unwrap().push((kind, channel));
                        } else {
                            note.lock().unwrap().push(event);
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        Backend {
            url,
            asked,
            notified,
            refused,
            failing,
            flaky,
            flaky_refusals,
            repeats_allowed: Arc::default(),
        }
    }

    /// The notifications taken so far about `client`: `(type, id, node)`,
    /// in the order they arrived. One taken twice fails the test (sent
    /// again after the backend took it), unless repeats are allowed, when
    /// they are left out.
    pub fn notified_about(&self, client: &str) -> Vec<(String, String, String)> {
        let mut seen = std::collections::HashSet::new();
        let repeats_allowed = self.repeats_allowed.load(Ordering::Relaxed);
        self.notified
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["client"] == client)
            .filter(|e| {
                let first = seen.insert(e["id"].as_str().unwrap_or("").to_owned());
                assert!(
                    first || repeats_allowed,
                    "{client}'s notification {} was taken twice: sent again after a 200",
                    e["id"]
                );
                first
            })
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or("").to_owned();
                (field("type"), field("id"), field("node"))
            })
            .collect()
    }

    /// What was asked so far, and forgets it.
    pub fn take(&self) -> Vec<(String, String)> {
        let mut got = std::mem::take(&mut *self.asked.lock().unwrap());
        got.sort();
        got
    }
}

/// One request's JSON body (head read up to the blank line, then
/// `content-length` bytes).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Value> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            while buf.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return serde_json::from_slice(&buf[end + 4..end + 4 + length]).ok();
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn asked(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(k, c)| ((*k).to_owned(), (*c).to_owned()))
        .collect();
    v.sort();
    v
}

async fn connect_and_subscribe_are_asked_on_any_node(kind: Kind) {
    let dir = Scratch::new("hooks");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    let hooks = [
        ("COMETBOX_HOOKS__URL", backend.url.as_str()),
        ("COMETBOX_HOOKS__SECRET", "hook-secret"),
    ];
    let a = node(&redis, &dir.0, &hooks).await;
    let b = node(&redis, &dir.0, &hooks).await;
    let erin = token("erin", &["room", "staff"]);

    // Denied: nothing applied in Redis (no mailbox anywhere).
    let (status, body) = a.poll(&erin, "channels=staff&timeout=0").await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("denied")),
        "{body}"
    );
    assert_eq!(body["message"], "staff only", "{body}");
    assert_eq!(
        backend.take(),
        asked(&[("connect", ""), ("subscribe", "staff")])
    );
    let (status, _) = ingest_get(&b, "/clients/erin").await;
    assert_eq!(status, 404);

    // Allowed on node A: asked once, then the mailbox holds the channel.
    let (status, body) = a.poll(&erin, "channels=room&timeout=0").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        backend.take(),
        asked(&[("connect", ""), ("subscribe", "room")])
    );

    // Node B sees the client online holding `room`: nothing asked, for a
    // poll or a stream; a channel it does not hold is asked.
    let (status, body) = b.poll(&erin, "channels=room&timeout=0").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let stream = b
        .http
        .get(format!(
            "http://{}/events?token={erin}&channels=room",
            b.public
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    drop(stream);
    assert_eq!(backend.take(), asked(&[]));
    let (status, body) = b.poll(&erin, "channels=staff&timeout=0").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(backend.take(), asked(&[("subscribe", "staff")]));
}

crate::on_both!(connect_and_subscribe_are_asked_on_any_node);

/// A notification the backend refuses for good (`400`) is dropped after one
/// attempt and counted in `/stats`: it does not hold up the queue it is in
/// (on one Redis, every client's).
async fn a_refused_notification_holds_up_nobody(kind: Kind) {
    let dir = Scratch::new("hooks-refused");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    let hooks = [
        ("COMETBOX_HOOKS__URL", backend.url.as_str()),
        ("COMETBOX_HOOKS__SECRET", "hook-secret"),
        ("COMETBOX_HOOKS__ON_ERROR", "allow"),
        ("COMETBOX_HOOKS__OFFLINE_AFTER", "60s"),
        ("COMETBOX_HOOKS__RETRY_MAX", "200ms"),
    ];
    let a = node(&redis, &dir.0, &hooks).await;
    let refused: Vec<String> = (0..4).map(|i| format!("refused-{i}")).collect();
    let fine: Vec<String> = (0..6).map(|i| format!("fine-{i}")).collect();
    for client in refused.iter().chain(&fine) {
        let (status, body) = a.poll(&token(client, &[]), "timeout=0").await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let online = |client: &String| {
        backend
            .notified_about(client)
            .iter()
            .any(|(kind, _, _)| kind == "online")
    };
    wait_until(
        "the fine clients' online",
        Duration::from_secs(30),
        || async { fine.iter().all(online) },
    )
    .await;
    let rejected = || async {
        let (_, stats) = ingest_get(&a, "/stats").await;
        serde_json::from_str::<Value>(&stats).unwrap()["hooks"]["rejected"].as_u64()
    };
    wait_until("the refusals counted", Duration::from_secs(30), || async {
        rejected().await == Some(4)
    })
    .await;
    // Not retried: one request per refused event, however long we wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refusals = backend.refused.lock().unwrap().clone();
    let ids: std::collections::HashSet<&str> =
        refusals.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((refusals.len(), ids.len()), (4, 4), "{refusals:?}");
    assert_eq!(rejected().await, Some(4));
}

crate::on_both!(a_refused_notification_holds_up_nobody);

/// The Redis queue is bounded like one node's (`hooks.max_pending`): with
/// the backend down, opening events past it are dropped and counted, and
/// their closing events are not queued either (whole pairs only). One
/// Redis: with a Cluster the bound is per slot group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redis_queue_is_bounded_and_drops_whole_pairs() {
    let dir = Scratch::new("hooks-bounded");
    let redis = TestRedis::start(Kind::Single, &dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    backend.failing.store(true, Ordering::Relaxed);
    let hooks = [
        ("COMETBOX_HOOKS__URL", backend.url.as_str()),
        ("COMETBOX_HOOKS__SECRET", "hook-secret"),
        ("COMETBOX_HOOKS__ON_ERROR", "allow"),
        ("COMETBOX_HOOKS__OFFLINE_AFTER", "1s"),
        ("COMETBOX_HOOKS__RETRY_MAX", "200ms"),
        ("COMETBOX_HOOKS__MAX_PENDING", "2"),
        ("COMETBOX_HOOKS__EVENTS", "online,offline"),
    ];
    let a = node(&redis, &dir.0, &hooks).await;
    let clients: Vec<String> = (0..4).map(|i| format!("cap-{i}")).collect();
    for client in &clients {
        let (status, body) = a.poll(&token(client, &[]), "timeout=0").await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let dropped = || async { stats(&a).await["hooks"]["dropped"].as_u64() };
    assert_eq!(dropped().await, Some(2), "{}", stats(&a).await);
    for client in &clients {
        a.post_ok(&format!(r#"<disconnect client="{client}"/>"#), 1)
            .await;
    }
    // The sweep (every 250 ms) queues the offlines of the announced pairs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    backend.failing.store(false, Ordering::Relaxed);
    let types = |client: &String| -> Vec<String> {
        backend
            .notified_about(client)
            .into_iter()
            .map(|(kind, _, _)| kind)
            .collect()
    };
    wait_until("two whole pairs", Duration::from_secs(30), || async {
        clients
            .iter()
            .filter(|c| types(c) == ["online", "offline"])
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let silent = clients.iter().filter(|c| types(c).is_empty()).count();
    assert_eq!(silent, 2, "the other two: nothing, not half a pair");
    assert_eq!(dropped().await, Some(2));
}

/// A notification the backend cannot take for now (`503`) is retried until
/// it can, and delivered once, while the other clients' notifications of
/// the same queue go out meanwhile (on one Redis, one queue for all).
async fn a_retried_notification_holds_up_nobody(kind: Kind) {
    let dir = Scratch::new("hooks-flaky");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    backend.flaky.store(true, Ordering::Relaxed);
    let hooks = [
        ("COMETBOX_HOOKS__URL", backend.url.as_str()),
        ("COMETBOX_HOOKS__SECRET", "hook-secret"),
        ("COMETBOX_HOOKS__ON_ERROR", "allow"),
        ("COMETBOX_HOOKS__OFFLINE_AFTER", "60s"),
        ("COMETBOX_HOOKS__RETRY_MAX", "200ms"),
    ];
    let a = node(&redis, &dir.0, &hooks).await;
    let poll = |client: String| {
        let a = &a;
        async move {
            let (status, body) = a.poll(&token(&client, &[]), "timeout=0").await.unwrap();
            assert_eq!(status, 200, "{body}");
        }
    };
    poll("flaky-0".into()).await;
    wait_until("flaky-0 refused twice", Duration::from_secs(30), || async {
        backend.flaky_refusals.load(Ordering::Relaxed) >= 2
    })
    .await;
    let fine: Vec<String> = (0..6).map(|i| format!("steady-{i}")).collect();
    for client in &fine {
        poll(client.clone()).await;
    }
    let online = |client: &str| {
        backend
            .notified_about(client)
            .iter()
            .filter(|(kind, _, _)| kind == "online")
            .count()
    };
    wait_until(
        "the other clients' online while flaky-0's is retried",
        Duration::from_secs(30),
        || async { fine.iter().all(|c| online(c) == 1) },
    )
    .await;
    assert_eq!(online("flaky-0"), 0);
    backend.flaky.store(false, Ordering::Relaxed);
    wait_until("flaky-0's online", Duration::from_secs(30), || async {
        online("flaky-0") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let taken = backend.notified.lock().unwrap().clone();
    let flaky: Vec<&Value> = taken.iter().filter(|e| e["client"] == "flaky-0").collect();
    assert_eq!(flaky.len(), 1, "taken once: {flaky:?}");
    let (_, stats) = ingest_get(&a, "/stats").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert!(stats["hooks"]["retries"].as_u64().unwrap() >= 2, "{stats}");
}

crate::on_both!(a_retried_notification_holds_up_nobody);
