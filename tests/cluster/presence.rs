//! Hook notifications on the redis store, cluster-wide, with a real hook
//! receiver ([`Backend`]): `online` once when a client first polls on any
//! node, no flapping while its polls move between nodes (one killed among
//! them), exactly one `offline` per `online` once no node has had a poll
//! open for `offline_after`; `subscribed` and `unsubscribed` for every
//! membership change, whichever node made it, in order with the others
//! (on one Redis and on a Cluster); and pending notifications survive the
//! death of every node (they wait in Redis).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::{token, wait_until, Scratch, Server};
use crate::hooks::Backend;
use crate::nodes::{node, poll_ok, RedisAt};
use crate::redis_server::{Kind, Persistence, RedisServer, TestRedis};

/// `offline_after` of these tests: short, so that they are, and long
/// enough that a loaded machine's pauses between polls stay well below it.
const OFFLINE_AFTER: Duration = Duration::from_secs(2);

/// A node with hooks to `backend`, named `name` in its events.
async fn hooked(redis: &impl RedisAt, dir: &Scratch, backend: &Backend, name: &str) -> Server {
    let offline_after = format!("{}s", OFFLINE_AFTER.as_secs());
    node(
        redis,
        &dir.0,
        &[
            ("COMETBOX_HOOKS__URL", backend.url.as_str()),
            ("COMETBOX_HOOKS__SECRET", "hook-secret"),
            ("COMETBOX_HOOKS__OFFLINE_AFTER", &offline_after),
            ("COMETBOX_HOOKS__ON_ERROR", "allow"),
            ("COMETBOX_HOOKS__NODE", name),
        ],
    )
    .await
}

/// The types of the notifications about `client`, in order, repeats out.
fn types(backend: &Backend, client: &str) -> Vec<String> {
    backend
        .notified_about(client)
        .into_iter()
        .map(|(kind, _, _)| kind)
        .collect()
}

/// Waits until the notifications about `client` are `want` (generously),
/// then a while longer (twice `offline_after`) to see that nothing else
/// comes, and checks again.
async fn expect_exactly(backend: &Backend, client: &str, want: &[&str]) {
    wait_until(
        &format!("{client}: notifications {want:?}"),
        Duration::from_secs(30),
        || async { types(backend, client).len() >= want.len() },
    )
    .await;
    assert_eq!(types(backend, client), want, "{client}");
    tokio::time::sleep(OFFLINE_AFTER * 2).await;
    assert_eq!(types(backend, client), want, "{client}: nothing more");
}

