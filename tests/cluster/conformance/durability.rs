//! What a node's restart keeps, on each store: a clean stop and a SIGKILL
//! at a random moment of a write load. Disk and Redis keep everything
//! acknowledged, with the same ids, cursors honoured without `reset`, and
//! memberships (on Redis the node is replaced by another on the same
//! Redis); memory keeps nothing, and its old cursors `reset`
//! (PROTOCOL.md, "Storage"). The durability suite (`tests/durability/`)
//! kills the disk store many times over under a heavier load; here one
//! kill runs on every store, in the suite's own terms.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::harness::{self, id_parts, token, Msg, Rng, Server};
use crate::nodes::{ids, numbers, poll_ok};

use super::fixture::{Fixture, Stop, Store};
use super::looks::{cursor, post, presence, read_since, spread};

/// A clean stop and a start: disk and Redis deliver the same ids, honour
/// the cursors, keep memberships made by ingest and by `channels=`;
/// memory forgets the client, and its old cursor answers `reset`.
pub async fn a_clean_restart_keeps_what_the_store_promises(fx: Fixture) {
    let n = fx.node(&[]).await;
    let (r1, r2) = (token("r1", &[]), token("r2", &["room"]));
    n.post_ok(r#"<subscribe client="r1" channel="room"/>"#, 1)
        .await;
    poll_ok(&n, &r2, "channels=room&timeout=0").await;
    post(&n, "r1", 0..3).await;
    n.post_ok(r#"<message channel="room">{"i":3}</message>"#, 1)
        .await;
    let before = poll_ok(&n, &r1, "timeout=0").await;
    assert_eq!(numbers(&before), [0, 1, 2, 3], "{before}");
    let n = fx.restart(n, Stop::Clean).await;
    if !fx.store.keeps_state() {
        assert_eq!(presence(&n, "r1").await, None, "memory forgets");
        let body = read_since(&n, &r1, &cursor(&before)).await;
        assert_eq!(body["reset"], true, "{body}");
        assert_eq!(numbers(&body), Vec::<i64>::new(), "{body}");
        return;
    }
    let after = poll_ok(&n, &r1, "timeout=0").await;
    assert_eq!(
        after["messages"], before["messages"],
        "the same ids and data"
    );
    let body = read_since(&n, &r1, &cursor(&before)).await;
    assert_ne!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), Vec::<i64>::new(), "{body}");
    n.post_ok(r#"<message channel="room">{"i":4}</message>"#, 1)
        .await;
    assert_eq!(numbers(&read_since(&n, &r1, &cursor(&before)).await), [4]);
    assert_eq!(numbers(&poll_ok(&n, &r2, "timeout=0").await), [3, 4]);
}

const CLIENTS: usize = 6;
const BACKENDS: u64 = 3;
/// Posts per backend at most (the kill normally comes first).
const POSTS: u64 = 2000;

/// One post of a backend: each item's recipients and key (`b-s-k`), and
/// whether it got `<ok>`.
struct Post {
    items: Vec<(Vec<usize>, String)>,
    acked: bool,
}

/// What a browser saw before the kill: every message (id, key) and its
/// last cursor.
#[derive(Default)]
struct Seen {
    messages: Vec<(String, String)>,
    cursor: String,
}

fn key_of(m: &Msg) -> String {
    let d = &m.data;
    format!("{}-{}-{}", d["b"], d["s"], d["k"])
}

/// Backend `b`'s post number `s`: a message to a client, one to the
/// channel every client is in, or a batch of both kinds.
fn compose(
    b: u64,
    s: u64,
    rng: &mut Rng,
    clients: &[String],
) -> (String, Vec<(Vec<usize>, String)>) {
    let everyone: Vec<usize> = (0..CLIENTS).collect();
    let mut targets: Vec<Option<usize>> = match rng.range(0, 4) {
        0 | 1 => vec![Some(rng.range(0, CLIENTS as u64) as usize)],
        2 => vec![None],
        _ => vec![
            Some(rng.range(0, CLIENTS as u64) as usize),
            Some(rng.range(0, CLIENTS as u64) as usize),
            None,
        ],
    };
    let (mut xml, mut items) = (String::new(), Vec::new());
    for (k, target) in targets.drain(..).enumerate() {
        let data = format!(r#"{{"b":{b},"s":{s},"k":{k}}}"#);
        match target {
            Some(c) => {
                xml.push_str(&format!(r#"<message to="{}">{data}</message>"#, clients[c]));
                items.push((vec![c], format!("{b}-{s}-{k}")));
            }
            None => {
                xml.push_str(&format!(r#"<message channel="load">{data}</message>"#));
                items.push((everyone.clone(), format!("{b}-{s}-{k}")));
            }
        }
    }
    if items.len() > 1 {
        xml = format!("<batch>{xml}</batch>");
    }
    (xml, items)
}

/// Posts until the node stops answering `<ok>` (or `POSTS`).
async fn backend(n: &Server, b: u64, seed: u64, clients: &[String], posts: &Mutex<Vec<Post>>) {
    let mut rng = Rng::new(seed ^ b);
    for s in 0..POSTS {
        let (xml, items) = compose(b, s, &mut rng, clients);
        let answer = n.post(&xml).await;
        let acked = matches!(answer, Ok((200, _)));
        posts.lock().unwrap().push(Post { items, acked });
        if !acked {
            return;
        }
    }
}

/// Long-polls from its cursor until the node is gone; a reply is seen
/// once it has arrived whole.
async fn browser(n: &Server, client: &str, dead: &AtomicBool) -> Seen {
    let t = token(client, &[]);
    let mut seen = Seen {
        cursor: cursor(&poll_ok(n, &t, "timeout=0").await),
        ..Seen::default()
    };
    while !dead.load(Ordering::Relaxed) {
        let query = format!("since={}&timeout=1", seen.cursor);
        let Ok((200, body)) = n.poll(&t, &query).await else {
            break;
        };
        assert_ne!(body["reset"], true, "{client} before the kill: {body}");
        for m in body["messages"].as_array().unwrap() {
            let m = Msg::from_json(m);
            seen.messages.push((m.id.clone(), key_of(&m)));
        }
        seen.cursor = cursor(&body);
    }
    seen
}

/// Backends post messages and batches to six clients (spread over every
/// slot group) and to a channel they are all in, browsers long-poll,
/// and the node is SIGKILLed at a random moment; after the restart, for
/// each client: every acknowledged message is there once; nothing that
/// was not posted to it; ids strictly increase; what the browser saw kept
/// its ids; its cursor resumes without `reset` with exactly what follows
/// it; each backend's messages keep their order; a command that got no
/// answer is there for all its recipients or for none. (Not asked of a
/// Redis Cluster: it applies a command's slot-group shares one script
/// each, and what it promises when only some were applied is an answer
/// naming them, docs/storage.md "Redis Cluster", which a killed node
/// cannot give.) Memory: every cursor `reset`s on an empty mailbox.
pub async fn a_kill_under_write_load_loses_nothing_acknowledged(fx: Fixture) {
    let n = fx
        .node(&[("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", "100000")])
        .await;
    let clients = spread("load", CLIENTS);
    let joins: String = clients
        .iter()
        .map(|c| format!(r#"<subscribe client="{c}" channel="load"/>"#))
        .collect();
    n.post_ok(&format!("<batch>{joins}</batch>"), CLIENTS).await;
    let seed = harness::seed("a_kill_under_write_load_loses_nothing_acknowledged");
    let kill_after = Duration::from_millis(Rng::new(seed).range(300, 1500));
    let posts = Mutex::new(Vec::new());
    let dead = AtomicBool::new(false);
    let (_, seen, _) = tokio::join!(
        futures_util::future::join_all(
            (0..BACKENDS).map(|b| backend(&n, b, seed, &clients, &posts))
        ),
        futures_util::future::join_all(clients.iter().map(|c| browser(&n, c, &dead))),
        async {
            tokio::time::sleep(kill_after).await;
            // SAFETY: kill(2) on the node this check started, not reaped
            // yet (the fixture reaps it below).
            unsafe { libc::kill(n.pid() as libc::pid_t, libc::SIGKILL) };
            dead.store(true, Ordering::Relaxed);
        }
    );
    let posts = posts.into_inner().unwrap();
    let acked = posts.iter().filter(|p| p.acked).count();
    assert!(
        acked > 0,
        "nothing was acknowledged before the kill at {kill_after:?}"
    );
    let seen_total: usize = seen.iter().map(|s| s.messages.len()).sum();
    eprintln!(
        "{:?}: killed after {kill_after:?}: {acked} posts acknowledged, {} unanswered, {seen_total} messages seen by browsers",
        fx.store,
        posts.len() - acked
    );
    let n = fx.restart(n, Stop::Kill).await;
    if !fx.store.keeps_state() {
        for (client, seen) in clients.iter().zip(&seen) {
            assert_eq!(presence(&n, client).await, None, "memory forgets {client}");
            let body = read_since(&n, &token(client, &[]), &seen.cursor).await;
            assert_eq!(body["reset"], true, "{client}: {body}");
            assert_eq!(ids(&body), Vec::<String>::new(), "{client}: {body}");
        }
        return;
    }
    let mut held = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        held.push(verify_kept(&n, i, client, &posts, &seen[i]).await);
    }
    if fx.store != Store::RedisCluster {
        for post in posts.iter().filter(|p| !p.acked) {
            let there: Vec<bool> = post
                .items
                .iter()
                .flat_map(|(to, key)| to.iter().map(|c| held[*c].contains(key)))
                .collect();
            assert!(
                there.iter().all(|t| *t) || there.iter().all(|t| !*t),
                "an unanswered command is there for some recipients only: {:?} {there:?}",
                post.items
            );
        }
    }
}

/// The checks of [`a_kill_under_write_load_loses_nothing_acknowledged`]
/// for client `i`, on a store that keeps what it acknowledged; the keys
/// its mailbox holds.
async fn verify_kept(
    n: &Server,
    i: usize,
    client: &str,
    posts: &[Post],
    seen: &Seen,
) -> HashSet<String> {
    let t = token(client, &[]);
    let full = n.read_all(&t, None).await;
    let held: Vec<(String, String)> = full
        .messages
        .iter()
        .map(|m| (m.id.clone(), key_of(m)))
        .collect();
    harness::assert_ids_increase(client, held.iter().map(|(id, _)| id.as_str()));
    let keys: HashSet<String> = held.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(keys.len(), held.len(), "{client}: a message twice");
    let mine = |p: &Post| -> Vec<String> {
        p.items
            .iter()
            .filter(|(to, _)| to.contains(&i))
            .map(|(_, k)| k.clone())
            .collect()
    };
    let posted: HashSet<String> = posts.iter().flat_map(mine).collect();
    for key in &keys {
        assert!(
            posted.contains(key),
            "{client}: {key} was never posted to it"
        );
    }
    for key in posts.iter().filter(|p| p.acked).flat_map(mine) {
        assert!(keys.contains(&key), "{client}: acknowledged {key} lost");
    }
    for pair in &seen.messages {
        assert!(
            held.contains(pair),
            "{client}: seen {pair:?} is not there with that id"
        );
    }
    let resumed = n.read_all(&t, Some(&seen.cursor)).await;
    assert!(
        !resumed.reset,
        "{client}: the browser's cursor {} reset",
        seen.cursor
    );
    let (epoch, at) = id_parts(&seen.cursor);
    let after: Vec<&Msg> = full
        .messages
        .iter()
        .filter(|m| id_parts(&m.id).0 == epoch && id_parts(&m.id).1 > at)
        .collect();
    assert_eq!(
        resumed.messages.iter().collect::<Vec<_>>(),
        after,
        "{client}: exactly what follows"
    );
    let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in &full.messages {
        let at = (m.data["s"].as_i64().unwrap(), m.data["k"].as_i64().unwrap());
        let before = last.insert(m.data["b"].to_string(), at);
        assert!(
            before.is_none_or(|b| b < at),
            "{client}: backend {} out of order",
            m.data["b"]
        );
    }
    keys
}
