//! The `disk` store in-process: what was acknowledged comes back after a
//! restart with the same ids, cursors honoured, memberships intact; a
//! second server cannot open the same path. (Killing the real binary at
//! random moments is the durability suite's job.)

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{cursor, datas, scratch_dir, token, wait_until, TestServer};

async fn disk_server(path: &Path) -> TestServer {
    let path = path.to_owned();
    TestServer::with(move |s| {
        s.store.kind = cometbox::store::StoreKind::Disk;
        s.store.path = path;
        s.limits.poll_timeout = Duration::from_millis(500);
    })
    .await
}

/// Stops a server and waits until it let go of its directory (the last
/// handle on the store may be dropped by a task finishing just after).
async fn stop(server: TestServer, path: &Path) {
    server.stop().await;
    let lock = std::fs::File::open(path.join("LOCK")).unwrap();
    wait_until(
        "the store's lock is released",
        Duration::from_secs(5),
        || {
            let free = lock.try_lock().is_ok();
            let _ = lock.unlock();
            async move { free }
        },
    )
    .await;
}

async fn restart(server: TestServer, path: &Path) -> TestServer {
    stop(server, path).await;
    disk_server(path).await
}

fn ids(reply: &Value) -> Vec<String> {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn acknowledged_messages_come_back_with_their_ids_and_cursors_hold() {
    let dir = scratch_dir("disk-restart");
    let server = disk_server(&dir).await;
    server
        .post_ok(
            r#"<batch><subscribe client="bob" channel="room"/><message to="alice">1</message><message to="alice">2</message></batch>"#,
            3,
        )
        .await;
    let (_, first, _) = server
        .poll_raw(&format!(
            "token={}&channels=room&timeout=0",
            token("carol", &["room"])
        ))
        .await;
    let carol_cursor = cursor(&first);
    let alice_first = server.poll("alice", "timeout=0").await;
    assert_eq!(datas(&alice_first), vec![json!(1), json!(2)]);
    let alice_cursor = cursor(&alice_first);
    server
        .post_ok(
            r#"<batch><message to="alice">3</message><message channel="room" event="chat">"hi"</message></batch>"#,
            2,
        )
        .await;
    let before = server
        .poll("alice", &format!("since={alice_cursor}&timeout=0"))
        .await;
    let bob_before = server.poll("bob", "timeout=0").await;

    let server = restart(server, &dir).await;
    let after = server
        .poll("alice", &format!("since={alice_cursor}&timeout=0"))
        .await;
    assert!(after.get("reset").is_none(), "{after}");
    assert_eq!(datas(&after), vec![json!(3)]);
    assert_eq!(ids(&after), ids(&before), "the same ids after the restart");
    let bob_after = server.poll("bob", "timeout=0").await;
    assert_eq!(ids(&bob_after), ids(&bob_before));
    let carol = server
        .poll("carol", &format!("since={carol_cursor}&timeout=0"))
        .await;
    assert_eq!(
        datas(&carol),
        vec![json!("hi")],
        "a channels= membership too"
    );
    let (_, presence) = server.presence("bob").await;
    assert_eq!(presence["channels"], json!(["room"]));

    // New messages continue the numbering, and survive another restart.
    server
        .post_ok(r#"<message channel="room">"again"</message>"#, 1)
        .await;
    let server = restart(server, &dir).await;
    let carol = server
        .poll("carol", &format!("since={}&timeout=0", cursor(&carol)))
        .await;
    assert_eq!(datas(&carol), vec![json!("again")]);
    assert!(carol.get("reset").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_path_is_refused_naming_it() {
    let dir = scratch_dir("disk-locked");
    let server = disk_server(&dir).await;
    let mut settings = cometbox::config::Settings::default();
    settings.store.kind = cometbox::store::StoreKind::Disk;
    settings.store.path = dir.clone();
    let err = cometbox::open_store(&settings).err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(dir.to_str().unwrap()) && text.contains("in use"),
        "{text}"
    );
    server.stop().await;
}

fn files(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let dir = scratch_dir("disk-torn");
    let server = disk_server(&dir).await;
    server
        .post_ok(
            r#"<batch><message to="tia">1</message><message to="tia">2</message></batch>"#,
            2,
        )
        .await;
    let reply = server.poll("tia", "timeout=0").await;
    stop(server, &dir).await;
    let newest = files(&dir, "journal-").pop().unwrap();
    let whole = std::fs::metadata(&newest).unwrap().len();
    // Half a record, as a crash in the middle of a write leaves it.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut torn, b"CBR1\xff\x00\x00\x00\x01\x02").unwrap();
    drop(torn);

    let server = disk_server(&dir).await;
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), whole, "cut back");
    let again = server.poll("tia", "timeout=0").await;
    assert_eq!(ids(&again), ids(&reply));
    let resumed = server
        .poll("tia", &format!("since={}&timeout=0", cursor(&reply)))
        .await;
    assert!(resumed.get("reset").is_none());
    server.post_ok(r#"<message to="tia">3</message>"#, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn damage_in_the_middle_resets_cursors_instead_of_skipping_silently() {
    let dir = scratch_dir("disk-damaged");
    let server = disk_server(&dir).await;
    for i in 0..3 {
        server
            .post_ok(&format!(r#"<message to="dan">{i}</message>"#), 1)
            .await;
    }
    let reply = server.poll("dan", "timeout=0").await;
    stop(server, &dir).await;
    let newest = files(&dir, "journal-").pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    // Two bytes before the last record's magic: inside the payload of the
    // record before it, so a whole record follows the damage (not a tail).
    let magics: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"CBR1")
        .map(|(i, _)| i)
        .collect();
    assert!(magics.len() >= 3, "{magics:?}");
    let target = magics[magics.len() - 1] - 2;
    bytes[target] ^= 0x55;
    std::fs::write(&newest, &bytes).unwrap();

    let server = disk_server(&dir).await;
    let after = server
        .poll("dan", &format!("since={}&timeout=0", cursor(&reply)))
        .await;
    assert_eq!(after["reset"], json!(true), "{after}");
    server.stop().await;
}

#[tokio::test]
async fn snapshots_bound_the_journal_and_keep_every_id() {
    let dir = scratch_dir("disk-compact");
    let path = dir.clone();
    let server = TestServer::with(move |s| {
        s.store.kind = cometbox::store::StoreKind::Disk;
        s.store.path = path;
        s.store.segment_bytes = 4096;
        s.limits.client_idle_timeout = Duration::from_secs(1);
    })
    .await;
    server
        .post_ok(r#"<subscribe client="sam" channel="news"/>"#, 1)
        .await;
    let payload = "x".repeat(200);
    for round in 0..40 {
        let batch: String = (0..5)
            .map(|i| {
                format!(r#"<message channel="news" type="text">{round}-{i}-{payload}</message>"#)
            })
            .collect();
        server.post_ok(&format!("<batch>{batch}</batch>"), 5).await;
    }
    wait_until("a snapshot is written", Duration::from_secs(10), || async {
        !files(&dir, "snapshot-").is_empty()
    })
    .await;
    // The snapshot file appears before the segments it covers are unlinked,
    // so the deletion is waited for rather than checked at one instant.
    wait_until(
        "the segments before the snapshot are deleted",
        Duration::from_secs(10),
        || async {
            files(&dir, "journal-")
                .first()
                .is_some_and(|first| !first.ends_with("journal-00000001.log"))
        },
    )
    .await;
    let before = server.poll("sam", "").await;
    let server = restart(server, &dir).await;
    let after = server.poll("sam", "").await;
    assert_eq!(
        ids(&after),
        ids(&before),
        "every retained message, same ids"
    );
    assert_eq!(server.presence("sam").await.1["channels"], json!(["news"]));
    server.stop().await;
}

/// A server stopped for longer than `client_idle_timeout` forgets nobody:
/// its browsers could not poll meanwhile, so the downtime is not idleness.
/// And a client that polled just before the stop (within one sweep, so
/// its activity was never recorded) is not evicted by the restart either.
#[tokio::test]
async fn downtime_and_an_unrecorded_poll_do_not_make_a_client_idle() {
    let dir = scratch_dir("disk-downtime");
    let idle = Duration::from_secs(2);
    let start = |path: &Path| {
        let path = path.to_owned();
        TestServer::with(move |s| {
            s.store.kind = cometbox::store::StoreKind::Disk;
            s.store.path = path;
            s.limits.poll_timeout = Duration::from_millis(200);
            s.limits.client_idle_timeout = idle;
        })
    };
    let server = start(&dir).await;
    server.post_ok(r#"<message to="ann">1</message>"#, 1).await;
    let first = server.poll("ann", "timeout=0").await;
    // Polls for most of an idle period, the last one just before the stop.
    for _ in 0..3 {
        tokio::time::sleep(idle / 2).await;
        server
            .poll("ann", &format!("since={}&timeout=0", cursor(&first)))
            .await;
    }
    stop(server, &dir).await;
    tokio::time::sleep(idle * 2).await;
    let server = start(&dir).await;
    // The first sweep runs at start-up; give it time to (wrongly) evict.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.post_ok(r#"<message to="ann">2</message>"#, 1).await;
    let after = server
        .poll("ann", &format!("since={}&timeout=0", cursor(&first)))
        .await;
    assert_ne!(after["reset"], json!(true), "{after}");
    assert_eq!(datas(&after), vec![json!(2)], "{after}");
    stop(server, &dir).await;
}
