//! The instance marker: a Redis that went back in time with the mailbox
//! still there (restarted from a stale snapshot, a replica promoted before
//! it had every write) makes cursors `reset`, even a cursor below the new
//! head, whose ids Redis has given again to other messages. Without the
//! marker such a cursor would resume past the new messages: a silent skip.

use std::time::{Duration, Instant};

use crate::harness::{token, Scratch, Server};
use crate::nodes::{ids, node, nodes, numbers, poll_ok};
use crate::redis_server::{Kind, Persistence, RedisServer, TestRedis};

/// `n` messages to `client`, numbered from `from`.
async fn post(node: &Server, client: &str, from: usize, n: usize) {
    for i in from..from + n {
        node.post_ok(
            &format!(r#"<message to="{client}">{{"i":{i}}}</message>"#),
            1,
        )
        .await;
    }
}

/// Every server snapshots (`SAVE`) with five messages stored; three more
/// are read; Redis is killed and restarts from the snapshot, then gets four
/// new messages, which take ids 6 to 9 again. A cursor at 8 (below the new
/// head, 9) must `reset` and see the new messages.
async fn restart_from_a_stale_snapshot_resets(kind: Kind) {
    let dir = Scratch::new("stale-snapshot");
    let mut redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis, &dir.0, 2).await;
    let dora = token("dora", &[]);
    post(&n[0], "dora", 1, 5).await;
    assert_eq!(ids(&poll_ok(&n[1], &dora, "timeout=0").await).len(), 5);
    for server in &redis.servers {
        server.command(&["SAVE"]).await.expect("SAVE");
    }
    post(&n[0], "dora", 6, 3).await;
    let body = poll_ok(&n[1], &dora, "timeout=0").await;
    assert_eq!(numbers(&body), (1..=8).collect::<Vec<_>>());
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    redis.kill9().await;
    redis.restart().await;
    crate::harness::wait_until(
        "ingest works after the restart",
        Duration::from_secs(20),
        || async {
            matches!(
                n[0].post(r#"<message to="dora">{"i":100}</message>"#).await,
                Ok((200, _))
            )
        },
    )
    .await;
    post(&n[0], "dora", 101, 3).await;
    let body = poll_ok(&n[1], &dora, &format!("since={cursor}&timeout=0")).await;
    assert_eq!(body["reset"], true, "Redis went back in time: {body}");
    assert_eq!(
        numbers(&body),
        [1, 2, 3, 4, 5, 100, 101, 102, 103],
        "{body}"
    );
}

/// A replica promoted (`REPLICAOF NO ONE`) before it got the last three
/// messages; a node on it gets four new ones (ids 6 to 9 again): the cursor
/// at 8 from the old primary must `reset`.
async fn promoted_replica_behind_resets(_kind: Kind) {
    let dir = Scratch::new("promoted");
    let primary = RedisServer::start(&dir.0.join("primary"), Persistence::None).await;
    let replica = RedisServer::start_with(
        &dir.0.join("replica"),
        Persistence::None,
        None,
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ],
    )
    .await;
    let a = node(&primary.url(), &dir.0, &[]).await;
    let erik = token("erik", &[]);
    post(&a, "erik", 1, 5).await;
    assert_eq!(ids(&poll_ok(&a, &erik, "timeout=0").await).len(), 5);
    // The replica has all of that, then stops following.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let offset = |v: redis::RedisResult<redis::Value>| {
            let text = match v {
                Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(redis::Value::VerbatimString { text, .. }) => text,
                other => panic!("INFO: {other:?}"),
            };
            text.lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .map(|o| o.trim().to_owned())
        };
        let p = offset(primary.command(&["INFO", "replication"]).await);
        let r = offset(replica.command(&["INFO", "replication"]).await);
        if p.is_some() && p == r {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up: {p:?} {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica
        .command(&["REPLICAOF", "NO", "ONE"])
        .await
        .expect("promoted");
    post(&a, "erik", 6, 3).await;
    let body = poll_ok(&a, &erik, "timeout=0").await;
    assert_eq!(numbers(&body), (1..=8).collect::<Vec<_>>());
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    // The deployment now points at the promoted replica.
    let b = node(&replica.url(), &dir.0, &[]).await;
    post(&b, "erik", 100, 4).await;
    let body = poll_ok(&b, &erik, &format!("since={cursor}&timeout=0")).await;
    assert_eq!(
        body["reset"], true,
        "the promoted replica was behind: {body}"
    );
    assert_eq!(
        numbers(&body),
        [1, 2, 3, 4, 5, 100, 101, 102, 103],
        "{body}"
    );
    // And a cursor handed out by the promoted replica is honoured there.
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    post(&b, "erik", 104, 1).await;
    let body = poll_ok(&b, &erik, &format!("since={cursor}&timeout=0")).await;
    assert_ne!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [104], "{body}");
}

/// A queue entry whose payload key is gone (evicted under `maxmemory`,
/// deleted by hand) is a loss: the poll that meets it answers `reset`, and
/// so does a later poll from a cursor before it; it never skips silently.
async fn a_lost_payload_resets(kind: Kind) {
    let dir = Scratch::new("lost-payload");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await;
    let n = nodes(&redis, &dir.0, 1).await;
    let fay = token("fay", &[]);
    post(&n[0], "fay", 1, 1).await;
    let first = poll_ok(&n[0], &fay, "timeout=0").await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    post(&n[0], "fay", 2, 2).await;
    // Message 2's payload key goes: its entry is the queue's second.
    let queue = redis.keys("*q:fay").await;
    assert_eq!(queue.len(), 1, "{queue:?}");
    let group = queue[0].strip_suffix("q:fay").unwrap().to_owned();
    let mut deleted = false;
    for server in &redis.servers {
        let Ok(redis::Value::Array(entries)) =
            server.command(&["LRANGE", &queue[0], "0", "-1"]).await
        else {
            continue; // not this server's slot
        };
        let entry = match &entries[1] {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("queue entry {other:?}"),
        };
        let pid = entry.rsplit(':').next().unwrap();
        let key = format!("{group}p:{pid}");
        let gone = server.command(&["DEL", &key]).await;
        assert!(
            matches!(gone, Ok(redis::Value::Int(1))),
            "DEL {key}: {gone:?}"
        );
        deleted = true;
    }
    assert!(deleted, "no server held the queue");
    let body = poll_ok(&n[0], &fay, &format!("since={cursor}&timeout=0")).await;
    assert_eq!(body["reset"], true, "message 2 was lost: {body}");
    assert_eq!(numbers(&body), [3], "{body}");
    let again = poll_ok(&n[0], &fay, &format!("since={cursor}&timeout=0")).await;
    assert_eq!(again["reset"], true, "the same old cursor: {again}");
    let next = body["cursor"].as_str().unwrap();
    let after = poll_ok(&n[0], &fay, &format!("since={next}&timeout=0")).await;
    assert_ne!(
        after["reset"], true,
        "a cursor past the loss holds: {after}"
    );
}

crate::on_both!(restart_from_a_stale_snapshot_resets, a_lost_payload_resets);

/// Promotion is one server's matter (a cluster promotes replicas itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promoted_replica_behind() {
    promoted_replica_behind_resets(Kind::Single).await
}
