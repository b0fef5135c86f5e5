//! The store conformance suite at the level where the `redis` store works:
//! the hub's behaviour as a backend and a browser see it (append, ids,
//! cursors, `reset`, retention, byte budget, membership, disconnect), one
//! body of checks run against every store: memory, disk, one Redis server
//! and a 3-master Redis Cluster.
//!
//! (`src/store/conformance.rs` checks the per-mailbox seam the memory and
//! disk stores share; Redis does not use that seam: its mailboxes are Lua
//! scripts, so the same behaviours are checked here through the real
//! binary.) Every check reads with cursors into mailboxes that hold
//! messages, so a store ignoring epochs or ids would answer differently.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, token, Scratch, Server, Spec};
use crate::nodes::{ids, node, numbers, poll_ok};
use crate::redis_server::{Kind, Persistence, TestRedis};

/// The stores.
#[derive(Clone, Copy, Debug)]
enum Store {
    Memory,
    Disk,
    Redis(Kind),
}

/// Limits that make retention visible quickly.
const LIMITS: [(&str, &str); 3] = [
    ("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", "5"),
    ("COMETBOX_LIMITS__MESSAGE_TTL", "3s"),
    ("COMETBOX_LIMITS__MAX_REPLY_BYTES", "2048"),
];

/// A node on `store` (and the Redis it needs, kept alive with it).
async fn start(store: Store, dir: &Scratch) -> (Server, Option<TestRedis>) {
    match store {
        Store::Redis(kind) => {
            let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
            (node(&redis, &dir.0, &LIMITS).await, Some(redis))
        }
        Store::Memory | Store::Disk => {
            let mut spec = Spec {
                store: None,
                run_dir: dir.0.clone(),
                env: Vec::new(),
            };
            if matches!(store, Store::Disk) {
                spec = Spec::disk(&dir.0.join("data"), &dir.0);
            }
            for (k, v) in LIMITS {
                spec = spec.with(k, v);
            }
            (harness::start(&spec).await, None)
        }
    }
}

async fn post(node: &Server, to: &str, range: std::ops::Range<i64>) {
    for i in range {
        node.post_ok(&format!(r#"<message to="{to}">{{"i":{i}}}</message>"#), 1)
            .await;
    }
}

/// Every check, on one node of `store`.
async fn conforms(store: Store) {
    let dir = Scratch::new(&format!("conformance-{store:?}").replace(['(', ')'], "-"));
    let (n, _redis) = start(store, &dir).await;
    ids_increase_and_reads_resume(&n).await;
    overflow_drops_the_oldest_and_resets_old_cursors(&n).await;
    cursors_of_another_mailbox_reset(&n).await;
    reads_stop_at_the_byte_budget(&n).await;
    membership_and_disconnect(&n).await;
    wildcards_reach_each_member_once(&n).await;
    retention_expiry_resets_but_own_ttl_does_not(&n).await;
    since_now_carries_only_what_follows(&n).await;
}

/// `since=now` answers nothing of what the mailbox held, with a cursor
/// after it; from that cursor the next message comes alone.
async fn since_now_carries_only_what_follows(n: &Server) {
    let t = token("now", &[]);
    post(n, "now", 0..3).await;
    let body = poll_ok(n, &t, "since=now&timeout=0").await;
    assert_eq!(numbers(&body), Vec::<i64>::new(), "{body}");
    assert_ne!(body["reset"], true, "{body}");
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    post(n, "now", 3..4).await;
    let body = poll_ok(n, &t, &format!("since={cursor}&timeout=0")).await;
    assert_eq!(numbers(&body), [3], "{body}");
    assert_ne!(body["reset"], true, "{body}");
}

/// Ids strictly increase; a cursor resumes right after itself, from any
/// message, without `reset`.
async fn ids_increase_and_reads_resume(n: &Server) {
    let t = token("ada", &[]);
    post(n, "ada", 0..4).await;
    let body = poll_ok(n, &t, "timeout=0").await;
    assert_eq!(numbers(&body), [0, 1, 2, 3], "{body}");
    let got = ids(&body);
    harness::assert_ids_increase("ada", got.iter().map(String::as_str));
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, got[3], "the cursor is the last id");
    post(n, "ada", 4..6).await;
    let body = poll_ok(n, &t, &format!("since={cursor}&timeout=0")).await;
    assert_eq!(numbers(&body), [4, 5], "{body}");
    assert_ne!(body["reset"], true);
    let body = poll_ok(n, &t, &format!("since={}&timeout=0", got[1])).await;
    assert_eq!(numbers(&body), [2, 3, 4, 5], "from a middle id: {body}");
    assert_ne!(body["reset"], true);
    // Nothing new: an empty answer with the same cursor.
    let last = ids(&body)[3].clone();
    let body = poll_ok(n, &t, &format!("since={last}&timeout=0")).await;
    assert_eq!(numbers(&body), Vec::<i64>::new());
    assert_eq!(body["cursor"], last.as_str());
}

/// Beyond `mailbox_max_messages` (5) the oldest go; a cursor before what
/// was dropped gets `reset` and what is retained; the cursor of the last
/// dropped message lost nothing, so it does not.
async fn overflow_drops_the_oldest_and_resets_old_cursors(n: &Server) {
    let t = token("bea", &[]);
    post(n, "bea", 0..3).await;
    let first = ids(&poll_ok(n, &t, "timeout=0").await);
    post(n, "bea", 3..8).await; // 0, 1, 2 dropped
    let body = poll_ok(n, &t, &format!("since={}&timeout=0", first[0])).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [3, 4, 5, 6, 7], "{body}");
    let body = poll_ok(n, &t, &format!("since={}&timeout=0", first[2])).await;
    assert_ne!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [3, 4, 5, 6, 7], "{body}");
}