/// One `online` for polls on two nodes, alternating, held or a little
/// apart (less than `offline_after`); one `offline` once they stop; the
/// same again when the client comes back.
async fn online_and_offline_once_while_polls_move_between_nodes(kind: Kind) {
    let dir = Scratch::new("presence");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    let a = hooked(&redis, &dir, &backend, "node-a").await;
    let b = hooked(&redis, &dir, &backend, "node-b").await;
    let pia = token("pia", &[]);
    let mut cursor = poll_ok(&a, &pia, "timeout=0").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Held polls (1 s each), then polls a quarter of offline_after apart,
    // alternating nodes: about 3 offline_after in all.
    for i in 0..3 {
        let server = if i % 2 == 0 { &b } else { &a };
        cursor = poll_ok(server, &pia, &format!("since={cursor}&timeout=1")).await["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    for i in 0..5 {
        let server = if i % 2 == 0 { &b } else { &a };
        poll_ok(server, &pia, &format!("since={cursor}&timeout=0")).await;
        tokio::time::sleep(OFFLINE_AFTER / 4).await;
    }
    assert_eq!(types(&backend, "pia"), ["online"], "no flapping");
    expect_exactly(&backend, "pia", &["online", "offline"]).await;
    let first = backend.notified_about("pia");
    assert_eq!(first[0].2, "node-a", "online decided where the poll opened");
    assert!(
        ["node-a", "node-b"].contains(&first[1].2.as_str()),
        "{first:?}"
    );

    // Back, on the other node: a new pair.
    poll_ok(&b, &pia, "timeout=0").await;
    expect_exactly(&backend, "pia", &["online", "offline", "online", "offline"]).await;
    assert_eq!(backend.notified_about("pia")[2].2, "node-b");
}

crate::on_both!(online_and_offline_once_while_polls_move_between_nodes);

/// `subscribed` for a poll's `channels=` (after its `online`) and for a
/// backend's `<subscribe>`, nothing for one already held, `unsubscribed`
/// for an `<unsubscribe>` and for each channel a `<disconnect>` takes,
/// then the session's `offline`: in that order, whichever node made each
/// change, each once.
async fn membership_changes_are_notified_from_every_node(kind: Kind) {
    let dir = Scratch::new("presence-membership");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    let a = hooked(&redis, &dir, &backend, "node-a").await;
    let b = hooked(&redis, &dir, &backend, "node-b").await;
    poll_ok(&a, &token("mo", &["room"]), "channels=room&timeout=0").await;
    b.post_ok(r#"<subscribe client="mo" channel="news"/>"#, 1)
        .await;
    a.post_ok(r#"<subscribe client="mo" channel="news"/>"#, 1)
        .await;
    a.post_ok(r#"<unsubscribe client="mo" channel="news"/>"#, 1)
        .await;
    b.post_ok(r#"<disconnect client="mo"/>"#, 1).await;
    expect_exactly(
        &backend,
        "mo",
        &[
            "online",
            "subscribed",
            "subscribed",
            "unsubscribed",
            "unsubscribed",
            "offline",
        ],
    )
    .await;
    let channels: Vec<String> = backend
        .notified
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["client"] == "mo" && e["channel"].is_string())
        .map(|e| e["channel"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(channels, ["room", "news", "news", "room"]);
    let nodes: Vec<String> = backend
        .notified_about("mo")
        .into_iter()
        .map(|(_, _, node)| node)
        .collect();
    assert_eq!(
        nodes[..5],
        ["node-a", "node-a", "node-b", "node-a", "node-b"],
        "each stamped by the node that made the change"
    );
}

crate::on_both!(membership_changes_are_notified_from_every_node);

/// A poll held on a node that is SIGKILLed: the client carries on on the
/// other node, and stays online (no `offline`, no second `online`); once it
/// stops, one `offline`, after the killed node's lease lapsed (the poll's
/// timeout plus 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_does_not_make_its_clients_flap() {
    let dir = Scratch::new("presence-kill");
    let redis = RedisServer::start(&dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    let a = hooked(&redis.url(), &dir, &backend, "node-a").await;
    let b = hooked(&redis.url(), &dir, &backend, "node-b").await;
    let kai = token("kai", &[]);
    let cursor = poll_ok(&a, &kai, "timeout=0").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = {
        let (http, url) = (
            b.http.clone(),
            format!(
                "http://{}/poll?token={kai}&since={cursor}&timeout=2",
                b.public
            ),
        );
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
    };
    wait_until(
        "the poll is held on node B",
        Duration::from_secs(5),
        || async { crate::nodes::stats(&b).await["open_polls"] == 1 },
    )
    .await;
    // Events node B's window held when killed are sent again (same ids).
    backend
        .repeats_allowed
        .store(true, std::sync::atomic::Ordering::Relaxed);
    b.kill9().await;
    let _ = held.await;
    for _ in 0..8 {
        poll_ok(&a, &kai, &format!("since={cursor}&timeout=0")).await;
        tokio::time::sleep(OFFLINE_AFTER / 2).await;
    }
    assert_eq!(types(&backend, "kai"), ["online"], "no flapping");
    wait_until(
        "offline once the dead node's lease lapsed",
        Duration::from_secs(60),
        || async { types(&backend, "kai").len() >= 2 },
    )
    .await;
    expect_exactly(&backend, "kai", &["online", "offline"]).await;
}

/// The backend is down while a client comes online and goes offline; then
/// every node is SIGKILLed and a new one started: it delivers both, in
/// order, once the dead nodes' delivery lease lapsed. Nothing is left in
/// Redis's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_notifications_survive_every_node() {
    let dir = Scratch::new("presence-restart");
    let redis = RedisServer::start(&dir.0.join("redis"), Persistence::Aof).await;
    let backend = Backend::start().await;
    backend.failing.store(true, Ordering::Relaxed);
    let a = hooked(&redis.url(), &dir, &backend, "node-a").await;
    let b = hooked(&redis.url(), &dir, &backend, "node-b").await;
    poll_ok(&a, &token("rex", &[]), "timeout=0").await;
    let mut conn = redis.connection().await;
    wait_until(
        "online and offline queued in Redis",
        Duration::from_secs(20),
        || async {
            let queued: u64 = redis::cmd("LLEN")
                .arg("cometbox:hooks")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            queued == 2
        },
    )
    .await;
    a.kill9().await;
    b.kill9().await;
    backend.failing.store(false, Ordering::Relaxed);
    let _c = hooked(&redis.url(), &dir, &backend, "node-c").await;
    expect_exactly(&backend, "rex", &["online", "offline"]).await;
    let got = backend.notified_about("rex");
    assert_eq!(got[0].2, "node-a", "{got:?}");
    let left: u64 = redis::cmd("LLEN")
        .arg("cometbox:hooks")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the queue is empty once delivered");
}

/// A backend `<disconnect>` ends the client's session even when it polls
/// again at once, on another node, before any sweep: that poll is asked
/// `connect` again, and the old session's `offline` comes before the new
/// `online`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnect_ends_the_session_even_when_the_client_is_back_at_once() {
    let dir = Scratch::new("presence-disconnect");
    let redis = RedisServer::start(&dir.0.join("redis"), Persistence::None).await;
    let backend = Backend::start().await;
    let a = hooked(&redis.url(), &dir, &backend, "node-a").await;
    let b = hooked(&redis.url(), &dir, &backend, "node-b").await;
    let dex = token("dex", &[]);
    let connect = || vec![("connect".to_owned(), String::new())];
    poll_ok(&a, &dex, "timeout=0").await;
    assert_eq!(backend.take(), connect());
    poll_ok(&b, &dex, "timeout=0").await;
    assert_eq!(backend.take(), vec![], "online: not asked again");
    b.post_ok(r#"<disconnect client="dex"/>"#, 1).await;
    poll_ok(&a, &dex, "timeout=0").await;
    assert_eq!(backend.take(), connect(), "a new session is asked");
    expect_exactly(&backend, "dex", &["online", "offline", "online", "offline"]).await;
}