/// A cursor of one mailbox read in another: `reset` (epochs differ), even
/// where the other mailbox holds that id.
async fn cursors_of_another_mailbox_reset(n: &Server) {
    post(n, "cy", 0..3).await;
    post(n, "di", 0..3).await;
    let cy = ids(&poll_ok(n, &token("cy", &[]), "timeout=0").await);
    let body = poll_ok(n, &token("di", &[]), &format!("since={}&timeout=0", cy[0])).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [0, 1, 2], "{body}");
}

/// A reply stops at `max_reply_bytes` (2048) with at least one message;
/// the next poll resumes where it stopped.
async fn reads_stop_at_the_byte_budget(n: &Server) {
    let t = token("eve", &[]);
    let pad = "x".repeat(700);
    for i in 0..5 {
        n.post_ok(
            &format!(r#"<message to="eve">{{"i":{i},"pad":"{pad}"}}</message>"#),
            1,
        )
        .await;
    }
    let mut got = Vec::new();
    let mut since = String::new();
    for _ in 0..5 {
        let query = if since.is_empty() {
            "timeout=0".to_owned()
        } else {
            format!("since={since}&timeout=0")
        };
        let body = poll_ok(n, &t, &query).await;
        let page = numbers(&body);
        assert!(page.len() <= 2, "a page within 2048 bytes: {page:?}");
        if page.is_empty() {
            break;
        }
        got.extend(page);
        since = body["cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(got, [0, 1, 2, 3, 4], "every message once, in order");
}

/// Ingest subscriptions put a client's mailbox in a channel's fan-out; an
/// unsubscribe takes it out; a disconnect forgets the mailbox, so its old
/// cursor gets `reset` with only what came after.
async fn membership_and_disconnect(n: &Server) {
    n.post_ok(
        r#"<batch><subscribe client="fay" channel="news"/><subscribe client="gil" channel="news"/></batch>"#,
        2,
    )
    .await;
    n.post_ok(r#"<message channel="news">{"i":1}</message>"#, 1)
        .await;
    n.post_ok(r#"<unsubscribe client="gil" channel="news"/>"#, 1)
        .await;
    n.post_ok(r#"<message channel="news">{"i":2}</message>"#, 1)
        .await;
    let fay = poll_ok(n, &token("fay", &[]), "timeout=0").await;
    assert_eq!(numbers(&fay), [1, 2], "{fay}");
    assert_eq!(fay["messages"][0]["channel"], "news");
    let gil = poll_ok(n, &token("gil", &[]), "timeout=0").await;
    assert_eq!(numbers(&gil), [1], "{gil}");
    let cursor = gil["cursor"].as_str().unwrap().to_owned();
    n.post_ok(r#"<disconnect client="gil"/>"#, 1).await;
    post(n, "gil", 3..4).await;
    let body = poll_ok(n, &token("gil", &[]), &format!("since={cursor}&timeout=0")).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [3], "{body}");
}

/// `/room/*` holds one level below `/room/`, `/room/**` every level; a
/// client holding a pattern and a channel it matches gets each message
/// once; leaving the pattern ends its deliveries; a pattern is never a
/// message's target. (Members spread over every slot group of a cluster.)
async fn wildcards_reach_each_member_once(n: &Server) {
    let mut subscribes = String::new();
    for (who, channel) in [
        ("wia", "/room/*"),
        ("wib", "/room/**"),
        ("wic", "/room/a"),
        ("wic", "/room/*"),
        ("wic", "/room/**"),
        ("wid", "/other/*"),
    ] {
        subscribes.push_str(&format!(
            r#"<subscribe client="{who}" channel="{channel}"/>"#
        ));
    }
    n.post_ok(&format!("<batch>{subscribes}</batch>"), 6).await;
    n.post_ok(r#"<message channel="/room/a">{"i":1}</message>"#, 1)
        .await;
    n.post_ok(r#"<message channel="/room/a/b">{"i":2}</message>"#, 1)
        .await;
    n.post_ok(r#"<message channel="/roomy">{"i":3}</message>"#, 1)
        .await;
    let read = |who: &'static str| async move {
        numbers(&poll_ok(n, &token(who, &[]), "timeout=0").await)
    };
    assert_eq!(read("wia").await, [1], "one level below /room/");
    assert_eq!(read("wib").await, [1, 2], "every level below /room/");
    assert_eq!(read("wic").await, [1, 2], "each message once");
    assert_eq!(read("wid").await, Vec::<i64>::new());
    n.post_ok(r#"<unsubscribe client="wib" channel="/room/**"/>"#, 1)
        .await;
    n.post_ok(r#"<message channel="/room/c">{"i":4}</message>"#, 1)
        .await;
    let wib = poll_ok(n, &token("wib", &[]), "timeout=0").await;
    assert_eq!(numbers(&wib), [1, 2], "nothing after leaving: {wib}");
    let refused = n
        .post(r#"<message channel="/room/*">{"i":5}</message>"#)
        .await;
    assert_eq!(
        refused.expect("ingest answers").0,
        400,
        "a pattern is not a target"
    );
}

/// A message past `message_ttl` (3 s) was dropped before its reader came:
/// `reset`. One past its own shorter `ttl` was the backend's choice: no
/// `reset`, with a later message retained or with nothing left to carry
/// (as in `src/store/conformance.rs`).
async fn retention_expiry_resets_but_own_ttl_does_not(n: &Server) {
    let (own, dropped, alone) = (token("hal", &[]), token("ida", &[]), token("jon", &[]));
    let cursor = |body: Value| body["cursor"].as_str().unwrap().to_owned();
    let own_cursor = cursor(poll_ok(n, &own, "timeout=0").await);
    let dropped_cursor = cursor(poll_ok(n, &dropped, "timeout=0").await);
    let alone_cursor = cursor(poll_ok(n, &alone, "timeout=0").await);
    post(n, "jon", 0..1).await;
    n.post_ok(r#"<message to="hal" ttl="1">{"i":0}</message>"#, 1)
        .await;
    post(n, "ida", 0..1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    post(n, "hal", 1..2).await;
    post(n, "ida", 1..2).await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let body = poll_ok(n, &own, &format!("since={own_cursor}&timeout=0")).await;
    assert_ne!(body["reset"], true, "own ttl: {body}");
    assert_eq!(numbers(&body), [1], "{body}");
    let body = poll_ok(n, &dropped, &format!("since={dropped_cursor}&timeout=0")).await;
    assert_eq!(body["reset"], true, "message_ttl: {body}");
    assert_eq!(numbers(&body), [1], "{body}");
    // The mailbox's only message lapsed: nothing to carry, still a loss.
    let body = poll_ok(n, &alone, &format!("since={alone_cursor}&timeout=0")).await;
    assert_eq!(body["reset"], true, "message_ttl, nothing left: {body}");
    assert_eq!(numbers(&body), Vec::<i64>::new(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_conforms() {
    conforms(Store::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_conforms() {
    conforms(Store::Disk).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_conforms() {
    conforms(Store::Redis(Kind::Single)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_conforms() {
    conforms(Store::Redis(Kind::Cluster)).await
}
